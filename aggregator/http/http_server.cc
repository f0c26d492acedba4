#include "aggregator/http/http_server.h"

#include <httplib.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>

#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void AddSample(prometheus::MetricFamily* f, const std::string& node, double value) {
  prometheus::ClientMetric m;
  m.label.push_back(prometheus::ClientMetric::Label{"node", node});
  m.gauge.value = value;
  f->metric.push_back(std::move(m));
}

}  // namespace

std::string RenderMetrics(const prometheus::Registry& registry,
                          const std::vector<NodeStatePtr>& nodes, absl::Time now,
                          const StalenessPolicy& policy) {
  std::vector<prometheus::MetricFamily> families = registry.Collect();
  prometheus::MetricFamily penalized =
      GaugeFamily("fleetwes_node_wes_penalized",
                  "Node WES with the thermal penalty (tokens per joule), latest fresh window");
  prometheus::MetricFamily raw = GaugeFamily(
      "fleetwes_node_wes_raw", "Node WES without the thermal penalty (tokens per joule)");
  prometheus::MetricFamily tokens = GaugeFamily(
      "fleetwes_node_tokens_per_second", "Decode tokens per second on the node, latest window");
  prometheus::MetricFamily stale =
      GaugeFamily("fleetwes_node_stale", "1 when the node's latest data is stale, else 0");
  for (const NodeStatePtr& node : nodes) {
    if (node->latest == nullptr) continue;
    const bool is_stale = node->Stale(now, policy);
    AddSample(&stale, node->node_id, is_stale ? 1 : 0);
    if (is_stale) continue;
    const v1::Wes& w = node->latest->node_wes();
    if (w.has_penalized()) AddSample(&penalized, node->node_id, w.penalized());
    if (w.has_raw()) AddSample(&raw, node->node_id, w.raw());
    AddSample(&tokens, node->node_id, w.tokens_per_s());
  }
  for (auto* f : {&penalized, &raw, &tokens, &stale}) families.push_back(std::move(*f));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

HttpServer::HttpServer(const FleetState* state, AggregatorMetrics* metrics, Clock* clock,
                       StalenessPolicy policy, const FleetQueries* queries)
    : state_(state), metrics_(metrics), clock_(clock), policy_(policy) {
  if (queries != nullptr) {
    api_ = std::make_unique<JsonApi>(queries, state, metrics, clock, policy);
  }
}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start(const ListenAddress& address) {
  server_ = std::make_unique<httplib::Server>();
  // httplib's default adds SO_REUSEPORT, which would let a second process share the port
  // silently; keep only SO_REUSEADDR (fast restarts).
  server_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::string body;
    try {
      body = RenderMetrics(*metrics_->registry(), state_->Snapshot(), clock_->Now(), policy_);
    } catch (const std::exception& e) {
      Logger("http")->error("rendering /metrics failed: {}", e.what());
      res.status = 500;
      res.set_content("metrics unavailable\n", "text/plain");
      return;
    }
    res.set_content(body, kMetricsContentType);
  });
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  // The server starts only after the database is prepared and the fleet state rebuilt, so a
  // listening aggregator is ready.
  server_->Get("/readyz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ready", "text/plain");
  });
  if (api_ != nullptr) {
    server_->Get(R"(/api/v1/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      JsonReply reply = api_->Handle(req.path, req.params);
      res.status = reply.status;
      res.set_content(std::move(reply.body), "application/json");
    });
  }
  const auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET");
    res.set_content("method not allowed: only GET\n", "text/plain");
  };
  server_->Post(R"(/.*)", not_allowed);
  server_->Put(R"(/.*)", not_allowed);
  server_->Delete(R"(/.*)", not_allowed);
  server_->Patch(R"(/.*)", not_allowed);
  // Unmatched routes get httplib's 404 with an empty body; give it a short text.
  server_->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) res.set_content("not found\n", "text/plain");
  });

  if (address.port == 0) {
    port_ = server_->bind_to_any_port(address.host);
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("http: cannot bind ", address.host, ":0"));
    }
  } else {
    if (!server_->bind_to_port(address.host, address.port)) {
      return absl::UnavailableError(absl::StrCat("http: cannot bind ", address.ToString()));
    }
    port_ = address.port;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // httplib has no readiness signal, and a stop() issued before its accept loop runs is lost:
  // wait (bounded) until the loop is up so that Stop() always works.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server_->is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  if (!server_->is_running()) return absl::InternalError("http: server did not start");
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fleetwes::aggregator
