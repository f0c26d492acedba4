// NVIDIA GPUs through NVML, loaded at run time: dlopen of libnvidia-ml.so.1, then
// libnvidia-ml.so (or a configured path). The same binary runs on hosts without NVIDIA: a
// missing library or a failing nvmlInit means no NVIDIA devices (logged at debug), never an
// error. Versioned symbols are preferred with fallbacks (nvmlInit_v2 -> nvmlInit,
// nvmlDeviceGetHandleByIndex_v2 -> nvmlDeviceGetHandleByIndex, nvmlDeviceGetMemoryInfo_v2 ->
// nvmlDeviceGetMemoryInfo, nvmlDeviceGetCurrentClocksEventReasons ->
// nvmlDeviceGetCurrentClocksThrottleReasons). Every GPU is read: power, total energy (mJ),
// temperature with its SLOWDOWN and GPU_MAX thresholds, clocks (graphics, current and max),
// the clocks-event reasons mask, memory, and the compute processes with the GPU memory each
// holds (nvmlDeviceGetComputeRunningProcesses_v3 -> _v2 -> unversioned). A call a GPU does not
// support leaves its value absent. Not thread-safe: one Read() at a time.
#ifndef FLEETWES_AGENT_COLLECTORS_NVML_H_
#define FLEETWES_AGENT_COLLECTORS_NVML_H_

#include <memory>
#include <string>
#include <vector>

#include "agent/collectors/collector.h"

namespace fleetwes::agent {

class NvmlApi;  // the loaded library's entry points (nvml.cc)

class NvmlCollector final : public HardwareCollector {
 public:
  // `library`: the path to dlopen; empty tries libnvidia-ml.so.1 then libnvidia-ml.so.
  explicit NvmlCollector(std::string library = "");
  ~NvmlCollector() override;  // nvmlShutdown, dlclose

  // GPUs as devices "gpu0", "gpu1", ... (kind GPU_NVIDIA, scope GPU_BOARD); system left empty.
  HardwareReading Read() override;

  // True once the library is loaded and initialised.
  bool loaded() const { return api_ != nullptr; }
  // Why the library is not in use ("" when loaded).
  const std::string& load_error() const { return load_error_; }

 private:
  std::unique_ptr<NvmlApi> api_;
  std::string load_error_;
};

// Reads several hardware sources as one: devices in source order; the system reading of the
// first source that has one. Not thread-safe.
class CombinedHardwareCollector final : public HardwareCollector {
 public:
  explicit CombinedHardwareCollector(std::vector<std::unique_ptr<HardwareCollector>> sources);
  HardwareReading Read() override;

 private:
  std::vector<std::unique_ptr<HardwareCollector>> sources_;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_NVML_H_
