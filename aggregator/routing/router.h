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

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_
