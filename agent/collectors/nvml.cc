#include "agent/collectors/nvml.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace fleetwes::agent {
namespace {

// The few NVML declarations the agent uses (the NVML API is a stable C ABI).
using nvmlReturn_t = int;
struct nvmlDeviceOpaque;
using nvmlDevice_t = nvmlDeviceOpaque*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr unsigned kTemperatureGpu = 0;         // NVML_TEMPERATURE_GPU
constexpr unsigned kThresholdSlowdown = 1;      // NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
constexpr unsigned kThresholdGpuMax = 3;        // NVML_TEMPERATURE_THRESHOLD_GPU_MAX
constexpr unsigned kClockGraphics = 0;          // NVML_CLOCK_GRAPHICS
constexpr unsigned kDeviceNameBufferSize = 96;  // NVML_DEVICE_NAME_V2_BUFFER_SIZE

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct nvmlMemory_v2_t {
  unsigned int version;
  unsigned long long total;
  unsigned long long reserved;
  unsigned long long free;
  unsigned long long used;
};
// NVML_STRUCT_VERSION(Memory, 2)
constexpr unsigned int kMemoryV2Version =
    static_cast<unsigned int>(sizeof(nvmlMemory_v2_t)) | (2u << 24);

constexpr unsigned kMaxGpus = 64;
constexpr nvmlReturn_t NVML_ERROR_INSUFFICIENT_SIZE = 7;
constexpr unsigned long long kValueNotAvailable = ~0ULL;  // NVML_VALUE_NOT_AVAILABLE
constexpr unsigned kMaxProcesses = 1024;

// nvmlProcessInfo_v1_t (unversioned call) and the four-field struct of the _v2/_v3 calls.
struct nvmlProcessInfo_v1_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
};
struct nvmlProcessInfo_v2_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

}  // namespace

class NvmlApi {
 public:
  using InitFn = nvmlReturn_t (*)();
  using CountFn = nvmlReturn_t (*)(unsigned*);
  using HandleFn = nvmlReturn_t (*)(unsigned, nvmlDevice_t*);
  using NameFn = nvmlReturn_t (*)(nvmlDevice_t, char*, unsigned);
  using UintFn = nvmlReturn_t (*)(nvmlDevice_t, unsigned*);
  using U64Fn = nvmlReturn_t (*)(nvmlDevice_t, unsigned long long*);
  using SensorFn = nvmlReturn_t (*)(nvmlDevice_t, unsigned, unsigned*);
  using MemFn = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_t*);
  using MemV2Fn = nvmlReturn_t (*)(nvmlDevice_t, nvmlMemory_v2_t*);
  using ProcV1Fn = nvmlReturn_t (*)(nvmlDevice_t, unsigned*, nvmlProcessInfo_v1_t*);
  using ProcV2Fn = nvmlReturn_t (*)(nvmlDevice_t, unsigned*, nvmlProcessInfo_v2_t*);

  ~NvmlApi() {
    if (shutdown != nullptr) shutdown();
    if (handle != nullptr) dlclose(handle);
  }

  void* handle = nullptr;
  InitFn shutdown = nullptr;
  CountFn count = nullptr;
  HandleFn by_index = nullptr;
  NameFn name = nullptr;
  UintFn power_mw = nullptr;
  U64Fn energy_mj = nullptr;
  SensorFn temperature = nullptr;
  SensorFn threshold = nullptr;
  SensorFn clock = nullptr;
  SensorFn max_clock = nullptr;
  U64Fn event_reasons = nullptr;
  MemFn memory = nullptr;
  MemV2Fn memory_v2 = nullptr;
  ProcV1Fn processes_v1 = nullptr;
  ProcV2Fn processes_v2 = nullptr;
};

