#include "agent/ollama_proxy.h"

#include <httplib.h>

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
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

std::chrono::microseconds ToMicros(absl::Duration d) {
  return std::chrono::microseconds(absl::ToInt64Microseconds(d));
}

// Headers that concern one connection, not the message (RFC 9110 §7.6.1), those httplib sets
// itself (Host, Content-Length) and the pseudo headers it adds to a received request.
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
                                      "accept-encoding",
                                      "remote_addr",
                                      "remote_port",
                                      "local_addr",
                                      "local_port"};
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

// Whether the request on this server thread reached OllamaProxy::Serve. httplib answers an
// oversized body with 413 before any handler runs and calls only the error handler; an
// upstream's own 413 passes through Serve. httplib serves one request at a time per thread,
// between its pre-routing and error handlers.
thread_local bool t_served = false;

// Decrements the in-flight count when the last holder (the handler, or the response's content
// provider and releaser) lets go.
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

// One request in flight: the upstream thread fills the queue, the client's content provider
// drains it.
struct OllamaProxy::Exchange {
  absl::Mutex mu;
  // Set by the upstream thread.
  bool headers_ready ABSL_GUARDED_BY(mu) = false;
  bool upstream_done ABSL_GUARDED_BY(mu) = false;  // no more chunks will come
  bool upstream_failed ABSL_GUARDED_BY(mu) = false;
  std::string error ABSL_GUARDED_BY(mu);
  int status ABSL_GUARDED_BY(mu) = 0;
  httplib::Headers headers ABSL_GUARDED_BY(mu);
  std::deque<std::string> chunks ABSL_GUARDED_BY(mu);
  size_t queued ABSL_GUARDED_BY(mu) = 0;
  // Set by the client side or Stop(): the upstream read ends at its next chunk.
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  bool finished ABSL_GUARDED_BY(mu) = false;  // the upstream thread is about to return
  size_t pushing ABSL_GUARDED_BY(mu) = 0;     // size of the chunk waiting to be queued
  size_t queue_cap = 0;

  // Immutable once the thread starts.
  httplib::Request request;
  std::string model;  // of a metered request; "" otherwise
  bool metered = false;
  absl::Time start;
  std::unique_ptr<httplib::Client> client;
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
  httplib::Server& server = *proxy->server_;
  OllamaProxy* self = proxy.get();
  auto handler = [self](const httplib::Request& req, httplib::Response& res) {
    self->Serve(&req, &res);
  };
  server.Get(".*", handler);
  server.Post(".*", handler);
  server.Put(".*", handler);
  server.Patch(".*", handler);
  server.Delete(".*", handler);
  server.Options(".*", handler);
  server.set_payload_max_length(proxy->options_.max_request_bytes);
  server.set_pre_routing_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response&) {
        t_served = false;
        return httplib::Server::HandlerResponse::Unhandled;
      }));
  server.set_error_handler(
      httplib::Server::HandlerWithResponse([self](const httplib::Request&, httplib::Response& res) {
        if (res.status == 413 && !t_served) ++self->rejected_too_large_;
        return httplib::Server::HandlerResponse::Unhandled;
      }));
  server.set_tcp_nodelay(true);
  server.set_keep_alive_timeout(5);
  server.set_read_timeout(ToMicros(absl::Seconds(60)));
  server.set_write_timeout(ToMicros(proxy->options_.idle_timeout));

  if (port == 0) {
    proxy->port_ = server.bind_to_any_port(host);
  } else {
    proxy->port_ = server.bind_to_port(host, port) ? port : -1;
  }
  if (proxy->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  }
  proxy->server_thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  // stop() is lost when the accept loop has not started yet: wait for it (start-up only).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server.is_running()) {
    if (absl::Now() > deadline) return absl::InternalError("proxy did not start listening");
    absl::SleepFor(absl::Milliseconds(1));
  }
  return proxy;
}

OllamaProxy::OllamaProxy(OllamaProxyOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock), server_(std::make_unique<httplib::Server>()) {}

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
    if (x->client != nullptr) x->client->stop();
  }
  if (server_thread_.joinable()) {
    server_->stop();
    server_thread_.join();
  }
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

