// "Nothing lost", proven by fault injection with the real binaries: a replayed llama.cpp engine,
// a fleetwes-agent with its spool, fleetwes-loadgen, fleetwes-aggregator and PostgreSQL. Each
// scenario injects one fault under load (aggregator SIGKILL, PostgreSQL restart, agent SIGKILL,
// aggregator unreachable, spool full), then counts in PostgreSQL what was produced and stored
// and prints one line "produced=N persisted=N duplicated=N lost=N" (docs/delivery.md).
//
// What was produced is known from the producers: fleetwes-loadgen's JSON summary (frames sent,
// acknowledged, evicted) and its per-node seqs from 1; the agent's seqs per boot (a gap within a
// boot is a lost frame) together with what its spool still holds after it stopped. The agent's
// spool is read in-process (agent/spool.h) once the agent has exited.
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/spool.h"
#include "common/clock.h"
#include "fleetwes/v1/ingest.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/pg_cluster.h"
#include "tests/support/pg_test_db.h"

namespace fleetwes {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using testing::PollUntil;

constexpr char kAgentNode[] = "faults-agent";
constexpr int kLoadNodes = 4;

// How long fleetwes-loadgen runs in the scenarios under load: 5 s, or FLEETWES_FAULTS_LOAD_S
// seconds (bench/soak/soak.sh runs them longer).
absl::Duration LoadDuration() {
  int seconds = 0;
  const char* env = std::getenv("FLEETWES_FAULTS_LOAD_S");
  if (env != nullptr && absl::SimpleAtoi(env, &seconds) && seconds > 0) {
    return absl::Seconds(seconds);
  }
  return absl::Seconds(5);
}

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

// The tally of one scenario, printed as one line.
struct Tally {
  uint64_t produced = 0;    // distinct frames the producers made
  uint64_t persisted = 0;   // distinct frames in PostgreSQL
  uint64_t duplicated = 0;  // rows beyond one per (node, boot, seq)
  uint64_t lost = 0;        // produced, neither stored nor still waiting in a spool
  uint64_t pending = 0;     // still in the agent's spool, unacknowledged, when it stopped
  uint64_t evicted = 0;     // dropped by a full spool (counted, reported to the aggregator)

