#include "aggregator/routing/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
  if (!v1::PickMode_IsValid(r.mode())) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode: unknown value ", static_cast<int>(r.mode())));
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

// The first constraint a node serving the model fails (docs/api.md gives the order).
enum class Why : uint8_t {
  kQualifies,
  kExcludedByRequest,
  kStale,
  kDataAge,
  kLabel,
  kThermal,
  kKvNotReported,
  kKvHeadroom,
  kQueueNotReported,
  kQueue,
  kTtftNotMeasured,
  kTtft,
};

// Cheap: no allocation, reads the row (and the node's labels only when labels are required);
// Explain formats the reason only for the nodes that get one.
Why Check(const RouteRow& r, const v1::Constraints& c, absl::Duration age,
          const StalenessPolicy& policy) {
  if (age > policy.Threshold(r.interval_s)) return Why::kStale;
  if (c.has_max_data_age_s() && absl::ToDoubleSeconds(age) > c.max_data_age_s()) {
    return Why::kDataAge;
  }
  for (const auto& [key, want] : c.required_labels()) {
    auto it = r.node->labels.find(key);
    if (it == r.node->labels.end() || it->second != want) return Why::kLabel;
  }
  if (c.max_thermal_state() != v1::THERMAL_STATE_UNSPECIFIED && r.state > c.max_thermal_state()) {
    return Why::kThermal;
  }
  if (c.has_min_kv_headroom()) {
    if (!r.has_kv) return Why::kKvNotReported;
    if (1.0 - r.kv_cache_usage < c.min_kv_headroom()) return Why::kKvHeadroom;
  }
  if (c.has_max_queue()) {
    if (!r.has_waiting) return Why::kQueueNotReported;
    if (r.waiting > c.max_queue()) return Why::kQueue;
  }
  if (c.has_max_ttft_s()) {
    if (r.has_ttft) {
      if (r.ttft_p95_s > c.max_ttft_s()) return Why::kTtft;
    } else if (!r.idle) {
      return Why::kTtftNotMeasured;
    }
  }
  return Why::kQualifies;
}

RouteRow RowOf(const NodeState& node, const ModelState& ms) {
  const v1::ModelSample& m = ms.sample;
  RouteRow r;
  r.node = &node;
  r.model = &ms;
  r.window_end = ms.window_end;
  r.interval_s = ms.interval_s;
  r.has_kv = m.has_kv_cache_usage();
  r.kv_cache_usage = m.kv_cache_usage();
  r.has_waiting = m.has_requests_waiting();
  r.waiting = m.requests_waiting();
  r.has_ttft = m.ttft().has_p95_s();
  r.ttft_p95_s = m.ttft().p95_s();
  r.idle = IsIdle(m);
  r.state = StateOf(ms);
  r.latency_s = PredictedLatencyS(ms);
  if (const v1::Wes* w = ScoringWes(ms); w != nullptr) {
    r.has_wes = true;
    r.wes = w->penalized();
    r.wes_raw = w->raw();
  }
  return r;
}

std::string Explain(Why why, const NodeState& node, const ModelState& ms, const v1::Constraints& c,
                    absl::Duration age, const StalenessPolicy& policy) {
  const double age_s = absl::ToDoubleSeconds(age);
  const v1::ModelSample& m = ms.sample;
  switch (why) {
    case Why::kQualifies:
      return "qualifies";
    case Why::kExcludedByRequest:
      return "excluded by request";
    case Why::kStale:
      return absl::StrCat("stale: data ", Seconds(age_s), " old (stale after ",
                          Seconds(absl::ToDoubleSeconds(policy.Threshold(ms.interval_s))), ")");
    case Why::kDataAge:
      return absl::StrCat("data ", Seconds(age_s), " old (max ", Seconds(c.max_data_age_s()), ")");
    case Why::kLabel:
      for (const auto& [key, want] : c.required_labels()) {
        auto it = node.labels.find(key);
        if (it == node.labels.end()) {
          return absl::StrCat("label ", key, " missing (want \"", want, "\")");
        }
        if (it->second != want) {
          return absl::StrCat("label ", key, "=\"", it->second, "\" (want \"", want, "\")");
        }
      }
      return "labels";
    case Why::kThermal:
      return absl::StrCat("thermal state ", std::string(ThermalStateName(StateOf(ms))), " above ",
                          std::string(ThermalStateName(c.max_thermal_state())));
    case Why::kKvNotReported:
      return "KV cache use not reported";
    case Why::kKvHeadroom:
      return absl::StrFormat("KV headroom %.2f below %.2f", 1.0 - m.kv_cache_usage(),
                             c.min_kv_headroom());
    case Why::kQueueNotReported:
      return "queue not reported";
    case Why::kQueue:
      return absl::StrCat("queue ", m.requests_waiting(), " above ", c.max_queue());
    case Why::kTtftNotMeasured:
      return "TTFT p95 not measured while busy";
    case Why::kTtft:
      return absl::StrCat("TTFT p95 ", Seconds(m.ttft().p95_s()), " above ",
                          Seconds(c.max_ttft_s()));
  }
  return "unknown";
}

