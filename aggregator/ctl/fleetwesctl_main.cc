// fleetwesctl: the operator CLI. Parses flags, opens a channel and runs one command
// (aggregator/ctl/commands.h).
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "aggregator/ctl/commands.h"
#include "common/version.h"

ABSL_FLAG(std::string, server, "localhost:7470", "fleetwes-aggregator gRPC address (host:port)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline of each call");
ABSL_FLAG(std::string, model, "", "model name (leaderboard: optional; route: required)");
ABSL_FLAG(int64_t, limit, 0, "at most this many rows (0: server default)");
ABSL_FLAG(std::string, node, "", "events: only this node");
ABSL_FLAG(std::string, kind, "", "events: rank_change, thermal_change, stale (comma-separated)");
ABSL_FLAG(std::string, since, "", "events, history, profile: RFC 3339 time or duration back");
ABSL_FLAG(absl::Duration, step, absl::ZeroDuration(), "history, profile: one point per step");
ABSL_FLAG(bool, watch, false, "leaderboard: follow it as it changes");
ABSL_FLAG(std::string, objective, "efficiency", "route: efficiency, latency or balanced");
ABSL_FLAG(std::string, mode, "ranked", "route: ranked (candidates with weights) or one (one node)");
ABSL_FLAG(std::string, o, "table", "output format: table or json");

namespace {

using fleetwes::aggregator::ctl::kExitUsage;

bool IsHelp(absl::string_view a) {
  return a == "--help" || a == "-help" || a == "-h" || a == "help" || a == "--helpshort" ||
         a == "--helpfull";
}

// absl::ParseCommandLine exits with status 1 on a bad flag; fleetwesctl promises 2 for usage
// errors, so flag names and values are checked first with absl's own parsers.
bool CheckFlags(int argc, char** argv, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    absl::string_view name = arg;
    absl::string_view value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name == "version") continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !has_value) continue;
    }
    if (flag == nullptr) {
      *error = absl::StrCat("unknown flag --", name);
      return false;
    }
    if (flag->IsOfType<bool>()) continue;
    if (!has_value) {
      if (i + 1 >= argc) {
        *error = absl::StrCat("flag --", name, " needs a value");
        return false;
      }
      value = argv[++i];
    }
    std::string parse_error;
    if (!flag->ParseFrom(value, &parse_error)) {
      *error = absl::StrCat("bad value for --", name, ": ", parse_error);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  namespace ctl = fleetwes::aggregator::ctl;
  absl::SetProgramUsageMessage("the fleetwes operator CLI; run fleetwesctl --help");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return absl::StrCat("fleetwesctl ", std::string(fleetwes::Version()), "\n");
  };
  absl::SetFlagsUsageConfig(usage_config);

  for (int i = 1; i < argc; ++i) {
    if (absl::string_view(argv[i]) == "--") break;
    if (IsHelp(argv[i])) {
      std::cout << ctl::UsageText();
      return ctl::kExitOk;
    }
  }
  std::string error;
  if (!CheckFlags(argc, argv, &error)) {
    std::cerr << "fleetwesctl: " << error << " (see fleetwesctl --help)\n";
    return kExitUsage;
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << ctl::UsageText();
    return kExitUsage;
  }

  ctl::CtlOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.model = absl::GetFlag(FLAGS_model);
  options.limit = absl::GetFlag(FLAGS_limit);
  options.objective = absl::GetFlag(FLAGS_objective);
  options.mode = absl::GetFlag(FLAGS_mode);
  options.output = absl::GetFlag(FLAGS_o);
  options.node = absl::GetFlag(FLAGS_node);
  options.kind = absl::GetFlag(FLAGS_kind);
  options.since = absl::GetFlag(FLAGS_since);
  options.step = absl::GetFlag(FLAGS_step);
  options.watch = absl::GetFlag(FLAGS_watch);
  options.tty = isatty(STDOUT_FILENO) == 1;
  if (options.server.empty()) {
    std::cerr << "fleetwesctl: --server must not be empty\n";
    return kExitUsage;
  }

  // Keepalive: a watch notices a server that went away without closing the connection.
  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  auto channel =
      grpc::CreateCustomChannel(options.server, grpc::InsecureChannelCredentials(), channel_args);
  auto fleet = fleetwes::v1::Fleet::NewStub(channel);
  auto router = fleetwes::v1::Router::NewStub(channel);
  return ctl::RunCommand(args, options, *fleet, *router, absl::Now(), std::cout, std::cerr);
}
