#include "agent/uplink.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/frame_queue.h"
#include "common/clock.h"
#include "fleetwes/v1/ingest.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kBoot[] = "boot-7";

// An in-process aggregator stand-in with scriptable behaviour.
class FakeIngest final : public v1::Ingest::Service {
 public:
  struct Policy {
    bool ack = true;
    int ack_from_stream = 1;           // streams before this one get no acks
    int drop_stream_after_frames = 0;  // first stream ends with UNAVAILABLE after N frames
    std::set<uint64_t> reject;         // seqs answered with a Reject (and still acked)
    grpc::StatusCode refuse_hello = grpc::StatusCode::OK;
    std::string ack_boot = kBoot;
  };

  grpc::Status Publish(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::PublishResponse, v1::PublishRequest>* stream) override {
    v1::PublishRequest request;
    if (!stream->Read(&request) || !request.has_hello()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first message must be hello");
    }
    int stream_number;
    Policy policy;
    {
      absl::MutexLock lock(&mu_);
      hellos_.push_back(request.hello());
      stream_number = static_cast<int>(hellos_.size());
      policy = policy_;
    }
    if (policy.refuse_hello != grpc::StatusCode::OK) {
      return grpc::Status(policy.refuse_hello, "node not allowed");
    }
    int frames_here = 0;
    while (stream->Read(&request)) {
      if (!request.has_frame()) continue;
      const uint64_t seq = request.frame().seq();
      {
        absl::MutexLock lock(&mu_);
        seqs_.push_back(seq);
      }
      ++frames_here;
      if (policy.reject.count(seq) > 0) {
        v1::PublishResponse r;
        r.mutable_reject()->set_boot_id(request.frame().boot_id());
        r.mutable_reject()->set_seq(seq);
        r.mutable_reject()->set_code(3);
        r.mutable_reject()->set_field("models[0].decode_tokens_per_s");
        r.mutable_reject()->set_message("negative");
        stream->Write(r);
      }
      if (policy.ack && stream_number >= policy.ack_from_stream) {
        v1::PublishResponse r;
        r.mutable_ack()->set_boot_id(policy.ack_boot);
        r.mutable_ack()->set_seq(seq);
        stream->Write(r);
      }
      if (stream_number == 1 && policy.drop_stream_after_frames > 0 &&
          frames_here == policy.drop_stream_after_frames) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "going away");
      }
    }
    return grpc::Status::OK;
  }

  void set_policy(Policy p) {
    absl::MutexLock lock(&mu_);
    policy_ = std::move(p);
  }
  std::vector<uint64_t> seqs() const {
    absl::MutexLock lock(&mu_);
    return seqs_;
  }
  std::vector<v1::Hello> hellos() const {
    absl::MutexLock lock(&mu_);
    return hellos_;
  }

 private:
  mutable absl::Mutex mu_;
  Policy policy_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> seqs_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Hello> hellos_ ABSL_GUARDED_BY(mu_);
};

// Polls `done` until it holds or 10 s pass (real threads and sockets are involved).
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

// A loopback port nobody listens on.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

v1::Frame MakeFrame(uint64_t seq) {
  v1::Frame f;
  f.set_node_id("node-1");
  f.set_boot_id(kBoot);
  f.set_seq(seq);
  return f;
}

class UplinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (uplink_ != nullptr) uplink_->Stop();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  void MakeUplink(std::vector<std::string> addresses) {
    UplinkOptions o;
    o.addresses = std::move(addresses);
    o.connect_timeout = absl::Seconds(2);
    o.backoff.initial = absl::Milliseconds(10);
    o.backoff.max = absl::Milliseconds(100);
    o.non_retryable_delay = absl::Milliseconds(200);
    MakeUplink(o);
  }
  void MakeUplink(UplinkOptions o) {
    uplink_ = std::make_unique<Uplink>(
        std::move(o), kBoot, &queue_,
        [] {
          v1::Hello h;
          h.set_node_id("node-1");
          h.set_boot_id(kBoot);
          return h;
        },
        RealClock());
  }

  FakeIngest service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  MemoryFrameQueue queue_;
  std::unique_ptr<Uplink> uplink_;
};

