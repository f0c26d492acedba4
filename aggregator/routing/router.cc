#include "aggregator/routing/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/ingest/validate.h"
#include "common/wes.h"

namespace fleetwes::aggregator {

namespace {

// At most this many node reasons in a NOT_FOUND message.
constexpr size_t kMaxReasonsInMessage = 20;

std::string Seconds(double s) {
  if (s >= 10) return absl::StrFormat("%.0f s", s);
  return absl::StrFormat("%.2g s", s);
}

bool IsIdle(const v1::ModelSample& m) {
  const bool no_tokens = !(m.decode_tokens_per_s() > 0) && !(m.wes().tokens_per_s() > 0);
  const bool nothing_running = !m.has_requests_running() || m.requests_running() == 0;
  const bool nothing_waiting = !m.has_requests_waiting() || m.requests_waiting() == 0;
  return no_tokens && nothing_running && nothing_waiting;
}

v1::ThermalState StateOf(const ModelState& ms) {
  const v1::ThermalState model_state = ms.sample.wes().thermal_state();
  return model_state != v1::THERMAL_STATE_UNSPECIFIED ? model_state : ms.node_thermal_state;
}

// The WES a candidate is scored by: this window's, else the last measured one.
const v1::Wes* ScoringWes(const ModelState& ms) {
  if (ms.sample.wes().has_penalized()) return &ms.sample.wes();
  if (ms.last_wes.has_value()) return &*ms.last_wes;
  return nullptr;
}

absl::Status ValidateRequest(const v1::PickRequest& r) {
  if (r.model().empty()) return absl::InvalidArgumentError("model: required");
  if (r.model().size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: longer than ", kMaxNameLength, " bytes"));
  }
  if (!v1::Objective_IsValid(r.objective())) {
    return absl::InvalidArgumentError(
        absl::StrCat("objective: unknown value ", static_cast<int>(r.objective())));
  }
  const v1::Constraints& c = r.constraints();
  if (c.has_max_ttft_s() && !(std::isfinite(c.max_ttft_s()) && c.max_ttft_s() >= 0)) {
    return absl::InvalidArgumentError("constraints.max_ttft_s: must be a finite number >= 0");
  }
  if (c.has_min_kv_headroom() && !(std::isfinite(c.min_kv_headroom()) && c.min_kv_headroom() >= 0 &&
                                   c.min_kv_headroom() <= 1)) {
    return absl::InvalidArgumentError("constraints.min_kv_headroom: must be in [0, 1]");
  }
  if (c.has_max_data_age_s() && !(std::isfinite(c.max_data_age_s()) && c.max_data_age_s() >= 0)) {
    return absl::InvalidArgumentError("constraints.max_data_age_s: must be a finite number >= 0");
  }
  if (!v1::ThermalState_IsValid(c.max_thermal_state())) {
    return absl::InvalidArgumentError(absl::StrCat("constraints.max_thermal_state: unknown value ",
                                                   static_cast<int>(c.max_thermal_state())));
  }
  if (c.required_labels_size() > kPickMaxRequiredLabels) {
    return absl::InvalidArgumentError(
        absl::StrCat("constraints.required_labels: at most ", kPickMaxRequiredLabels, " allowed"));
  }
  if (c.excluded_nodes_size() > kPickMaxExcludedNodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("constraints.excluded_nodes: at most ", kPickMaxExcludedNodes, " allowed"));
  }
  return absl::OkStatus();
}

// Why `ms` on `node` fails the request's constraints; nullopt if it qualifies.
std::optional<std::string> Disqualify(const NodeState& node, const ModelState& ms,
                                      const v1::Constraints& c, absl::Duration age,
                                      const StalenessPolicy& policy) {
  const double age_s = absl::ToDoubleSeconds(age);
  const absl::Duration threshold = policy.Threshold(ms.interval_s);
  if (age > threshold) {
    return absl::StrCat("stale: data ", Seconds(age_s), " old (stale after ",
                        Seconds(absl::ToDoubleSeconds(threshold)), ")");
  }
  if (c.has_max_data_age_s() && age_s > c.max_data_age_s()) {
    return absl::StrCat("data ", Seconds(age_s), " old (max ", Seconds(c.max_data_age_s()), ")");
  }
  for (const auto& [key, want] : c.required_labels()) {
    auto it = node.labels.find(key);
    if (it == node.labels.end())
      return absl::StrCat("label ", key, " missing (want \"", want, "\")");
    if (it->second != want) {
      return absl::StrCat("label ", key, "=\"", it->second, "\" (want \"", want, "\")");
    }
  }
  const v1::ThermalState state = StateOf(ms);
  if (c.max_thermal_state() != v1::THERMAL_STATE_UNSPECIFIED && state > c.max_thermal_state()) {
    return absl::StrCat("thermal state ", std::string(ThermalStateName(state)), " above ",
                        std::string(ThermalStateName(c.max_thermal_state())));
  }
  const v1::ModelSample& m = ms.sample;
  if (c.has_min_kv_headroom()) {
    if (!m.has_kv_cache_usage()) return std::string("KV cache use not reported");
    const double headroom = 1.0 - m.kv_cache_usage();
    if (headroom < c.min_kv_headroom()) {
      return absl::StrFormat("KV headroom %.2f below %.2f", headroom, c.min_kv_headroom());
    }
  }
  if (c.has_max_queue()) {
    if (!m.has_requests_waiting()) return std::string("queue not reported");
    if (m.requests_waiting() > c.max_queue()) {
      return absl::StrCat("queue ", m.requests_waiting(), " above ", c.max_queue());
    }
  }
  if (c.has_max_ttft_s()) {
    if (m.ttft().has_p95_s()) {
      if (m.ttft().p95_s() > c.max_ttft_s()) {
        return absl::StrCat("TTFT p95 ", Seconds(m.ttft().p95_s()), " above ",
                            Seconds(c.max_ttft_s()));
      }
    } else if (!IsIdle(m)) {
      return std::string("TTFT p95 not measured while busy");
    }
  }
  return std::nullopt;
}

struct Scored {
  const NodeState* node = nullptr;
  const ModelState* model = nullptr;
  double age_s = 0;
  double wes = 0;  // penalized WES used for scoring; 0 when never measured
  bool has_wes = false;
  double latency_s = 0;
  double score = 0;
};

std::string Reason(const Scored& s) {
  const v1::ModelSample& m = s.model->sample;
  std::string out;
  if (m.wes().has_penalized()) {
    absl::StrAppend(&out, "penalized WES ", FormatWes(m.wes().penalized()), " tok/J");
  } else if (s.has_wes) {
    absl::StrAppend(&out, std::string(WesNullReasonName(m.wes().null_reason())),
                    " now; last penalized WES ", FormatWes(s.wes), " tok/J");
  } else {
    absl::StrAppend(&out, "no WES measured (",
                    std::string(WesNullReasonName(m.wes().null_reason())), ")");
  }
  absl::StrAppend(&out, ", ", std::string(ThermalStateName(StateOf(*s.model))));
  if (m.ttft().has_p95_s()) absl::StrAppend(&out, ", TTFT p95 ", Seconds(m.ttft().p95_s()));
  if (m.has_requests_waiting()) absl::StrAppend(&out, ", queue ", m.requests_waiting());
  absl::StrAppend(&out, ", predicted latency ", Seconds(s.latency_s));
  return out;
}

v1::Candidate ToCandidate(const Scored& s) {
  v1::Candidate c;
  const v1::ModelSample& m = s.model->sample;
  c.set_node_id(s.node->node_id);
  c.set_score(s.score);
  c.set_reason(Reason(s));
  c.set_tokens_per_s(m.has_decode_tokens_per_s() ? m.decode_tokens_per_s()
                                                 : m.wes().tokens_per_s());
  if (const v1::Wes* w = ScoringWes(*s.model); w != nullptr) {
    c.set_wes_penalized(w->penalized());
    c.set_wes_raw(w->raw());
  }
  if (m.ttft().has_p95_s()) c.set_ttft_p95_s(m.ttft().p95_s());
  if (m.has_requests_waiting()) c.set_queue(m.requests_waiting());
  c.set_thermal_state(StateOf(*s.model));
  c.set_data_age_s(s.age_s);
  c.mutable_labels()->insert(s.node->labels.begin(), s.node->labels.end());
  return c;
}

}  // namespace

