// Test doubles for engines and hardware, used by agent tests, end-to-end tests and the
// quickstart (through fleetwes-replay-engine):
//  - ReplayServer: an HTTP server on 127.0.0.1 (port 0 by default; port() tells the real one)
//    serving configured responses, plus a llama.cpp mode built from the llama-server b4748
//    captures whose counters advance by exact amounts per elapsed Clock time, so a test knows
//    the exact Δ a scrape must see.
//  - FakeRapl: a powercap tree (intel-rapl:0, "package-0") whose energy_uj advances at a set
//    power.
// Both take a Clock: with a FakeClock, values move only when the test advances it.
// Thread-safe.
#ifndef FLEETWES_TESTS_SUPPORT_REPLAY_SERVER_H_
#define FLEETWES_TESTS_SUPPORT_REPLAY_SERVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace fleetwes::testing {

// The contents of FLEETWES_FIXTURES_DIR/<relative>, e.g. "llamacpp-b4748/props.json".
absl::StatusOr<std::string> ReadFixture(const std::string& relative);

struct ReplayResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// How the simulated llama-server's counters move. Every counter advances linearly in Clock
// time from the moment the options were set; token counters are whole numbers (floor).
struct LlamaCppSimOptions {
  double tokens_per_s = 100;         // llamacpp:tokens_predicted_total
  double prompt_tokens_per_s = 200;  // llamacpp:prompt_tokens_total
  // Added to tokens_predicted_seconds_total per generated token (the per-token latency).
  double seconds_per_token = 0.02;
  // Added to prompt_seconds_total per prompt token.
  double prompt_seconds_per_token = 0.0005;
  // New requests per second; each starts on the next slot in turn (its id_task changes).
  double requests_per_s = 1;
};

// A Prometheus-exposing engine (vLLM, SGLang) replayed from a capture: /metrics serves the
// fixture with chosen series advanced linearly in Clock time since EnablePromEngine.
struct PromSimOptions {
  std::string fixture;  // relative to FLEETWES_FIXTURES_DIR, e.g. "vllm-0.4.3/metrics.txt"
  // Sample name -> increase per second, added to every series of that name as
  // floor(rate x elapsed seconds), so a token counter stays a whole number.
  std::map<std::string, double> counter_rates;
  // Histogram family -> observations per second of one value: with n = floor(per_s x elapsed),
  // _count += n, _sum += n x value_s, and every bucket whose le >= value_s += n.
  struct Observations {
    double per_s = 0;
    double value_s = 0;
  };
  std::map<std::string, Observations> histograms;
};

// An Ollama server replayed from captures: GET /api/version and /api/ps from fixtures, POST
// /api/generate and /api/chat answered with a captured NDJSON stream (one chunk per line, its
// "model" replaced by the request's, as Ollama echoes it) or, for "stream": false, the
// captured single object as is.
struct OllamaSimOptions {
  std::string version_fixture = "ollama-0.11.6/version.json";
  std::string ps_fixture = "ollama-0.34/ps.json";
  std::string generate_fixture = "ollama-0.11.6/generate_stream_warm.ndjson";
  std::string chat_fixture = "ollama-0.34/chat_stream.ndjson";
  std::string nonstream_fixture = "ollama-0.11.6/generate_nonstream.json";
  // Real time between two chunks (an engine's decode pace; fleetwes-replay-engine).
  absl::Duration chunk_delay = absl::ZeroDuration();
  // Gated: each chunk waits until the test releases it (ReleaseOllamaChunks).
  bool gated = false;
  // Lines of `filler_bytes` each sent before the capture's lines ({"response":"xxx...",
  // "done":false}), for tests of large streams.
  int filler_lines = 0;
  size_t filler_bytes = 64 << 10;
};

// The fixture `text` with the series of `options` advanced by `elapsed`.
std::string AdvanceExposition(const std::string& text, const PromSimOptions& options,
                              absl::Duration elapsed);

class ReplayServer {
 public:
  explicit ReplayServer(Clock* clock = RealClock());
  ~ReplayServer();  // Stop()
  ReplayServer(const ReplayServer&) = delete;
  ReplayServer& operator=(const ReplayServer&) = delete;

  // Binds 127.0.0.1:`port` (0: any free port) and serves on a background thread.
  absl::Status Start(int port = 0);
  // How long an idle keep-alive connection stays open; before Start(). Default 1 s, so that
  // Stop() (which waits for idle connections) is quick; real engines keep them 5 s or more.
  void set_keep_alive_timeout_s(int seconds) { keep_alive_s_ = seconds; }
  // Releases hung requests, stops serving and joins.
  void Stop();
  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:<port>"

  // Answers GET `path` with `response` (takes precedence over the llama.cpp routes).
  void SetRoute(const std::string& path, ReplayResponse response);
  void ClearRoute(const std::string& path);
  // While set, GET `path` blocks until cleared or the server stops: a hung engine.
  void SetHang(const std::string& path, bool hang);
  // GET requests served for `path` so far.
  int hits(const std::string& path) const;