void OllamaProxy::Serve(const void* request, void* response) {
  const auto& req = *static_cast<const httplib::Request*>(request);
  auto& res = *static_cast<httplib::Response*>(response);
  t_served = true;
  auto in_flight = std::make_shared<InFlight>(&in_flight_);

  auto x = std::make_shared<Exchange>();
  x->start = clock_->Now();
  x->queue_cap = options_.queue_bytes;
  x->metered = Metered(req.method, req.path);
  if (x->metered) x->model = RequestModel(req.body);
  x->request.method = req.method;
  x->request.path = upstream_prefix_ + (req.target.empty() ? req.path : req.target);
  for (const auto& [name, value] : req.headers) {
    if (!SkipHeader(name)) x->request.headers.emplace(name, value);
  }
  // Plain bytes from the engine, so the final objects can be read.
  x->request.headers.emplace("Accept-Encoding", "identity");
  x->request.body = req.body;
  x->client = std::make_unique<httplib::Client>(upstream_base_);
  x->client->set_keep_alive(false);
  x->client->set_decompress(false);
  x->client->set_follow_location(false);
  x->client->set_connection_timeout(ToMicros(options_.connect_timeout));
  x->client->set_read_timeout(ToMicros(options_.idle_timeout));
  x->client->set_write_timeout(ToMicros(options_.idle_timeout));

  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      res.status = 503;
      res.set_content(R"({"error":"proxy shutting down"})", "application/json");
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
  httplib::Headers headers;
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
    res.status = 502;
    nlohmann::json body = {{"error", absl::StrCat("fleetwes proxy: upstream ", error)}};
    res.set_content(body.dump(), "application/json; charset=utf-8");
    return;
  }

  res.status = status;
  std::string content_type = "application/octet-stream";
  std::optional<size_t> length;
  for (const auto& [name, value] : headers) {
    if (absl::EqualsIgnoreCase(name, "Content-Type")) {
      content_type = value;
    } else if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      size_t n = 0;
      if (absl::SimpleAtoi(value, &n)) length = n;
    } else if (!SkipHeader(name)) {
      res.headers.emplace(name, value);
    }
  }
  if (req.method == "HEAD" || length == size_t{0}) {
    if (req.method == "HEAD" && length.has_value()) {
      res.set_header("Content-Length", std::to_string(*length));
    }
    res.set_header("Content-Type", content_type);
    absl::MutexLock lock(&x->mu);
    x->cancelled = true;
    return;
  }

  // Hands the next queued chunk to `sink`; false when the response cannot be completed.
  auto pump = [this, x, in_flight](httplib::DataSink& sink) -> bool {
    std::string chunk;
    {
      absl::MutexLock lock(&x->mu);
      x->mu.Await(absl::Condition(
          +[](Exchange* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu) {
            return !e->chunks.empty() || e->upstream_done || e->cancelled;
          },
          x.get()));
      if (x->cancelled) return false;
      if (x->chunks.empty()) {
        if (x->upstream_failed) return false;  // cut short: close the connection
        sink.done();
        return true;
      }
      chunk = std::move(x->chunks.front());
      x->chunks.pop_front();
      x->queued -= chunk.size();
      queued_bytes_ -= chunk.size();
    }
    if (!sink.write(chunk.data(), chunk.size())) {
      absl::MutexLock lock(&x->mu);
      x->cancelled = true;
      return false;
    }
    response_bytes_ += chunk.size();
    return true;
  };
  auto release = [this, x, in_flight](bool success) {
    absl::MutexLock lock(&x->mu);
    if (!success && !x->upstream_done) ++client_aborts_;
    x->cancelled = true;
  };
  if (length.has_value()) {
    res.set_content_provider(
        *length, content_type,
        [pump](size_t, size_t, httplib::DataSink& sink) { return pump(sink); }, release);
  } else {
    res.set_chunked_content_provider(
        content_type, [pump](size_t, httplib::DataSink& sink) { return pump(sink); }, release);
  }
}

void OllamaProxy::Upstream(std::shared_ptr<Exchange> x) {
  Exchange* e = x.get();
  std::optional<ollama::ResponseMeter> meter;
  httplib::Request& req = e->request;
  req.response_handler = [e, &meter](const httplib::Response& r) {
    absl::MutexLock lock(&e->mu);
    if (e->cancelled) return false;
    e->status = r.status;
    e->headers = r.headers;
    e->headers_ready = true;
    if (e->metered && r.status == 200) {
      meter.emplace(absl::StrContains(r.get_header_value("Content-Type"), "ndjson"));
    }
    return true;
  };
  req.content_receiver = [this, e, &meter](const char* data, size_t n, uint64_t, uint64_t) {
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

  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool ok = e->client->send(req, res, error);
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
    Logger("agent")->warn("ollama proxy: {} {} to {} failed: {}", req.method, req.path,
                          upstream_base_, httplib::to_string(error));
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
      e->error = error == httplib::Error::Connection ? "unreachable" : httplib::to_string(error);
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
