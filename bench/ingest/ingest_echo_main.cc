// fleetwes-ingest-echo: the transport ceiling of Ingest.Publish (bench/ingest, transport phase).
// An Ingest server that does what fleetwes-aggregator's transport does and nothing else: the same
// gRPC server set-up (callback API, health and reflection services, message size limit, keepalive
// channel arguments), one bidirectional reactor per stream, the Hello checked with the
// aggregator's ValidateHello, every frame parsed into a v1::Frame by gRPC and acknowledged at once
// with a cumulative Ack, acks coalesced while a write is in flight as the aggregator's
// PublishReactor does. No validation of frames beyond seq order, no storage, no fleet state.
//
// On SIGUSR1 it prints one line "acked=<frames> streams=<open streams>" to stdout (flushed), so a
// script can read the frames acknowledged over a span; SIGTERM or SIGINT stop it.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <deque>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/ingest/validate.h"
#include "common/malloc_tuning.h"
#include "fleetwes/v1/ingest.grpc.pb.h"
#include "tests/support/tool_main.h"

ABSL_FLAG(int, port, 0, "Port on 127.0.0.1; 0 picks a free one (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here (atomically, once listening).");

namespace {

namespace v1 = fleetwes::v1;

// Process-wide counts, read on SIGUSR1.
struct Counts {
  std::atomic<uint64_t> acked{0};   // frames covered by acks whose write completed
  std::atomic<int64_t> streams{0};  // open streams
};

// One Publish stream, shaped like the aggregator's PublishReactor: gRPC operations are decided
// under mu_ and started after unlocking; one write in flight, acks queued meanwhile coalesce into
// one. The frame is acknowledged as soon as it is read (the aggregator waits for the database).
// Deletes itself in OnDone.
class EchoReactor final : public grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse> {
 public:
  explicit EchoReactor(Counts* counts) : counts_(counts) {
    counts_->streams.fetch_add(1, std::memory_order_relaxed);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        read_done_ = true;
      } else {
        HandleRequestLocked(&fx);
      }
      PumpLocked(&fx);
    }
    Apply(fx);
  }

  void OnWriteDone(bool ok) override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (ok) {
        counts_->acked.fetch_add(current_covers_, std::memory_order_relaxed);
      } else {
        outbox_.clear();
        FailLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed"));
      }
      PumpLocked(&fx);
    }
    Apply(fx);
  }

  void OnCancel() override {
    Effects fx;
    {
      absl::MutexLock lock(&mu_);
      outbox_.clear();
      FailLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      PumpLocked(&fx);
    }
    Apply(fx);
  }

  void OnDone() override {
    counts_->streams.fetch_sub(1, std::memory_order_relaxed);
    delete this;
  }

 private:
  struct Effects {
    bool start_read = false;
    const v1::PublishResponse* start_write = nullptr;
    std::optional<grpc::Status> finish;
  };
  // An ack waiting to be written, and how many frames it newly covers.
  struct Outgoing {
    v1::PublishResponse response;
    uint64_t covers = 0;
  };

  void Apply(const Effects& fx) {
    if (fx.start_write != nullptr) StartWrite(fx.start_write);
    if (fx.finish.has_value()) Finish(*fx.finish);
    if (fx.start_read) StartRead(&request_);
  }

  void FailLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_) return;
    finish_wanted_ = true;
    finish_status_ = std::move(status);
  }

  void PumpLocked(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_ || write_in_flight_) return;
    if (!outbox_.empty()) {
      current_write_ = std::move(outbox_.front().response);
      current_covers_ = outbox_.front().covers;
      outbox_.pop_front();
      write_in_flight_ = true;
      fx->start_write = &current_write_;
      return;
    }
    if (finish_wanted_) {
      finish_called_ = true;
      fx->finish = finish_status_;
      fx->start_read = false;
    } else if (read_done_) {
      finish_called_ = true;
      fx->finish = grpc::Status::OK;
    }
  }

  void HandleRequestLocked(Effects* fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_wanted_) return;
    if (request_.has_hello()) {
      if (!boot_id_.empty()) {
        FailLocked(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello: sent twice on one stream"));
        return;
      }
      if (absl::Status s = fleetwes::aggregator::ValidateHello(request_.hello()); !s.ok()) {
        FailLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
        return;
      }
      boot_id_ = request_.hello().boot_id();
      fx->start_read = true;
    } else if (request_.has_frame()) {
      if (boot_id_.empty()) {
        FailLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "hello: the first message of a stream must be a hello"));
        return;
      }
      // Taken out of the read buffer as the aggregator does (so the next read parses into a
      // fresh frame, not into the retained sub-objects of this one), then dropped.
      const v1::Frame frame(std::move(*request_.mutable_frame()));
      // Seqs only rise on a stream; a frame that does not is covered by the last ack already.
      last_seq_ = std::max(last_seq_, frame.seq());
      QueueAckLocked();
      fx->start_read = true;
    } else {
      FailLocked(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "message: neither a hello nor a frame"));
    }
  }

  void QueueAckLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Coalesce with an ack not yet sent: cumulative acks supersede each other.
    if (!outbox_.empty()) {
      outbox_.back().response.mutable_ack()->set_seq(last_seq_);
      ++outbox_.back().covers;
      return;
    }
    Outgoing out;
    out.response.mutable_ack()->set_boot_id(boot_id_);
    out.response.mutable_ack()->set_seq(last_seq_);
    out.covers = 1;
    outbox_.push_back(std::move(out));
  }

  Counts* const counts_;
  v1::PublishRequest request_;  // the read buffer; one read at a time

  absl::Mutex mu_;
  std::string boot_id_ ABSL_GUARDED_BY(mu_);  // set by a valid Hello
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  v1::PublishResponse current_write_ ABSL_GUARDED_BY(mu_);
  uint64_t current_covers_ ABSL_GUARDED_BY(mu_) = 0;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

