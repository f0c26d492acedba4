#include "agent/agent.h"

#include <google/protobuf/util/json_util.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/collectors/linux_hw.h"
#include "agent/collectors/llamacpp.h"
#include "agent/collectors/nvml.h"
#include "agent/collectors/ollama.h"
#include "agent/collectors/sglang.h"
#include "agent/collectors/vllm.h"
#include "agent/discovery.h"
#include "agent/ollama_probe.h"
#include "agent/ollama_proxy.h"
#include "common/logging.h"

namespace fleetwes::agent {

namespace {

// The collector of an Ollama engine with its proxy and probe when configured. A proxy that
// cannot listen is logged and left out: the engine is still read for residency.
std::unique_ptr<EngineCollector> MakeOllamaCollector(const EngineConfig& e, Clock* clock,
                                                     OllamaProxyRegistry* proxies) {
  std::shared_ptr<OllamaProxy> proxy;
  if (e.proxy.enabled) {
    OllamaProxyOptions options;
    options.listen = e.proxy.listen;
    options.upstream_url = e.url;
    options.max_request_bytes = static_cast<size_t>(e.proxy.max_request_bytes);
    absl::StatusOr<std::unique_ptr<OllamaProxy>> started =
        OllamaProxy::Start(std::move(options), clock);
    if (started.ok()) {
      proxy = *std::move(started);
      if (proxies != nullptr) proxies->Add(e.name, proxy);
      Logger("agent")->info("engine {}: ollama proxy on port {} forwards to {}", e.name,
                            proxy->port(), e.url);
    } else {
      Logger("agent")->error("engine {}: ollama proxy not started: {}", e.name,
                             std::string(started.status().message()));
    }
  }
  std::shared_ptr<OllamaProbe> probe;
  if (e.probe.enabled) {
    OllamaProbeOptions options;
    options.engine_url = e.url;
    options.config = e.probe;
    probe = std::make_shared<OllamaProbe>(std::move(options), proxy ? &proxy->traffic() : nullptr,
                                          clock);
    probe->Start();
  }
  auto collector = std::make_unique<OllamaCollector>(e, proxy ? &proxy->traffic() : nullptr,
                                                     probe ? &probe->traffic() : nullptr);
  if (proxy) collector->Own(proxy);
  if (probe) collector->Own(probe);  // released first: the probe reads the proxy's traffic
  return collector;
}

}  // namespace

std::vector<std::unique_ptr<EngineCollector>> MakeEngineCollectors(const AgentConfig& config,
                                                                   Clock* clock,
                                                                   OllamaProxyRegistry* proxies) {
  std::vector<std::unique_ptr<EngineCollector>> out;
  for (const EngineConfig& e : config.engines) {
    switch (e.kind) {
      case v1::ENGINE_KIND_LLAMACPP:
        out.push_back(std::make_unique<LlamaCppCollector>(e));
        break;
      case v1::ENGINE_KIND_VLLM:
        out.push_back(std::make_unique<VllmCollector>(e));
        break;
      case v1::ENGINE_KIND_SGLANG:
        out.push_back(std::make_unique<SglangCollector>(e));
        break;
      case v1::ENGINE_KIND_OLLAMA:
        out.push_back(MakeOllamaCollector(e, clock, proxies));
        break;
      default:
        if (e.discovered) {
          Logger("agent")->info("discovered engine {} at {}: no collector for kind {}; skipped",
                                e.name, e.url, EngineKindName(e.kind));
          break;
        }
        // The config rejects other kinds; reaching this is a bug.
        Logger("agent")->critical("engine {}: kind {} has no collector", e.name,
                                  EngineKindName(e.kind));
        std::abort();
    }
  }
  return out;
}

std::unique_ptr<Sampler> MakeSampler(const AgentConfig& config, std::string boot_id, Clock* clock,
                                     OllamaProxyRegistry* proxies) {
  SamplerOptions options;
  options.node_id = config.node_id;
  options.boot_id = std::move(boot_id);
  options.labels = config.labels;
  options.interval = config.interval;
  options.pue = config.pue;
  options.penalties = config.thermal_penalties;
  options.proc_root = config.hardware.root;
  std::vector<std::unique_ptr<HardwareCollector>> hardware;
  hardware.push_back(std::make_unique<LinuxHwCollector>(config.hardware.root));
  if (config.hardware.nvml) {
    hardware.push_back(std::make_unique<NvmlCollector>(config.hardware.nvml_library));
  }
  return std::make_unique<Sampler>(std::move(options), MakeEngineCollectors(config, clock, proxies),
                                   std::make_unique<CombinedHardwareCollector>(std::move(hardware)),
                                   clock);
}

std::string DescribeConfig(const AgentConfig& config) {
  std::vector<std::string> engines;
  for (const EngineConfig& e : config.engines) {
    engines.push_back(
        absl::StrCat(std::string(EngineKindName(e.kind)), " ", e.name, " at ", e.url));
  }
  return absl::StrCat("config OK: node ", config.node_id, ", ", config.engines.size(),
                      config.engines.size() == 1 ? " engine" : " engines",
                      engines.empty() ? "" : absl::StrCat(" (", absl::StrJoin(engines, ", "), ")"),
                      ", ", config.aggregators.size(),
                      config.aggregators.size() == 1 ? " aggregator" : " aggregators", " (",
                      absl::StrJoin(config.aggregators, ", "), "), interval ",
                      absl::FormatDuration(config.interval), ", pue ", config.pue,
                      ", hardware root ", config.hardware.root, ", spool ",
                      config.spool.enabled ? config.spool.dir : "off (memory only)");
}

absl::StatusOr<v1::Frame> TakeOneWindow(Sampler& sampler, Clock* clock, absl::Duration window) {
  const absl::Time start = clock->Now();
  if (sampler.Tick().has_value()) {
    return absl::FailedPreconditionError("the sampler already had a baseline");
  }
  clock->WaitUntil(start + window, nullptr);
  std::optional<v1::Frame> frame = sampler.Tick();
  if (!frame.has_value()) {
    return absl::InternalError("no frame: the clock did not advance across the window");
  }
  return *std::move(frame);
}

std::string FrameToJson(const v1::Frame& frame) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  auto s = google::protobuf::util::MessageToJsonString(frame, &json, options);
  if (!s.ok()) return "{\"error\":\"frame not printable as JSON\"}";
  return json;
}

