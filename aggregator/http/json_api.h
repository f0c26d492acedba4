// The HTTP JSON API (docs/api.md, "HTTP JSON API"): read-only views of the fleet for scripts and
// dashboards, produced from the same protobuf messages the gRPC services return (proto field
// names, proto3 JSON mapping), plus the route shape fleet tools already script against:
//   GET /api/v1/leaderboard[?model=M&limit=N]       Fleet.Leaderboard
//   GET /api/v1/nodes                               Fleet.ListNodes
//   GET /api/v1/nodes/{id}                          Fleet.GetNode
//   GET /api/v1/nodes/{id}/profile[?model=M&since=S&step=D&limit=N]   Fleet.Profile
//   GET /api/v1/events[?node=ID&model=M&kind=K,..&since=S&limit=N]    Fleet.Events
//       since: an RFC 3339 time or a duration back from now ("15m"); step: a duration ("1m");
//       kind: rank_change, thermal_change, stale (comma-separated)
//   GET /api/v1/route/best?model=M[&objective=..]   Router.Pick, with "efficiency"/"latency"
//       objects carrying "node", "tok_s", "wes", "reason" and "default" naming the objective
// Errors are JSON {"error": {"code": "INVALID_ARGUMENT", "message": "..."}} with HTTP 400 (bad
// query), 404 (unknown node, no qualifying node), 503 (database unavailable) or 500. Unknown query
// parameters are refused (400) so a typo does not silently change an answer. Thread-safe.
#ifndef FLEETWES_AGGREGATOR_HTTP_JSON_API_H_
#define FLEETWES_AGGREGATOR_HTTP_JSON_API_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aggregator/fleet/fleet_service.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/metrics.h"
#include "common/clock.h"

namespace fleetwes::aggregator {

// One answer: HTTP status and JSON body.
struct JsonReply {
  int status = 200;
  std::string body;
};

// HTTP status for an absl status code.
int HttpStatusFor(absl::StatusCode code);

// The JSON error body for `status`.
std::string JsonError(const absl::Status& status);

class JsonApi {
 public:
  // Pointers must outlive the API.
  JsonApi(const FleetQueries* queries, const FleetState* state, AggregatorMetrics* metrics,
          Clock* clock, StalenessPolicy policy);

  // `path` is the request path (without the query); `params` its query parameters. Paths
  // outside /api/v1/ get 404.
  JsonReply Handle(absl::string_view path, const std::multimap<std::string, std::string>& params);

 private:
  // Each returns the JSON body or the error to answer with.
  absl::StatusOr<std::string> Leaderboard(const std::multimap<std::string, std::string>& params);
  absl::StatusOr<std::string> Nodes(const std::multimap<std::string, std::string>& params);
  absl::StatusOr<std::string> Node(absl::string_view id,
                                   const std::multimap<std::string, std::string>& params);
  absl::StatusOr<std::string> Profile(absl::string_view id,
                                      const std::multimap<std::string, std::string>& params);
  absl::StatusOr<std::string> Events(const std::multimap<std::string, std::string>& params);
  absl::StatusOr<std::string> RouteBest(const std::multimap<std::string, std::string>& params);

  const FleetQueries* const queries_;
  const FleetState* const state_;
  AggregatorMetrics* const metrics_;
  Clock* const clock_;
  const StalenessPolicy policy_;
};

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_HTTP_JSON_API_H_
