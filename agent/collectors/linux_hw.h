// Hardware collector for Linux, reading sysfs and procfs under a configurable root (tests point
// it at a fake tree): RAPL energy counters (powercap intel-rapl zones: packages and DRAM),
// thermal zones with their trip points, CPU thermal throttle counters, cpufreq clocks, AMD GPUs
// (amdgpu hwmon: power, energy, temperatures with their limits, VRAM and shader clock through
// the hwmon's device), swap counters, memory pressure (PSI), meminfo and /proc/stat CPU time.
// Missing files are normal (containers, VMs, non-Intel hosts) and
// simply leave values absent. Not thread-safe: one Read() at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_LINUX_HW_H_
#define FLEETWES_AGENT_COLLECTORS_LINUX_HW_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "agent/collectors/collector.h"

namespace fleetwes::agent {

class LinuxHwCollector final : public HardwareCollector {
 public:
  // `root` is the directory that stands for "/" ("/" on a real host).
  explicit LinuxHwCollector(std::string root);

  HardwareReading Read() override;

  // Files that do not change while the machine runs (names, energy ranges, trip points, maximum
  // clocks, topology) are read again only every this many reads (5 min at the default 2 s).
  static constexpr uint64_t kStaticRefreshReads = 150;

  // Files that existed but could not be read or parsed (permission, garbage), cumulative.
  uint64_t read_errors() const { return read_errors_.load(); }

 private:
  void ReadRapl(HardwareReading* out);
  void ReadCpuThermal(HardwareReading* out);
  void ReadCpuFreq(HardwareReading* out);
  void ReadAmdGpus(HardwareReading* out);
  void ReadProcStat(SystemReading* out);
  void ReadSystem(SystemReading* out);

  // A file's contents (nullopt when missing); an unreadable file is reported via Bad().
  struct File {
    std::optional<std::string> text;
    int error = 0;
  };
  File ReadFile(const std::string& path);
  // A file that does not change while the machine runs (zone and sensor names, energy ranges,
  // trip points, maximum clocks, topology, product names), or its absence: read once and again
  // every kStaticRefreshReads reads, so a hot-plugged device or a retuned trip point is seen
  // within minutes while a tick reads only what moves. The reference lives until the next
  // refresh.
  const File& ReadStatic(const std::string& path);
  // Counts a file that exists but cannot be used; warns once per path.
  void Bad(const std::string& path, std::string_view what);

  std::string root_;
  std::atomic<uint64_t> read_errors_{0};
  std::set<std::string> warned_;
  std::map<std::string, File> static_files_;
  uint64_t reads_ = 0;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_LINUX_HW_H_
