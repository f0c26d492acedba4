// fleetwes-loadgen: simulated frames (determinism, WES, throttling, swapping) and the streaming
// client against an in-process Ingest server (acks, reconnect and resend).
#include <google/protobuf/arena.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent/loadgen/load_generator.h"
#include "agent/loadgen/profiles.h"
#include "agent/loadgen/sim_node.h"
#include "common/clock.h"
#include "common/thermal.h"
#include "common/wes.h"
#include "fleetwes/v1/ingest.grpc.pb.h"

namespace fleetwes::agent::loadgen {
namespace {

const HardwareProfile& ProfileNamed(const std::string& name) {
  for (const auto& p : BuiltinProfiles()) {
    if (p.name == name) return p;
  }
  ADD_FAILURE() << "no profile " << name;
  return BuiltinProfiles().front();
}

SimNodeOptions Options(const std::string& profile, uint64_t seed) {
  SimNodeOptions o;
  o.node_id = "sim-01";
  o.boot_id = "boot-1";
  o.profile = ProfileNamed(profile);
  o.seed = seed;
  o.interval = absl::Seconds(2);
  o.start = absl::FromUnixSeconds(1767225600);
  return o;
}

double Seconds(const google::protobuf::Timestamp& ts) {
  return static_cast<double>(ts.seconds()) + ts.nanos() * 1e-9;
}

TEST(SimNodeTest, SameSeedSameFramesOtherSeedOtherFrames) {
  SimNode a(Options("rtx4090-vllm", 7)), b(Options("rtx4090-vllm", 7)),
      c(Options("rtx4090-vllm", 8));
  bool differs = false;
  for (int i = 0; i < 50; ++i) {
    const v1::Frame fa = a.NextFrame(), fb = b.NextFrame(), fc = c.NextFrame();
    ASSERT_EQ(fa.SerializeAsString(), fb.SerializeAsString()) << "frame " << i + 1;
    differs |= fa.SerializeAsString() != fc.SerializeAsString();
  }
  EXPECT_TRUE(differs);
}

TEST(SimNodeTest, AFrameBuiltIntoAReusedArenaMessageIsTheSameOnTheWire) {
  // The load generator builds frames into arena messages; the bytes sent must be the ones of the
  // plain NextFrame(), whatever the message held before.
  for (const HardwareProfile& p : BuiltinProfiles()) {
    SCOPED_TRACE(p.name);
    SimNodeOptions o = Options(p.name, 3);
    SimNode plain(o), into(o);
    SimNode into_reset(o);
    google::protobuf::Arena arena;
    auto* request = google::protobuf::Arena::CreateMessage<v1::PublishRequest>(&arena);
    // As the load generator recycles a block: its arena reset, a new message on it.
    alignas(std::max_align_t) char first_block[2048];
    google::protobuf::ArenaOptions block_options;
    block_options.initial_block = first_block;
    block_options.initial_block_size = sizeof(first_block);
    google::protobuf::Arena block(block_options);
    for (int i = 0; i < 40; ++i) {
      const v1::Frame expected = plain.NextFrame();
      into.NextFrame(request->mutable_frame());
      ASSERT_EQ(request->frame().SerializeAsString(), expected.SerializeAsString())
          << "frame " << i + 1;
      ASSERT_EQ(request->frame().seq(), static_cast<uint64_t>(i + 1));
      block.Reset();
      auto* recycled = google::protobuf::Arena::CreateMessage<v1::PublishRequest>(&block);
      into_reset.NextFrame(recycled->mutable_frame());
      ASSERT_EQ(recycled->frame().SerializeAsString(), expected.SerializeAsString())
          << "frame " << i + 1 << " on a reset arena";
    }
  }
}

TEST(SimNodeTest, EveryProfileGivesConsistentFrames) {
  for (const HardwareProfile& p : BuiltinProfiles()) {
    SCOPED_TRACE(p.name);
    SimNode node(Options(p.name, 3));
    double prev_end = Seconds(node.NextFrame().window_end());
    uint64_t prev_counter = 0;
    for (int i = 2; i <= 120; ++i) {
      const v1::Frame f = node.NextFrame();
      ASSERT_EQ(f.seq(), static_cast<uint64_t>(i));
      EXPECT_EQ(Seconds(f.window_start()), prev_end);
      EXPECT_DOUBLE_EQ(Seconds(f.window_end()) - Seconds(f.window_start()), 2.0);
      prev_end = Seconds(f.window_end());
      ASSERT_EQ(f.models_size(), 1);
      ASSERT_EQ(f.devices_size(), 1);
      const v1::ModelSample& m = f.models(0);
      const v1::Device& d = f.devices(0);
      EXPECT_EQ(m.model(), p.model);
      EXPECT_EQ(d.power_scope(), p.power_scope);
      // Rates come from whole-token deltas over the window.
      EXPECT_DOUBLE_EQ(m.decode_tokens_per_s(), static_cast<double>(m.decode_tokens()) / 2.0);
      EXPECT_GT(m.decode_tokens_per_s(), 0.2 * p.tokens_per_s);
      EXPECT_LT(m.decode_tokens_per_s(), 1.3 * p.tokens_per_s);
      EXPECT_GT(d.power_w(), 0);
      EXPECT_DOUBLE_EQ(d.energy_j(), d.power_w() * 2.0);
      if (p.energy_counter) {
        EXPECT_GT(d.energy_counter_uj(), prev_counter);
        prev_counter = d.energy_counter_uj();
      } else {
        EXPECT_FALSE(d.has_energy_counter_uj());
      }
      // WES is the documented formula on the frame's own inputs.
      const v1::Wes& w = f.node_wes();
      ASSERT_TRUE(w.has_raw());
      EXPECT_DOUBLE_EQ(w.raw(), m.decode_tokens_per_s() / (d.power_w() * p.pue));
      EXPECT_DOUBLE_EQ(w.penalized(), w.raw() / ThermalPenalties().For(f.thermal_state()));
      EXPECT_EQ(w.thermal_state(), f.thermal_state());
      EXPECT_EQ(d.thermal_state(), f.thermal_state());
      EXPECT_EQ(m.wes().SerializeAsString(), w.SerializeAsString());
      EXPECT_TRUE(std::isfinite(f.system().memory_pressure_some_avg10()));
    }
  }
}

TEST(SimNodeTest, HotNodeThrottlesWithVendorSignals) {
  SimNode node(Options("rtx4090-vllm-hot", 11));
  std::map<v1::ThermalState, int> states;
  double normal_tok = 0, critical_tok = 0;
  int normal_n = 0, critical_n = 0;
  for (int i = 0; i < 400; ++i) {
    const v1::Frame f = node.NextFrame();
    const v1::Device& d = f.devices(0);
    ++states[f.thermal_state()];
    switch (f.thermal_state()) {
      case v1::THERMAL_STATE_NORMAL:
        EXPECT_EQ(
            d.throttle_mask() & (thermal::kNvSwThermalSlowdown | thermal::kNvHwThermalSlowdown),
            0u);
        EXPECT_LT(d.temperature_c(), 84.0);
        normal_tok += f.models(0).decode_tokens_per_s();
        ++normal_n;
        break;
      case v1::THERMAL_STATE_FAIR:
        EXPECT_GE(d.temperature_c(), 84.0);  // within 5 degC of GPU_MAX 89
        break;
      case v1::THERMAL_STATE_SERIOUS:
        EXPECT_NE(d.throttle_mask() & thermal::kNvSwThermalSlowdown, 0u);
        break;
      case v1::THERMAL_STATE_CRITICAL:
        EXPECT_NE(d.throttle_mask() & thermal::kNvHwThermalSlowdown, 0u);
        EXPECT_LT(f.node_wes().penalized(), f.node_wes().raw());
        critical_tok += f.models(0).decode_tokens_per_s();
        ++critical_n;
        break;
      default:
        ADD_FAILURE() << "unexpected state " << f.thermal_state();
    }
  }
  EXPECT_GT(states[v1::THERMAL_STATE_NORMAL], 100);
  EXPECT_GT(states[v1::THERMAL_STATE_FAIR], 0);
  EXPECT_GT(states[v1::THERMAL_STATE_SERIOUS], 0);
  ASSERT_GT(critical_n, 0);
  EXPECT_LT(critical_tok / critical_n, 0.7 * normal_tok / normal_n);
}

TEST(SimNodeTest, SwappingNodeReportsMemoryPressure) {
  SimNode node(Options("m4-16gb-ollama", 5));
  for (int i = 0; i < 20; ++i) {
    const v1::Frame f = node.NextFrame();
    EXPECT_TRUE(f.system().memory_pressure());
    EXPECT_GT(f.system().swap_in_pages_per_s(), 0);
    EXPECT_GT(f.system().swap_out_pages_per_s(), 0);
    EXPECT_LT(f.system().memory_available_bytes(), f.system().memory_total_bytes() / 10);
  }
  SimNode calm(Options("a100-vllm", 5));
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(calm.NextFrame().system().memory_pressure());
}

TEST(SimNodeTest, HelloDescribesTheNode) {
  SimNode node(Options("xeon-llamacpp", 1));
  const v1::Hello h = node.MakeHello(3);
  EXPECT_EQ(h.node_id(), "sim-01");
  EXPECT_EQ(h.boot_id(), "boot-1");
  EXPECT_EQ(h.devices(0).power_scope(), v1::POWER_SCOPE_CPU_PACKAGE);
  EXPECT_EQ(h.engines(0).kind(), v1::ENGINE_KIND_LLAMACPP);
  EXPECT_EQ(h.labels().at("profile"), "xeon-llamacpp");
  EXPECT_EQ(h.evicted_frames(), 3u);
  EXPECT_EQ(h.interval_s(), 2.0);
}

TEST(LoadgenReportTest, PercentilesIdsAndJson) {
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({5, 1, 3, 2, 4}, 0.5), 3);
  EXPECT_EQ(Percentile({5, 1, 3, 2, 4}, 0.99), 5);
  EXPECT_EQ(NodeId("sim", 0, 12), "sim-01");
  EXPECT_EQ(NodeId("sim", 11, 12), "sim-12");
  EXPECT_EQ(NodeId("x", 6, 1000), "x-0007");
  LoadReport r;
  r.frames_sent = 10;
  r.frames_acked = 9;
  r.acked_per_s = 4.5;
  r.ack_p50_ms = 1.5;
  r.ack_p99_ms = 7.25;
  const std::string line = ReportJson(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("{\"frames_sent\":10,\"frames_acked\":9,\"acked_per_s\":4.5,"
                       "\"ack_p50_ms\":1.5,\"ack_p99_ms\":7.25,",
                       0),
            0u)
      << line;
  EXPECT_EQ(ValidateOptions(LoadOptions()), "");
  LoadOptions bad;
  bad.nodes = 0;
  EXPECT_NE(ValidateOptions(bad), "");
}

// An Ingest server that records every stream and acks every frame at once. With
// `fail_first_stream_after` > 0, the first stream of each node ends with UNAVAILABLE after that
// many frames, without acking any of them.
class FakeIngest final : public v1::Ingest::Service {
 public:
  explicit FakeIngest(int fail_first_stream_after) : fail_after_(fail_first_stream_after) {}

