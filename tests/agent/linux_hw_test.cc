#include "agent/collectors/linux_hw.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "agent/window.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;

// A throwaway directory standing for "/".
class FakeRoot {
 public:
  FakeRoot() {
    std::string tmpl = (fs::temp_directory_path() / "fleetwes-hw-XXXXXX").string();
    char* dir = mkdtemp(tmpl.data());
    EXPECT_NE(dir, nullptr);
    root_ = tmpl;
  }
  ~FakeRoot() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  const std::string& path() const { return root_; }
  void Write(const std::string& relative, const std::string& text) const {
    fs::path p = fs::path(root_) / relative;
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::trunc);
    out << text;
  }
  void Remove(const std::string& relative) const { fs::remove(fs::path(root_) / relative); }

 private:
  std::string root_;
};

constexpr char kPkg[] = "sys/class/powercap/intel-rapl:0/";
constexpr uint64_t kRange = 262'143'328'850;

void WriteRapl(const FakeRoot& root, uint64_t package_uj, uint64_t dram_uj) {
  root.Write(std::string(kPkg) + "name", "package-0\n");
  root.Write(std::string(kPkg) + "energy_uj", std::to_string(package_uj) + "\n");
  root.Write(std::string(kPkg) + "max_energy_range_uj", std::to_string(kRange) + "\n");
  root.Write("sys/class/powercap/intel-rapl:0:0/name", "core\n");
  root.Write("sys/class/powercap/intel-rapl:0:0/energy_uj", "5\n");
  root.Write("sys/class/powercap/intel-rapl:0:1/name", "dram\n");
  root.Write("sys/class/powercap/intel-rapl:0:1/energy_uj", std::to_string(dram_uj) + "\n");
  root.Write("sys/class/powercap/intel-rapl:0:1/max_energy_range_uj", "65532610987\n");
  root.Write("sys/class/powercap/intel-rapl:1/name", "psys\n");
  root.Write("sys/class/powercap/intel-rapl:1/energy_uj", "77\n");
}

const v1::Device* FindDevice(const HardwareWindow& w, const std::string& id) {
  for (const v1::Device& d : w.devices) {
    if (d.id() == id) return &d;
  }
  return nullptr;
}

TEST(LinuxHwTest, RaplPackagesAndDramNotCoreOrPsys) {
  FakeRoot root;
  WriteRapl(root, 1'000'000, 400'000);
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  ASSERT_EQ(a.devices.size(), 2u);
  EXPECT_EQ(a.devices[0].id, "package-0");
  EXPECT_EQ(a.devices[0].kind, v1::DEVICE_KIND_CPU);
  EXPECT_EQ(a.devices[0].power_scope, v1::POWER_SCOPE_CPU_PACKAGE);
  EXPECT_EQ(a.devices[0].energy_uj, 1'000'000u);
  EXPECT_EQ(a.devices[0].energy_max_range_uj, kRange);
  EXPECT_EQ(a.devices[1].id, "dram-0");
  EXPECT_EQ(a.devices[1].kind, v1::DEVICE_KIND_DRAM);
  EXPECT_EQ(a.devices[1].power_scope, v1::POWER_SCOPE_DRAM);

  WriteRapl(root, 91'000'000, 10'400'000);
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(2));
  const v1::Device* pkg = FindDevice(w, "package-0");
  ASSERT_NE(pkg, nullptr);
  EXPECT_DOUBLE_EQ(pkg->energy_j(), 90.0);
  EXPECT_DOUBLE_EQ(pkg->power_w(), 45.0);
  EXPECT_EQ(pkg->energy_counter_uj(), 91'000'000u);
  const v1::Device* dram = FindDevice(w, "dram-0");
  ASSERT_NE(dram, nullptr);
  EXPECT_DOUBLE_EQ(dram->power_w(), 5.0);
  EXPECT_EQ(hw.read_errors(), 0u);
}

TEST(LinuxHwTest, RaplWraparoundUsesMaxEnergyRange) {
  FakeRoot root;
  WriteRapl(root, kRange - 1'000'000, 0);
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  WriteRapl(root, 500'000, 0);
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(1));
  const v1::Device* pkg = FindDevice(w, "package-0");
  ASSERT_NE(pkg, nullptr);
  ASSERT_TRUE(pkg->has_energy_j());
  EXPECT_DOUBLE_EQ(pkg->energy_j(), 1.5);
  EXPECT_DOUBLE_EQ(pkg->power_w(), 1.5);
}

