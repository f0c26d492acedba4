#include "agent/collectors/nvml.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "agent/window.h"
#include "common/thermal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

class NvmlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleetwes-nvml-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    scenario_ = dir_ + "/scenario.txt";
    ASSERT_EQ(setenv("FLEETWES_FAKE_NVML_SCENARIO", scenario_.c_str(), 1), 0);
  }
  void TearDown() override {
    unsetenv("FLEETWES_FAKE_NVML_SCENARIO");
    std::filesystem::remove_all(dir_);
  }
  void Write(const std::string& text) {
    std::ofstream out(scenario_, std::ios::trunc);
    out << text;
  }
  // Two reads with `before` then `after` as the scenario; the window's devices.
  std::vector<v1::Device> Window(const std::string& before, const std::string& after,
                                 const char* library = FLEETWES_FAKE_NVML) {
    Write(before);
    NvmlCollector c(library);
    EXPECT_TRUE(c.loaded()) << c.load_error();
    HardwareReading a = c.Read();
    Write(after);
    HardwareReading b = c.Read();
    return ComputeHardwareWindow(&a, b, absl::Seconds(2)).devices;
  }
  v1::ThermalState StateFor(uint64_t mask_before, uint64_t mask_after,
                            const std::string& extra = "") {
    std::string base = "gpu0 temp=60 slowdown=90 gpumax=88 " + extra + " mask=";
    std::vector<v1::Device> d =
        Window(base + std::to_string(mask_before), base + std::to_string(mask_after));
    EXPECT_EQ(d.size(), 1u);
    return d.empty() ? v1::THERMAL_STATE_UNSPECIFIED : d[0].thermal_state();
  }

  std::string dir_;
  std::string scenario_;
};

TEST_F(NvmlTest, MissingLibraryMeansNoGpus) {
  NvmlCollector c(dir_ + "/libnvidia-ml.so");
  EXPECT_FALSE(c.loaded());
  EXPECT_THAT(c.load_error(), ::testing::HasSubstr("dlopen"));
  EXPECT_TRUE(c.Read().devices.empty());
}

TEST_F(NvmlTest, InitFailureMeansNoGpus) {
  Write("init=fail\ngpu0 power_mw=1000\n");
  NvmlCollector c(FLEETWES_FAKE_NVML);
  EXPECT_FALSE(c.loaded());
  EXPECT_THAT(c.load_error(), ::testing::HasSubstr("nvmlInit"));
  EXPECT_TRUE(c.Read().devices.empty());
}

