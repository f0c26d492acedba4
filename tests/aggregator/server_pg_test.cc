// The whole aggregator in-process against a fresh database: real gRPC on 127.0.0.1:0, real
// client stubs, rows checked in PostgreSQL.
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "aggregator/server.h"
#include "aggregator/store/partitions.h"
#include "fleetwes/v1/fleet.grpc.pb.h"
#include "fleetwes/v1/ingest.grpc.pb.h"
#include "fleetwes/v1/router.grpc.pb.h"
#include "tests/aggregator/test_frames.h"
#include "tests/support/pg_test_db.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::MakeHello;
using testing::ModelSpec;
using testing::T0;

using Stream = grpc::ClientReaderWriter<v1::PublishRequest, v1::PublishResponse>;

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(30);
}

class ServerPgTest : public fleetwes::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    StartAggregator();
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Stop();
  }

  void StartAggregator() {
    AggregatorConfig config;
    config.grpc_listen = "127.0.0.1:0";
    config.http_listen = "127.0.0.1:0";
    config.database_url = db().url();
    config.writer.max_batch_delay = absl::Milliseconds(5);
    config.retention = retention_;
    config.leaderboard = leaderboard_;
    server_ = std::make_unique<AggregatorServer>(config, &clock_);
    absl::Notification never;
    ASSERT_TRUE(server_->Start(&never).ok());
    ASSERT_GT(server_->grpc_port(), 0);
    ASSERT_GT(server_->http_port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    ingest_ = v1::Ingest::NewStub(channel_);
    fleet_ = v1::Fleet::NewStub(channel_);
    router_ = v1::Router::NewStub(channel_);
  }

  int64_t Count(const std::string& sql) {
    pqxx::connection c(db().url());
    pqxx::read_transaction tx(c);
    return tx.exec1(sql)[0].as<int64_t>();
  }

  // Publishes `frames` on one stream after a Hello; returns the last ack and the rejects.
  struct Published {
    uint64_t ack = 0;
    std::vector<v1::Reject> rejects;
    grpc::Status status;
  };
  Published Publish(const std::string& node, const std::vector<v1::Frame>& frames,
                    uint64_t expect_ack, std::map<std::string, std::string> labels = {}) {
    Published out;
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline());
    std::unique_ptr<Stream> stream = ingest_->Publish(&ctx);
    v1::PublishRequest hello;
    *hello.mutable_hello() = MakeHello(node, "boot-a", std::move(labels));
    EXPECT_TRUE(stream->Write(hello));
    for (const v1::Frame& f : frames) {
      v1::PublishRequest r;
      *r.mutable_frame() = f;
      EXPECT_TRUE(stream->Write(r));
    }
    v1::PublishResponse resp;
    while (out.ack < expect_ack && stream->Read(&resp)) {
      if (resp.has_reject()) {
        out.rejects.push_back(resp.reject());
      } else {
        // Acknowledged means committed: every good frame the ack covers has its row already.
        std::vector<std::string> covered;
        for (const v1::Frame& f : frames) {
          bool rejected = false;
          for (const v1::Reject& rj : out.rejects) rejected = rejected || rj.seq() == f.seq();
          if (f.seq() <= resp.ack().seq() && !rejected) covered.push_back(absl::StrCat(f.seq()));
        }
        if (!covered.empty()) {
          EXPECT_EQ(Count(absl::StrCat("SELECT count(*) FROM frames WHERE node_id = '", node,
                                       "' AND seq IN (", absl::StrJoin(covered, ","), ")")),
                    static_cast<int64_t>(covered.size()))
              << "ack " << resp.ack().seq() << " covers uncommitted frames";
        }
        out.ack = resp.ack().seq();
      }
    }
    stream->WritesDone();
    out.status = stream->Finish();
    return out;
  }

  FakeClock clock_{T0() + absl::Seconds(1)};
  RetentionConfig retention_;
  LeaderboardConfig leaderboard_;
  std::unique_ptr<AggregatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ingest::Stub> ingest_;
  std::unique_ptr<v1::Fleet::Stub> fleet_;
  std::unique_ptr<v1::Router::Stub> router_;
};