double PredictedLatencyS(const ModelState& ms) {
  const v1::ModelSample& m = ms.sample;
  const bool idle = IsIdle(m);
  double ttft = m.ttft().has_p95_s() ? m.ttft().p95_s() : (idle ? 0.0 : kUnknownTtftS);
  const double waiting = m.has_requests_waiting() ? m.requests_waiting() : 0;
  double tau = kUnknownTokenTimeS;
  if (m.tpot().has_mean_s() && m.tpot().mean_s() > 0) {
    tau = m.tpot().mean_s();
  } else if (m.tpot().has_p50_s() && m.tpot().p50_s() > 0) {
    tau = m.tpot().p50_s();
  } else {
    double tokens_per_s = m.decode_tokens_per_s();
    if (!(tokens_per_s > 0) && ms.last_wes.has_value()) tokens_per_s = ms.last_wes->tokens_per_s();
    if (tokens_per_s > 0) {
      const double running = m.has_requests_running() ? m.requests_running() : 0;
      tau = std::max(1.0, running) / tokens_per_s;
    }
  }
  return ttft + waiting * std::max(ttft, 0.05) + kReferenceOutputTokens * tau;
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  const v1::Constraints& c = request.constraints();
  const v1::Objective objective = request.objective() == v1::OBJECTIVE_UNSPECIFIED
                                      ? v1::OBJECTIVE_EFFICIENCY
                                      : request.objective();
  const absl::flat_hash_set<std::string> excluded_by_request(c.excluded_nodes().begin(),
                                                             c.excluded_nodes().end());
  v1::PickResponse out;
  out.set_model(request.model());
  out.set_objective(objective);

  std::vector<Scored> scored;
  std::vector<std::string> reasons;  // "node: why", for nodes serving the model
  size_t serving = 0;
  for (const NodeStatePtr& node : nodes) {
    auto it = node->models.find(request.model());
    std::optional<std::string> why;
    if (it == node->models.end()) {
      why = absl::StrCat("does not serve ", request.model());
    } else {
      ++serving;
      if (excluded_by_request.contains(node->node_id)) {
        why = "excluded by request";
      } else {
        why = Disqualify(*node, it->second, c, AgeOf(it->second.window_end, now), policy);
      }
      if (why.has_value()) reasons.push_back(absl::StrCat(node->node_id, ": ", *why));
    }
    if (why.has_value()) {
      v1::Exclusion* e = out.add_excluded();
      e->set_node_id(node->node_id);
      e->set_reason(*std::move(why));
      continue;
    }
    const ModelState& ms = it->second;
    Scored s;
    s.node = node.get();
    s.model = &ms;
    s.age_s = absl::ToDoubleSeconds(AgeOf(ms.window_end, now));
    s.latency_s = PredictedLatencyS(ms);
    if (const v1::Wes* w = ScoringWes(ms); w != nullptr) {
      s.wes = w->penalized();
      s.has_wes = true;
    }
    scored.push_back(s);
  }

  if (scored.empty()) {
    if (serving == 0) {
      return absl::NotFoundError(absl::StrCat("no node serves model \"", request.model(), "\""));
    }
    std::string listed = absl::StrJoin(
        reasons.begin(), reasons.begin() + std::min(reasons.size(), kMaxReasonsInMessage), "; ");
    if (reasons.size() > kMaxReasonsInMessage) {
      absl::StrAppend(&listed, "; and ", reasons.size() - kMaxReasonsInMessage, " more");
    }
    return absl::NotFoundError(
        absl::StrCat("no node qualifies for model \"", request.model(), "\": ", listed));
  }

  double best_wes = 0;
  double best_latency = std::numeric_limits<double>::infinity();
  for (const Scored& s : scored) {
    best_wes = std::max(best_wes, s.wes);
    best_latency = std::min(best_latency, s.latency_s);
  }
  auto latency_score = [](const Scored& s) { return 1.0 / (1.0 + s.latency_s); };
  for (Scored& s : scored) {
    switch (objective) {
      case v1::OBJECTIVE_LATENCY:
        s.score = latency_score(s);
        break;
      case v1::OBJECTIVE_BALANCED:
        s.score = 0.5 * (best_wes > 0 ? s.wes / best_wes : 0.0) +
                  0.5 * (1.0 + best_latency) / (1.0 + s.latency_s);
        break;
      default:
        s.score = s.wes;
        break;
    }
  }
  // Efficiency pick: best penalized WES (the leaderboard's order); latency pick: lowest predicted
  // latency, then node id.
  const Scored* efficiency = nullptr;
  const Scored* latency = nullptr;
  for (const Scored& s : scored) {
    if (s.has_wes) {
      const v1::Wes* w = ScoringWes(*s.model);
      if (efficiency == nullptr || RanksAbove(*w, s.node->node_id, *ScoringWes(*efficiency->model),
                                              efficiency->node->node_id)) {
        efficiency = &s;
      }
    }
    if (latency == nullptr || s.latency_s < latency->latency_s ||
        (s.latency_s == latency->latency_s && s.node->node_id < latency->node->node_id)) {
      latency = &s;
    }
  }
  if (efficiency != nullptr) *out.mutable_efficiency() = ToCandidate(*efficiency);
  *out.mutable_latency() = ToCandidate(*latency);

  std::sort(scored.begin(), scored.end(), [](const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.node->node_id < b.node->node_id;
  });
  const uint32_t count =
      request.count() == 0 ? kPickDefaultCount : std::min(request.count(), kPickMaxCount);
  const size_t n = std::min<size_t>(count, scored.size());
  double total = 0;
  double oldest = 0;
  for (size_t i = 0; i < n; ++i) {
    total += scored[i].score;
    oldest = std::max(oldest, scored[i].age_s);
  }
  for (size_t i = 0; i < n; ++i) {
    v1::Candidate* cand = out.add_candidates();
    *cand = ToCandidate(scored[i]);
    cand->set_weight(total > 0 ? scored[i].score / total : 1.0 / static_cast<double>(n));
  }
  *out.mutable_recommendation() = out.candidates(0);
  if (efficiency != nullptr) oldest = std::max(oldest, out.efficiency().data_age_s());
  oldest = std::max(oldest, out.latency().data_age_s());
  out.set_data_age_s(oldest);
  return out;
}

}  // namespace fleetwes::aggregator
