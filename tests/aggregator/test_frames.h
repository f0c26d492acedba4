// Builders for the messages aggregator tests send: Hellos and frames with realistic values.
#ifndef FLEETWES_TESTS_AGGREGATOR_TEST_FRAMES_H_
#define FLEETWES_TESTS_AGGREGATOR_TEST_FRAMES_H_

#include <map>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "aggregator/proto_time.h"
#include "fleetwes/v1/ingest.pb.h"
#include "fleetwes/v1/telemetry.pb.h"

namespace fleetwes::aggregator::testing {

// 2026-01-01T00:00:00Z, the FakeClock's default start.
inline absl::Time T0() { return absl::FromUnixSeconds(1'767'225'600); }

inline v1::Hello MakeHello(const std::string& node_id, const std::string& boot_id,
                           std::map<std::string, std::string> labels = {}) {
  v1::Hello h;
  h.set_node_id(node_id);
  h.set_boot_id(boot_id);
  h.set_agent_version("0.1.0");
  for (const auto& [k, v] : labels) (*h.mutable_labels())[k] = v;
  h.set_interval_s(2.0);
  v1::Device* d = h.add_devices();
  d->set_id("gpu0");
  d->set_kind(v1::DEVICE_KIND_GPU_NVIDIA);
  d->set_name("NVIDIA L4");
  d->set_power_scope(v1::POWER_SCOPE_GPU_BOARD);
  return h;
}

struct ModelSpec {
  std::string model = "llama3-8b";
  double tokens_per_s = 89;
  std::optional<double> watts = 60;
  v1::ThermalState state = v1::THERMAL_STATE_NORMAL;
  std::optional<double> ttft_p95_s = 0.25;
  std::optional<uint32_t> waiting = 0;
  std::optional<uint32_t> running = 2;
  std::optional<double> kv_cache_usage = 0.3;
};

// Appends a model sample whose Wes carries the inputs (and deliberately wrong agent-side values,
// which the aggregator must replace).
inline v1::ModelSample* AddModel(v1::Frame* f, const ModelSpec& spec) {
  v1::ModelSample* m = f->add_models();
  m->set_engine_id("vllm-0");
  m->set_engine(v1::ENGINE_KIND_VLLM);
  m->set_model(spec.model);
  m->set_decode_tokens_per_s(spec.tokens_per_s);
  m->set_prefill_tokens_per_s(spec.tokens_per_s * 4);
  m->set_decode_tokens(static_cast<uint64_t>(spec.tokens_per_s * f->interval_s()));
  if (spec.ttft_p95_s) {
    m->mutable_ttft()->set_p95_s(*spec.ttft_p95_s);
    m->mutable_ttft()->set_p50_s(*spec.ttft_p95_s / 2);
    m->mutable_ttft()->set_mean_s(*spec.ttft_p95_s / 2);
    m->mutable_ttft()->set_count(20);
  }
  if (spec.running) m->set_requests_running(*spec.running);
  if (spec.waiting) m->set_requests_waiting(*spec.waiting);
  if (spec.kv_cache_usage) m->set_kv_cache_usage(*spec.kv_cache_usage);
  if (spec.watts) m->set_watts_attributed(*spec.watts);
  v1::Wes* w = m->mutable_wes();
  w->set_tokens_per_s(spec.tokens_per_s);
  if (spec.watts) w->set_watts(*spec.watts);
  w->set_pue(1.0);
  w->set_thermal_state(spec.state);
  w->add_power_scopes(v1::POWER_SCOPE_GPU_BOARD);
  w->set_raw(12345);  // agent-side values: ignored by the aggregator
  w->set_penalized(12345);
  w->set_thermal_penalty(1.0);
  return m;
}

// A frame of `node_id`/`boot_id` with one model (spec) and one GPU; the node WES inputs equal the
// model's. The window is [end - interval, end].
inline v1::Frame MakeFrame(const std::string& node_id, const std::string& boot_id, uint64_t seq,
                           absl::Time window_end, const ModelSpec& spec = {},
                           double interval_s = 2.0) {
  v1::Frame f;
  f.set_node_id(node_id);
  f.set_boot_id(boot_id);
  f.set_seq(seq);
  *f.mutable_window_start() = ToProtoTime(window_end - absl::Seconds(interval_s));
  *f.mutable_window_end() = ToProtoTime(window_end);
  f.set_interval_s(interval_s);
  f.set_pue(1.0);
  f.set_thermal_state(spec.state);
  v1::Device* d = f.add_devices();
  d->set_id("gpu0");
  d->set_kind(v1::DEVICE_KIND_GPU_NVIDIA);
  d->set_name("NVIDIA L4");
  d->set_power_scope(v1::POWER_SCOPE_GPU_BOARD);
  if (spec.watts) {
    d->set_power_w(*spec.watts);
    d->set_energy_j(*spec.watts * interval_s);
  }
  d->set_temperature_c(61);
  d->set_clock_mhz(1800);
  d->set_clock_max_mhz(2040);
  d->set_thermal_state(spec.state);
  v1::EngineStatus* e = f.add_engines();
  e->set_engine_id("vllm-0");
  e->set_kind(v1::ENGINE_KIND_VLLM);
  e->set_endpoint("http://127.0.0.1:8000");
  e->set_available(true);
  AddModel(&f, spec);
  f.mutable_system()->set_swap_in_pages_per_s(0);
  f.mutable_system()->set_swap_out_pages_per_s(0);
  v1::Wes* w = f.mutable_node_wes();
  w->set_tokens_per_s(spec.tokens_per_s);
  if (spec.watts) w->set_watts(*spec.watts);
  w->set_pue(1.0);
  w->set_thermal_state(spec.state);
  w->add_power_scopes(v1::POWER_SCOPE_GPU_BOARD);
  return f;
}

}  // namespace fleetwes::aggregator::testing

#endif  // FLEETWES_TESTS_AGGREGATOR_TEST_FRAMES_H_
