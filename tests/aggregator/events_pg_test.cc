// Events, profiles and stepped history on a real PostgreSQL, and the Fleet calls behind them on a
// real gRPC server on 127.0.0.1:0: schema version 3 upgrade, the event hub's writer, filters,
// WatchLeaderboard (first board, coalesced updates with events, cancel, shutdown), Profile and
// History with a step, and the HTTP routes.
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/fleet/event_hub.h"
#include "aggregator/fleet/fleet_service.h"
#include "aggregator/http/json_api.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/proto_time.h"
#include "aggregator/server.h"
#include "aggregator/store/event_store.h"
#include "aggregator/store/migrations.h"
#include "aggregator/store/partitions.h"
#include "aggregator/store/pg_batch_store.h"
#include "common/clock.h"
#include "fleetwes/v1/fleet.grpc.pb.h"
#include "tests/aggregator/test_frames.h"
#include "tests/support/pg_test_db.h"

namespace fleetwes::aggregator {
namespace {

using testing::MakeFrame;
using testing::ModelSpec;
using testing::T0;  // 2026-01-01 00:00:00 UTC

int64_t Count(const std::string& url, const std::string& sql) {
  pqxx::connection c(url);
  pqxx::read_transaction tx(c);
  return tx.exec1(sql)[0].as<int64_t>();
}

v1::Event MakeEvent(absl::Time t, const std::string& node, const std::string& model,
                    v1::EventKind kind, uint32_t old_rank = 0, uint32_t new_rank = 0) {
  v1::Event e;
  *e.mutable_time() = ToProtoTime(t);
  e.set_node_id(node);
  e.set_model(model);
  e.set_kind(kind);
  e.set_old_rank(old_rank);
  e.set_new_rank(new_rank);
  if (kind == v1::EVENT_KIND_THERMAL_CHANGE) {
    e.set_old_thermal_state(v1::THERMAL_STATE_NORMAL);
    e.set_new_thermal_state(v1::THERMAL_STATE_SERIOUS);
  }
  e.set_message(absl::StrCat(node, " ", old_rank, " -> ", new_rank));
  return e;
}

// Polls `done` until it holds or 10 s of real time passed.
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

class EventsPgTest : public fleetwes::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    conn_ = std::make_unique<pqxx::connection>(db().url());
  }

  // Writes frames through the batch store, as the writer does after ingest.
  void Store(std::vector<v1::Frame> frames) {
    PgBatchStore store(db().url(), RetentionConfig{}, &clock_);
    std::vector<FrameRecord> records;
    for (v1::Frame& f : frames) {
      RecomputeWes(ThermalPenalties{}, &f);
      auto frame = std::make_shared<const v1::Frame>(std::move(f));
      records.push_back(
          FrameRecord{frame, frame->SerializeAsString(), FromProtoTime(frame->window_end())});
    }
    std::vector<const FrameRecord*> ptrs;
    for (const FrameRecord& r : records) ptrs.push_back(&r);
    absl::StatusOr<std::vector<bool>> written = store.WriteBatch({}, ptrs);
    ASSERT_TRUE(written.ok()) << written.status();
  }

  FakeClock clock_{T0() + absl::Hours(1)};
  AggregatorMetrics metrics_;
  std::unique_ptr<pqxx::connection> conn_;
};

