// fleetwes-aggregator: flags and config, logging, then an AggregatorServer until SIGTERM/SIGINT.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "aggregator/config.h"
#include "aggregator/server.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "common/version.h"

ABSL_FLAG(std::string, config, "", "Path of the YAML config file (optional: defaults + env)");
ABSL_FLAG(bool, check_config, false, "Validate the config and exit (0: valid, 2: invalid)");
ABSL_FLAG(std::string, log_level, "", "Overrides log_level: trace|debug|info|warn|error|off");
ABSL_FLAG(std::string, grpc_listen, "", "Overrides grpc_listen (host:port; port 0: any)");
ABSL_FLAG(std::string, http_listen, "", "Overrides http_listen (host:port; port 0: any)");

namespace {

// The self-pipe of the signal handler: process-wide by nature (signal handlers take no context).
int signal_pipe[2] = {-1, -1};
std::atomic<int> signals_received{0};  // lock-free: safe in a signal handler

void OnSignal(int sig) {
  if (signals_received.fetch_add(1) > 0) _exit(128 + sig);
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(signal_pipe[1], &byte, 1);
}

// Flags are documented with dashes (--check-config); absl names them with underscores.
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage) {
  storage->reserve(argc);
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t k = 2; k < end; ++k) {
        if (arg[k] == '-') arg[k] = '_';
      }
    }
    storage->push_back(std::move(arg));
  }
  std::vector<char*> out;
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fleetwes::TuneMallocForThroughput();
  // absl::Mutex's lock-order graph (deadlock detection) costs every lock a stack walk and a graph
  // update; tests run with it, the service does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::FlagsUsageConfig usage;
  usage.version_string = [] {
    return absl::StrCat("fleetwes-aggregator ", std::string(fleetwes::Version()), "\n");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "fleetwes-aggregator: ingests fleetwes-agent frames, stores them in PostgreSQL, ranks the "
      "fleet by WES and serves Router/Fleet over gRPC and /metrics over HTTP.\n"
      "Flags: --config, --check-config, --log-level, --grpc-listen, --http-listen, --version");
  std::vector<std::string> storage;
  std::vector<char*> args = NormalizeFlagNames(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  const char* env_url = std::getenv(fleetwes::aggregator::kDatabaseUrlEnv);
  absl::StatusOr<fleetwes::aggregator::AggregatorConfig> config = fleetwes::aggregator::LoadConfig(
      absl::GetFlag(FLAGS_config),
      env_url != nullptr ? std::optional<std::string>(env_url) : std::nullopt);
  if (config.ok() && !absl::GetFlag(FLAGS_grpc_listen).empty()) {
    config->grpc_listen = absl::GetFlag(FLAGS_grpc_listen);
  }
  if (config.ok() && !absl::GetFlag(FLAGS_http_listen).empty()) {
    config->http_listen = absl::GetFlag(FLAGS_http_listen);
  }
  if (config.ok()) {
    for (const std::string* listen : {&config->grpc_listen, &config->http_listen}) {
      if (absl::StatusOr<fleetwes::aggregator::ListenAddress> a =
              fleetwes::aggregator::ParseListenAddress(*listen);
          !a.ok()) {
        config = absl::InvalidArgumentError(
            absl::StrCat(listen == &config->grpc_listen ? "grpc_listen" : "http_listen", ": ",
                         a.status().message()));
        break;
      }
    }
  }
  if (!config.ok()) {
    std::cerr << "fleetwes-aggregator: invalid configuration: " << config.status().message()
              << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_check_config)) {
    std::cout << "configuration OK\n";
    return 0;
  }
  const std::string level =
      absl::GetFlag(FLAGS_log_level).empty() ? config->log_level : absl::GetFlag(FLAGS_log_level);
  if (absl::Status s = fleetwes::InitLogging(level); !s.ok()) {
    std::cerr << "fleetwes-aggregator: --log-level: " << s.message() << "\n";
    return 2;
  }
  auto log = fleetwes::Logger("aggregator");
  log->info("fleetwes-aggregator {} starting", fleetwes::Version());

  // SIGTERM/SIGINT: the handler writes the signal number to a pipe; a thread reading the pipe
  // asks the server to stop. A second signal ends the process at once.
  if (pipe(signal_pipe) != 0) {
    log->error("cannot create the signal pipe: {}", std::strerror(errno));
    return 1;
  }
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  absl::Notification stop;
  std::thread signal_thread([&stop, log] {
    unsigned char sig = 0;
    while (read(signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    log->info("signal {} received, stopping", static_cast<int>(sig));
    stop.Notify();
  });
  signal_thread.detach();

  fleetwes::aggregator::AggregatorServer server(*std::move(config), fleetwes::RealClock());
  if (absl::Status s = server.Start(&stop); !s.ok()) {
    if (absl::IsCancelled(s)) {
      log->info("stopped before start-up completed");
      return 0;
    }
    log->error("start-up failed: {}", std::string(s.message()));
    server.Stop();
    return 1;
  }
  stop.WaitForNotification();
  server.Stop();
  return 0;
}
