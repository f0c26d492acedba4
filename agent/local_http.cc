#include "agent/local_http.h"

#include <google/protobuf/util/json_util.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/config.h"
#include "agent/http/http.h"
#include "common/logging.h"
#include "common/version.h"

namespace fleetwes::agent {
namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr int kHealthIntervals = 3;

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

// Adds a sample; values that are not finite or are negative are left out (never emitted).
void Add(MetricFamily* f, Labels labels, double value) {
  if (!std::isfinite(value) || value < 0) return;
  ClientMetric m;
  m.label = std::move(labels);
  if (f->type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f->metric.push_back(std::move(m));
}

double Seconds(const google::protobuf::Timestamp& ts) {
  return static_cast<double>(ts.seconds()) + ts.nanos() * 1e-9;
}

std::string ProtoJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(m, &json, options).ok()) return "null";
  return json;
}

// The counters of the Ollama proxies (agent/ollama_proxy.h), one series set per engine. No
// family without a proxy.
void AddProxyFamilies(const std::vector<OllamaProxyRegistry::Entry>& proxies,
                      std::vector<MetricFamily>* out) {
  if (proxies.empty()) return;
  MetricFamily requests =
      Family("fleetwes_agent_ollama_proxy_requests_total",
             "Requests the Ollama proxy forwarded to the engine", MetricType::Counter);
  MetricFamily in_flight = Family("fleetwes_agent_ollama_proxy_requests_in_flight",
                                  "Requests the Ollama proxy is serving now", MetricType::Gauge);
  MetricFamily too_large =
      Family("fleetwes_agent_ollama_proxy_rejected_too_large_total",
             "Requests answered 413: body above proxy.max_request_bytes", MetricType::Counter);
  MetricFamily upstream = Family(
      "fleetwes_agent_ollama_proxy_upstream_failures_total",
      "Requests the engine failed: before the response (answered 502) or during it (cut short)",
      MetricType::Counter);
  MetricFamily errors =
      Family("fleetwes_agent_ollama_proxy_errors_total",
             "Other proxy errors by kind: client_abort (client left before the end), "
             "bad_response_line (a generate/chat line that was not a JSON object)",
             MetricType::Counter);
  MetricFamily bytes = Family("fleetwes_agent_ollama_proxy_bytes_total",
                              "Body bytes through the proxy: request (to the engine), response "
                              "(to clients)",
                              MetricType::Counter);
  MetricFamily queued = Family("fleetwes_agent_ollama_proxy_queued_bytes",
                               "Response bytes waiting for slow clients now", MetricType::Gauge);
  for (const OllamaProxyRegistry::Entry& p : proxies) {
    const OllamaProxyStats& s = p.stats;
    const std::string& e = p.engine;
    Add(&requests, {{"engine", e}}, static_cast<double>(s.requests));
    Add(&in_flight, {{"engine", e}}, static_cast<double>(s.in_flight));
    Add(&too_large, {{"engine", e}}, static_cast<double>(s.rejected_too_large));
    Add(&upstream, {{"engine", e}, {"stage", "before_response"}},
        static_cast<double>(s.upstream_unreachable));
    Add(&upstream, {{"engine", e}, {"stage", "during_response"}},
        static_cast<double>(s.upstream_cut));
    Add(&errors, {{"engine", e}, {"kind", "client_abort"}}, static_cast<double>(s.client_aborts));
    Add(&errors, {{"engine", e}, {"kind", "bad_response_line"}},
        static_cast<double>(s.meter_errors));
    Add(&bytes, {{"engine", e}, {"direction", "request"}}, static_cast<double>(s.request_bytes));
    Add(&bytes, {{"engine", e}, {"direction", "response"}}, static_cast<double>(s.response_bytes));
    Add(&queued, {{"engine", e}}, static_cast<double>(s.queued_bytes));
  }
  for (MetricFamily* f : {&requests, &in_flight, &too_large, &upstream, &errors, &bytes, &queued}) {
    out->push_back(std::move(*f));
  }
}