  grpc::Status Publish(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::PublishResponse, v1::PublishRequest>* stream) override {
    v1::PublishRequest req;
    if (!stream->Read(&req) || !req.has_hello()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello first");
    }
    const v1::Hello hello = req.hello();
    bool first_stream;
    {
      absl::MutexLock l(&mu_);
      first_stream = streams_[hello.node_id()]++ == 0;
    }
    int frames = 0;
    while (stream->Read(&req)) {
      if (!req.has_frame()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "frame");
      const v1::Frame& f = req.frame();
      {
        absl::MutexLock l(&mu_);
        seqs_[f.node_id()].push_back(f.seq());
        if (f.boot_id() != hello.boot_id()) ++mismatches_;
      }
      ++frames;
      if (first_stream && fail_after_ > 0) {
        if (frames >= fail_after_) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "writer restarting");
        }
        continue;  // nothing on a failing stream is acknowledged
      }
      v1::PublishResponse ack;
      ack.mutable_ack()->set_boot_id(f.boot_id());
      ack.mutable_ack()->set_seq(f.seq());
      stream->Write(ack);
    }
    return grpc::Status::OK;
  }

  std::map<std::string, std::vector<uint64_t>> seqs() {
    absl::MutexLock l(&mu_);
    return seqs_;
  }
  std::map<std::string, int> streams() {
    absl::MutexLock l(&mu_);
    return streams_;
  }
  int mismatches() {
    absl::MutexLock l(&mu_);
    return mismatches_;
  }

 private:
  const int fail_after_;
  absl::Mutex mu_;
  std::map<std::string, std::vector<uint64_t>> seqs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> streams_ ABSL_GUARDED_BY(mu_);
  int mismatches_ ABSL_GUARDED_BY(mu_) = 0;
};

