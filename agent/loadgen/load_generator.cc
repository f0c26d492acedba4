#include "agent/loadgen/load_generator.h"

#include <grpcpp/alarm.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/async_stream.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <random>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "agent/loadgen/profiles.h"
#include "agent/loadgen/sim_node.h"
#include "common/backoff.h"
#include "common/logging.h"
#include "common/request_block.h"
#include "fleetwes/v1/ingest.grpc.pb.h"

namespace fleetwes::agent::loadgen {

std::string ValidateOptions(const LoadOptions& o) {
  if (o.target.empty()) return "--target must not be empty";
  if (o.nodes < 1 || o.nodes > 100000) return "--nodes must be between 1 and 100000";
  if (o.interval < absl::Milliseconds(10) || o.interval > absl::Hours(1)) {
    return "--interval must be between 10ms and 1h";
  }
  if (o.duration < absl::ZeroDuration()) return "--duration must not be negative";
  if (o.node_prefix.empty() || o.node_prefix.size() > 100) {
    return "--node_prefix must have 1 to 100 characters";
  }
  if (o.nodes_per_channel < 1) return "nodes per channel must be at least 1";
  if (o.max_queued_frames_per_node < 1) return "the per-node queue must hold at least 1 frame";
  return "";
}

std::string NodeId(const std::string& prefix, int index, int count) {
  int width = 2;
  for (int c = count; c >= 100; c /= 10) ++width;
  return absl::StrFormat("%s-%0*d", prefix, width, index + 1);
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  q = std::clamp(q, 0.0, 1.0);
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  if (rank == 0) rank = 1;
  return values[rank - 1];
}

std::string ReportText(const LoadReport& r) {
  std::string out = absl::StrFormat(
      "fleetwes-loadgen: %d nodes, %.1fs\n"
      "  frames sent      %d (resent %d after reconnects)\n"
      "  frames acked     %d (%.1f per second)\n"
      "  frames rejected  %d\n"
      "  frames evicted   %d\n"
      "  ack latency      p50 %.1f ms, p99 %.1f ms (send to the cumulative ack covering it)\n"
      "  streams          %d opened, %d ended with an error\n",
      r.nodes, r.elapsed_s, r.frames_sent, r.frames_resent, r.frames_acked, r.acked_per_s,
      r.frames_rejected, r.frames_evicted, r.ack_p50_ms, r.ack_p99_ms, r.connects, r.disconnects);
  if (!r.last_error.empty()) absl::StrAppend(&out, "  last error       ", r.last_error, "\n");
  return out;
}

std::string ReportJson(const LoadReport& r) {
  nlohmann::ordered_json j;
  j["frames_sent"] = r.frames_sent;
  j["frames_acked"] = r.frames_acked;
  j["acked_per_s"] = r.acked_per_s;
  j["ack_p50_ms"] = r.ack_p50_ms;
  j["ack_p99_ms"] = r.ack_p99_ms;
  j["nodes"] = r.nodes;
  j["elapsed_s"] = r.elapsed_s;
  j["frames_resent"] = r.frames_resent;
  j["frames_rejected"] = r.frames_rejected;
  j["frames_evicted"] = r.frames_evicted;
  j["connects"] = r.connects;
  j["disconnects"] = r.disconnects;
  j["last_error"] = r.last_error;
  return j.dump();
}

namespace {

class Session;

// A frame's request on its own arena (common/request_block.h). Once its frame is acknowledged a
// block is kept by its node and Reset() for the node's next frame: in steady state a node builds
// every frame into the same block.
using FrameBlock = RequestBlock;

// A frame waiting for its ack. The block is shared with a session writing it.
struct PendingFrame {
  uint64_t seq = 0;
  std::shared_ptr<FrameBlock> block;
  std::optional<absl::Time> first_sent;
};

// One simulated node and its connection state.
struct Node {
  std::string node_id;
  std::string boot_id;
  std::unique_ptr<SimNode> sim;  // used by the ticker thread only
  v1::Ingest::Stub* stub = nullptr;
  grpc::CompletionQueue* cq = nullptr;  // of the node's shard
  v1::Hello hello;                      // fixed part of the Hello

