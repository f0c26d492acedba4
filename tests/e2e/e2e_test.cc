// End to end with the real binaries: a replayed llama.cpp engine with a fake RAPL zone, a
// fleetwes-agent sampling it every 0.5 s, a fleetwes-aggregator writing to a fresh PostgreSQL
// database; then the rows, the WES arithmetic and the leaderboard are checked. Every child
// process is stopped in TearDown and dies with the test process (PR_SET_PDEATHSIG).
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fleetwes/v1/fleet.grpc.pb.h"
#include "fleetwes/v1/telemetry.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/pg_test_db.h"

extern char** environ;

namespace fleetwes {
namespace {

namespace fs = std::filesystem;

constexpr double kTokensPerS = 100;
constexpr double kWatts = 40;

using Child = testing::ChildProcess;
using testing::PollUntil;

int FreePort() { return testing::FreeLoopbackPort(); }

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double RelDiff(double a, double b) {
  return std::fabs(a - b) / std::max(std::fabs(a), std::fabs(b));
}

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleetwes-e2e.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    hw_root_ = dir_ / "hw";
    fs::create_directories(hw_root_);
  }

  void TearDown() override {
    // Children first, then the database and the files.
    for (Child* c : {agent_.get(), engine_.get(), aggregator_.get()}) {
      if (c != nullptr) c->Stop();
    }
    db_.reset();
    if (HasFailure()) {
      for (const char* name : {"aggregator.log", "agent.log", "engine.log"}) {
        if (fs::exists(dir_ / name)) {
          std::cerr << "----- " << name << " -----\n" << ReadFile(dir_ / name) << "\n";
        }
      }
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The replayed llama-server with a RAPL zone under hw_root_.
  void StartEngine() {
    const fs::path port_file = dir_ / "engine.port";
    engine_ = Child::Spawn(
        {FLEETWES_REPLAY_ENGINE_BIN, "--kind=llamacpp", "--port=0",
         absl::StrCat("--port_file=", port_file.string()),
         absl::StrCat("--tokens_per_s=", kTokensPerS),
         absl::StrCat("--rapl_root=", hw_root_.string()), absl::StrCat("--watts=", kWatts)},
        (dir_ / "engine.log").string());
    ASSERT_NE(engine_, nullptr);
    ASSERT_TRUE(PollUntil(absl::Seconds(20),
                          [&] { return fs::exists(port_file) && !ReadFile(port_file).empty(); }))
        << "no port file; engine running: " << engine_->Running();
    engine_port_ = std::stoi(ReadFile(port_file));
    ASSERT_GT(engine_port_, 0);
  }

  // The aggregator on free loopback ports; retried if a port was taken in between.
  void StartAggregator(const std::string& database_url) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      grpc_port_ = FreePort();
      http_port_ = FreePort();
      ASSERT_GT(grpc_port_, 0);
      ASSERT_GT(http_port_, 0);
      if (grpc_port_ == http_port_) continue;
      const fs::path config = dir_ / "aggregator.yaml";
      WriteFile(config, absl::StrCat("grpc_listen: \"127.0.0.1:", grpc_port_, "\"\n",
                                     "http_listen: \"127.0.0.1:", http_port_, "\"\n",
                                     "database:\n  url: \"", database_url, "\"\n"));
      aggregator_ = Child::Spawn({FLEETWES_AGGREGATOR_BIN, "--config", config.string()},
                                 (dir_ / "aggregator.log").string(),
                                 {{"FLEETWES_DATABASE_URL", database_url}});
      ASSERT_NE(aggregator_, nullptr);
      httplib::Client http("127.0.0.1", http_port_);
      http.set_connection_timeout(1);
      const bool healthy = PollUntil(absl::Seconds(30), [&] {
        if (!aggregator_->Running()) return true;
        auto res = http.Get("/healthz");
        return res && res->status == 200;
      });
      ASSERT_TRUE(healthy) << "fleetwes-aggregator not healthy within 30s";
      if (aggregator_->Running()) return;
    }
    FAIL() << "fleetwes-aggregator exited at start-up:\n" << aggregator_->Output();
  }

  std::string AgentConfig(const std::string& node_id) const {
    return absl::StrCat(
        "node_id: ", node_id, "\n", "labels:\n  suite: e2e\n",
        "aggregators: [\"127.0.0.1:", grpc_port_, "\"]\n", "interval: 0.5s\n", "engines:\n",
        "  - name: llama\n    kind: llamacpp\n    url: \"http://127.0.0.1:", engine_port_, "\"\n",
        "hardware:\n  root: \"", hw_root_.string(), "\"\n", "spool:\n  dir: \"",
        (dir_ / "spool").string(), "\"\n",
        // Hermetic: no fixed local HTTP port shared with other agents on this machine.
        "http:\n  listen: \"\"\n");
  }

  fs::path dir_;
  fs::path hw_root_;
  int engine_port_ = 0;
  int grpc_port_ = 0;
  int http_port_ = 0;
  std::unique_ptr<Child> engine_;
  std::unique_ptr<Child> aggregator_;
  std::unique_ptr<Child> agent_;
  std::unique_ptr<testing::PgTestDb> db_;  // dropped after the aggregator stopped
};

