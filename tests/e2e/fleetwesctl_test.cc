// fleetwesctl: table and JSON rendering, command dispatch, deadlines, error lines, exit codes.
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "aggregator/ctl/commands.h"
#include "aggregator/ctl/format.h"
#include "common/wes.h"
#include "fleetwes/v1/fleet_mock.grpc.pb.h"
#include "fleetwes/v1/router_mock.grpc.pb.h"
#include "grpcpp/test/mock_stream.h"

namespace fleetwes::aggregator::ctl {
namespace {

using ::testing::_;
using ::testing::AllOf;
using ::testing::DoAll;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Not;
using ::testing::Return;
using ::testing::SetArgPointee;

v1::LeaderboardEntry Entry(uint32_t rank, const std::string& node, double tok_s, double watts,
                           v1::ThermalState state, v1::PowerScope scope) {
  v1::LeaderboardEntry e;
  e.set_rank(rank);
  e.set_node_id(node);
  WesInputs in;
  in.tokens_per_s = tok_s;
  in.watts = watts;
  in.thermal_state = state;
  in.power_scopes = {scope};
  *e.mutable_wes() = ComputeWes(in);
  e.set_thermal_state(state);
  e.set_tokens_per_s(tok_s);
  e.set_data_age_s(1.25);
  return e;
}

// The four-node fleet of docs/wes.md plus two unranked nodes.
v1::LeaderboardResponse FourNodeFleet() {
  v1::LeaderboardResponse r;
  *r.add_entries() = Entry(1, "studio-01", 89, 60, v1::THERMAL_STATE_NORMAL, v1::POWER_SCOPE_SOC);
  *r.add_entries() =
      Entry(2, "devbox-02", 180, 340, v1::THERMAL_STATE_FAIR, v1::POWER_SCOPE_GPU_BOARD);
  *r.add_entries() =
      Entry(3, "lab-03", 92, 220, v1::THERMAL_STATE_SERIOUS, v1::POWER_SCOPE_GPU_BOARD);
  v1::LeaderboardEntry spare =
      Entry(4, "spare-04", 12, 95, v1::THERMAL_STATE_NORMAL, v1::POWER_SCOPE_CPU_PACKAGE);
  spare.set_memory_pressure(true);
  *r.add_entries() = spare;

  v1::LeaderboardEntry nopower;
  nopower.set_node_id("edge-05");
  WesInputs in;
  in.tokens_per_s = 40;
  *nopower.mutable_wes() = ComputeWes(in);
  nopower.set_tokens_per_s(40);
  nopower.set_thermal_state(v1::THERMAL_STATE_NORMAL);
  nopower.set_data_age_s(0.5);
  *r.add_unranked() = nopower;

  v1::LeaderboardEntry stale =
      Entry(0, "old-06", 50, 100, v1::THERMAL_STATE_NORMAL, v1::POWER_SCOPE_GPU_BOARD);
  stale.set_stale(true);
  stale.set_data_age_s(125);
  *r.add_unranked() = stale;
  r.mutable_as_of()->set_seconds(1767225600);  // 2026-01-01 00:00:00 UTC
  return r;
}

std::vector<std::string> Lines(const std::string& s) {
  return absl::StrSplit(s, '\n', absl::SkipEmpty());
}

std::vector<std::string> Fields(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

// The first line of `table` whose field number `column` is `value`.
std::string RowWith(const std::string& table, size_t column, const std::string& value) {
  for (const std::string& line : Lines(table)) {
    const auto f = Fields(line);
    if (f.size() > column && f[column] == value) return line;
  }
  return "";
}

TEST(LeaderboardTableTest, RanksAndRoundsTheDocumentedFleet) {
  const std::string t = LeaderboardTable(FourNodeFleet());
  const auto lines = Lines(t);
  ASSERT_GE(lines.size(), 6u);
  EXPECT_EQ(lines[0],
            "fleet leaderboard (node WES, tokens per joule), as of 2026-01-01 00:00:00 UTC");
  EXPECT_THAT(lines[1], AllOf(HasSubstr("RANK"), HasSubstr("NODE"), HasSubstr("RAW WES"),
                              HasSubstr("THERMAL COST"), HasSubstr("POWER SCOPE")));
  // Rank order follows the response; values are display-rounded with FormatWes.
  EXPECT_EQ(Fields(lines[2]),
            (std::vector<std::string>{"1", "studio-01", "1.5", "1.5", "0%", "normal", "soc", "89.0",
                                      "60.0", "1.2s", "-"}));
  EXPECT_EQ(Fields(lines[3]),
            (std::vector<std::string>{"2", "devbox-02", "0.42", "0.53", "20%", "fair", "gpu_board",
                                      "180.0", "340.0", "1.2s", "-"}));
  EXPECT_EQ(Fields(lines[4]),
            (std::vector<std::string>{"3", "lab-03", "0.24", "0.42", "42.9%", "serious",
                                      "gpu_board", "92.0", "220.0", "1.2s", "-"}));
  EXPECT_EQ(Fields(lines[5]),
            (std::vector<std::string>{"4", "spare-04", "0.13", "0.13", "0%", "normal",
                                      "cpu_package", "12.0", "95.0", "1.2s", "swapping"}));
}

TEST(LeaderboardTableTest, ColumnsAreAligned) {
  const auto lines = Lines(LeaderboardTable(FourNodeFleet()));
  // Right-aligned WES column: every ranked row ends its WES cell at the header's end.
  const size_t header_end = lines[1].find("WES") + 3;
  for (int i = 2; i <= 5; ++i) {
    const std::vector<std::string> f = Fields(lines[i]);
    const size_t pos = lines[i].find(" " + f[2] + " ", lines[i].find(f[1]) + f[1].size() - 1);
    ASSERT_NE(pos, std::string::npos) << lines[i];
    EXPECT_EQ(pos + 1 + f[2].size(), header_end) << lines[i];
  }
}

TEST(LeaderboardTableTest, ListsUnrankedNodesWithTheirReason) {
  const std::string t = LeaderboardTable(FourNodeFleet());
  EXPECT_THAT(t, HasSubstr("\nunranked (2):\n"));
  EXPECT_EQ(
      Fields(RowWith(t, 0, "edge-05")),
      (std::vector<std::string>{"edge-05", "no_power_reading", "normal", "40.0", "-", "0.5s"}));
  EXPECT_EQ(Fields(RowWith(t, 0, "old-06")),
            (std::vector<std::string>{"old-06", "stale", "normal", "50.0", "100.0", "2m05s"}));
}

TEST(LeaderboardTableTest, EmptyAndPerModel) {
  v1::LeaderboardResponse r;
  r.set_model("llama3.1:8b");
  const std::string t = LeaderboardTable(r);
  EXPECT_THAT(t, HasSubstr("leaderboard for model llama3.1:8b"));
  EXPECT_THAT(t, HasSubstr("no ranked nodes"));
  EXPECT_THAT(t, Not(HasSubstr("unranked")));
}

TEST(LeaderboardJsonTest, KeepsFullPrecisionAndOmitsAbsentValues) {
  const v1::LeaderboardResponse r = FourNodeFleet();
  auto json = ToJson(r);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->find('\n'), std::string::npos);  // one line
  const nlohmann::json j = nlohmann::json::parse(*json);
  ASSERT_EQ(j["entries"].size(), 4u);
  EXPECT_EQ(j["entries"][0]["node_id"], "studio-01");
  EXPECT_EQ(j["entries"][0]["wes"]["raw"].get<double>(), 89.0 / 60.0);
  EXPECT_EQ(j["entries"][1]["wes"]["penalized"].get<double>(), 180.0 / (340.0 * 1.25));
  EXPECT_EQ(j["entries"][1]["thermal_state"], "THERMAL_STATE_FAIR");
  EXPECT_EQ(j["entries"][1]["wes"]["power_scopes"][0], "POWER_SCOPE_GPU_BOARD");
  EXPECT_EQ(j["entries"][3]["memory_pressure"], true);
  EXPECT_EQ(j["entries"][0]["stale"], false);                   // default scalars are printed
  EXPECT_FALSE(j["entries"][0].contains("baseline_loss_pct"));  // absent optional stays absent
  EXPECT_EQ(j["unranked"][0]["wes"]["null_reason"], "WES_NULL_REASON_NO_POWER_READING");
  EXPECT_FALSE(j["unranked"][0]["wes"].contains("raw"));
  EXPECT_EQ(j["as_of"], "2026-01-01T00:00:00Z");
}

TEST(FormatTest, Ages) {
  EXPECT_EQ(FormatAge(0.4), "0.4s");
  EXPECT_EQ(FormatAge(12.7), "12s");
  EXPECT_EQ(FormatAge(185), "3m05s");
  EXPECT_EQ(FormatAge(7380), "2h03m");
  EXPECT_EQ(FormatAge(3 * 86400 + 7200), "3d02h");
  EXPECT_EQ(FormatAge(-1), "-");
}

TEST(FormatTest, ParsesOutputAndObjective) {
  EXPECT_EQ(*ParseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_EQ(*ParseOutputFormat("table"), OutputFormat::kTable);
  EXPECT_FALSE(ParseOutputFormat("yaml").ok());
  EXPECT_EQ(*ParseObjective("latency"), v1::OBJECTIVE_LATENCY);
  EXPECT_EQ(*ParseObjective("balanced"), v1::OBJECTIVE_BALANCED);
  EXPECT_FALSE(ParseObjective("cheapest").ok());
  EXPECT_EQ(*ParsePickMode("ranked"), v1::PICK_MODE_RANKED);
  EXPECT_EQ(*ParsePickMode("one"), v1::PICK_MODE_ONE);
  EXPECT_EQ(ParsePickMode("random").status().message(),
            "--mode must be \"ranked\" or \"one\", got \"random\"");
}

TEST(PickTableTest, ShowsPicksCandidatesAndExclusions) {
  v1::PickResponse r;
  r.set_model("meta-llama/Llama-3.1-8B-Instruct");
  r.set_objective(v1::OBJECTIVE_EFFICIENCY);
  r.set_data_age_s(1.5);
  v1::Candidate a;
  a.set_node_id("sim-02");
  a.set_score(0.94);
  a.set_weight(0.75);
  a.set_wes_penalized(1.2345);
  a.set_wes_raw(1.5);
  a.set_tokens_per_s(620);
  a.set_ttft_p95_s(0.14);
  a.set_queue(1);
  a.set_thermal_state(v1::THERMAL_STATE_NORMAL);
  a.set_reason("best penalized WES");
  v1::Candidate b = a;
  b.set_node_id("sim-01");
  b.set_score(0.31);
  b.set_weight(0.25);
  b.set_wes_penalized(0.42);
  b.clear_ttft_p95_s();
  b.set_reason("");
  *r.mutable_recommendation() = a;
  *r.mutable_efficiency() = a;
  *r.mutable_latency() = b;
  *r.add_candidates() = a;
  *r.add_candidates() = b;
  auto* x = r.add_excluded();
  x->set_node_id("sim-12");
  x->set_reason("thermal state critical above the ceiling");

  const std::string t = PickTable(r);
  EXPECT_THAT(t, HasSubstr("route for model meta-llama/Llama-3.1-8B-Instruct, objective "
                           "efficiency (data age up to 1.5s)"));
  EXPECT_THAT(t, HasSubstr("recommendation: sim-02  weight 75%  (best penalized WES)"));
  EXPECT_THAT(t, HasSubstr("latency:        sim-01  620.0 tok/s, TTFT p95 -"));
  EXPECT_EQ(Fields(RowWith(t, 0, "2")),
            (std::vector<std::string>{"2", "sim-01", "0.31", "25%", "0.42", "1.5", "620.0", "-",
                                      "1", "normal", "0.0s", "-"}));
  EXPECT_THAT(t, HasSubstr("excluded (1):\n  NODE    REASON\n  sim-12  thermal state critical"));
}

TEST(NodesTableTest, ShowsStatusAndLastSeen) {
  v1::ListNodesResponse r;
  auto* n = r.add_nodes();
  n->set_node_id("sim-01");
  (*n->mutable_labels())["site"] = "lab";
  (*n->mutable_labels())["profile"] = "rtx4090-vllm";
  n->set_agent_version("0.1.0");
  n->mutable_last_seen()->set_seconds(1767225600);
  n->set_last_seq(42);
  n->add_models("m1");
  n->set_thermal_state(v1::THERMAL_STATE_FAIR);
  WesInputs in;
  in.tokens_per_s = 180;
  in.watts = 340;
  in.thermal_state = v1::THERMAL_STATE_FAIR;
  in.power_scopes = {v1::POWER_SCOPE_GPU_BOARD};
  *n->mutable_node_wes() = ComputeWes(in);
  auto* m = r.add_nodes();
  m->set_node_id("sim-02");
  m->set_stale(true);
  m->mutable_node_wes()->set_null_reason(v1::WES_NULL_REASON_IDLE);

  const std::string t = NodesTable(r, absl::FromUnixSeconds(1767225600 + 3));
  EXPECT_EQ(Fields(RowWith(t, 0, "sim-01")),
            (std::vector<std::string>{"sim-01", "live", "fair", "0.42", "gpu_board", "m1", "42",
                                      "3.0s", "ago", "0.1.0", "profile=rtx4090-vllm,site=lab"}));
  EXPECT_THAT(RowWith(t, 0, "sim-02"), AllOf(HasSubstr("stale"), HasSubstr("- (idle)")));
  EXPECT_EQ(NodesTable(v1::ListNodesResponse(), absl::Now()), "no nodes\n");
}

TEST(NodeDetailTest, ShowsDevicesModelsAndMemory) {
  v1::GetNodeResponse r;
  r.mutable_node()->set_node_id("sim-01");
  v1::Frame* f = r.mutable_latest_frame();
  f->set_seq(7);
  f->set_boot_id("b1");
  f->set_interval_s(2);
  auto* d = f->add_devices();
  d->set_id("gpu0");
  d->set_kind(v1::DEVICE_KIND_GPU_NVIDIA);
  d->set_name("NVIDIA GeForce RTX 4090");
  d->set_power_scope(v1::POWER_SCOPE_GPU_BOARD);
  d->set_power_w(340.4);
  d->set_temperature_c(91);
  d->set_throttle_mask(0x20);
  d->set_thermal_state(v1::THERMAL_STATE_SERIOUS);
  auto* m = f->add_models();
  m->set_engine_id("vllm");
  m->set_model("m1");
  m->set_decode_tokens_per_s(140.5);
  f->mutable_system()->set_memory_pressure(true);
  f->mutable_system()->set_swap_in_pages_per_s(812);

  const std::string t = NodeDetail(r, absl::Now());
  EXPECT_THAT(t, HasSubstr("latest frame:  seq 7, boot b1, window 2.0s"));
  EXPECT_THAT(RowWith(t, 0, "gpu0"), AllOf(HasSubstr("gpu_nvidia"), HasSubstr("340.4"),
                                           HasSubstr("0x20"), HasSubstr("serious")));
  EXPECT_THAT(RowWith(t, 0, "vllm"), HasSubstr("140.5"));
  EXPECT_THAT(t, HasSubstr("swap in 812 pages/s"));
  EXPECT_THAT(t, HasSubstr("UNDER PRESSURE"));
}

class RunCommandTest : public ::testing::Test {
 protected:
  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return RunCommand(args, options_, fleet_, router_, absl::FromUnixSeconds(1767225600), out_,
                      err_);
  }
  CtlOptions options_;
  v1::MockFleetStub fleet_;
  v1::MockRouterStub router_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(RunCommandTest, LeaderboardSendsFiltersWithADeadline) {
  options_.model = "llama3.1:8b";
  options_.limit = 5;
  options_.timeout = absl::Seconds(3);
  EXPECT_CALL(fleet_, Leaderboard(_, _, _))
      .WillOnce(Invoke([](grpc::ClientContext* ctx, const v1::LeaderboardRequest& req,
                          v1::LeaderboardResponse* resp) {
        EXPECT_EQ(req.model(), "llama3.1:8b");
        EXPECT_EQ(req.limit(), 5u);
        const auto left = ctx->deadline() - std::chrono::system_clock::now();
        EXPECT_GT(left, std::chrono::milliseconds(2000));
        EXPECT_LE(left, std::chrono::milliseconds(3000));
        *resp = FourNodeFleet();
        return grpc::Status::OK;
      }));
  EXPECT_EQ(Run({"leaderboard"}), kExitOk);
  EXPECT_EQ(out_.str(), LeaderboardTable(FourNodeFleet()));
  EXPECT_EQ(err_.str(), "");
}

TEST_F(RunCommandTest, JsonOutput) {
  options_.output = "json";
  v1::ListNodesResponse nodes;
  nodes.add_nodes()->set_node_id("sim-01");
  EXPECT_CALL(fleet_, ListNodes(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(nodes), Return(grpc::Status::OK)));
  EXPECT_EQ(Run({"nodes"}), kExitOk);
  EXPECT_EQ(nlohmann::json::parse(out_.str())["nodes"][0]["node_id"], "sim-01");
}

TEST_F(RunCommandTest, UnreachableServerIsOneClearLine) {
  EXPECT_CALL(fleet_, Leaderboard(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    "failed to connect to all addresses; last error: UNKNOWN: "
                                    "ipv4:127.0.0.1:7470: Failed to connect to remote host: "
                                    "Connection refused")));
  EXPECT_EQ(Run({"leaderboard"}), kExitFailure);
  EXPECT_EQ(err_.str(),
            "fleetwesctl: cannot reach fleetwes-aggregator at localhost:7470 (connection "
            "refused)\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(RunCommandTest, ServerMessagesArePassedThrough) {
  EXPECT_CALL(router_, Pick(_, _, _))
      .WillOnce(Invoke([](grpc::ClientContext*, const v1::PickRequest& req, v1::PickResponse*) {
        EXPECT_EQ(req.model(), "m9");
        EXPECT_EQ(req.objective(), v1::OBJECTIVE_LATENCY);
        EXPECT_EQ(req.mode(), v1::PICK_MODE_ONE);
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "no node serves model m9 (2 nodes excluded: stale)");
      }));
  options_.model = "m9";
  options_.objective = "latency";
  options_.mode = "one";
  EXPECT_EQ(Run({"route"}), kExitFailure);
  EXPECT_EQ(err_.str(), "fleetwesctl: no node serves model m9 (2 nodes excluded: stale)\n");

  EXPECT_CALL(fleet_, GetNode(_, _, _))
      .WillOnce(Return(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "node_id must be 1..128 characters")));
  EXPECT_EQ(Run({"node", "x"}), kExitFailure);
  EXPECT_EQ(err_.str(), "fleetwesctl: node_id must be 1..128 characters\n");