TEST(LinuxHwTest, CounterGoingBackWithoutRangeGivesNoEnergy) {
  FakeRoot root;
  WriteRapl(root, 5'000'000, 0);
  root.Remove(std::string(kPkg) + "max_energy_range_uj");
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  root.Write(std::string(kPkg) + "energy_uj", "1000\n");
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(1));
  const v1::Device* pkg = FindDevice(w, "package-0");
  ASSERT_NE(pkg, nullptr);
  EXPECT_FALSE(pkg->has_energy_j());
  EXPECT_FALSE(pkg->has_power_w());
}

TEST(LinuxHwTest, ImplausibleJumpIsNotAReading) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  WriteRapl(root, 100'000'000'000, 0);  // 100 kJ in one second
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(1));
  EXPECT_FALSE(FindDevice(w, "package-0")->has_power_w());
}

TEST(LinuxHwTest, GarbageEnergyIsAnErrorNotACrash) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  root.Write(std::string(kPkg) + "energy_uj", "lots\n");
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  ASSERT_FALSE(r.devices.empty());
  EXPECT_FALSE(r.devices[0].energy_uj.has_value());
  EXPECT_EQ(r.devices[0].unavailable_reason, "energy_uj: not a number");
  EXPECT_EQ(hw.read_errors(), 1u);
}

TEST(LinuxHwTest, UnreadableEnergyNamesTheReason) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads files regardless of their mode";
  FakeRoot root;
  WriteRapl(root, 0, 0);
  fs::permissions(fs::path(root.path()) / kPkg / "energy_uj", fs::perms::none);
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  EXPECT_EQ(r.devices[0].unavailable_reason, "energy_uj: Permission denied");
}

// Thermal zone 0 with a passive trip at 95 °C and a critical one at 105 °C.
void WriteZone(const FakeRoot& root, int millideg) {
  root.Write("sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
  root.Write("sys/class/thermal/thermal_zone0/temp", std::to_string(millideg) + "\n");
  root.Write("sys/class/thermal/thermal_zone0/trip_point_0_type", "passive\n");
  root.Write("sys/class/thermal/thermal_zone0/trip_point_0_temp", "95000\n");
  root.Write("sys/class/thermal/thermal_zone0/trip_point_1_type", "critical\n");
  root.Write("sys/class/thermal/thermal_zone0/trip_point_1_temp", "105000\n");
  // A disabled trip some drivers expose: ignored.
  root.Write("sys/class/thermal/thermal_zone0/trip_point_2_type", "hot\n");
  root.Write("sys/class/thermal/thermal_zone0/trip_point_2_temp", "-273000\n");
}

v1::ThermalState StateAt(int millideg) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  WriteZone(root, millideg);
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(nullptr, r, absl::Seconds(1));
  const v1::Device* pkg = FindDevice(w, "package-0");
  EXPECT_NE(pkg, nullptr);
  EXPECT_DOUBLE_EQ(pkg->temperature_c(), millideg / 1000.0);
  return pkg->thermal_state();
}

