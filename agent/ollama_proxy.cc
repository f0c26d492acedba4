#include "agent/ollama_proxy.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/config.h"
#include "agent/http/http.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

// Headers that concern one connection, not the message (RFC 9110 §7.6.1), and those the HTTP
// layer sets itself (Host, Content-Length).
bool SkipHeader(const std::string& name) {
  static const char* const kSkip[] = {"connection",
                                      "keep-alive",
                                      "proxy-authenticate",
                                      "proxy-authorization",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-connection",
                                      "host",
                                      "content-length",
                                      "accept-encoding"};
  const std::string lower = absl::AsciiStrToLower(name);
  for (const char* s : kSkip) {
    if (lower == s) return true;
  }
  return false;
}

// The "model" of a generate/chat request body; "" when absent or not JSON. The body (and its
// prompt) is dropped right after.
std::string RequestModel(const std::string& body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return "";
  auto it = j.find("model");
  if (it == j.end() || !it->is_string()) return "";
  const std::string& m = it->get_ref<const std::string&>();
  return m.size() <= ollama::kMaxModelNameBytes ? m : "";
}

bool Metered(const std::string& method, const std::string& path) {
  return method == "POST" && (path == "/api/generate" || path == "/api/chat");
}

// Counts a request in flight for its lifetime.
class InFlight {
 public:
  explicit InFlight(std::atomic<uint64_t>* count) : count_(count) { ++*count_; }
  ~InFlight() { --*count_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<uint64_t>* const count_;
};

}  // namespace

// One request in flight: the upstream thread fills the queue, the client's connection thread
// drains it.
struct OllamaProxy::Exchange {
  absl::Mutex mu;
  // Set by the upstream thread.
  bool headers_ready ABSL_GUARDED_BY(mu) = false;
  bool upstream_done ABSL_GUARDED_BY(mu) = false;  // no more chunks will come
  bool upstream_failed ABSL_GUARDED_BY(mu) = false;
  std::string error ABSL_GUARDED_BY(mu);
  int status ABSL_GUARDED_BY(mu) = 0;
  http::Headers headers ABSL_GUARDED_BY(mu);
  std::deque<std::string> chunks ABSL_GUARDED_BY(mu);
  size_t queued ABSL_GUARDED_BY(mu) = 0;
  // Set by the client side or Stop(): the upstream read ends at its next chunk.
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  bool finished ABSL_GUARDED_BY(mu) = false;  // the upstream thread is about to return
  size_t pushing ABSL_GUARDED_BY(mu) = 0;     // size of the chunk waiting to be queued
  size_t queue_cap = 0;

  // Immutable once the thread starts.
  http::Request request;
  std::string model;  // of a metered request; "" otherwise
  bool metered = false;
  absl::Time start;
  std::unique_ptr<http::Client> client;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<OllamaProxy>> OllamaProxy::Start(OllamaProxyOptions options,
                                                                Clock* clock) {
  absl::StatusOr<ParsedUrl> upstream = ParseEngineUrl(options.upstream_url);
  if (!upstream.ok()) return upstream.status();
  const std::string& listen = options.listen;
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }

  std::unique_ptr<OllamaProxy> proxy(new OllamaProxy(std::move(options), clock));
  proxy->upstream_base_ = upstream->base;
  proxy->upstream_prefix_ = upstream->path_prefix;
  if (!absl::StartsWith(proxy->upstream_base_, "http://")) {
    return absl::InvalidArgumentError(std::string(kPlainHttpOnly));
  }
  OllamaProxy* self = proxy.get();
  http::ServerOptions server_options;
  server_options.host = host;
  server_options.port = port;
  server_options.max_body_bytes = proxy->options_.max_request_bytes;
  // An oversized body is answered 413 before Serve; an upstream's own 413 passes through Serve.
  server_options.on_too_large = [self] { ++self->rejected_too_large_; };
  server_options.keep_alive_timeout = absl::Seconds(5);
  server_options.read_timeout = absl::Seconds(60);
  server_options.write_timeout = proxy->options_.idle_timeout;
  auto server = http::Server::Start(
      std::move(server_options),
      [self](const http::ServerRequest& req, http::Responder& res) { self->Serve(req, res); });
  if (!server.ok()) return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  proxy->server_ = *std::move(server);
  proxy->port_ = proxy->server_->port();
  return proxy;
}

OllamaProxy::OllamaProxy(OllamaProxyOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock) {}

OllamaProxy::~OllamaProxy() { Stop(); }