namespace {

// Compute processes of one GPU through `fn` (a _v3/_v2 or the v1 entry point, with its struct);
// nullopt when the call fails.
template <typename Info, typename Fn>
std::optional<std::vector<GpuProcessReading>> Processes(Fn fn, nvmlDevice_t dev) {
  std::vector<Info> infos(64);
  unsigned n = static_cast<unsigned>(infos.size());
  nvmlReturn_t rc = fn(dev, &n, infos.data());
  if (rc == NVML_ERROR_INSUFFICIENT_SIZE && n > infos.size() && n <= kMaxProcesses) {
    infos.resize(n + 8);  // processes may start between the two calls
    n = static_cast<unsigned>(infos.size());
    rc = fn(dev, &n, infos.data());
  }
  if (rc != NVML_SUCCESS || n > infos.size()) return std::nullopt;
  std::vector<GpuProcessReading> out;
  for (unsigned i = 0; i < n; ++i) {
    GpuProcessReading& p = out.emplace_back();
    p.pid = infos[i].pid;
    if (infos[i].usedGpuMemory != kValueNotAvailable) p.used_bytes = infos[i].usedGpuMemory;
  }
  return out;
}

template <typename Fn>
Fn Symbol(void* handle, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (void* p = dlsym(handle, n)) return reinterpret_cast<Fn>(p);
  }
  return nullptr;
}

}  // namespace