  EXPECT_CALL(fleet_, ListNodes(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded")));
  EXPECT_EQ(Run({"nodes"}), kExitFailure);
  EXPECT_EQ(err_.str(),
            "fleetwesctl: fleetwes-aggregator at localhost:7470 did not answer "
            "within 5s\n");
}

TEST_F(RunCommandTest, UsageErrorsExitWithTwoAndCallNothing) {
  EXPECT_CALL(fleet_, Leaderboard(_, _, _)).Times(0);
  EXPECT_CALL(router_, Pick(_, _, _)).Times(0);
  EXPECT_EQ(Run({}), kExitUsage);
  EXPECT_EQ(Run({"frobnicate"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("unknown command \"frobnicate\""));
  EXPECT_EQ(Run({"route"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("route needs --model"));
  EXPECT_EQ(Run({"node"}), kExitUsage);
  EXPECT_EQ(Run({"leaderboard", "extra"}), kExitUsage);
  options_.model = "m";
  options_.objective = "cheapest";
  EXPECT_EQ(Run({"route"}), kExitUsage);
  options_.objective = "latency";
  options_.mode = "random";
  EXPECT_EQ(Run({"route"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--mode must be"));
  options_.output = "yaml";
  EXPECT_EQ(Run({"leaderboard"}), kExitUsage);
  options_.output = "table";
  options_.limit = -1;
  EXPECT_EQ(Run({"leaderboard"}), kExitUsage);
}

// The first line of `text` containing `needle`.
std::string LineWith(const std::string& text, const std::string& needle) {
  for (const std::string& line : Lines(text)) {
    if (line.find(needle) != std::string::npos) return line;
  }
  return "";
}

// Where `needle` starts in `line`, in characters (UTF-8 code points).
size_t CharColumn(const std::string& line, const std::string& needle) {
  const size_t at = line.find(needle);
  size_t chars = 0;
  for (size_t i = 0; i < at && i < line.size(); ++i) chars += (line[i] & 0xC0) != 0x80;
  return chars;
}

v1::Event RankEvent(const std::string& node, uint32_t from, uint32_t to) {
  v1::Event e;
  e.mutable_time()->set_seconds(1767225600);
  e.set_node_id(node);
  e.set_kind(v1::EVENT_KIND_RANK_CHANGE);
  e.set_old_rank(from);
  e.set_new_rank(to);
  e.set_message(absl::StrCat(node, " #", from, " -> #", to));
  return e;
}

TEST(EventsTableTest, ShowsKindsChangesAndMessages) {
  v1::EventsResponse r;
  *r.add_events() = RankEvent("lab-03", 1, 3);
  v1::Event hot;
  hot.mutable_time()->set_seconds(1767225590);
  hot.set_node_id("lab-03");
  hot.set_model("llama3");
  hot.set_kind(v1::EVENT_KIND_THERMAL_CHANGE);
  hot.set_old_thermal_state(v1::THERMAL_STATE_NORMAL);
  hot.set_new_thermal_state(v1::THERMAL_STATE_SERIOUS);
  *r.add_events() = hot;
  const std::string t = EventsTable(r);
  EXPECT_THAT(t, HasSubstr("2026-01-01 00:00:00 UTC  lab-03  -       rank_change     #1 -> #3"));
  EXPECT_THAT(t, HasSubstr("llama3  thermal_change  normal -> serious"));
  EXPECT_EQ(EventsTable(v1::EventsResponse()), "no events\n");
}

TEST(ProfileTableTest, ShowsLatencyQueueAndWesSideBySide) {
  v1::ProfileResponse r;
  r.set_node_id("lab-03");
  r.set_model("llama3");
  v1::ProfilePoint* p = r.add_points();
  p->mutable_time()->set_seconds(1767225600);
  p->set_tokens_per_s(92);
  p->set_ttft_p95_s(1.5);
  p->set_tpot_p95_s(0.045);
  p->set_kv_cache_usage(0.875);
  p->set_queue(7);
  p->set_thermal_state(v1::THERMAL_STATE_SERIOUS);
  p->set_watts(220);
  p->set_wes_raw(0.418);
  p->set_wes_penalized(0.239);
  const std::string t = ProfileTable(r);
  EXPECT_THAT(t, HasSubstr("profile of node lab-03, model llama3"));
  EXPECT_THAT(t, HasSubstr("92.0"));
  EXPECT_THAT(t, HasSubstr("1.50s"));
  EXPECT_THAT(t, HasSubstr("45ms"));
  EXPECT_THAT(t, HasSubstr("87.5%"));
  EXPECT_THAT(t, HasSubstr("serious"));
  EXPECT_THAT(t, HasSubstr(FormatWes(0.239)));

  v1::HistoryResponse h;
  v1::HistoryPoint* hp = h.add_points();
  hp->mutable_time()->set_seconds(1767225600);
  hp->set_tokens_per_s(15);
  hp->set_thermal_state(v1::THERMAL_STATE_FAIR);
  EXPECT_THAT(HistoryTable(h),
              HasSubstr("2026-01-01 00:00:00 UTC   15.0      -        -    -  fair"));
}

TEST(WatchScreenTest, MovesArePlainTextOffATerminalAndColouredArrowsOnOne) {
  EXPECT_EQ(RankMove(1, 2, false), "up 1 (was #2)");
  EXPECT_EQ(RankMove(4, 2, false), "down 2 (was #2)");
  EXPECT_EQ(RankMove(1, 3, true), "▲2 (#3)");
  EXPECT_EQ(RankMove(3, 1, true), "▼2 (#1)");
  EXPECT_EQ(RankMove(2, 0, true), "new");
  EXPECT_EQ(RankMove(2, 2, true), "");

  v1::LeaderboardUpdate u;
  *u.mutable_leaderboard() = FourNodeFleet();
  *u.add_events() = RankEvent("lab-03", 2, 3);
  const std::map<std::string, uint32_t> before = {
      {"studio-01", 1}, {"devbox-02", 3}, {"lab-03", 2}};
  const std::string plain = WatchScreen(u, before, false);
  EXPECT_THAT(plain, HasSubstr("devbox-02"));
  EXPECT_THAT(LineWith(plain, "devbox-02"), HasSubstr("up 1 (was #3)"));
  EXPECT_THAT(LineWith(plain, "lab-03  "), HasSubstr("down 1 (was #2)"));
  EXPECT_THAT(LineWith(plain, "spare-04"), HasSubstr("new"));
  EXPECT_THAT(plain,
              HasSubstr("events:\n  2026-01-01 00:00:00 UTC  lab-03  rank_change  #2 -> #3"));
  EXPECT_THAT(plain, HasSubstr("unranked: edge-05 (no_power_reading), old-06 (stale)"));
  EXPECT_EQ(plain.find('\x1b'), std::string::npos);

  const std::string tty = WatchScreen(u, before, true);
  EXPECT_THAT(tty, HasSubstr("\x1b[32m"));
  EXPECT_THAT(tty, HasSubstr("▲1 (#3)"));
  EXPECT_THAT(tty, HasSubstr("▼1 (#2)"));
  // Arrows count as one column: the NODE column starts at the same character on every row.
  EXPECT_EQ(CharColumn(LineWith(tty, "studio-01"), "studio-01"),
            CharColumn(LineWith(tty, "devbox-02"), "devbox-02") - 5);  // after "\x1b[32m"
  // The server's previous_rank wins over the client's memory.
  v1::LeaderboardUpdate v = u;
  v.mutable_leaderboard()->mutable_entries(0)->set_previous_rank(4);
  EXPECT_THAT(LineWith(WatchScreen(v, before, false), "studio-01"), HasSubstr("up 3 (was #4)"));
  // The first screen has no moves.
  EXPECT_THAT(WatchScreen(u, {}, false), Not(HasSubstr("was #")));
}

TEST_F(RunCommandTest, EventsHistoryAndProfileSendTheirFilters) {
  options_.node = "lab-03";
  options_.kind = "rank_change,stale";
  options_.since = "2h";
  options_.limit = 20;
  EXPECT_CALL(fleet_, Events(_, _, _))
      .WillOnce(Invoke(
          [](grpc::ClientContext* ctx, const v1::EventsRequest& req, v1::EventsResponse* resp) {
            EXPECT_EQ(req.node_id(), "lab-03");
            EXPECT_EQ(req.kinds_size(), 2);
            if (req.kinds_size() != 2) return grpc::Status::OK;
            EXPECT_EQ(req.kinds(0), v1::EVENT_KIND_RANK_CHANGE);
            EXPECT_EQ(req.kinds(1), v1::EVENT_KIND_STALE);
            EXPECT_EQ(req.start().seconds(), 1767225600 - 7200);
            EXPECT_EQ(req.limit(), 20u);
            EXPECT_GT(ctx->deadline(), std::chrono::system_clock::now());
            *resp->add_events() = RankEvent("lab-03", 1, 3);
            return grpc::Status::OK;
          }));
  EXPECT_EQ(Run({"events"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("lab-03 #1 -> #3"));

  options_ = CtlOptions();
  options_.model = "llama3";
  options_.step = absl::Minutes(1);
  options_.since = "2025-12-31T23:00:00Z";
  EXPECT_CALL(fleet_, History(_, _, _))
      .WillOnce(
          Invoke([](grpc::ClientContext*, const v1::HistoryRequest& req, v1::HistoryResponse*) {
            EXPECT_EQ(req.node_id(), "lab-03");
            EXPECT_EQ(req.model(), "llama3");
            EXPECT_EQ(req.step().seconds(), 60);
            EXPECT_EQ(req.start().seconds(), 1767225600 - 3600);
            return grpc::Status::OK;
          }));
  EXPECT_EQ(Run({"history", "lab-03"}), kExitOk);
  EXPECT_EQ(out_.str(), "no samples in the range\n");

  // Without --since the server's default range applies: no start is sent.
  options_.since = "";
  EXPECT_CALL(fleet_, Profile(_, _, _))
      .WillOnce(
          Invoke([](grpc::ClientContext*, const v1::ProfileRequest& req, v1::ProfileResponse*) {
            EXPECT_FALSE(req.has_start());
            EXPECT_FALSE(req.has_step());
            return grpc::Status::OK;
          }))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                    "node \"lab-09\" has no model samples between a and b")));
  options_.step = absl::ZeroDuration();
  EXPECT_EQ(Run({"profile", "lab-09"}), kExitOk);
  EXPECT_EQ(Run({"profile", "lab-09"}), kExitFailure);
  EXPECT_EQ(err_.str(), "fleetwesctl: node \"lab-09\" has no model samples between a and b\n");

  EXPECT_EQ(Run({"history"}), kExitUsage);
  options_.since = "last tuesday";
  EXPECT_EQ(Run({"profile", "lab-03"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--since must be an RFC 3339 time or a duration"));
  options_ = CtlOptions();
  options_.kind = "hot";
  EXPECT_EQ(Run({"events"}), kExitUsage);
}

TEST_F(RunCommandTest, WatchPrintsEachUpdateWithMovesUntilTheServerEndsIt) {
  options_.watch = true;
  auto* reader = new grpc::testing::MockClientReader<v1::LeaderboardUpdate>();
  v1::LeaderboardUpdate first;
  *first.mutable_leaderboard() = FourNodeFleet();
  v1::LeaderboardUpdate second = first;
  second.mutable_leaderboard()->mutable_entries(1)->set_rank(3);
  second.mutable_leaderboard()->mutable_entries(2)->set_rank(2);
  *second.add_events() = RankEvent("lab-03", 3, 2);
  EXPECT_CALL(*reader, Read(_))
      .WillOnce(DoAll(SetArgPointee<0>(first), Return(true)))
      .WillOnce(DoAll(SetArgPointee<0>(second), Return(true)))
      .WillOnce(Return(false));
  EXPECT_CALL(*reader, Finish()).WillOnce(Return(grpc::Status::OK));
  EXPECT_CALL(fleet_, WatchLeaderboardRaw(_, _)).WillOnce(Return(reader));
  EXPECT_EQ(Run({"leaderboard"}), kExitOk);
  const std::string out = out_.str();
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_THAT(out, HasSubstr("up 1 (was #3)"));
  EXPECT_THAT(out, HasSubstr("down 1 (was #2)"));
  EXPECT_THAT(out, HasSubstr("#3 -> #2"));
  EXPECT_EQ(err_.str(), "fleetwesctl: the aggregator ended the watch\n");

  // Refused or unreachable: one clear line.
  auto* refused = new grpc::testing::MockClientReader<v1::LeaderboardUpdate>();
  EXPECT_CALL(*refused, Read(_)).WillOnce(Return(false));
  EXPECT_CALL(*refused, Finish())
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "Connection refused")));
  EXPECT_CALL(fleet_, WatchLeaderboardRaw(_, _)).WillOnce(Return(refused));
  EXPECT_EQ(Run({"leaderboard"}), kExitFailure);
  EXPECT_EQ(err_.str(),
            "fleetwesctl: cannot reach fleetwes-aggregator at localhost:7470 (connection "
            "refused)\n");
}

// A loopback port with nothing listening: bind port 0, read it back, close.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(RealChannelTest, ConnectionRefusedIsReportedAsSuch) {
  const std::string server = absl::StrCat("127.0.0.1:", ClosedPort());
  auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
  auto fleet = v1::Fleet::NewStub(channel);
  auto router = v1::Router::NewStub(channel);
  CtlOptions options;
  options.server = server;
  std::ostringstream out, err;
  EXPECT_EQ(RunCommand({"leaderboard"}, options, *fleet, *router, absl::Now(), out, err),
            kExitFailure);
  EXPECT_EQ(err.str(), absl::StrCat("fleetwesctl: cannot reach fleetwes-aggregator at ", server,
                                    " (connection refused)\n"));
}

}  // namespace
}  // namespace fleetwes::aggregator::ctl