TEST_F(EventsPgTest, UpgradesAVersionTwoDatabaseWithTheEventsTable) {
  ASSERT_TRUE(ApplyMigrations(*conn_, SchemaMigrations().subspan(0, 2)).ok());
  {
    pqxx::work tx(*conn_);
    tx.exec(
        "CREATE TABLE frames_p20260101 PARTITION OF frames FOR VALUES FROM "
        "('2026-01-01 00:00:00+00') TO ('2026-01-02 00:00:00+00')");
    tx.exec(
        "INSERT INTO frames (node_id, boot_id, seq, window_start, window_end, received_at, "
        "interval_s, decode_tokens_per_s, pue, thermal_state, memory_pressure, frame) VALUES "
        "('n1', 'b1', 1, '2026-01-01 10:00:00+00', '2026-01-01 10:00:02+00', now(), 2, 31, 1, 1, "
        "false, '\\x00')");
    tx.commit();
  }
  absl::StatusOr<int> upgraded = ApplyMigrations(*conn_);
  ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  EXPECT_EQ(*upgraded, static_cast<int>(SchemaMigrations().size()) - 2);
  EXPECT_EQ(Count(db().url(), "SELECT count(*) FROM frames"), 1);
  EXPECT_EQ(
      Count(db().url(), "SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'p'"),
      1);
  EXPECT_EQ(Count(db().url(),
                  "SELECT count(*) FROM pg_indexes WHERE tablename = 'events' AND indexname IN "
                  "('events_node_id_time', 'events_time')"),
            2);

  // Retention covers the new table: days created ahead, expired days dropped.
  RetentionConfig retention;
  retention.events_days = 2;
  ASSERT_TRUE(CreateDayPartitions(*conn_, "events", absl::CivilDay(2025, 12, 20),
                                  absl::CivilDay(2025, 12, 20))
                  .ok());
  absl::StatusOr<MaintenanceResult> m = MaintainPartitions(*conn_, retention, T0());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Count(db().url(), "SELECT count(*) FROM pg_class WHERE relname = 'events_p20260103'"),
            1);
  EXPECT_EQ(Count(db().url(), "SELECT count(*) FROM pg_class WHERE relname = 'events_p20251220'"),
            0);

  // A second run applies nothing.
  absl::StatusOr<int> again = ApplyMigrations(*conn_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0);
}

