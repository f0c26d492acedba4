// Ingest.Publish through a real gRPC server on 127.0.0.1:0 and a real client stub, with the
// database replaced by FakeBatchStore (the PostgreSQL variant is in ingest_pg_test.cc).
#include "aggregator/ingest/ingest_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/aggregator/fake_batch_store.h"
#include "tests/aggregator/test_frames.h"

namespace fleetwes::aggregator {
namespace {

using testing::FakeBatchStore;
using testing::MakeFrame;
using testing::MakeHello;
using testing::T0;

using Stream = grpc::ClientReaderWriter<v1::PublishRequest, v1::PublishResponse>;

v1::PublishRequest HelloMsg(const std::string& node, const std::string& boot) {
  v1::PublishRequest r;
  *r.mutable_hello() = MakeHello(node, boot);
  return r;
}

v1::PublishRequest FrameMsg(v1::Frame f) {
  v1::PublishRequest r;
  *r.mutable_frame() = std::move(f);
  return r;
}

class IngestServiceTest : public ::testing::Test {
 protected:
  void StartServer(WriterOptions options = {}, IngestOptions ingest = {}) {
    options.backoff.initial = absl::Milliseconds(1);
    options.backoff.max = absl::Milliseconds(5);
    options.flush_timeout = absl::Milliseconds(100);
    writer_ = std::make_unique<Writer>(&store_, RealClock(), &metrics_, options);
    writer_->Start();
    service_ = std::make_unique<IngestService>(writer_.get(), &state_, &clock_, &metrics_,
                                               std::move(ingest));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::Ingest::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    if (writer_ != nullptr) writer_->Stop();
  }

  std::unique_ptr<Stream> Open(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->Publish(ctx);
  }

  // Reads until an Ack with seq >= `seq`; collects Rejects. False if the stream ended first.
  bool ReadUntilAck(Stream* s, uint64_t seq, std::vector<v1::Reject>* rejects = nullptr) {
    v1::PublishResponse r;
    while (s->Read(&r)) {
      if (r.has_reject()) {
        if (rejects != nullptr) rejects->push_back(r.reject());
        continue;
      }
      // Acks never cover frames that are not committed yet.
      for (uint64_t k = 1; k <= r.ack().seq(); ++k) {
        if (rejected_seqs_.contains(k)) continue;
        EXPECT_TRUE(store_.committed().contains({node_, "boot-a", k}))
            << "ack " << r.ack().seq() << " covers uncommitted seq " << k;
      }
      if (r.ack().seq() >= seq) return true;
    }
    return false;
  }