void OllamaProxy::Stop() {
  std::list<std::shared_ptr<Exchange>> active;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    active = active_;
  }
  for (const auto& x : active) {
    absl::MutexLock lock(&x->mu);
    x->cancelled = true;
  }
  for (const auto& x : active) {
    if (x->client != nullptr) x->client->Cancel();
  }
  if (server_ != nullptr) server_->Stop();
  absl::MutexLock lock(&mu_);
  for (const auto& x : active_) {
    if (x->thread.joinable()) x->thread.join();
  }
  active_.clear();
}

OllamaProxyStats OllamaProxy::stats() const {
  OllamaProxyStats s;
  s.requests = requests_.load();
  s.upstream_unreachable = upstream_unreachable_.load();
  s.upstream_cut = upstream_cut_.load();
  s.upstream_errors = s.upstream_unreachable + s.upstream_cut;
  s.rejected_too_large = rejected_too_large_.load();
  s.in_flight = in_flight_.load();
  s.request_bytes = request_bytes_.load();
  s.response_bytes = response_bytes_.load();
  s.client_aborts = client_aborts_.load();
  s.meter_errors = meter_errors_.load();
  s.queued_bytes = queued_bytes_.load();
  s.max_queued_bytes = max_queued_bytes_.load();
  return s;
}

void OllamaProxyRegistry::Add(std::string engine, std::weak_ptr<const OllamaProxy> proxy) {
  absl::MutexLock lock(&mu_);
  proxies_.emplace_back(std::move(engine), std::move(proxy));
}

std::vector<OllamaProxyRegistry::Entry> OllamaProxyRegistry::Stats() const {
  absl::MutexLock lock(&mu_);
  std::vector<Entry> out;
  for (const auto& [engine, weak] : proxies_) {
    if (std::shared_ptr<const OllamaProxy> proxy = weak.lock()) {
      out.push_back({engine, proxy->stats()});
    }
  }
  return out;
}

void OllamaProxy::ReapFinished() {
  for (auto it = active_.begin(); it != active_.end();) {
    bool finished;
    {
      absl::MutexLock lock(&(*it)->mu);
      finished = (*it)->finished;
    }
    if (finished) {
      (*it)->thread.join();
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
}

void OllamaProxy::Serve(const http::ServerRequest& req, http::Responder& res) {
  InFlight in_flight(&in_flight_);

  auto x = std::make_shared<Exchange>();
  x->start = clock_->Now();
  x->queue_cap = options_.queue_bytes;
  x->metered = Metered(req.method, req.path);
  if (x->metered) x->model = RequestModel(req.body);
  x->request.method = req.method;
  x->request.target = upstream_prefix_ + req.target;
  for (const auto& [name, value] : req.headers) {
    if (!SkipHeader(name)) x->request.headers.emplace_back(name, value);
  }
  // Plain bytes from the engine, so the final objects can be read.
  x->request.headers.emplace_back("Accept-Encoding", "identity");
  x->request.body = req.body;
  http::Client::Options client_options;
  client_options.keep_alive = false;
  x->client = std::make_unique<http::Client>(upstream_base_, client_options);

  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      res.Send(503, "application/json", R"({"error":"proxy shutting down"})");
      return;
    }
    ReapFinished();
    ++requests_;
    request_bytes_ += req.body.size();
    if (x->metered) traffic_.Begin(x->model);
    active_.push_back(x);
    x->thread = std::thread([this, x] { Upstream(x); });
  }

  // Wait for the upstream's status line and headers.
  std::string error;
  int status = 0;
  http::Headers headers;
  {
    absl::MutexLock lock(&x->mu);
    x->mu.Await(absl::Condition(
        +[](Exchange* e)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu) { return e->headers_ready || e->upstream_done; },
        x.get()));
    if (!x->headers_ready) {
      error = x->error;
    } else {
      status = x->status;
      headers = x->headers;
    }
  }
  if (status == 0) {
    nlohmann::json body = {{"error", absl::StrCat("fleetwes proxy: upstream ", error)}};
    res.Send(502, "application/json; charset=utf-8", body.dump());
    return;
  }

  std::string content_type = "application/octet-stream";
  std::optional<uint64_t> length;
  http::Headers out;
  for (const auto& [name, value] : headers) {
    if (absl::EqualsIgnoreCase(name, "Content-Type")) {
      content_type = value;
    } else if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      uint64_t n = 0;
      if (absl::SimpleAtoi(value, &n)) length = n;
    } else if (!SkipHeader(name)) {
      out.emplace_back(name, value);
    }
  }
  out.emplace_back("Content-Type", content_type);
  if (req.method == "HEAD" || length == uint64_t{0}) {
    res.Start(status, out, length);
    res.Finish();
    absl::MutexLock lock(&x->mu);
    x->cancelled = true;
    return;
  }

  // Hands the queued chunks to the client as they come; a response that cannot be completed
  // closes the connection.
  bool complete = res.Start(status, out, length);
  while (complete) {
    std::string chunk;
    {
      absl::MutexLock lock(&x->mu);
      x->mu.Await(absl::Condition(
          +[](Exchange* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu) {
            return !e->chunks.empty() || e->upstream_done || e->cancelled;
          },
          x.get()));
      if (x->cancelled || (x->chunks.empty() && x->upstream_failed)) {
        complete = false;  // cut short
        break;
      }
      if (x->chunks.empty()) break;  // the upstream's response is complete
      chunk = std::move(x->chunks.front());
      x->chunks.pop_front();
      x->queued -= chunk.size();
      queued_bytes_ -= chunk.size();
    }
    if (!res.Write(chunk)) {
      complete = false;
      break;
    }
    response_bytes_ += chunk.size();
  }
  if (complete) complete = res.Finish();
  absl::MutexLock lock(&x->mu);
  if (!complete && !x->upstream_done) ++client_aborts_;
  x->cancelled = true;
}