  void Add(const Tally& o) {
    produced += o.produced;
    persisted += o.persisted;
    duplicated += o.duplicated;
    lost += o.lost;
    pending += o.pending;
    evicted += o.evicted;
  }
  std::string Line() const {
    return absl::StrCat("produced=", produced, " persisted=", persisted, " duplicated=", duplicated,
                        " lost=", lost, " pending=", pending, " evicted=", evicted);
  }
};

// Stored seqs of one node, by boot.
std::map<std::string, std::vector<int64_t>> StoredSeqs(pqxx::connection& conn,
                                                       const std::string& node) {
  std::map<std::string, std::vector<int64_t>> out;
  pqxx::read_transaction tx(conn);
  for (const pqxx::row& r : tx.exec_params(
           "SELECT boot_id, seq FROM frames WHERE node_id = $1 ORDER BY boot_id, seq", node)) {
    out[r[0].as<std::string>()].push_back(r[1].as<int64_t>());
  }
  return out;
}

int64_t CountFrames(pqxx::connection& conn, const std::string& node_like) {
  pqxx::read_transaction tx(conn);
  return tx.exec_params1("SELECT count(*) FROM frames WHERE node_id LIKE $1", node_like)[0]
      .as<int64_t>();
}

// What the agent's spool still holds, read after the agent exited.
struct SpoolContents {
  std::map<std::string, std::set<uint64_t>> pending;  // boot -> unacknowledged seqs
  uint64_t evicted = 0;
};

SpoolContents ReadSpool(const fs::path& dir) {
  SpoolContents out;
  agent::SpoolOptions options;
  options.dir = dir.string();
  options.node_id = kAgentNode;
  options.boot_id = "faults-test-reader";
  absl::StatusOr<std::unique_ptr<agent::Spool>> spool = agent::Spool::Open(options, RealClock());
  EXPECT_TRUE(spool.ok()) << spool.status();
  if (!spool.ok()) return out;
  for (const std::string& boot : (*spool)->PendingBoots()) {
    for (const v1::Frame& f : (*spool)->AfterInBoot(boot, 0, 1 << 20)) {
      out.pending[boot].insert(f.seq());
    }
  }
  out.evicted = (*spool)->evicted();
  return out;
}

// The acknowledged seq per boot in the spool's ack file ("ack <boot> <seq>" lines).
std::map<std::string, uint64_t> AckFile(const fs::path& dir) {
  std::map<std::string, uint64_t> out;
  for (absl::string_view line : absl::StrSplit(ReadFile(dir / "acks"), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    uint64_t seq = 0;
    if (f.size() == 3 && f[0] == "ack" && absl::SimpleAtoi(f[2], &seq)) out[f[1]] = seq;
  }
  return out;
}

// The agent's frames: per boot, everything up to the highest seq known (stored or spooled) was
// produced; a seq neither stored nor spooled is lost.
Tally TallyAgent(pqxx::connection& conn, const SpoolContents& spool,
                 std::map<std::string, std::set<int64_t>>* lost_seqs = nullptr) {
  Tally t;
  std::map<std::string, std::vector<int64_t>> stored = StoredSeqs(conn, kAgentNode);
  std::set<std::string> boots;
  for (const auto& [boot, seqs] : stored) boots.insert(boot);
  for (const auto& [boot, seqs] : spool.pending) boots.insert(boot);
  for (const std::string& boot : boots) {
    const std::vector<int64_t>& s = stored[boot];
    std::set<int64_t> distinct(s.begin(), s.end());
    int64_t highest = distinct.empty() ? 0 : *distinct.rbegin();
    auto pit = spool.pending.find(boot);
    const std::set<uint64_t> empty;
    const std::set<uint64_t>& pending = pit == spool.pending.end() ? empty : pit->second;
    if (!pending.empty()) highest = std::max<int64_t>(highest, *pending.rbegin());
    t.produced += highest;
    t.persisted += distinct.size();
    t.duplicated += s.size() - distinct.size();
    for (int64_t seq = 1; seq <= highest; ++seq) {
      if (distinct.count(seq) != 0) continue;
      if (pending.count(static_cast<uint64_t>(seq)) != 0) {
        ++t.pending;
      } else {
        ++t.lost;
        if (lost_seqs != nullptr) (*lost_seqs)[boot].insert(seq);
      }
    }
  }
  t.evicted = spool.evicted;
  return t;
}

class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleetwes-faults.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    hw_root_ = dir_ / "hw";
    spool_dir_ = dir_ / "spool";
    fs::create_directories(hw_root_);
    grpc_port_ = testing::FreeLoopbackPort();
    http_port_ = testing::FreeLoopbackPort();
    ASSERT_GT(grpc_port_, 0);
    ASSERT_GT(http_port_, 0);
    ASSERT_NE(grpc_port_, http_port_);
  }

