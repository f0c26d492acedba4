#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

#include "absl/base/const_init.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace fleetwes {

namespace {

// ISO-8601 local time with milliseconds and offset, level, logger name, message.
constexpr char kPattern[] = "%Y-%m-%dT%H:%M:%S.%e%z %^%-5l%$ [%n] %v";

// Serialises get-or-create: spdlog's registry is thread-safe per call, but "get, then create
// and register" is not atomic.
ABSL_CONST_INIT absl::Mutex registry_mu(absl::kConstInit);

}  // namespace

absl::Status InitLogging(std::string_view level) {
  spdlog::level::level_enum parsed;
  if (level == "trace") {
    parsed = spdlog::level::trace;
  } else if (level == "debug") {
    parsed = spdlog::level::debug;
  } else if (level == "info") {
    parsed = spdlog::level::info;
  } else if (level == "warn" || level == "warning") {
    parsed = spdlog::level::warn;
  } else if (level == "error") {
    parsed = spdlog::level::err;
  } else if (level == "off") {
    parsed = spdlog::level::off;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log level '", std::string(level),
                     "'; allowed: trace, debug, info, warn, error, off"));
  }
  absl::MutexLock lock(&registry_mu);
  try {
    // The default logger writes to stdout; logs belong on stderr (stdout carries CLI output).
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("", std::move(sink)));
    spdlog::set_pattern(kPattern);
    spdlog::set_level(parsed);
  } catch (const spdlog::spdlog_ex& e) {
    return absl::InternalError(absl::StrCat("logging setup failed: ", e.what()));
  }
  return absl::OkStatus();
}

std::shared_ptr<spdlog::logger> Logger(std::string_view component) {
  const std::string name(component);
  absl::MutexLock lock(&registry_mu);
  if (std::shared_ptr<spdlog::logger> existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(
      name, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  // The registry applies the global level and pattern to loggers it initialises.
  spdlog::initialize_logger(logger);
  return logger;
}

}  // namespace fleetwes
