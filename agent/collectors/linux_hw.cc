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
  HardwareReading out;
  ReadRapl(&out);
  ReadCpuThermal(&out);
  ReadSystem(&out.system);
  return out;
}

void LinuxHwCollector::ReadRapl(HardwareReading* out) {
  const std::string base = absl::StrCat(root_, "/sys/class/powercap");
  for (const std::string& zone : ListDir(base, "intel-rapl:")) {
    // "intel-rapl:N" is a top-level zone, "intel-rapl:N:M" one of its subzones.
    std::vector<absl::string_view> parts = absl::StrSplit(zone, ':');
    if (parts.size() != 2 && parts.size() != 3) continue;
    const std::string dir = absl::StrCat(base, "/", zone);
    File name_file = ReadFile(dir + "/name");
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
    File range = ReadFile(dir + "/max_energy_range_uj");
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
      File type = ReadFile(absl::StrCat(dir, "/trip_point_", k, "_type"));
      if (!type.text.has_value()) break;
      File trip_temp = ReadFile(absl::StrCat(dir, "/trip_point_", k, "_temp"));
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