// The families built from the last frame; absent values produce no sample, so departed models
// and devices disappear with the frame that no longer lists them.
void AddFrameFamilies(const v1::Frame& f, std::vector<MetricFamily>* out) {
  MetricFamily tps =
      Family("fleetwes_agent_model_decode_tokens_per_second",
             "Decode tokens per second of the model, last window", MetricType::Gauge);
  MetricFamily ttft =
      Family("fleetwes_agent_model_ttft_p95_seconds",
             "Time to first token, 95th percentile, last window", MetricType::Gauge);
  MetricFamily tpot =
      Family("fleetwes_agent_model_tpot_p95_seconds",
             "Time per output token, 95th percentile, last window", MetricType::Gauge);
  MetricFamily kv = Family("fleetwes_agent_model_kv_cache_usage_ratio",
                           "KV cache in use, fraction 0..1, at window end", MetricType::Gauge);
  MetricFamily running = Family("fleetwes_agent_model_requests_running",
                                "Requests being processed at window end", MetricType::Gauge);
  MetricFamily waiting = Family("fleetwes_agent_model_requests_waiting",
                                "Requests queued at window end", MetricType::Gauge);
  MetricFamily wes_raw = Family("fleetwes_agent_model_wes_raw",
                                "Model WES without thermal penalty (tokens per joule), last window",
                                MetricType::Gauge);
  MetricFamily wes_pen =
      Family("fleetwes_agent_model_wes_penalized",
             "Model WES with thermal penalty (tokens per joule), last window", MetricType::Gauge);
  for (const v1::ModelSample& m : f.models()) {
    const Labels l = {{"engine", m.engine_id()}, {"model", m.model()}};
    if (m.has_decode_tokens_per_s()) Add(&tps, l, m.decode_tokens_per_s());
    if (m.ttft().has_p95_s()) Add(&ttft, l, m.ttft().p95_s());
    if (m.tpot().has_p95_s()) Add(&tpot, l, m.tpot().p95_s());
    if (m.has_kv_cache_usage()) Add(&kv, l, m.kv_cache_usage());
    if (m.has_requests_running()) Add(&running, l, m.requests_running());
    if (m.has_requests_waiting()) Add(&waiting, l, m.requests_waiting());
    if (m.wes().has_raw()) Add(&wes_raw, l, m.wes().raw());
    if (m.wes().has_penalized()) Add(&wes_pen, l, m.wes().penalized());
  }

  MetricFamily engine_up =
      Family("fleetwes_agent_engine_up", "1 when the engine answered in the last window, else 0",
             MetricType::Gauge);
  for (const v1::EngineStatus& e : f.engines()) {
    Add(&engine_up, {{"engine", e.engine_id()}, {"kind", EngineKindName(e.kind())}},
        e.available() ? 1 : 0);
  }

  MetricFamily watts = Family("fleetwes_agent_device_power_watts",
                              "Mean power of the device over the last window", MetricType::Gauge);
  MetricFamily temp = Family("fleetwes_agent_device_temperature_celsius",
                             "Hottest sensor of the device at window end", MetricType::Gauge);
  MetricFamily thermal = Family(
      "fleetwes_agent_device_thermal_state",
      "Worst thermal state in the last window: 0 unknown, 1 normal, 2 fair, 3 serious, 4 critical",
      MetricType::Gauge);
  MetricFamily clock =
      Family("fleetwes_agent_device_clock_hertz", "Device clock at window end", MetricType::Gauge);
  MetricFamily clock_max = Family("fleetwes_agent_device_clock_max_hertz",
                                  "Maximum clock of the device", MetricType::Gauge);
  for (const v1::Device& d : f.devices()) {
    const Labels l = {{"device", d.id()}, {"name", d.name()}};
    if (d.has_power_w()) Add(&watts, l, d.power_w());
    if (d.has_temperature_c()) Add(&temp, l, d.temperature_c());
    Add(&thermal, l, static_cast<double>(d.thermal_state()));
    if (d.has_clock_mhz()) Add(&clock, l, d.clock_mhz() * 1e6);
    if (d.has_clock_max_mhz()) Add(&clock_max, l, d.clock_max_mhz() * 1e6);
  }

  MetricFamily node_raw =
      Family("fleetwes_agent_node_wes_raw",
             "Node WES without thermal penalty (tokens per joule), last window", MetricType::Gauge);
  MetricFamily node_pen =
      Family("fleetwes_agent_node_wes_penalized",
             "Node WES with thermal penalty (tokens per joule), last window", MetricType::Gauge);
  MetricFamily node_tps =
      Family("fleetwes_agent_node_decode_tokens_per_second",
             "Decode tokens per second of all models, last window", MetricType::Gauge);
  MetricFamily node_thermal = Family(
      "fleetwes_agent_node_thermal_state",
      "Worst device thermal state in the last window (0 unknown .. 4 critical)", MetricType::Gauge);
  MetricFamily pressure =
      Family("fleetwes_agent_memory_pressure",
             "1 when the node was swapping or under memory pressure in the last window",
             MetricType::Gauge);
  MetricFamily pressure_avg =
      Family("fleetwes_agent_memory_pressure_some_avg10_ratio",
             "/proc/pressure/memory some avg10 as a fraction 0..1", MetricType::Gauge);
  MetricFamily seq = Family("fleetwes_agent_last_frame_seq", "Sequence number of the last frame",
                            MetricType::Gauge);
  MetricFamily end = Family("fleetwes_agent_last_frame_timestamp_seconds",
                            "End of the last frame's window, Unix time", MetricType::Gauge);
  const v1::Wes& w = f.node_wes();
  if (w.has_raw()) Add(&node_raw, {}, w.raw());
  if (w.has_penalized()) Add(&node_pen, {}, w.penalized());
  Add(&node_tps, {}, w.tokens_per_s());
  Add(&node_thermal, {}, static_cast<double>(f.thermal_state()));
  Add(&pressure, {}, f.system().memory_pressure() ? 1 : 0);
  if (f.system().has_memory_pressure_some_avg10()) {
    Add(&pressure_avg, {}, f.system().memory_pressure_some_avg10() / 100.0);
  }
  Add(&seq, {}, static_cast<double>(f.seq()));
  Add(&end, {}, Seconds(f.window_end()));

  for (MetricFamily* family :
       {&tps,      &ttft,         &tpot,      &kv,       &running,  &waiting,
        &wes_raw,  &wes_pen,      &engine_up, &watts,    &temp,     &thermal,
        &clock,    &clock_max,    &node_raw,  &node_pen, &node_tps, &node_thermal,
        &pressure, &pressure_avg, &seq,       &end}) {
    if (!family->metric.empty()) out->push_back(std::move(*family));
  }
}

}  // namespace

