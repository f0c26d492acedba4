#include "agent/collectors/linux_hw.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxFileBytes = 256 << 10;
// Trip points outside this range are placeholders some drivers expose for disabled trips.
constexpr double kMinTripC = 1.0;
constexpr double kMaxTripC = 200.0;

// The file's contents, or nullopt with *error = errno (0 when the file simply does not exist).
std::optional<std::string> ReadFileRaw(const std::string& path, int* error) {
  *error = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) *error = errno;
    return std::nullopt;
  }
  std::string text;
  char buf[4096];
  while (text.size() < kMaxFileBytes) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = errno;
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

template <typename T>
std::optional<T> ParseNumber(absl::string_view s) {
  s = absl::StripAsciiWhitespace(s);
  T value{};
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

// Millidegrees Celsius within what a sensor can plausibly report; nullopt otherwise.
std::optional<double> MilliCelsius(absl::string_view text) {
  std::optional<int64_t> milli = ParseNumber<int64_t>(text);
  if (!milli.has_value() || *milli < -100'000 || *milli > 250'000) return std::nullopt;
  return static_cast<double>(*milli) / 1000.0;
}

// Upper bounds that separate readings from garbage.
constexpr uint64_t kMaxGpuPowerUw = uint64_t{5'000} * 1'000'000;  // 5 kW
constexpr double kMaxClockMhz = 100'000;
constexpr uint64_t kMaxMemoryBytes = uint64_t{1} << 50;

// Sorted directory entries whose name starts with `prefix`; empty when the directory is absent.
std::vector<std::string> ListDir(const std::string& dir, absl::string_view prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return names;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::string name = it->path().filename().string();
    if (absl::StartsWith(name, prefix)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

LinuxHwCollector::File LinuxHwCollector::ReadFile(const std::string& path) {
  File f;
  f.text = ReadFileRaw(path, &f.error);
  if (f.error != 0) Bad(path, std::strerror(f.error));
  return f;
}

const LinuxHwCollector::File& LinuxHwCollector::ReadStatic(const std::string& path) {
  auto it = static_files_.find(path);
  if (it == static_files_.end()) it = static_files_.emplace(path, ReadFile(path)).first;
  return it->second;
}

void LinuxHwCollector::Bad(const std::string& path, std::string_view what) {
  ++read_errors_;
  if (warned_.insert(path).second) {
    Logger("linux_hw")
        ->warn("cannot use {}: {} (further errors of this file are only counted)", path,
               std::string(what));
  }
}

LinuxHwCollector::LinuxHwCollector(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  if (root_ == "/") root_.clear();
}

HardwareReading LinuxHwCollector::Read() {
  if (reads_++ % kStaticRefreshReads == 0) static_files_.clear();
  HardwareReading out;
  ReadRapl(&out);
  ReadCpuThermal(&out);
  ReadCpuFreq(&out);
  ReadAmdGpus(&out);
  ReadSystem(&out.system);
  ReadProcStat(&out.system);
  return out;
}

void LinuxHwCollector::ReadRapl(HardwareReading* out) {
  const std::string base = absl::StrCat(root_, "/sys/class/powercap");
  for (const std::string& zone : ListDir(base, "intel-rapl:")) {
    // "intel-rapl:N" is a top-level zone, "intel-rapl:N:M" one of its subzones.
    std::vector<absl::string_view> parts = absl::StrSplit(zone, ':');
    if (parts.size() != 2 && parts.size() != 3) continue;
    const std::string dir = absl::StrCat(base, "/", zone);
    const File& name_file = ReadStatic(dir + "/name");
    if (!name_file.text.has_value()) {
      continue;
    }
    std::string name(absl::StripAsciiWhitespace(*name_file.text));
    DeviceReading d;
    if (parts.size() == 2 && absl::StartsWith(name, "package")) {
      d.id = name;
      d.kind = v1::DEVICE_KIND_CPU;
      d.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
      d.name = absl::StrCat("CPU ", name);
    } else if (name == "dram") {
      d.id = parts.size() == 3 ? absl::StrCat("dram-", parts[1]) : "dram";
      d.kind = v1::DEVICE_KIND_DRAM;
      d.power_scope = v1::POWER_SCOPE_DRAM;
      d.name = parts.size() == 3 ? absl::StrCat("DRAM of package-", parts[1]) : "DRAM";
    } else {
      // core/uncore are parts of a package (counting them would count twice); psys covers
      // more than the packages and overlaps them.
      continue;
    }
    File energy = ReadFile(dir + "/energy_uj");
    if (energy.text.has_value()) {
      d.energy_uj = ParseNumber<uint64_t>(*energy.text);
      if (!d.energy_uj.has_value()) {
        Bad(dir + "/energy_uj", "not a number");
        d.unavailable_reason = "energy_uj: not a number";
      }
    } else {
      d.unavailable_reason =
          absl::StrCat("energy_uj: ", energy.error != 0 ? std::strerror(energy.error) : "missing");
    }
    const File& range = ReadStatic(dir + "/max_energy_range_uj");
    if (range.text.has_value()) {
      d.energy_max_range_uj = ParseNumber<uint64_t>(*range.text);
      if (!d.energy_max_range_uj.has_value()) Bad(dir + "/max_energy_range_uj", "not a number");
    }
    bool duplicate = std::any_of(out->devices.begin(), out->devices.end(),
                                 [&](const DeviceReading& o) { return o.id == d.id; });
    if (duplicate) d.id = absl::StrCat(d.id, "@", zone);
    out->devices.push_back(std::move(d));
  }
}

void LinuxHwCollector::ReadCpuThermal(HardwareReading* out) {
  // Thermal zones: each zone's temperature against its own trip points.
  std::vector<thermal::CpuReading> zones;
  std::optional<double> hottest;
  const std::string tbase = absl::StrCat(root_, "/sys/class/thermal");
  for (const std::string& zone : ListDir(tbase, "thermal_zone")) {
    const std::string dir = absl::StrCat(tbase, "/", zone);
    File temp = ReadFile(dir + "/temp");
    if (!temp.text.has_value()) {
      continue;
    }
    std::optional<int64_t> milli = ParseNumber<int64_t>(*temp.text);
    if (!milli.has_value() || *milli < -100'000 || *milli > 250'000) {
      Bad(dir + "/temp", "not a temperature in millidegrees");
      continue;
    }
    thermal::CpuReading reading;
    reading.temperature_c = static_cast<double>(*milli) / 1000.0;
    for (int k = 0; k < 64; ++k) {
      const File& type = ReadStatic(absl::StrCat(dir, "/trip_point_", k, "_type"));
      if (!type.text.has_value()) break;
      const File& trip_temp = ReadStatic(absl::StrCat(dir, "/trip_point_", k, "_temp"));
      absl::string_view type_name = absl::StripAsciiWhitespace(*type.text);
      std::optional<thermal::TripType> t =
          thermal::ParseTripType(std::string_view(type_name.data(), type_name.size()));
      std::optional<int64_t> trip_milli =
          trip_temp.text.has_value() ? ParseNumber<int64_t>(*trip_temp.text) : std::nullopt;
      if (!t.has_value() || !trip_milli.has_value()) continue;
      double c = static_cast<double>(*trip_milli) / 1000.0;
      if (c < kMinTripC || c > kMaxTripC) continue;
      reading.trips.push_back({*t, c});
    }
    if (!hottest.has_value() || *reading.temperature_c > *hottest) {
      hottest = reading.temperature_c;
    }
    zones.push_back(std::move(reading));
  }

  // Throttle event counters, summed over CPUs.
  std::optional<uint64_t> throttle;
  const std::string cbase = absl::StrCat(root_, "/sys/devices/system/cpu");
  for (const std::string& cpu : ListDir(cbase, "cpu")) {
    if (cpu.size() <= 3 || !absl::ascii_isdigit(static_cast<unsigned char>(cpu[3]))) continue;
    for (const char* file : {"core_throttle_count", "package_throttle_count"}) {
      File f = ReadFile(absl::StrCat(cbase, "/", cpu, "/thermal_throttle/", file));
      if (!f.text.has_value()) {
        continue;
      }
      std::optional<uint64_t> n = ParseNumber<uint64_t>(*f.text);
      if (!n.has_value()) {
        Bad(absl::StrCat(cbase, "/", cpu, "/thermal_throttle/", file), "not a number");
        continue;
      }
      throttle = throttle.value_or(0) + *n;
    }
  }

  if (zones.empty() && !throttle.has_value()) return;
  bool any_cpu = false;
  for (DeviceReading& d : out->devices) {
    if (d.kind != v1::DEVICE_KIND_CPU) continue;
    any_cpu = true;
    d.temperature_c = hottest;
    d.cpu_zones = zones;
    d.throttle_events_total = throttle;
  }
  if (!any_cpu) {
    // Thermal information without a RAPL package: a CPU device that carries state, no power.
    DeviceReading d;
    d.id = "cpu";
    d.kind = v1::DEVICE_KIND_CPU;
    d.name = "CPU";
    d.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
    d.temperature_c = hottest;
    d.cpu_zones = std::move(zones);
    d.throttle_events_total = throttle;
    d.unavailable_reason = "no RAPL energy counter";
    out->devices.push_back(std::move(d));
  }
}

void LinuxHwCollector::ReadCpuFreq(HardwareReading* out) {
  // Per CPU: current and maximum frequency (kHz) and the physical package it belongs to.
  struct Cpu {
    std::optional<int64_t> package;
    std::optional<double> cur_mhz;
    std::optional<double> max_mhz;
  };
  std::vector<Cpu> cpus;
  const std::string cbase = absl::StrCat(root_, "/sys/devices/system/cpu");
  for (const std::string& cpu : ListDir(cbase, "cpu")) {
    if (cpu.size() <= 3 || !std::all_of(cpu.begin() + 3, cpu.end(), [](char c) {
          return absl::ascii_isdigit(static_cast<unsigned char>(c));
        })) {
      continue;
    }
    const std::string dir = absl::StrCat(cbase, "/", cpu);
    Cpu c;
    auto khz = [&](const std::string& path, bool fixed) -> std::optional<double> {
      const File& f = fixed ? ReadStatic(path) : ReadFile(path);
      if (!f.text.has_value()) return std::nullopt;
      std::optional<uint64_t> v = ParseNumber<uint64_t>(*f.text);
      if (!v.has_value() || *v == 0 || *v / 1000.0 > kMaxClockMhz) {
        Bad(path, "not a frequency in kHz");
        return std::nullopt;
      }
      return static_cast<double>(*v) / 1000.0;
    };
    c.cur_mhz = khz(dir + "/cpufreq/scaling_cur_freq", /*fixed=*/false);
    c.max_mhz = khz(dir + "/cpufreq/cpuinfo_max_freq", /*fixed=*/true);
    if (!c.cur_mhz.has_value() && !c.max_mhz.has_value()) continue;
    const File& pkg = ReadStatic(dir + "/topology/physical_package_id");
    if (pkg.text.has_value()) c.package = ParseNumber<int64_t>(*pkg.text);
    cpus.push_back(c);
  }
  if (cpus.empty()) return;

  // Mean current clock and highest maximum over the CPUs of `package` (all CPUs when nullopt or
  // when none is known to belong to it).
  auto apply = [&cpus](std::optional<int64_t> package, DeviceReading* d) {
    bool any_in_package =
        package.has_value() &&
        std::any_of(cpus.begin(), cpus.end(), [&](const Cpu& c) { return c.package == package; });
    double sum = 0;
    int n = 0;
    std::optional<double> max;
    for (const Cpu& c : cpus) {
      if (any_in_package && c.package != package) continue;
      if (c.cur_mhz.has_value()) {
        sum += *c.cur_mhz;
        ++n;
      }
      if (c.max_mhz.has_value() && (!max.has_value() || *c.max_mhz > *max)) max = c.max_mhz;
    }
    if (n > 0) d->clock_mhz = sum / n;
    d->clock_max_mhz = max;
  };
  bool any_cpu = false;
  for (DeviceReading& d : out->devices) {
    if (d.kind != v1::DEVICE_KIND_CPU) continue;
    any_cpu = true;
    absl::string_view id = d.id;
    int64_t package = 0;
    if (absl::ConsumePrefix(&id, "package-") && absl::SimpleAtoi(id, &package)) {
      apply(package, &d);
    } else {
      apply(std::nullopt, &d);
    }
  }
  if (!any_cpu) {
    DeviceReading d;
    d.id = "cpu";
    d.kind = v1::DEVICE_KIND_CPU;
    d.name = "CPU";
    d.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
    d.unavailable_reason = "no RAPL energy counter";
    apply(std::nullopt, &d);
    out->devices.push_back(std::move(d));
  }
}

void LinuxHwCollector::ReadAmdGpus(HardwareReading* out) {
  struct Gpu {
    std::string slot;  // PCI address of the hwmon's device, the stable order
    DeviceReading d;
  };
  std::vector<Gpu> gpus;
  const std::string hbase = absl::StrCat(root_, "/sys/class/hwmon");
  for (const std::string& hwmon : ListDir(hbase, "hwmon")) {
    const std::string dir = absl::StrCat(hbase, "/", hwmon);
    const File& name = ReadStatic(dir + "/name");
    if (!name.text.has_value() || absl::StripAsciiWhitespace(*name.text) != "amdgpu") continue;
    Gpu g;
    DeviceReading& d = g.d;
    d.kind = v1::DEVICE_KIND_GPU_AMD;
    d.power_scope = v1::POWER_SCOPE_GPU_BOARD;
    const std::string dev = dir + "/device";
    std::error_code ec;
    fs::path target = fs::canonical(dev, ec);
    g.slot = ec ? hwmon : target.filename().string();

    // Power in µW: the driver's average when it has one, else the instantaneous input.
    for (const char* file : {"/power1_average", "/power1_input"}) {
      File f = ReadFile(dir + file);
      if (!f.text.has_value()) continue;
      std::optional<uint64_t> uw = ParseNumber<uint64_t>(*f.text);
      if (!uw.has_value() || *uw > kMaxGpuPowerUw) {
        Bad(dir + file, "not a power in microwatts");
        continue;
      }
      d.power_w = static_cast<double>(*uw) / 1e6;
      break;
    }
    File energy = ReadFile(dir + "/energy1_input");
    if (energy.text.has_value()) {
      d.energy_uj = ParseNumber<uint64_t>(*energy.text);
      if (!d.energy_uj.has_value()) Bad(dir + "/energy1_input", "not a number");
    }

    // temp1 edge, temp2 junction, temp3 mem: each judged against its own limits.
    for (int k = 1; k <= 3; ++k) {
      const std::string t = absl::StrCat(dir, "/temp", k);
      File input = ReadFile(t + "_input");
      if (!input.text.has_value()) continue;
      thermal::AmdReading sensor;
      sensor.temperature_c = MilliCelsius(*input.text);
      if (!sensor.temperature_c.has_value()) {
        Bad(t + "_input", "not a temperature in millidegrees");
        continue;
      }
      for (auto [suffix, limit] :
           {std::pair{"_crit", &sensor.crit_c}, std::pair{"_emergency", &sensor.emergency_c}}) {
        const File& f = ReadStatic(t + suffix);
        if (!f.text.has_value()) continue;
        *limit = MilliCelsius(*f.text);
        if (!limit->has_value()) Bad(t + suffix, "not a temperature in millidegrees");
      }
      if (!d.temperature_c.has_value() || *sensor.temperature_c > *d.temperature_c) {
        d.temperature_c = sensor.temperature_c;
      }
      d.amd_sensors.push_back(sensor);
    }

    // The PCI device: VRAM (bytes) and the shader clock levels ("1: 1800Mhz *", * = current).
    std::optional<uint64_t> used, total;
    for (auto [file, target_value] :
         {std::pair{"/mem_info_vram_used", &used}, std::pair{"/mem_info_vram_total", &total}}) {
      File f = ReadFile(dev + file);
      if (!f.text.has_value()) continue;
      *target_value = ParseNumber<uint64_t>(*f.text);
      if (!target_value->has_value() || **target_value > kMaxMemoryBytes) {
        Bad(dev + file, "not a byte count");
        target_value->reset();
      }
    }
    if (used.has_value() && total.has_value() && *used <= *total) {
      d.memory_used_bytes = used;
      d.memory_total_bytes = total;
    } else if (total.has_value()) {
      d.memory_total_bytes = total;
    }
    File sclk = ReadFile(dev + "/pp_dpm_sclk");
    if (sclk.text.has_value()) {
      bool garbage = false;
      for (absl::string_view line : absl::StrSplit(*sclk.text, '\n', absl::SkipWhitespace())) {
        std::pair<absl::string_view, absl::string_view> level = absl::StrSplit(line, ':');
        absl::string_view value = absl::StripAsciiWhitespace(level.second);
        bool current = absl::ConsumeSuffix(&value, "*");
        value = absl::StripAsciiWhitespace(value);
        if (!absl::ConsumeSuffix(&value, "Mhz") && !absl::ConsumeSuffix(&value, "MHz")) {
          garbage = true;
          continue;
        }
        std::optional<uint64_t> mhz = ParseNumber<uint64_t>(value);
        if (!mhz.has_value() || *mhz > kMaxClockMhz) {
          garbage = true;
          continue;
        }
        const double v = static_cast<double>(*mhz);
        if (current) d.clock_mhz = v;
        if (!d.clock_max_mhz.has_value() || v > *d.clock_max_mhz) d.clock_max_mhz = v;
      }
      if (garbage) Bad(dev + "/pp_dpm_sclk", "unexpected line");
    }
    const File& product = ReadStatic(dev + "/product_name");
    std::string product_name =
        product.text.has_value() ? std::string(absl::StripAsciiWhitespace(*product.text)) : "";
    d.name = product_name.empty() ? absl::StrCat("AMD GPU ", g.slot) : product_name;
    if (!d.power_w.has_value() && !d.energy_uj.has_value()) {
      d.unavailable_reason = "no power1_average, power1_input or energy1_input";
    }
    gpus.push_back(std::move(g));
  }
  std::sort(gpus.begin(), gpus.end(), [](const Gpu& a, const Gpu& b) { return a.slot < b.slot; });
  for (size_t i = 0; i < gpus.size(); ++i) {
    gpus[i].d.id = absl::StrCat("amdgpu", i);
    out->devices.push_back(std::move(gpus[i].d));
  }
}

void LinuxHwCollector::ReadProcStat(SystemReading* out) {
  const std::string path = absl::StrCat(root_, "/proc/stat");
  File stat = ReadFile(path);
  if (!stat.text.has_value()) return;
  for (absl::string_view line : absl::StrSplit(*stat.text, '\n')) {
    if (!absl::ConsumePrefix(&line, "cpu ")) continue;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already
    // part of user and nice.
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 8) {
      Bad(path, "short cpu line");
      return;
    }
    uint64_t busy = 0, all = 0;
    for (size_t i = 0; i < 8; ++i) {
      std::optional<uint64_t> v = ParseNumber<uint64_t>(fields[i]);
      if (!v.has_value() || *v > (uint64_t{1} << 62)) {
        Bad(path, "bad cpu line");
        return;
      }
      all += *v;
      if (i != 3 && i != 4) busy += *v;  // idle, iowait
    }
    out->cpu_busy_ticks_total = busy;
    out->cpu_all_ticks_total = all;
    return;
  }
}

void LinuxHwCollector::ReadSystem(SystemReading* out) {
  File vmstat = ReadFile(absl::StrCat(root_, "/proc/vmstat"));
  if (vmstat.text.has_value()) {
    for (absl::string_view line : absl::StrSplit(*vmstat.text, '\n')) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, ' ');
      std::optional<uint64_t>* target = kv.first == "pswpin"    ? &out->swap_in_pages_total
                                        : kv.first == "pswpout" ? &out->swap_out_pages_total
                                                                : nullptr;
      if (target == nullptr) continue;
      *target = ParseNumber<uint64_t>(kv.second);
      if (!target->has_value()) Bad(absl::StrCat(root_, "/proc/vmstat"), "bad pswpin/pswpout");
    }
  }

  File psi = ReadFile(absl::StrCat(root_, "/proc/pressure/memory"));
  if (psi.text.has_value()) {
    for (absl::string_view line : absl::StrSplit(*psi.text, '\n')) {
      if (!absl::ConsumePrefix(&line, "some ")) continue;
      for (absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
        if (!absl::ConsumePrefix(&field, "avg10=")) continue;
        double v = 0;
        if (absl::SimpleAtod(field, &v) && std::isfinite(v) && v >= 0 && v <= 100) {
          out->memory_pressure_some_avg10 = v;
        } else {
          Bad(absl::StrCat(root_, "/proc/pressure/memory"), "bad some avg10");
        }
      }
    }
  }

  File meminfo = ReadFile(absl::StrCat(root_, "/proc/meminfo"));
  if (meminfo.text.has_value()) {
    for (absl::string_view line : absl::StrSplit(*meminfo.text, '\n')) {
      std::optional<uint64_t>* target = nullptr;
      if (absl::ConsumePrefix(&line, "MemTotal:")) target = &out->memory_total_bytes;
      if (absl::ConsumePrefix(&line, "MemAvailable:")) target = &out->memory_available_bytes;
      if (target == nullptr) continue;
      line = absl::StripAsciiWhitespace(line);
      bool kib = absl::ConsumeSuffix(&line, "kB");
      std::optional<uint64_t> n = ParseNumber<uint64_t>(line);
      if (n.has_value() && *n < (uint64_t{1} << 50)) {
        *target = kib ? *n * 1024 : *n;
      } else {
        Bad(absl::StrCat(root_, "/proc/meminfo"), "bad MemTotal/MemAvailable");
      }
    }
  }
}

}  // namespace fleetwes::agent
