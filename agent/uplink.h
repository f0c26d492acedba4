// The uplink: one long-lived Ingest.Publish stream to an aggregator. Sends Hello, then every
// queued frame; trims the FrameQueue on cumulative acks; logs and counts rejects. On a stream
// failure it reconnects with exponential backoff and jitter, moving to the next configured
// address, and resends every frame not yet acknowledged. Codes that retrying cannot fix
// (docs/protocol.md) are counted and retried slowly. Start()/Stop(); thread-safe.
#ifndef FLEETWES_AGENT_UPLINK_H_
#define FLEETWES_AGENT_UPLINK_H_

#include <grpcpp/client_context.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/frame_queue.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "fleetwes/v1/ingest.pb.h"

namespace fleetwes::agent {

struct UplinkOptions {
  std::vector<std::string> addresses;  // host:port, tried in order, round robin on failure
  absl::Duration connect_timeout = absl::Seconds(5);
  BackoffOptions backoff;  // between attempts after a retryable failure
  // Minimum wait after a failure that retrying cannot fix (bad Hello, credentials).
  absl::Duration non_retryable_delay = absl::Seconds(60);
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // A stream that lived this long (or got an ack) resets the backoff.
  absl::Duration healthy_after = absl::Seconds(10);
};

struct UplinkStats {
  uint64_t connects = 0;     // streams opened (Hello sent)
  uint64_t frames_sent = 0;  // including resends
  uint64_t acks = 0;
  uint64_t rejects = 0;
  uint64_t stream_failures = 0;  // streams that ended or failed to open
  uint64_t non_retryable_failures = 0;
  uint64_t acked_seq = 0;  // highest cumulative ack of this boot
  bool connected = false;
  std::string last_error;  // the last failure, for status surfaces
  // The aggregator being connected to (or last tried); "" before the first attempt.
  std::string address;
  // "idle" (not started), "connecting", "connected", "backoff" (waiting after a failure),
  // "stopped".
  std::string state = "idle";
  // Why the uplink is not connected: the category of the last failure (ClassifyUplinkFailure),
  // "" while connected or before any failure.
  std::string reason;
  // stream_failures by category.
  std::map<std::string, uint64_t> failures_by_reason;
};

// The category of a failed stream, from its status code and message (gRPC reports connect
// errors as UNAVAILABLE with the resolver's or socket's words in the message):
//   "auth"        UNAUTHENTICATED or PERMISSION_DENIED
//   "resolution"  the name did not resolve (message mentions DNS / resolution / resolve)
//   "tls"         the message mentions SSL, TLS, handshake or certificate
//   "refused"     "Connection refused"
//   "unreachable" DEADLINE_EXCEEDED (connect deadline), or "unreachable", "no route", "timed
//                 out", "timeout" in the message
//   "rejected"    the aggregator refused the stream: INVALID_ARGUMENT, FAILED_PRECONDITION,
//                 ALREADY_EXISTS, OUT_OF_RANGE, NOT_FOUND, UNIMPLEMENTED
//   "disconnected" any other UNAVAILABLE (the stream broke or the aggregator went away)
//   "other"       anything else
// The first matching rule wins, in this order.
std::string ClassifyUplinkFailure(const absl::Status& status);

class Uplink {
 public:
  // Supplies the Hello for each new stream (evicted_frames is filled by the uplink).
  using HelloProvider = std::function<v1::Hello()>;

  // `queue` and `clock` must outlive the uplink. `boot_id` is the one acks must carry.
  Uplink(UplinkOptions options, std::string boot_id, FrameQueue* queue, HelloProvider hello,
         Clock* clock);
  ~Uplink();  // Stop()
  Uplink(const Uplink&) = delete;
  Uplink& operator=(const Uplink&) = delete;

  void Start();
  // Prompt: cancels the stream and interrupts connect and backoff waits.
  void Stop();

  // Queues `frame` and wakes the sender.
  void Enqueue(v1::Frame frame);

  UplinkStats stats() const;

 private:
  void Run();
  // One connection attempt and stream; returns how it ended.
  absl::Status RunStream(const std::string& address, bool* healthy);
  void SetState(std::string state) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleResponse(const v1::PublishResponse& response, bool* healthy);

  const UplinkOptions options_;
  const std::string boot_id_;
  FrameQueue* const queue_;
  const HelloProvider hello_;
  Clock* const clock_;
  absl::Notification stop_notification_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t pushed_ ABSL_GUARDED_BY(mu_) = 0;  // frames enqueued, to wake the sender
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  UplinkStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_UPLINK_H_