TEST_F(NvmlTest, EveryGpuIsRead) {
  Write(
      "gpu0 name=Fake-H100 power_mw=312500 energy_mj=1000000 temp=61 slowdown=90 gpumax=88 "
      "clock=1755 clock_max=1980 mask=0 mem_total=85899345920 mem_used=21474836480\n"
      "gpu1 name=Fake-L4 power_mw=72000 temp=50 clock=1000 clock_max=2040 mask=1 "
      "mem_total=24000000000 mem_used=1000\n");
  NvmlCollector c(FLEETWES_FAKE_NVML);
  ASSERT_TRUE(c.loaded()) << c.load_error();
  HardwareReading r = c.Read();
  ASSERT_EQ(r.devices.size(), 2u);
  const DeviceReading& g0 = r.devices[0];
  EXPECT_EQ(g0.id, "gpu0");
  EXPECT_EQ(g0.name, "Fake-H100");
  EXPECT_EQ(g0.kind, v1::DEVICE_KIND_GPU_NVIDIA);
  EXPECT_EQ(g0.power_scope, v1::POWER_SCOPE_GPU_BOARD);
  EXPECT_EQ(g0.energy_uj, 1'000'000'000u);
  EXPECT_DOUBLE_EQ(*g0.power_w, 312.5);
  EXPECT_EQ(g0.temperature_c, 61);
  EXPECT_EQ(g0.slowdown_threshold_c, 90);
  EXPECT_EQ(g0.gpu_max_threshold_c, 88);
  EXPECT_EQ(g0.clock_mhz, 1755);
  EXPECT_EQ(g0.clock_max_mhz, 1980);
  EXPECT_EQ(g0.clocks_event_mask, 0u);
  EXPECT_EQ(g0.memory_total_bytes, 85899345920u);
  EXPECT_EQ(g0.memory_used_bytes, 21474836480u);
  const DeviceReading& g1 = r.devices[1];
  EXPECT_EQ(g1.id, "gpu1");
  EXPECT_FALSE(g1.energy_uj.has_value());  // not supported: absent, not 0
  EXPECT_FALSE(g1.slowdown_threshold_c.has_value());
  EXPECT_EQ(g1.clocks_event_mask, 1u);
}

TEST_F(NvmlTest, EnergyCounterGivesTheWindowsPower) {
  std::vector<v1::Device> d = Window(
      "gpu0 energy_mj=1000000 power_mw=999000\ngpu1 power_mw=200000 energy_mj=5\n"
      "gpu2 power_mw=1 unsupported=power_mw,energy_mj\n",
      "gpu0 energy_mj=1300000 power_mw=999000\ngpu1 power_mw=200000 energy_mj=5 "
      "unsupported=energy_mj\ngpu2 power_mw=1 unsupported=power_mw,energy_mj\n");
  ASSERT_EQ(d.size(), 3u);
  EXPECT_DOUBLE_EQ(d[0].energy_j(), 300.0);  // counter delta, not the instantaneous 999 W
  EXPECT_DOUBLE_EQ(d[0].power_w(), 150.0);
  EXPECT_EQ(d[0].energy_counter_uj(), 1'300'000'000u);
  EXPECT_DOUBLE_EQ(d[1].power_w(), 200.0);  // no counter this time: instantaneous power
  EXPECT_DOUBLE_EQ(d[1].energy_j(), 400.0);
  EXPECT_FALSE(d[2].has_power_w());
  EXPECT_FALSE(d[2].has_energy_j());
}

TEST_F(NvmlTest, EachClocksEventBitMapsToItsState) {
  using thermal::kNvGpuIdle, thermal::kNvSwPowerCap, thermal::kNvHwSlowdown,
      thermal::kNvSwThermalSlowdown, thermal::kNvHwThermalSlowdown,
      thermal::kNvHwPowerBrakeSlowdown, thermal::kNvApplicationsClocks, thermal::kNvSyncBoost,
      thermal::kNvDisplayClock;
  EXPECT_EQ(StateFor(0, 0), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvGpuIdle), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvApplicationsClocks), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvSyncBoost), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvDisplayClock), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvSwPowerCap), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(0, kNvSwThermalSlowdown), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(StateFor(0, kNvHwThermalSlowdown), v1::THERMAL_STATE_CRITICAL);
  EXPECT_EQ(StateFor(0, kNvHwPowerBrakeSlowdown), v1::THERMAL_STATE_CRITICAL);
  // HW slowdown counts only when seen in two consecutive reads.
  EXPECT_EQ(StateFor(0, kNvHwSlowdown), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateFor(kNvHwSlowdown, kNvHwSlowdown), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(StateFor(kNvHwSlowdown, 0), v1::THERMAL_STATE_NORMAL);
}

TEST_F(NvmlTest, TemperatureThresholds) {
  auto state = [&](int temp) {
    std::string s = "gpu0 slowdown=90 gpumax=88 mask=0 temp=" + std::to_string(temp);
    return Window(s, s)[0].thermal_state();
  };
  EXPECT_EQ(state(70), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(state(84), v1::THERMAL_STATE_FAIR);
  EXPECT_EQ(state(88), v1::THERMAL_STATE_SERIOUS);
  EXPECT_EQ(state(90), v1::THERMAL_STATE_CRITICAL);
}

TEST_F(NvmlTest, MaskPowerCapAndClocksReachTheFrame) {
  std::string s = "gpu0 mask=4 clock=1200 clock_max=1980 mem_total=1000 mem_used=250 temp=40\n";
  std::vector<v1::Device> d = Window(s, s);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].throttle_mask(), thermal::kNvSwPowerCap);
  EXPECT_TRUE(d[0].power_capped());
  EXPECT_DOUBLE_EQ(d[0].clock_mhz(), 1200);
  EXPECT_DOUBLE_EQ(d[0].clock_max_mhz(), 1980);
  EXPECT_EQ(d[0].memory_used_bytes(), 250u);
  EXPECT_EQ(d[0].memory_total_bytes(), 1000u);
}

TEST_F(NvmlTest, UnsupportedCallsLeaveValuesAbsent) {
  std::string s =
      "gpu0 temp=40 clock=1 clock_max=2 mem_total=10 mem_used=1 mask=0 "
      "unsupported=clock,clock_max,mem_total,temp\n";
  std::vector<v1::Device> d = Window(s, s);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_FALSE(d[0].has_clock_mhz());
  EXPECT_FALSE(d[0].has_clock_max_mhz());
  EXPECT_FALSE(d[0].has_memory_total_bytes());
  EXPECT_FALSE(d[0].has_temperature_c());
  EXPECT_EQ(d[0].thermal_state(), v1::THERMAL_STATE_NORMAL);
}