  FakeBatchStore store_;
  AggregatorMetrics metrics_;
  FleetState state_;
  FakeClock clock_{T0() + absl::Seconds(1)};
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<IngestService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Ingest::Stub> stub_;
  std::string node_ = "studio-01";
  absl::flat_hash_set<uint64_t> rejected_seqs_;
};

TEST_F(IngestServiceTest, AcksOnlyAfterCommitAndUpdatesTheFleetState) {
  StartServer();
  store_.Hold();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    ASSERT_TRUE(
        stream->Write(FrameMsg(MakeFrame(node_, "boot-a", seq, T0() + absl::Seconds(seq)))));
  }
  store_.AwaitAttempts(1);
  EXPECT_EQ(metrics_.frames_committed().Value(), 0);
  ASSERT_NE(state_.Get(node_), nullptr);          // the Hello is known at once...
  EXPECT_EQ(state_.Get(node_)->latest, nullptr);  // ...frames only after commit
  store_.Release();
  ASSERT_TRUE(ReadUntilAck(stream.get(), 3));
  EXPECT_EQ(store_.committed().size(), 3u);
  EXPECT_EQ(metrics_.frames_committed().Value(), 3);
  NodeStatePtr node = state_.Get(node_);
  ASSERT_NE(node->latest, nullptr);
  EXPECT_EQ(node->latest->seq(), 3u);
  // Recomputed with the aggregator's table, not the agent's 12345.
  EXPECT_DOUBLE_EQ(node->models.at("llama3-8b").sample.wes().penalized(), 89.0 / 60.0);
  EXPECT_EQ(node->labels.size(), 0u);
  EXPECT_EQ(store_.node_upserts(), std::vector<std::string>{node_});

  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, ABadFrameIsRejectedAndTheGoodOnesAroundItAreAcked) {
  StartServer();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 1, T0()))));
  v1::Frame bad = MakeFrame(node_, "boot-a", 2, T0() + absl::Seconds(2));
  bad.mutable_models(0)->set_decode_tokens_per_s(std::numeric_limits<double>::quiet_NaN());
  ASSERT_TRUE(stream->Write(FrameMsg(bad)));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 3, T0() + absl::Seconds(4)))));
  rejected_seqs_.insert(2);
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(ReadUntilAck(stream.get(), 3, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].seq(), 2u);
  EXPECT_EQ(rejects[0].boot_id(), "boot-a");
  EXPECT_EQ(rejects[0].code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(rejects[0].field(), "models[0].decode_tokens_per_s");
  EXPECT_EQ(store_.committed(),
            (std::set<FakeBatchStore::Key>{{node_, "boot-a", 1}, {node_, "boot-a", 3}}));
  EXPECT_EQ(metrics_.frames_rejected().Value(), 1);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, OutOfOrderAndForeignFramesAreRejected) {
  StartServer();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 5, T0()))));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 4, T0()))));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame("lab-03", "boot-a", 6, T0()))));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 7, T0() + absl::Seconds(2)))));
  rejected_seqs_ = {1, 2, 3, 4, 6};  // never sent or refused
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(ReadUntilAck(stream.get(), 7, &rejects));
  ASSERT_EQ(rejects.size(), 2u);
  EXPECT_EQ(rejects[0].seq(), 4u);
  EXPECT_EQ(rejects[0].field(), "seq");
  EXPECT_EQ(rejects[1].seq(), 6u);
  EXPECT_EQ(rejects[1].field(), "node_id");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, AFrameTheStoreRefusesIsRejectedForGood) {
  StartServer();
  store_.RefuseNode(node_);
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 1, T0()))));
  rejected_seqs_.insert(1);
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(ReadUntilAck(stream.get(), 1, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].field(), "frame");
  EXPECT_EQ(rejects[0].code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, ANodeFloodingModelNamesIsRefusedBeyondItsCap) {
  IngestOptions ingest;
  ingest.cardinality.max_models_per_node = 2;
  ingest.cardinality.window = absl::Hours(24);
  StartServer({}, ingest);
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  const char* models[] = {"m-a", "m-b", "m-c", "m-a"};
  for (uint64_t seq = 1; seq <= 4; ++seq) {
    testing::ModelSpec spec;
    spec.model = models[seq - 1];
    ASSERT_TRUE(stream->Write(
        FrameMsg(MakeFrame(node_, "boot-a", seq, T0() + absl::Seconds(2 * seq - 10), spec))));
  }
  rejected_seqs_.insert(3);
  std::vector<v1::Reject> rejects;
  ASSERT_TRUE(ReadUntilAck(stream.get(), 4, &rejects));
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].seq(), 3u);
  EXPECT_EQ(rejects[0].field(), "models[0].model");
  EXPECT_EQ(metrics_.rejected(RejectReason::kCardinality).Value(), 1);
  EXPECT_EQ(store_.committed(),
            (std::set<FakeBatchStore::Key>{
                {node_, "boot-a", 1}, {node_, "boot-a", 2}, {node_, "boot-a", 4}}));

  // A day later the old names no longer count: a new one is accepted.
  clock_.Advance(absl::Hours(25));
  testing::ModelSpec spec;
  spec.model = "m-c";
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 5, clock_.Now(), spec))));
  ASSERT_TRUE(ReadUntilAck(stream.get(), 5, &rejects));
  EXPECT_EQ(rejects.size(), 1u);
  EXPECT_TRUE(store_.committed().contains({node_, "boot-a", 5}));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, ABadHelloEndsTheStreamNamingTheField) {
  StartServer();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg("bad node id", "boot-a")));
  v1::PublishResponse r;
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(s.error_message(), "hello.node_id")) << s.error_message();
  EXPECT_EQ(store_.attempts(), 0);
}

