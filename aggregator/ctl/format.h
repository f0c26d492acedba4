// Rendering of Fleet and Router answers for fleetwesctl: aligned text tables for people and
// JSON (the protobuf JSON mapping, snake_case field names) for scripts. WES values are rounded
// for display only, with fleetwes::FormatWes. Pure functions; thread-safe.
#ifndef FLEETWES_AGGREGATOR_CTL_FORMAT_H_
#define FLEETWES_AGGREGATOR_CTL_FORMAT_H_

#include <google/protobuf/message.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleetwes/v1/fleet.pb.h"
#include "fleetwes/v1/router.pb.h"

namespace fleetwes::aggregator::ctl {

enum class OutputFormat { kTable, kJson };

// "table" or "json"; InvalidArgument otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view s);

// "efficiency", "latency" or "balanced"; InvalidArgument otherwise.
absl::StatusOr<v1::Objective> ParseObjective(absl::string_view s);
// "ranked" or "one" (Router.Pick's mode).
absl::StatusOr<v1::PickMode> ParsePickMode(absl::string_view s);

// One-line JSON of `m` (snake_case names, enums as names, default scalars printed, absent
// optional values omitted). Internal if protobuf refuses the message.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& m);

// A compact age: "0.4s", "12s", "3m05s", "2h03m", "4d02h"; "-" for a negative or non-finite value.
std::string FormatAge(double seconds);

// Why a leaderboard entry is not ranked: "stale", or the WES null reason ("idle",
// "no_power_reading", ...), or "unranked" when the server gave no reason.
std::string UnrankedReason(const v1::LeaderboardEntry& e);

// The power scopes behind a WES value joined with "+" ("gpu_board+cpu_package"), "-" if none.
std::string PowerScopes(const v1::Wes& wes);

// Leaderboard table: rank, node, penalized WES, raw WES, thermal cost %, thermal state, power
// scope, tok/s, watts, data age and notes; unranked nodes below it with their reason.
std::string LeaderboardTable(const v1::LeaderboardResponse& r);

// Router.Pick answer: the recommendation, the efficiency and latency picks, ranked candidates
// and the excluded nodes with their reasons.
std::string PickTable(const v1::PickResponse& r);

// Node list. `now` dates the last_seen timestamps.
std::string NodesTable(const v1::ListNodesResponse& r, absl::Time now);

// One node: summary, devices and models of its latest frame.
std::string NodeDetail(const v1::GetNodeResponse& r, absl::Time now);

// Stored events, newest first: time, node, model ("-" for the fleet board), kind, the rank or
// thermal change, message.
std::string EventsTable(const v1::EventsResponse& r);

// One line per history point: time, tok/s, watts, raw and penalized WES, thermal state.
std::string HistoryTable(const v1::HistoryResponse& r);

// One node's profile: a title naming node and model, then one line per point: time, tok/s,
// TTFT p95, TPOT p95, KV use, queue, thermal state, memory pressure, watts, raw and penalized WES.
std::string ProfileTable(const v1::ProfileResponse& r);

// A rank move for `leaderboard --watch`: "" when unchanged, "new" for a node that was not ranked,
// else the direction, the places and the previous rank: "▲2 (#3)" / "▼1 (#1)" with `tty`, or
// "up 2 (was #3)" / "down 1 (was #1)" in plain text. `previous` 0: not ranked before.
std::string RankMove(uint32_t rank, uint32_t previous, bool tty);

// One screen of `leaderboard --watch`: the leaderboard table with a MOVE column (from each entry's
// previous_rank when the server sends it, else from `previous_ranks`, the ranks of the previous
// update by node id; empty for the first update), then the update's events. With `tty`, moves up
// are green, moves down red (ANSI colours); without it the text has no escape sequences.
std::string WatchScreen(const v1::LeaderboardUpdate& u,
                        const std::map<std::string, uint32_t>& previous_ranks, bool tty);

// Left/right aligned text columns separated by two spaces. Not thread-safe.
class TextTable {
 public:
  enum class Align { kLeft, kRight };
  explicit TextTable(std::vector<std::string> header, std::vector<Align> align = {});
  void AddRow(std::vector<std::string> cells);
  // Every line ends with '\n'; trailing blanks are trimmed.
  std::string Render(absl::string_view indent = "") const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> header_;
  std::vector<Align> align_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace fleetwes::aggregator::ctl

#endif  // FLEETWES_AGGREGATOR_CTL_FORMAT_H_
