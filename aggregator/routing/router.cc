#include "aggregator/routing/router.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/base/casts.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aggregator/fleet/leaderboard.h"
#include "aggregator/fleet/rank_index.h"
#include "aggregator/ingest/validate.h"
#include "common/wes.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace fleetwes::aggregator {

namespace {

// At most this many node reasons in a NOT_FOUND message.
constexpr size_t kMaxReasonsInMessage = 20;

// "%.0f s" from 10 s on, else "%.2g s". std::to_chars with a precision formats as printf does
// (C locale) at a fraction of StrFormat's cost; exclusion reasons are formatted per call.
std::string Seconds(double s) {
  char buf[64];
  const std::to_chars_result r =
      s >= 10 ? std::to_chars(buf, buf + sizeof(buf) - 2, s, std::chars_format::fixed, 0)
              : std::to_chars(buf, buf + sizeof(buf) - 2, s, std::chars_format::general, 2);
  if (r.ec != std::errc()) return absl::StrFormat("%.0f s", s);  // only huge values
  char* end = r.ptr;
  *end++ = ' ';
  *end++ = 's';
  return std::string(buf, end);
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
// `stale`: whether the row's data is stale now (decided by the caller, from the table's
// precomputed expiry or the policy).
Why Check(const RouteRow& r, const v1::Constraints& c, absl::Duration age, bool stale) {
  if (stale) return Why::kStale;
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

std::string Reason(const RouteRow& r) {
  const v1::ModelSample& m = r.model->sample;
  std::string out;
  if (m.wes().has_penalized()) {
    absl::StrAppend(&out, "penalized WES ", FormatWes(m.wes().penalized()), " tok/J");
  } else if (r.has_wes) {
    absl::StrAppend(&out, std::string(WesNullReasonName(m.wes().null_reason())),
                    " now; last penalized WES ", FormatWes(r.wes), " tok/J");
  } else {
    absl::StrAppend(&out, "no WES measured (",
                    std::string(WesNullReasonName(m.wes().null_reason())), ")");
  }
  absl::StrAppend(&out, ", ", std::string(ThermalStateName(StateOf(*r.model))));
  if (m.ttft().has_p95_s()) absl::StrAppend(&out, ", TTFT p95 ", Seconds(m.ttft().p95_s()));
  if (m.has_requests_waiting()) absl::StrAppend(&out, ", queue ", m.requests_waiting());
  absl::StrAppend(&out, ", predicted latency ", Seconds(r.latency_s));
  return out;
}

// What every answer listing the row copies: all of its Candidate but score, weight, data age.
void FillCandidate(const RouteRow& r, v1::Candidate* c) {
  const v1::ModelSample& m = r.model->sample;
  c->set_node_id(r.node->node_id);
  c->set_reason(Reason(r));
  c->set_tokens_per_s(m.has_decode_tokens_per_s() ? m.decode_tokens_per_s()
                                                  : m.wes().tokens_per_s());
  if (const v1::Wes* w = ScoringWes(*r.model); w != nullptr) {
    c->set_wes_penalized(w->penalized());
    c->set_wes_raw(w->raw());
  }
  if (m.ttft().has_p95_s()) c->set_ttft_p95_s(m.ttft().p95_s());
  if (m.has_requests_waiting()) c->set_queue(m.requests_waiting());
  c->set_thermal_state(StateOf(*r.model));
  c->mutable_labels()->insert(r.node->labels.begin(), r.node->labels.end());
}

// The score of a row for EFFICIENCY or LATENCY (BALANCED depends on the other candidates).
double ObjectiveScore(const RouteRow& r, v1::Objective objective) {
  double score = objective == v1::OBJECTIVE_LATENCY ? 1.0 / (1.0 + r.latency_s) : r.wes;
  if (!std::isfinite(score) || score < 0) score = 0;  // never NaN, never negative
  return score;
}

// Objectives with a precomputed order, as an index.
int OrderSlot(v1::Objective objective) { return objective == v1::OBJECTIVE_LATENCY ? 1 : 0; }

}  // namespace

struct RouteTable::Lazy {
  struct Order {
    absl::once_flag once;
    std::vector<uint32_t> rows;
  };
  struct ScoreOrder {
    absl::once_flag once;
    std::vector<uint32_t> rows;  // best first (ties: node id)
    std::vector<double> score;   // per row
  };
  ScoreOrder by_score[2];  // OrderSlot
  Order by_rank;           // rows with a WES, the leaderboard's order
  Order by_latency;        // predicted latency ascending (ties: node id)
  Order by_expiry;         // stale_at ascending
  // A row's Candidate without score, weight and data age, and its wire bytes.
  struct Prebuilt {
    v1::Candidate message;
    std::string bytes;
  };
  std::unique_ptr<std::atomic<const Prebuilt*>[]> prebuilt;  // per row, null until used

  explicit Lazy(size_t rows) : prebuilt(new std::atomic<const Prebuilt*>[rows]) {
    for (size_t i = 0; i < rows; ++i) prebuilt[i].store(nullptr, std::memory_order_relaxed);
    size = rows;
  }
  ~Lazy() {
    for (size_t i = 0; i < size; ++i) delete prebuilt[i].load(std::memory_order_relaxed);
  }
  size_t size = 0;
};

namespace {

std::vector<uint32_t> AllRows(const RouteTable& t) {
  std::vector<uint32_t> rows(t.rows.size());
  for (uint32_t i = 0; i < rows.size(); ++i) rows[i] = i;
  return rows;
}

const RouteTable::Lazy::ScoreOrder& ByScore(const RouteTable& t, v1::Objective objective) {
  RouteTable::Lazy::ScoreOrder& o = t.lazy->by_score[OrderSlot(objective)];
  absl::call_once(o.once, [&] {
    o.score.resize(t.rows.size());
    for (size_t i = 0; i < t.rows.size(); ++i) o.score[i] = ObjectiveScore(t.rows[i], objective);
    o.rows = AllRows(t);
    std::sort(o.rows.begin(), o.rows.end(), [&](uint32_t a, uint32_t b) {
      if (o.score[a] != o.score[b]) return o.score[a] > o.score[b];
      return t.rows[a].node->node_id < t.rows[b].node->node_id;
    });
  });
  return o;
}

const std::vector<uint32_t>& ByRank(const RouteTable& t) {
  RouteTable::Lazy::Order& o = t.lazy->by_rank;
  absl::call_once(o.once, [&] {
    for (uint32_t i = 0; i < t.rows.size(); ++i) {
      if (t.rows[i].has_wes) o.rows.push_back(i);
    }
    std::sort(o.rows.begin(), o.rows.end(), [&](uint32_t ia, uint32_t ib) {
      const RouteRow& a = t.rows[ia];
      const RouteRow& b = t.rows[ib];
      return RanksAbove(a.wes, a.wes_raw, a.node->node_id, b.wes, b.wes_raw, b.node->node_id);
    });
  });
  return o.rows;
}

const std::vector<uint32_t>& ByLatency(const RouteTable& t) {
  RouteTable::Lazy::Order& o = t.lazy->by_latency;
  absl::call_once(o.once, [&] {
    o.rows = AllRows(t);
    std::sort(o.rows.begin(), o.rows.end(), [&](uint32_t ia, uint32_t ib) {
      const RouteRow& a = t.rows[ia];
      const RouteRow& b = t.rows[ib];
      if (a.latency_s != b.latency_s) return a.latency_s < b.latency_s;
      return a.node->node_id < b.node->node_id;
    });
  });
  return o.rows;
}

const std::vector<uint32_t>& ByExpiry(const RouteTable& t) {
  RouteTable::Lazy::Order& o = t.lazy->by_expiry;
  absl::call_once(o.once, [&] {
    o.rows = AllRows(t);
    std::stable_sort(o.rows.begin(), o.rows.end(),
                     [&](uint32_t a, uint32_t b) { return t.stale_at[a] < t.stale_at[b]; });
  });
  return o.rows;
}

const RouteTable::Lazy::Prebuilt& Prebuilt(const RouteTable& t, uint32_t i) {
  std::atomic<const RouteTable::Lazy::Prebuilt*>& slot = t.lazy->prebuilt[i];
  const RouteTable::Lazy::Prebuilt* c = slot.load(std::memory_order_acquire);
  if (c != nullptr) return *c;
  auto built = std::make_unique<RouteTable::Lazy::Prebuilt>();
  FillCandidate(t.rows[i], &built->message);
  // Deterministic: the same row always has the same bytes (labels in key order).
  {
    google::protobuf::io::StringOutputStream stream(&built->bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    built->message.SerializeToCodedStream(&coded);
  }
  const RouteTable::Lazy::Prebuilt* expected = nullptr;
  if (slot.compare_exchange_strong(expected, built.get(), std::memory_order_acq_rel)) {
    return *built.release();
  }
  return *expected;  // another call built it first
}

// A candidate: a qualifying row with its score for the requested objective.
struct Scored {
  uint32_t index = 0;
  double score = 0;
};

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

RouteTable::RouteTable() = default;
RouteTable::~RouteTable() = default;
RouteTable::RouteTable(RouteTable&&) noexcept = default;
RouteTable& RouteTable::operator=(RouteTable&&) noexcept = default;

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

RouteTable BuildRouteTable(std::shared_ptr<const ServingSet> set, const StalenessPolicy& policy,
                           const RouteTable* previous) {
  RouteTable t;
  t.rows.reserve(set->nodes.size());
  t.stale_at.reserve(set->nodes.size());
  // Both sets are sorted by node id: walk the previous rows alongside.
  const bool reuse = previous != nullptr && previous->set != nullptr &&
                     previous->rows.size() == previous->set->nodes.size();
  size_t j = 0;
  bool finite = true;
  for (size_t i = 0; i < set->nodes.size(); ++i) {
    const NodeState* node = set->nodes[i].get();
    const ModelState* model = set->models[i];
    if (reuse) {
      while (j < previous->rows.size() && previous->rows[j].node->node_id < node->node_id) ++j;
    }
    const bool same = reuse && j < previous->rows.size() && previous->rows[j].node == node &&
                      previous->rows[j].model == model;
    const RouteRow& r = t.rows.emplace_back(same ? previous->rows[j] : RowOf(*node, *model));
    t.stale_at.push_back(r.window_end + policy.Threshold(r.interval_s));
    finite =
        finite && std::isfinite(r.wes) && std::isfinite(r.wes_raw) && std::isfinite(r.latency_s);
  }
  t.set = std::move(set);
  // Stale iff age > threshold, i.e. now > window_end + threshold, needs a threshold >= 0; the
  // orders need scores that compare as a strict order.
  t.policy = policy;
  t.ordered = finite && policy.min >= absl::ZeroDuration() && t.rows.size() < (size_t{1} << 31);
  if (t.ordered) t.lazy = std::make_unique<RouteTable::Lazy>(t.rows.size());
  return t;
}

void PrepareRouteTable(const RouteTable& table) {
  if (!table.ordered || table.lazy == nullptr) return;
  // The rows a default answer lists come from the front of these orders (a few more than the
  // default count, for the stale or excluded rows passed over).
  constexpr size_t kPrebuilt = 2 * kPickDefaultCount;
  auto prebuild_front = [&](const std::vector<uint32_t>& order) {
    for (size_t k = 0; k < std::min(order.size(), kPrebuilt); ++k) Prebuilt(table, order[k]);
  };
  prebuild_front(ByScore(table, v1::OBJECTIVE_EFFICIENCY).rows);
  prebuild_front(ByScore(table, v1::OBJECTIVE_LATENCY).rows);
  prebuild_front(ByRank(table));
  prebuild_front(ByLatency(table));
  ByExpiry(table);
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy, absl::BitGenRef gen) {
  return Pick(request, BuildRouteTable(nodes, request.model()), now, policy, gen);
}

absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request, const RouteTable& table,
                                      absl::Time now, const StalenessPolicy& policy,
                                      absl::BitGenRef gen) {
  v1::PickResponse out;
  if (absl::Status s = Pick(request, table, now, policy, gen, &out); !s.ok()) return s;
  return out;
}

namespace {

// Whether Pick uses the table's orders and prebuilt candidates: they hold for this policy.
bool UsesOrders(const RouteTable& table, const StalenessPolicy& policy) {
  return table.ordered && table.lazy != nullptr && policy.multiple == table.policy.multiple &&
         policy.min == table.policy.min;
}

// Protocol buffer wire format, for the answers PickSerialized writes without a message.
size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
void PutVarint(std::string* w, uint64_t v) {
  while (v >= 0x80) {
    w->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  w->push_back(static_cast<char>(v));
}
// Length-delimited field `field` (number < 16, so a one-byte tag) of `size` bytes: its header.
void PutLengthDelimited(std::string* w, uint32_t field, size_t size) {
  w->push_back(static_cast<char>(field << 3 | 2));
  PutVarint(w, size);
}
// A proto3 double field as the generated code writes it: left out when its bits are all zero.
size_t DoubleSize(uint32_t field, double v) {
  return absl::bit_cast<uint64_t>(v) == 0 ? 0 : VarintSize(field << 3) + 8;
}
void PutDouble(std::string* w, uint32_t field, double v) {
  const uint64_t bits = absl::bit_cast<uint64_t>(v);
  if (bits == 0) return;
  PutVarint(w, field << 3 | 1);
  for (int k = 0; k < 8; ++k) w->push_back(static_cast<char>(bits >> (8 * k)));  // little endian
}

// Pick's answer into `out` (a message), or, with `out` null, as PickResponse's wire bytes into
// `wire` (only for a call that uses the table's orders in RANKED mode).
absl::Status PickInto(const v1::PickRequest& request, const RouteTable& table, absl::Time now,
                      const StalenessPolicy& policy, absl::BitGenRef gen, v1::PickResponse* out,
                      std::string* wire) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  if (out != nullptr) out->Clear();
  const v1::Constraints& c = request.constraints();
  const v1::Objective objective = request.objective() == v1::OBJECTIVE_UNSPECIFIED
                                      ? v1::OBJECTIVE_EFFICIENCY
                                      : request.objective();
  const bool pick_one = request.mode() == v1::PICK_MODE_ONE;
  const std::vector<RouteRow>& rows = table.rows;
  // The table's orders and expiries hold for this call's policy.
  const bool ordered = UsesOrders(table, policy);

  // Every row's first failing check (kQualifies for the candidates) and the failing rows in row
  // order.
  thread_local std::vector<Why> why_of;
  thread_local std::vector<uint32_t> failed;
  why_of.assign(rows.size(), Why::kQualifies);
  failed.clear();
  const bool unconstrained = c.excluded_nodes_size() == 0 && c.required_labels_size() == 0 &&
                             !c.has_max_ttft_s() && !c.has_max_queue() &&
                             !c.has_min_kv_headroom() && !c.has_max_data_age_s() &&
                             c.max_thermal_state() == v1::THERMAL_STATE_UNSPECIFIED;
  if (ordered && unconstrained) {
    // Only staleness can fail: the stale rows are the front of the expiry order.
    for (uint32_t i : ByExpiry(table)) {
      if (!(now > table.stale_at[i])) break;
      why_of[i] = Why::kStale;
      failed.push_back(i);
    }
    std::sort(failed.begin(), failed.end());
  } else {
    absl::flat_hash_set<absl::string_view> excluded_by_request;
    if (c.excluded_nodes_size() > 0) {
      excluded_by_request.reserve(c.excluded_nodes_size());
      for (const std::string& id : c.excluded_nodes()) excluded_by_request.insert(id);
    }
    for (uint32_t i = 0; i < rows.size(); ++i) {
      const RouteRow& r = rows[i];
      if (!excluded_by_request.empty() && excluded_by_request.contains(r.node->node_id)) {
        why_of[i] = Why::kExcludedByRequest;
      } else {
        const absl::Duration age = AgeOf(r.window_end, now);
        const bool stale = ordered ? now > table.stale_at[i] : age > policy.Threshold(r.interval_s);
        why_of[i] = Check(r, c, age, stale);
      }
      if (why_of[i] != Why::kQualifies) failed.push_back(i);
    }
  }
  auto age_of = [&](uint32_t i) { return AgeOf(rows[i].window_end, now); };
  auto explain = [&](uint32_t i) {
    return Explain(why_of[i], *rows[i].node, *rows[i].model, c, age_of(i), policy);
  };

  if (failed.size() == rows.size()) {
    if (failed.empty()) {
      return absl::NotFoundError(absl::StrCat("no node serves model \"", request.model(), "\""));
    }
    std::string listed;
    const size_t shown = std::min(failed.size(), kMaxReasonsInMessage);
    for (size_t k = 0; k < shown; ++k) {
      absl::StrAppend(&listed, k == 0 ? "" : "; ", rows[failed[k]].node->node_id, ": ",
                      explain(failed[k]));
    }
    if (failed.size() > shown) absl::StrAppend(&listed, "; and ", failed.size() - shown, " more");
    return absl::NotFoundError(
        absl::StrCat("no node qualifies for model \"", request.model(), "\": ", listed));
  }
  auto qualifies = [&](uint32_t i) { return why_of[i] == Why::kQualifies; };
  auto better = [&](const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return rows[a.index].node->node_id < rows[b.index].node->node_id;
  };
  const uint32_t count =
      request.count() == 0 ? kPickDefaultCount : std::min(request.count(), kPickMaxCount);

  // The efficiency pick (best penalized WES, the leaderboard's order; none without a WES), the
  // latency pick (lowest predicted latency, then node id), the best score and `chosen`: in
  // RANKED the best `count` candidates, in ONE the band, best first (ties: node id).
  std::optional<Scored> efficiency;
  Scored latency;
  double best_score = 0;
  std::vector<Scored> chosen;
  // Within the band; with a best score of 0 every candidate is (equal weights).
  auto in_band = [&](const Scored& s) {
    return best_score <= 0 || s.score >= kWeightBand * best_score;
  };
  auto weight_of = [&](const Scored& s) { return best_score > 0 ? s.score : 1.0; };

  if (ordered && objective != v1::OBJECTIVE_BALANCED) {
    // Best first, stopping after `count` candidates (RANKED) or at the band's end (ONE).
    const RouteTable::Lazy::ScoreOrder& order = ByScore(table, objective);
    for (uint32_t i : ByRank(table)) {
      if (qualifies(i)) {
        efficiency = Scored{i, order.score[i]};
        break;
      }
    }
    for (uint32_t i : ByLatency(table)) {
      if (qualifies(i)) {
        latency = Scored{i, order.score[i]};
        break;
      }
    }
    bool first = true;
    for (uint32_t i : order.rows) {
      if (!qualifies(i)) continue;
      const Scored s{i, order.score[i]};
      if (first) {
        best_score = s.score;
        first = false;
      }
      if (pick_one ? !in_band(s) : chosen.size() >= count) break;
      chosen.push_back(s);
    }
  } else {
    // The plain scan: every candidate scored, then the best selected.
    std::vector<Scored> scored;
    scored.reserve(rows.size() - failed.size());
    double best_wes = 0;
    double best_latency = std::numeric_limits<double>::infinity();
    for (uint32_t i = 0; i < rows.size(); ++i) {
      if (!qualifies(i)) continue;
      scored.push_back({i, 0});
      best_wes = std::max(best_wes, rows[i].wes);
      best_latency = std::min(best_latency, rows[i].latency_s);
    }
    for (Scored& s : scored) {
      const RouteRow& r = rows[s.index];
      if (objective == v1::OBJECTIVE_BALANCED) {
        s.score = 0.5 * (best_wes > 0 ? r.wes / best_wes : 0.0) +
                  0.5 * (1.0 + best_latency) / (1.0 + r.latency_s);
        if (!std::isfinite(s.score) || s.score < 0) s.score = 0;  // never NaN, never negative
      } else {
        s.score = ObjectiveScore(r, objective);
      }
      best_score = std::max(best_score, s.score);
    }
    // The leaderboard's order (RanksAbove): penalized WES, then raw WES, then node id.
    auto ranks_above = [&](const Scored& sa, const Scored& sb) {
      const RouteRow& a = rows[sa.index];
      const RouteRow& b = rows[sb.index];
      if (a.wes != b.wes) return a.wes > b.wes;
      if (a.wes_raw != b.wes_raw) return a.wes_raw > b.wes_raw;
      return a.node->node_id < b.node->node_id;
    };
    const Scored* lat = nullptr;
    for (const Scored& s : scored) {
      if (rows[s.index].has_wes && (!efficiency.has_value() || ranks_above(s, *efficiency))) {
        efficiency = s;
      }
      const RouteRow& r = rows[s.index];
      if (lat == nullptr || r.latency_s < rows[lat->index].latency_s ||
          (r.latency_s == rows[lat->index].latency_s &&
           r.node->node_id < rows[lat->index].node->node_id)) {
        lat = &s;
      }
    }
    latency = *lat;
    if (pick_one) {
      auto band_end = std::partition(scored.begin(), scored.end(), in_band);
      std::sort(scored.begin(), band_end, better);
      chosen.assign(scored.begin(), band_end);
    } else {
      const size_t n = std::min<size_t>(count, scored.size());
      std::partial_sort(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(n), scored.end(),
                        better);
      chosen.assign(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(n));
    }
  }

  // A candidate as listed: the row's fixed part (prebuilt once per table when ordered), its score
  // and data age.
  auto write = [&](const Scored& s, v1::Candidate* dst) {
    if (ordered) {
      *dst = Prebuilt(table, s.index).message;
    } else {
      FillCandidate(rows[s.index], dst);
    }
    dst->set_score(s.score);
    dst->set_data_age_s(absl::ToDoubleSeconds(age_of(s.index)));
  };
  if (out == nullptr) {
    // The message below, serialized, without building it: each candidate is its prebuilt bytes
    // followed by score, weight and data age (fields may come in any order on the wire; a
    // parser reads the same message).
    std::string& w = *wire;
    w.clear();
    auto candidate = [&](uint32_t field, const Scored& s, double weight, double age_s) {
      const std::string& fixed = Prebuilt(table, s.index).bytes;
      PutLengthDelimited(
          &w, field,
          fixed.size() + DoubleSize(2, s.score) + DoubleSize(3, weight) + DoubleSize(11, age_s));
      w.append(fixed);
      PutDouble(&w, 2, s.score);
      PutDouble(&w, 3, weight);
      PutDouble(&w, 11, age_s);
    };
    auto age_s_of = [&](const Scored& s) { return absl::ToDoubleSeconds(age_of(s.index)); };
    PutLengthDelimited(&w, 1, request.model().size());
    w.append(request.model());
    w.push_back(static_cast<char>(2 << 3));
    PutVarint(&w, static_cast<uint64_t>(objective));
    double oldest = age_s_of(latency);
    if (efficiency.has_value()) {
      oldest = std::max(oldest, age_s_of(*efficiency));
      candidate(3, *efficiency, 0, age_s_of(*efficiency));
    }
    candidate(4, latency, 0, age_s_of(latency));
    double total = 0;
    for (const Scored& s : chosen) {
      if (in_band(s)) total += weight_of(s);
    }
    for (size_t k = 0; k < chosen.size(); ++k) {
      const Scored& s = chosen[k];
      const double weight = in_band(s) ? weight_of(s) / total : 0.0;
      const double age_s = age_s_of(s);
      oldest = std::max(oldest, age_s);
      if (k == 0) candidate(5, s, weight, age_s);  // the recommendation: the first candidate
      candidate(6, s, weight, age_s);
    }
    for (uint32_t i : failed) {
      const std::string& id = rows[i].node->node_id;
      const std::string reason = explain(i);
      PutLengthDelimited(
          &w, 7, 2 + VarintSize(id.size()) + id.size() + VarintSize(reason.size()) + reason.size());
      PutLengthDelimited(&w, 1, id.size());
      w.append(id);
      PutLengthDelimited(&w, 2, reason.size());
      w.append(reason);
    }
    PutDouble(&w, 8, oldest);
    return absl::OkStatus();
  }
  out->set_model(request.model());
  out->set_objective(objective);
  if (efficiency.has_value()) write(*efficiency, out->mutable_efficiency());
  write(latency, out->mutable_latency());
  double oldest = out->latency().data_age_s();
  if (efficiency.has_value()) oldest = std::max(oldest, out->efficiency().data_age_s());

  if (pick_one) {
    // The band, best first, so that the lower index of two draws is the better candidate.
    const size_t band = chosen.size();
    std::vector<double> cumulative(band);
    double total = 0;
    for (size_t k = 0; k < band; ++k) {
      total += weight_of(chosen[k]);
      cumulative[k] = total;
    }
    auto draw = [&]() -> size_t {
      const double u = absl::Uniform(gen, 0.0, total);
      const size_t k = static_cast<size_t>(
          std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
      return std::min(k, band - 1);
    };
    const size_t a = draw();
    const size_t b = draw();
    const Scored& winner = chosen[std::min(a, b)];
    auto id = [&](size_t k) -> const std::string& { return rows[chosen[k].index].node->node_id; };
    v1::Candidate* rec = out->mutable_recommendation();
    write(winner, rec);
    rec->set_weight(weight_of(winner) / total);
    std::string why = a == b ? absl::StrCat("power of two choices: drew ", id(a), " twice")
                             : absl::StrCat("power of two choices: drew ", id(a), " and ", id(b),
                                            ", ", id(std::min(a, b)), " scores higher");
    absl::StrAppend(&why, " (by weight among ", band, " candidates within ", kWeightBand * 100,
                    "% of the best score); ", rec->reason());
    rec->set_reason(std::move(why));
    out->set_data_age_s(std::max(oldest, rec->data_age_s()));
    return absl::OkStatus();
  }

  double total = 0;
  for (const Scored& s : chosen) {
    if (in_band(s)) total += weight_of(s);
  }
  out->mutable_candidates()->Reserve(static_cast<int>(chosen.size()));
  for (const Scored& s : chosen) {
    v1::Candidate* cand = out->add_candidates();
    write(s, cand);
    cand->set_weight(in_band(s) ? weight_of(s) / total : 0.0);
    oldest = std::max(oldest, cand->data_age_s());
  }
  *out->mutable_recommendation() = out->candidates(0);
  out->mutable_excluded()->Reserve(static_cast<int>(failed.size()));
  for (uint32_t i : failed) {
    v1::Exclusion* e = out->add_excluded();
    e->set_node_id(rows[i].node->node_id);
    e->set_reason(explain(i));
  }
  out->set_data_age_s(oldest);
  return absl::OkStatus();
}

}  // namespace

absl::Status Pick(const v1::PickRequest& request, const RouteTable& table, absl::Time now,
                  const StalenessPolicy& policy, absl::BitGenRef gen, v1::PickResponse* out) {
  return PickInto(request, table, now, policy, gen, out, nullptr);
}

absl::Status PickSerialized(const v1::PickRequest& request, const RouteTable& table, absl::Time now,
                            const StalenessPolicy& policy, absl::BitGenRef gen, std::string* out) {
  if (UsesOrders(table, policy) && request.mode() != v1::PICK_MODE_ONE) {
    return PickInto(request, table, now, policy, gen, nullptr, out);
  }
  google::protobuf::Arena arena;
  auto* response = google::protobuf::Arena::CreateMessage<v1::PickResponse>(&arena);
  absl::Status status = PickInto(request, table, now, policy, gen, response, nullptr);
  if (status.ok()) {
    out->clear();
    response->SerializeToString(out);
  }
  return status;
}

}  // namespace fleetwes::aggregator