// A node serving the model that failed a constraint; its reason is formatted only when listed.
struct Failed {
  const NodeState* node = nullptr;
  const ModelState* model = nullptr;
  absl::Duration age;
  Why why = Why::kQualifies;
};

struct Scored {
  const NodeState* node = nullptr;
  const ModelState* model = nullptr;
  const RouteRow* row = nullptr;
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

std::vector<NodeStatePtr> CandidatesFor(const FleetState& state, absl::string_view model) {
  return state.ServingModel(model);
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy) {
  thread_local absl::BitGen gen;
  return Pick(request, nodes, now, policy, gen);
}

RouteTable BuildRouteTable(const std::vector<NodeStatePtr>& nodes, absl::string_view model) {
  RouteTable t;
  t.rows.reserve(nodes.size());
  t.keep.reserve(nodes.size());
  const std::string key(model);
  for (const NodeStatePtr& node : nodes) {
    auto it = node->models.find(key);
    if (it == node->models.end()) continue;
    t.rows.push_back(RowOf(*node, it->second));
    t.keep.push_back(node);
  }
  return t;
}

RouteTable BuildRouteTable(std::shared_ptr<const ServingSet> set) {
  RouteTable t;
  t.rows.reserve(set->nodes.size());
  for (size_t i = 0; i < set->nodes.size(); ++i) {
    t.rows.push_back(RowOf(*set->nodes[i], *set->models[i]));
  }
  t.set = std::move(set);
  return t;
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy, absl::BitGenRef gen) {
  return Pick(request, BuildRouteTable(nodes, request.model()), now, policy, gen);
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request, const RouteTable& table,
                                      absl::Time now, const StalenessPolicy& policy,
                                      absl::BitGenRef gen) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  const v1::Constraints& c = request.constraints();
  const v1::Objective objective = request.objective() == v1::OBJECTIVE_UNSPECIFIED
                                      ? v1::OBJECTIVE_EFFICIENCY
                                      : request.objective();
  const bool pick_one = request.mode() == v1::PICK_MODE_ONE;
  absl::flat_hash_set<absl::string_view> excluded_by_request;
  if (c.excluded_nodes_size() > 0) {
    excluded_by_request.reserve(c.excluded_nodes_size());
    for (const std::string& id : c.excluded_nodes()) excluded_by_request.insert(id);
  }

  std::vector<Scored> scored;
  std::vector<Failed> failed;
  scored.reserve(table.rows.size());
  for (const RouteRow& r : table.rows) {
    const absl::Duration age = AgeOf(r.window_end, now);
    const Why why = !excluded_by_request.empty() && excluded_by_request.contains(r.node->node_id)
                        ? Why::kExcludedByRequest
                        : Check(r, c, age, policy);
    if (why != Why::kQualifies) {
      failed.push_back({r.node, r.model, age, why});
      continue;
    }
    Scored s;
    s.node = r.node;
    s.model = r.model;
    s.row = &r;
    s.age_s = absl::ToDoubleSeconds(age);
    s.latency_s = r.latency_s;
    s.wes = r.wes;
    s.has_wes = r.has_wes;
    scored.push_back(s);
  }

  if (scored.empty()) {
    if (failed.empty()) {
      return absl::NotFoundError(absl::StrCat("no node serves model \"", request.model(), "\""));
    }
    std::string listed;
    const size_t shown = std::min(failed.size(), kMaxReasonsInMessage);
    for (size_t i = 0; i < shown; ++i) {
      const Failed& f = failed[i];
      absl::StrAppend(&listed, i == 0 ? "" : "; ", f.node->node_id, ": ",
                      Explain(f.why, *f.node, *f.model, c, f.age, policy));
    }
    if (failed.size() > shown) absl::StrAppend(&listed, "; and ", failed.size() - shown, " more");
    return absl::NotFoundError(
        absl::StrCat("no node qualifies for model \"", request.model(), "\": ", listed));
  }