TEST_F(ServerPgTest, AcksAfterCommitRejectsBadFramesAndDeduplicatesReplays) {
  std::vector<v1::Frame> frames;
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    frames.push_back(MakeFrame("studio-01", "boot-a", seq, T0() - absl::Seconds(10 - 2 * seq)));
  }
  frames[2].mutable_devices(0)->set_power_w(-40);  // seq 3: negative watts
  Published p = Publish("studio-01", frames, 5);
  EXPECT_TRUE(p.status.ok()) << p.status.error_message();
  EXPECT_EQ(p.ack, 5u);
  ASSERT_EQ(p.rejects.size(), 1u);
  EXPECT_EQ(p.rejects[0].seq(), 3u);
  EXPECT_EQ(p.rejects[0].field(), "devices[0].power_w");
  EXPECT_EQ(Count("SELECT count(*) FROM frames"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM frames WHERE seq = 3"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM model_samples"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM device_samples"), 4);

  // A reconnecting agent replays everything: acknowledged again, stored once.
  frames.erase(frames.begin() + 2);
  p = Publish("studio-01", frames, 5);
  EXPECT_TRUE(p.status.ok());
  EXPECT_EQ(p.ack, 5u);
  EXPECT_EQ(Count("SELECT count(*) FROM frames"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM model_samples"), 4);
  EXPECT_EQ(server_->metrics().frames_duplicate().Value(), 4);
  EXPECT_EQ(server_->metrics().frames_committed().Value(), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM nodes WHERE node_id = 'studio-01'"), 1);
}

TEST_F(ServerPgTest, AFrameTheDatabaseRefusesIsRejectedAloneAndTheRestOfItsStreamCommits) {
  // A constraint validation does not know about: the database refuses the model row of seq 3
  // in the middle of a batch.
  {
    pqxx::connection c(db().url());
    pqxx::work tx(c);
    tx.exec0("ALTER TABLE model_samples ADD CONSTRAINT test_no_poison CHECK (model <> 'poison')");
    tx.commit();
  }
  std::vector<v1::Frame> frames;
  for (uint64_t seq = 1; seq <= 6; ++seq) {
    ModelSpec spec;
    spec.model = seq == 3 ? "poison" : "llama3-8b";
    frames.push_back(
        MakeFrame("studio-01", "boot-a", seq, T0() - absl::Seconds(20 - 2 * seq), spec));
  }
  Published p = Publish("studio-01", frames, 6);
  EXPECT_TRUE(p.status.ok()) << p.status.error_message();
  EXPECT_EQ(p.ack, 6u);
  ASSERT_EQ(p.rejects.size(), 1u);
  EXPECT_EQ(p.rejects[0].seq(), 3u);
  EXPECT_EQ(p.rejects[0].field(), "frame");
  EXPECT_EQ(p.rejects[0].code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(absl::StrContains(p.rejects[0].message(), "test_no_poison"))
      << p.rejects[0].message();
  EXPECT_EQ(Count("SELECT count(*) FROM frames WHERE node_id = 'studio-01'"), 5);
  EXPECT_EQ(Count("SELECT count(*) FROM frames WHERE seq = 3"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM model_samples"), 5);
  EXPECT_EQ(server_->metrics().rejected(RejectReason::kStore).Value(), 1);
  EXPECT_EQ(server_->metrics().frames_committed().Value(), 5);
}

TEST_F(ServerPgTest, FleetServesTheLeaderboardNodesAndHistory) {
  struct N {
    const char* id;
    ModelSpec spec;
  };
  const N nodes[] = {
      {"spare-04", {.tokens_per_s = 12, .watts = 95}},
      {"lab-03", {.tokens_per_s = 92, .watts = 220, .state = v1::THERMAL_STATE_SERIOUS}},
      {"devbox-02", {.tokens_per_s = 180, .watts = 340, .state = v1::THERMAL_STATE_FAIR}},
      {"studio-01", {.tokens_per_s = 89, .watts = 60}},
  };
  for (const N& n : nodes) {
    Published p = Publish(n.id, {MakeFrame(n.id, "boot-a", 1, T0(), n.spec)}, 1, {{"site", "lab"}});
    ASSERT_EQ(p.ack, 1u) << n.id;
  }

  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::LeaderboardResponse board;
  ASSERT_TRUE(fleet_->Leaderboard(&ctx, v1::LeaderboardRequest(), &board).ok());
  ASSERT_EQ(board.entries_size(), 4);
  EXPECT_EQ(board.entries(0).node_id(), "studio-01");
  EXPECT_EQ(board.entries(1).node_id(), "devbox-02");
  EXPECT_EQ(board.entries(2).node_id(), "lab-03");
  EXPECT_EQ(board.entries(3).node_id(), "spare-04");
  EXPECT_DOUBLE_EQ(board.entries(1).wes().penalized(), 180.0 / 340.0 / 1.25);
  EXPECT_EQ(board.entries(0).labels().at("site"), "lab");

  grpc::ClientContext ctx2;
  v1::LeaderboardRequest by_model;
  by_model.set_model("llama3-8b");
  by_model.set_limit(2);
  ASSERT_TRUE(fleet_->Leaderboard(&ctx2, by_model, &board).ok());
  ASSERT_EQ(board.entries_size(), 2);
  EXPECT_EQ(board.entries(0).node_id(), "studio-01");

  grpc::ClientContext ctx3;
  v1::ListNodesResponse list;
  ASSERT_TRUE(fleet_->ListNodes(&ctx3, v1::ListNodesRequest(), &list).ok());
  ASSERT_EQ(list.nodes_size(), 4);
  EXPECT_EQ(list.nodes(0).node_id(), "devbox-02");
  EXPECT_EQ(list.nodes(0).models(0), "llama3-8b");
  EXPECT_EQ(list.nodes(0).last_seq(), 1u);

  grpc::ClientContext ctx4;
  v1::GetNodeRequest get;
  get.set_node_id("lab-03");
  v1::GetNodeResponse node;
  ASSERT_TRUE(fleet_->GetNode(&ctx4, get, &node).ok());
  EXPECT_EQ(node.latest_frame().seq(), 1u);
  EXPECT_EQ(node.node().thermal_state(), v1::THERMAL_STATE_SERIOUS);

  grpc::ClientContext ctx5;
  get.set_node_id("nobody");
  EXPECT_EQ(fleet_->GetNode(&ctx5, get, &node).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext ctx6;
  v1::HistoryRequest h;
  h.set_node_id("studio-01");  // default window: the last hour before the clock's now
  v1::HistoryResponse history;
  ASSERT_TRUE(fleet_->History(&ctx6, h, &history).ok());
  ASSERT_EQ(history.points_size(), 1);
  EXPECT_DOUBLE_EQ(history.points(0).wes_penalized(), 89.0 / 60.0);

  grpc::ClientContext ctx7;
  h.set_node_id("bad id!");
  EXPECT_EQ(fleet_->History(&ctx7, h, &history).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext ctx8;
  v1::PickRequest pick;
  pick.set_model("llama3-8b");
  pick.mutable_constraints()->set_max_thermal_state(v1::THERMAL_STATE_FAIR);
  v1::PickResponse picked;
  ASSERT_TRUE(router_->Pick(&ctx8, pick, &picked).ok());
  EXPECT_EQ(picked.recommendation().node_id(), "studio-01");
  ASSERT_EQ(picked.excluded_size(), 1);
  EXPECT_EQ(picked.excluded(0).node_id(), "lab-03");

  grpc::ClientContext ctx9;
  pick.set_model("");
  EXPECT_EQ(router_->Pick(&ctx9, pick, &picked).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A restarted aggregator rebuilds the same leaderboard and routing answers from the database.
  grpc::ClientContext before_board_ctx;
  v1::LeaderboardResponse before_board;
  ASSERT_TRUE(fleet_->Leaderboard(&before_board_ctx, v1::LeaderboardRequest(), &before_board).ok());
  grpc::ClientContext before_pick_ctx;
  pick.set_model("llama3-8b");
  v1::PickResponse before_pick;
  ASSERT_TRUE(router_->Pick(&before_pick_ctx, pick, &before_pick).ok());

  server_->Stop();
  StartAggregator();
  grpc::ClientContext ctx10;
  ASSERT_TRUE(fleet_->Leaderboard(&ctx10, v1::LeaderboardRequest(), &board).ok());
  ASSERT_EQ(board.entries_size(), 4);
  EXPECT_EQ(board.entries(0).node_id(), "studio-01");
  EXPECT_EQ(board.entries(3).node_id(), "spare-04");
  EXPECT_EQ(board.entries(0).labels().at("site"), "lab");
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(before_board, board))
      << "before:\n"
      << before_board.DebugString() << "after:\n"
      << board.DebugString();
  grpc::ClientContext ctx11;
  v1::PickResponse after_pick;
  ASSERT_TRUE(router_->Pick(&ctx11, pick, &after_pick).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(before_pick, after_pick))
      << "before:\n"
      << before_pick.DebugString() << "after:\n"
      << after_pick.DebugString();
}

// Rank histories and baselines come back from the checkpoint written at stop: after a restart
// the leaderboards carry the same previous ranks, ranks an hour ago and baseline losses.
TEST_F(ServerPgTest, RankHistoryAndBaselinesSurviveARestart) {
  server_->Stop();
  leaderboard_.baseline_min_samples = 3;
  StartAggregator();
  const absl::Time start = clock_.Now();
  uint64_t seq = 0;
  for (int minute : {0, 1, 2, 3, 4, 5, 61, 62, 63, 64, 65}) {
    clock_.Advance(start + absl::Minutes(minute) - clock_.Now());
    ++seq;
    const bool hot = minute >= 61;
    const ModelSpec a{.tokens_per_s = hot ? 50.0 : 100.0 + minute,
                      .watts = 100,
                      .state = hot ? v1::THERMAL_STATE_SERIOUS : v1::THERMAL_STATE_NORMAL};
    const ModelSpec b{.tokens_per_s = 80, .watts = 100};
    // A 60 s interval keeps both fresh between the minutes.
    ASSERT_EQ(Publish("edge-a", {MakeFrame("edge-a", "boot-a", seq, clock_.Now(), a, 60)}, seq).ack,
              seq);
    ASSERT_EQ(Publish("edge-b", {MakeFrame("edge-b", "boot-a", seq, clock_.Now(), b, 60)}, seq).ack,
              seq);
  }
  auto boards = [&] {
    std::vector<v1::LeaderboardResponse> out;
    for (const char* model : {"", "llama3-8b"}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(Deadline());
      v1::LeaderboardRequest r;
      r.set_model(model);
      EXPECT_TRUE(fleet_->Leaderboard(&ctx, r, &out.emplace_back()).ok());
    }
    return out;
  };
  const std::vector<v1::LeaderboardResponse> before = boards();
  ASSERT_EQ(before[0].entries_size(), 2);
  const v1::LeaderboardEntry& a = before[0].entries(1);
  ASSERT_EQ(a.node_id(), "edge-a");
  EXPECT_EQ(a.previous_rank(), 1u);
  EXPECT_EQ(a.rank_1h_ago(), 1u);
  EXPECT_GT(a.baseline_loss_pct(), 70);

  server_->Stop();
  EXPECT_EQ(Count("SELECT count(*) FROM board_tracks"), 4);
  StartAggregator();
  const std::vector<v1::LeaderboardResponse> after = boards();
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(before[i], after[i]))
        << "before:\n"
        << before[i].DebugString() << "after:\n"
        << after[i].DebugString();
  }
}

TEST_F(ServerPgTest, TheRetentionTimerDropsExpiredPartitions) {
  server_->Stop();
  retention_.frames_days = 3;
  retention_.check_interval = absl::Minutes(10);
  StartAggregator();
  // A day far past the frames retention, as an aggregator that was down a while would find it,
  // with a row in it.
  {
    pqxx::connection c(db().url());
    ASSERT_TRUE(
        CreateDayPartitions(c, "frames", absl::CivilDay(2025, 12, 1), absl::CivilDay(2025, 12, 1))
            .ok());
    pqxx::work tx(c);
    tx.exec(
        "INSERT INTO frames (node_id, boot_id, seq, window_start, window_end, received_at, "
        "interval_s, decode_tokens_per_s, pue, thermal_state, memory_pressure, frame) VALUES "
        "('n1', 'b1', 1, '2025-12-01 11:59:58+00', '2025-12-01 12:00:00+00', now(), 2, 3, 1, 1, "
        "false, '\\x00')");
    tx.commit();
  }
  EXPECT_EQ(Count("SELECT count(*) FROM frames_p20251201"), 1);
  const double dropped_before = server_->metrics().partitions_dropped().Value();

  // The timer's next pass, one check_interval later on the aggregator's clock.
  clock_.Advance(absl::Minutes(10));
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (server_->metrics().partitions_dropped().Value() == dropped_before &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(Count("SELECT count(*) FROM pg_class WHERE relname = 'frames_p20251201'"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM frames"), 0);
  EXPECT_EQ(server_->metrics().partitions_dropped().Value(), dropped_before + 1);
  // Today's partition and the ones ahead are still there.
  EXPECT_EQ(Count("SELECT count(*) FROM pg_class WHERE relname = 'frames_p20260101'"), 1);
}

TEST_F(ServerPgTest, HealthCheckingIsServing) {
  // grpc.health.v1.Health/Check with an empty HealthCheckRequest, through the generic stub (no
  // generated health client is installed); SERVING encodes as field 1 = 1: bytes 08 01.
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace fleetwes::aggregator