TEST_F(UplinkTest, HelloThenFramesAndAcksTrimTheQueue) {
  MakeUplink({address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Enqueue(MakeFrame(2));
  uplink_->Start();
  uplink_->Enqueue(MakeFrame(3));
  ASSERT_TRUE(Eventually([&] { return queue_.size() == 0 && uplink_->stats().acked_seq == 3; }));
  EXPECT_THAT(service_.seqs(), ElementsAre(1, 2, 3));
  ASSERT_EQ(service_.hellos().size(), 1u);
  EXPECT_EQ(service_.hellos()[0].node_id(), "node-1");
  UplinkStats s = uplink_->stats();
  EXPECT_EQ(s.connects, 1u);
  EXPECT_EQ(s.frames_sent, 3u);
  EXPECT_EQ(s.acks, 3u);
  EXPECT_TRUE(s.connected);
}

TEST_F(UplinkTest, UnackedFramesAreResentAfterTheStreamDrops) {
  FakeIngest::Policy p;
  p.ack_from_stream = 2;
  p.drop_stream_after_frames = 2;
  service_.set_policy(p);
  MakeUplink({address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Enqueue(MakeFrame(2));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return service_.hellos().size() >= 2; }));
  uplink_->Enqueue(MakeFrame(3));
  ASSERT_TRUE(Eventually([&] { return queue_.size() == 0; }));
  EXPECT_THAT(service_.seqs(), ElementsAre(1, 2, 1, 2, 3));
  UplinkStats s = uplink_->stats();
  EXPECT_GE(s.stream_failures, 1u);
  EXPECT_EQ(s.non_retryable_failures, 0u);
  EXPECT_THAT(s.last_error, HasSubstr("UNAVAILABLE"));
  EXPECT_EQ(s.acked_seq, 3u);
}

TEST_F(UplinkTest, RejectIsCountedAndCoveredByTheNextAck) {
  FakeIngest::Policy p;
  p.reject = {2};
  service_.set_policy(p);
  MakeUplink({address()});
  for (uint64_t seq = 1; seq <= 3; ++seq) uplink_->Enqueue(MakeFrame(seq));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return queue_.size() == 0; }));
  EXPECT_EQ(uplink_->stats().rejects, 1u);
  EXPECT_THAT(service_.seqs(), ElementsAre(1, 2, 3));  // never resent
}

TEST_F(UplinkTest, AckOfAnotherBootIsIgnored) {
  FakeIngest::Policy p;
  p.ack_boot = "other-boot";
  service_.set_policy(p);
  MakeUplink({address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return service_.seqs().size() == 1; }));
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().frames_sent == 1; }));
  EXPECT_EQ(queue_.size(), 1u);
  EXPECT_EQ(uplink_->stats().acked_seq, 0u);
}

TEST_F(UplinkTest, FailsOverToTheNextAddress) {
  MakeUplink({absl::StrCat("127.0.0.1:", ClosedPort()), address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return queue_.size() == 0; }));
  EXPECT_GE(uplink_->stats().stream_failures, 1u);
  EXPECT_EQ(service_.hellos().size(), 1u);
}

TEST_F(UplinkTest, NonRetryableFailureIsCountedAndRetriedSlowly) {
  FakeIngest::Policy p;
  p.refuse_hello = grpc::StatusCode::PERMISSION_DENIED;
  service_.set_policy(p);
  UplinkOptions o;
  o.addresses = {address()};
  o.backoff.initial = absl::Milliseconds(1);
  o.backoff.max = absl::Milliseconds(1);
  o.non_retryable_delay = absl::Seconds(60);
  MakeUplink(o);
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().non_retryable_failures >= 1; }));
  UplinkStats s = uplink_->stats();
  EXPECT_THAT(s.last_error, HasSubstr("PERMISSION_DENIED"));
  EXPECT_EQ(queue_.size(), 1u);
  // Parked in a 60 s wait, one attempt so far; Stop() interrupts it at once.
  EXPECT_EQ(service_.hellos().size(), 1u);
  const absl::Time start = absl::Now();
  uplink_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(UplinkTest, StopIsPromptWithAnOpenStream) {
  FakeIngest::Policy p;
  p.ack = false;
  service_.set_policy(p);
  MakeUplink({address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return service_.seqs().size() == 1; }));
  const absl::Time start = absl::Now();
  uplink_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(uplink_->stats().connected);
  EXPECT_EQ(queue_.size(), 1u);
}

TEST_F(UplinkTest, StopIsPromptWhileNothingListens) {
  UplinkOptions o;
  o.addresses = {absl::StrCat("127.0.0.1:", ClosedPort())};
  o.backoff.initial = absl::Seconds(30);
  o.backoff.max = absl::Seconds(30);
  MakeUplink(o);
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().stream_failures >= 1; }));
  const absl::Time start = absl::Now();
  uplink_->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(UplinkTest, HelloReportsEvictedFrames) {
  MemoryFrameQueue small(2);
  UplinkOptions o;
  o.addresses = {address()};
  Uplink uplink(
      o, kBoot, &small,
      [] {
        v1::Hello h;
        h.set_node_id("node-1");
        return h;
      },
      RealClock());
  for (uint64_t seq = 1; seq <= 5; ++seq) uplink.Enqueue(MakeFrame(seq));
  uplink.Start();
  ASSERT_TRUE(Eventually([&] { return small.size() == 0; }));
  ASSERT_EQ(service_.hellos().size(), 1u);
  EXPECT_EQ(service_.hellos()[0].evicted_frames(), 3u);
  EXPECT_THAT(service_.seqs(), ElementsAre(4, 5));
  uplink.Stop();
}

