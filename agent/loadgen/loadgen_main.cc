// fleetwes-loadgen: simulates a fleet of nodes publishing to a fleetwes-aggregator and reports
// throughput and ack latency (agent/loadgen/load_generator.h).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent/loadgen/load_generator.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "common/version.h"

ABSL_FLAG(std::string, target, "localhost:7470", "fleetwes-aggregator gRPC address (host:port)");
ABSL_FLAG(int32_t, nodes, 12, "number of simulated nodes, each with its own Ingest stream");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(2), "frame interval of every node");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "how long to run; 0 runs until SIGINT or SIGTERM");
ABSL_FLAG(uint64_t, seed, 1,
          "seed of the simulation: the same seed gives the same measured values (boot ids and "
          "timestamps are new each run)");
ABSL_FLAG(std::string, node_prefix, "sim", "node ids are PREFIX-01, PREFIX-02, ...");
ABSL_FLAG(std::string, o, "text", "summary format: text or json (one line)");
ABSL_FLAG(int32_t, nodes_per_channel, 64, "streams sharing one TCP connection");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(5),
          "at the end, how long to wait for outstanding acks");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");

int main(int argc, char** argv) {
  namespace lg = fleetwes::agent::loadgen;
  fleetwes::TuneMallocForThroughput();
  // absl::Mutex's deadlock detection walks a lock graph on every lock: a tenth of the load
  // generator's CPU under load, by perf. Tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "Simulates a fleet of inference nodes (RTX 4090, A100, H100, L4, Jetson Orin, Apple "
      "M-series, Xeon, EPYC, Radeon profiles) publishing frames to a fleetwes-aggregator.\n"
      "usage: fleetwes-loadgen [--target=localhost:7470] [--nodes=12] [--interval=2s] "
      "[--duration=0] [--seed=1] [--node_prefix=sim] [-o text|json]");
  absl::FlagsUsageConfig usage_config;
  usage_config.version_string = [] {
    return absl::StrCat("fleetwes-loadgen ", std::string(fleetwes::Version()), "\n");
  };
  absl::SetFlagsUsageConfig(usage_config);

  // Signals are taken by one thread with sigwait, so the handler does nothing unsafe. Blocked
  // before any other thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::ParseCommandLine(argc, argv);
  if (auto s = fleetwes::InitLogging(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::cerr << "fleetwes-loadgen: --log_level: " << s.message() << "\n";
    return 2;
  }
  const std::string output = absl::GetFlag(FLAGS_o);
  if (output != "text" && output != "json") {
    std::cerr << "fleetwes-loadgen: -o must be text or json, got \"" << output << "\"\n";
    return 2;
  }

  lg::LoadOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.nodes = absl::GetFlag(FLAGS_nodes);
  options.interval = absl::GetFlag(FLAGS_interval);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.node_prefix = absl::GetFlag(FLAGS_node_prefix);
  options.nodes_per_channel = absl::GetFlag(FLAGS_nodes_per_channel);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  if (std::string err = lg::ValidateOptions(options); !err.empty()) {
    std::cerr << "fleetwes-loadgen: " << err << "\n";
    return 2;
  }

  absl::Notification stop;
  std::thread signal_thread([&signals, &stop] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (!stop.HasBeenNotified()) stop.Notify();
  });

  lg::LoadGenerator generator(options, fleetwes::RealClock());
  const lg::LoadReport report = generator.Run(&stop);

  // Wake the signal thread if no signal came.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();

  if (output == "json") {
    std::cout << lg::ReportJson(report) << std::endl;
  } else {
    std::cout << lg::ReportText(report) << std::flush;
  }
  return 0;
}