  absl::Mutex mu;
  std::deque<PendingFrame> unacked ABSL_GUARDED_BY(mu);
  // The block of an acknowledged frame, for the next frame (references are copied and dropped
  // under mu only, so use_count() == 1 there means no one else holds it).
  std::shared_ptr<FrameBlock> spare ABSL_GUARDED_BY(mu);
  size_t next_write ABSL_GUARDED_BY(mu) = 0;       // index into unacked for the current session
  uint64_t acked_through ABSL_GUARDED_BY(mu) = 0;  // the highest seq an ack covered
  Session* session ABSL_GUARDED_BY(mu) = nullptr;
  std::unique_ptr<Backoff> backoff ABSL_GUARDED_BY(mu);
  std::unique_ptr<grpc::Alarm> alarm ABSL_GUARDED_BY(mu);
  bool alarm_armed ABSL_GUARDED_BY(mu) = false;
  uint64_t evicted ABSL_GUARDED_BY(mu) = 0;
  std::vector<double> ack_ms ABSL_GUARDED_BY(mu);
};

}  // namespace

namespace internal {
class LoadGeneratorImpl {
 public:
  LoadGeneratorImpl(LoadOptions options, Clock* clock);
  LoadReport Run(absl::Notification* stop);

  // Callbacks from sessions and alarms.
  void OnResponse(Node* node, const v1::PublishResponse& resp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(node->mu);
  void OnSessionDone(Node* node, const grpc::Status& status);
  void OnFrameWritten(bool first_time) {
    (first_time ? frames_sent_ : frames_resent_).fetch_add(1, std::memory_order_relaxed);
  }
  void CallbackFinished() {
    absl::MutexLock l(&state_mu_);
    --callbacks_pending_;
  }
  Clock* clock() const { return clock_; }

 private:
  void ConnectLocked(Node* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(node->mu);
  // Builds the node's next frame and queues it for sending.
  void ProduceFrame(Node* node);
  // Per frame and per ack: an atomic, so that the streams do not contend for state_mu_. Only
  // when the count reaches zero is state_mu_ taken, to let a drain waiting on it look again.
  void AddUnacked(int64_t delta) {
    if (unacked_total_.fetch_add(delta, std::memory_order_acq_rel) + delta <= 0) {
      absl::MutexLock l(&state_mu_);
    }
  }
  void AddPending(int delta) {
    absl::MutexLock l(&state_mu_);
    callbacks_pending_ += delta;
  }
  void LogStreamError(const Node& node, const grpc::Status& status);
  bool AwaitState(const std::function<bool()>& done, absl::Duration timeout);

  const LoadOptions options_;
  Clock* const clock_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::Ingest::Stub>> stubs_;
  // The streams' completion queues, one thread each; nodes are spread over them.
  std::vector<std::unique_ptr<grpc::CompletionQueue>> queues_;
  std::vector<std::thread> queue_threads_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::shared_ptr<spdlog::logger> log_;

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> frames_sent_{0}, frames_resent_{0}, frames_acked_{0}, frames_rejected_{0},
      connects_{0}, disconnects_{0};

  absl::Mutex state_mu_;  // after any Node::mu
  std::atomic<int64_t> unacked_total_{0};
  int callbacks_pending_ ABSL_GUARDED_BY(state_mu_) = 0;  // live sessions + armed alarms
  absl::Time last_error_log_ ABSL_GUARDED_BY(state_mu_) = absl::InfinitePast();
  int suppressed_errors_ ABSL_GUARDED_BY(state_mu_) = 0;
  int rejects_logged_ ABSL_GUARDED_BY(state_mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(state_mu_);
};
}  // namespace internal

namespace {

// One Ingest.Publish stream of one node, on gRPC's asynchronous API: its operations complete on
// the completion queue of the node's shard, whose thread calls OnEvent. Created and started under
// node->mu; all its state is guarded by node->mu. Deletes itself once its status is in and no
// operation is pending.
//
// Why not the callback API: every callback stream keeps an operation pending on the process's
// one shared completion queue for its whole life (its status), and Debian's gRPC checks every
// completion against the list of pending operations, so with 20,000 streams each completion
// scanned 20,000 entries (a quarter of the load generator's CPU by perf). Here a stream has an
// operation pending only while it writes, or reads because frames it wrote wait for their ack
// (nothing else comes from the server before the status). A stream the server ended while idle is
// noticed by its next write; then its status is asked for.
class Session {
 public:
  enum class Op { kStart, kWrite, kRead, kWritesDone, kFinish };
  struct Tag {
    Session* session;
    Op op;
  };

  Session(internal::LoadGeneratorImpl* gen, Node* node, grpc::CompletionQueue* cq)
      : gen_(gen), node_(node), cq_(cq) {}

  void BeginLocked(v1::PublishRequest hello) ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    hello_ = std::move(hello);
    stream_ = node_->stub->PrepareAsyncPublish(&ctx_, cq_);
    starting_ = true;
    ++pending_;
    stream_->StartCall(&start_tag_);
  }

  // Writes the next queued frame if no write is in flight.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    if (starting_ || writing_ || closing_) return;
    if (node_->next_write >= node_->unacked.size()) return;
    PendingFrame& pf = node_->unacked[node_->next_write++];
    const bool first = !pf.first_sent.has_value();
    if (first) pf.first_sent = gen_->clock()->Now();
    gen_->OnFrameWritten(first);
    in_flight_ = pf.block;
    written_through_ = pf.seq;
    StartWriteLocked(std::as_const(*in_flight_).request());
    ReadIfAwaitingLocked();
  }

  // Half-closes the stream once the current write is done; the server then ends it.
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    closing_ = true;
    AdvanceCloseLocked();
  }

  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    closing_ = true;
    failed_ = true;
    ctx_.TryCancel();
    AdvanceCloseLocked();
  }

