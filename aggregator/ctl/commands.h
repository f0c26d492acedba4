// fleetwesctl's commands, independent of flag parsing and of the channel so tests can drive
// them with mock stubs. Every RPC carries a deadline. Not thread-safe: one command per call.
#ifndef FLEETWES_AGGREGATOR_CTL_COMMANDS_H_
#define FLEETWES_AGGREGATOR_CTL_COMMANDS_H_

#include <grpcpp/support/status.h>

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aggregator/ctl/format.h"
#include "fleetwes/v1/fleet.grpc.pb.h"
#include "fleetwes/v1/router.grpc.pb.h"

namespace fleetwes::aggregator::ctl {

// Process exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the server could not be reached or refused the call
inline constexpr int kExitUsage = 2;    // bad command line

struct CtlOptions {
  std::string server = "localhost:7470";  // only used in messages
  absl::Duration timeout = absl::Seconds(5);
  std::string model;  // leaderboard, events, history, profile (optional), route (required)
  int64_t limit = 0;  // leaderboard, events, history, profile; 0: the server's default
  std::string objective = "efficiency";
  std::string mode = "ranked";  // route: ranked or one
  std::string output = "table";
  std::string node;   // events: only this node
  std::string kind;   // events: comma-separated rank_change, thermal_change, stale
  std::string since;  // events, history, profile: an RFC 3339 time or a duration back from now
  absl::Duration step = absl::ZeroDuration();  // history, profile: one averaged point per step
  bool watch = false;  // leaderboard: follow Fleet.WatchLeaderboard until it ends
  bool tty = false;    // `out` is a terminal: watch redraws in place, with colours and arrows
};

// --since: an RFC 3339 time, or a duration back from `now` ("15m", "2h"). InvalidArgument
// otherwise.
absl::StatusOr<absl::Time> ParseSince(absl::string_view since, absl::Time now);

// The text printed for `fleetwesctl --help`.
std::string UsageText();

// One line explaining a failed RPC to an operator, e.g.
//   "cannot reach fleetwes-aggregator at localhost:7470 (connection refused)".
// NOT_FOUND and INVALID_ARGUMENT messages from the server are passed through.
std::string DescribeRpcError(const grpc::Status& status, absl::string_view server,
                             absl::Duration timeout);

// Runs the command named by args[0] ("leaderboard", "route", "nodes", "node ID", "events",
// "history ID", "profile ID"). `leaderboard --watch` streams until the server ends the watch
// (no deadline; the channel's keepalive notices a dead server). Writes the
// result to `out`, errors as one line "fleetwesctl: ..." to `err`. `now` dates node ages.
// Returns kExitOk, kExitFailure or kExitUsage.
int RunCommand(const std::vector<std::string>& args, const CtlOptions& options,
               v1::Fleet::StubInterface& fleet, v1::Router::StubInterface& router, absl::Time now,
               std::ostream& out, std::ostream& err);

}  // namespace fleetwes::aggregator::ctl

#endif  // FLEETWES_AGGREGATOR_CTL_COMMANDS_H_