absl::StatusOr<std::unique_ptr<Spool>> OpenSpool(const AgentConfig& config,
                                                 const std::string& boot_id, Clock* clock) {
  if (!config.spool.enabled) return nullptr;
  SpoolOptions options;
  options.dir = config.spool.dir;
  options.node_id = config.node_id;
  options.boot_id = boot_id;
  options.max_bytes = static_cast<uint64_t>(config.spool.max_bytes);
  options.fsync_interval = config.spool.fsync_interval;
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(std::move(options), clock);
  if (!spool.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open the spool directory ", config.spool.dir,
        " (config key spool.dir): ", spool.status().message(),
        "; point spool.dir at a writable directory, or set spool: {enabled: false} to keep "
        "unacknowledged frames in memory only"));
  }
  return spool;
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(const AgentConfig& config, Clock* clock) {
  std::string boot_id = NewBootId();
  absl::StatusOr<std::unique_ptr<Spool>> spool = OpenSpool(config, boot_id, clock);
  if (!spool.ok()) return spool.status();
  return std::make_unique<Agent>(config, clock, std::move(boot_id), *std::move(spool));
}

Agent::Agent(const AgentConfig& configured, Clock* clock, std::string boot_id,
             std::unique_ptr<Spool> spool)
    : boot_id_(std::move(boot_id)),
      spool_(std::move(spool)),
      discovery_(configured.discovery),
      clock_(clock) {
  AgentConfig config = configured;
  if (config.discovery.enabled) {
    for (EngineConfig& e : DiscoverEngines(config.discovery, config.engines)) {
      config.engines.push_back(std::move(e));
    }
    known_engines_ = config.engines;
  }
  sampler_ = MakeSampler(config, boot_id_, clock, &ollama_proxies_);
  UplinkOptions options;
  options.addresses = config.aggregators;
  Sampler* sampler = sampler_.get();
  if (spool_ != nullptr) {
    queue_ = spool_.get();
    for (const std::string& boot : spool_->PendingBoots()) {
      replay_queues_.push_back(std::make_unique<SpoolBootView>(spool_.get(), boot));
      replay_uplinks_.push_back(std::make_unique<Uplink>(
          options, boot, replay_queues_.back().get(),
          [sampler, boot] {
            v1::Hello hello = sampler->Hello();
            hello.set_boot_id(boot);
            return hello;
          },
          clock));
    }
  }
  uplink_ = std::make_unique<Uplink>(
      std::move(options), boot_id_, queue_, [sampler] { return sampler->Hello(); }, clock);
  if (!config.http.listen.empty()) {
    LocalHttpOptions http;
    if (absl::Status s = ParseListenAddress(config.http.listen, &http.host, &http.port); !s.ok()) {
      // The config validated the address; reaching this is a bug.
      Logger("agent")->critical("http.listen: {}", std::string(s.message()));
      std::abort();
    }
    http.node_id = config.node_id;
    http.boot_id = boot_id_;
    http.interval = config.interval;
    http.spool_enabled = spool_ != nullptr;
    if (spool_ != nullptr) http.spool_dir = spool_->dir();
    LocalHttpSources sources;
    sources.uplink = [this] { return uplink_->stats(); };
    sources.queue = [this] {
      QueueDepth d;
      if (spool_ != nullptr) {
        const SpoolStats s = spool_->stats();
        d.frames = s.pending;
        d.bytes = s.bytes;
        d.evicted = s.evicted;
      } else {
        d.frames = memory_queue_.size();
        d.evicted = memory_queue_.evicted();
      }
      return d;
    };
    sources.engine_reads = [sampler] { return sampler->engine_read_counters(); };
    sources.engines = [sampler] {
      const v1::Hello hello = sampler->Hello();
      return std::vector<v1::EngineStatus>(hello.engines().begin(), hello.engines().end());
    };
    sources.ollama_proxies = [this] { return ollama_proxies_.Stats(); };
    local_http_ = std::make_unique<LocalHttp>(std::move(http), std::move(sources), clock);
  }
  // The uplink starts with the first frame, so its Hello carries the device inventory.
  loop_ = std::make_unique<SamplerLoop>(
      sampler_.get(), clock, config.interval,
      [this](v1::Frame f) {
        if (local_http_ != nullptr) local_http_->PublishFrame(f);
        uplink_->Enqueue(std::move(f));
        std::call_once(uplink_started_, [this] {
          uplink_->Start();
          for (auto& replay : replay_uplinks_) replay->Start();
        });
      },
      config.max_interval);
}