  // A completion from the shard's thread.
  void OnEvent(Op op, bool ok) {
    internal::LoadGeneratorImpl* gen = gen_;
    Node* node = node_;
    {
      absl::MutexLock l(&node_->mu);
      --pending_;
      switch (op) {
        case Op::kStart:
          starting_ = false;
          if (!ok) {
            failed_ = true;
          } else if (!closing_) {
            StartWriteLocked(hello_);
          }
          break;
        case Op::kWrite:
          writing_ = false;
          in_flight_.reset();
          if (!ok) {
            failed_ = true;
          } else {
            PumpLocked();
          }
          break;
        case Op::kRead:
          reading_ = false;
          if (!ok) {
            failed_ = true;
          } else {
            gen_->OnResponse(node_, response_);
            ReadIfAwaitingLocked();
          }
          break;
        case Op::kWritesDone:
          writes_done_pending_ = false;
          break;
        case Op::kFinish:
          finished_ = true;
          break;
      }
      if (failed_) closing_ = true;
      AdvanceCloseLocked();
      if (!finished_ || pending_ > 0) return;
    }
    gen->OnSessionDone(node, status_);
    delete this;
    gen->CallbackFinished();
  }

 private:
  void StartWriteLocked(const v1::PublishRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    writing_ = true;
    ++pending_;
    stream_->Write(request, &write_tag_);
  }

  // Starts a read if frames written on this stream wait for an ack and none is pending; also
  // while half-closing, so that the acks still coming are taken and the status can arrive.
  void ReadIfAwaitingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    if (starting_ || reading_ || failed_ || written_through_ <= node_->acked_through) return;
    reading_ = true;
    ++pending_;
    stream_->Read(&response_, &read_tag_);
  }

  // Once closing and no write is in flight: half-close (unless the stream failed), then ask for
  // the status. A pending read ends with the call.
  void AdvanceCloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(node_->mu) {
    if (!closing_ || starting_ || writing_ || finish_called_) return;
    if (!failed_ && !writes_done_) {
      writes_done_ = true;
      writes_done_pending_ = true;
      ++pending_;
      stream_->WritesDone(&writes_done_tag_);
      return;
    }
    if (writes_done_pending_) return;
    finish_called_ = true;
    ++pending_;
    stream_->Finish(&status_, &finish_tag_);
  }

