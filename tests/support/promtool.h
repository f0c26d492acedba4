// Runs `promtool check metrics` (Debian's prometheus package, installed by
// deploy/install-deps.sh) on a Prometheus text exposition, for lint tests of every /metrics the
// project serves. Header-only; not thread-safe (uses fixed file names under the test temp dir).
#ifndef FLEETWES_TESTS_SUPPORT_PROMTOOL_H_
#define FLEETWES_TESTS_SUPPORT_PROMTOOL_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

namespace fleetwes::testing {

// promtool's findings ("" when clean, its exit status non-zero otherwise folded into the text),
// or nullopt when promtool is not installed.
inline std::optional<std::string> PromtoolFindings(const std::string& exposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) return std::nullopt;
  const std::string dir = ::testing::TempDir();
  const std::string in = dir + "/fleetwes_promtool_in.txt";
  const std::string out = dir + "/fleetwes_promtool_out.txt";
  {
    std::ofstream f(in);
    f << exposition;
  }
  const int rc = std::system(("promtool check metrics < " + in + " > " + out + " 2>&1").c_str());
  std::ifstream report(out);
  std::string findings((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
  if (rc != 0 && findings.empty()) findings = "promtool exited with status " + std::to_string(rc);
  return findings;
}

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_PROMTOOL_H_
