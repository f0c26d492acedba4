#include "aggregator/ctl/commands.h"

#include <grpcpp/client_context.h>

#include <chrono>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

}  // namespace

std::string UsageText() {
  return R"(fleetwesctl: the fleetwes operator CLI. Asks a fleetwes-aggregator over gRPC.

usage: fleetwesctl [--server=HOST:PORT] [--timeout=5s] COMMAND [flags]

commands:
  leaderboard [--model=M] [--limit=N] [-o table|json]
      Nodes ranked by penalized WES (tokens per joule, thermal penalty applied). Without
      --model: the fleet leaderboard by node WES; with --model: the nodes serving that model.
      Columns: rank, node, penalized WES, raw WES, thermal cost %, thermal state, power scope
      of the measurement, decode tok/s, watts, data age, notes (swapping, baseline loss).
      Nodes without a ranking (stale, idle, no power reading) are listed below with the reason.
  route --model=M [--objective=efficiency|latency|balanced] [-o table|json]
      What Router.Pick answers a gateway: the recommendation, the efficiency and latency picks,
      ranked candidates with traffic weights, and excluded nodes with their reasons.
  nodes [-o table|json]
      Every known node: status, thermal state, node WES, models, last frame, labels.
  node ID [-o table|json]
      One node with the devices and models of its latest frame.

global flags:
  --server=HOST:PORT   the aggregator's gRPC address (default localhost:7470)
  --timeout=DURATION   deadline of each call, e.g. 5s or 500ms (default 5s)
  -o table|json        output format (default table); json is the protobuf JSON mapping
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

  if (command == "leaderboard") {
    if (!expect_args(1)) return UsageError(err, "leaderboard takes no arguments");
    if (options.limit < 0 || options.limit > 100000) {
      return UsageError(err, "--limit must be between 0 and 100000");
    }
    v1::LeaderboardRequest req;
    req.set_model(options.model);
    req.set_limit(static_cast<uint32_t>(options.limit));
    v1::LeaderboardResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options.timeout);
    grpc::Status s = fleet.Leaderboard(&ctx, req, &resp);
    if (!s.ok()) return RpcError(err, s, options);
    return Render(
        resp, options, [&] { return LeaderboardTable(resp); }, out, err);
  }

  if (command == "route") {
    if (!expect_args(1)) return UsageError(err, "route takes no arguments");
    if (options.model.empty()) return UsageError(err, "route needs --model");
    auto objective = ParseObjective(options.objective);
    if (!objective.ok()) return UsageError(err, objective.status().message());
    v1::PickRequest req;
    req.set_model(options.model);
    req.set_objective(*objective);
    v1::PickResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options.timeout);
    grpc::Status s = router.Pick(&ctx, req, &resp);
    if (!s.ok()) return RpcError(err, s, options);
    return Render(
        resp, options, [&] { return PickTable(resp); }, out, err);
  }

  if (command == "nodes") {
    if (!expect_args(1)) return UsageError(err, "nodes takes no arguments");
    v1::ListNodesResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options.timeout);
    grpc::Status s = fleet.ListNodes(&ctx, v1::ListNodesRequest(), &resp);
    if (!s.ok()) return RpcError(err, s, options);
    return Render(
        resp, options, [&] { return NodesTable(resp, now); }, out, err);
  }

  if (command == "node") {
    if (!expect_args(2) || args[1].empty()) return UsageError(err, "usage: fleetwesctl node ID");
    v1::GetNodeRequest req;
    req.set_node_id(args[1]);
    v1::GetNodeResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options.timeout);
    grpc::Status s = fleet.GetNode(&ctx, req, &resp);
    if (!s.ok()) return RpcError(err, s, options);
    return Render(
        resp, options, [&] { return NodeDetail(resp, now); }, out, err);
  }

  return UsageError(err, absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace fleetwes::aggregator::ctl