  internal::LoadGeneratorImpl* const gen_;
  Node* const node_;
  grpc::CompletionQueue* const cq_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::PublishRequest, v1::PublishResponse>> stream_;
  Tag start_tag_{this, Op::kStart};
  Tag write_tag_{this, Op::kWrite};
  Tag read_tag_{this, Op::kRead};
  Tag writes_done_tag_{this, Op::kWritesDone};
  Tag finish_tag_{this, Op::kFinish};
  v1::PublishRequest hello_;
  v1::PublishResponse response_;
  std::shared_ptr<FrameBlock> in_flight_;
  grpc::Status status_;
  int pending_ = 0;  // operations started and not completed
  bool starting_ = false;
  bool writing_ = false;
  bool reading_ = false;
  bool closing_ = false;
  bool failed_ = false;
  bool writes_done_ = false;
  bool writes_done_pending_ = false;
  bool finish_called_ = false;
  bool finished_ = false;
  uint64_t written_through_ = 0;  // the highest seq written on this stream
};

// Runs the completions of one shard's queue until it is shut down and drained.
void PollQueue(grpc::CompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    auto* t = static_cast<Session::Tag*>(tag);
    t->session->OnEvent(t->op, ok);
  }
}

// Completion queues (and threads) for the streams: one per core of the machine this was tuned on.
constexpr int kQueues = 2;

std::string MakeBootId(uint64_t seed, const std::string& node_id, absl::Time start) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : node_id) h = (h ^ c) * 1099511628211ull;
  std::mt19937_64 rng(seed ^ h ^ static_cast<uint64_t>(absl::ToUnixNanos(start)));
  const uint64_t a = rng(), b = rng();
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", a >> 32, (a >> 16) & 0xffff, a & 0xfff,
                         0x8000 | ((b >> 48) & 0x3fff), b & 0xffffffffffffull);
}

std::chrono::system_clock::time_point ToChrono(absl::Time t) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(absl::ToUnixNanos(t))));
}

}  // namespace

internal::LoadGeneratorImpl::LoadGeneratorImpl(LoadOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock), log_(Logger("loadgen")) {
  const int channels =
      (options_.nodes + options_.nodes_per_channel - 1) / options_.nodes_per_channel;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5'000);
    channels_.push_back(
        grpc::CreateCustomChannel(options_.target, grpc::InsecureChannelCredentials(), args));
    stubs_.push_back(v1::Ingest::NewStub(channels_.back()));
  }
}

void internal::LoadGeneratorImpl::ConnectLocked(Node* node) {
  auto* session = new Session(this, node, node->cq);
  node->session = session;
  node->next_write = 0;
  AddPending(1);
  connects_.fetch_add(1, std::memory_order_relaxed);
  v1::PublishRequest hello;
  *hello.mutable_hello() = node->hello;
  hello.mutable_hello()->set_evicted_frames(node->evicted);
  session->BeginLocked(std::move(hello));
}

void internal::LoadGeneratorImpl::OnResponse(Node* node, const v1::PublishResponse& resp) {
  if (resp.has_ack()) {
    const v1::Ack& ack = resp.ack();
    if (ack.boot_id() != node->boot_id) return;
    node->acked_through = std::max(node->acked_through, ack.seq());
    const absl::Time now = clock_->Now();
    int64_t covered = 0;
    while (!node->unacked.empty() && node->unacked.front().seq <= ack.seq()) {
      PendingFrame& pf = node->unacked.front();
      if (pf.first_sent.has_value()) {
        node->ack_ms.push_back(absl::ToDoubleMilliseconds(now - *pf.first_sent));
      }
      if (node->spare == nullptr && pf.block.use_count() == 1) node->spare = std::move(pf.block);
      node->unacked.pop_front();
      if (node->next_write > 0) --node->next_write;
      ++covered;
    }
    if (covered > 0) {
      frames_acked_.fetch_add(covered, std::memory_order_relaxed);
      AddUnacked(-covered);
      node->backoff->Reset();
    }
  } else if (resp.has_reject()) {
    frames_rejected_.fetch_add(1, std::memory_order_relaxed);
    const v1::Reject& r = resp.reject();
    absl::MutexLock l(&state_mu_);
    if (rejects_logged_++ < 10) {
      log_->warn("{} seq {} rejected: code {} field {}: {}", node->node_id, r.seq(), r.code(),
                 r.field(), r.message());
    }
  }
}

