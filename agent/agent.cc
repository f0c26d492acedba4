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
#include "agent/ollama_probe.h"
#include "agent/ollama_proxy.h"
#include "common/logging.h"

namespace fleetwes::agent {

namespace {

// The collector of an Ollama engine with its proxy and probe when configured. A proxy that
// cannot listen is logged and left out: the engine is still read for residency.
std::unique_ptr<EngineCollector> MakeOllamaCollector(const EngineConfig& e, Clock* clock) {
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
                                                                   Clock* clock) {
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
        out.push_back(MakeOllamaCollector(e, clock));
        break;
      default:
        // The config rejects other kinds; reaching this is a bug.
        Logger("agent")->critical("engine {}: kind {} has no collector", e.name,
                                  EngineKindName(e.kind));
        std::abort();
    }
  }
  return out;
}

std::unique_ptr<Sampler> MakeSampler(const AgentConfig& config, std::string boot_id, Clock* clock) {
  SamplerOptions options;
  options.node_id = config.node_id;
  options.boot_id = std::move(boot_id);
  options.labels = config.labels;
  options.interval = config.interval;
  options.pue = config.pue;
  options.penalties = config.thermal_penalties;
  std::vector<std::unique_ptr<HardwareCollector>> hardware;
  hardware.push_back(std::make_unique<LinuxHwCollector>(config.hardware.root));
  if (config.hardware.nvml) {
    hardware.push_back(std::make_unique<NvmlCollector>(config.hardware.nvml_library));
  }
  return std::make_unique<Sampler>(std::move(options), MakeEngineCollectors(config, clock),
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
                      ", hardware root ", config.hardware.root);
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

Agent::Agent(const AgentConfig& config, Clock* clock) : boot_id_(NewBootId()) {
  sampler_ = MakeSampler(config, boot_id_, clock);
  UplinkOptions options;
  options.addresses = config.aggregators;
  Sampler* sampler = sampler_.get();
  if (config.spool.enabled) {
    SpoolOptions spool_options;
    spool_options.dir = config.spool.dir;
    spool_options.node_id = config.node_id;
    spool_options.boot_id = boot_id_;
    spool_options.max_bytes = static_cast<uint64_t>(config.spool.max_bytes);
    spool_options.fsync_interval = config.spool.fsync_interval;
    absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(std::move(spool_options), clock);
    if (spool.ok()) {
      spool_ = *std::move(spool);
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
    } else {
      Logger("agent")->error("{}; keeping unacknowledged frames in memory only",
                             std::string(spool.status().message()));
    }
  }
  uplink_ = std::make_unique<Uplink>(
      std::move(options), boot_id_, queue_, [sampler] { return sampler->Hello(); }, clock);
  // The uplink starts with the first frame, so its Hello carries the device inventory.
  loop_ =
      std::make_unique<SamplerLoop>(sampler_.get(), clock, config.interval, [this](v1::Frame f) {
        uplink_->Enqueue(std::move(f));
        std::call_once(uplink_started_, [this] {
          uplink_->Start();
          for (auto& replay : replay_uplinks_) replay->Start();
        });
      });
}

Agent::~Agent() { Stop(); }

void Agent::Start() { loop_->Start(); }

void Agent::Stop() {
  loop_->Stop();
  uplink_->Stop();
  for (auto& replay : replay_uplinks_) replay->Stop();
}

}  // namespace fleetwes::agent
