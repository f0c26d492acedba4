// The sampler: one tick reads every collector, turns the readings into the window since the
// previous tick (agent/window.h), attributes energy to models and computes WES (common/wes.h),
// and yields one v1::Frame per window. Time comes from the injected Clock: a window is exactly
// [previous tick, this tick]. SamplerLoop runs ticks on its own thread at an adaptive cadence
// (Cadence).
#ifndef FLEETWES_AGENT_SAMPLER_H_
#define FLEETWES_AGENT_SAMPLER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
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
  // Directory standing for "/" whose procfs maps engines to their processes (engine port ->
  // listening socket -> pid and descendants) to place models on GPUs by the GPUs' process
  // lists; empty disables the mapping.
  std::string proc_root;
  // How long a resolved (or failed) engine -> processes mapping is reused.
  absl::Duration process_refresh = absl::Seconds(30);
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
  // `cadence` is the interval the caller scheduled this tick with (Frame.interval_s); absent:
  // options().interval.
  std::optional<v1::Frame> Tick(std::optional<absl::Duration> cadence = std::nullopt);

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
    std::optional<EngineReading> baseline;   // last reading if it was available
    std::string down_reason;                 // logged reason while unavailable
    std::optional<std::set<int64_t>> pids;   // the engine's processes when resolved
    std::optional<absl::Time> pids_checked;  // when `pids` was last resolved or tried
  };

  // Starts the worker of `engine` and registers its status and read counters. Called only by the
  // sampling thread (or the constructor), which alone touches engines_.
  void AddWorker(std::unique_ptr<EngineCollector> engine) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The engine's processes, resolved at most every process_refresh; nullopt when unknown.
  const std::optional<std::set<int64_t>>& EnginePids(EngineState* e, absl::Time now);

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

// Adaptive sampling cadence (docs/agent.md, "Cadence"): from each frame, the interval until the
// next tick.
// - Change: a device's thermal state differs from the previous frame, or the node's decode tok/s
//   moved by more than kSharpChange against the previous window (including from or to 0):
//   the interval halves, from at most `base`, down to kMinInterval.
// - Idle: no decode tokens and nothing running or waiting in any model: the interval doubles,
//   from at least `base`, up to `max` (every window still yields a frame: the heartbeat).
// - Otherwise: a faster interval returns to `base` after kCalmWindows calm frames; a slower one
//   returns to `base` at once.
// Not thread-safe.
class Cadence {
 public:
  static constexpr absl::Duration kMinInterval = absl::Milliseconds(500);
  static constexpr double kSharpChange = 0.30;
  static constexpr int kCalmWindows = 3;

  // `max` below `base` is raised to `base`; `base` below kMinInterval is raised to it.
  Cadence(absl::Duration base, absl::Duration max);
  // Takes the frame of the window that just ended; returns the next interval.
  absl::Duration Next(const v1::Frame& frame);
  absl::Duration current() const { return current_; }

 private:
  const absl::Duration base_;
  const absl::Duration max_;
  absl::Duration current_;
  int calm_ = 0;
  bool have_previous_ = false;
  double previous_tps_ = 0;
  std::map<std::string, v1::ThermalState> previous_states_;
};

// Runs Sampler::Tick on its own thread at the Cadence's intervals (each tick scheduled at the
// previous scheduled tick + the interval; a tick that overran skips the slots it missed) and
// hands each frame to `sink` on the loop's thread. Windows stay contiguous whatever the cadence.
class SamplerLoop {
 public:
  using FrameSink = std::function<void(v1::Frame)>;
  // `interval`: the base cadence; `max_interval`: the slowest cadence while idle.
  SamplerLoop(Sampler* sampler, Clock* clock, absl::Duration interval, FrameSink sink,
              absl::Duration max_interval = absl::Seconds(30));
  ~SamplerLoop();  // Stop()
  void Start();
  // Prompt: interrupts the wait between ticks; an ongoing tick finishes first (bounded by the
  // engines' timeouts).
  void Stop();

 private:
  void Run();

  Sampler* const sampler_;
  Clock* const clock_;
  Cadence cadence_;  // used on the loop's thread only
  FrameSink sink_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_SAMPLER_H_