  void TearDown() override {
    for (auto* c : {&loadgen_, &agent_, &engine_, &aggregator_}) {
      if (*c != nullptr) (*c)->Stop();
    }
    db_.reset();
    cluster_.reset();
    if (HasFailure()) {
      for (const char* name : {"aggregator.log", "aggregator-1.log", "agent.log", "agent-1.log",
                               "loadgen.log", "engine.log"}) {
        if (fs::exists(dir_ / name)) {
          std::cerr << "----- " << name << " -----\n" << ReadFile(dir_ / name) << "\n";
        }
      }
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A fresh database on the shared test cluster; false (and the test skips) without one.
  bool UseSharedDatabase() {
    const std::optional<std::string> cluster = testing::PgTestDb::ClusterUrl();
    if (!cluster.has_value()) return false;
    absl::StatusOr<std::unique_ptr<testing::PgTestDb>> db = testing::PgTestDb::Create(*cluster);
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return false;
    db_ = *std::move(db);
    url_ = db_->url();
    return true;
  }

  void StartEngine() {
    const fs::path port_file = dir_ / "engine.port";
    engine_ =
        ChildProcess::Spawn({FLEETWES_REPLAY_ENGINE_BIN, "--kind=llamacpp", "--port=0",
                             absl::StrCat("--port_file=", port_file.string()), "--tokens_per_s=100",
                             absl::StrCat("--rapl_root=", hw_root_.string()), "--watts=40"},
                            (dir_ / "engine.log").string());
    ASSERT_NE(engine_, nullptr);
    ASSERT_TRUE(PollUntil(absl::Seconds(20),
                          [&] { return fs::exists(port_file) && !ReadFile(port_file).empty(); }))
        << "no port file; engine running: " << engine_->Running();
    engine_port_ = std::stoi(ReadFile(port_file));
  }

  // The aggregator on the fixture's ports (the same after a restart, as agents keep their
  // address). `log` names its output file.
  void StartAggregator(const std::string& log = "aggregator.log") {
    const fs::path config = dir_ / "aggregator.yaml";
    WriteFile(config, absl::StrCat("grpc_listen: \"127.0.0.1:", grpc_port_, "\"\n",
                                   "http_listen: \"127.0.0.1:", http_port_, "\"\n",
                                   "database:\n  url: \"", url_, "\"\n"));
    aggregator_ = ChildProcess::Spawn({FLEETWES_AGGREGATOR_BIN, "--config", config.string()},
                                      (dir_ / log).string(), {{"FLEETWES_DATABASE_URL", url_}});
    ASSERT_NE(aggregator_, nullptr);
    httplib::Client http("127.0.0.1", http_port_);
    http.set_connection_timeout(1);
    ASSERT_TRUE(PollUntil(absl::Seconds(30), [&] {
      if (!aggregator_->Running()) return true;
      auto res = http.Get("/healthz");
      return res && res->status == 200;
    })) << "fleetwes-aggregator not healthy within 30s";
    ASSERT_TRUE(aggregator_->Running()) << aggregator_->Output();
  }

  void StartAgent(const std::string& log = "agent.log", const std::string& spool_extra = "") {
    WriteFile(dir_ / "agent.yaml",
              absl::StrCat("node_id: ", kAgentNode, "\n", "aggregators: [\"127.0.0.1:", grpc_port_,
                           "\"]\n", "interval: 0.5s\n", "engines:\n",
                           "  - name: llama\n    kind: llamacpp\n    url: \"http://127.0.0.1:",
                           engine_port_, "\"\n", "hardware:\n  root: \"", hw_root_.string(),
                           "\"\n  nvml: false\n", "http:\n  listen: \"\"\n", "spool:\n  dir: \"",
                           spool_dir_.string(), "\"\n  fsync_interval: 50ms\n", spool_extra));
    agent_ = ChildProcess::Spawn({FLEETWES_AGENT_BIN, "--config", (dir_ / "agent.yaml").string()},
                                 (dir_ / log).string());
    ASSERT_NE(agent_, nullptr);
  }

  void StartLoadgen(absl::Duration duration) {
    loadgen_ = ChildProcess::Spawn(
        {FLEETWES_LOADGEN_BIN, absl::StrCat("--target=127.0.0.1:", grpc_port_),
         absl::StrCat("--nodes=", kLoadNodes), "--interval=0.5s",
         absl::StrCat("--duration=", absl::FormatDuration(duration)), "--node_prefix=lg",
         "--drain_timeout=20s", "-o", "json", "--log_level=warn"},
        (dir_ / "loadgen.log").string());
    ASSERT_NE(loadgen_, nullptr);
  }

  // Waits for fleetwes-loadgen to finish; its frames in PostgreSQL against its summary.
  Tally FinishLoadgen(pqxx::connection& conn) {
    Tally t;
    std::optional<int> rc = loadgen_->Wait(LoadDuration() + absl::Seconds(60));
    EXPECT_EQ(rc, std::optional<int>(0)) << loadgen_->Output();
    nlohmann::json summary;
    std::istringstream lines(loadgen_->Output());
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty() && line[0] == '{') summary = nlohmann::json::parse(line, nullptr, false);
    }
    EXPECT_TRUE(summary.is_object()) << loadgen_->Output();
    if (!summary.is_object()) return t;
    const uint64_t sent = summary.value("frames_sent", uint64_t{0});
    loadgen_disconnects_ = summary.value("disconnects", uint64_t{0});
    loadgen_resent_ = summary.value("frames_resent", uint64_t{0});
    EXPECT_EQ(summary.value("frames_acked", uint64_t{0}), sent) << summary.dump();
    EXPECT_EQ(summary.value("frames_evicted", uint64_t{1}), 0u) << summary.dump();
    EXPECT_EQ(summary.value("frames_rejected", uint64_t{1}), 0u) << summary.dump();
    // Per node: seqs from 1, every one stored once.
    pqxx::read_transaction tx(conn);
    for (const pqxx::row& r :
         tx.exec("SELECT node_id, count(*), count(DISTINCT (boot_id, seq)), max(seq), "
                 "count(DISTINCT boot_id) FROM frames WHERE node_id LIKE 'lg-%' "
                 "GROUP BY node_id")) {
      const auto rows = r[1].as<uint64_t>();
      const auto distinct = r[2].as<uint64_t>();
      const auto highest = r[3].as<uint64_t>();
      EXPECT_EQ(r[4].as<int>(), 1) << r[0].c_str();
      t.persisted += distinct;
      t.duplicated += rows - distinct;
      t.lost += highest - distinct;
    }
    t.produced = std::max(sent, t.persisted + t.lost);
    t.lost += t.produced - (t.persisted + t.lost);
    return t;
  }

