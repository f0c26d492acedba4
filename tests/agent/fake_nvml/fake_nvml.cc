// A fake NVML (libnvidia-ml.so) for agent tests, loaded by the agent's real dlopen loader.
// Scripted by the file named in env FLEETWES_FAKE_NVML_SCENARIO, re-read on every call so a
// test changes GPU state between reads by rewriting the file (read once when
// FLEETWES_FAKE_NVML_STATIC is set). Lines:
//   init=ok|fail
//   gpu<N> key=value ...   keys: name power_mw energy_mj temp slowdown gpumax clock clock_max
//                          mask mem_total mem_used unsupported=<comma list of the same keys>
//                          procs=<pid>:<bytes|na>,... (compute processes; "procs=" is none)
// Missing keys and listed "unsupported" keys answer NVML_ERROR_NOT_SUPPORTED. The number of
// GPUs is the number of gpu lines. Built twice: with the versioned entry points (default) and,
// with FAKE_NVML_LEGACY, with only the old unversioned names.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kSuccess = 0;
constexpr int kUninitialized = 1;
constexpr int kInvalidArgument = 2;
constexpr int kNotSupported = 3;
constexpr int kUnknown = 999;
constexpr int kVersionMismatch = 25;

struct Gpu {
  std::map<std::string, std::string> values;
};
struct Scenario {
  bool init_ok = true;
  std::vector<Gpu> gpus;
};

Scenario Parse() {
  Scenario s;
  const char* path = std::getenv("FLEETWES_FAKE_NVML_SCENARIO");
  if (path == nullptr) return s;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line == "init=fail") s.init_ok = false;
    if (line.rfind("gpu", 0) != 0) continue;
    std::istringstream words(line);
    std::string word;
    words >> word;  // gpuN
    Gpu g;
    while (words >> word) {
      size_t eq = word.find('=');
      if (eq != std::string::npos) g.values[word.substr(0, eq)] = word.substr(eq + 1);
    }
    s.gpus.push_back(g);
  }
  return s;
}

// The scenario, re-read on every call so tests can change it between reads; with
// FLEETWES_FAKE_NVML_STATIC set (benchmarks) read once and never copied, so the fake's own work
// does not count as the agent's cost. Valid until the calling thread's next Load().
const Scenario& Load() {
  static const bool kStatic = std::getenv("FLEETWES_FAKE_NVML_STATIC") != nullptr;
  if (kStatic) {
    static const Scenario* const kOnce = new Scenario(Parse());
    return *kOnce;
  }
  thread_local Scenario fresh;
  fresh = Parse();
  return fresh;
}

// Devices are handles 1..N cast to pointers.
struct Device;
int Index(Device* d) { return static_cast<int>(reinterpret_cast<intptr_t>(d)) - 1; }

int Value(Device* d, const char* key, unsigned long long* out) {
  const Scenario& s = Load();
  int i = Index(d);
  if (i < 0 || i >= static_cast<int>(s.gpus.size())) return kInvalidArgument;
  const auto& v = s.gpus[i].values;
  auto unsupported = v.find("unsupported");
  if (unsupported != v.end()) {
    std::string list = "," + unsupported->second + ",";
    if (list.find("," + std::string(key) + ",") != std::string::npos) return kNotSupported;
  }
  auto it = v.find(key);
  if (it == v.end()) return kNotSupported;
  *out = std::strtoull(it->second.c_str(), nullptr, 0);
  return kSuccess;
}

int UnsignedValue(Device* d, const char* key, unsigned* out) {
  unsigned long long v = 0;
  int rc = Value(d, key, &v);
  if (rc == kSuccess) *out = static_cast<unsigned>(v);
  return rc;
}

bool initialised = false;

int Init() {
  if (!Load().init_ok) return kUnknown;
  initialised = true;
  return kSuccess;
}
int Count(unsigned* n) {
  if (!initialised) return kUninitialized;
  *n = static_cast<unsigned>(Load().gpus.size());
  return kSuccess;
}
int Handle(unsigned i, Device** d) {
  if (!initialised) return kUninitialized;
  if (i >= Load().gpus.size()) return kInvalidArgument;
  *d = reinterpret_cast<Device*>(static_cast<intptr_t>(i) + 1);
  return kSuccess;
}

struct Memory {
  unsigned long long total, free, used;
};

constexpr int kInsufficientSize = 7;

