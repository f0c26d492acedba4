#include "agent/sampler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/attribution.h"
#include "agent/collectors/engine_process.h"
#include "agent/window.h"
#include "common/logging.h"
#include "common/version.h"

namespace fleetwes::agent {
namespace internal {

// Owns one engine collector and the thread its reads run on, so a hung engine blocks only its
// own thread. Thread-safe.
class EngineWorker {
 public:
  explicit EngineWorker(std::unique_ptr<EngineCollector> collector)
      : collector_(std::move(collector)), thread_([this] { Run(); }) {}

  ~EngineWorker() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  const EngineCollector& collector() const { return *collector_; }

  // Starts a read; false when the previous one is still running.
  bool Request() {
    absl::MutexLock lock(&mu_);
    if (busy_) return false;
    busy_ = true;
    requested_ = true;
    result_.reset();
    return true;
  }

  // The reading of the read started by Request(), or nullopt if it is not done by `deadline`
  // (real time; the read then finishes in the background and its result is dropped).
  std::optional<EngineReading> Await(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(
                              +[](bool* busy) { return !*busy; }, &busy_),
                          deadline);
    if (busy_) return std::nullopt;
    std::optional<EngineReading> r = std::move(result_);
    result_.reset();
    return r;
  }

 private:
  void Run() {
    mu_.Lock();
    while (true) {
      mu_.Await(absl::Condition(this, &EngineWorker::HasWork));
      if (stop_) break;
      requested_ = false;
      mu_.Unlock();
      EngineReading reading = collector_->Read();
      mu_.Lock();
      result_ = std::move(reading);
      busy_ = false;
    }
    mu_.Unlock();
  }

  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return requested_ || stop_; }

  std::unique_ptr<EngineCollector> collector_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<EngineReading> result_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace internal

namespace {

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* ts) {
  const int64_t ns = absl::ToUnixNanos(t);
  int64_t s = ns / 1'000'000'000;
  int64_t n = ns % 1'000'000'000;
  if (n < 0) {
    n += 1'000'000'000;
    --s;
  }
  ts->set_seconds(s);
  ts->set_nanos(static_cast<int32_t>(n));
}

const ModelReading* FindModel(const std::optional<EngineReading>& r, const ModelReading& cur) {
  if (!r.has_value()) return nullptr;
  for (const ModelReading& m : r->models) {
    if (m.model == cur.model && m.synthetic == cur.synthetic) return &m;
  }
  if (cur.synthetic) return nullptr;  // synthetic figures are compared with their own kind only
  // A single-model engine that now serves another model: compare against it so the change is
  // reported as a restart.
  if (r->models.size() == 1) return &r->models[0];
  return nullptr;
}

void AddScope(v1::PowerScope scope, std::vector<v1::PowerScope>* scopes) {
  if (std::find(scopes->begin(), scopes->end(), scope) == scopes->end()) scopes->push_back(scope);
}

}  // namespace

std::string NewBootId() {
  absl::BitGen gen;
  uint64_t hi = absl::Uniform<uint64_t>(gen);
  uint64_t lo = absl::Uniform<uint64_t>(gen);
  hi = (hi & ~uint64_t{0xF000}) | uint64_t{0x4000};            // version 4
  lo = (lo & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // RFC 4122 variant
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32, (hi >> 16) & 0xFFFF, hi & 0xFFFF,
                         lo >> 48, lo & 0xFFFFFFFFFFFFULL);
}

Sampler::Sampler(SamplerOptions options, std::vector<std::unique_ptr<EngineCollector>> engines,
                 std::unique_ptr<HardwareCollector> hardware, Clock* clock)
    : options_(std::move(options)), hardware_(std::move(hardware)), clock_(clock) {
  absl::MutexLock lock(&mu_);
  for (auto& e : engines) AddWorker(std::move(e));
}

void Sampler::AddWorker(std::unique_ptr<EngineCollector> engine) {
  read_counters_.push_back({.engine_id = engine->engine_id()});
  v1::EngineStatus& s = engine_status_.emplace_back();
  s.set_engine_id(engine->engine_id());
  s.set_kind(engine->kind());
  s.set_endpoint(engine->endpoint());
  EngineState state;
  state.worker = std::make_unique<internal::EngineWorker>(std::move(engine));
  engines_.push_back(std::move(state));
}

Sampler::~Sampler() = default;

uint64_t Sampler::engine_reads_given_up() const {
  absl::MutexLock lock(&mu_);
  return reads_given_up_;
}

std::vector<EngineReadCounters> Sampler::engine_read_counters() const {
  absl::MutexLock lock(&mu_);
  return read_counters_;
}

void Sampler::AddEngine(std::unique_ptr<EngineCollector> engine) {
  absl::MutexLock lock(&mu_);
  added_.push_back(std::move(engine));
}