TEST_F(UplinkTest, ConnectedStreamHasAddressAndNoReason) {
  MakeUplink({address()});
  EXPECT_EQ(uplink_->stats().state, "idle");
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().acked_seq == 1; }));
  UplinkStats s = uplink_->stats();
  EXPECT_TRUE(s.connected);
  EXPECT_EQ(s.state, "connected");
  EXPECT_EQ(s.address, address());
  EXPECT_EQ(s.reason, "");
  EXPECT_TRUE(s.failures_by_reason.empty());
  uplink_->Stop();
  EXPECT_EQ(uplink_->stats().state, "stopped");
}

TEST_F(UplinkTest, ClosedPortIsRefused) {
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  MakeUplink({closed});
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().stream_failures >= 1; }));
  UplinkStats s = uplink_->stats();
  EXPECT_FALSE(s.connected);
  EXPECT_EQ(s.address, closed);
  EXPECT_EQ(s.reason, "refused") << s.last_error;
  EXPECT_GE(s.failures_by_reason["refused"], 1u);
  EXPECT_EQ(s.connects, 0u);
}

TEST_F(UplinkTest, UnresolvableNameIsAResolutionFailure) {
  MakeUplink({"no-such-host.invalid:1"});
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().stream_failures >= 1; }));
  UplinkStats s = uplink_->stats();
  EXPECT_FALSE(s.connected);
  EXPECT_EQ(s.address, "no-such-host.invalid:1");
  EXPECT_EQ(s.reason, "resolution") << s.last_error;
  EXPECT_GE(s.failures_by_reason["resolution"], 1u);
}

TEST_F(UplinkTest, RefusedHelloIsRejected) {
  FakeIngest::Policy p;
  p.refuse_hello = grpc::StatusCode::INVALID_ARGUMENT;
  service_.set_policy(p);
  MakeUplink({address()});
  uplink_->Enqueue(MakeFrame(1));
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().stream_failures >= 1; }));
  UplinkStats s = uplink_->stats();
  EXPECT_EQ(s.reason, "rejected") << s.last_error;
  EXPECT_FALSE(s.connected);
}

TEST_F(UplinkTest, PermissionDeniedIsAuth) {
  FakeIngest::Policy p;
  p.refuse_hello = grpc::StatusCode::PERMISSION_DENIED;
  service_.set_policy(p);
  MakeUplink({address()});
  uplink_->Start();
  ASSERT_TRUE(Eventually([&] { return uplink_->stats().stream_failures >= 1; }));
  EXPECT_EQ(uplink_->stats().reason, "auth");
  EXPECT_EQ(uplink_->stats().failures_by_reason.at("auth"), 1u);
}

TEST(ClassifyUplinkFailureTest, MessagesAndCodes) {
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnauthenticatedError("bad token")), "auth");
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnavailableError(
                "DNS resolution failed for a.invalid:1: C-ares status is not ARES_SUCCESS")),
            "resolution");
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnavailableError(
                "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                "Failed to connect to remote host: Connection refused")),
            "refused");
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnavailableError("Ssl handshake failed")), "tls");
  EXPECT_EQ(ClassifyUplinkFailure(absl::DeadlineExceededError("not connected within 5s")),
            "unreachable");
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnavailableError("No route to host")), "unreachable");
  EXPECT_EQ(ClassifyUplinkFailure(absl::InvalidArgumentError("hello: node_id empty")), "rejected");
  EXPECT_EQ(ClassifyUplinkFailure(absl::UnavailableError("going away")), "disconnected");
  EXPECT_EQ(ClassifyUplinkFailure(absl::InternalError("boom")), "other");
}

TEST(MemoryFrameQueueTest, BoundsAckAndRead) {
  MemoryFrameQueue q(3);
  for (uint64_t seq = 1; seq <= 5; ++seq) q.Push(MakeFrame(seq));
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.evicted(), 2u);
  std::vector<v1::Frame> all = q.After(0, 10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].seq(), 3u);
  EXPECT_EQ(q.After(3, 1).at(0).seq(), 4u);
  q.AckUpTo(4);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.After(0, 10).at(0).seq(), 5u);
  q.AckUpTo(100);
  EXPECT_EQ(q.size(), 0u);
}

TEST(MemoryFrameQueueTest, ByteBoundEvictsOldest) {
  v1::Frame big = MakeFrame(1);
  big.set_node_id(std::string(1000, 'n'));
  MemoryFrameQueue q(100, 2500);
  for (uint64_t seq = 1; seq <= 4; ++seq) {
    big.set_seq(seq);
    q.Push(big);
  }
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.evicted(), 2u);
}

}  // namespace
}  // namespace fleetwes::agent
