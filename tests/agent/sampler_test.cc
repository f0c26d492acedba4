#include "agent/sampler.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "agent/agent.h"
#include "agent/collectors/linux_hw.h"
#include "agent/collectors/llamacpp.h"
#include "common/clock.h"
#include "common/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/replay_server.h"

namespace fleetwes::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// An engine whose readings the test sets; optionally blocks until released.
class FakeEngine final : public EngineCollector {
 public:
  struct Shared {
    absl::Mutex mu;
    EngineReading next ABSL_GUARDED_BY(mu);
    absl::Notification* block ABSL_GUARDED_BY(mu) = nullptr;
  };
  FakeEngine(std::string id, std::shared_ptr<Shared> shared,
             absl::Duration timeout = absl::Seconds(1))
      : id_(std::move(id)),
        endpoint_("http://fake/" + id_),
        timeout_(timeout),
        shared_(std::move(shared)) {}
  const std::string& engine_id() const override { return id_; }
  v1::EngineKind kind() const override { return v1::ENGINE_KIND_LLAMACPP; }
  const std::string& endpoint() const override { return endpoint_; }
  absl::Duration timeout() const override { return timeout_; }
  EngineReading Read() override {
    absl::Notification* block;
    {
      absl::MutexLock lock(&shared_->mu);
      block = shared_->block;
    }
    if (block != nullptr) block->WaitForNotification();
    absl::MutexLock lock(&shared_->mu);
    return shared_->next;
  }

 private:
  std::string id_;
  std::string endpoint_;
  absl::Duration timeout_;
  std::shared_ptr<Shared> shared_;
};

class FakeHardware final : public HardwareCollector {
 public:
  explicit FakeHardware(std::shared_ptr<HardwareReading> next) : next_(std::move(next)) {}
  HardwareReading Read() override { return *next_; }

 private:
  std::shared_ptr<HardwareReading> next_;
};

EngineReading Engine(const std::string& model, double decode_total,
                     std::optional<uint64_t> vram = std::nullopt) {
  EngineReading r;
  r.available = true;
  r.version = "b1";
  ModelReading m;
  m.model = model;
  m.decode_tokens_total = decode_total;
  m.prefill_tokens_total = decode_total * 2;
  m.vram_bytes = vram;
  r.models.push_back(m);
  return r;
}

DeviceReading Package(uint64_t energy_uj) {
  DeviceReading d;
  d.id = "package-0";
  d.kind = v1::DEVICE_KIND_CPU;
  d.name = "CPU package-0";
  d.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
  d.energy_uj = energy_uj;
  d.energy_max_range_uj = 262'143'328'850;
  return d;
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

class SamplerTest : public ::testing::Test {
 protected:
  // Two fake engines "a" and "b" plus fake hardware.
  std::unique_ptr<Sampler> Make(int engines = 2, absl::Duration timeout = absl::Seconds(1)) {
    std::vector<std::unique_ptr<EngineCollector>> collectors;
    for (int i = 0; i < engines; ++i) {
      collectors.push_back(std::make_unique<FakeEngine>(i == 0 ? "a" : "b", shared_[i], timeout));
    }
    SamplerOptions o;
    o.node_id = "node-1";
    o.boot_id = "boot-1";
    o.labels = {{"site", "lab"}};
    o.interval = absl::Seconds(2);
    o.pue = 1.5;
    o.engine_grace = absl::Milliseconds(50);
    o.proc_root = proc_root_;
    return std::make_unique<Sampler>(std::move(o), std::move(collectors),
                                     std::make_unique<FakeHardware>(hw_), &clock_);
  }
  void SetEngine(int i, EngineReading r) {
    absl::MutexLock lock(&shared_[i]->mu);
    shared_[i]->next = std::move(r);
  }

  std::string proc_root_;
  FakeClock clock_;
  std::shared_ptr<FakeEngine::Shared> shared_[2] = {std::make_shared<FakeEngine::Shared>(),
                                                    std::make_shared<FakeEngine::Shared>()};
  std::shared_ptr<HardwareReading> hw_ = std::make_shared<HardwareReading>();
};

TEST_F(SamplerTest, WindowsAreExactAndSequenced) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 1000));
  const absl::Time t0 = clock_.Now();
  EXPECT_FALSE(sampler->Tick().has_value());  // baseline only

  clock_.Advance(absl::Milliseconds(2010));
  SetEngine(0, Engine("m", 1201));
  std::optional<v1::Frame> f1 = sampler->Tick();
  ASSERT_TRUE(f1.has_value());
  EXPECT_EQ(f1->node_id(), "node-1");
  EXPECT_EQ(f1->boot_id(), "boot-1");
  EXPECT_EQ(f1->seq(), 1u);
  EXPECT_EQ(ToTime(f1->window_start()), t0);
  EXPECT_EQ(ToTime(f1->window_end()), t0 + absl::Milliseconds(2010));
  EXPECT_EQ(f1->interval_s(), 2.0);
  EXPECT_EQ(f1->pue(), 1.5);
  ASSERT_EQ(f1->models_size(), 1);
  EXPECT_EQ(f1->models(0).decode_tokens(), 201u);
  EXPECT_EQ(f1->models(0).decode_tokens_per_s(), 201 / 2.01);

  clock_.Advance(absl::Seconds(2));
  std::optional<v1::Frame> f2 = sampler->Tick();
  ASSERT_TRUE(f2.has_value());
  EXPECT_EQ(f2->seq(), 2u);
  EXPECT_EQ(ToTime(f2->window_start()), ToTime(f1->window_end()));
  EXPECT_EQ(f2->models(0).decode_tokens_per_s(), 0.0);
  EXPECT_EQ(f2->models(0).wes().null_reason(), v1::WES_NULL_REASON_IDLE);
}