  // Stops the agent once it is live (its latest stored window ended less than 3 s ago: not working
  // off a backlog) right after one of its frames was stored, so the next window has not closed yet;
  // then tallies its frames against the spool it left.
  Tally FinishAgent(pqxx::connection& conn,
                    std::map<std::string, std::set<int64_t>>* lost = nullptr,
                    SpoolContents* spool_out = nullptr) {
    EXPECT_TRUE(PollUntil(absl::Seconds(30), [&] {
      pqxx::read_transaction tx(conn);
      return tx
          .exec_params1(
              "SELECT COALESCE(max(window_end) > now() - interval '3 seconds', false) "
              "FROM frames WHERE node_id = $1",
              kAgentNode)[0]
          .as<bool>();
    })) << "the agent's frames do not catch up";
    const int64_t before = CountFrames(conn, kAgentNode);
    PollUntil(absl::Seconds(5), [&] { return CountFrames(conn, kAgentNode) > before; });
    EXPECT_EQ(agent_->Stop(), 0) << agent_->Output();
    SpoolContents spool = ReadSpool(spool_dir_);
    if (spool_out != nullptr) *spool_out = spool;
    return TallyAgent(conn, spool, lost);
  }

  // Waits until PostgreSQL holds at least `n` frames of nodes matching `like`.
  void AwaitFrames(pqxx::connection& conn, const std::string& like, int64_t n,
                   absl::Duration timeout = absl::Seconds(30)) {
    ASSERT_TRUE(PollUntil(timeout, [&] { return CountFrames(conn, like) >= n; }))
        << "fewer than " << n << " frames of " << like << " within "
        << absl::FormatDuration(timeout) << ": " << CountFrames(conn, like);
  }

  void Report(const std::string& scenario, const Tally& t) {
    std::cout << "[" << scenario << "] " << t.Line() << std::endl;
    RecordProperty("tally", t.Line());
  }

  fs::path dir_;
  fs::path hw_root_;
  fs::path spool_dir_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int engine_port_ = 0;
  std::string url_;
  std::unique_ptr<ChildProcess> engine_;
  std::unique_ptr<ChildProcess> aggregator_;
  std::unique_ptr<ChildProcess> agent_;
  std::unique_ptr<ChildProcess> loadgen_;
  std::unique_ptr<testing::PgTestDb> db_;  // dropped after the aggregator stopped
  std::unique_ptr<testing::PgCluster> cluster_;
  uint64_t loadgen_disconnects_ = 0;  // from its summary
  uint64_t loadgen_resent_ = 0;
};

// (a) The aggregator is SIGKILLed under load and restarted: every frame exactly once.
TEST_F(FaultsTest, AggregatorKilledUnderLoad) {
  if (!UseSharedDatabase()) GTEST_SKIP() << testing::PgTestDb::SkipMessage();
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAggregator("aggregator-1.log"));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  ASSERT_NO_FATAL_FAILURE(StartLoadgen(LoadDuration()));
  pqxx::connection conn(url_);
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, "lg-%", 2 * kLoadNodes));
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, kAgentNode, 2));

  EXPECT_EQ(aggregator_->Kill(), 128 + 9);
  ASSERT_NO_FATAL_FAILURE(StartAggregator());
  const int64_t at_restart = CountFrames(conn, "%");
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, "%", at_restart + 2 * kLoadNodes));

  Tally t = FinishLoadgen(conn);
  t.Add(FinishAgent(conn));
  Report("aggregator SIGKILL", t);
  std::cout << "  loadgen streams broken " << loadgen_disconnects_ << ", frames resent "
            << loadgen_resent_ << std::endl;
  EXPECT_GT(loadgen_disconnects_, 0u) << "the kill went unnoticed";
  EXPECT_EQ(t.duplicated, 0u);
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.evicted, 0u);
  EXPECT_EQ(t.persisted + t.pending, t.produced);
  EXPECT_LE(t.pending, 2u);  // the agent's frames in flight when it was stopped
}

