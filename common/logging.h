// Logging setup: named spdlog loggers per component ("agent", "uplink", "store", ...).
#ifndef FLEETWES_COMMON_LOGGING_H_
#define FLEETWES_COMMON_LOGGING_H_

#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

#include "absl/status/status.h"

namespace fleetwes {

// Sets the global level ("trace", "debug", "info", "warn", "error", "off") and the pattern for
// stderr output. InvalidArgument for an unknown level. Call once from main.
absl::Status InitLogging(std::string_view level);

// The logger for `component`, created on first use (thread-safe).
std::shared_ptr<spdlog::logger> Logger(std::string_view component);

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_LOGGING_H_
