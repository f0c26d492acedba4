// A simulated node: produces the Hello and the frames a fleetwes-agent on that hardware would
// send, with measurement noise, thermal throttling episodes (the vendor's own signals: NVML
// clocks event masks, trip points, hwmon limits, Apple pressure levels) and swapping episodes.
// WES is computed with fleetwes::ComputeWes, like the agent does. Deterministic: the same seed,
// profile, start and interval give the same frames. Not thread-safe (one owner).
#ifndef FLEETWES_AGENT_LOADGEN_SIM_NODE_H_
#define FLEETWES_AGENT_LOADGEN_SIM_NODE_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/time/time.h"
#include "agent/loadgen/profiles.h"
#include "fleetwes/v1/ingest.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent::loadgen {

struct SimNodeOptions {
  std::string node_id;
  std::string boot_id;
  HardwareProfile profile;
  uint64_t seed = 1;  // mixed with node_id: nodes differ, runs repeat
  absl::Duration interval = absl::Seconds(2);
  absl::Time start = absl::UnixEpoch();  // window_start of frame 1
};

class SimNode {
 public:
  explicit SimNode(SimNodeOptions options);

  // The Hello that opens a stream: identity, labels, inventory, configured engine.
  v1::Hello MakeHello(uint64_t evicted_frames) const;

  // The next frame: seq 1, 2, ...; window [start + (seq-1)*interval, start + seq*interval].
  v1::Frame NextFrame();
  // The same into `out` (cleared first), which may live on an arena: the load generator builds
  // each frame on its own arena, one allocation per frame.
  void NextFrame(v1::Frame* out);

  const std::string& node_id() const { return options_.node_id; }
  uint64_t last_seq() const { return seq_; }
  absl::Time next_window_end() const { return options_.start + options_.interval * (seq_ + 1); }

 private:
  double Uniform();        // [0, 1)
  double Gaussian();       // N(0, 1)
  void AdvanceEpisodes();  // thermal and swap state for the next window

  SimNodeOptions options_;
  std::mt19937_64 rng_;
  uint64_t seq_ = 0;
  v1::ThermalState thermal_ = v1::THERMAL_STATE_NORMAL;
  int thermal_frames_left_ = 0;
  int swap_frames_left_ = 0;
  double temperature_c_;
  uint64_t energy_counter_uj_ = 0;
};

}  // namespace fleetwes::agent::loadgen

#endif  // FLEETWES_AGENT_LOADGEN_SIM_NODE_H_
