// Wiring of fleetwes-agent from its config: collectors, sampler, frame queue and uplink, plus
// the one-window mode (--once). Kept out of agent_main.cc so tests can run it.
#ifndef FLEETWES_AGENT_AGENT_H_
#define FLEETWES_AGENT_AGENT_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/collectors/collector.h"
#include "agent/config.h"
#include "agent/frame_queue.h"
#include "agent/sampler.h"
#include "agent/spool.h"
#include "agent/uplink.h"
#include "common/clock.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// One collector per configured engine, in config order. An Ollama engine's proxy and probe,
// when configured, start here and live as long as its collector; `clock` times them.
std::vector<std::unique_ptr<EngineCollector>> MakeEngineCollectors(const AgentConfig& config,
                                                                   Clock* clock = RealClock());

// A sampler for `config` reading engines and the Linux hardware under hardware.root.
std::unique_ptr<Sampler> MakeSampler(const AgentConfig& config, std::string boot_id, Clock* clock);

// "config OK: node X, 1 engine (llamacpp a at http://...), 1 aggregator, interval 2s, ...".
std::string DescribeConfig(const AgentConfig& config);

// Takes one window: a baseline tick, a wait of `window` on `clock`, a second tick. Returns that
// window's frame. Needs no aggregator.
absl::StatusOr<v1::Frame> TakeOneWindow(Sampler& sampler, Clock* clock, absl::Duration window);

// The frame as one line of JSON (proto field names; optional values absent when not measured).
std::string FrameToJson(const v1::Frame& frame);

// The running agent: sampler loop feeding the uplink through the frame queue.
class Agent {
 public:
  Agent(const AgentConfig& config, Clock* clock);
  ~Agent();  // Stop()
  void Start();
  // Prompt: stops sampling, then the uplinks; the spool (when configured) is flushed when the
  // agent is destroyed. Without a spool, unacknowledged frames are lost.
  void Stop();

  const std::string& boot_id() const { return boot_id_; }
  UplinkStats uplink_stats() const { return uplink_->stats(); }

 private:
  const std::string boot_id_;
  std::unique_ptr<Sampler> sampler_;
  // Frames wait in the spool when `spool:` is configured (and opens), else in memory.
  MemoryFrameQueue memory_queue_;
  std::unique_ptr<Spool> spool_;
  FrameQueue* queue_ = &memory_queue_;
  // One uplink per earlier boot with frames left in the spool, replayed under that boot's id.
  std::vector<std::unique_ptr<SpoolBootView>> replay_queues_;
  std::vector<std::unique_ptr<Uplink>> replay_uplinks_;
  std::unique_ptr<Uplink> uplink_;
  std::unique_ptr<SamplerLoop> loop_;
  std::once_flag uplink_started_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_AGENT_H_