TEST(LinuxHwTest, ThermalTripsGiveStates) {
  EXPECT_EQ(StateAt(50'000), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(StateAt(91'000), v1::THERMAL_STATE_FAIR);       // within 5 °C of passive
  EXPECT_EQ(StateAt(96'000), v1::THERMAL_STATE_SERIOUS);    // passive crossed
  EXPECT_EQ(StateAt(101'000), v1::THERMAL_STATE_CRITICAL);  // critical − 5 °C
}

TEST(LinuxHwTest, ThrottleCountersIncreasingIsSerious) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  WriteZone(root, 40'000);
  root.Write("sys/devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "5\n");
  root.Write("sys/devices/system/cpu/cpu0/thermal_throttle/package_throttle_count", "1\n");
  root.Write("sys/devices/system/cpu/cpu1/thermal_throttle/core_throttle_count", "2\n");
  root.Write("sys/devices/system/cpu/cpufreq/boost", "1\n");  // not a cpuN directory
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  EXPECT_EQ(a.devices[0].throttle_events_total, 8u);
  HardwareReading b = hw.Read();
  EXPECT_EQ(
      FindDevice(ComputeHardwareWindow(&a, b, absl::Seconds(1)), "package-0")->thermal_state(),
      v1::THERMAL_STATE_NORMAL);
  root.Write("sys/devices/system/cpu/cpu1/thermal_throttle/core_throttle_count", "3\n");
  HardwareReading c = hw.Read();
  EXPECT_EQ(
      FindDevice(ComputeHardwareWindow(&b, c, absl::Seconds(1)), "package-0")->thermal_state(),
      v1::THERMAL_STATE_SERIOUS);
}

TEST(LinuxHwTest, ThermalWithoutRaplGivesACpuDeviceWithoutPower) {
  FakeRoot root;
  WriteZone(root, 60'000);
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  ASSERT_EQ(r.devices.size(), 1u);
  EXPECT_EQ(r.devices[0].id, "cpu");
  EXPECT_FALSE(r.devices[0].energy_uj.has_value());
  HardwareWindow w = ComputeHardwareWindow(&r, hw.Read(), absl::Seconds(1));
  EXPECT_FALSE(w.devices[0].has_power_w());
  EXPECT_EQ(w.devices[0].thermal_state(), v1::THERMAL_STATE_NORMAL);
}

void WriteProc(const FakeRoot& root, int pswpin, int pswpout, const std::string& avg10) {
  root.Write("proc/vmstat", "nr_free_pages 123\npswpin " + std::to_string(pswpin) + "\npswpout " +
                                std::to_string(pswpout) + "\npgfault 9\n");
  root.Write("proc/pressure/memory", "some avg10=" + avg10 +
                                         " avg60=1.00 avg300=0.50 total=1234\n"
                                         "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
  root.Write("proc/meminfo",
             "MemTotal:       16318128 kB\nMemFree:         1000000 kB\n"
             "MemAvailable:    8000000 kB\n");
}

TEST(LinuxHwTest, SwapRatesAndMemoryPressure) {
  FakeRoot root;
  WriteProc(root, 100, 50, "0.00");
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  EXPECT_EQ(a.system.memory_total_bytes, 16318128ull * 1024);
  EXPECT_EQ(a.system.memory_available_bytes, 8000000ull * 1024);
  WriteProc(root, 300, 50, "0.00");
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(2));
  EXPECT_DOUBLE_EQ(w.system.swap_in_pages_per_s(), 100.0);
  EXPECT_DOUBLE_EQ(w.system.swap_out_pages_per_s(), 0.0);
  EXPECT_TRUE(w.system.memory_pressure());
  EXPECT_EQ(w.system.memory_total_bytes(), 16318128ull * 1024);

  // No swapping, PSI below the threshold: no pressure.
  HardwareReading c = hw.Read();
  w = ComputeHardwareWindow(&b, c, absl::Seconds(2));
  EXPECT_DOUBLE_EQ(w.system.swap_in_pages_per_s(), 0.0);
  EXPECT_FALSE(w.system.memory_pressure());
  EXPECT_DOUBLE_EQ(w.system.memory_pressure_some_avg10(), 0.0);

  // PSI alone above the threshold.
  WriteProc(root, 300, 50, "12.50");
  HardwareReading d = hw.Read();
  w = ComputeHardwareWindow(&c, d, absl::Seconds(2));
  EXPECT_TRUE(w.system.memory_pressure());
  EXPECT_DOUBLE_EQ(w.system.memory_pressure_some_avg10(), 12.5);
}

TEST(LinuxHwTest, EmptyRootIsNormal) {
  FakeRoot root;
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  EXPECT_TRUE(a.devices.empty());
  EXPECT_FALSE(a.system.swap_in_pages_total.has_value());
  EXPECT_FALSE(a.system.memory_total_bytes.has_value());
  HardwareWindow w = ComputeHardwareWindow(&a, hw.Read(), absl::Seconds(2));
  EXPECT_TRUE(w.devices.empty());
  EXPECT_FALSE(w.system.has_swap_in_pages_per_s());
  EXPECT_FALSE(w.system.has_memory_pressure_some_avg10());
  EXPECT_FALSE(w.system.memory_pressure());
  EXPECT_EQ(hw.read_errors(), 0u);
}

TEST(LinuxHwTest, GarbageProcFilesAreIgnored) {
  FakeRoot root;
  root.Write("proc/vmstat", "pswpin many\npswpout\n\n");
  root.Write("proc/pressure/memory", "some avg10=abc\n");
  root.Write("proc/meminfo", "MemTotal: lots kB\n");
  root.Write("sys/class/thermal/thermal_zone0/temp", "hot\n");
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  EXPECT_FALSE(r.system.swap_in_pages_total.has_value());
  EXPECT_FALSE(r.system.swap_out_pages_total.has_value());
  EXPECT_FALSE(r.system.memory_pressure_some_avg10.has_value());
  EXPECT_FALSE(r.system.memory_total_bytes.has_value());
  EXPECT_TRUE(r.devices.empty());
  EXPECT_GE(hw.read_errors(), 3u);
}

}  // namespace
}  // namespace fleetwes::agent
