// The opt-in synthetic probe of an Ollama server: at most once per interval it sends one short
// streamed generate request (a few tokens of a fixed prompt) straight to the engine and meters
// it into its own OllamaTraffic, which the collector reports as synthetic samples, apart from
// real traffic. It never probes while the node is busy: a request in flight through the proxy,
// or a model whose keep-alive deadline (/api/ps expires_at) moved during a short settle period
// (a request just finished), postpones the probe. With no model named it probes the first
// resident model and skips when none is resident, so it never loads a model by itself; a probe
// still keeps the probed model resident and the GPU awake, which is why it is off by default.
// Thread-safe.
#ifndef FLEETWES_AGENT_OLLAMA_PROBE_H_
#define FLEETWES_AGENT_OLLAMA_PROBE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/collectors/http_client.h"
#include "agent/collectors/ollama.h"
#include "agent/config.h"
#include "common/clock.h"

namespace fleetwes::agent {

struct OllamaProbeOptions {
  std::string engine_url;                        // e.g. "http://127.0.0.1:11434"
  OllamaProbeConfig config;                      // model, interval, prompt, max_tokens
  absl::Duration settle = absl::Seconds(5);      // between the two /api/ps reads
  absl::Duration busy_retry = absl::Minutes(1);  // next attempt after a busy node
  absl::Duration request_timeout = absl::Minutes(2);
};

class OllamaProbe {
 public:
  enum class Result { kProbed, kBusy, kNoModel, kFailed };

  // `proxy` (may be null; not owned, must outlive the probe): its requests in flight make the
  // node busy. `clock` (not owned) paces the loop and times the probe.
  OllamaProbe(OllamaProbeOptions options, const OllamaTraffic* proxy, Clock* clock);
  ~OllamaProbe();  // Stop()

  // Runs the loop on a background thread: the first attempt one interval after Start().
  void Start();
  void Stop();

  // One attempt now (the loop's body; tests call it directly).
  Result RunOnce();

  const OllamaTraffic& traffic() const { return traffic_; }
  uint64_t probes() const { return probes_.load(); }
  uint64_t skipped_busy() const { return skipped_busy_.load(); }
  uint64_t failures() const { return failures_.load(); }

 private:
  void Loop();

  const OllamaProbeOptions options_;
  const OllamaTraffic* const proxy_;
  Clock* const clock_;
  OllamaTraffic traffic_;
  HttpClient http_;  // used by the probe thread only (or by a test's RunOnce)
  absl::Notification stop_;
  std::thread thread_;
  std::atomic<uint64_t> probes_{0};
  std::atomic<uint64_t> skipped_busy_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_OLLAMA_PROBE_H_
