#include "agent/ollama_proxy.h"

#include <httplib.h>

#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using testing::OllamaSimOptions;
using testing::ReadFixture;
using testing::ReplayServer;

constexpr char kWarm[] = "ollama-0.11.6/generate_stream_warm.ndjson";

std::string Fixture(const std::string& name) {
  absl::StatusOr<std::string> text = ReadFixture(name);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// Polls `done` every millisecond for up to 10 s of real time (waiting on real sockets).
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// A client request running on its own thread; what it received so far is readable meanwhile.
class Call {
 public:
  Call(int port, std::string method, std::string path, std::string body,
       absl::Notification* hold_after_first = nullptr)
      : hold_(hold_after_first) {
    thread_ = std::thread(
        [this, port, method = std::move(method), path = std::move(path), body = std::move(body)] {
          httplib::Client client("127.0.0.1", port);
          client.set_read_timeout(std::chrono::seconds(30));
          httplib::Request req;
          req.method = method;
          req.path = path;
          req.body = body;
          if (!body.empty()) req.headers.emplace("Content-Type", "application/json");
          req.response_handler = [this](const httplib::Response& r) {
            absl::MutexLock lock(&mu_);
            status_ = r.status;
            content_type_ = r.get_header_value("Content-Type");
            return true;
          };
          req.content_receiver = [this](const char* data, size_t n, uint64_t, uint64_t) {
            bool first;
            {
              absl::MutexLock lock(&mu_);
              first = body_.empty();
              body_.append(data, n);
            }
            if (first && hold_ != nullptr) hold_->WaitForNotification();
            return true;
          };
          httplib::Response res;
          httplib::Error error;
          bool ok = client.send(req, res, error);
          absl::MutexLock lock(&mu_);
          ok_ = ok;
          if (status_ == 0) status_ = res.status;
        });
  }
  ~Call() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  std::string body() const {
    absl::MutexLock lock(&mu_);
    return body_;
  }
  int status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  std::string content_type() const {
    absl::MutexLock lock(&mu_);
    return content_type_;
  }
  bool ok() const {
    absl::MutexLock lock(&mu_);
    return ok_;
  }

 private:
  absl::Notification* hold_;
  mutable absl::Mutex mu_;
  std::string body_ ABSL_GUARDED_BY(mu_);
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  std::string content_type_ ABSL_GUARDED_BY(mu_);
  bool ok_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class OllamaProxyTest : public ::testing::Test {
 protected:
  void StartUpstream(const OllamaSimOptions& sim = {}) {
    ASSERT_TRUE(upstream_.EnableOllama(sim).ok());
    ASSERT_TRUE(upstream_.Start().ok());
  }
  void StartProxy(OllamaProxyOptions options = {}) {
    options.listen = "127.0.0.1:0";
    if (options.upstream_url.empty()) options.upstream_url = upstream_.url();
    auto proxy = OllamaProxy::Start(options, &clock_);
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = *std::move(proxy);
    ASSERT_GT(proxy_->port(), 0);
  }

  FakeClock clock_;
  ReplayServer upstream_{&clock_};
  std::unique_ptr<OllamaProxy> proxy_;
};

TEST_F(OllamaProxyTest, StreamsByteForByteChunkByChunkAndMeters) {
  OllamaSimOptions sim;
  sim.gated = true;
  StartUpstream(sim);
  StartProxy();
  const std::string warm = Fixture(kWarm);
  const size_t first_line = warm.find('\n') + 1;

  Call call(proxy_->port(), "POST", "/api/generate",
            R"({"model":"dolphin3:8b","prompt":"Describe a rabbit in 3 words"})");
  ASSERT_TRUE(Eventually([&] { return upstream_.hits("/api/generate") == 1; }));
  EXPECT_EQ(proxy_->traffic().in_flight(), 1u);
  EXPECT_EQ(proxy_->stats().in_flight, 1u);
  EXPECT_EQ(proxy_->stats().request_bytes, 63u);
  EXPECT_EQ(proxy_->traffic().Snapshot()["dolphin3:8b"].running, 1u);

  // The first chunk reaches the client while the engine is still generating.
  clock_.Advance(absl::Milliseconds(120));
  upstream_.ReleaseOllamaChunks(1);
  ASSERT_TRUE(Eventually([&] { return call.body().size() == first_line; }));
  EXPECT_EQ(call.body(), warm.substr(0, first_line));
  EXPECT_EQ(upstream_.ollama_streams_done(), 0);

  clock_.Advance(absl::Milliseconds(200));
  upstream_.ReleaseOllamaChunks(100);
  call.Join();
  EXPECT_TRUE(call.ok());
  EXPECT_EQ(call.status(), 200);
  EXPECT_EQ(call.content_type(), "application/x-ndjson");
  EXPECT_EQ(call.body(), warm);

  // The proxy credits the final object's timings; TTFT is its own measurement.
  ASSERT_TRUE(Eventually([&] { return proxy_->traffic().completed() == 1; }));
  const auto snap = proxy_->traffic().Snapshot();
  ASSERT_EQ(snap.count("dolphin3:8b"), 1u);
  const OllamaModelTraffic& t = snap.at("dolphin3:8b");
  EXPECT_EQ(t.running, 0u);
  EXPECT_DOUBLE_EQ(t.decode_tokens, 9);
  EXPECT_DOUBLE_EQ(t.prefill_tokens, 30);
  EXPECT_DOUBLE_EQ(t.decode_seconds, 0.2178479);
  EXPECT_DOUBLE_EQ(t.tpot.sum, 0.2178479 / 9);  // TPOT = eval_duration / eval_count
  EXPECT_EQ(t.ttft.count, 1);
  EXPECT_DOUBLE_EQ(t.ttft.sum, 0.12);
  EXPECT_DOUBLE_EQ(t.e2e.sum, 0.2721963);
  // tok/s of the request = eval_count / eval_duration.
  EXPECT_NEAR(t.decode_tokens / t.decode_seconds, 9 / 0.2178479, 1e-9);
  EXPECT_EQ(proxy_->stats().requests, 1u);
  EXPECT_EQ(proxy_->stats().upstream_errors, 0u);
  EXPECT_EQ(proxy_->stats().queued_bytes, 0u);
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().response_bytes == warm.size(); }));
  EXPECT_EQ(proxy_->stats().client_aborts, 0u);
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().in_flight == 0; }));
}