// (b) PostgreSQL is restarted (immediate mode: like a crash of the server) under load: the
// aggregator stops acknowledging, retries with backoff and resumes; every frame exactly once.
TEST_F(FaultsTest, PostgresRestartedUnderLoad) {
  absl::StatusOr<std::unique_ptr<testing::PgCluster>> cluster = testing::PgCluster::Create();
  if (!cluster.ok() && absl::IsNotFound(cluster.status())) {
    GTEST_SKIP() << cluster.status().message();
  }
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cluster_ = *std::move(cluster);
  url_ = cluster_->Url();
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAggregator());
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  ASSERT_NO_FATAL_FAILURE(StartLoadgen(LoadDuration()));
  {
    pqxx::connection conn(url_);
    ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, "lg-%", 2 * kLoadNodes));
    ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, kAgentNode, 2));
  }

  ASSERT_TRUE(cluster_->Stop("immediate").ok());
  // Down until the aggregator has noticed (a failed write), then back.
  EXPECT_TRUE(PollUntil(absl::Seconds(10), [&] {
    return absl::StrContains(aggregator_->Output(), "database write failed");
  })) << aggregator_->Output();
  absl::Status started = cluster_->Start();
  ASSERT_TRUE(started.ok()) << started << "\n" << cluster_->Log();
  EXPECT_TRUE(PollUntil(absl::Seconds(30), [&] {
    return absl::StrContains(aggregator_->Output(), "database writes resumed");
  })) << aggregator_->Output();

  pqxx::connection conn(url_);
  Tally t = FinishLoadgen(conn);
  t.Add(FinishAgent(conn));
  Report("PostgreSQL restart", t);
  std::cout << "  loadgen streams broken " << loadgen_disconnects_ << ", frames resent "
            << loadgen_resent_ << std::endl;
  EXPECT_TRUE(aggregator_->Running());
  EXPECT_EQ(t.duplicated, 0u);
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.persisted + t.pending, t.produced);
  EXPECT_LE(t.pending, 2u);
}

// (c) The agent is SIGKILLed. Every frame it had acknowledged is stored; restarted on the same
// spool, it replays the killed boot, so nothing is lost (a process kill loses nothing written to
// the spool; only a machine crash can lose the last unsynced <= fsync_interval, never
// acknowledged).
TEST_F(FaultsTest, AgentKilledAndRestartedOnItsSpool) {
  if (!UseSharedDatabase()) GTEST_SKIP() << testing::PgTestDb::SkipMessage();
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAggregator());
  ASSERT_NO_FATAL_FAILURE(StartAgent("agent-1.log"));
  pqxx::connection conn(url_);
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, kAgentNode, 4));
  // Let the spool's timer record at least one ack, then kill.
  ASSERT_TRUE(PollUntil(absl::Seconds(5), [&] { return !AckFile(spool_dir_).empty(); }));
  EXPECT_EQ(agent_->Kill(), 128 + 9);

  const std::map<std::string, uint64_t> acked = AckFile(spool_dir_);
  ASSERT_EQ(acked.size(), 1u) << ReadFile(spool_dir_ / "acks");
  const std::string killed_boot = acked.begin()->first;
  const uint64_t acked_seq = acked.begin()->second;
  {
    // Acknowledged means stored: seqs 1..acked_seq of the killed boot, each once.
    std::vector<int64_t> stored = StoredSeqs(conn, kAgentNode)[killed_boot];
    std::set<int64_t> distinct(stored.begin(), stored.end());
    for (uint64_t seq = 1; seq <= acked_seq; ++seq) {
      EXPECT_EQ(distinct.count(static_cast<int64_t>(seq)), 1u) << "acked seq " << seq;
    }
  }

  ASSERT_NO_FATAL_FAILURE(StartAgent("agent.log"));
  // The new boot streams, and the killed boot's unacknowledged frames are replayed.
  ASSERT_TRUE(PollUntil(absl::Seconds(20), [&] {
    std::map<std::string, std::vector<int64_t>> stored = StoredSeqs(conn, kAgentNode);
    return stored.size() >= 2 && std::any_of(stored.begin(), stored.end(), [&](const auto& b) {
             return b.first != killed_boot && b.second.size() >= 3;
           });
  }));
  std::map<std::string, std::set<int64_t>> lost;
  SpoolContents spool;
  Tally t = FinishAgent(conn, &lost, &spool);
  Report("agent SIGKILL", t);
  std::cout << "  killed boot " << killed_boot << ": acknowledged up to seq " << acked_seq
            << " when killed, " << StoredSeqs(conn, kAgentNode)[killed_boot].size()
            << " frames stored after the restart" << std::endl;
  EXPECT_EQ(t.duplicated, 0u);
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(spool.pending.count(killed_boot), 0u) << "the killed boot was not fully replayed";
  for (const auto& [boot, seqs] : lost) {
    for (int64_t seq : seqs) {
      EXPECT_GT(static_cast<uint64_t>(seq), boot == killed_boot ? acked_seq : 0)
          << "an acknowledged frame was lost";
    }
  }
  EXPECT_LE(t.pending, 2u);
  EXPECT_GT(t.produced, acked_seq);
}