struct FrameRow {
  std::string boot_id;
  int64_t seq;
  double tokens_per_s;
  std::optional<double> watts;
  double pue;
  std::optional<double> wes_raw;
  std::optional<double> wes_penalized;
};

std::vector<FrameRow> FrameRows(pqxx::connection& conn, const std::string& node) {
  pqxx::read_transaction tx(conn);
  std::vector<FrameRow> rows;
  for (const pqxx::row& r : tx.exec_params(
           "SELECT boot_id, seq, decode_tokens_per_s, watts, pue, wes_raw, wes_penalized "
           "FROM frames WHERE node_id = $1 ORDER BY seq",
           node)) {
    FrameRow f;
    f.boot_id = r[0].as<std::string>();
    f.seq = r[1].as<int64_t>();
    f.tokens_per_s = r[2].as<double>();
    if (!r[3].is_null()) f.watts = r[3].as<double>();
    f.pue = r[4].as<double>();
    if (!r[5].is_null()) f.wes_raw = r[5].as<double>();
    if (!r[6].is_null()) f.wes_penalized = r[6].as<double>();
    rows.push_back(f);
  }
  return rows;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

TEST_F(EndToEndTest, AgentFramesReachPostgresAndTheLeaderboard) {
  const std::optional<std::string> cluster = testing::PgTestDb::ClusterUrl();
  if (!cluster.has_value()) GTEST_SKIP() << testing::PgTestDb::SkipMessage();
  absl::StatusOr<std::unique_ptr<testing::PgTestDb>> db = testing::PgTestDb::Create(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = *std::move(db);
  const std::string url = db_->url();

  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAggregator(url));
  const std::string node = "e2e-node-1";
  WriteFile(dir_ / "agent.yaml", AgentConfig(node));
  agent_ = Child::Spawn({FLEETWES_AGENT_BIN, "--config", (dir_ / "agent.yaml").string()},
                        (dir_ / "agent.log").string());
  ASSERT_NE(agent_, nullptr);

  pqxx::connection conn(url);
  // Enough windows with a rate and a WES: the first window has no previous scrape.
  ASSERT_TRUE(PollUntil(absl::Seconds(20), [&] {
    if (!agent_->Running() || !aggregator_->Running()) return true;
    int rated = 0;
    for (const FrameRow& f : FrameRows(conn, node)) rated += f.wes_raw.has_value() ? 1 : 0;
    return rated >= 6;
  })) << "no rated frames in PostgreSQL within 20s";
  ASSERT_TRUE(agent_->Running()) << agent_->Output();
  ASSERT_TRUE(aggregator_->Running()) << aggregator_->Output();

  // Stop the agent so the latest frame stays put, and wait until it is stored.
  EXPECT_EQ(agent_->Stop(), 0);

  std::vector<FrameRow> frames = FrameRows(conn, node);
  ASSERT_GE(frames.size(), 6u);
  // One boot, seq from 1 without gaps.
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].boot_id, frames[0].boot_id);
    EXPECT_EQ(frames[i].seq, static_cast<int64_t>(i + 1));
  }
  // WES raw stored == tok/s / (watts * PUE) of the same row, to full precision.
  std::vector<double> watts;
  for (const FrameRow& f : frames) {
    if (!f.wes_raw.has_value()) continue;
    ASSERT_TRUE(f.watts.has_value()) << "seq " << f.seq;
    EXPECT_EQ(f.pue, 1.0);
    EXPECT_LE(RelDiff(*f.wes_raw, f.tokens_per_s / (*f.watts * f.pue)), 1e-9) << "seq " << f.seq;
    EXPECT_LE(RelDiff(*f.wes_penalized, *f.wes_raw), 1e-9) << "no thermal zone: Normal";
    watts.push_back(*f.watts);
  }
  // The fake RAPL zone advances at kWatts, in 100 ms steps.
  EXPECT_NEAR(Median(watts), kWatts, 0.15 * kWatts);

  // Per-model samples: decode tok/s as configured on the engine.
  std::vector<double> model_tps;
  {
    pqxx::read_transaction tx(conn);
    for (const pqxx::row& r :
         tx.exec_params("SELECT decode_tokens_per_s, model FROM model_samples "
                        "WHERE node_id = $1 AND decode_tokens_per_s IS NOT NULL ORDER BY seq",
                        node)) {
      model_tps.push_back(r[0].as<double>());
      EXPECT_FALSE(r[1].as<std::string>().empty());
    }
  }
  ASSERT_GE(model_tps.size(), 5u);
  EXPECT_NEAR(Median(model_tps), kTokensPerS, 0.05 * kTokensPerS);

  // Fleet.Leaderboard ranks the node with the WES of its latest stored frame.
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                     grpc::InsecureChannelCredentials());
  auto fleet = v1::Fleet::NewStub(channel);
  v1::LeaderboardEntry entry;
  std::optional<FrameRow> latest;
  const bool matched = PollUntil(absl::Seconds(10), [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::LeaderboardResponse resp;
    if (!fleet->Leaderboard(&ctx, v1::LeaderboardRequest(), &resp).ok()) return false;
    frames = FrameRows(conn, node);
    latest.reset();
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      if (it->wes_raw.has_value()) {
        latest = *it;
        break;
      }
    }
    for (const auto& e : resp.entries()) {
      if (e.node_id() == node) {
        entry = e;
        return latest.has_value() && e.wes().has_raw() &&
               RelDiff(e.wes().raw(), *latest->wes_raw) <= 1e-9;
      }
    }
    return false;
  });
  ASSERT_TRUE(latest.has_value());
  EXPECT_TRUE(matched) << "leaderboard entry for " << node << ": " << entry.ShortDebugString()
                       << "\nlatest stored WES raw " << *latest->wes_raw;
  EXPECT_GE(entry.rank(), 1u);
  EXPECT_LE(RelDiff(entry.wes().penalized(), *latest->wes_penalized), 1e-9);
  EXPECT_EQ(entry.wes().power_scopes_size(), 1);
  EXPECT_EQ(entry.wes().power_scopes(0), v1::POWER_SCOPE_CPU_PACKAGE);

  // fleetwesctl against the same aggregator.
  auto ctl = Child::Spawn(
      {FLEETWESCTL_BIN, absl::StrCat("--server=127.0.0.1:", grpc_port_), "leaderboard"},
      (dir_ / "ctl.out").string());
  ASSERT_NE(ctl, nullptr);
  EXPECT_EQ(ctl->Wait(absl::Seconds(20)), std::optional<int>(0)) << ctl->Output();
  EXPECT_NE(ctl->Output().find(node), std::string::npos) << ctl->Output();
}