Agent::~Agent() { Stop(); }

absl::Status Agent::Start() {
  if (local_http_ != nullptr) {
    if (absl::Status s = local_http_->Start(); !s.ok()) return s;
  }
  loop_->Start();
  if (discovery_.enabled && !discovery_thread_.joinable()) {
    discovery_thread_ = std::thread([this] { RunDiscovery(discovery_, clock_); });
  }
  return absl::OkStatus();
}

void Agent::RunDiscovery(DiscoveryConfig options, Clock* clock) {
  while (!clock->WaitFor(options.interval, &stop_discovery_)) {
    for (EngineConfig& e : DiscoverEngines(options, known_engines_, &stop_discovery_)) {
      AgentConfig one;
      one.engines = {e};
      for (auto& collector : MakeEngineCollectors(one, clock_, &ollama_proxies_)) {
        sampler_->AddEngine(std::move(collector));
      }
      known_engines_.push_back(std::move(e));
    }
  }
}

void Agent::Stop() {
  if (!stop_discovery_.HasBeenNotified()) stop_discovery_.Notify();
  if (discovery_thread_.joinable()) discovery_thread_.join();
  loop_->Stop();
  uplink_->Stop();
  for (auto& replay : replay_uplinks_) replay->Stop();
  if (local_http_ != nullptr) local_http_->Stop();
}

}  // namespace fleetwes::agent
