// Router.Pick: which nodes a gateway should send a model's requests to (docs/api.md).
// Candidates are the fresh nodes serving the model that satisfy every constraint; each other
// node is listed as excluded with the reason. Candidates are scored for the requested objective:
//   EFFICIENCY: penalized WES (tokens per joule), falling back to the node's last measured WES
//               for this model when it is idle now;
//   LATENCY:    1 / (1 + predicted latency in seconds), see PredictedLatencyS;
//   BALANCED:   0.5 x WES / best WES among candidates + 0.5 x (1 + best latency) / (1 + latency).
// Weights are proportional to the scores of the returned candidates and sum to 1.
// Pure functions over a snapshot; thread-safe.
#ifndef FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_
#define FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "fleetwes/v1/router.pb.h"

namespace fleetwes::aggregator {

inline constexpr uint32_t kPickDefaultCount = 5;
inline constexpr uint32_t kPickMaxCount = 100;
inline constexpr int kPickMaxExcludedNodes = 1000;
inline constexpr int kPickMaxRequiredLabels = 64;
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

// INVALID_ARGUMENT for a bad request (empty model, unknown enum, out-of-range constraint);
// NOT_FOUND when no node qualifies, with every node's reason in the message.
absl::StatusOr<v1::PickResponse> Pick(const v1::PickRequest& request,
                                      const std::vector<NodeStatePtr>& nodes, absl::Time now,
                                      const StalenessPolicy& policy);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_ROUTING_ROUTER_H_
