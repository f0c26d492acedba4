#include "agent/uplink.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "fleetwes/v1/ingest.grpc.pb.h"

namespace fleetwes::agent {
namespace {

constexpr size_t kSendBatch = 64;
constexpr absl::Duration kConnectPollSlice = absl::Milliseconds(100);

int ToMillis(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, INT32_MAX));
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const UplinkOptions& o) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ToMillis(o.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ToMillis(o.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  // A fresh subchannel per attempt: a shared one may still sit in its own reconnect backoff
  // after the aggregator came back.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // The uplink retries streams itself (backoff, failover, resend from the spool); gRPC's own
  // retries would only copy every frame into a per-call retry buffer.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // A few small messages per interval need no bandwidth probing: without it, reading an ack
  // does not trigger a BDP ping (a write and a wake-up on both ends).
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::chrono::system_clock::time_point RealDeadline(absl::Duration from_now) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(absl::ToInt64Microseconds(from_now));
}

}  // namespace

std::string ClassifyUplinkFailure(const absl::Status& status) {
  const absl::StatusCode code = status.code();
  if (code == absl::StatusCode::kUnauthenticated || code == absl::StatusCode::kPermissionDenied) {
    return "auth";
  }
  const std::string message = absl::AsciiStrToLower(status.message());
  auto mentions = [&message](std::initializer_list<absl::string_view> words) {
    for (absl::string_view w : words) {
      if (absl::StrContains(message, w)) return true;
    }
    return false;
  };
  if (mentions({"dns", "resolution", "resolve", "name not found", "unknown host"})) {
    return "resolution";
  }
  if (mentions({"ssl", "tls", "handshake", "certificate"})) return "tls";
  if (mentions({"connection refused"})) return "refused";
  if (code == absl::StatusCode::kDeadlineExceeded ||
      mentions({"unreachable", "no route", "timed out", "timeout"})) {
    return "unreachable";
  }
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kUnimplemented:
      return "rejected";
    case absl::StatusCode::kUnavailable:
      return "disconnected";
    default:
      return "other";
  }
}

Uplink::Uplink(UplinkOptions options, std::string boot_id, FrameQueue* queue, HelloProvider hello,
               Clock* clock)
    : options_(std::move(options)),
      boot_id_(std::move(boot_id)),
      queue_(queue),
      hello_(std::move(hello)),
      clock_(clock) {}

Uplink::~Uplink() { Stop(); }

void Uplink::Start() {
  if (thread_.joinable() || options_.addresses.empty()) return;
  thread_ = std::thread([this] { Run(); });
}

void Uplink::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (!stop_notification_.HasBeenNotified()) stop_notification_.Notify();
  if (thread_.joinable()) thread_.join();
  SetState("stopped");
}

void Uplink::SetState(std::string state) {
  absl::MutexLock lock(&mu_);
  stats_.state = std::move(state);
}

void Uplink::Enqueue(v1::Frame frame) {
  queue_->Push(std::move(frame));
  absl::MutexLock lock(&mu_);
  ++pushed_;
}

UplinkStats Uplink::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Uplink::Run() {
  auto log = Logger("uplink");
  Backoff backoff(options_.backoff);
  size_t index = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
    }
    const std::string& address = options_.addresses[index % options_.addresses.size()];
    {
      absl::MutexLock lock(&mu_);
      stats_.address = address;
      stats_.state = "connecting";
    }
    bool healthy = false;
    absl::Status s = RunStream(address, &healthy);
    {
      absl::MutexLock lock(&mu_);
      if (stop_) break;
    }
    if (healthy) backoff.Reset();
    absl::Duration delay = backoff.Next();
    const bool retryable = IsRetryable(s.code());
    if (!retryable) delay = std::max(delay, options_.non_retryable_delay);
    std::string error =
        absl::StrCat(address, ": ", absl::StatusCodeToString(s.code()), ": ", s.message());
    const std::string reason = ClassifyUplinkFailure(s);
    {
      absl::MutexLock lock(&mu_);
      ++stats_.stream_failures;
      if (!retryable) ++stats_.non_retryable_failures;
      ++stats_.failures_by_reason[reason];
      stats_.last_error = error;
      stats_.reason = reason;
      stats_.state = "backoff";
    }
    if (retryable) {
      log->warn("stream to {} ended ({}); retrying in {}", address, error,
                absl::FormatDuration(delay));
    } else {
      log->error("stream to {} refused ({}); this needs attention, retrying in {}", address, error,
                 absl::FormatDuration(delay));
    }
    ++index;  // fail over to the next configured aggregator
    if (clock_->WaitFor(delay, &stop_notification_)) break;
  }
}

