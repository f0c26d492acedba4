#include "aggregator/ctl/commands.h"

#include <grpcpp/client_context.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace fleetwes::aggregator::ctl {
namespace {

constexpr absl::string_view kProgram = "fleetwesctl: ";

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
}

// The cause of an UNAVAILABLE status in a few words, from gRPC's message.
std::string UnavailableCause(absl::string_view message) {
  std::string m = absl::AsciiStrToLower(message);
  if (absl::StrContains(m, "connection refused")) return "connection refused";
  if (absl::StrContains(m, "dns") || absl::StrContains(m, "name or service not known") ||
      absl::StrContains(m, "resolve")) {
    return "cannot resolve the host name";
  }
  if (absl::StrContains(m, "no route to host")) return "no route to host";
  if (absl::StrContains(m, "network is unreachable")) return "network unreachable";
  if (absl::StrContains(m, "connection reset") || absl::StrContains(m, "socket closed")) {
    return "connection closed by the server";
  }
  if (absl::StrContains(m, "timed out") || absl::StrContains(m, "timeout")) {
    return "connection timed out";
  }
  if (absl::StrContains(m, "ssl") || absl::StrContains(m, "handshake")) {
    return "TLS handshake failed";
  }
  return message.empty() ? std::string("unavailable") : std::string(message);
}

// Prints a message as JSON or as a table; returns the exit code.
template <typename Msg>
int Render(const Msg& msg, const CtlOptions& options, const std::function<std::string()>& table,
           std::ostream& out, std::ostream& err) {
  if (options.output == "json") {
    auto json = ToJson(msg);
    if (!json.ok()) {
      err << kProgram << json.status().message() << "\n";
      return kExitFailure;
    }
    out << *json << "\n";
  } else {
    out << table();
  }
  return kExitOk;
}

int UsageError(std::ostream& err, absl::string_view what) {
  err << kProgram << what << " (see fleetwesctl --help)\n";
  return kExitUsage;
}

int RpcError(std::ostream& err, const grpc::Status& s, const CtlOptions& options) {
  err << kProgram << DescribeRpcError(s, options.server, options.timeout) << "\n";
  return kExitFailure;
}

// Sets the request's start from --since, if given (an unset start keeps the server's default
// range); false (after a usage error) when invalid.
template <typename Request>
bool SetSince(const CtlOptions& options, absl::Time now, Request* req, std::ostream& err) {
  if (options.since.empty()) return true;
  absl::StatusOr<absl::Time> t = ParseSince(options.since, now);
  if (!t.ok()) {
    UsageError(err, t.status().message());
    return false;
  }
  const int64_t seconds = absl::ToUnixSeconds(*t);  // floor
  google::protobuf::Timestamp* start = req->mutable_start();
  start->set_seconds(seconds);
  start->set_nanos(
      static_cast<int32_t>((*t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
  return true;
}

void SetStep(absl::Duration step, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(step);
  out->set_seconds(ns / 1'000'000'000);
  out->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

// Follows Fleet.WatchLeaderboard, printing each update; returns the exit code.
int Watch(const CtlOptions& options, v1::Fleet::StubInterface& fleet, std::ostream& out,
          std::ostream& err) {
  v1::WatchLeaderboardRequest req;
  req.set_model(options.model);
  req.set_limit(static_cast<uint32_t>(options.limit));
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderInterface<v1::LeaderboardUpdate>> stream =
      fleet.WatchLeaderboard(&ctx, req);
  std::map<std::string, uint32_t> previous;
  v1::LeaderboardUpdate update;
  bool first = true;
  while (stream->Read(&update)) {
    if (options.output == "json") {
      auto json = ToJson(update);
      if (!json.ok()) {
        err << kProgram << json.status().message() << "\n";
        return kExitFailure;
      }
      out << *json << "\n";
    } else if (options.tty) {
      // Home and clear, then the screen: the board stays in place.
      out << "\x1b[H\x1b[2J" << WatchScreen(update, previous, true);
    } else {
      if (!first) out << "\n";
      out << WatchScreen(update, previous, false);
    }
    out.flush();
    first = false;
    previous.clear();
    for (const v1::LeaderboardEntry& e : update.leaderboard().entries()) {
      previous[e.node_id()] = e.rank();
    }
  }
  grpc::Status s = stream->Finish();
  if (!s.ok()) return RpcError(err, s, options);
  err << kProgram << "the aggregator ended the watch\n";
  return kExitOk;
}

// One unary call with the --timeout deadline, its answer printed by Render; a failed call
// prints RpcError's message and returns its exit code.
template <typename Resp>
int CallAndRender(const CtlOptions& options,
                  const std::function<grpc::Status(grpc::ClientContext*, Resp*)>& call,
                  const std::function<std::string(const Resp&)>& table, std::ostream& out,
                  std::ostream& err) {
  Resp resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options.timeout);
  grpc::Status s = call(&ctx, &resp);
  if (!s.ok()) return RpcError(err, s, options);
  return Render(
      resp, options, [&] { return table(resp); }, out, err);
}

}  // namespace

absl::StatusOr<absl::Time> ParseSince(absl::string_view since, absl::Time now) {
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, std::string(since), &t, &error)) return t;
  absl::Duration d;
  if (absl::ParseDuration(std::string(since), &d) && d >= absl::ZeroDuration() &&
      d <= absl::Hours(24 * 3650)) {
    return now - d;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--since must be an RFC 3339 time or a duration such as 2h, got \"", since, "\""));
}