TEST_F(NvmlTest, OldUnversionedSymbolsAreTheFallback) {
  std::string s =
      "gpu0 mask=64 mem_total=1000 mem_used=600 energy_mj=10\n"
      "gpu1 mask=0 mem_total=2000 mem_used=1 energy_mj=10\n";
  std::vector<v1::Device> d = Window(s, s, FLEETWES_FAKE_NVML_LEGACY);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].throttle_mask(), thermal::kNvHwThermalSlowdown);  // ...ThrottleReasons
  EXPECT_EQ(d[0].thermal_state(), v1::THERMAL_STATE_CRITICAL);
  EXPECT_EQ(d[0].memory_used_bytes(), 600u);  // nvmlDeviceGetMemoryInfo (v1)
  EXPECT_EQ(d[1].memory_total_bytes(), 2000u);
  EXPECT_DOUBLE_EQ(d[1].energy_j(), 0.0);
}

TEST_F(NvmlTest, ComputeProcessesWithTheirMemory) {
  std::string procs;
  for (int i = 0; i < 70; ++i) procs += (i ? "," : "") + std::to_string(5000 + i) + ":1024";
  Write("gpu0 procs=4242:8589934592,4243:na\ngpu1 procs=\ngpu2 mem_total=1\ngpu3 procs=" + procs +
        "\n");
  NvmlCollector c(FLEETWES_FAKE_NVML);
  ASSERT_TRUE(c.loaded());
  HardwareReading r = c.Read();
  ASSERT_EQ(r.devices.size(), 4u);
  ASSERT_TRUE(r.devices[0].processes.has_value());
  ASSERT_EQ(r.devices[0].processes->size(), 2u);
  EXPECT_EQ((*r.devices[0].processes)[0].pid, 4242);
  EXPECT_EQ((*r.devices[0].processes)[0].used_bytes, 8589934592u);
  EXPECT_EQ((*r.devices[0].processes)[1].pid, 4243);
  EXPECT_FALSE((*r.devices[0].processes)[1].used_bytes.has_value());  // not available
  ASSERT_TRUE(r.devices[1].processes.has_value());
  EXPECT_TRUE(r.devices[1].processes->empty());
  EXPECT_FALSE(r.devices[2].processes.has_value());  // not supported: unknown, not none
  ASSERT_TRUE(r.devices[3].processes.has_value());   // more than the first buffer holds
  EXPECT_EQ(r.devices[3].processes->size(), 70u);
  EXPECT_EQ(r.devices[3].processes->back().pid, 5069);
}

TEST_F(NvmlTest, ComputeProcessesThroughTheUnversionedCall) {
  Write("gpu0 procs=77:2048\n");
  NvmlCollector c(FLEETWES_FAKE_NVML_LEGACY);
  ASSERT_TRUE(c.loaded());
  HardwareReading r = c.Read();
  ASSERT_EQ(r.devices.size(), 1u);
  ASSERT_TRUE(r.devices[0].processes.has_value());
  ASSERT_EQ(r.devices[0].processes->size(), 1u);
  EXPECT_EQ((*r.devices[0].processes)[0].pid, 77);
  EXPECT_EQ((*r.devices[0].processes)[0].used_bytes, 2048u);
}

TEST(CombinedHardwareTest, DevicesOfAllSourcesSystemOfTheFirst) {
  struct Fixed : HardwareCollector {
    HardwareReading r;
    HardwareReading Read() override { return r; }
  };
  auto a = std::make_unique<Fixed>();
  a->r.devices.push_back(DeviceReading{.id = "package-0"});
  a->r.system.memory_total_bytes = 42;
  auto b = std::make_unique<Fixed>();
  b->r.devices.push_back(DeviceReading{.id = "gpu0"});
  b->r.system.memory_total_bytes = 7;
  std::vector<std::unique_ptr<HardwareCollector>> sources;
  sources.push_back(std::move(a));
  sources.push_back(std::move(b));
  CombinedHardwareCollector c(std::move(sources));
  HardwareReading r = c.Read();
  ASSERT_EQ(r.devices.size(), 2u);
  EXPECT_EQ(r.devices[0].id, "package-0");
  EXPECT_EQ(r.devices[1].id, "gpu0");
  EXPECT_EQ(r.system.memory_total_bytes, 42u);
}

}  // namespace
}  // namespace fleetwes::agent
