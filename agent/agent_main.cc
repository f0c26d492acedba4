// fleetwes-agent: reads the node's inference engines and hardware every interval and streams
// one frame per window to fleetwes-aggregator. See docs/agent.md.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "agent/config.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/version.h"

ABSL_FLAG(std::string, config, "/etc/fleetwes/agent.yaml",
          "Path of the YAML config (deploy/agent.example.yaml documents every key).");
ABSL_FLAG(bool, check_config, false,
          "Validate the config, print a summary or the error, exit 0 (valid) or 1. Flag names "
          "may also be written with dashes: --check-config, --log-level.");
ABSL_FLAG(bool, once, false,
          "Take one window (read, wait --window, read again), print its frame as JSON on "
          "stdout and exit. Needs no aggregator.");
ABSL_FLAG(absl::Duration, window, absl::ZeroDuration(),
          "Window length for --once, e.g. 2s (default: the config's interval).");
ABSL_FLAG(std::string, log_level, "",
          "trace, debug, info, warn, error or off (default: the config's log_level). Logs go "
          "to stderr.");

namespace {

// Accepts --check-config and --log-level as documented, alongside absl's --check_config:
// dashes in a flag's name (before any '=') become underscores.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a.rfind("--", 0) != 0) continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t j = 2; j < end; ++j) {
      if (a[j] == '-') a[j] = '_';
    }
  }
  return args;
}

int Fail(const std::string& message) {
  std::cerr << "fleetwes-agent: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // glibc gives every thread that allocates its own malloc arena (up to 8 per core), each keeping
  // freed memory; the agent allocates little and rarely, so two arenas are plenty.
  mallopt(M_ARENA_MAX, 2);
  // absl::Mutex's lock-order graph (deadlock detection) costs every lock a stack walk and a graph
  // update; tests run with it, the service does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // --help lists this file's flags (absl matches flag files against the program name).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "agent_main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  // --version is absl's own flag: it prints this and exits 0.
  usage.version_string = [] { return "fleetwes-agent " + std::string(fleetwes::Version()) + "\n"; };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "measures this node's inference engines and hardware and streams one\n"
      "frame per interval to fleetwes-aggregator.\n\n"
      "  fleetwes-agent --config /etc/fleetwes/agent.yaml    run until SIGTERM/SIGINT\n"
      "  fleetwes-agent --config X --check-config            validate the config\n"
      "  fleetwes-agent --config X --once [--window=2s]      print one frame as JSON\n"
      "  fleetwes-agent --version\n\n"
      "While running, it serves GET /healthz, /metrics (Prometheus) and /status (JSON)\n"
      "on http.listen (default 127.0.0.1:7472; \"\" turns it off). Not in --once or\n"
      "--check-config.");
  std::vector<std::string> args = NormalizeFlagNames(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  const std::string path = absl::GetFlag(FLAGS_config);
  absl::StatusOr<fleetwes::agent::AgentConfig> config = fleetwes::agent::LoadConfig(path);
  if (!config.ok()) return Fail(absl::StrCat(path, ": ", config.status().message()));
  if (absl::GetFlag(FLAGS_check_config)) {
    std::cout << fleetwes::agent::DescribeConfig(*config) << "\n";
    return 0;
  }

  std::string level = absl::GetFlag(FLAGS_log_level);
  if (level.empty()) level = config->log_level;
  if (absl::Status s = fleetwes::InitLogging(level); !s.ok()) return Fail(std::string(s.message()));
  auto log = fleetwes::Logger("agent");
  fleetwes::Clock* clock = fleetwes::RealClock();

  if (absl::GetFlag(FLAGS_once)) {
    absl::Duration window = absl::GetFlag(FLAGS_window);
    if (window == absl::ZeroDuration()) window = config->interval;
    if (window < absl::Milliseconds(100) || window > absl::Minutes(10)) {
      return Fail("--window must be between 100ms and 10m");
    }
    std::unique_ptr<fleetwes::agent::Sampler> sampler =
        fleetwes::agent::MakeSampler(*config, fleetwes::agent::NewBootId(), clock);
    absl::StatusOr<fleetwes::v1::Frame> frame =
        fleetwes::agent::TakeOneWindow(*sampler, clock, window);
    if (!frame.ok()) return Fail(std::string(frame.status().message()));
    std::cout << fleetwes::agent::FrameToJson(*frame) << std::endl;
    return 0;
  }

  // Signals are taken synchronously by this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<fleetwes::agent::Agent>> created =
      fleetwes::agent::Agent::Create(*config, clock);
  if (!created.ok()) return Fail(absl::StrCat(path, ": ", created.status().message()));
  fleetwes::agent::Agent& agent = **created;
  log->info("fleetwes-agent {} starting: node {}, boot {}, {} engine(s), aggregators {}, spool {}",
            fleetwes::Version(), config->node_id, agent.boot_id(), config->engines.size(),
            absl::StrJoin(config->aggregators, ","),
            config->spool.enabled ? config->spool.dir : std::string("off (memory only)"));
  if (absl::Status s = agent.Start(); !s.ok()) {
    agent.Stop();
    return Fail(std::string(s.message()));
  }
  int signal = 0;
  sigwait(&signals, &signal);
  log->info("signal {}: stopping", signal);
  agent.Stop();
  fleetwes::agent::UplinkStats stats = agent.uplink_stats();
  log->info("stopped: {} frames sent, acknowledged up to seq {}", stats.frames_sent,
            stats.acked_seq);
  return 0;
}