class LoadGeneratorTest : public ::testing::Test {
 protected:
  void StartServer(int fail_after) {
    service_ = std::make_unique<FakeIngest>(fail_after);
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }
  LoadOptions Opts(int nodes) {
    LoadOptions o;
    o.target = absl::StrCat("127.0.0.1:", port_);
    o.nodes = nodes;
    o.interval = absl::Milliseconds(50);
    o.duration = absl::Milliseconds(600);
    o.drain_timeout = absl::Seconds(5);
    o.nodes_per_channel = 2;
    return o;
  }

  std::unique_ptr<FakeIngest> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(LoadGeneratorTest, EveryFrameIsSentInOrderAndAcked) {
  StartServer(0);
  absl::Notification stop;
  LoadGenerator gen(Opts(5), RealClock());
  const LoadReport r = gen.Run(&stop);
  EXPECT_EQ(r.nodes, 5);
  EXPECT_GE(r.frames_sent, 5u * 10);  // 600 ms at 50 ms per node, less the stagger
  EXPECT_EQ(r.frames_acked, r.frames_sent);
  EXPECT_EQ(r.frames_resent, 0u);
  EXPECT_EQ(r.frames_rejected, 0u);
  EXPECT_EQ(r.connects, 5u);
  EXPECT_EQ(r.disconnects, 0u);
  EXPECT_GT(r.ack_p50_ms, 0);
  EXPECT_LE(r.ack_p50_ms, r.ack_p99_ms);
  EXPECT_GT(r.acked_per_s, 0);
  const auto seqs = service_->seqs();
  ASSERT_EQ(seqs.size(), 5u);
  uint64_t total = 0;
  for (const auto& [node, s] : seqs) {
    for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(s[i], i + 1) << node;
    total += s.size();
  }
  EXPECT_EQ(total, r.frames_sent);
  EXPECT_EQ(service_->mismatches(), 0);
  EXPECT_EQ(seqs.begin()->first, "sim-01");
}

TEST_F(LoadGeneratorTest, ReconnectsAndResendsWhatWasNotAcked) {
  StartServer(2);
  absl::Notification stop;
  LoadGenerator gen(Opts(3), RealClock());
  const LoadReport r = gen.Run(&stop);
  EXPECT_EQ(r.disconnects, 3u);
  EXPECT_EQ(r.connects, 6u);
  EXPECT_GE(r.frames_resent, 3u * 2);
  EXPECT_EQ(r.frames_acked, r.frames_sent);
  EXPECT_FALSE(r.last_error.empty());
  for (const auto& [node, streams] : service_->streams()) EXPECT_EQ(streams, 2) << node;
  for (const auto& [node, s] : service_->seqs()) {
    // First stream: 1, 2, then the stream fails; second stream starts over at 1.
    ASSERT_GE(s.size(), 4u) << node;
    EXPECT_EQ(s[0], 1u);
    EXPECT_EQ(s[1], 2u);
    EXPECT_EQ(s[2], 1u);
    EXPECT_EQ(s[3], 2u);
  }
}

TEST_F(LoadGeneratorTest, StopsPromptlyWhenAsked) {
  StartServer(0);
  absl::Notification stop;
  LoadOptions o = Opts(2);
  o.duration = absl::ZeroDuration();  // until stopped
  stop.Notify();
  LoadGenerator gen(o, RealClock());
  const LoadReport r = gen.Run(&stop);
  EXPECT_EQ(r.frames_sent, 0u);
  EXPECT_EQ(r.connects, 2u);
}

}  // namespace
}  // namespace fleetwes::agent::loadgen
