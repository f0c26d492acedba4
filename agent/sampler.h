// The sampler: one tick reads every collector, turns the readings into the window since the
// previous tick (agent/window.h), attributes energy to models and computes WES (common/wes.h),
// and yields one v1::Frame per window. Time comes from the injected Clock: a window is exactly
// [previous tick, this tick]. SamplerLoop runs ticks at a fixed cadence on its own thread.
#ifndef FLEETWES_AGENT_SAMPLER_H_
#define FLEETWES_AGENT_SAMPLER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/collectors/collector.h"
#include "common/clock.h"
#include "common/wes.h"
#include "fleetwes/v1/ingest.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

struct SamplerOptions {
  std::string node_id;
  std::string boot_id;
  std::map<std::string, std::string> labels;
  absl::Duration interval = absl::Seconds(2);
  double pue = 1.0;
  ThermalPenalties penalties;
  // Extra real time granted to an engine read beyond its own timeout before it is given up.
  absl::Duration engine_grace = absl::Milliseconds(200);
};

// Per-engine read outcomes since start.
struct EngineReadCounters {
  std::string engine_id;
  uint64_t failed = 0;    // reads that ended unavailable (given up ones included)
  uint64_t given_up = 0;  // reads not finished within the engine's timeout
};

// A fresh boot id: 128 random bits as a UUID-formatted string (version 4 layout).
std::string NewBootId();

namespace internal {
class EngineWorker;
}  // namespace internal

// Tick() is called from one thread at a time; Hello() and the counters are thread-safe.
class Sampler {
 public:
  // `hardware` may be null (no hardware source). `clock` must outlive the sampler.
  Sampler(SamplerOptions options, std::vector<std::unique_ptr<EngineCollector>> engines,
          std::unique_ptr<HardwareCollector> hardware, Clock* clock);
  ~Sampler();  // waits for engine reads still running (each bounded by its timeout)
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Reads every collector at clock->Now(): engines concurrently, each waited for at most its
  // timeout (plus the grace), so one hung engine cannot hold the frame back longer than that;
  // it is reported unavailable instead. Returns the frame of the window since the previous
  // tick (seq 1, 2, ...), or nullopt on the first tick, which only sets baselines (also after
  // the clock went backwards).
  std::optional<v1::Frame> Tick();

  // Identity and static inventory for the uplink's Hello: devices seen at the last tick
  // (identity fields only), configured engines with their last status. evicted_frames is left
  // for the uplink to fill.
  v1::Hello Hello() const;

  const SamplerOptions& options() const { return options_; }
  uint64_t engine_reads_given_up() const;
  // One entry per configured engine, in config order. Thread-safe.
  std::vector<EngineReadCounters> engine_read_counters() const;

  // Adds an engine (discovered while running); it is read from the next tick on, and its first
  // reading only sets its baseline. Thread-safe.
  void AddEngine(std::unique_ptr<EngineCollector> engine);

 private:
  struct EngineState {
    std::unique_ptr<internal::EngineWorker> worker;
    std::optional<EngineReading> baseline;  // last reading if it was available
    std::string down_reason;                // logged reason while unavailable
  };

  v1::Frame BuildFrame(absl::Time start, absl::Time end, const std::vector<EngineReading>& now,
                       const HardwareReading& hw);

  const SamplerOptions options_;
  std::unique_ptr<HardwareCollector> hardware_;
  Clock* const clock_;
  std::vector<EngineState> engines_;
  std::optional<HardwareReading> hw_baseline_;
  std::optional<absl::Time> last_tick_;
  uint64_t seq_ = 0;

  mutable absl::Mutex mu_;
  std::vector<v1::Device> inventory_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::EngineStatus> engine_status_ ABSL_GUARDED_BY(mu_);
  uint64_t reads_given_up_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<EngineReadCounters> read_counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<EngineCollector>> added_ ABSL_GUARDED_BY(mu_);
};

// Runs Sampler::Tick every interval (ticks at start + k × interval; a tick that overran skips
// the slots it missed) and hands each frame to `sink` on the loop's thread.
class SamplerLoop {
 public:
  using FrameSink = std::function<void(v1::Frame)>;
  SamplerLoop(Sampler* sampler, Clock* clock, absl::Duration interval, FrameSink sink);
  ~SamplerLoop();  // Stop()
  void Start();
  // Prompt: interrupts the wait between ticks; an ongoing tick finishes first (bounded by the
  // engines' timeouts).
  void Stop();

 private:
  void Run();

  Sampler* const sampler_;
  Clock* const clock_;
  const absl::Duration interval_;
  FrameSink sink_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_SAMPLER_H_