TEST_F(OllamaProxyTest, ChatNonStreamAndOtherPathsPassThrough) {
  StartUpstream();
  StartProxy();
  {
    Call chat(proxy_->port(), "POST", "/api/chat",
              R"({"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]})");
    chat.Join();
    EXPECT_EQ(chat.body(), Fixture("ollama-0.34/chat_stream.ndjson"));
  }
  {
    Call single(proxy_->port(), "POST", "/api/generate",
                R"({"model":"granite3.3:2b","prompt":"x","stream":false})");
    single.Join();
    EXPECT_EQ(single.status(), 200);
    EXPECT_EQ(single.body(), Fixture("ollama-0.11.6/generate_nonstream.json"));
    EXPECT_EQ(single.content_type(), "application/json; charset=utf-8");
  }
  {
    Call ps(proxy_->port(), "GET", "/api/ps", "");
    ps.Join();
    EXPECT_EQ(ps.body(), Fixture("ollama-0.34/ps.json"));
  }
  {
    Call missing(proxy_->port(), "DELETE", "/api/nothing?x=1", "");
    missing.Join();
    EXPECT_EQ(missing.status(), 404);
  }
  ASSERT_TRUE(Eventually([&] { return proxy_->traffic().completed() == 2; }));
  const auto snap = proxy_->traffic().Snapshot();
  EXPECT_DOUBLE_EQ(snap.at("llama3.2:1b").decode_tokens, 3);
  EXPECT_EQ(snap.at("llama3.2:1b").ttft.count, 1);
  EXPECT_DOUBLE_EQ(snap.at("granite3.3:2b").decode_tokens, 11);
  EXPECT_DOUBLE_EQ(snap.at("granite3.3:2b").prefill_tokens, 50);
  EXPECT_EQ(proxy_->stats().requests, 4u);
}