std::optional<v1::Frame> Sampler::Tick(std::optional<absl::Duration> cadence) {
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&mu_);
    for (auto& e : added_) AddWorker(std::move(e));
    added_.clear();
  }

  // Engines read concurrently on their own threads while the hardware is read here.
  std::vector<bool> started(engines_.size());
  for (size_t i = 0; i < engines_.size(); ++i) started[i] = engines_[i].worker->Request();
  // Deadlines for socket waits are real time (see EngineWorker::Await).
  const absl::Time real_start = absl::Now();
  HardwareReading hw = hardware_ != nullptr ? hardware_->Read() : HardwareReading();

  std::vector<EngineReading> readings(engines_.size());
  std::vector<bool> gave_up(engines_.size());
  uint64_t given_up = 0;
  for (size_t i = 0; i < engines_.size(); ++i) {
    const EngineCollector& c = engines_[i].worker->collector();
    if (!started[i]) {
      readings[i].unavailable_reason = absl::StrCat(
          "previous read still running (no answer within ", absl::FormatDuration(c.timeout()), ")");
      ++given_up;
      gave_up[i] = true;
      continue;
    }
    std::optional<EngineReading> r =
        engines_[i].worker->Await(real_start + c.timeout() + options_.engine_grace);
    if (!r.has_value()) {
      readings[i].unavailable_reason =
          absl::StrCat("timed out after ", absl::FormatDuration(c.timeout()));
      ++given_up;
      gave_up[i] = true;
      continue;
    }
    readings[i] = *std::move(r);
  }

  std::vector<bool> unavailable(engines_.size());
  for (size_t i = 0; i < engines_.size(); ++i) unavailable[i] = !readings[i].available;

  std::optional<v1::Frame> frame;
  if (last_tick_.has_value() && now > *last_tick_) {
    frame = BuildFrame(*last_tick_, now, readings, hw);
    if (cadence.has_value()) frame->set_interval_s(absl::ToDoubleSeconds(*cadence));
  } else if (last_tick_.has_value()) {
    Logger("sampler")->warn("node {}: clock did not advance ({} -> {}); restarting baselines",
                            options_.node_id, absl::FormatTime(*last_tick_), absl::FormatTime(now));
  }

  // Baselines for the next window: only readings of this tick. Availability changes are logged
  // once each.
  for (size_t i = 0; i < engines_.size(); ++i) {
    EngineState& e = engines_[i];
    const std::string& id = e.worker->collector().engine_id();
    if (!readings[i].available && readings[i].unavailable_reason != e.down_reason) {
      Logger("sampler")->warn("node {}: engine {} unavailable: {}", options_.node_id, id,
                              readings[i].unavailable_reason);
      e.down_reason = readings[i].unavailable_reason;
    } else if (readings[i].available && !e.down_reason.empty()) {
      Logger("sampler")->info("node {}: engine {} available again", options_.node_id, id);
      e.down_reason.clear();
    }
    if (readings[i].available) {
      engines_[i].baseline = std::move(readings[i]);
    } else {
      engines_[i].baseline.reset();
    }
  }
  {
    absl::MutexLock lock(&mu_);
    reads_given_up_ += given_up;
    for (size_t i = 0; i < engines_.size() && i < read_counters_.size(); ++i) {
      if (unavailable[i]) ++read_counters_[i].failed;
      if (gave_up[i]) ++read_counters_[i].given_up;
    }
    inventory_.clear();
    for (const DeviceReading& d : hw.devices) {
      v1::Device& inv = inventory_.emplace_back();
      inv.set_id(d.id);
      inv.set_kind(d.kind);
      inv.set_name(d.name);
      inv.set_power_scope(d.power_scope);
    }
    if (frame.has_value()) {
      for (size_t i = 0;
           i < engine_status_.size() && i < static_cast<size_t>(frame->engines_size()); ++i) {
        engine_status_[i] = frame->engines(static_cast<int>(i));
      }
    }
  }
  hw_baseline_ = std::move(hw);
  last_tick_ = now;
  return frame;
}

