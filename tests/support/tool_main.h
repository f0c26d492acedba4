// Shared by the test-double programs (fleetwes-replay-engine, fleetwes-ingest-sink): the port file
// that tells a launching test or script which port was bound, and --help limited to the
// program's own flags. Header-only; call from main() only.
#ifndef FLEETWES_TESTS_SUPPORT_TOOL_MAIN_H_
#define FLEETWES_TESTS_SUPPORT_TOOL_MAIN_H_

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fleetwes::testing {

// Writes "<port>\n" to `path` atomically (a temporary file renamed over it), so a reader polling
// for the file never sees it half written. False when it cannot be written.
inline bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    out.close();
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// --help and --helpshort list only the flags defined in the file whose name ends with
// `main_file` (absl otherwise matches flag files against the program name).
inline void HelpListsFlagsOf(const char* main_file) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [main_file](absl::string_view file) {
    return absl::EndsWith(file, main_file);
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
}

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_TOOL_MAIN_H_