class EchoService final : public v1::Ingest::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResponse>* Publish(
      grpc::CallbackServerContext* /*context*/) override {
    return new EchoReactor(&counts_);
  }
  const Counts& counts() const { return counts_; }

 private:
  Counts counts_;
};

}  // namespace

int main(int argc, char** argv) {
  // As fleetwes-aggregator's main does.
  fleetwes::TuneMallocForThroughput();
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  fleetwes::testing::HelpListsFlagsOf("ingest_echo_main.cc");
  absl::SetProgramUsageMessage(
      "the transport ceiling of Ingest.Publish: the aggregator's gRPC server set-up, every frame "
      "acknowledged as soon as it is read, nothing stored (bench/ingest).\n"
      "SIGUSR1 prints \"acked=<frames> streams=<open streams>\"; SIGTERM stops.\n\n"
      "  fleetwes-ingest-echo --port=0 --port_file=PORT");
  absl::ParseCommandLine(argc, argv);

  // Signals are taken by main with sigwait; blocked before gRPC starts its threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The server set-up of AggregatorServer::StartGrpc (aggregator/server.cc), replicated: that one
  // is a member of the server that owns the database, fleet state and the other services. Keep the
  // two in step. The message size limit is the aggregator's for its default max_frame_bytes.
  EchoService echo;
  int port = 0;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", absl::GetFlag(FLAGS_port)),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&echo);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::max<int64_t>(4 << 20, 2 * 65536)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "fleetwes-ingest-echo: cannot listen on 127.0.0.1:" << absl::GetFlag(FLAGS_port)
              << "\n";
    return 1;
  }
  if (const std::string file = absl::GetFlag(FLAGS_port_file); !file.empty()) {
    if (!fleetwes::testing::WritePortFile(file, port)) {
      std::cerr << "fleetwes-ingest-echo: cannot write " << file << "\n";
      return 1;
    }
  }
  while (true) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number != SIGUSR1) break;
    std::cout << "acked=" << echo.counts().acked.load(std::memory_order_relaxed)
              << " streams=" << echo.counts().streams.load(std::memory_order_relaxed) << std::endl;
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::cout << "acked=" << echo.counts().acked.load() << " streams=0" << std::endl;
  return 0;
}