// Fills `infos` (capacity *count) from the GPU's "procs" value, NVML style.
template <typename Info>
int Processes(Device* d, unsigned* count, Info* infos) {
  const Scenario& s = Load();
  int i = Index(d);
  if (i < 0 || i >= static_cast<int>(s.gpus.size())) return kInvalidArgument;
  auto it = s.gpus[i].values.find("procs");
  if (it == s.gpus[i].values.end()) return kNotSupported;
  std::vector<std::pair<unsigned, unsigned long long>> procs;
  std::istringstream list(it->second);
  std::string item;
  while (std::getline(list, item, ',')) {
    size_t colon = item.find(':');
    if (colon == std::string::npos) continue;
    std::string bytes = item.substr(colon + 1);
    procs.emplace_back(static_cast<unsigned>(std::strtoul(item.c_str(), nullptr, 10)),
                       bytes == "na" ? ~0ULL : std::strtoull(bytes.c_str(), nullptr, 10));
  }
  if (procs.size() > *count) {
    *count = static_cast<unsigned>(procs.size());
    return kInsufficientSize;
  }
  *count = static_cast<unsigned>(procs.size());
  for (size_t k = 0; k < procs.size(); ++k) {
    infos[k] = Info{};
    infos[k].pid = procs[k].first;
    infos[k].usedGpuMemory = procs[k].second;
  }
  return kSuccess;
}

struct ProcessInfoV1 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
};
struct ProcessInfoV2 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
struct MemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};

}  // namespace

extern "C" {

int nvmlShutdown() {
  initialised = false;
  return kSuccess;
}
const char* nvmlErrorString(int) { return "fake"; }
int nvmlDeviceGetName(Device* d, char* name, unsigned length) {
  const Scenario& s = Load();
  int i = Index(d);
  if (i < 0 || i >= static_cast<int>(s.gpus.size())) return kInvalidArgument;
  std::string n = s.gpus[i].values.count("name") ? s.gpus[i].values.at("name") : "Fake GPU";
  if (n.size() + 1 > length) return kInvalidArgument;
  std::memcpy(name, n.c_str(), n.size() + 1);
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(Device* d, unsigned* mw) { return UnsignedValue(d, "power_mw", mw); }
int nvmlDeviceGetTotalEnergyConsumption(Device* d, unsigned long long* mj) {
  return Value(d, "energy_mj", mj);
}
int nvmlDeviceGetTemperature(Device* d, unsigned sensor, unsigned* c) {
  if (sensor != 0) return kInvalidArgument;
  return UnsignedValue(d, "temp", c);
}
int nvmlDeviceGetTemperatureThreshold(Device* d, unsigned which, unsigned* c) {
  if (which == 1) return UnsignedValue(d, "slowdown", c);
  if (which == 3) return UnsignedValue(d, "gpumax", c);
  return kNotSupported;
}
int nvmlDeviceGetClockInfo(Device* d, unsigned type, unsigned* mhz) {
  if (type != 0) return kNotSupported;
  return UnsignedValue(d, "clock", mhz);
}
int nvmlDeviceGetMaxClockInfo(Device* d, unsigned type, unsigned* mhz) {
  if (type != 0) return kNotSupported;
  return UnsignedValue(d, "clock_max", mhz);
}
int nvmlDeviceGetMemoryInfo(Device* d, Memory* m) {
  unsigned long long total = 0, used = 0;
  if (int rc = Value(d, "mem_total", &total); rc != kSuccess) return rc;
  if (int rc = Value(d, "mem_used", &used); rc != kSuccess) return rc;
  m->total = total;
  m->used = used;
  m->free = total - used;
  return kSuccess;
}

#ifdef FAKE_NVML_LEGACY
int nvmlDeviceGetComputeRunningProcesses(Device* d, unsigned* count, ProcessInfoV1* infos) {
  return Processes(d, count, infos);
}
int nvmlInit() { return Init(); }
int nvmlDeviceGetCount(unsigned* n) { return Count(n); }
int nvmlDeviceGetHandleByIndex(unsigned i, Device** d) { return Handle(i, d); }
int nvmlDeviceGetCurrentClocksThrottleReasons(Device* d, unsigned long long* mask) {
  return Value(d, "mask", mask);
}
#else
int nvmlDeviceGetComputeRunningProcesses_v3(Device* d, unsigned* count, ProcessInfoV2* infos) {
  return Processes(d, count, infos);
}
int nvmlInit_v2() { return Init(); }
int nvmlDeviceGetCount_v2(unsigned* n) { return Count(n); }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, Device** d) { return Handle(i, d); }
int nvmlDeviceGetCurrentClocksEventReasons(Device* d, unsigned long long* mask) {
  return Value(d, "mask", mask);
}
int nvmlDeviceGetMemoryInfo_v2(Device* d, MemoryV2* m) {
  if (m->version != (static_cast<unsigned>(sizeof(MemoryV2)) | (2u << 24))) {
    return kVersionMismatch;
  }
  unsigned long long total = 0, used = 0;
  if (int rc = Value(d, "mem_total", &total); rc != kSuccess) return rc;
  if (int rc = Value(d, "mem_used", &used); rc != kSuccess) return rc;
  m->total = total;
  m->used = used;
  m->reserved = 0;
  m->free = total - used;
  return kSuccess;
}
#endif

}  // extern "C"