TEST_F(IngestServiceTest, AFrameBeforeTheHelloEndsTheStream) {
  StartServer();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 1, T0()))));
  v1::PublishResponse r;
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "hello")) << s.error_message();
}

TEST_F(IngestServiceTest, AFullWriterQueuePausesTheStreamWithoutLosingFrames) {
  WriterOptions options;
  options.queue_frames = 2;
  options.max_batch_frames = 2;
  options.max_batch_delay = absl::ZeroDuration();
  StartServer(options);
  store_.Hold();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  for (uint64_t seq = 1; seq <= 40; ++seq) {
    ASSERT_TRUE(
        stream->Write(FrameMsg(MakeFrame(node_, "boot-a", seq, T0() + absl::Seconds(2 * seq)))));
  }
  store_.Release();
  ASSERT_TRUE(ReadUntilAck(stream.get(), 40));
  EXPECT_EQ(store_.committed().size(), 40u);
  for (size_t size : store_.batch_sizes()) EXPECT_LE(size, 2u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(IngestServiceTest, ReplayedFramesAreAckedAgain) {
  StartServer();
  for (int attempt = 0; attempt < 2; ++attempt) {
    grpc::ClientContext ctx;
    auto stream = Open(&ctx);
    ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", seq, T0()))));
    }
    ASSERT_TRUE(ReadUntilAck(stream.get(), 3));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  EXPECT_EQ(metrics_.frames_committed().Value(), 3);
  EXPECT_EQ(metrics_.frames_duplicate().Value(), 3);
}

TEST_F(IngestServiceTest, AnAcceptedFrameStaysIntactWhileTheStreamReadsOn) {
  // The fleet state keeps each node's latest frame, parsed in the buffer its stream read it into.
  // This one spills past the buffer's first block; the reads after it must not reuse its buffer.
  StartServer();
  grpc::ClientContext ctx;
  auto stream = Open(&ctx);
  ASSERT_TRUE(stream->Write(HelloMsg(node_, "boot-a")));
  v1::Frame big = MakeFrame(node_, "boot-a", 1, T0());
  for (int i = 0; i < 40; ++i) {
    testing::ModelSpec spec;
    spec.model = absl::StrCat("a-model-with-a-rather-long-name-", i);
    testing::AddModel(&big, spec);
  }
  ASSERT_TRUE(stream->Write(FrameMsg(big)));
  ASSERT_TRUE(ReadUntilAck(stream.get(), 1));
  NodeStatePtr kept = state_.Get(node_);
  ASSERT_NE(kept, nullptr);
  ASSERT_NE(kept->latest, nullptr);

  // A refused frame (its buffer is read into again), then an accepted one.
  v1::Frame bad = MakeFrame(node_, "boot-a", 2, T0() + absl::Seconds(2));
  bad.mutable_models(0)->set_decode_tokens_per_s(std::numeric_limits<double>::quiet_NaN());
  ASSERT_TRUE(stream->Write(FrameMsg(bad)));
  rejected_seqs_.insert(2);
  ASSERT_TRUE(stream->Write(FrameMsg(MakeFrame(node_, "boot-a", 3, T0() + absl::Seconds(4)))));
  ASSERT_TRUE(ReadUntilAck(stream.get(), 3));

  EXPECT_EQ(kept->latest->seq(), 1u);
  EXPECT_EQ(kept->latest->node_id(), node_);
  ASSERT_EQ(kept->latest->models_size(), 41);
  EXPECT_EQ(kept->latest->models(40).model(), "a-model-with-a-rather-long-name-39");
  EXPECT_EQ(kept->models.size(), 41u);
  NodeStatePtr now = state_.Get(node_);
  ASSERT_NE(now->latest, nullptr);
  EXPECT_EQ(now->latest->seq(), 3u);
  EXPECT_EQ(now->latest->models_size(), 1);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace fleetwes::aggregator
