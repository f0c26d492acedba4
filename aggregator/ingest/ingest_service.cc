#include "aggregator/ingest/ingest_service.h"

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/ingest/ack_tracker.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/ingest/validate.h"
#include "aggregator/store/pg_status.h"
#include "common/logging.h"
#include "common/request_block.h"

namespace fleetwes::aggregator {

namespace {

// One read's message (common/request_block.h). A frame handed on (to the writer, then the fleet
// state while it is its node's latest) keeps its whole buffer alive through an aliasing shared_ptr.
using ReadBuffer = RequestBlock;

// One Publish stream. Lifetime: gRPC holds one reference until OnDone; every writer callback
// (frame completion, queue-space notification) holds one more. The last release deletes it, so
// callbacks arriving after the RPC ended are safe and simply ignored.
//
// gRPC operations (StartRead/StartWrite/Finish) are never started with mu_ held: each handler
// decides under mu_ what to start and starts it after unlocking.
class PublishReactor final
    : public grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse> {
 public:
  PublishReactor(const IngestService::Deps& deps, grpc::CallbackServerContext* context)
      : deps_(deps), log_(Logger("ingest")), peer_(context->peer()) {
    deps_.metrics->streams().Increment();
    v1::PublishRequest* first;
    {
      absl::MutexLock lock(&mu_);
      first = read_->request();
    }
    StartRead(first);
  }

  void OnReadDone(bool ok) override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        read_done_ = true;
      } else {
        HandleRequest(&fx);
      }
      Pump(&fx);
      if (fx.start_read) fx.read_into = NextReadLocked();
    }
    Apply(fx);
  }

  void OnWriteDone(bool ok) override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) {
        // The peer is gone; nothing more can be sent.
        outbox_.clear();
        ack_ahead_.reset();
        FailLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed"));
      }
      Pump(&fx);
    }
    Apply(fx);
  }

  void OnCancel() override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      outbox_.clear();
      ack_ahead_.reset();
      FailLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      Pump(&fx);
    }
    Apply(fx);
  }

  void OnDone() override {
    deps_.metrics->streams().Decrement();
    {
      absl::MutexLock lock(&mu_);
      if (!node_id_.empty()) {
        log_->info("stream of {} (boot {}) ended: {}", node_id_, boot_id_,
                   finish_status_.ok() ? std::string("ok") : finish_status_.error_message());
      }
    }
    Release();
  }

 private:
  // What to start once mu_ is released.
  struct Effects {
    bool start_read = false;
    v1::PublishRequest* read_into = nullptr;  // with start_read
    const v1::PublishResponse* start_write = nullptr;
    std::optional<grpc::Status> finish;
  };

  // A submission waiting for room in the writer's queue.
  struct Parked {
    std::optional<NodeRecord> node;
    std::optional<FrameRecord> frame;
    Writer::FrameCallback done;
  };

  void Apply(const Effects& fx) {
    if (fx.start_write != nullptr) StartWrite(fx.start_write);
    if (fx.finish.has_value()) Finish(*fx.finish);
    if (fx.start_read) StartRead(fx.read_into);
  }

  // The message the next read goes into: the last one's buffer when nothing else holds it (a
  // hello, a refused frame), else a new one.
  v1::PublishRequest* NextReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_.use_count() == 1) {
      read_->Reset();
    } else {
      read_ = std::make_shared<ReadBuffer>();
    }
    return read_->request();
  }

  void Release() {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  // Ends the stream with `status` once what is being written is flushed. The first failure wins.
  void FailLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_) return;
    finish_wanted_ = true;
    finish_status_ = std::move(status);
  }

  // Starts the next write, or finishes the stream when there is nothing left to do.
  void Pump(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_ || write_in_flight_) return;
    if (ack_ahead_.has_value()) {
      // The ack message of the stream is reused: no allocation per ack.
      v1::Ack* ack = ack_write_.mutable_ack();
      ack->set_boot_id(boot_id_);
      ack->set_seq(*ack_ahead_);
      ack_ahead_.reset();
      write_in_flight_ = true;
      fx->start_write = &ack_write_;
      return;
    }
    if (!outbox_.empty()) {
      current_write_ = std::move(outbox_.front());
      outbox_.pop_front();
      write_in_flight_ = true;
      fx->start_write = &current_write_;
      return;
    }
    if (finish_wanted_) {
      finish_called_ = true;
      fx->finish = finish_status_;
      fx->start_read = false;
    } else if (read_done_ && tracker_.in_flight() == 0 && !parked_.has_value()) {
      finish_called_ = true;
      fx->finish = grpc::Status::OK;
    }
  }

  void QueueAckLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::optional<uint64_t> ack = tracker_.TakeAck();
    if (!ack.has_value()) return;
    // Coalesce with an ack not yet sent: cumulative acks supersede each other.
    if (outbox_.empty()) {
      ack_ahead_ = *ack;
      return;
    }
    if (outbox_.back().has_ack()) {
      outbox_.back().mutable_ack()->set_seq(*ack);
      return;
    }
    v1::PublishResponse r;
    r.mutable_ack()->set_boot_id(boot_id_);
    r.mutable_ack()->set_seq(*ack);
    outbox_.push_back(std::move(r));
  }

  void QueueRejectLocked(const std::string& boot_id, uint64_t seq, absl::StatusCode code,
                         std::string field, std::string message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::PublishResponse r;
    v1::Reject* reject = r.mutable_reject();
    reject->set_boot_id(boot_id);
    reject->set_seq(seq);
    reject->set_code(static_cast<int32_t>(code));
    reject->set_field(std::move(field));
    reject->set_message(std::move(message));
    outbox_.push_back(std::move(r));
  }

  void HandleRequest(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_) return;  // draining towards Finish: read nothing more
    if (read_->request()->has_hello()) {
      HandleHello(fx);
    } else if (read_->request()->has_frame()) {
      HandleFrame(fx);
    } else {
      deps_.metrics->streams_refused_protocol().Increment();
      FailLocked(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "message: neither a hello nor a frame"));
    }
  }

  void HandleHello(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const v1::Hello& hello = read_->request()->hello();
    if (!node_id_.empty()) {
      deps_.metrics->streams_refused_protocol().Increment();
      FailLocked(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello: sent twice on one stream"));
      return;
    }
    if (absl::Status s = ValidateHello(hello); !s.ok()) {
      deps_.metrics->streams_refused_hello().Increment();
      log_->warn("refused hello from {}: {}", peer_, std::string(s.message()));
      FailLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
      return;
    }
    node_id_ = hello.node_id();
    boot_id_ = hello.boot_id();
    const absl::Time now = deps_.clock->Now();
    log_->info("stream from {} for node {} (boot {}, agent {})", peer_, node_id_, boot_id_,
               hello.agent_version());
    deps_.state->ApplyHello(hello, now);
    NodeRecord record;
    record.node_id = node_id_;
    record.boot_id = boot_id_;
    record.agent_version = hello.agent_version();
    record.labels =
        std::map<std::string, std::string>(hello.labels().begin(), hello.labels().end());
    record.interval_s = hello.interval_s();
    record.hello = hello.SerializeAsString();
    record.seen_at = now;
    Parked parked;
    parked.node = std::move(record);
    Submit(std::move(parked), fx);
  }

  void HandleFrame(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (node_id_.empty()) {
      deps_.metrics->streams_refused_protocol().Increment();
      FailLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "hello: the first message of a stream must be a hello"));
      return;
    }
    // Shares the read buffer (no copy of the parsed frame).
    std::shared_ptr<v1::Frame> frame(read_, read_->request()->mutable_frame());
    const absl::Time now = deps_.clock->Now();
    FrameContext ctx{node_id_,
                     boot_id_,
                     frame->ByteSizeLong(),
                     deps_.options.max_frame_bytes,
                     now,
                     now - deps_.options.max_frame_age};
    std::optional<Rejection> rejection = ValidateFrame(*frame, ctx);
    if (!rejection.has_value() && frame->seq() <= tracker_.last_seq()) {
      rejection = Rejection{
          RejectReason::kSeq, "seq",
          absl::StrCat("seq ", frame->seq(), " is not above the previous seq of this stream (",
                       tracker_.last_seq(), ")")};
    }
    if (!rejection.has_value()) rejection = deps_.cardinality->Admit(*frame, now);
    if (rejection.has_value()) {
      deps_.metrics->CountRejected(rejection->reason);
      log_->warn("rejected frame {}/{}/{}: {}: {}", node_id_, frame->boot_id(), frame->seq(),
                 rejection->field, rejection->message);
      QueueRejectLocked(frame->boot_id(), frame->seq(), absl::StatusCode::kInvalidArgument,
                        rejection->field, rejection->message);
      // A refused frame of this boot is done for good: the next ack covers it.
      if (rejection->reason != RejectReason::kKeyMismatch) {
        tracker_.Add(frame->seq(), /*done=*/true);
        QueueAckLocked();
      }
      fx->start_read = true;
      return;
    }
    RecomputeWes(deps_.options.penalties, frame.get());
    const uint64_t seq = frame->seq();
    tracker_.Add(seq, /*done=*/false);
    Parked parked;
    parked.frame = FrameRecord{frame, frame->SerializeAsString(), now};
    ++refs_;  // held by the completion callback
    parked.done = [this, frame = std::shared_ptr<const v1::Frame>(frame), now](
                      Writer::Outcome outcome, const absl::Status& status) mutable {
      OnFrameDone(std::move(frame), now, outcome, status);
    };
    Submit(std::move(parked), fx);
  }

  // Offers `p` to the writer; parks it (and stops reading) while the queue is full.
  void Submit(Parked p, Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++refs_;  // held by the ready callback if one gets registered
    Writer::ReadyCallback ready = [this] { OnWriterReady(); };
    Writer::SubmitResult r = p.frame.has_value()
                                 ? deps_.writer->TrySubmitFrame(*p.frame, p.done, std::move(ready))
                                 : deps_.writer->TrySubmitNode(*p.node, std::move(ready));
    switch (r) {
      case Writer::SubmitResult::kAccepted:
        --refs_;  // no ready callback registered
        fx->start_read = true;
        return;
      case Writer::SubmitResult::kQueueFull:
        parked_ = std::move(p);
        return;
      case Writer::SubmitResult::kStopped:
        --refs_;
        if (p.done) --refs_;  // the completion callback will never run
        deps_.metrics->streams_ended_unavailable().Increment();
        FailLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "aggregator is shutting down"));
        return;
    }
  }

  void OnWriterReady() {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      if (parked_.has_value()) {
        Parked p = std::move(*parked_);
        parked_.reset();
        if (finish_wanted_) {
          if (p.done) --refs_;  // dropped unsubmitted
        } else {
          Submit(std::move(p), &fx);
        }
      }
      if (finish_wanted_) fx.start_read = false;
      Pump(&fx);
      if (fx.start_read) fx.read_into = NextReadLocked();
    }
    Apply(fx);
    Release();
  }

  void OnFrameDone(std::shared_ptr<const v1::Frame> frame, absl::Time received_at,
                   Writer::Outcome outcome, const absl::Status& status) {
    if (outcome == Writer::Outcome::kCommitted) {
      deps_.metrics->frames_committed().Increment();
      deps_.state->ApplyFrame(frame, received_at);
    } else if (outcome == Writer::Outcome::kDuplicate) {
      deps_.metrics->frames_duplicate().Increment();
      deps_.state->ApplyFrame(frame, received_at);
    }
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      if (!finish_wanted_) {
        if (outcome != Writer::Outcome::kFailed) {
          tracker_.MarkDone(frame->seq());
        } else if (IsTransientStoreError(status)) {
          // Not stored, not refused: end the stream unacknowledged; the agent resends.
          deps_.metrics->streams_ended_unavailable().Increment();
          FailLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  absl::StrCat("frames could not be stored: ", status.message())));
        } else {
          deps_.metrics->CountRejected(RejectReason::kStore);
          QueueRejectLocked(frame->boot_id(), frame->seq(), status.code(), "frame",
                            std::string(status.message()));
          tracker_.MarkDone(frame->seq());
        }
        QueueAckLocked();
      }
      Pump(&fx);
    }
    Apply(fx);
    Release();
  }

  const IngestService::Deps& deps_;
  const std::shared_ptr<spdlog::logger> log_;
  const std::string peer_;

  absl::Mutex mu_;
  // The buffer of the current (or last) read; one read at a time.
  std::shared_ptr<ReadBuffer> read_ ABSL_GUARDED_BY(mu_) = std::make_shared<ReadBuffer>();
  int refs_ ABSL_GUARDED_BY(mu_) = 1;         // gRPC's, released in OnDone
  std::string node_id_ ABSL_GUARDED_BY(mu_);  // set by a valid Hello
  std::string boot_id_ ABSL_GUARDED_BY(mu_);
  AckTracker tracker_ ABSL_GUARDED_BY(mu_);
  std::optional<Parked> parked_ ABSL_GUARDED_BY(mu_);
  // Responses to send, oldest first; an ack coalesced while nothing else waits goes in ack_ahead_
  // instead and is sent before all of outbox_ (so the common case builds no message).
  std::optional<uint64_t> ack_ahead_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::PublishResponse> outbox_ ABSL_GUARDED_BY(mu_);
  v1::PublishResponse ack_write_ ABSL_GUARDED_BY(mu_);      // written from ack_ahead_
  v1::PublishResponse current_write_ ABSL_GUARDED_BY(mu_);  // written from outbox_
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

IngestService::IngestService(Writer* writer, FleetState* state, Clock* clock,
                             AggregatorMetrics* metrics, IngestOptions options)
    : cardinality_(options.cardinality),
      deps_{writer, state, clock, metrics, std::move(options), &cardinality_} {}

grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse>* IngestService::Publish(
    grpc::CallbackServerContext* context) {
  return new PublishReactor(deps_, context);
}

}  // namespace fleetwes::aggregator
