// Router.Pick: which nodes a gateway should send a model's requests to (docs/api.md).
// Candidates are the fresh nodes serving the model that satisfy every constraint; each other
// node serving the model is listed as excluded with the reason. Candidates are scored for the
// requested objective:
//   EFFICIENCY: penalized WES (tokens per joule), falling back to the node's last measured WES
//               for this model when it is idle now;
//   LATENCY:    1 / (1 + predicted latency in seconds), see PredictedLatencyS;
//   BALANCED:   0.5 x WES / best WES among candidates + 0.5 x (1 + best latency) / (1 + latency).
// Weights spread load over the candidates close to the best instead of herding onto it: a
// candidate within the band (score >= kWeightBand x the best score) weighs score / the sum of the
// band's scores, every other candidate 0; when the best score is 0, the band is every candidate
// with equal weights. RANKED returns the best `count` candidates, weighted within the returned
// ones (weights sum to 1). ONE draws two candidates of the whole band by weight (with
// replacement) and returns the better by score (ties: node id): power of two choices.
// Pure functions over the nodes they are given; thread-safe.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "fleetwes/v1/router.pb.h"

namespace fleetwes::aggregator {

inline constexpr uint32_t kPickDefaultCount = 5;
inline constexpr uint32_t kPickMaxCount = 100;
inline constexpr int kPickMaxExcludedNodes = 1000;
inline constexpr int kPickMaxRequiredLabels = 64;
// Candidates scoring at least this fraction of the best score share the traffic.
inline constexpr double kWeightBand = 0.8;
// Reference response length behind the generation term of the predicted latency.
inline constexpr double kReferenceOutputTokens = 128;
// TTFT assumed for a busy window that measured none.
inline constexpr double kUnknownTtftS = 1.0;
// Per-token time assumed when neither TPOT nor throughput was ever measured.
inline constexpr double kUnknownTokenTimeS = 0.05;

// Predicted seconds until a new request's response (kReferenceOutputTokens long) completes:
//   L = T + W x max(T, 0.05) + N x tau
// T: TTFT p95 of the window; when absent 0 if the model was idle (nothing running or waiting),
//    else kUnknownTtftS. W: requests waiting (0 if not reported). N: kReferenceOutputTokens.
// tau: TPOT mean (else p50) if measured; else max(1, running) / decode tokens/s (the last
//    measured throughput when idle now); else kUnknownTokenTimeS.
double PredictedLatencyS(const ModelState& model);

// The nodes Pick looks at for `model`: every node with a sample of it, sorted by node id.
std::vector<NodeStatePtr> CandidatesFor(const FleetState& state, absl::string_view model);

// One node serving the model as Pick reads it: every value behind the constraints and the
// scores, copied out of the node's state into one contiguous row, so that a Pick over hundreds
// of nodes reads a cache line or two per node instead of chasing maps and protobuf messages.
// `node` and `model` are read only for the nodes an answer lists.
struct RouteRow {
  const NodeState* node = nullptr;
  const ModelState* model = nullptr;
  absl::Time window_end;
  double interval_s = 0;
  double kv_cache_usage = 0;
  double ttft_p95_s = 0;
  double latency_s = 0;  // PredictedLatencyS
  double wes = 0;        // penalized WES scored by (this window's, else the last measured)
  double wes_raw = 0;
  uint32_t waiting = 0;
  v1::ThermalState state = v1::THERMAL_STATE_UNSPECIFIED;  // the model's, else the node's
  bool has_kv = false;
  bool has_waiting = false;
  bool has_ttft = false;
  bool idle = false;
  bool has_wes = false;
};

// A model's rows in node id order; `keep` holds the states the rows point into.
//
// A table built from a serving set is kept and shared by many calls (RouterService), so it also
// carries what does not depend on the request, built on first use and then shared: per objective
// the rows in score order (ties: node id), the rows by penalized WES (the efficiency pick's
// order) and by predicted latency (the latency pick's), the rows by the time their data goes
// stale under `policy`, and per row the parts of its Candidate every answer copies (node id,
// reason, measurements, labels). Pick then walks the rows best first and stops after `count`
// qualifying ones; without constraints it finds the stale rows at the front of the expiry order,
// with constraints it still checks every row (every exclusion is listed). BALANCED scores depend
// on the call's best candidates and are computed per call. The answer is the one the plain scan
// over every row gives (router_test compares them). A table built from a node list (one call) is
// scanned plainly. Lazily built parts are thread-safe; a table is immutable otherwise.
struct RouteTable {
  RouteTable();
  ~RouteTable();
  RouteTable(RouteTable&&) noexcept;
  RouteTable& operator=(RouteTable&&) noexcept;

