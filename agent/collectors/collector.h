// The collector seam: one collector per source (an engine, the host's hardware). A collector
// reads its source once per tick and returns a reading of cumulative counters and gauges as the
// source reports them. Collectors keep no counter baselines: window deltas, rates, resets and
// estimates are computed from two consecutive readings by agent/window.h, so a reading that
// arrives too late can simply be dropped.
#ifndef FLEETWES_AGENT_COLLECTORS_COLLECTOR_H_
#define FLEETWES_AGENT_COLLECTORS_COLLECTOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/prom_text.h"
#include "common/thermal.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::agent {

// One engine slot (llama.cpp `/slots`). Only identifiers and state: prompts are never kept.
struct SlotReading {
  int64_t id = 0;
  int64_t task_id = -1;  // the slot's current or last task; changes when a new request starts
  bool processing = false;
};

// One model served by an engine, as read. Absent = the engine did not expose it (never 0).
struct ModelReading {
  std::string model;
  // Monotonic counters since the engine started.
  std::optional<double> decode_tokens_total;
  std::optional<double> prefill_tokens_total;
  std::optional<double> decode_seconds_total;   // summed per-request generation time
  std::optional<double> prefill_seconds_total;  // summed per-request prompt processing time
  // Gauges at read time.
  std::optional<double> requests_running;
  std::optional<double> requests_waiting;
  std::optional<double> kv_cache_usage;  // fraction 0..1
  std::optional<uint32_t> slots_total;
  std::vector<SlotReading> slots;  // empty when the engine does not expose slots
  std::optional<uint64_t> vram_bytes;
  // Cumulative latency histograms (vLLM, SGLang); absent when the engine does not expose them.
  std::optional<prom::Histogram> ttft_histogram;
  std::optional<prom::Histogram> tpot_histogram;  // inter-token latency
  std::optional<prom::Histogram> e2e_histogram;
  std::optional<prom::Histogram> queue_histogram;
  // More monotonic counters: prompt tokens looked up in / served from the prefix cache, and
  // preempted requests.
  std::optional<double> prefix_cache_queries_total;
  std::optional<double> prefix_cache_hits_total;
  std::optional<double> preemptions_total;
  // Gauge: requests waiting because the engine lacks capacity (vLLM waiting_by_reason).
  std::optional<double> requests_waiting_capacity;
  // Part of the model runs on the CPU (Ollama: size_vram < size).
  bool cpu_offload = false;
  // The counters come from the agent's synthetic probe, not from real traffic; such a reading
  // is windowed against the previous synthetic reading of the same model only.
  bool synthetic = false;
};

// One read of an engine.
struct EngineReading {
  bool available = false;
  std::string unavailable_reason;  // set when !available, e.g. "GET /metrics: HTTP 501 (...)"
  std::string version;             // engine build, when known
  std::vector<ModelReading> models;
};

// Reads one engine. Implementations are called from one thread at a time (not thread-safe) and
// never throw; every failure becomes an unavailable reading with a reason.
class EngineCollector {
 public:
  virtual ~EngineCollector() = default;
  virtual const std::string& engine_id() const = 0;
  virtual v1::EngineKind kind() const = 0;
  virtual const std::string& endpoint() const = 0;
  // Upper bound on one Read(); the sampler stops waiting for a read after this.
  virtual absl::Duration timeout() const = 0;
  virtual EngineReading Read() = 0;
};

// A process holding memory on a GPU (NVML compute processes). Host pid as the driver reports it.
struct GpuProcessReading {
  int64_t pid = 0;
  std::optional<uint64_t> used_bytes;  // absent when the driver does not report it
};

// One power/thermal device as read: a CPU package, a DRAM domain, a GPU.
struct DeviceReading {
  std::string id;  // stable within the node, e.g. "package-0", "dram-0"
  v1::DeviceKind kind = v1::DEVICE_KIND_UNSPECIFIED;
  std::string name;
  v1::PowerScope power_scope = v1::POWER_SCOPE_UNSPECIFIED;
  // Monotonic energy counter in µJ and the value at which it wraps to 0 (RAPL).
  std::optional<uint64_t> energy_uj;
  std::optional<uint64_t> energy_max_range_uj;
  std::optional<double> temperature_c;
  // Linux CPU thermal input: each thermal zone's temperature with its own trip points. The
  // "throttle counters increased" bit is decided from two readings.
  std::vector<thermal::CpuReading> cpu_zones;
  // Sum of core and package throttle event counters of all CPUs.
  std::optional<uint64_t> throttle_events_total;
  // GPUs (NVML): instantaneous board power, used for the window when there is no energy
  // counter; clocks; the clocks-event reasons mask; temperature thresholds; memory.
  std::optional<double> power_w;
  std::optional<double> clock_mhz;
  std::optional<double> clock_max_mhz;
  std::optional<uint64_t> clocks_event_mask;
  std::optional<double> slowdown_threshold_c;
  std::optional<double> gpu_max_threshold_c;
  std::optional<uint64_t> memory_used_bytes;
  std::optional<uint64_t> memory_total_bytes;
  // AMD GPUs (amdgpu hwmon): each temperature sensor (edge, junction, mem) with its own limits.
  std::vector<thermal::AmdReading> amd_sensors;
  // GPU compute processes; nullopt when the source cannot list them (not the same as none).
  std::optional<std::vector<GpuProcessReading>> processes;
  std::string unavailable_reason;  // set when the device exists but could not be read
};

// Node-wide memory state as read.
struct SystemReading {
  std::optional<uint64_t> swap_in_pages_total;   // /proc/vmstat pswpin
  std::optional<uint64_t> swap_out_pages_total;  // /proc/vmstat pswpout
  std::optional<double> memory_pressure_some_avg10;
  std::optional<uint64_t> memory_total_bytes;
  std::optional<uint64_t> memory_available_bytes;
  // /proc/stat aggregate "cpu" line in clock ticks: busy (user, nice, system, irq, softirq,
  // steal) and total (busy + idle + iowait).
  std::optional<uint64_t> cpu_busy_ticks_total;
  std::optional<uint64_t> cpu_all_ticks_total;
};

struct HardwareReading {
  std::vector<DeviceReading> devices;
  SystemReading system;
};

// Reads the host's hardware. Not thread-safe; never throws; missing sources are simply absent.
class HardwareCollector {
 public:
  virtual ~HardwareCollector() = default;
  virtual HardwareReading Read() = 0;
};

}  // namespace fleetwes::agent

#endif  // FLEETWES_AGENT_COLLECTORS_COLLECTOR_H_
