#include "agent/sampler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
  std::vector<v1::EngineStatus> status;
  for (auto& e : engines) {
    v1::EngineStatus& s = status.emplace_back();
    s.set_engine_id(e->engine_id());
    s.set_kind(e->kind());
    s.set_endpoint(e->endpoint());
    EngineState state;
    state.worker = std::make_unique<internal::EngineWorker>(std::move(e));
    engines_.push_back(std::move(state));
  }
  absl::MutexLock lock(&mu_);
  engine_status_ = std::move(status);
}

Sampler::~Sampler() = default;

uint64_t Sampler::engine_reads_given_up() const {
  absl::MutexLock lock(&mu_);
  return reads_given_up_;
}

std::optional<v1::Frame> Sampler::Tick() {
  const absl::Time now = clock_->Now();

  // Engines read concurrently on their own threads while the hardware is read here.
  std::vector<bool> started(engines_.size());
  for (size_t i = 0; i < engines_.size(); ++i) started[i] = engines_[i].worker->Request();
  // Deadlines for socket waits are real time (see EngineWorker::Await).
  const absl::Time real_start = absl::Now();
  HardwareReading hw = hardware_ != nullptr ? hardware_->Read() : HardwareReading();

  std::vector<EngineReading> readings(engines_.size());
  uint64_t given_up = 0;
  for (size_t i = 0; i < engines_.size(); ++i) {
    const EngineCollector& c = engines_[i].worker->collector();
    if (!started[i]) {
      readings[i].unavailable_reason = absl::StrCat(
          "previous read still running (no answer within ", absl::FormatDuration(c.timeout()), ")");
      ++given_up;
      continue;
    }
    std::optional<EngineReading> r =
        engines_[i].worker->Await(real_start + c.timeout() + options_.engine_grace);
    if (!r.has_value()) {
      readings[i].unavailable_reason =
          absl::StrCat("timed out after ", absl::FormatDuration(c.timeout()));
      ++given_up;
      continue;
    }
    readings[i] = *std::move(r);
  }

  std::optional<v1::Frame> frame;
  if (last_tick_.has_value() && now > *last_tick_) {
    frame = BuildFrame(*last_tick_, now, readings, hw);
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

  // Engines and their models.
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
    }
  }

  // Energy attribution: the window's energy goes to the models that generated tokens, by VRAM
  // share when every one of them reports VRAM, else equally (docs/wes.md).
  std::vector<v1::ModelSample*> generating;
  for (v1::ModelSample& m : *f.mutable_models()) {
    if (m.has_decode_tokens_per_s() && m.decode_tokens_per_s() > 0) generating.push_back(&m);
  }
  if (watts.has_value() && !generating.empty()) {
    double vram_total = 0;
    bool all_vram = true;
    for (const v1::ModelSample* m : generating) {
      all_vram = all_vram && m->has_vram_bytes() && m->vram_bytes() > 0;
      if (m->has_vram_bytes()) vram_total += static_cast<double>(m->vram_bytes());
    }
    for (v1::ModelSample* m : generating) {
      double share = all_vram && vram_total > 0 ? static_cast<double>(m->vram_bytes()) / vram_total
                                                : 1.0 / static_cast<double>(generating.size());
      m->set_watts_attributed(*watts * share);
    }
  }

  std::optional<double> node_tps;
  for (v1::ModelSample& m : *f.mutable_models()) {
    WesInputs in;
    if (m.has_decode_tokens_per_s()) {
      in.tokens_per_s = m.decode_tokens_per_s();
      node_tps = node_tps.value_or(0) + m.decode_tokens_per_s();
    }
    if (m.has_watts_attributed()) in.watts = m.watts_attributed();
    in.pue = options_.pue;
    in.thermal_state = state;
    in.power_scopes = scopes;
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

SamplerLoop::SamplerLoop(Sampler* sampler, Clock* clock, absl::Duration interval, FrameSink sink)
    : sampler_(sampler), clock_(clock), interval_(interval), sink_(std::move(sink)) {}

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
  while (!stop_.HasBeenNotified()) {
    std::optional<v1::Frame> frame = sampler_->Tick();
    if (frame.has_value()) sink_(*std::move(frame));
    next += interval_;
    const absl::Time now = clock_->Now();
    if (next <= now) {
      int64_t missed = (now - next) / interval_ + 1;
      Logger("sampler")->warn("node {}: tick overran; skipping {} tick(s)",
                              sampler_->options().node_id, missed);
      next += interval_ * missed;
    }
    if (clock_->WaitUntil(next, &stop_)) break;
  }
}

}  // namespace fleetwes::agent