  std::vector<RouteRow> rows;
  std::vector<NodeStatePtr> keep;
  std::shared_ptr<const ServingSet> set;  // when built from one
  // Whether Pick may use the orders and prebuilt candidates (set by the serving-set builder when
  // every row's WES and latency are finite) and the policy `stale_at` was computed with.
  bool ordered = false;
  StalenessPolicy policy;
  std::vector<absl::Time> stale_at;  // per row: stale once now > stale_at (ordered tables)

  struct Lazy;                 // the orders and prebuilt candidates (router.cc)
  std::unique_ptr<Lazy> lazy;  // non-null when `ordered`
};

// Rows of the nodes in `nodes` that serve `model` (others are skipped), for one plain scan.
RouteTable BuildRouteTable(const std::vector<NodeStatePtr>& nodes, absl::string_view model);
// Rows of a serving set (FleetState::Serving), ordered for the calls that share it; staleness
// precomputed under `policy` (a Pick with another policy scans plainly). `previous`, when given,
// is an earlier table of the same model built from a serving set: the rows of the nodes whose
// state is the same object in both sets are copied from it instead of read again (node states
// are immutable once published, so the rows are equal).
RouteTable BuildRouteTable(std::shared_ptr<const ServingSet> set,
                           const StalenessPolicy& policy = StalenessPolicy{},
                           const RouteTable* previous = nullptr);

// Builds what Pick would otherwise build on first use of an ordered table: every order and the
// prebuilt candidates of the rows at the front of each (so a table prepared off the call path,
// e.g. by RouterService's refresh, costs the calls that share it nothing more). No-op for a
// table that is not ordered. Thread-safe, like the lazy parts it builds.
void PrepareRouteTable(const RouteTable& table);

// `nodes`: the nodes serving the model (CandidatesFor); others are skipped. `gen` draws the
// ONE-mode pick (a seeded generator makes it reproducible). INVALID_ARGUMENT for a bad request
// (empty model, unknown enum, NaN, negative or out-of-range constraint, too many labels or
// excluded nodes); NOT_FOUND when no node qualifies, with the reasons of up to 20 nodes in the
// message. A `count` above kPickMaxCount is capped.
absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy, absl::BitGenRef gen);
// As above with a per-thread absl::BitGen.
absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy);
// The same answer over a model's table (BuildRouteTable); what the Router service calls.
absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request, const RouteTable& table,
                                      absl::Time now, const StalenessPolicy& policy,
                                      absl::BitGenRef gen);
// The same, written into `out` (which may live on an arena; it is cleared first). On an error
// `out` is unspecified.
absl::Status Pick(const v1::PickRequest& request, const RouteTable& table, absl::Time now,
                  const StalenessPolicy& policy, absl::BitGenRef gen, v1::PickResponse* out);
// The same answer as PickResponse's wire bytes, into `out` (replaced): what the Router service
// sends. A RANKED call over an ordered table (the service's) writes them without building the
// message, each listed candidate as its prebuilt bytes (serialized once per table) followed by
// its score, weight and data age; a parser reads the message Pick builds (router_test compares
// them). Other calls build the message and serialize it. On an error `out` is unspecified.
absl::Status PickSerialized(const v1::PickRequest& request, const RouteTable& table, absl::Time now,
                            const StalenessPolicy& policy, absl::BitGenRef gen, std::string* out);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_