TEST_F(SamplerTest, EnergySplitByVramAmongGeneratingModels) {
  auto sampler = Make(2);
  hw_->devices = {Package(1'000'000)};
  SetEngine(0, Engine("big", 0, 3'000));
  SetEngine(1, Engine("small", 0, 1'000));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  hw_->devices = {Package(201'000'000)};      // 200 J over 2 s: 100 W
  SetEngine(0, Engine("big", 100, 3'000));    // 50 tok/s
  SetEngine(1, Engine("small", 300, 1'000));  // 150 tok/s
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->models_size(), 2);
  const v1::ModelSample& big = f->models(0);
  const v1::ModelSample& small = f->models(1);
  EXPECT_DOUBLE_EQ(big.watts_attributed(), 75.0);
  EXPECT_DOUBLE_EQ(small.watts_attributed(), 25.0);
  EXPECT_DOUBLE_EQ(big.wes().raw(), 50.0 / (75.0 * 1.5));
  EXPECT_DOUBLE_EQ(small.wes().raw(), 150.0 / (25.0 * 1.5));
  EXPECT_THAT(big.wes().power_scopes(), ::testing::ElementsAre(v1::POWER_SCOPE_CPU_PACKAGE));
  // Node: all tokens over all energy.
  EXPECT_DOUBLE_EQ(f->node_wes().tokens_per_s(), 200.0);
  EXPECT_DOUBLE_EQ(f->node_wes().watts(), 100.0);
  EXPECT_DOUBLE_EQ(f->node_wes().raw(), 200.0 / (100.0 * 1.5));
  EXPECT_EQ(f->node_wes().null_reason(), v1::WES_NULL_REASON_UNSPECIFIED);
  ASSERT_EQ(f->devices_size(), 1);
  EXPECT_DOUBLE_EQ(f->devices(0).power_w(), 100.0);
}

TEST_F(SamplerTest, EqualSplitWithoutVramAndNothingForIdleModels) {
  auto sampler = Make(2);
  hw_->devices = {Package(0)};
  SetEngine(0, Engine("x", 0));
  SetEngine(1, Engine("y", 0, 5'000));
  sampler->Tick();
  clock_.Advance(absl::Seconds(1));
  hw_->devices = {Package(60'000'000)};
  SetEngine(0, Engine("x", 30));
  SetEngine(1, Engine("y", 0, 5'000));  // loaded, generated nothing
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_DOUBLE_EQ(f->models(0).watts_attributed(), 60.0);  // the only generating model
  EXPECT_FALSE(f->models(1).has_watts_attributed());
  EXPECT_EQ(f->models(1).wes().null_reason(), v1::WES_NULL_REASON_IDLE);

  // Both generating, VRAM known for only one: equal split.
  clock_.Advance(absl::Seconds(1));
  hw_->devices = {Package(120'000'000)};
  SetEngine(0, Engine("x", 60));
  SetEngine(1, Engine("y", 10, 5'000));
  f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_DOUBLE_EQ(f->models(0).watts_attributed(), 30.0);
  EXPECT_DOUBLE_EQ(f->models(1).watts_attributed(), 30.0);
}

TEST_F(SamplerTest, NoPowerReadingMeansNullWes) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  SetEngine(0, Engine("m", 100));
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->node_wes().has_raw());
  EXPECT_EQ(f->node_wes().null_reason(), v1::WES_NULL_REASON_NO_POWER_READING);
  EXPECT_EQ(f->models(0).wes().null_reason(), v1::WES_NULL_REASON_NO_POWER_READING);
  EXPECT_FALSE(f->models(0).has_watts_attributed());
  EXPECT_EQ(f->models(0).decode_tokens_per_s(), 50.0);
}

TEST_F(SamplerTest, WorstDeviceStatePenalizes) {
  auto sampler = Make(1);
  DeviceReading hot = Package(0);
  thermal::CpuReading zone;
  zone.temperature_c = 92;
  zone.trips = {{thermal::TripType::kPassive, 95}};
  hot.cpu_zones = {zone};
  DeviceReading dram;
  dram.id = "dram-0";
  dram.kind = v1::DEVICE_KIND_DRAM;
  dram.power_scope = v1::POWER_SCOPE_DRAM;
  dram.energy_uj = 0;
  hw_->devices = {hot, dram};
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  hot.energy_uj = 80'000'000;
  dram.energy_uj = 20'000'000;
  hw_->devices = {hot, dram};
  SetEngine(0, Engine("m", 100));
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->thermal_state(), v1::THERMAL_STATE_FAIR);
  EXPECT_EQ(f->node_wes().thermal_state(), v1::THERMAL_STATE_FAIR);
  EXPECT_DOUBLE_EQ(f->node_wes().watts(), 50.0);
  EXPECT_DOUBLE_EQ(f->node_wes().raw(), 50.0 / (50.0 * 1.5));
  EXPECT_DOUBLE_EQ(f->node_wes().penalized(), 50.0 / (50.0 * 1.5 * 1.25));
  EXPECT_DOUBLE_EQ(f->node_wes().thermal_cost_pct(), 20.0);
  EXPECT_THAT(f->node_wes().power_scopes(),
              ::testing::ElementsAre(v1::POWER_SCOPE_CPU_PACKAGE, v1::POWER_SCOPE_DRAM));
}

DeviceReading NvidiaGpu(const std::string& id, uint64_t energy_uj,
                        std::vector<GpuProcessReading> processes, double temp = 50) {
  DeviceReading d;
  d.id = id;
  d.kind = v1::DEVICE_KIND_GPU_NVIDIA;
  d.power_scope = v1::POWER_SCOPE_GPU_BOARD;
  d.energy_uj = energy_uj;
  d.temperature_c = temp;
  d.slowdown_threshold_c = 90;
  d.gpu_max_threshold_c = 85;
  d.clocks_event_mask = 0;
  d.processes = std::move(processes);
  return d;
}

TEST_F(SamplerTest, GpuProcessListsPlaceTheEngineOnItsGpu) {
  // A fake procfs: engine "a" (http://fake/a, port 80) listens in pid 100; its child 101 holds
  // memory on gpu0. gpu1 serves someone else and runs hot.
  std::string tmpl = (std::filesystem::temp_directory_path() / "fleetwes-proc-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  proc_root_ = tmpl;
  namespace fs = std::filesystem;
  fs::create_directories(tmpl + "/proc/net");
  std::ofstream(tmpl + "/proc/net/tcp")
      << "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
         "timeout inode\n"
         "   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0    "
         "    0 777 1 0000000000000000 100 0 0 10 0\n";
  for (auto [pid, ppid] : {std::pair{100, 1}, std::pair{101, 100}, std::pair{300, 1}}) {
    fs::create_directories(tmpl + "/proc/" + std::to_string(pid) + "/fd");
    std::ofstream(tmpl + "/proc/" + std::to_string(pid) + "/stat")
        << pid << " (x) S " << ppid << " 0 0\n";
  }
  fs::create_symlink("socket:[777]", tmpl + "/proc/100/fd/5");

  auto sampler = Make(1);
  auto gpus = [&](uint64_t e0, uint64_t e1) {
    hw_->devices = {Package(e0), NvidiaGpu("gpu0", e0, {{101, 20'000'000'000}}),
                    NvidiaGpu("gpu1", e1, {{300, 1'000}}, 95)};
  };
  gpus(0, 0);
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  gpus(400'000'000, 600'000'000);  // gpu0 200 W, gpu1 300 W, package 200 W
  SetEngine(0, Engine("m", 100));
  std::optional<v1::Frame> f = sampler->Tick();
  fs::remove_all(tmpl);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->thermal_state(), v1::THERMAL_STATE_CRITICAL);  // gpu1
  const v1::ModelSample& m = f->models(0);
  EXPECT_DOUBLE_EQ(m.watts_attributed(), 200.0);  // gpu0 only
  EXPECT_THAT(m.wes().power_scopes(), ::testing::ElementsAre(v1::POWER_SCOPE_GPU_BOARD));
  EXPECT_EQ(m.wes().thermal_state(), v1::THERMAL_STATE_NORMAL);  // its own GPU's state
  EXPECT_DOUBLE_EQ(m.wes().raw(), 50.0 / (200.0 * 1.5));
  // The node keeps all tokens over all energy.
  EXPECT_DOUBLE_EQ(f->node_wes().watts(), 700.0);
  EXPECT_EQ(f->node_wes().thermal_state(), v1::THERMAL_STATE_CRITICAL);
}

// Runs a SamplerLoop under the fake clock and collects its frames.
class LoopHarness {
 public:
  LoopHarness(Sampler* sampler, FakeClock* clock, absl::Duration interval, absl::Duration max)
      : clock_(clock),
        loop_(
            sampler, clock, interval,
            [this](v1::Frame f) {
              absl::MutexLock lock(&mu_);
              frames_.push_back(std::move(f));
            },
            max) {
    loop_.Start();
    WaitParked(0);
  }
  ~LoopHarness() { loop_.Stop(); }
  // Advances the clock by `d` and waits (real time, bounded) for the loop to deliver one more
  // frame and park again. Returns that frame.
  v1::Frame Step(absl::Duration d) {
    size_t want;
    {
      absl::MutexLock lock(&mu_);
      want = frames_.size() + 1;
    }
    clock_->Advance(d);
    WaitParked(want);
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(frames_.size(), want);
    return frames_.empty() ? v1::Frame() : frames_.back();
  }

 private:
  void WaitParked(size_t frames) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      {
        absl::MutexLock lock(&mu_);
        if (frames_.size() >= frames && clock_->waiters() == 1) return;
      }
      absl::SleepFor(absl::Milliseconds(1));  // polling a real thread, bounded by the deadline
    }
    ADD_FAILURE() << "the loop did not deliver frame " << frames;
  }

  FakeClock* clock_;
  absl::Mutex mu_;
  std::vector<v1::Frame> frames_ ABSL_GUARDED_BY(mu_);
  SamplerLoop loop_;
};

double Seconds(const v1::Frame& f) {
  return absl::ToDoubleSeconds(ToTime(f.window_end()) - ToTime(f.window_start()));
}

TEST_F(SamplerTest, CadenceCalmThenIdleBackoffWithHeartbeat) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 0));
  LoopHarness loop(sampler.get(), &clock_, absl::Seconds(2), absl::Seconds(30));
  std::vector<v1::Frame> frames;
  double tokens = 0;
  for (int i = 0; i < 3; ++i) {  // calm: 100 tok/s at the base cadence
    tokens += 200;
    SetEngine(0, Engine("m", tokens));
    frames.push_back(loop.Step(absl::Seconds(2)));
    EXPECT_EQ(frames.back().interval_s(), 2.0);
  }
  // Traffic stops: the drop is a sharp change (one fast window), then idle backoff to 30 s,
  // where a heartbeat frame keeps coming every 30 s.
  for (double expected : {2.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0}) {
    frames.push_back(loop.Step(absl::Seconds(expected)));
    EXPECT_EQ(frames.back().interval_s(), expected);
    EXPECT_DOUBLE_EQ(Seconds(frames.back()), expected);
  }
  // Traffic again: fast, then back to base after three calm windows.
  tokens += 3000;
  SetEngine(0, Engine("m", tokens));
  frames.push_back(loop.Step(absl::Seconds(30)));
  for (double expected : {1.0, 1.0, 1.0, 2.0}) {
    tokens += 100 * expected;
    SetEngine(0, Engine("m", tokens));
    frames.push_back(loop.Step(absl::Seconds(expected)));
    EXPECT_EQ(frames.back().interval_s(), expected);
  }
  for (size_t i = 1; i < frames.size(); ++i) {
    EXPECT_EQ(ToTime(frames[i].window_start()), ToTime(frames[i - 1].window_end())) << i;
    EXPECT_EQ(frames[i].seq(), frames[i - 1].seq() + 1);
  }
}

TEST_F(SamplerTest, CadenceThermalChangeGoesFastThenBackToBase) {
  auto sampler = Make(1);
  DeviceReading pkg = Package(0);
  thermal::CpuReading zone;
  zone.temperature_c = 60;
  zone.trips = {{thermal::TripType::kPassive, 95}};
  pkg.cpu_zones = {zone};
  hw_->devices = {pkg};
  double tokens = 0;
  SetEngine(0, Engine("m", tokens));
  LoopHarness loop(sampler.get(), &clock_, absl::Seconds(2), absl::Seconds(30));
  auto step = [&](double seconds) {
    tokens += 50 * seconds;  // a steady 50 tok/s
    SetEngine(0, Engine("m", tokens));
    return loop.Step(absl::Seconds(seconds));
  };
  EXPECT_EQ(step(2).interval_s(), 2.0);
  EXPECT_EQ(step(2).interval_s(), 2.0);
  pkg.cpu_zones[0].temperature_c = 96;  // passive trip crossed: Serious
  hw_->devices = {pkg};
  v1::Frame hot = step(2);
  EXPECT_EQ(hot.thermal_state(), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(hot.interval_s(), 2.0);
  pkg.cpu_zones[0].temperature_c = 92;  // Fair: still changing
  hw_->devices = {pkg};
  EXPECT_EQ(step(1).interval_s(), 1.0);
  EXPECT_EQ(step(0.5).interval_s(), 0.5);  // steady Fair from here on
  EXPECT_EQ(step(0.5).interval_s(), 0.5);
  EXPECT_EQ(step(0.5).interval_s(), 0.5);
  EXPECT_EQ(step(2).interval_s(), 2.0);  // three calm windows: back to base
  EXPECT_EQ(step(2).interval_s(), 2.0);
}

TEST(CadenceTest, LimitsAndMaxNotBelowBase) {
  Cadence c(absl::Seconds(45), absl::Seconds(30));
  v1::Frame idle;
  EXPECT_EQ(c.Next(idle), absl::Seconds(45));  // max raised to base: nothing slower
  Cadence fast(absl::Milliseconds(100), absl::Seconds(1));
  EXPECT_EQ(fast.current(), Cadence::kMinInterval);
}

TEST_F(SamplerTest, UnavailableEngineThenNoBaseline) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  EngineReading down;
  down.unavailable_reason = "GET /health: connection refused";
  SetEngine(0, down);
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->engines_size(), 1);
  EXPECT_FALSE(f->engines(0).available());
  EXPECT_EQ(f->engines(0).unavailable_reason(), "GET /health: connection refused");
  EXPECT_EQ(f->engines(0).endpoint(), "http://fake/a");
  EXPECT_EQ(f->models_size(), 0);
  EXPECT_EQ(f->node_wes().null_reason(), v1::WES_NULL_REASON_IDLE);

  clock_.Advance(absl::Seconds(2));
  SetEngine(0, Engine("m", 500));
  f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->models_size(), 1);
  EXPECT_FALSE(f->models(0).has_decode_tokens_per_s());  // no baseline across the outage
  EXPECT_FALSE(f->models(0).counters_reset());
  EXPECT_TRUE(f->engines(0).available());
  EXPECT_EQ(f->engines(0).version(), "b1");
  std::vector<EngineReadCounters> counters = sampler->engine_read_counters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].failed, 1u);
  EXPECT_EQ(counters[0].given_up, 0u);
}

TEST_F(SamplerTest, AddedEngineIsReadFromTheNextTick) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 0));
  SetEngine(1, Engine("n", 100));
  sampler->Tick();
  sampler->AddEngine(std::make_unique<FakeEngine>("b", shared_[1]));
  clock_.Advance(absl::Seconds(2));
  SetEngine(1, Engine("n", 100));
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->engines_size(), 2);
  EXPECT_EQ(f->engines(1).engine_id(), "b");
  EXPECT_TRUE(f->engines(1).available());
  ASSERT_EQ(f->models_size(), 2);
  EXPECT_FALSE(f->models(1).has_decode_tokens_per_s());  // first reading: baseline only
  ASSERT_EQ(sampler->Hello().engines_size(), 2);
  EXPECT_EQ(sampler->engine_read_counters().size(), 2u);

  clock_.Advance(absl::Seconds(2));
  SetEngine(1, Engine("n", 300));
  f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->models_size(), 2);
  EXPECT_EQ(f->models(1).decode_tokens_per_s(), 100.0);
}

TEST_F(SamplerTest, ModelChangeIsAReset) {
  auto sampler = Make(1);
  SetEngine(0, Engine("old", 100));
  sampler->Tick();
  clock_.Advance(absl::Seconds(2));
  SetEngine(0, Engine("new", 5000));
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->models(0).model(), "new");
  EXPECT_TRUE(f->models(0).counters_reset());
  EXPECT_FALSE(f->models(0).has_decode_tokens_per_s());
}

TEST_F(SamplerTest, HungEngineDoesNotHoldTheFrame) {
  absl::Notification release;  // outlives the sampler, whose worker may still be waiting on it
  auto sampler = Make(2, absl::Milliseconds(100));
  SetEngine(0, Engine("a", 0));
  SetEngine(1, Engine("b", 0));
  sampler->Tick();
  {
    absl::MutexLock lock(&shared_[1]->mu);
    shared_[1]->block = &release;
  }
  clock_.Advance(absl::Seconds(2));
  SetEngine(0, Engine("a", 10));
  const absl::Time start = absl::Now();
  std::optional<v1::Frame> f = sampler->Tick();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->engines(0).available());
  EXPECT_FALSE(f->engines(1).available());
  EXPECT_EQ(f->engines(1).unavailable_reason(), "timed out after 100ms");
  ASSERT_EQ(f->models_size(), 1);
  EXPECT_EQ(f->models(0).decode_tokens_per_s(), 5.0);

  // Still hung at the next tick: reported at once.
  clock_.Advance(absl::Seconds(2));
  f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_THAT(f->engines(1).unavailable_reason(), HasSubstr("previous read still running"));
  EXPECT_EQ(sampler->engine_reads_given_up(), 2u);
  std::vector<EngineReadCounters> counters = sampler->engine_read_counters();
  ASSERT_EQ(counters.size(), 2u);
  EXPECT_EQ(counters[0].failed, 0u);
  EXPECT_EQ(counters[0].given_up, 0u);
  EXPECT_EQ(counters[1].failed, 2u);
  EXPECT_EQ(counters[1].given_up, 2u);
  {
    absl::MutexLock lock(&shared_[1]->mu);
    shared_[1]->block = nullptr;
  }
  release.Notify();
}

TEST_F(SamplerTest, ClockGoingBackRestartsBaselines) {
  auto sampler = Make(1);
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  clock_.Advance(absl::Seconds(-5));
  EXPECT_FALSE(sampler->Tick().has_value());
  clock_.Advance(absl::Seconds(2));
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->seq(), 1u);
}