absl::Status ParseListenAddress(const std::string& address, std::string* host, int* port) {
  auto invalid = [&address] {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", address, "\" is not host:port (e.g. \"127.0.0.1:7472\" or \"[::1]:7472\")"));
  };
  size_t colon;
  if (absl::StartsWith(address, "[")) {
    const size_t close = address.find(']');
    if (close == std::string::npos || close < 2 || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return invalid();
    }
    *host = address.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0) return invalid();
    *host = address.substr(0, colon);
    if (host->find(':') != std::string::npos) return invalid();
  }
  const std::string digits = address.substr(colon + 1);
  int value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size() || value < 1 ||
      value > 65535) {
    return invalid();
  }
  for (char c : *host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
          c == ':')) {
      return invalid();
    }
  }
  *port = value;
  return absl::OkStatus();
}

LocalHttp::LocalHttp(LocalHttpOptions options, LocalHttpSources sources, Clock* clock)
    : options_(std::move(options)),
      sources_(std::move(sources)),
      clock_(clock),
      started_(clock->Now()) {}

LocalHttp::~LocalHttp() { Stop(); }

void LocalHttp::PublishFrame(const v1::Frame& frame) {
  auto copy = std::make_shared<const v1::Frame>(frame);
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  last_frame_ = std::move(copy);
  last_frame_at_ = now;
  ++frames_produced_;
}

