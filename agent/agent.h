// Wiring of fleetwes-agent from its config: collectors, sampler, frame queue and uplink, plus
// the one-window mode (--once). Kept out of agent_main.cc so tests can run it.
#ifndef FLEETWES_AGENT_AGENT_H_
#define FLEETWES_AGENT_AGENT_H_

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/collectors/collector.h"
#include "agent/config.h"
#include "agent/frame_queue.h"
#include "agent/local_http.h"
#include "agent/ollama_proxy.h"
#include "agent/sampler.h"
#include "agent/spool.h"
#include "agent/uplink.h"
#include "common/clock.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// One collector per configured engine, in config order. Discovered engines of a kind without a
// collector are skipped (logged). An Ollama engine's proxy and probe, when configured, start here
// and live as long as its collector; `clock` times them. Started proxies are added to `proxies`
// when given.
std::vector<std::unique_ptr<EngineCollector>> MakeEngineCollectors(
    const AgentConfig& config, Clock* clock = RealClock(), OllamaProxyRegistry* proxies = nullptr);

// A sampler for `config` reading engines and the Linux hardware under hardware.root.
std::unique_ptr<Sampler> MakeSampler(const AgentConfig& config, std::string boot_id, Clock* clock,
                                     OllamaProxyRegistry* proxies = nullptr);

// "config OK: node X, 1 engine (llamacpp a at http://...), 1 aggregator, interval 2s, ...".
std::string DescribeConfig(const AgentConfig& config);

// Takes one window: a baseline tick, a wait of `window` on `clock`, a second tick. Returns that
// window's frame. Needs no aggregator.
absl::StatusOr<v1::Frame> TakeOneWindow(Sampler& sampler, Clock* clock, absl::Duration window);

// The frame as one line of JSON (proto field names; optional values absent when not measured).
std::string FrameToJson(const v1::Frame& frame);

// Opens the spool `config` asks for (null when `spool.enabled` is false) for a new boot.
// FailedPrecondition naming the directory and the `spool.dir` key when it cannot be opened.
absl::StatusOr<std::unique_ptr<Spool>> OpenSpool(const AgentConfig& config,
                                                 const std::string& boot_id, Clock* clock);

// The running agent: sampler loop feeding the uplink through the frame queue, and the local
// HTTP surface (unless http.listen is ""). With discovery enabled, the constructor probes the
// configured ports (bounded by discovery.timeout per request) and adds what it finds; a thread
// probes again every discovery.interval and adds new engines to the running sampler.
class Agent {
 public:
  // Opens the spool (unless disabled) and wires everything; fails when the spool cannot be
  // opened (the agent must not run without the durability its config asks for).
  static absl::StatusOr<std::unique_ptr<Agent>> Create(const AgentConfig& config, Clock* clock);
  // `spool` null: unacknowledged frames are kept in memory only.
  Agent(const AgentConfig& config, Clock* clock, std::string boot_id, std::unique_ptr<Spool> spool);
  ~Agent();  // Stop()
  // Starts the local HTTP, then sampling. Unavailable when the HTTP address cannot be bound
  // (nothing is started then).
  absl::Status Start();
  // Prompt: stops sampling, then the uplinks; the spool (when configured) is flushed when the
  // agent is destroyed. Without a spool, unacknowledged frames are lost.
  void Stop();

  const std::string& boot_id() const { return boot_id_; }
  UplinkStats uplink_stats() const { return uplink_->stats(); }
  // The local HTTP server, or null when turned off.
  LocalHttp* local_http() { return local_http_.get(); }

 private:
  // Probes again every options.interval until Stop(); new engines join the sampler.
  void RunDiscovery(DiscoveryConfig options, Clock* clock);

  const std::string boot_id_;
  OllamaProxyRegistry ollama_proxies_;  // for /metrics; outlives the sampler's collectors
  std::unique_ptr<Sampler> sampler_;
  // Frames wait in the spool unless it is disabled, else in memory.
  MemoryFrameQueue memory_queue_;
  std::unique_ptr<Spool> spool_;
  FrameQueue* queue_ = &memory_queue_;
  // One uplink per earlier boot with frames left in the spool, replayed under that boot's id.
  std::vector<std::unique_ptr<SpoolBootView>> replay_queues_;
  std::vector<std::unique_ptr<Uplink>> replay_uplinks_;
  std::unique_ptr<Uplink> uplink_;
  std::unique_ptr<LocalHttp> local_http_;
  std::unique_ptr<SamplerLoop> loop_;
  std::once_flag uplink_started_;
  // Periodic discovery (when enabled): engines known so far, the thread and its stop signal.
  std::vector<EngineConfig> known_engines_;  // owned by the discovery thread once started
  absl::Notification stop_discovery_;
  std::thread discovery_thread_;
  DiscoveryConfig discovery_;
  Clock* const clock_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_AGENT_H_