void OllamaProxy::Upstream(std::shared_ptr<Exchange> x) {
  Exchange* e = x.get();
  std::optional<ollama::ResponseMeter> meter;
  const http::Request& req = e->request;
  auto on_headers = [e, &meter](int status, const http::Headers& headers) {
    absl::MutexLock lock(&e->mu);
    if (e->cancelled) return false;
    e->status = status;
    e->headers = headers;
    e->headers_ready = true;
    if (e->metered && status == 200) {
      const std::string_view type = http::FindHeader(headers, "Content-Type");
      meter.emplace(type.find("ndjson") != std::string_view::npos);
    }
    return true;
  };
  auto on_body = [this, e, &meter](const char* data, size_t n) {
    if (meter.has_value()) meter->Feed(std::string_view(data, n), clock_->Now());
    absl::MutexLock lock(&e->mu);
    // Bounded queue: wait for the client to take chunks (one chunk always fits).
    e->pushing = n;
    e->mu.Await(absl::Condition(
        +[](Exchange* ex) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ex->mu) {
          return ex->cancelled || ex->queued == 0 || ex->queued + ex->pushing <= ex->queue_cap;
        },
        e));
    if (e->cancelled) return false;
    e->chunks.emplace_back(data, n);
    e->queued += n;
    queued_bytes_ += n;
    uint64_t high = max_queued_bytes_.load();
    while (e->queued > high && !max_queued_bytes_.compare_exchange_weak(high, e->queued)) {
    }
    return true;
  };

  http::Timeouts timeouts;
  timeouts.connect = options_.connect_timeout;
  timeouts.idle = options_.idle_timeout;
  const http::Result result = e->client->Send(req, timeouts, on_headers, on_body);
  const bool ok = result.ok();
  const absl::Time end = clock_->Now();

  ollama::ResponseOutcome outcome;
  if (meter.has_value()) outcome = meter->Finish(end);
  bool cancelled;
  {
    absl::MutexLock lock(&e->mu);
    cancelled = e->cancelled;
  }
  // Accounted before the client sees the end of the response.
  const bool failed = !ok && !cancelled;
  if (failed) {
    bool started;
    {
      absl::MutexLock lock(&e->mu);
      started = e->headers_ready;
    }
    ++(started ? upstream_cut_ : upstream_unreachable_);
    Logger("agent")->warn("ollama proxy: {} {} to {} failed: {}", req.method, req.target,
                          upstream_base_, result.message);
  }
  meter_errors_ += outcome.parse_errors;
  if (e->metered) {
    if (!ok) outcome.final.reset();  // a cut stream's counts are not the request's
    traffic_.End(e->model, outcome, e->start);
  }
  {
    absl::MutexLock lock(&e->mu);
    if (failed) {
      e->upstream_failed = true;
      e->error = result.error == http::Error::kConnect ? "unreachable" : result.message;
    }
    if (!ok && !failed && !e->headers_ready) e->error = "request cancelled";
    e->upstream_done = true;
  }
  // Drop what the client will never read, then let ReapFinished join this thread.
  absl::MutexLock lock(&e->mu);
  e->mu.Await(absl::Condition(
      +[](Exchange* ex)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(ex->mu) { return ex->cancelled || ex->chunks.empty(); },
      e));
  queued_bytes_ -= e->queued;
  e->queued = 0;
  e->chunks.clear();
  e->finished = true;
}

}  // namespace fleetwes::agent