  v1::PickResponse out;
  out.set_model(request.model());
  out.set_objective(objective);
  double best_wes = 0;
  double best_latency = std::numeric_limits<double>::infinity();
  for (const Scored& s : scored) {
    best_wes = std::max(best_wes, s.wes);
    best_latency = std::min(best_latency, s.latency_s);
  }
  double best_score = 0;
  for (Scored& s : scored) {
    switch (objective) {
      case v1::OBJECTIVE_LATENCY:
        s.score = 1.0 / (1.0 + s.latency_s);
        break;
      case v1::OBJECTIVE_BALANCED:
        s.score = 0.5 * (best_wes > 0 ? s.wes / best_wes : 0.0) +
                  0.5 * (1.0 + best_latency) / (1.0 + s.latency_s);
        break;
      default:
        s.score = s.wes;
        break;
    }
    if (!std::isfinite(s.score) || s.score < 0) s.score = 0;  // never NaN, never negative
    best_score = std::max(best_score, s.score);
  }
  // Efficiency pick: best penalized WES (the leaderboard's order); latency pick: lowest predicted
  // latency, then node id.
  const Scored* efficiency = nullptr;
  const Scored* latency = nullptr;
  // The leaderboard's order (RanksAbove): penalized WES, then raw WES, then node id.
  auto ranks_above = [](const Scored& a, const Scored& b) {
    if (a.row->wes != b.row->wes) return a.row->wes > b.row->wes;
    if (a.row->wes_raw != b.row->wes_raw) return a.row->wes_raw > b.row->wes_raw;
    return a.node->node_id < b.node->node_id;
  };
  for (const Scored& s : scored) {
    if (s.has_wes && (efficiency == nullptr || ranks_above(s, *efficiency))) efficiency = &s;
    if (latency == nullptr || s.latency_s < latency->latency_s ||
        (s.latency_s == latency->latency_s && s.node->node_id < latency->node->node_id)) {
      latency = &s;
    }
  }
  if (efficiency != nullptr) *out.mutable_efficiency() = ToCandidate(*efficiency);
  *out.mutable_latency() = ToCandidate(*latency);
  double oldest = out.latency().data_age_s();
  if (efficiency != nullptr) oldest = std::max(oldest, out.efficiency().data_age_s());

  auto better = [](const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.node->node_id < b.node->node_id;
  };
  // Within the band; with a best score of 0 every candidate is (equal weights).
  const double floor = kWeightBand * best_score;
  auto in_band = [&](const Scored& s) { return best_score <= 0 || s.score >= floor; };
  auto weight_of = [&](const Scored& s) { return best_score > 0 ? s.score : 1.0; };

  if (pick_one) {
    // The band, best first, so that the lower index of two draws is the better candidate.
    auto band_end = std::partition(scored.begin(), scored.end(), in_band);
    std::sort(scored.begin(), band_end, better);
    const size_t band = static_cast<size_t>(band_end - scored.begin());
    std::vector<double> cumulative(band);
    double total = 0;
    for (size_t i = 0; i < band; ++i) {
      total += weight_of(scored[i]);
      cumulative[i] = total;
    }
    auto draw = [&]() -> size_t {
      const double u = absl::Uniform(gen, 0.0, total);
      const size_t i = static_cast<size_t>(
          std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
      return std::min(i, band - 1);
    };
    const size_t a = draw();
    const size_t b = draw();
    const Scored& winner = scored[std::min(a, b)];
    v1::Candidate* rec = out.mutable_recommendation();
    *rec = ToCandidate(winner);
    rec->set_weight(weight_of(winner) / total);
    std::string why =
        a == b
            ? absl::StrCat("power of two choices: drew ", winner.node->node_id, " twice")
            : absl::StrCat("power of two choices: drew ", scored[a].node->node_id, " and ",
                           scored[b].node->node_id, ", ", winner.node->node_id, " scores higher");
    absl::StrAppend(&why, " (by weight among ", band, " candidates within ", kWeightBand * 100,
                    "% of the best score); ", rec->reason());
    rec->set_reason(std::move(why));
    out.set_data_age_s(std::max(oldest, winner.age_s));
    return out;
  }

  const uint32_t count =
      request.count() == 0 ? kPickDefaultCount : std::min(request.count(), kPickMaxCount);
  const size_t n = std::min<size_t>(count, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(n), scored.end(),
                    better);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (in_band(scored[i])) total += weight_of(scored[i]);
    oldest = std::max(oldest, scored[i].age_s);
  }
  out.mutable_candidates()->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) {
    v1::Candidate* cand = out.add_candidates();
    *cand = ToCandidate(scored[i]);
    cand->set_weight(in_band(scored[i]) ? weight_of(scored[i]) / total : 0.0);
  }
  *out.mutable_recommendation() = out.candidates(0);
  out.mutable_excluded()->Reserve(static_cast<int>(failed.size()));
  for (const Failed& f : failed) {
    v1::Exclusion* e = out.add_excluded();
    e->set_node_id(f.node->node_id);
    e->set_reason(Explain(f.why, *f.node, *f.model, c, f.age, policy));
  }
  out.set_data_age_s(oldest);
  return out;
}

}  // namespace fleetwes::aggregator
