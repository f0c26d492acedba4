#include "agent/loadgen/profiles.h"

namespace fleetwes::agent::loadgen {
namespace {

constexpr uint64_t kGiB = 1024ull * 1024 * 1024;

HardwareProfile NvidiaGpu(std::string name, std::string device_name, uint64_t vram_gib,
                          double clock_max_mhz) {
  HardwareProfile p;
  p.name = std::move(name);
  p.device_kind = v1::DEVICE_KIND_GPU_NVIDIA;
  p.device_id = "gpu0";
  p.device_name = std::move(device_name);
  p.power_scope = v1::POWER_SCOPE_GPU_BOARD;
  p.device_memory_bytes = vram_gib * kGiB;
  p.clock_max_mhz = clock_max_mhz;
  p.temp_max_c = 89;       // NVML GPU_MAX
  p.temp_critical_c = 93;  // NVML SLOWDOWN
  p.host_memory_bytes = 64 * kGiB;
  return p;
}

void Vllm(HardwareProfile& p, std::string model) {
  p.engine_kind = v1::ENGINE_KIND_VLLM;
  p.engine_id = "vllm";
  p.engine_version = "0.11.0";
  p.endpoint = "http://127.0.0.1:8000";
  p.model = std::move(model);
  p.reports_kv_usage = true;
}

void LlamaCpp(HardwareProfile& p, std::string model, uint32_t slots) {
  p.engine_kind = v1::ENGINE_KIND_LLAMACPP;
  p.engine_id = "llamacpp";
  p.engine_version = "b6283";
  p.endpoint = "http://127.0.0.1:8080";
  p.model = std::move(model);
  p.slots_total = slots;
  p.reports_kv_usage = false;
  p.latency_is_estimate = true;
}

void Ollama(HardwareProfile& p, std::string model) {
  p.engine_kind = v1::ENGINE_KIND_OLLAMA;
  p.engine_id = "ollama";
  p.engine_version = "0.11.6";
  p.endpoint = "http://127.0.0.1:11434";
  p.model = std::move(model);
  p.reports_kv_usage = false;
}

std::vector<HardwareProfile> MakeProfiles() {
  std::vector<HardwareProfile> out;

  {  // A workstation GPU under vLLM; throttles now and then in a warm room.
    HardwareProfile p = NvidiaGpu("rtx4090-vllm", "NVIDIA GeForce RTX 4090", 24, 2790);
    Vllm(p, "meta-llama/Llama-3.1-8B-Instruct");
    p.model_vram_bytes = 21 * kGiB;
    p.tokens_per_s = 180;
    p.prefill_tokens_per_s = 2400;
    p.watts = 340;
    p.temperature_c = 71;
    p.ttft_p95_s = 0.085;
    p.requests_per_s = 1.5;
    p.throttle_episode_rate = 0.03;
    out.push_back(p);
  }
  {  // A datacenter GPU with continuous batching; PUE of an air-cooled hall.
    HardwareProfile p = NvidiaGpu("a100-vllm", "NVIDIA A100-SXM4-80GB", 80, 1410);
    Vllm(p, "meta-llama/Llama-3.1-8B-Instruct");
    p.model_vram_bytes = 72 * kGiB;
    p.tokens_per_s = 620;
    p.prefill_tokens_per_s = 9000;
    p.watts = 290;
    p.pue = 1.35;
    p.temperature_c = 62;
    p.temp_max_c = 87;
    p.temp_critical_c = 92;
    p.ttft_p95_s = 0.14;
    p.requests_per_s = 4;
    p.host_memory_bytes = 512 * kGiB;
    out.push_back(p);
  }
  {  // An edge SoC: GPU, CPU and DRAM on one power rail.
    HardwareProfile p;
    p.name = "jetson-orin-llamacpp";
    p.device_kind = v1::DEVICE_KIND_GPU_NVIDIA;
    p.device_id = "soc";
    p.device_name = "NVIDIA Jetson AGX Orin 64GB";
    p.power_scope = v1::POWER_SCOPE_SOC;
    p.energy_counter = false;  // INA3221 rails: power readings only
    p.device_memory_bytes = 64 * kGiB;
    p.clock_max_mhz = 1300;
    LlamaCpp(p, "Llama-3.1-8B-Instruct-Q4_K_M.gguf", 2);
    p.model_vram_bytes = 6 * kGiB;
    p.tokens_per_s = 21;
    p.prefill_tokens_per_s = 480;
    p.watts = 32;
    p.temperature_c = 58;
    p.temp_max_c = 88;
    p.temp_critical_c = 96;
    p.ttft_p95_s = 0.6;
    p.requests_per_s = 0.3;
    p.throttle_episode_rate = 0.02;
    p.host_memory_bytes = 64 * kGiB;
    out.push_back(p);
  }
  {  // Apple silicon, whole-SoC power from powermetrics.
    HardwareProfile p;
    p.name = "m2max-ollama";
    p.device_kind = v1::DEVICE_KIND_SOC_APPLE;
    p.device_id = "soc";
    p.device_name = "Apple M2 Max";
    p.power_scope = v1::POWER_SCOPE_SOC;
    p.energy_counter = false;
    p.device_memory_bytes = 64 * kGiB;
    p.clock_max_mhz = 1398;
    Ollama(p, "llama3.1:8b");
    p.model_vram_bytes = 6 * kGiB;
    p.tokens_per_s = 89;
    p.prefill_tokens_per_s = 700;
    p.watts = 60;
    p.temperature_c = 64;
    p.temp_max_c = 100;
    p.temp_critical_c = 105;
    p.ttft_p95_s = 0.25;
    p.requests_per_s = 0.8;
    p.host_memory_bytes = 64 * kGiB;
    out.push_back(p);
  }
  {  // A CPU-only server, RAPL package energy.
    HardwareProfile p;
    p.name = "xeon-llamacpp";
    p.device_kind = v1::DEVICE_KIND_CPU;
    p.device_id = "package-0";
    p.device_name = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz";
    p.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
    p.clock_max_mhz = 3200;
    LlamaCpp(p, "Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4);
    p.model_vram_bytes = 0;
    p.tokens_per_s = 12;
    p.prefill_tokens_per_s = 95;
    p.watts = 95;
    p.temperature_c = 66;
    p.temp_max_c = 90;  // passive trip
    p.temp_critical_c = 100;
    p.ttft_p95_s = 1.8;
    p.requests_per_s = 0.15;
    p.host_memory_bytes = 256 * kGiB;
    out.push_back(p);
  }
  {  // A Radeon under llama.cpp (ROCm), hwmon power; a cramped case.
    HardwareProfile p;
    p.name = "radeon-llamacpp";
    p.device_kind = v1::DEVICE_KIND_GPU_AMD;
    p.device_id = "card0";
    p.device_name = "AMD Radeon RX 7900 XTX";
    p.power_scope = v1::POWER_SCOPE_GPU_BOARD;
    p.energy_counter = false;  // amdgpu hwmon power1_average
    p.device_memory_bytes = 24 * kGiB;
    p.clock_max_mhz = 2500;
    LlamaCpp(p, "Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4);
    p.model_vram_bytes = 7 * kGiB;
    p.tokens_per_s = 92;
    p.prefill_tokens_per_s = 1900;
    p.watts = 220;
    p.temperature_c = 74;
    p.temp_max_c = 100;       // temp2_crit (junction)
    p.temp_critical_c = 105;  // temp2_emergency
    p.ttft_p95_s = 0.2;
    p.requests_per_s = 0.7;
    p.throttle_episode_rate = 0.05;
    p.host_memory_bytes = 64 * kGiB;
    out.push_back(p);
  }
  {  // A low-power inference card.
    HardwareProfile p = NvidiaGpu("l4-vllm", "NVIDIA L4", 24, 2040);
    Vllm(p, "meta-llama/Llama-3.1-8B-Instruct");
    p.model_vram_bytes = 21 * kGiB;
    p.tokens_per_s = 95;
    p.prefill_tokens_per_s = 1500;
    p.watts = 72;
    p.temperature_c = 66;
    p.temp_max_c = 86;
    p.temp_critical_c = 91;
    p.ttft_p95_s = 0.22;
    p.requests_per_s = 0.9;
    p.host_memory_bytes = 128 * kGiB;
    out.push_back(p);
  }
  {  // A 16 GB Mac running a model too large for it: efficient-looking, but swapping.
    HardwareProfile p;
    p.name = "m4-16gb-ollama";
    p.device_kind = v1::DEVICE_KIND_SOC_APPLE;
    p.device_id = "soc";
    p.device_name = "Apple M4";
    p.power_scope = v1::POWER_SCOPE_SOC;
    p.energy_counter = false;
    p.device_memory_bytes = 16 * kGiB;
    p.clock_max_mhz = 1580;
    Ollama(p, "qwen2.5:14b-instruct-q5_K_S");
    p.model_vram_bytes = 10 * kGiB;
    p.tokens_per_s = 16;
    p.prefill_tokens_per_s = 120;
    p.watts = 14;
    p.temperature_c = 61;
    p.temp_max_c = 100;
    p.temp_critical_c = 105;
    p.ttft_p95_s = 1.1;
    p.requests_per_s = 0.2;
    p.always_swapping = true;
    p.host_memory_bytes = 16 * kGiB;
    out.push_back(p);
  }
  {  // An older consumer GPU under Ollama.
    HardwareProfile p = NvidiaGpu("rtx3090-ollama", "NVIDIA GeForce RTX 3090", 24, 1695);
    Ollama(p, "llama3.1:8b");
    p.model_vram_bytes = 6 * kGiB;
    p.tokens_per_s = 112;
    p.prefill_tokens_per_s = 2100;
    p.watts = 310;
    p.temperature_c = 76;
    p.ttft_p95_s = 0.12;
    p.requests_per_s = 0.9;
    p.throttle_episode_rate = 0.03;
    p.swap_episode_rate = 0.01;
    out.push_back(p);
  }
  {  // A large CPU server.
    HardwareProfile p;
    p.name = "epyc-llamacpp";
    p.device_kind = v1::DEVICE_KIND_CPU;
    p.device_id = "package-0";
    p.device_name = "AMD EPYC 9354 32-Core Processor";
    p.power_scope = v1::POWER_SCOPE_CPU_PACKAGE;
    p.clock_max_mhz = 3800;
    LlamaCpp(p, "Llama-3.1-8B-Instruct-Q4_K_M.gguf", 8);
    p.tokens_per_s = 26;
    p.prefill_tokens_per_s = 260;
    p.watts = 210;
    p.temperature_c = 58;
    p.temp_max_c = 90;
    p.temp_critical_c = 100;
    p.ttft_p95_s = 0.9;
    p.requests_per_s = 0.3;
    p.host_memory_bytes = 384 * kGiB;
    out.push_back(p);
  }
  {  // A current datacenter GPU, liquid cooled.
    HardwareProfile p = NvidiaGpu("h100-vllm", "NVIDIA H100 80GB HBM3", 80, 1980);
    Vllm(p, "meta-llama/Llama-3.1-8B-Instruct");
    p.model_vram_bytes = 72 * kGiB;
    p.tokens_per_s = 1900;
    p.prefill_tokens_per_s = 24000;
    p.watts = 520;
    p.pue = 1.2;
    p.temperature_c = 55;
    p.temp_max_c = 87;
    p.temp_critical_c = 92;
    p.ttft_p95_s = 0.09;
    p.requests_per_s = 9;
    p.host_memory_bytes = 1024 * kGiB;
    out.push_back(p);
  }
  {  // A second RTX 4090 in a box with poor airflow: throttles often.
    HardwareProfile p = NvidiaGpu("rtx4090-vllm-hot", "NVIDIA GeForce RTX 4090", 24, 2790);
    Vllm(p, "meta-llama/Llama-3.1-8B-Instruct");
    p.model_vram_bytes = 21 * kGiB;
    p.tokens_per_s = 176;
    p.prefill_tokens_per_s = 2300;
    p.watts = 345;
    p.temperature_c = 81;
    p.ttft_p95_s = 0.09;
    p.requests_per_s = 1.5;
    p.throttle_episode_rate = 0.12;
    out.push_back(p);
  }
  return out;
}

}  // namespace

const std::vector<HardwareProfile>& BuiltinProfiles() {
  static const std::vector<HardwareProfile>* const profiles =
      new std::vector<HardwareProfile>(MakeProfiles());
  return *profiles;
}

}  // namespace fleetwes::agent::loadgen