std::string UsageText() {
  return R"(fleetwesctl: the fleetwes operator CLI. Asks a fleetwes-aggregator over gRPC.

usage: fleetwesctl [--server=HOST:PORT] [--timeout=5s] COMMAND [flags]

commands:
  leaderboard [--model=M] [--limit=N] [--watch] [-o table|json]
      Nodes ranked by penalized WES (tokens per joule, thermal penalty applied). Without
      --model: the fleet leaderboard by node WES; with --model: the nodes serving that model.
      Columns: rank, node, penalized WES, raw WES, thermal cost %, thermal state, power scope
      of the measurement, decode tok/s, watts, data age, notes (swapping, baseline loss).
      Nodes without a ranking (stale, idle, no power reading) are listed below with the reason.
      --watch: follow the leaderboard as it changes (at most one update a second), with each
      node's move (up/down and the previous rank) and the events since the previous update.
      On a terminal the screen is redrawn in place; otherwise each update is appended.
  events [--node=ID] [--model=M] [--kind=K,..] [--since=T] [--limit=N] [-o table|json]
      Stored events, newest first: rank changes, thermal transitions, nodes going stale.
      --kind: rank_change, thermal_change, stale. Default: the last 24 hours, 100 events.
  history ID [--model=M] [--since=T] [--step=D] [--limit=N] [-o table|json]
      One node's tok/s, watts, WES and thermal state from the database (node level, or one
      model's with --model). --step=1m: one averaged point per minute. Default: the last hour.
  profile ID [--model=M] [--since=T] [--step=D] [--limit=N] [-o table|json]
      One node's timeline for one model (default: its busiest in the range): tok/s, TTFT and
      TPOT p95, KV use, queue, thermal state, swapping, watts, WES. Explains a WES drop.
  route --model=M [--objective=efficiency|latency|balanced] [--mode=ranked|one] [-o table|json]
      What Router.Pick answers a gateway: the recommendation, the efficiency and latency picks,
      ranked candidates with traffic weights, and excluded nodes with their reasons.
      --mode=one: one node drawn by weight (power of two choices), as a gateway picking per
      request would get it.
  nodes [-o table|json]
      Every known node: status, thermal state, node WES, models, last frame, labels.
  node ID [-o table|json]
      One node with the devices and models of its latest frame.

global flags:
  --server=HOST:PORT   the aggregator's gRPC address (default localhost:7470)
  --timeout=DURATION   deadline of each call, e.g. 5s or 500ms (default 5s)
  -o table|json        output format (default table); json is the protobuf JSON mapping
  --since=T            an RFC 3339 time (2026-01-01T10:00:00Z) or a duration back from now (2h)
  --version            print the version and exit
  --help               print this help and exit

exit status: 0 success, 1 the aggregator could not be reached or refused the request,
2 bad command line.
)";
}

std::string DescribeRpcError(const grpc::Status& status, absl::string_view server,
                             absl::Duration timeout) {
  const std::string& msg = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::StrCat("cannot reach fleetwes-aggregator at ", server, " (",
                          UnavailableCause(msg), ")");
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::StrCat("fleetwes-aggregator at ", server, " did not answer within ",
                          absl::FormatDuration(timeout));
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return msg.empty() ? absl::StrCat("request refused (code ", status.error_code(), ")") : msg;
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::StrCat("fleetwes-aggregator at ", server,
                          " does not implement this call (is it an older version?)");
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return absl::StrCat("access denied by fleetwes-aggregator at ", server,
                          msg.empty() ? "" : ": ", msg);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::StrCat("fleetwes-aggregator at ", server, " is overloaded",
                          msg.empty() ? "" : ": ", msg);
    default:
      return absl::StrCat("call to fleetwes-aggregator at ", server, " failed (code ",
                          status.error_code(), ")", msg.empty() ? "" : ": ", msg);
  }
}