TEST_F(EndToEndTest, AgentOncePrintsOneWindowAsJson) {
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  grpc_port_ = FreePort();  // no aggregator needed for --once
  WriteFile(dir_ / "agent.yaml", AgentConfig("e2e-once"));
  auto once = Child::Spawn({FLEETWES_AGENT_BIN, "--config", (dir_ / "agent.yaml").string(),
                            "--once", "--window=1s", "--log_level=warn"},
                           (dir_ / "once.out").string());
  ASSERT_NE(once, nullptr);
  ASSERT_EQ(once->Wait(absl::Seconds(30)), std::optional<int>(0)) << once->Output();

  // stdout and stderr share the file: the JSON object is the line that starts with '{'.
  std::string json;
  std::istringstream lines(once->Output());
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '{') json = line;
  }
  ASSERT_FALSE(json.empty()) << once->Output();
  v1::Frame frame;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &frame, options).ok()) << json;

  EXPECT_EQ(frame.node_id(), "e2e-once");
  EXPECT_EQ(frame.seq(), 1u);
  ASSERT_EQ(frame.models_size(), 1);
  const v1::ModelSample& m = frame.models(0);
  ASSERT_TRUE(m.has_decode_tokens_per_s()) << json;
  const double dt = google::protobuf::util::TimeUtil::DurationToNanoseconds(frame.window_end() -
                                                                            frame.window_start()) *
                    1e-9;
  EXPECT_NEAR(dt, 1.0, 0.25);
  // Δtokens_predicted_total ÷ Δt, and the engine's configured rate.
  EXPECT_LE(RelDiff(m.decode_tokens_per_s(), static_cast<double>(m.decode_tokens()) / dt), 1e-6)
      << json;
  EXPECT_NEAR(m.decode_tokens_per_s(), kTokensPerS, 0.06 * kTokensPerS) << json;
  // The node WES uses the fake RAPL package power.
  ASSERT_TRUE(frame.node_wes().has_raw()) << json;
  ASSERT_TRUE(frame.node_wes().has_watts());
  EXPECT_NEAR(frame.node_wes().watts(), kWatts, 0.25 * kWatts);
  EXPECT_LE(
      RelDiff(frame.node_wes().raw(), frame.node_wes().tokens_per_s() / frame.node_wes().watts()),
      1e-9);
}

TEST_F(EndToEndTest, FleetwesctlReportsAnUnreachableAggregator) {
  const int port = FreePort();
  auto ctl =
      Child::Spawn({FLEETWESCTL_BIN, absl::StrCat("--server=127.0.0.1:", port), "leaderboard"},
                   (dir_ / "ctl.out").string());
  ASSERT_NE(ctl, nullptr);
  EXPECT_EQ(ctl->Wait(absl::Seconds(20)), std::optional<int>(1));
  EXPECT_EQ(ctl->Output(), absl::StrCat("fleetwesctl: cannot reach fleetwes-aggregator at "
                                        "127.0.0.1:",
                                        port, " (connection refused)\n"));
  auto usage =
      Child::Spawn({FLEETWESCTL_BIN, "leaderboard", "--limit=many"}, (dir_ / "usage.out").string());
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(usage->Wait(absl::Seconds(20)), std::optional<int>(2)) << usage->Output();
}

}  // namespace
}  // namespace fleetwes
