// Maps an engine to its processes through procfs under a configurable root: the engine's TCP
// port → the listening socket's inode (/proc/net/tcp, /proc/net/tcp6) → the process holding
// that socket (/proc/<pid>/fd links "socket:[inode]") → that process and its descendants
// (/proc/<pid>/stat parent pids), which is where engines keep their GPU memory (vLLM and Ollama
// run workers as child processes). Pure reads; thread-compatible.
#ifndef FLEETWES_AGENT_COLLECTORS_ENGINE_PROCESS_H_
#define FLEETWES_AGENT_COLLECTORS_ENGINE_PROCESS_H_

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/statusor.h"

namespace fleetwes::agent {

// The pid holding a listening TCP socket on `port` (any local address, IPv4 or IPv6) and all its
// descendants. `root` stands for "/" ("" or "/" on a real host). NotFound when no listening
// socket or no owning process is visible (another network or pid namespace, too few
// privileges to read other users' fd links).
absl::StatusOr<std::set<int64_t>> EngineProcesses(const std::string& root, int port);

// The port of an engine URL "http[s]://host[:port][/prefix]" (80/443 when absent);
// InvalidArgument when malformed.
absl::StatusOr<int> EnginePort(const std::string& url);

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_ENGINE_PROCESS_H_