LocalHttp::Health LocalHttp::CheckHealth() const {
  std::optional<absl::Time> last;
  {
    absl::MutexLock lock(&mu_);
    last = last_frame_at_;
  }
  const absl::Time now = clock_->Now();
  const absl::Duration limit = kHealthIntervals * options_.interval;
  // Before the first frame, the start counts as the last one: the first frame needs one
  // interval (baseline, then the window).
  const absl::Duration age = now - last.value_or(started_);
  if (age <= limit) return {true, "ok"};
  return {false,
          absl::StrCat(last.has_value() ? "no frame for " : "no frame since the start ",
                       absl::FormatDuration(age), " (limit ", absl::FormatDuration(limit), ": ",
                       kHealthIntervals, " intervals of ", absl::FormatDuration(options_.interval),
                       "); engine or hardware reads may hang")};
}

std::string LocalHttp::RenderMetrics() const {
  std::shared_ptr<const v1::Frame> frame;
  uint64_t produced;
  {
    absl::MutexLock lock(&mu_);
    frame = last_frame_;
    produced = frames_produced_;
  }
  std::vector<MetricFamily> families;
  MetricFamily info =
      Family("fleetwes_agent_info", "Constant 1 with the agent's identity", MetricType::Gauge);
  Add(&info,
      {{"boot_id", options_.boot_id},
       {"node_id", options_.node_id},
       {"version", std::string(Version())}},
      1);
  families.push_back(std::move(info));
  MetricFamily start = Family("fleetwes_agent_process_start_time_seconds",
                              "Start time of the agent, Unix time", MetricType::Gauge);
  Add(&start, {}, absl::ToDoubleSeconds(started_ - absl::UnixEpoch()));
  families.push_back(std::move(start));
  MetricFamily produced_f = Family("fleetwes_agent_frames_produced_total",
                                   "Frames built by the sampler", MetricType::Counter);
  Add(&produced_f, {}, static_cast<double>(produced));
  families.push_back(std::move(produced_f));

  if (sources_.uplink) {
    const UplinkStats u = sources_.uplink();
    MetricFamily sent =
        Family("fleetwes_agent_frames_sent_total",
               "Frames written to the uplink stream, resends included", MetricType::Counter);
    Add(&sent, {}, static_cast<double>(u.frames_sent));
    MetricFamily acked =
        Family("fleetwes_agent_frames_acked_total",
               "Frames of this boot acknowledged by the aggregator", MetricType::Counter);
    Add(&acked, {}, static_cast<double>(u.acked_seq));
    MetricFamily rejected = Family("fleetwes_agent_frames_rejected_total",
                                   "Frames the aggregator rejected for good", MetricType::Counter);
    Add(&rejected, {}, static_cast<double>(u.rejects));
    MetricFamily connected =
        Family("fleetwes_agent_uplink_connected",
               "1 while the stream to an aggregator is open, else 0", MetricType::Gauge);
    Add(&connected, {}, u.connected ? 1 : 0);
    MetricFamily connects = Family("fleetwes_agent_uplink_connects_total",
                                   "Streams opened to an aggregator", MetricType::Counter);
    Add(&connects, {}, static_cast<double>(u.connects));
    MetricFamily failures =
        Family("fleetwes_agent_uplink_stream_failures_total",
               "Streams that failed to open or ended, by reason", MetricType::Counter);
    for (const char* reason : {"resolution", "refused", "unreachable", "tls", "auth", "rejected",
                               "disconnected", "other"}) {
      auto it = u.failures_by_reason.find(reason);
      Add(&failures, {{"reason", reason}},
          it == u.failures_by_reason.end() ? 0 : static_cast<double>(it->second));
    }
    for (MetricFamily* f : {&sent, &acked, &rejected, &connected, &connects, &failures}) {
      families.push_back(std::move(*f));
    }
  }
  if (sources_.queue) {
    const QueueDepth q = sources_.queue();
    MetricFamily frames =
        Family("fleetwes_agent_spool_frames",
               "Frames waiting for acknowledgement (spool or memory queue)", MetricType::Gauge);
    Add(&frames, {}, static_cast<double>(q.frames));
    families.push_back(std::move(frames));
    if (q.bytes.has_value()) {
      MetricFamily bytes =
          Family("fleetwes_agent_spool_bytes", "Bytes in the spool's segments", MetricType::Gauge);
      Add(&bytes, {}, static_cast<double>(*q.bytes));
      families.push_back(std::move(bytes));
    }
    MetricFamily evicted =
        Family("fleetwes_agent_spool_evicted_frames_total",
               "Frames dropped unacknowledged to respect the bound", MetricType::Counter);
    Add(&evicted, {}, static_cast<double>(q.evicted));
    families.push_back(std::move(evicted));
  }
  if (sources_.engine_reads) {
    MetricFamily failed = Family("fleetwes_agent_engine_reads_failed_total",
                                 "Engine reads that ended unavailable", MetricType::Counter);
    MetricFamily given_up =
        Family("fleetwes_agent_engine_reads_given_up_total",
               "Engine reads not finished within the engine's timeout", MetricType::Counter);
    for (const EngineReadCounters& c : sources_.engine_reads()) {
      Add(&failed, {{"engine", c.engine_id}}, static_cast<double>(c.failed));
      Add(&given_up, {{"engine", c.engine_id}}, static_cast<double>(c.given_up));
    }
    if (!failed.metric.empty()) {
      families.push_back(std::move(failed));
      families.push_back(std::move(given_up));
    }
  }
  if (sources_.ollama_proxies) AddProxyFamilies(sources_.ollama_proxies(), &families);
  if (frame != nullptr) AddFrameFamilies(*frame, &families);

  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

std::string LocalHttp::RenderStatus() const {
  std::shared_ptr<const v1::Frame> frame;
  uint64_t produced;
  std::optional<absl::Time> last_at;
  {
    absl::MutexLock lock(&mu_);
    frame = last_frame_;
    produced = frames_produced_;
    last_at = last_frame_at_;
  }
  const absl::Time now = clock_->Now();
  nlohmann::json j;
  j["node_id"] = options_.node_id;
  j["boot_id"] = options_.boot_id;
  j["version"] = std::string(Version());
  j["uptime_s"] = absl::ToDoubleSeconds(now - started_);
  j["interval_s"] = absl::ToDoubleSeconds(options_.interval);
  const Health health = CheckHealth();
  j["healthy"] = health.ok;
  j["health"] = health.message;
  j["frames_produced"] = produced;
  if (last_at.has_value()) j["last_frame_age_s"] = absl::ToDoubleSeconds(now - *last_at);
  j["last_frame"] = nullptr;
  if (frame != nullptr) {
    nlohmann::json fj =
        nlohmann::json::parse(ProtoJson(*frame), nullptr, /*allow_exceptions=*/false);
    if (!fj.is_discarded()) j["last_frame"] = std::move(fj);
  }
  if (sources_.uplink) {
    const UplinkStats u = sources_.uplink();
    j["uplink"] = {
        {"connected", u.connected},
        {"address", u.address},
        {"state", u.state},
        {"reason", u.reason},
        {"last_error", u.last_error},
        {"acked_seq", u.acked_seq},
        {"connects", u.connects},
        {"frames_sent", u.frames_sent},
        {"acks", u.acks},
        {"rejects", u.rejects},
        {"stream_failures", u.stream_failures},
        {"non_retryable_failures", u.non_retryable_failures},
        {"failures_by_reason", u.failures_by_reason},
    };
  }
  nlohmann::json spool = {{"enabled", options_.spool_enabled}};
  if (options_.spool_enabled) spool["dir"] = options_.spool_dir;
  if (sources_.queue) {
    const QueueDepth q = sources_.queue();
    spool["depth_frames"] = q.frames;
    if (q.bytes.has_value()) spool["depth_bytes"] = *q.bytes;
    spool["evicted_frames"] = q.evicted;
  }
  j["spool"] = std::move(spool);
  nlohmann::json engines = nlohmann::json::array();
  if (sources_.engines) {
    std::vector<EngineReadCounters> reads;
    if (sources_.engine_reads) reads = sources_.engine_reads();
    for (const v1::EngineStatus& e : sources_.engines()) {
      nlohmann::json ej = nlohmann::json::parse(ProtoJson(e), nullptr, false);
      if (ej.is_discarded()) ej = nlohmann::json::object();
      for (const EngineReadCounters& c : reads) {
        if (c.engine_id != e.engine_id()) continue;
        ej["reads_failed"] = c.failed;
        ej["reads_given_up"] = c.given_up;
      }
      engines.push_back(std::move(ej));
    }
  }
  j["engines"] = std::move(engines);
  return j.dump(2) + "\n";
}

void LocalHttp::Handle(const http::ServerRequest& req, http::Responder& res) {
  constexpr char kText[] = "text/plain; charset=utf-8";
  const bool known = req.path == "/healthz" || req.path == "/metrics" || req.path == "/status";
  if (!known) {
    res.Send(404, kText, "not found: try /healthz, /metrics, /status\n");
    return;
  }
  if (req.method != "GET" && req.method != "HEAD") {
    res.Send(405, kText, "method not allowed: use GET\n", {{"Allow", "GET, HEAD"}});
    return;
  }
  if (req.path == "/healthz") {
    const Health h = CheckHealth();
    res.Send(h.ok ? 200 : 503, kText, h.ok ? "ok\n" : h.message + "\n");
    return;
  }
  const bool metrics = req.path == "/metrics";
  std::string body;
  try {
    body = metrics ? RenderMetrics() : RenderStatus();
  } catch (const std::exception& e) {
    Logger("http")->error("node {}: rendering {} failed: {}", options_.node_id, req.path, e.what());
    res.Send(500, kText, metrics ? "metrics unavailable\n" : "status unavailable\n");
    return;
  }
  res.Send(200, metrics ? kMetricsContentType : "application/json", std::move(body));
}

absl::Status LocalHttp::Start() {
  http::ServerOptions options;
  options.host = options_.host;
  options.port = options_.port;
  // Requests here have no body; a few operators and one Prometheus.
  options.max_body_bytes = 64 << 10;
  options.read_timeout = absl::Seconds(10);
  options.write_timeout = absl::Seconds(10);
  options.max_connections = 16;
  const std::string address = absl::StrCat(
      absl::StrContains(options_.host, ':') ? "[" + options_.host + "]" : options_.host, ":",
      options_.port);
  auto server = http::Server::Start(
      std::move(options),
      [this](const http::ServerRequest& req, http::Responder& res) { Handle(req, res); });
  if (!server.ok()) {
    if (options_.port == 0) {
      return absl::UnavailableError(absl::StrCat("http: cannot listen on ", address));
    }
    return absl::UnavailableError(absl::StrCat(
        "http: cannot listen on ", address,
        " (in use, or not an address of this host); set http.listen, or \"\" to turn it off"));
  }
  server_ = *std::move(server);
  port_ = server_->port();
  Logger("http")->info("node {}: local HTTP on {} (/healthz, /metrics, /status)", options_.node_id,
                       address);
  return absl::OkStatus();
}

void LocalHttp::Stop() {
  if (server_ != nullptr) server_->Stop();
}

}  // namespace fleetwes::agent