NvmlCollector::NvmlCollector(std::string library) {
  std::vector<std::string> candidates;
  if (!library.empty()) {
    candidates.push_back(std::move(library));
  } else {
    candidates = {"libnvidia-ml.so.1", "libnvidia-ml.so"};
  }
  void* handle = nullptr;
  for (const std::string& c : candidates) {
    handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    const char* err = dlerror();
    load_error_ = absl::StrCat("dlopen ", c, ": ", err != nullptr ? err : "failed");
  }
  if (handle == nullptr) {
    Logger("nvml")->debug("no NVIDIA devices: {}", load_error_);
    return;
  }
  auto api = std::make_unique<NvmlApi>();
  api->handle = handle;
  auto init = Symbol<NvmlApi::InitFn>(handle, {"nvmlInit_v2", "nvmlInit"});
  api->count = Symbol<NvmlApi::CountFn>(handle, {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"});
  api->by_index = Symbol<NvmlApi::HandleFn>(
      handle, {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"});
  if (init == nullptr || api->count == nullptr || api->by_index == nullptr) {
    load_error_ = "the NVML library lacks nvmlInit or device enumeration";
    Logger("nvml")->debug("no NVIDIA devices: {}", load_error_);
    return;  // api's destructor closes the library
  }
  if (nvmlReturn_t rc = init(); rc != NVML_SUCCESS) {
    load_error_ = absl::StrCat("nvmlInit failed (NVML error ", rc, ")");
    Logger("nvml")->debug("no NVIDIA devices: {}", load_error_);
    return;
  }
  api->shutdown = Symbol<NvmlApi::InitFn>(handle, {"nvmlShutdown"});
  api->name = Symbol<NvmlApi::NameFn>(handle, {"nvmlDeviceGetName"});
  api->power_mw = Symbol<NvmlApi::UintFn>(handle, {"nvmlDeviceGetPowerUsage"});
  api->energy_mj = Symbol<NvmlApi::U64Fn>(handle, {"nvmlDeviceGetTotalEnergyConsumption"});
  api->temperature = Symbol<NvmlApi::SensorFn>(handle, {"nvmlDeviceGetTemperature"});
  api->threshold = Symbol<NvmlApi::SensorFn>(handle, {"nvmlDeviceGetTemperatureThreshold"});
  api->clock = Symbol<NvmlApi::SensorFn>(handle, {"nvmlDeviceGetClockInfo"});
  api->max_clock = Symbol<NvmlApi::SensorFn>(handle, {"nvmlDeviceGetMaxClockInfo"});
  api->event_reasons = Symbol<NvmlApi::U64Fn>(
      handle,
      {"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"});
  api->memory_v2 = Symbol<NvmlApi::MemV2Fn>(handle, {"nvmlDeviceGetMemoryInfo_v2"});
  api->memory = Symbol<NvmlApi::MemFn>(handle, {"nvmlDeviceGetMemoryInfo"});
  api->processes_v2 = Symbol<NvmlApi::ProcV2Fn>(
      handle,
      {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"});
  api->processes_v1 = Symbol<NvmlApi::ProcV1Fn>(handle, {"nvmlDeviceGetComputeRunningProcesses"});
  api_ = std::move(api);
  load_error_.clear();
}

NvmlCollector::~NvmlCollector() = default;

HardwareReading NvmlCollector::Read() {
  HardwareReading out;
  if (api_ == nullptr) return out;
  const NvmlApi& a = *api_;
  unsigned count = 0;
  if (a.count(&count) != NVML_SUCCESS) return out;
  if (count > kMaxGpus) count = kMaxGpus;
  for (unsigned i = 0; i < count; ++i) {
    DeviceReading& d = out.devices.emplace_back();
    d.id = absl::StrCat("gpu", i);
    d.kind = v1::DEVICE_KIND_GPU_NVIDIA;
    d.power_scope = v1::POWER_SCOPE_GPU_BOARD;
    nvmlDevice_t dev = nullptr;
    if (nvmlReturn_t rc = a.by_index(i, &dev); rc != NVML_SUCCESS) {
      d.unavailable_reason = absl::StrCat("nvmlDeviceGetHandleByIndex: NVML error ", rc);
      continue;
    }
    if (a.name != nullptr) {
      char name[kDeviceNameBufferSize] = {};
      if (a.name(dev, name, sizeof(name)) == NVML_SUCCESS) {
        name[sizeof(name) - 1] = '\0';
        d.name = name;
      }
    }
    unsigned u = 0;
    unsigned long long ull = 0;
    if (a.energy_mj != nullptr && a.energy_mj(dev, &ull) == NVML_SUCCESS &&
        ull < UINT64_MAX / 1000) {
      d.energy_uj = static_cast<uint64_t>(ull) * 1000;
    }
    if (a.power_mw != nullptr && a.power_mw(dev, &u) == NVML_SUCCESS) d.power_w = u / 1000.0;
    if (a.temperature != nullptr && a.temperature(dev, kTemperatureGpu, &u) == NVML_SUCCESS &&
        u < 300) {
      d.temperature_c = u;
    }
    if (a.threshold != nullptr) {
      if (a.threshold(dev, kThresholdSlowdown, &u) == NVML_SUCCESS && u > 0 && u < 300) {
        d.slowdown_threshold_c = u;
      }
      if (a.threshold(dev, kThresholdGpuMax, &u) == NVML_SUCCESS && u > 0 && u < 300) {
        d.gpu_max_threshold_c = u;
      }
    }
    if (a.clock != nullptr && a.clock(dev, kClockGraphics, &u) == NVML_SUCCESS) d.clock_mhz = u;
    if (a.max_clock != nullptr && a.max_clock(dev, kClockGraphics, &u) == NVML_SUCCESS && u > 0) {
      d.clock_max_mhz = u;
    }
    if (a.event_reasons != nullptr && a.event_reasons(dev, &ull) == NVML_SUCCESS) {
      d.clocks_event_mask = ull;
    }
    bool memory_read = false;
    if (a.memory_v2 != nullptr) {
      nvmlMemory_v2_t m{};
      m.version = kMemoryV2Version;
      if (a.memory_v2(dev, &m) == NVML_SUCCESS && m.used <= m.total) {
        d.memory_total_bytes = m.total;
        d.memory_used_bytes = m.used;
        memory_read = true;
      }
    }
    if (!memory_read && a.memory != nullptr) {
      nvmlMemory_t m{};
      if (a.memory(dev, &m) == NVML_SUCCESS && m.used <= m.total) {
        d.memory_total_bytes = m.total;
        d.memory_used_bytes = m.used;
      }
    }
    if (a.processes_v2 != nullptr) {
      d.processes = Processes<nvmlProcessInfo_v2_t>(a.processes_v2, dev);
    } else if (a.processes_v1 != nullptr) {
      d.processes = Processes<nvmlProcessInfo_v1_t>(a.processes_v1, dev);
    }
  }
  return out;
}

CombinedHardwareCollector::CombinedHardwareCollector(
    std::vector<std::unique_ptr<HardwareCollector>> sources)
    : sources_(std::move(sources)) {}

HardwareReading CombinedHardwareCollector::Read() {
  HardwareReading out;
  bool system_set = false;
  for (const auto& source : sources_) {
    HardwareReading r = source->Read();
    for (DeviceReading& d : r.devices) out.devices.push_back(std::move(d));
    const SystemReading& s = r.system;
    bool has_system = s.swap_in_pages_total || s.swap_out_pages_total ||
                      s.memory_pressure_some_avg10 || s.memory_total_bytes ||
                      s.memory_available_bytes || s.cpu_all_ticks_total;
    if (!system_set && has_system) {
      out.system = r.system;
      system_set = true;
    }
  }
  return out;
}

}  // namespace fleetwes::agent