void internal::LoadGeneratorImpl::LogStreamError(const Node& node, const grpc::Status& status) {
  const std::string msg = absl::StrCat("code ", status.error_code(), ": ", status.error_message());
  absl::MutexLock l(&state_mu_);
  last_error_ = msg;
  const absl::Time now = clock_->Now();
  if (now - last_error_log_ < absl::Seconds(5)) {
    ++suppressed_errors_;
    return;
  }
  log_->warn("{}: stream to {} ended ({}); reconnecting with backoff{}", node.node_id,
             options_.target, msg,
             suppressed_errors_ > 0
                 ? absl::StrCat(" (", suppressed_errors_, " more since last report)")
                 : std::string());
  suppressed_errors_ = 0;
  last_error_log_ = now;
}

void internal::LoadGeneratorImpl::OnSessionDone(Node* node, const grpc::Status& status) {
  absl::MutexLock l(&node->mu);
  node->session = nullptr;
  node->next_write = 0;
  if (stopping_.load()) return;
  disconnects_.fetch_add(1, std::memory_order_relaxed);
  LogStreamError(*node, status);
  const absl::Duration delay = node->backoff->Next();
  node->alarm = std::make_unique<grpc::Alarm>();
  node->alarm_armed = true;
  AddPending(1);
  node->alarm->Set(ToChrono(clock_->Now() + delay), [this, node](bool ok) {
    {
      absl::MutexLock l(&node->mu);
      node->alarm_armed = false;
      if (ok && !stopping_.load() && node->session == nullptr) ConnectLocked(node);
    }
    CallbackFinished();
  });
}

void internal::LoadGeneratorImpl::ProduceFrame(Node* node) {
  std::shared_ptr<FrameBlock> block;
  {
    absl::MutexLock l(&node->mu);
    block = std::move(node->spare);
  }
  if (block != nullptr) {
    block->Reset();
  } else {
    block = std::make_shared<FrameBlock>();
  }
  node->sim->NextFrame(block->request()->mutable_frame());
  const uint64_t seq = block->request()->frame().seq();
  absl::MutexLock l(&node->mu);
  node->unacked.push_back(PendingFrame{seq, std::move(block), std::nullopt});
  int64_t delta = 1;
  while (node->unacked.size() > options_.max_queued_frames_per_node) {
    node->unacked.pop_front();
    if (node->next_write > 0) --node->next_write;
    ++node->evicted;
    --delta;
  }
  AddUnacked(delta);
  if (node->session != nullptr) node->session->PumpLocked();
}

bool internal::LoadGeneratorImpl::AwaitState(const std::function<bool()>& done,
                                             absl::Duration timeout) {
  absl::MutexLock l(&state_mu_);
  auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_) { return done(); };
  return state_mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
}

