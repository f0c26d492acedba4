// Drives a simulated fleet against a fleetwes-aggregator: one Ingest.Publish stream per
// simulated node, all on gRPC's asynchronous API (a few completion queues with one thread each,
// no thread per node), one ticker thread that produces each node's frame when its window closes,
// spread evenly over the interval (frames due within 2 ms of each other on one wake-up). Frames
// are built on an arena each (one allocation, reused by the node's next frame once acknowledged);
// the streams of a connection share a completion queue. Each stream sends
// Hello, then frames with seq from 1; frames stay queued until a cumulative Ack covers them, and a
// reconnect (exponential backoff with jitter) resends what is not covered. Measures frames sent and
// acknowledged and the latency from sending a frame to the first Ack covering it.
#ifndef FLEETWES_AGENT_LOADGEN_LOAD_GENERATOR_H_
#define FLEETWES_AGENT_LOADGEN_LOAD_GENERATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace fleetwes::agent::loadgen {

namespace internal {
class LoadGeneratorImpl;
}  // namespace internal

struct LoadOptions {
  std::string target = "localhost:7470";
  int nodes = 12;                              // >= 1
  absl::Duration interval = absl::Seconds(2);  // > 0
  absl::Duration duration;                     // 0: until stopped
  uint64_t seed = 1;
  std::string node_prefix = "sim";
  int nodes_per_channel = 64;               // streams sharing one connection (>= 1)
  size_t max_queued_frames_per_node = 900;  // unacknowledged frames kept; oldest evicted beyond
  absl::Duration drain_timeout = absl::Seconds(5);  // at the end, wait this long for acks
};

struct LoadReport {
  int nodes = 0;
  double elapsed_s = 0;        // from the first frame window to the end of the drain
  uint64_t frames_sent = 0;    // distinct frames written at least once
  uint64_t frames_resent = 0;  // writes repeated after a reconnect
  uint64_t frames_acked = 0;   // distinct frames covered by an Ack
  uint64_t frames_rejected = 0;
  uint64_t frames_evicted = 0;  // dropped unacknowledged because a node's queue was full
  uint64_t connects = 0;
  uint64_t disconnects = 0;  // streams that ended with an error while running
  double acked_per_s = 0;
  double ack_p50_ms = 0;  // 0 when nothing was acknowledged
  double ack_p99_ms = 0;
  std::string last_error;  // the last stream error, empty if none
};

// InvalidArgument-style message for bad options, empty when they are usable.
std::string ValidateOptions(const LoadOptions& options);

// "sim-01" ... : node ids for `count` nodes, zero-padded to at least two digits.
std::string NodeId(const std::string& prefix, int index, int count);

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 for an empty input.
double Percentile(std::vector<double> values, double q);

// A multi-line human summary, and one JSON line with frames_sent, frames_acked, acked_per_s,
// ack_p50_ms, ack_p99_ms first, then the other counters.
std::string ReportText(const LoadReport& r);
std::string ReportJson(const LoadReport& r);

class LoadGenerator {
 public:
  // `clock` must outlive the generator. Options must pass ValidateOptions.
  LoadGenerator(LoadOptions options, Clock* clock);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Runs until `duration` has passed or `stop` is notified, then waits up to drain_timeout for
  // outstanding acks, closes every stream and returns the counters. Call once.
  LoadReport Run(absl::Notification* stop);

 private:
  std::unique_ptr<internal::LoadGeneratorImpl> impl_;
};

}  // namespace fleetwes::agent::loadgen

#endif  // FLEETWES_AGENT_LOADGEN_LOAD_GENERATOR_H_
