// Engine discovery on loopback: probes a few ports and identifies the engine behind each one by
// its answers, never by the port number alone:
//   vLLM       GET /metrics with "vllm:" names, or GET /version {"version": "..."}
//   SGLang     GET /metrics with "sglang:" names, or GET /get_model_info {"model_path": ...}
//   llama.cpp  GET /metrics with "llamacpp:" names, or GET /props {"model_path"|"total_slots"}
//   Ollama     GET /api/version {"version": "..."}
// The first rule that matches wins, in the order /metrics, /api/version, /get_model_info,
// /props, /version. A refused connection ends the port's probing at once.
// Free functions; each call uses its own HTTP clients (thread-compatible).
#ifndef FLEETWES_AGENT_DISCOVERY_H_
#define FLEETWES_AGENT_DISCOVERY_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/config.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// The kind of engine answering at `url` ("http://host:port"), or nullopt when nothing answers
// or the answers match no engine. Each request is bounded by `timeout`.
std::optional<v1::EngineKind> IdentifyEngine(const std::string& url, absl::Duration timeout);

// Probes 127.0.0.1 on each of `options.ports` and returns an EngineConfig (name "<kind>-<port>",
// url "http://127.0.0.1:<port>", discovered = true) for every engine found whose host:port is
// not already in `configured` (loopback names 127.0.0.1, localhost, [::1] count as the same
// host). Never fails: ports that do not answer or are not engines are skipped. When `stop` is
// given and notified, returns what it found so far before probing the next port.
std::vector<EngineConfig> DiscoverEngines(const DiscoveryConfig& options,
                                          const std::vector<EngineConfig>& configured,
                                          const absl::Notification* stop = nullptr);

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_DISCOVERY_H_
