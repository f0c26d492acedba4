#include "agent/collectors/engine_process.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/config.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxProcFileBytes = 16 << 20;
constexpr int kTcpListen = 0x0A;

std::optional<std::string> Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text;
  char buf[8192];
  while (text.size() < kMaxProcFileBytes && in.read(buf, sizeof(buf)).gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
  }
  return text;
}

std::string RootPrefix(const std::string& root) {
  std::string r = root;
  while (!r.empty() && r.back() == '/') r.pop_back();
  return r;
}

// Inodes of sockets listening on `port` in a /proc/net/tcp{,6} table.
void ListeningInodes(const std::string& path, int port, std::set<uint64_t>* inodes) {
  std::optional<std::string> text = Slurp(path);
  if (!text.has_value()) return;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipWhitespace())) {
    if (header) {  // "  sl  local_address rem_address   st ... inode"
      header = false;
      continue;
    }
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 10) continue;
    size_t colon = f[1].rfind(':');
    if (colon == absl::string_view::npos) continue;
    int local_port = 0, state = 0;
    absl::string_view port_hex = f[1].substr(colon + 1);
    if (std::from_chars(port_hex.data(), port_hex.data() + port_hex.size(), local_port, 16).ec !=
            std::errc() ||
        std::from_chars(f[3].data(), f[3].data() + f[3].size(), state, 16).ec != std::errc()) {
      continue;
    }
    uint64_t inode = 0;
    if (local_port == port && state == kTcpListen && absl::SimpleAtoi(f[9], &inode) && inode != 0) {
      inodes->insert(inode);
    }
  }
}

std::vector<int64_t> Pids(const std::string& proc) {
  std::vector<int64_t> pids;
  std::error_code ec;
  fs::directory_iterator it(proc, ec);
  if (ec) return pids;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    int64_t pid = 0;
    if (absl::SimpleAtoi(it->path().filename().string(), &pid) && pid > 0) pids.push_back(pid);
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

// The parent pid from /proc/<pid>/stat ("pid (comm) state ppid ..."; comm may hold spaces and
// parentheses, so fields are counted after the last ')').
std::optional<int64_t> ParentPid(const std::string& proc, int64_t pid) {
  std::optional<std::string> stat = Slurp(absl::StrCat(proc, "/", pid, "/stat"));
  if (!stat.has_value()) return std::nullopt;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(*stat).substr(close + 1), ' ', absl::SkipEmpty());
  int64_t ppid = 0;
  if (f.size() < 2 || !absl::SimpleAtoi(f[1], &ppid)) return std::nullopt;
  return ppid;
}

}  // namespace

absl::StatusOr<int> EnginePort(const std::string& url) {
  absl::StatusOr<ParsedUrl> parsed = ParseEngineUrl(url);
  if (!parsed.ok()) return parsed.status();
  absl::string_view authority = parsed->base;
  const bool https = absl::ConsumePrefix(&authority, "https://");
  if (!https) absl::ConsumePrefix(&authority, "http://");
  size_t colon = authority.rfind(':');
  size_t bracket = authority.rfind(']');
  if (colon == absl::string_view::npos || (bracket != absl::string_view::npos && colon < bracket)) {
    return https ? 443 : 80;
  }
  int port = 0;
  if (!absl::SimpleAtoi(authority.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("no valid port in \"", url, "\""));
  }
  return port;
}

absl::StatusOr<std::set<int64_t>> EngineProcesses(const std::string& root, int port) {
  const std::string proc = RootPrefix(root) + "/proc";
  std::set<uint64_t> inodes;
  ListeningInodes(proc + "/net/tcp", port, &inodes);
  ListeningInodes(proc + "/net/tcp6", port, &inodes);
  if (inodes.empty()) {
    return absl::NotFoundError(absl::StrCat("no listening socket on port ", port));
  }
  const std::vector<int64_t> pids = Pids(proc);
  std::optional<int64_t> owner;
  for (int64_t pid : pids) {
    const std::string fd_dir = absl::StrCat(proc, "/", pid, "/fd");
    std::error_code ec;
    fs::directory_iterator it(fd_dir, ec);
    if (ec) continue;  // another user's process without the privilege to look
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      fs::path target = fs::read_symlink(it->path(), ec);
      if (ec) continue;
      absl::string_view link = target.native();
      uint64_t inode = 0;
      if (absl::ConsumePrefix(&link, "socket:[") && absl::ConsumeSuffix(&link, "]") &&
          absl::SimpleAtoi(link, &inode) && inodes.count(inode) != 0) {
        owner = pid;
        break;
      }
    }
    if (owner.has_value()) break;
  }
  if (!owner.has_value()) {
    return absl::NotFoundError(
        absl::StrCat("no visible process holds the listening socket of port ", port));
  }
  std::map<int64_t, std::vector<int64_t>> children;
  for (int64_t pid : pids) {
    if (std::optional<int64_t> ppid = ParentPid(proc, pid)) children[*ppid].push_back(pid);
  }
  std::set<int64_t> tree = {*owner};
  std::vector<int64_t> todo = {*owner};
  while (!todo.empty() && tree.size() < 65536) {
    int64_t p = todo.back();
    todo.pop_back();
    for (int64_t c : children[p]) {
      if (tree.insert(c).second) todo.push_back(c);
    }
  }
  return tree;
}

}  // namespace fleetwes::agent