TEST_F(EventsPgTest, TheHubStoresEventsAndFleetEventsFiltersThem) {
  ASSERT_TRUE(ApplyMigrations(*conn_).ok());
  const absl::Time now = clock_.Now();
  RetentionConfig retention;
  retention.events_days = 3;
  {
    EventHub hub(db().url(), retention, &clock_, &metrics_);
    hub.Start();
    hub.Publish(
        {MakeEvent(now - absl::Minutes(30), "edge-1", "", v1::EVENT_KIND_RANK_CHANGE, 2, 1),
         MakeEvent(now - absl::Minutes(20), "edge-2", "", v1::EVENT_KIND_RANK_CHANGE, 1, 2),
         MakeEvent(now - absl::Minutes(10), "edge-1", "llama3", v1::EVENT_KIND_THERMAL_CHANGE),
         // Yesterday: its day partition is created on demand.
         MakeEvent(now - absl::Hours(20), "edge-3", "", v1::EVENT_KIND_STALE, 3, 0),
         // Past the retention: not stored.
         MakeEvent(now - absl::Hours(24 * 4), "edge-3", "", v1::EVENT_KIND_STALE, 3, 0),
         // Invalid: no kind.
         MakeEvent(now, "edge-4", "", v1::EVENT_KIND_UNSPECIFIED)});
    hub.Stop();  // flushes
  }
  EXPECT_EQ(Count(db().url(), "SELECT count(*) FROM events"), 4);
  EXPECT_EQ(metrics_.events_published().Value(), 6);
  EXPECT_EQ(metrics_.events_stored().Value(), 4);
  EXPECT_EQ(metrics_.events_dropped("expired").Value(), 1);
  EXPECT_EQ(metrics_.events_dropped("invalid").Value(), 1);

  FleetState state;
  PgReader reader(db().url());
  FleetQueries queries(&state, &reader, &clock_, StalenessPolicy{});

  // Default range: the last 24 hours, newest first.
  absl::StatusOr<v1::EventsResponse> all = queries.Events(v1::EventsRequest());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->events_size(), 4);
  EXPECT_EQ(all->events(0).node_id(), "edge-1");
  EXPECT_EQ(all->events(0).model(), "llama3");
  EXPECT_EQ(all->events(0).new_thermal_state(), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(all->events(1).node_id(), "edge-2");
  EXPECT_EQ(all->events(1).old_rank(), 1u);
  EXPECT_EQ(all->events(1).new_rank(), 2u);
  EXPECT_EQ(all->events(1).message(), "edge-2 1 -> 2");
  EXPECT_EQ(FromProtoTime(all->events(1).time()), now - absl::Minutes(20));
  EXPECT_EQ(all->events(3).kind(), v1::EVENT_KIND_STALE);

  v1::EventsRequest r;
  r.set_node_id("edge-1");
  absl::StatusOr<v1::EventsResponse> by_node = queries.Events(r);
  ASSERT_TRUE(by_node.ok());
  EXPECT_EQ(by_node->events_size(), 2);

  r.add_kinds(v1::EVENT_KIND_RANK_CHANGE);
  absl::StatusOr<v1::EventsResponse> by_kind = queries.Events(r);
  ASSERT_TRUE(by_kind.ok());
  ASSERT_EQ(by_kind->events_size(), 1);
  EXPECT_EQ(by_kind->events(0).new_rank(), 1u);

  v1::EventsRequest by_model;
  by_model.set_model("llama3");
  EXPECT_EQ(queries.Events(by_model)->events_size(), 1);

  v1::EventsRequest recent;
  *recent.mutable_start() = ToProtoTime(now - absl::Minutes(25));
  recent.set_limit(1);
  absl::StatusOr<v1::EventsResponse> limited = queries.Events(recent);
  ASSERT_TRUE(limited.ok());
  ASSERT_EQ(limited->events_size(), 1);
  EXPECT_EQ(limited->events(0).model(), "llama3");

  v1::EventsRequest bad;
  *bad.mutable_start() = ToProtoTime(now);
  *bad.mutable_end() = ToProtoTime(now - absl::Minutes(1));
  EXPECT_EQ(queries.Events(bad).status().code(), absl::StatusCode::kInvalidArgument);
  *bad.mutable_start() = ToProtoTime(now - absl::Hours(24 * 40));
  *bad.mutable_end() = ToProtoTime(now);
  EXPECT_EQ(queries.Events(bad).status().code(), absl::StatusCode::kInvalidArgument);
  v1::EventsRequest bad_kind;
  bad_kind.add_kinds(static_cast<v1::EventKind>(42));
  EXPECT_EQ(queries.Events(bad_kind).status().code(), absl::StatusCode::kInvalidArgument);

  // The HTTP route over the same query.
  JsonApi api(&queries, &state, &metrics_, &clock_, StalenessPolicy{});
  JsonReply reply = api.Handle("/api/v1/events", {{"node", "edge-1"}, {"kind", "thermal_change"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  nlohmann::json j = nlohmann::json::parse(reply.body);
  ASSERT_EQ(j["events"].size(), 1u);
  EXPECT_EQ(j["events"][0]["kind"], "EVENT_KIND_THERMAL_CHANGE");
  reply = api.Handle("/api/v1/events", {{"since", "15m"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(nlohmann::json::parse(reply.body)["events"].size(), 1u);
  EXPECT_EQ(api.Handle("/api/v1/events", {{"kind", "hot"}}).status, 400);
  EXPECT_EQ(api.Handle("/api/v1/events", {{"since", "yesterday"}}).status, 400);
  EXPECT_EQ(api.Handle("/api/v1/events", {{"node", "edge 1"}}).status, 400);
}

// Two nodes serving llama3, one sample every 10 s for a minute; edge-1's TTFT, queue and thermal
// state vary so buckets have known averages and worst states.
class ProfilePgTest : public EventsPgTest {
 protected:
  void SetUp() override {
    EventsPgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(ApplyMigrations(*conn_).ok());
    std::vector<v1::Frame> frames;
    for (int i = 0; i < 6; ++i) {
      ModelSpec spec;
      spec.model = "llama3";
      spec.tokens_per_s = 10.0 * (i + 1);  // 10, 20, ..., 60
      spec.watts = 50;
      spec.ttft_p95_s = 0.1 * (i + 1);
      spec.waiting = static_cast<uint32_t>(i);
      spec.kv_cache_usage = 0.5;
      spec.state = i == 1 ? v1::THERMAL_STATE_SERIOUS : v1::THERMAL_STATE_NORMAL;
      frames.push_back(MakeFrame("edge-1", "b1", static_cast<uint64_t>(i + 1),
                                 T0() + absl::Seconds(10 * i), spec, 10.0));
    }
    ModelSpec other;
    other.model = "qwen";
    frames.push_back(MakeFrame("edge-1", "b1", 7, T0() + absl::Seconds(55), other, 5.0));
    Store(std::move(frames));
    reader_ = std::make_unique<PgReader>(db().url());
    queries_ = std::make_unique<FleetQueries>(&state_, reader_.get(), &clock_, StalenessPolicy{});
  }

  static google::protobuf::Duration Step(int64_t seconds) {
    google::protobuf::Duration d;
    d.set_seconds(seconds);
    return d;
  }

  FleetState state_;
  std::unique_ptr<PgReader> reader_;
  std::unique_ptr<FleetQueries> queries_;
};

TEST_F(ProfilePgTest, ProfileAnswersTheBusiestModelAndAveragesBuckets) {
  v1::ProfileRequest r;
  r.set_node_id("edge-1");
  *r.mutable_start() = ToProtoTime(T0() - absl::Minutes(1));
  *r.mutable_end() = ToProtoTime(T0() + absl::Minutes(2));
  absl::StatusOr<v1::ProfileResponse> every = queries_->Profile(r);
  ASSERT_TRUE(every.ok()) << every.status();
  EXPECT_EQ(every->model(), "llama3");  // six samples against one
  ASSERT_EQ(every->points_size(), 6);
  EXPECT_EQ(FromProtoTime(every->points(0).time()), T0());
  EXPECT_DOUBLE_EQ(every->points(2).tokens_per_s(), 30);
  EXPECT_NEAR(every->points(2).ttft_p95_s(), 0.3, 1e-9);
  EXPECT_EQ(every->points(2).queue(), 2u);
  EXPECT_DOUBLE_EQ(every->points(2).kv_cache_usage(), 0.5);
  EXPECT_DOUBLE_EQ(every->points(2).watts(), 50);
  EXPECT_EQ(every->points(1).thermal_state(), v1::THERMAL_STATE_SERIOUS);
  ASSERT_TRUE(every->points(0).has_wes_raw());
  EXPECT_NEAR(every->points(0).wes_raw(), 10.0 / 50.0, 1e-9);
  EXPECT_FALSE(every->points(0).memory_pressure());

  // 30 s buckets: [0, 30) holds samples 0..2, [30, 60) samples 3..5.
  *r.mutable_step() = Step(30);
  absl::StatusOr<v1::ProfileResponse> stepped = queries_->Profile(r);
  ASSERT_TRUE(stepped.ok()) << stepped.status();
  ASSERT_EQ(stepped->points_size(), 2);
  EXPECT_EQ(FromProtoTime(stepped->points(0).time()), T0());
  EXPECT_EQ(FromProtoTime(stepped->points(1).time()), T0() + absl::Seconds(30));
  EXPECT_DOUBLE_EQ(stepped->points(0).tokens_per_s(), 20);
  EXPECT_DOUBLE_EQ(stepped->points(1).tokens_per_s(), 50);
  EXPECT_NEAR(stepped->points(0).ttft_p95_s(), 0.2, 1e-9);
  EXPECT_EQ(stepped->points(0).queue(), 1u);
  EXPECT_EQ(stepped->points(1).queue(), 4u);
  EXPECT_EQ(stepped->points(0).thermal_state(), v1::THERMAL_STATE_SERIOUS);  // the worst
  EXPECT_EQ(stepped->points(1).thermal_state(), v1::THERMAL_STATE_NORMAL);

  r.set_model("qwen");
  r.clear_step();
  EXPECT_EQ(queries_->Profile(r)->points_size(), 1);

  v1::ProfileRequest unknown;
  unknown.set_node_id("edge-9");
  EXPECT_EQ(queries_->Profile(unknown).status().code(), absl::StatusCode::kNotFound);
  v1::ProfileRequest bad = r;
  *bad.mutable_step() = Step(-5);
  EXPECT_EQ(queries_->Profile(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.mutable_step()->set_seconds(0);
  bad.mutable_step()->set_nanos(1000);  // below the 1 s minimum
  EXPECT_EQ(queries_->Profile(bad).status().code(), absl::StatusCode::kInvalidArgument);

  JsonApi api(queries_.get(), &state_, &metrics_, &clock_, StalenessPolicy{});
  // since 2h back from T0 + 1h covers the samples.
  JsonReply reply = api.Handle("/api/v1/nodes/edge-1/profile", {{"since", "2h"}, {"step", "30s"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  nlohmann::json j = nlohmann::json::parse(reply.body);
  EXPECT_EQ(j["model"], "llama3");
  ASSERT_EQ(j["points"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["points"][1]["tokens_per_s"].get<double>(), 50);
  EXPECT_EQ(api.Handle("/api/v1/nodes/edge-1/profile", {{"step", "fast"}}).status, 400);
  EXPECT_EQ(api.Handle("/api/v1/nodes/edge-9/profile", {{"since", "2h"}}).status, 404);
}

TEST_F(ProfilePgTest, HistoryWithAStepAveragesInSql) {
  v1::HistoryRequest r;
  r.set_node_id("edge-1");
  r.set_model("llama3");
  *r.mutable_start() = ToProtoTime(T0() - absl::Minutes(1));
  *r.mutable_end() = ToProtoTime(T0() + absl::Minutes(2));
  *r.mutable_step() = Step(20);
  absl::StatusOr<v1::HistoryResponse> h = queries_->History(r);
  ASSERT_TRUE(h.ok()) << h.status();
  // [0,20): 10, 20; [20,40): 30, 40; [40,60): 50, 60.
  ASSERT_EQ(h->points_size(), 3);
  EXPECT_DOUBLE_EQ(h->points(0).tokens_per_s(), 15);
  EXPECT_DOUBLE_EQ(h->points(1).tokens_per_s(), 35);
  EXPECT_DOUBLE_EQ(h->points(2).tokens_per_s(), 55);
  EXPECT_EQ(h->points(0).thermal_state(), v1::THERMAL_STATE_SERIOUS);
  EXPECT_NEAR(h->points(2).wes_raw(), (50.0 / 50 + 60.0 / 50) / 2, 1e-9);

  // Node level, from frames; the limit keeps the latest buckets.
  r.clear_model();
  r.set_limit(2);
  h = queries_->History(r);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->points_size(), 2);
  EXPECT_EQ(FromProtoTime(h->points(0).time()), T0() + absl::Seconds(20));
  // [40, 60) holds the llama3 frames at 40 and 50 s and the qwen frame at 55 s (89 tok/s).
  EXPECT_NEAR(h->points(1).tokens_per_s(), (50.0 + 60 + 89) / 3, 1e-9);

  *r.mutable_step() = Step(3 * 24 * 3600);
  EXPECT_EQ(queries_->History(r).status().code(), absl::StatusCode::kInvalidArgument);
}

// The aggregator in-process: real gRPC on 127.0.0.1:0, events published into its hub.
class WatchPgTest : public fleetwes::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    AggregatorConfig config;
    config.grpc_listen = "127.0.0.1:0";
    config.http_listen = "127.0.0.1:0";
    config.database_url = db().url();
    config.leaderboard.max_watchers = 2;
    server_ = std::make_unique<AggregatorServer>(config, &clock_);
    absl::Notification never;
    ASSERT_TRUE(server_->Start(&never).ok());
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    fleet_ = v1::Fleet::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Stop();
  }

  void AddNode(const std::string& node, uint64_t seq, double tokens_per_s) {
    v1::Frame f = MakeFrame(node, "b1", seq, clock_.Now(), {.tokens_per_s = tokens_per_s});
    RecomputeWes(ThermalPenalties{}, &f);
    server_->state().ApplyFrame(std::make_shared<const v1::Frame>(std::move(f)), clock_.Now());
  }

  FakeClock clock_{T0() + absl::Seconds(1)};
  std::unique_ptr<AggregatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Fleet::Stub> fleet_;
};

TEST_F(WatchPgTest, WatchSendsTheBoardThenCoalescedUpdatesWithEvents) {
  AddNode("edge-1", 1, 80);
  grpc::ClientContext ctx;
  v1::WatchLeaderboardRequest req;
  std::unique_ptr<grpc::ClientReader<v1::LeaderboardUpdate>> stream =
      fleet_->WatchLeaderboard(&ctx, req);
  v1::LeaderboardUpdate first;
  ASSERT_TRUE(stream->Read(&first));
  ASSERT_EQ(first.leaderboard().entries_size(), 1);
  EXPECT_EQ(first.leaderboard().entries(0).node_id(), "edge-1");
  EXPECT_EQ(first.events_size(), 0);

  // A faster node joins: the fleet state publishes its rank change on the fleet board and on
  // its model's board; the watch of the fleet board gets only the first.
  AddNode("edge-2", 1, 160);
  // The update comes once the coalescing second after the first board has passed.
  clock_.Advance(absl::Seconds(1));
  v1::LeaderboardUpdate update;
  ASSERT_TRUE(stream->Read(&update));
  ASSERT_EQ(update.leaderboard().entries_size(), 2);
  EXPECT_EQ(update.leaderboard().entries(0).node_id(), "edge-2");
  ASSERT_EQ(update.events_size(), 1);
  EXPECT_EQ(update.events(0).new_rank(), 1u);
  EXPECT_EQ(update.events(0).model(), "");

  // The event was stored too.
  EXPECT_TRUE(Eventually([&] {
    return Count(db().url(), "SELECT count(*) FROM events WHERE node_id = 'edge-2'") == 2;
  }));

  // Cancelling ends the stream and frees the server's watcher.
  ctx.TryCancel();
  while (stream->Read(&update)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return server_->events().watchers() == 0; }));
}

TEST_F(WatchPgTest, ShutdownEndsOpenWatchesPromptly) {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::LeaderboardUpdate>> stream =
      fleet_->WatchLeaderboard(&ctx, v1::WatchLeaderboardRequest());
  v1::LeaderboardUpdate first;
  ASSERT_TRUE(stream->Read(&first));
  EXPECT_EQ(first.leaderboard().entries_size(), 0);
  ASSERT_EQ(server_->events().watchers(), 1u);

  const absl::Time before = absl::Now();
  server_->Stop();
  EXPECT_LT(absl::Now() - before, absl::Seconds(5));
  v1::LeaderboardUpdate more;
  EXPECT_FALSE(stream->Read(&more));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(WatchPgTest, WatchesBeyondTheLimitAreRefused) {
  grpc::ClientContext ctx[3];
  std::unique_ptr<grpc::ClientReader<v1::LeaderboardUpdate>> streams[3];
  v1::LeaderboardUpdate first;
  for (int i = 0; i < 2; ++i) {
    streams[i] = fleet_->WatchLeaderboard(&ctx[i], v1::WatchLeaderboardRequest());
    ASSERT_TRUE(streams[i]->Read(&first)) << i;
  }
  // The third is refused at once, naming the limit; the two open ones are unaffected.
  streams[2] = fleet_->WatchLeaderboard(&ctx[2], v1::WatchLeaderboardRequest());
  EXPECT_FALSE(streams[2]->Read(&first));
  const grpc::Status refused = streams[2]->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("leaderboard.max_watchers"));
  EXPECT_EQ(server_->events().watchers(), 2u);
  // Once one ends, a new watch is served.
  ctx[0].TryCancel();
  while (streams[0]->Read(&first)) {
  }
  streams[0]->Finish();
  EXPECT_TRUE(Eventually([&] { return server_->events().watchers() == 1; }));
  grpc::ClientContext again;
  std::unique_ptr<grpc::ClientReader<v1::LeaderboardUpdate>> stream =
      fleet_->WatchLeaderboard(&again, v1::WatchLeaderboardRequest());
  EXPECT_TRUE(stream->Read(&first));
  again.TryCancel();
  while (stream->Read(&first)) {
  }
  stream->Finish();
}

TEST_F(WatchPgTest, BadRequestsAreRefusedWithTheReason) {
  v1::EventsRequest r;
  *r.mutable_start() = ToProtoTime(clock_.Now());
  *r.mutable_end() = ToProtoTime(clock_.Now() - absl::Hours(1));
  v1::EventsResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = fleet_->Events(&ctx, r, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "start: after end");

  v1::ProfileRequest p;
  p.set_node_id("edge-1");
  v1::ProfileResponse presp;
  grpc::ClientContext ctx2;
  s = fleet_->Profile(&ctx2, p, &presp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("edge-1"), std::string::npos);

  grpc::ClientContext ctx3;
  v1::WatchLeaderboardRequest w;
  w.set_model(std::string(300, 'm'));
  auto stream = fleet_->WatchLeaderboard(&ctx3, w);
  v1::LeaderboardUpdate u;
  EXPECT_FALSE(stream->Read(&u));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace fleetwes::aggregator