TEST_F(OllamaProxyTest, UpstreamDownIs502AndLargeBodiesAre413) {
  ReplayServer gone;
  ASSERT_TRUE(gone.Start().ok());
  const std::string url = gone.url();
  gone.Stop();
  OllamaProxyOptions options;
  options.upstream_url = url;
  options.max_request_bytes = 1024;
  StartProxy(options);

  Call call(proxy_->port(), "POST", "/api/generate", R"({"model":"m","prompt":"p"})");
  call.Join();
  EXPECT_EQ(call.status(), 502);
  EXPECT_THAT(call.body(), HasSubstr(R"({"error":"fleetwes proxy: upstream )"));
  EXPECT_EQ(proxy_->stats().upstream_errors, 1u);
  EXPECT_EQ(proxy_->stats().upstream_unreachable, 1u);
  EXPECT_EQ(proxy_->stats().upstream_cut, 0u);
  EXPECT_EQ(proxy_->stats().request_bytes, 26u);
  EXPECT_EQ(proxy_->stats().rejected_too_large, 0u);
  EXPECT_EQ(proxy_->traffic().failed(), 1u);
  EXPECT_EQ(proxy_->traffic().in_flight(), 0u);

  Call big(proxy_->port(), "POST", "/api/generate", std::string(4096, 'x'));
  big.Join();
  EXPECT_EQ(big.status(), 413);
  EXPECT_EQ(proxy_->stats().requests, 1u);
  EXPECT_EQ(proxy_->stats().rejected_too_large, 1u);
  EXPECT_EQ(proxy_->stats().request_bytes, 26u);  // the rejected body is not forwarded
  ASSERT_TRUE(Eventually([&] { return proxy_->stats().in_flight == 0; }));
}

TEST_F(OllamaProxyTest, RegistryReportsLiveProxiesOnly) {
  OllamaSimOptions sim;
  StartUpstream(sim);
  StartProxy();
  Call call(proxy_->port(), "GET", "/api/version", "");
  call.Join();
  EXPECT_EQ(call.status(), 200);
  std::shared_ptr<OllamaProxy> shared = std::move(proxy_);
  OllamaProxyRegistry registry;
  registry.Add("ollama-a", shared);
  std::vector<OllamaProxyRegistry::Entry> stats = registry.Stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].engine, "ollama-a");
  EXPECT_EQ(stats[0].stats.requests, 1u);
  shared.reset();
  EXPECT_TRUE(registry.Stats().empty());
}

TEST_F(OllamaProxyTest, SlowClientBackPressuresUpstreamWithABoundedQueue) {
  OllamaSimOptions sim;
  sim.filler_lines = 768;  // 48 MiB: more than the sockets on both sides can buffer
  StartUpstream(sim);
  OllamaProxyOptions options;
  options.queue_bytes = 64 << 10;
  StartProxy(options);
  const uint64_t total = 768 * (sim.filler_bytes + 46) + Fixture(kWarm).size();

  absl::Notification resume;
  Call call(proxy_->port(), "POST", "/api/generate", R"({"model":"dolphin3:8b","prompt":"p"})",
            &resume);
  // The client stops reading after its first piece: the proxy's queue fills and stays bounded,
  // and the engine cannot finish sending.
  ASSERT_TRUE(
      Eventually([&] { return proxy_->stats().queued_bytes + 8192 >= options.queue_bytes; }));
  EXPECT_LE(proxy_->stats().max_queued_bytes, options.queue_bytes + (16 << 10));
  EXPECT_EQ(upstream_.ollama_streams_done(), 0);
  EXPECT_LT(upstream_.ollama_bytes_sent(), total);

  resume.Notify();
  call.Join();
  EXPECT_TRUE(call.ok());
  EXPECT_EQ(call.body().size(), total);
  EXPECT_EQ(upstream_.ollama_streams_done(), 1);
  EXPECT_LE(proxy_->stats().max_queued_bytes, options.queue_bytes + (16 << 10));
  ASSERT_TRUE(Eventually([&] { return proxy_->traffic().completed() == 1; }));
  EXPECT_DOUBLE_EQ(proxy_->traffic().Snapshot().at("dolphin3:8b").decode_tokens, 9);
}

TEST_F(OllamaProxyTest, StopCutsAHungStream) {
  OllamaSimOptions sim;
  sim.gated = true;
  StartUpstream(sim);
  StartProxy();
  Call call(proxy_->port(), "POST", "/api/generate", R"({"model":"dolphin3:8b","prompt":"p"})");
  ASSERT_TRUE(Eventually([&] { return upstream_.hits("/api/generate") == 1; }));
  upstream_.ReleaseOllamaChunks(1);
  ASSERT_TRUE(Eventually([&] { return !call.body().empty(); }));
  proxy_->Stop();
  call.Join();
  EXPECT_FALSE(call.ok());
  EXPECT_EQ(proxy_->traffic().in_flight(), 0u);
  EXPECT_EQ(proxy_->traffic().failed(), 1u);
}

}  // namespace
}  // namespace fleetwes::agent