int RunCommand(const std::vector<std::string>& args, const CtlOptions& options,
               v1::Fleet::StubInterface& fleet, v1::Router::StubInterface& router, absl::Time now,
               std::ostream& out, std::ostream& err) {
  if (args.empty()) return UsageError(err, "missing command");
  if (auto format = ParseOutputFormat(options.output); !format.ok()) {
    return UsageError(err, format.status().message());
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return UsageError(err, "--timeout must be positive");
  }
  const std::string& command = args[0];
  auto expect_args = [&](size_t n) { return args.size() == n; };

  if (options.limit < 0 || options.limit > 100000) {
    return UsageError(err, "--limit must be between 0 and 100000");
  }
  if (options.step < absl::ZeroDuration()) return UsageError(err, "--step must not be negative");

  if (command == "leaderboard") {
    if (!expect_args(1)) return UsageError(err, "leaderboard takes no arguments");
    if (options.watch) return Watch(options, fleet, out, err);
    v1::LeaderboardRequest req;
    req.set_model(options.model);
    req.set_limit(static_cast<uint32_t>(options.limit));
    return CallAndRender<v1::LeaderboardResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::LeaderboardResponse* resp) {
          return fleet.Leaderboard(ctx, req, resp);
        },
        [&](const v1::LeaderboardResponse& resp) { return LeaderboardTable(resp); }, out, err);
  }

  if (command == "route") {
    if (!expect_args(1)) return UsageError(err, "route takes no arguments");
    if (options.model.empty()) return UsageError(err, "route needs --model");
    auto objective = ParseObjective(options.objective);
    if (!objective.ok()) return UsageError(err, objective.status().message());
    auto mode = ParsePickMode(options.mode);
    if (!mode.ok()) return UsageError(err, mode.status().message());
    v1::PickRequest req;
    req.set_model(options.model);
    req.set_objective(*objective);
    req.set_mode(*mode);
    return CallAndRender<v1::PickResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::PickResponse* resp) {
          return router.Pick(ctx, req, resp);
        },
        [&](const v1::PickResponse& resp) { return PickTable(resp); }, out, err);
  }

  if (command == "nodes") {
    if (!expect_args(1)) return UsageError(err, "nodes takes no arguments");
    return CallAndRender<v1::ListNodesResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::ListNodesResponse* resp) {
          return fleet.ListNodes(ctx, v1::ListNodesRequest(), resp);
        },
        [&](const v1::ListNodesResponse& resp) { return NodesTable(resp, now); }, out, err);
  }

  if (command == "node") {
    if (!expect_args(2) || args[1].empty()) return UsageError(err, "usage: fleetwesctl node ID");
    v1::GetNodeRequest req;
    req.set_node_id(args[1]);
    return CallAndRender<v1::GetNodeResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::GetNodeResponse* resp) {
          return fleet.GetNode(ctx, req, resp);
        },
        [&](const v1::GetNodeResponse& resp) { return NodeDetail(resp, now); }, out, err);
  }

  if (command == "events") {
    if (!expect_args(1)) return UsageError(err, "events takes no arguments (use --node=ID)");
    v1::EventsRequest req;
    req.set_node_id(options.node);
    req.set_model(options.model);
    req.set_limit(static_cast<uint32_t>(options.limit));
    if (!options.kind.empty()) {
      for (absl::string_view k : absl::StrSplit(options.kind, ',')) {
        v1::EventKind kind;
        if (!v1::EventKind_Parse(absl::StrCat("EVENT_KIND_", absl::AsciiStrToUpper(k)), &kind) ||
            kind == v1::EVENT_KIND_UNSPECIFIED) {
          return UsageError(err, absl::StrCat("--kind must list rank_change, thermal_change or "
                                              "stale, got \"",
                                              k, "\""));
        }
        req.add_kinds(kind);
      }
    }
    if (!SetSince(options, now, &req, err)) return kExitUsage;
    return CallAndRender<v1::EventsResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::EventsResponse* resp) {
          return fleet.Events(ctx, req, resp);
        },
        [&](const v1::EventsResponse& resp) { return EventsTable(resp); }, out, err);
  }

  if (command == "history") {
    if (!expect_args(2) || args[1].empty()) {
      return UsageError(err, "usage: fleetwesctl history ID [--model=M --since=T --step=D]");
    }
    v1::HistoryRequest req;
    req.set_node_id(args[1]);
    req.set_model(options.model);
    req.set_limit(static_cast<uint32_t>(options.limit));
    if (!SetSince(options, now, &req, err)) return kExitUsage;
    if (options.step > absl::ZeroDuration()) SetStep(options.step, req.mutable_step());
    return CallAndRender<v1::HistoryResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::HistoryResponse* resp) {
          return fleet.History(ctx, req, resp);
        },
        [&](const v1::HistoryResponse& resp) { return HistoryTable(resp); }, out, err);
  }

  if (command == "profile") {
    if (!expect_args(2) || args[1].empty()) {
      return UsageError(err, "usage: fleetwesctl profile ID [--model=M --since=T --step=D]");
    }
    v1::ProfileRequest req;
    req.set_node_id(args[1]);
    req.set_model(options.model);
    req.set_limit(static_cast<uint32_t>(options.limit));
    if (!SetSince(options, now, &req, err)) return kExitUsage;
    if (options.step > absl::ZeroDuration()) SetStep(options.step, req.mutable_step());
    return CallAndRender<v1::ProfileResponse>(
        options,
        [&](grpc::ClientContext* ctx, v1::ProfileResponse* resp) {
          return fleet.Profile(ctx, req, resp);
        },
        [&](const v1::ProfileResponse& resp) { return ProfileTable(resp); }, out, err);
  }

  return UsageError(err, absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace fleetwes::aggregator::ctl
