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
  // A symbolic link at `relative` pointing to `target` (relative to the root).
  void Link(const std::string& relative, const std::string& target) const {
    fs::path p = fs::path(root_) / relative;
    fs::create_directories(p.parent_path());
    fs::create_directories(fs::path(root_) / target);
    fs::create_directory_symlink(fs::path(root_) / target, p);
  }

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

// Trip points (like names, energy ranges and maximum clocks) are not re-read every tick: a
// change is seen at the next refresh, kStaticRefreshReads reads later.
TEST(LinuxHwTest, StaticFilesAreReadAgainOnlyAtTheRefresh) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  WriteZone(root, 96'000);  // passive trip (95 °C) crossed
  LinuxHwCollector hw(root.path());
  auto state = [&hw] {
    HardwareWindow w = ComputeHardwareWindow(nullptr, hw.Read(), absl::Seconds(1));
    const v1::Device* pkg = FindDevice(w, "package-0");
    return pkg != nullptr ? pkg->thermal_state() : v1::THERMAL_STATE_UNSPECIFIED;
  };
  EXPECT_EQ(state(), v1::THERMAL_STATE_SERIOUS);
  root.Write("sys/class/thermal/thermal_zone0/trip_point_0_temp", "99000\n");
  EXPECT_EQ(state(), v1::THERMAL_STATE_SERIOUS);  // the cached trip point
  for (uint64_t i = 2; i < LinuxHwCollector::kStaticRefreshReads; ++i) hw.Read();
  EXPECT_EQ(state(), v1::THERMAL_STATE_FAIR);  // refreshed: within 5 °C of the new trip
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

// An amdgpu hwmon as the driver lays it out: hwmonN/{name,power1_*,temp*} and the PCI device
// behind hwmonN/device with the VRAM counters and the shader clock levels.
void WriteAmdGpu(const FakeRoot& root, int hwmon, const std::string& pci,
                 const std::string& power_file, uint64_t power_uw, int edge_milli,
                 int junction_milli) {
  const std::string h = "sys/class/hwmon/hwmon" + std::to_string(hwmon) + "/";
  const std::string dev = "sys/devices/pci0000:00/" + pci + "/";
  if (!fs::exists(fs::path(root.path()) / h / "device")) root.Link(h + "device", dev);
  root.Write(h + "name", "amdgpu\n");
  root.Write(h + power_file, std::to_string(power_uw) + "\n");
  root.Write(h + "power1_cap", "300000000\n");
  root.Write(h + "temp1_label", "edge\n");
  root.Write(h + "temp1_input", std::to_string(edge_milli) + "\n");
  root.Write(h + "temp1_crit", "100000\n");
  root.Write(h + "temp1_crit_hyst", "-273150\n");
  root.Write(h + "temp1_emergency", "105000\n");
  root.Write(h + "temp2_label", "junction\n");
  root.Write(h + "temp2_input", std::to_string(junction_milli) + "\n");
  root.Write(h + "temp2_crit", "110000\n");
  root.Write(h + "temp2_emergency", "115000\n");
  root.Write(h + "temp3_label", "mem\n");
  root.Write(h + "temp3_input", "58000\n");
  root.Write(h + "temp3_crit", "100000\n");
  root.Write(h + "temp3_emergency", "105000\n");
  root.Write(dev + "mem_info_vram_total", "25753026560\n");
  root.Write(dev + "mem_info_vram_used", "13958643712\n");
  root.Write(dev + "pp_dpm_sclk", "0: 500Mhz \n1: 1800Mhz *\n2: 2529Mhz \n");
}

TEST(LinuxHwTest, EveryAmdGpuWithPowerTemperaturesVramAndClocks) {
  FakeRoot root;
  // hwmon order differs from PCI order; ids follow the PCI address.
  WriteAmdGpu(root, 4, "0000:83:00.0", "power1_input", 212'000'000, 61'000, 72'000);
  WriteAmdGpu(root, 2, "0000:03:00.0", "power1_average", 45'000'000, 52'000, 60'000);
  root.Write("sys/class/hwmon/hwmon0/name", "k10temp\n");
  root.Write("sys/class/hwmon/hwmon0/temp1_input", "99000\n");
  root.Write("sys/class/hwmon/hwmon1/name", "nvme\n");
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  ASSERT_EQ(a.devices.size(), 2u);
  const DeviceReading& g0 = a.devices[0];
  EXPECT_EQ(g0.id, "amdgpu0");
  EXPECT_EQ(g0.name, "AMD GPU 0000:03:00.0");
  EXPECT_EQ(g0.kind, v1::DEVICE_KIND_GPU_AMD);
  EXPECT_EQ(g0.power_scope, v1::POWER_SCOPE_GPU_BOARD);
  EXPECT_EQ(g0.power_w, 45.0);
  EXPECT_EQ(g0.temperature_c, 60.0);  // the hottest sensor
  ASSERT_EQ(g0.amd_sensors.size(), 3u);
  EXPECT_EQ(g0.amd_sensors[1].crit_c, 110.0);
  EXPECT_EQ(g0.amd_sensors[1].emergency_c, 115.0);
  EXPECT_EQ(g0.memory_used_bytes, 13958643712u);
  EXPECT_EQ(g0.memory_total_bytes, 25753026560u);
  EXPECT_EQ(g0.clock_mhz, 1800.0);
  EXPECT_EQ(g0.clock_max_mhz, 2529.0);
  EXPECT_EQ(a.devices[1].id, "amdgpu1");
  EXPECT_EQ(a.devices[1].power_w, 212.0);
  EXPECT_EQ(hw.read_errors(), 0u);

  // Without an energy counter the power at window end stands for the window.
  HardwareWindow w = ComputeHardwareWindow(&a, hw.Read(), absl::Seconds(2));
  const v1::Device* d0 = FindDevice(w, "amdgpu0");
  ASSERT_NE(d0, nullptr);
  EXPECT_DOUBLE_EQ(d0->power_w(), 45.0);
  EXPECT_DOUBLE_EQ(d0->energy_j(), 90.0);
  EXPECT_DOUBLE_EQ(d0->clock_mhz(), 1800.0);
  EXPECT_EQ(d0->thermal_state(), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(d0->memory_used_bytes(), 13958643712u);
}

TEST(LinuxHwTest, AmdThermalStateFromEachSensorsOwnLimits) {
  auto state = [](int edge, int junction) {
    FakeRoot root;
    WriteAmdGpu(root, 0, "0000:03:00.0", "power1_average", 100'000'000, edge, junction);
    LinuxHwCollector hw(root.path());
    HardwareWindow w = ComputeHardwareWindow(nullptr, hw.Read(), absl::Seconds(1));
    return w.devices.at(0).thermal_state();
  };
  EXPECT_EQ(state(60'000, 90'000), v1::THERMAL_STATE_NORMAL);
  EXPECT_EQ(state(60'000, 106'000), v1::THERMAL_STATE_FAIR);      // junction crit − 4 °C
  EXPECT_EQ(state(100'000, 90'000), v1::THERMAL_STATE_SERIOUS);   // edge at crit
  EXPECT_EQ(state(60'000, 115'500), v1::THERMAL_STATE_CRITICAL);  // junction emergency
}

TEST(LinuxHwTest, AmdEnergyCounterWinsOverPower) {
  FakeRoot root;
  WriteAmdGpu(root, 0, "0000:03:00.0", "power1_average", 100'000'000, 50'000, 55'000);
  root.Write("sys/class/hwmon/hwmon0/energy1_input", "1000000000\n");
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  root.Write("sys/class/hwmon/hwmon0/energy1_input", "1300000000\n");
  HardwareWindow w = ComputeHardwareWindow(&a, hw.Read(), absl::Seconds(2));
  EXPECT_DOUBLE_EQ(w.devices.at(0).energy_j(), 300.0);
  EXPECT_DOUBLE_EQ(w.devices.at(0).power_w(), 150.0);
}

TEST(LinuxHwTest, AmdMissingAndGarbageFilesLeaveValuesAbsent) {
  FakeRoot root;
  // GPU 0: no power files at all, no device link, only an edge sensor.
  root.Write("sys/class/hwmon/hwmon0/name", "amdgpu\n");
  root.Write("sys/class/hwmon/hwmon0/temp1_input", "45000\n");
  // GPU 1: garbage everywhere.
  WriteAmdGpu(root, 1, "0000:0a:00.0", "power1_average", 1, 1, 1);
  root.Write("sys/class/hwmon/hwmon1/power1_average", "-5\n");
  root.Write("sys/class/hwmon/hwmon1/temp1_input", "warm\n");
  root.Write("sys/class/hwmon/hwmon1/temp2_crit", "NaN\n");
  root.Write("sys/class/hwmon/hwmon1/temp2_input", "70000\n");
  root.Write("sys/devices/pci0000:00/0000:0a:00.0/mem_info_vram_used", "99999999999999999\n");
  root.Write("sys/devices/pci0000:00/0000:0a:00.0/pp_dpm_sclk", "0: fast *\n1: 2000Mhz\n");
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  ASSERT_EQ(r.devices.size(), 2u);
  const DeviceReading* bare = nullptr;
  const DeviceReading* bad = nullptr;
  for (const DeviceReading& d : r.devices) (d.name == "AMD GPU hwmon0" ? bare : bad) = &d;
  ASSERT_NE(bare, nullptr);
  ASSERT_NE(bad, nullptr);
  EXPECT_FALSE(bare->power_w.has_value());
  EXPECT_EQ(bare->unavailable_reason, "no power1_average, power1_input or energy1_input");
  EXPECT_EQ(bare->temperature_c, 45.0);
  EXPECT_FALSE(bare->memory_total_bytes.has_value());

  EXPECT_FALSE(bad->power_w.has_value());
  ASSERT_EQ(bad->amd_sensors.size(), 2u);  // temp1 dropped
  EXPECT_FALSE(bad->amd_sensors[0].crit_c.has_value());
  EXPECT_EQ(bad->temperature_c, 70.0);
  EXPECT_FALSE(bad->memory_used_bytes.has_value());
  EXPECT_EQ(bad->memory_total_bytes, 25753026560u);
  EXPECT_FALSE(bad->clock_mhz.has_value());
  EXPECT_EQ(bad->clock_max_mhz, 2000.0);
  EXPECT_GE(hw.read_errors(), 5u);
  HardwareWindow w = ComputeHardwareWindow(&r, hw.Read(), absl::Seconds(1));
  for (const v1::Device& d : w.devices) EXPECT_FALSE(d.has_power_w()) << d.id();
}

void WriteCpu(const FakeRoot& root, int cpu, int package, int cur_khz, int max_khz) {
  const std::string c = "sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/";
  root.Write(c + "topology/physical_package_id", std::to_string(package) + "\n");
  root.Write(c + "cpufreq/scaling_cur_freq", std::to_string(cur_khz) + "\n");
  root.Write(c + "cpufreq/cpuinfo_max_freq", std::to_string(max_khz) + "\n");
}

TEST(LinuxHwTest, CpufreqPerPackageMeanClockAndMax) {
  FakeRoot root;
  WriteRapl(root, 0, 0);
  root.Write("sys/class/powercap/intel-rapl:1/name", "package-1\n");
  root.Write("sys/class/powercap/intel-rapl:1/energy_uj", "0\n");
  WriteCpu(root, 0, 0, 3'000'000, 4'500'000);
  WriteCpu(root, 1, 0, 1'000'000, 4'700'000);
  WriteCpu(root, 2, 1, 800'000, 3'900'000);
  WriteCpu(root, 10, 1, 1'200'000, 3'900'000);
  root.Write("sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "1\n");  // not a CPU
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(nullptr, r, absl::Seconds(1));
  const v1::Device* p0 = FindDevice(w, "package-0");
  const v1::Device* p1 = FindDevice(w, "package-1");
  ASSERT_NE(p0, nullptr);
  ASSERT_NE(p1, nullptr);
  EXPECT_DOUBLE_EQ(p0->clock_mhz(), 2000.0);
  EXPECT_DOUBLE_EQ(p0->clock_max_mhz(), 4700.0);
  EXPECT_DOUBLE_EQ(p1->clock_mhz(), 1000.0);
  EXPECT_DOUBLE_EQ(p1->clock_max_mhz(), 3900.0);
  EXPECT_EQ(hw.read_errors(), 0u);
}

TEST(LinuxHwTest, CpufreqWithoutRaplOrTopologyAndGarbage) {
  FakeRoot root;
  WriteCpu(root, 0, 0, 2'000'000, 3'000'000);
  WriteCpu(root, 1, 0, 4'000'000, 3'500'000);
  root.Remove("sys/devices/system/cpu/cpu1/topology/physical_package_id");
  root.Write("sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq", "<unknown>\n");
  LinuxHwCollector hw(root.path());
  HardwareReading r = hw.Read();
  ASSERT_EQ(r.devices.size(), 1u);
  EXPECT_EQ(r.devices[0].id, "cpu");
  EXPECT_EQ(r.devices[0].clock_mhz, 3000.0);
  EXPECT_EQ(r.devices[0].clock_max_mhz, 3500.0);
  EXPECT_EQ(hw.read_errors(), 1u);
}

TEST(LinuxHwTest, ProcStatBusyFractionOverTheWindow) {
  FakeRoot root;
  // user nice system idle iowait irq softirq steal guest guest_nice
  root.Write("proc/stat",
             "cpu  1000 0 500 8000 500 0 0 0 200 0\ncpu0 500 0 250 4000 250 0 0 0 100 0\n"
             "intr 1 2 3\nctxt 99\n");
  LinuxHwCollector hw(root.path());
  HardwareReading a = hw.Read();
  EXPECT_EQ(a.system.cpu_busy_ticks_total, 1500u);
  EXPECT_EQ(a.system.cpu_all_ticks_total, 10000u);
  // +300 busy, +100 idle, +0 iowait.
  root.Write("proc/stat", "cpu  1200 0 600 8100 500 0 0 0 900 0\n");
  HardwareReading b = hw.Read();
  HardwareWindow w = ComputeHardwareWindow(&a, b, absl::Seconds(2));
  EXPECT_DOUBLE_EQ(w.system.cpu_busy(), 0.75);
  // No time passed in the counters, or counters went back: no value.
  EXPECT_FALSE(ComputeHardwareWindow(&b, b, absl::Seconds(2)).system.has_cpu_busy());
  EXPECT_FALSE(ComputeHardwareWindow(&b, a, absl::Seconds(2)).system.has_cpu_busy());
  EXPECT_FALSE(ComputeHardwareWindow(nullptr, b, absl::Seconds(2)).system.has_cpu_busy());
  root.Write("proc/stat", "cpu  12 x 600\n");
  EXPECT_FALSE(hw.Read().system.cpu_busy_ticks_total.has_value());
  EXPECT_EQ(hw.read_errors(), 1u);
}

}  // namespace
}  // namespace fleetwes::agent