v1::Frame Sampler::BuildFrame(absl::Time start, absl::Time end,
                              const std::vector<EngineReading>& now, const HardwareReading& hw) {
  const absl::Duration dt = end - start;
  const double seconds = absl::ToDoubleSeconds(dt);
  v1::Frame f;
  f.set_node_id(options_.node_id);
  f.set_boot_id(options_.boot_id);
  f.set_seq(++seq_);
  SetTimestamp(start, f.mutable_window_start());
  SetTimestamp(end, f.mutable_window_end());
  f.set_interval_s(absl::ToDoubleSeconds(options_.interval));
  f.set_pue(options_.pue);

  HardwareWindow hwin =
      ComputeHardwareWindow(hw_baseline_.has_value() ? &*hw_baseline_ : nullptr, hw, dt);
  v1::ThermalState state = v1::THERMAL_STATE_UNSPECIFIED;
  double energy_j = 0;
  bool have_energy = false;
  std::vector<v1::PowerScope> scopes;
  for (v1::Device& d : hwin.devices) {
    state = WorstThermalState(state, d.thermal_state());
    if (d.has_energy_j()) {
      energy_j += d.energy_j();
      have_energy = true;
      AddScope(d.power_scope(), &scopes);
    }
    *f.add_devices() = std::move(d);
  }
  *f.mutable_system() = std::move(hwin.system);
  f.set_thermal_state(state);
  std::optional<double> watts;
  if (have_energy) watts = energy_j / seconds;

  // Engines and their models; model_engine[k] is the engine of models(k).
  std::vector<size_t> model_engine;
  for (size_t i = 0; i < engines_.size(); ++i) {
    const EngineCollector& c = engines_[i].worker->collector();
    const EngineReading& r = now[i];
    v1::EngineStatus* s = f.add_engines();
    s->set_engine_id(c.engine_id());
    s->set_kind(c.kind());
    s->set_endpoint(c.endpoint());
    s->set_available(r.available);
    if (!r.available) s->set_unavailable_reason(r.unavailable_reason);
    s->set_version(r.version);
    if (!r.available) continue;
    for (const ModelReading& m : r.models) {
      *f.add_models() =
          ModelWindow(c.engine_id(), c.kind(), FindModel(engines_[i].baseline, m), m, dt);
      model_engine.push_back(i);
    }
  }

  // Energy attribution (agent/attribution.h): models are placed on GPUs by the GPUs' process
  // lists when the engine's processes are known, else by what they report.
  bool gpu_lists = false;
  bool every_gpu_lists = true;
  for (const DeviceReading& d : hw.devices) {
    if (d.kind != v1::DEVICE_KIND_GPU_NVIDIA && d.kind != v1::DEVICE_KIND_GPU_AMD) continue;
    gpu_lists = gpu_lists || d.processes.has_value();
    every_gpu_lists = every_gpu_lists && d.processes.has_value();
  }
  std::vector<const v1::ModelSample*> models;
  std::vector<ModelPlacement> placements;
  for (int k = 0; k < f.models_size(); ++k) {
    models.push_back(&f.models(k));
    ModelPlacement& p = placements.emplace_back();
    if (!gpu_lists || !ModelActive(f.models(k))) continue;
    const size_t e = model_engine[static_cast<size_t>(k)];
    const std::optional<std::set<int64_t>>& pids = EnginePids(&engines_[e], end);
    if (!pids.has_value()) continue;
    const bool single_model = now[e].models.size() == 1;
    for (const DeviceReading& d : hw.devices) {
      if (!d.processes.has_value()) continue;
      bool present = false;
      bool bytes_known = true;
      uint64_t bytes = 0;
      for (const GpuProcessReading& proc : *d.processes) {
        if (pids->count(proc.pid) == 0) continue;
        present = true;
        if (proc.used_bytes.has_value()) {
          bytes += *proc.used_bytes;
        } else {
          bytes_known = false;
        }
      }
      if (!present) continue;
      p.gpu_memory[d.id] =
          single_model && bytes_known ? std::optional<uint64_t>(bytes) : std::nullopt;
    }
    p.no_gpu_memory = p.gpu_memory.empty() && every_gpu_lists;
  }
  std::vector<std::optional<ModelEnergy>> energy =
      AttributeEnergy({f.devices().begin(), f.devices().end()}, seconds, models, placements);

  std::optional<double> node_tps;
  for (int k = 0; k < f.models_size(); ++k) {
    v1::ModelSample& m = *f.mutable_models(k);
    const std::optional<ModelEnergy>& share = energy[static_cast<size_t>(k)];
    WesInputs in;
    if (m.has_decode_tokens_per_s()) {
      in.tokens_per_s = m.decode_tokens_per_s();
      node_tps = node_tps.value_or(0) + m.decode_tokens_per_s();
    }
    in.pue = options_.pue;
    in.thermal_state = state;
    in.power_scopes = scopes;
    if (share.has_value()) {
      m.set_watts_attributed(share->watts);
      in.watts = share->watts;
      in.power_scopes = share->scopes;
      if (share->thermal_state != v1::THERMAL_STATE_UNSPECIFIED) {
        in.thermal_state = share->thermal_state;
      }
    }
    *m.mutable_wes() = ComputeWes(in, options_.penalties);
  }
  WesInputs node;
  node.tokens_per_s = node_tps;
  node.watts = watts;
  node.pue = options_.pue;
  node.thermal_state = state;
  node.power_scopes = scopes;
  *f.mutable_node_wes() = ComputeWes(node, options_.penalties);
  return f;
}