TEST_F(SamplerTest, HelloCarriesIdentityAndInventory) {
  auto sampler = Make(1);
  hw_->devices = {Package(0)};
  SetEngine(0, Engine("m", 0));
  sampler->Tick();
  v1::Hello h = sampler->Hello();
  EXPECT_EQ(h.node_id(), "node-1");
  EXPECT_EQ(h.boot_id(), "boot-1");
  EXPECT_EQ(h.agent_version(), std::string(Version()));
  EXPECT_EQ(h.labels().at("site"), "lab");
  EXPECT_EQ(h.interval_s(), 2.0);
  ASSERT_EQ(h.devices_size(), 1);
  EXPECT_EQ(h.devices(0).id(), "package-0");
  EXPECT_FALSE(h.devices(0).has_energy_counter_uj());
  ASSERT_EQ(h.engines_size(), 1);
  EXPECT_EQ(h.engines(0).engine_id(), "a");
  EXPECT_EQ(h.engines(0).kind(), v1::ENGINE_KIND_LLAMACPP);
}

TEST(BootIdTest, LooksLikeAUuidAndDiffers) {
  std::string a = NewBootId();
  std::string b = NewBootId();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_EQ(a[14], '4');
}

// The whole chain against the replay engine and a fake RAPL tree, on a fake clock: the frame's
// decode tok/s is Δtokens_predicted_total ÷ Δt and the WES is tok/s ÷ watts.
TEST(SamplerReplayTest, FrameFromReplayEngineAndFakeRapl) {
  FakeClock clock;
  std::string tmpl = (std::filesystem::temp_directory_path() / "fleetwes-sampler-XXXXXX").string();
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  testing::FakeRapl rapl(tmpl, 30.0, &clock);
  ASSERT_TRUE(rapl.Create().ok());
  testing::ReplayServer server(&clock);
  testing::LlamaCppSimOptions sim;
  sim.tokens_per_s = 150;
  ASSERT_TRUE(server.EnableLlamaCpp(sim).ok());
  ASSERT_TRUE(server.Start().ok());

  AgentConfig config;
  config.node_id = "replay-node";
  config.hardware.root = tmpl;
  EngineConfig engine;
  engine.name = "llama";
  engine.url = server.url();
  config.engines.push_back(engine);
  std::unique_ptr<Sampler> sampler = MakeSampler(config, "boot", &clock);

  const uint64_t tokens_before = server.tokens_predicted_total();
  EXPECT_FALSE(sampler->Tick().has_value());
  clock.Advance(absl::Seconds(2));
  ASSERT_TRUE(rapl.Update().ok());
  const uint64_t tokens_after = server.tokens_predicted_total();
  std::optional<v1::Frame> f = sampler->Tick();
  ASSERT_TRUE(f.has_value());
  ASSERT_EQ(f->models_size(), 1);
  EXPECT_EQ(f->models(0).decode_tokens_per_s(), (tokens_after - tokens_before) / 2.0);
  EXPECT_EQ(f->models(0).decode_tokens_per_s(), 150.0);
  ASSERT_EQ(f->devices_size(), 1);
  EXPECT_DOUBLE_EQ(f->devices(0).power_w(), 30.0);
  EXPECT_DOUBLE_EQ(f->node_wes().raw(), 150.0 / 30.0);
  EXPECT_DOUBLE_EQ(f->models(0).wes().raw(), 150.0 / 30.0);
  EXPECT_EQ(f->models(0).model(), "tiny.gguf");
  // /slots carries prompts; the frame never does.
  const std::string text = f->DebugString() + FrameToJson(*f);
  EXPECT_THAT(text, Not(HasSubstr("long story")));
  EXPECT_THAT(text, Not(HasSubstr("prompt\"")));
  EXPECT_THAT(FrameToJson(*f), HasSubstr("\"decode_tokens_per_s\":150"));
  sampler.reset();  // closes its keep-alive connection before the server stops
  server.Stop();
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace fleetwes::agent