LoadReport internal::LoadGeneratorImpl::Run(absl::Notification* stop) {
  const auto& profiles = BuiltinProfiles();
  const absl::Time start = clock_->Now();
  for (int i = 0; i < kQueues; ++i) {
    queues_.push_back(std::make_unique<grpc::CompletionQueue>());
    queue_threads_.emplace_back(PollQueue, queues_.back().get());
  }
  nodes_.reserve(options_.nodes);
  for (int i = 0; i < options_.nodes; ++i) {
    auto node = std::make_unique<Node>();
    node->node_id = NodeId(options_.node_prefix, i, options_.nodes);
    node->boot_id = MakeBootId(options_.seed, node->node_id, start);
    node->stub = stubs_[i / options_.nodes_per_channel].get();
    // All streams of a connection on one queue: the acks one read of the connection delivers
    // wake one queue thread, not both.
    node->cq = queues_[(i / options_.nodes_per_channel) % kQueues].get();
    SimNodeOptions so;
    so.node_id = node->node_id;
    so.boot_id = node->boot_id;
    so.profile = profiles[i % profiles.size()];
    so.seed = options_.seed;
    so.interval = options_.interval;
    // Windows are staggered so the fleet's frames arrive evenly over the interval.
    so.start = start + options_.interval * (static_cast<double>(i) / options_.nodes);
    node->sim = std::make_unique<SimNode>(std::move(so));
    node->hello = node->sim->MakeHello(0);
    {
      absl::MutexLock l(&node->mu);
      node->backoff = std::make_unique<Backoff>(
          BackoffOptions{.initial = absl::Milliseconds(200), .max = absl::Seconds(10)},
          options_.seed + i + 1);
    }
    nodes_.push_back(std::move(node));
  }
  for (auto& node : nodes_) {
    absl::MutexLock l(&node->mu);
    ConnectLocked(node.get());
  }
  log_->info("{} simulated nodes publishing to {} every {}", options_.nodes, options_.target,
             absl::FormatDuration(options_.interval));

  // Ticker: the node whose window closes next produces its frame.
  using Due = std::pair<absl::Time, size_t>;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
  for (size_t i = 0; i < nodes_.size(); ++i) due.emplace(nodes_[i]->sim->next_window_end(), i);
  const absl::Time end =
      options_.duration > absl::ZeroDuration() ? start + options_.duration : absl::InfiniteFuture();
  // Frames due within kTick of each other are produced on one wake-up (up to kTick before their
  // window closes): at 20,000 frames/s one wake-up per frame would cost the load generator more
  // than producing them.
  constexpr absl::Duration kTick = absl::Milliseconds(2);
  absl::Time awake_until = absl::InfinitePast();
  while (!due.empty()) {
    auto [when, index] = due.top();
    if (when > end) break;
    if (when > awake_until) {
      if (clock_->WaitUntil(when, stop)) break;
      awake_until = clock_->Now() + kTick;
    }
    due.pop();
    Node* node = nodes_[index].get();
    ProduceFrame(node);
    due.emplace(node->sim->next_window_end(), index);
  }

  // Drain: give outstanding frames a chance to be acknowledged.
  AwaitState([this]() { return unacked_total_.load(std::memory_order_acquire) <= 0; },
             options_.drain_timeout);
  const absl::Time drained = clock_->Now();

  // Close: half-close every stream, then cancel what has not ended.
  stopping_.store(true);
  for (auto& node : nodes_) {
    absl::MutexLock l(&node->mu);
    if (node->alarm_armed) node->alarm->Cancel();
    if (node->session != nullptr) node->session->FinishLocked();
  }
  auto all_done = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_) { return callbacks_pending_ == 0; };
  if (!AwaitState(all_done, absl::Seconds(2))) {
    for (auto& node : nodes_) {
      absl::MutexLock l(&node->mu);
      if (node->session != nullptr) node->session->CancelLocked();
    }
    AwaitState(all_done, absl::InfiniteDuration());
  }
  for (auto& q : queues_) q->Shutdown();
  for (std::thread& t : queue_threads_) t.join();

  LoadReport r;
  r.nodes = options_.nodes;
  r.elapsed_s = std::max(1e-9, absl::ToDoubleSeconds(drained - start));
  r.frames_sent = frames_sent_.load();
  r.frames_resent = frames_resent_.load();
  r.frames_acked = frames_acked_.load();
  r.frames_rejected = frames_rejected_.load();
  r.connects = connects_.load();
  r.disconnects = disconnects_.load();
  r.acked_per_s = static_cast<double>(r.frames_acked) / r.elapsed_s;
  std::vector<double> latencies;
  for (auto& node : nodes_) {
    absl::MutexLock l(&node->mu);
    r.frames_evicted += node->evicted;
    latencies.insert(latencies.end(), node->ack_ms.begin(), node->ack_ms.end());
  }
  r.ack_p50_ms = Percentile(latencies, 0.50);
  r.ack_p99_ms = Percentile(std::move(latencies), 0.99);
  {
    absl::MutexLock l(&state_mu_);
    r.last_error = last_error_;
  }
  return r;
}

LoadGenerator::LoadGenerator(LoadOptions options, Clock* clock)
    : impl_(std::make_unique<internal::LoadGeneratorImpl>(std::move(options), clock)) {}
LoadGenerator::~LoadGenerator() = default;
LoadReport LoadGenerator::Run(absl::Notification* stop) { return impl_->Run(stop); }

}  // namespace fleetwes::agent::loadgen