  // Serves /health, /metrics, /props, /slots, /v1/models like llama-server b4748 (bodies from
  // the fixtures; /slots keeps their prompt text). Counters start at the capture's values.
  absl::Status EnableLlamaCpp(const LlamaCppSimOptions& options = {});
  // Changes the rates from now on; counters keep their current values.
  void SetLlamaCppOptions(const LlamaCppSimOptions& options);
  // /health answers 503 "Loading model" while set.
  void SetLoading(bool loading);
  // Without metrics, /metrics answers 501 like a server started without --metrics.
  void SetMetricsEnabled(bool enabled);
  // Simulates an engine restart: every counter starts again from 0.
  void RestartEngine();

  // Serves GET /metrics from options.fixture advanced in Clock time (routes set with SetRoute,
  // e.g. /version or /v1/models, are served as well). Replaces the llama.cpp mode.
  absl::Status EnablePromEngine(const PromSimOptions& options);

  // Serves the Ollama routes (replaces no other mode; routes set with SetRoute take
  // precedence for GET).
  absl::Status EnableOllama(const OllamaSimOptions& options = {});
  // Lets `n` more gated chunks go out.
  void ReleaseOllamaChunks(int n);
  // Generate/chat chunks and bytes written so far, and streams completed.
  int ollama_chunks_sent() const;
  uint64_t ollama_bytes_sent() const;
  int ollama_streams_done() const;
  // The body of the last generate/chat request received.
  std::string last_ollama_request() const;

  // The simulated counters at the clock's current time.
  uint64_t tokens_predicted_total() const;
  uint64_t prompt_tokens_total() const;

 private:
  struct Counters {
    double tokens_predicted;
    double prompt_tokens;
    double predicted_seconds;
    double prompt_seconds;
    double requests;
  };
  Counters CountersAt(absl::Time t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Rebase(absl::Time t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<ReplayResponse> LlamaCppResponse(const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ReplayResponse Handle(const std::string& path);
  void OllamaPost(const std::string& path, const std::string& body, httplib::Response* res);

  Clock* const clock_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  int keep_alive_s_ = 1;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, ReplayResponse> routes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> hang_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> hits_ ABSL_GUARDED_BY(mu_);

  // llama.cpp mode.
  bool llamacpp_ ABSL_GUARDED_BY(mu_) = false;
  bool loading_ ABSL_GUARDED_BY(mu_) = false;
  bool metrics_enabled_ ABSL_GUARDED_BY(mu_) = true;
  LlamaCppSimOptions sim_ ABSL_GUARDED_BY(mu_);
  absl::Time base_time_ ABSL_GUARDED_BY(mu_);
  Counters base_ ABSL_GUARDED_BY(mu_) = {};
  std::map<std::string, std::string> fixtures_ ABSL_GUARDED_BY(mu_);

  // Ollama mode.
  bool ollama_ ABSL_GUARDED_BY(mu_) = false;
  OllamaSimOptions ollama_sim_ ABSL_GUARDED_BY(mu_);
  int ollama_released_ ABSL_GUARDED_BY(mu_) = 0;
  int ollama_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t ollama_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int ollama_done_ ABSL_GUARDED_BY(mu_) = 0;
  std::string ollama_last_request_ ABSL_GUARDED_BY(mu_);

  // Prometheus engine mode.
  bool prom_ ABSL_GUARDED_BY(mu_) = false;
  PromSimOptions prom_sim_ ABSL_GUARDED_BY(mu_);
  std::string prom_text_ ABSL_GUARDED_BY(mu_);
  absl::Time prom_base_time_ ABSL_GUARDED_BY(mu_);
};

// A fake RAPL package zone under `root`: root/sys/class/powercap/intel-rapl:0/{name,
// energy_uj, max_energy_range_uj}. energy_uj = start + watts × elapsed Clock time (in µJ),
// wrapping at max_energy_range_uj; each write goes to a temporary file renamed over the old
// one, so readers never see a partial value.
class FakeRapl {
 public:
  FakeRapl(std::string root, double watts, Clock* clock = RealClock(),
           uint64_t max_energy_range_uj = 262'143'328'850, uint64_t start_uj = 0);
  ~FakeRapl();  // Stop()

  // Creates the tree and writes the first value.
  absl::Status Create();
  // Writes the value for the clock's current time.
  absl::Status Update();
  // Create() and then Update() every `period` on a background thread until Stop().
  absl::Status Start(absl::Duration period = absl::Milliseconds(100));
  void Stop();

  std::string zone_dir() const;
  uint64_t EnergyAt(absl::Time t) const;

 private:
  const std::string root_;
  const double watts_;
  Clock* const clock_;
  const uint64_t max_range_uj_;
  const uint64_t start_uj_;
  absl::Time start_time_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_REPLAY_SERVER_H_