absl::Status Uplink::RunStream(const std::string& address, bool* healthy) {
  auto log = Logger("uplink");
  std::shared_ptr<grpc::Channel> channel = MakeChannel(address, options_);

  // Connect with a deadline, polling in short slices so Stop() is prompt. A channel in
  // TRANSIENT_FAILURE goes on to open the stream: the call then fails at once with gRPC's own
  // account of the failure (resolution, refused, TLS), which ClassifyUplinkFailure reads.
  {
    const auto deadline = RealDeadline(options_.connect_timeout);
    grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY) {
      if (stop_notification_.HasBeenNotified()) return absl::CancelledError("stopping");
      if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) break;
      if (state == GRPC_CHANNEL_SHUTDOWN) return absl::UnavailableError("channel shut down");
      if (std::chrono::system_clock::now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("not connected within ", absl::FormatDuration(options_.connect_timeout)));
      }
      channel->WaitForStateChange(state, std::min(deadline, RealDeadline(kConnectPollSlice)));
      state = channel->GetState(/*try_to_connect=*/true);
    }
  }

  std::unique_ptr<v1::Ingest::StubInterface> stub = v1::Ingest::NewStub(channel);
  grpc::ClientContext context;
  uint64_t seen_pushed = 0;
  uint64_t sent = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::CancelledError("stopping");
    context_ = &context;
    stream_done_ = false;
    seen_pushed = pushed_;
    sent = stats_.acked_seq;  // everything not acknowledged is sent (again)
  }
  std::unique_ptr<grpc::ClientReaderWriterInterface<v1::PublishRequest, v1::PublishResponse>>
      stream = stub->Publish(&context);

  v1::PublishRequest hello;
  *hello.mutable_hello() = hello_();
  hello.mutable_hello()->set_evicted_frames(queue_->evicted());
  const absl::Time opened = clock_->Now();
  bool ok = stream->Write(hello);
  if (ok) {
    absl::MutexLock lock(&mu_);
    ++stats_.connects;
    stats_.connected = true;
    stats_.state = "connected";
    stats_.reason.clear();
    log->info("node {}: stream to {} open; resending from seq {}", hello.hello().node_id(), address,
              sent + 1);
  }

  std::thread reader([&] {
    v1::PublishResponse response;
    while (stream->Read(&response)) HandleResponse(response, healthy);
    absl::MutexLock lock(&mu_);
    stream_done_ = true;
  });

  bool stopping = false;
  while (ok) {
    std::vector<v1::Frame> batch = queue_->After(sent, kSendBatch);
    if (batch.empty()) {
      absl::MutexLock lock(&mu_);
      auto wake = [this, &seen_pushed]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || stream_done_ || pushed_ != seen_pushed;
      };
      mu_.Await(absl::Condition(&wake));
      if (stop_) stopping = true;
      if (stop_ || stream_done_) break;
      seen_pushed = pushed_;
      continue;
    }
    for (v1::Frame& frame : batch) {
      const uint64_t seq = frame.seq();
      v1::PublishRequest request;
      *request.mutable_frame() = std::move(frame);
      if (!stream->Write(request)) {
        ok = false;
        break;
      }
      sent = seq;
      absl::MutexLock lock(&mu_);
      ++stats_.frames_sent;
    }
    absl::MutexLock lock(&mu_);
    if (stop_) {
      stopping = true;
      break;
    }
  }
  // A failed write means the stream is broken: the reader sees it end and Finish() reports the
  // real status. Only a local stop cancels.
  if (stopping) context.TryCancel();
  reader.join();
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    stats_.connected = false;
  }
  if (clock_->Now() - opened >= options_.healthy_after) *healthy = true;
  if (stopping) return absl::CancelledError("stopping");
  if (status.ok()) return absl::UnavailableError("the aggregator closed the stream");
  return FromGrpcStatus(status);
}

void Uplink::HandleResponse(const v1::PublishResponse& response, bool* healthy) {
  auto log = Logger("uplink");
  if (response.has_ack()) {
    const v1::Ack& ack = response.ack();
    if (ack.boot_id() != boot_id_) {
      log->warn("ack for another boot ({} seq {}) ignored", ack.boot_id(), ack.seq());
      return;
    }
    queue_->AckUpTo(ack.seq());
    *healthy = true;
    absl::MutexLock lock(&mu_);
    ++stats_.acks;
    stats_.acked_seq = std::max(stats_.acked_seq, ack.seq());
  } else if (response.has_reject()) {
    const v1::Reject& r = response.reject();
    log->warn("frame seq {} (boot {}) rejected by the aggregator: {} {}: {}", r.seq(), r.boot_id(),
              absl::StatusCodeToString(static_cast<absl::StatusCode>(r.code())), r.field(),
              r.message());
    absl::MutexLock lock(&mu_);
    ++stats_.rejects;
  }
}

}  // namespace fleetwes::agent