// (d) The aggregator is unreachable when the agent starts: frames wait in the spool, then are
// all delivered, in order (seq strictly increasing in arrival order).
TEST_F(FaultsTest, AggregatorUnreachableThenEverythingReplayedInOrder) {
  if (!UseSharedDatabase()) GTEST_SKIP() << testing::PgTestDb::SkipMessage();
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  // Several windows spooled with nobody to send them to: the uplink failed and backed off a few
  // times (200 ms, 400 ms, 800 ms, ...).
  ASSERT_TRUE(PollUntil(absl::Seconds(20), [&] {
    std::string out = agent_->Output();
    size_t n = 0;
    for (size_t p = out.find("retrying in"); p != std::string::npos;
         p = out.find("retrying in", p + 1)) {
      ++n;
    }
    return n >= 4 || !agent_->Running();
  })) << agent_->Output();
  ASSERT_TRUE(agent_->Running()) << agent_->Output();
  ASSERT_NO_FATAL_FAILURE(StartAggregator());
  pqxx::connection conn(url_);
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, kAgentNode, 8));
  Tally t = FinishAgent(conn);
  Report("aggregator unreachable", t);
  EXPECT_EQ(t.duplicated, 0u);
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.evicted, 0u);
  EXPECT_LE(t.pending, 2u);

  // Arrival order is seq order: received_at never decreases as seq grows.
  pqxx::read_transaction tx(conn);
  const int64_t inversions =
      tx.exec_params1(
            "SELECT count(*) FROM (SELECT received_at < lag(received_at) OVER (ORDER BY seq) "
            "AS inv FROM frames WHERE node_id = $1) s WHERE inv",
            kAgentNode)[0]
          .as<int64_t>();
  EXPECT_EQ(inversions, 0);
}

// (e) The spool is full while the aggregator is unreachable: the oldest frames are evicted,
// counted, and the count reaches the aggregator (Hello.evicted_frames, stored with the node).
TEST_F(FaultsTest, SpoolFullEvictsOldestCountedAtTheAggregator) {
  if (!UseSharedDatabase()) GTEST_SKIP() << testing::PgTestDb::SkipMessage();
  ASSERT_NO_FATAL_FAILURE(StartEngine());
  ASSERT_NO_FATAL_FAILURE(StartAgent("agent.log", "  max_bytes: 4096\n"));
  ASSERT_TRUE(PollUntil(absl::Seconds(30), [&] {
    return absl::StrContains(agent_->Output(), "evicted");
  })) << agent_->Output();
  ASSERT_NO_FATAL_FAILURE(StartAggregator());
  pqxx::connection conn(url_);
  ASSERT_NO_FATAL_FAILURE(AwaitFrames(conn, kAgentNode, 4));
  std::map<std::string, std::set<int64_t>> gaps;
  SpoolContents spool;
  Tally t = FinishAgent(conn, &gaps, &spool);
  Report("spool full", t);
  EXPECT_GT(t.evicted, 0u);
  EXPECT_EQ(t.duplicated, 0u);
  // Every frame missing is one the spool evicted, oldest first: the gaps are a prefix of seqs.
  // The count is an upper bound: a frame evicted while already on the wire still arrives.
  EXPECT_GT(t.lost, 0u);
  EXPECT_LE(t.lost, t.evicted);
  for (const auto& [boot, seqs] : gaps) {
    int64_t expect = 1;
    for (int64_t seq : seqs) EXPECT_EQ(seq, expect++) << "evicted frames are the oldest";
  }
  // The aggregator knows: the stored Hello carries the eviction count.
  pqxx::read_transaction tx(conn);
  pqxx::result r = tx.exec_params("SELECT hello FROM nodes WHERE node_id = $1", kAgentNode);
  ASSERT_EQ(r.size(), 1u);
  pqxx::binarystring bytes(r[0][0]);
  v1::Hello hello;
  ASSERT_TRUE(hello.ParseFromString(bytes.str()));
  EXPECT_GT(hello.evicted_frames(), 0u);
  EXPECT_LE(hello.evicted_frames(), t.evicted);
}

}  // namespace
}  // namespace fleetwes