const std::optional<std::set<int64_t>>& Sampler::EnginePids(EngineState* e, absl::Time now) {
  if (options_.proc_root.empty()) return e->pids;
  if (e->pids_checked.has_value() && now >= *e->pids_checked &&
      now - *e->pids_checked < options_.process_refresh) {
    return e->pids;
  }
  const bool first = !e->pids_checked.has_value();
  e->pids_checked = now;
  const EngineCollector& c = e->worker->collector();
  absl::StatusOr<int> port = EnginePort(c.endpoint());
  absl::StatusOr<std::set<int64_t>> pids =
      port.ok() ? EngineProcesses(options_.proc_root, *port) : port.status();
  if (pids.ok()) {
    e->pids = *std::move(pids);
  } else {
    if (e->pids.has_value() || first) {
      Logger("sampler")->info("node {}: engine {}: processes unknown ({}); models placed by VRAM",
                              options_.node_id, c.engine_id(),
                              std::string(pids.status().message()));
    }
    e->pids.reset();
  }
  return e->pids;
}

v1::Hello Sampler::Hello() const {
  v1::Hello h;
  h.set_node_id(options_.node_id);
  h.set_boot_id(options_.boot_id);
  h.set_agent_version(std::string(Version()));
  for (const auto& [k, v] : options_.labels) (*h.mutable_labels())[k] = v;
  h.set_interval_s(absl::ToDoubleSeconds(options_.interval));
  absl::MutexLock lock(&mu_);
  for (const v1::Device& d : inventory_) *h.add_devices() = d;
  for (const v1::EngineStatus& e : engine_status_) *h.add_engines() = e;
  return h;
}

Cadence::Cadence(absl::Duration base, absl::Duration max)
    : base_(std::max(base, kMinInterval)), max_(std::max(max, base_)), current_(base_) {}

absl::Duration Cadence::Next(const v1::Frame& frame) {
  double tps = 0;
  bool busy = false;
  for (const v1::ModelSample& m : frame.models()) {
    if (m.has_decode_tokens_per_s() && std::isfinite(m.decode_tokens_per_s())) {
      tps += m.decode_tokens_per_s();
    }
    busy = busy || m.decode_tokens() > 0 || m.requests_running() > 0 || m.requests_waiting() > 0;
  }
  busy = busy || tps > 0;
  std::map<std::string, v1::ThermalState> states;
  bool thermal_change = false;
  for (const v1::Device& d : frame.devices()) {
    states[d.id()] = d.thermal_state();
    auto it = previous_states_.find(d.id());
    thermal_change =
        thermal_change || (it != previous_states_.end() && it->second != d.thermal_state());
  }
  const double scale = std::max(tps, previous_tps_);
  const bool tps_change =
      have_previous_ && scale > 0 && std::abs(tps - previous_tps_) > kSharpChange * scale;
  have_previous_ = true;
  previous_tps_ = tps;
  previous_states_ = std::move(states);

  if (thermal_change || tps_change) {
    calm_ = 0;
    current_ = std::max(kMinInterval, std::min(current_, base_) / 2);
  } else if (!busy) {
    calm_ = 0;
    current_ = current_ < base_ ? base_ : std::min(max_, current_ * 2);
  } else if (current_ > base_) {
    current_ = base_;
  } else if (current_ < base_ && ++calm_ >= kCalmWindows) {
    calm_ = 0;
    current_ = base_;
  }
  return current_;
}

SamplerLoop::SamplerLoop(Sampler* sampler, Clock* clock, absl::Duration interval, FrameSink sink,
                         absl::Duration max_interval)
    : sampler_(sampler), clock_(clock), cadence_(interval, max_interval), sink_(std::move(sink)) {}

SamplerLoop::~SamplerLoop() { Stop(); }

void SamplerLoop::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void SamplerLoop::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void SamplerLoop::Run() {
  absl::Time next = clock_->Now();
  absl::Duration interval = cadence_.current();  // the cadence of the window ending next
  while (!stop_.HasBeenNotified()) {
    std::optional<v1::Frame> frame = sampler_->Tick(interval);
    if (frame.has_value()) {
      absl::Duration before = interval;
      interval = cadence_.Next(*frame);
      if (interval != before) {
        Logger("sampler")->debug("node {}: cadence {} -> {} after seq {}",
                                 sampler_->options().node_id, absl::FormatDuration(before),
                                 absl::FormatDuration(interval), frame->seq());
      }
      sink_(*std::move(frame));
    }
    next += interval;
    const absl::Time now = clock_->Now();
    if (next <= now) {
      int64_t missed = (now - next) / interval + 1;
      Logger("sampler")->warn("node {}: tick overran; skipping {} tick(s)",
                              sampler_->options().node_id, missed);
      next += interval * missed;
    }
    if (clock_->WaitUntil(next, &stop_)) break;
  }
}

}  // namespace fleetwes::agent
