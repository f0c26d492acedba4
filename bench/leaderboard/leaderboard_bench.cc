// The leaderboard's costs (docs/benchmarks.md, bench/leaderboard): moving a node in the ranked
// index and reading the top 100 at 100,000 nodes, the full ApplyFrame and Leaderboard calls at
// that size, and a /metrics render with 10,000 nodes. Google Benchmark's table on stderr, then one
// JSON line on stdout with the mean wall time per operation of each case, in nanoseconds.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/fleet/rank_index.h"
#include "aggregator/http/http_server.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/metrics.h"
#include "aggregator/proto_time.h"
#include "nlohmann/json.hpp"

namespace fleetwes::aggregator {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'767'225'600);

std::string NodeId(size_t i) { return absl::StrCat("edge-", i); }

// A frame of one model with realistic values; WES recomputed as ingest does.
std::shared_ptr<const v1::Frame> MakeFrame(const std::string& node, uint64_t seq, absl::Time end,
                                           double tokens_per_s, double watts) {
  v1::Frame f;
  f.set_node_id(node);
  f.set_boot_id("boot");
  f.set_seq(seq);
  *f.mutable_window_start() = ToProtoTime(end - absl::Seconds(2));
  *f.mutable_window_end() = ToProtoTime(end);
  f.set_interval_s(2);
  f.set_pue(1.0);
  f.set_thermal_state(v1::THERMAL_STATE_NORMAL);
  v1::Device* d = f.add_devices();
  d->set_id("gpu0");
  d->set_kind(v1::DEVICE_KIND_GPU_NVIDIA);
  d->set_power_scope(v1::POWER_SCOPE_GPU_BOARD);
  d->set_power_w(watts);
  d->set_energy_j(watts * 2);
  d->set_thermal_state(v1::THERMAL_STATE_NORMAL);
  v1::ModelSample* m = f.add_models();
  m->set_engine_id("vllm-0");
  m->set_engine(v1::ENGINE_KIND_VLLM);
  m->set_model("llama3-8b");
  m->set_decode_tokens_per_s(tokens_per_s);
  m->set_watts_attributed(watts);
  m->mutable_ttft()->set_p95_s(0.25);
  m->set_requests_waiting(1);
  m->set_kv_cache_usage(0.4);
  for (v1::Wes* w : {m->mutable_wes(), f.mutable_node_wes()}) {
    w->set_tokens_per_s(tokens_per_s);
    w->set_watts(watts);
    w->set_pue(1.0);
    w->set_thermal_state(v1::THERMAL_STATE_NORMAL);
    w->add_power_scopes(v1::POWER_SCOPE_GPU_BOARD);
  }
  RecomputeWes(ThermalPenalties{}, &f);
  return std::make_shared<const v1::Frame>(std::move(f));
}

void BM_RankIndexUpdate(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  RankIndex index;
  std::vector<std::string> ids;
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> wes(0.1, 3.0);
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(NodeId(i));
    const double v = wes(rng);
    index.Upsert(ids.back(), v, v);
  }
  size_t i = 0;
  for (auto _ : state) {
    const double v = wes(rng);
    benchmark::DoNotOptimize(index.Upsert(ids[i], v, v * 1.1));
    i = (i + 7919) % n;
  }
}
BENCHMARK(BM_RankIndexUpdate)->Arg(100'000);

void BM_RankIndexTop100(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  RankIndex index;
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> wes(0.1, 3.0);
  for (size_t i = 0; i < n; ++i) {
    const double v = wes(rng);
    index.Upsert(NodeId(i), v, v);
  }
  std::vector<const RankIndex::Entry*> top;
  top.reserve(100);
  for (auto _ : state) {
    top.clear();
    index.ForEach([&](const RankIndex::Entry& e) {
      top.push_back(&e);
      return top.size() < 100;
    });
    benchmark::DoNotOptimize(top.data());
  }
}
BENCHMARK(BM_RankIndexTop100)->Arg(100'000);

// A fleet of n nodes serving one model, each with one frame.
std::unique_ptr<FleetState> MakeFleet(size_t n) {
  auto fleet = std::make_unique<FleetState>();
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> tps(10, 200);
  for (size_t i = 0; i < n; ++i) {
    fleet->ApplyFrame(MakeFrame(NodeId(i), 1, kT0, tps(rng), 100), kT0);
  }
  return fleet;
}

void BM_FleetStateApplyFrame(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::unique_ptr<FleetState> fleet = MakeFleet(n);
  std::mt19937 rng(4);
  std::uniform_real_distribution<double> tps(10, 200);
  // Frames prepared ahead: the cost measured is the fleet state's, not building protobufs.
  std::vector<std::shared_ptr<const v1::Frame>> frames;
  for (size_t i = 0; i < 4096; ++i) {
    frames.push_back(MakeFrame(NodeId(rng() % n), 2 + i, kT0 + absl::Seconds(1), tps(rng), 100));
  }
  size_t i = 0;
  for (auto _ : state) {
    fleet->ApplyFrame(frames[i % frames.size()], kT0 + absl::Seconds(1));
    ++i;
  }
}
BENCHMARK(BM_FleetStateApplyFrame)->Arg(100'000);

void BM_FleetStateLeaderboardTop100(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::unique_ptr<FleetState> fleet = MakeFleet(n);
  for (auto _ : state) {
    v1::LeaderboardResponse r = fleet->Leaderboard("llama3-8b", kT0 + absl::Seconds(1), 100);
    benchmark::DoNotOptimize(r.entries_size());
  }
}
BENCHMARK(BM_FleetStateLeaderboardTop100)->Arg(100'000);

void BM_MetricsScrape(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::unique_ptr<FleetState> fleet = MakeFleet(n);
  AggregatorMetrics metrics;
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string body = RenderMetrics(*metrics.registry(), fleet->Snapshot(),
                                           kT0 + absl::Seconds(1), StalenessPolicy{});
    bytes = body.size();
    benchmark::DoNotOptimize(body.data());
  }
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_MetricsScrape)->Arg(10'000)->Unit(benchmark::kMillisecond);

// The console table on stderr; mean nanoseconds per operation kept for the JSON line.
class Reporter : public benchmark::ConsoleReporter {
 public:
  Reporter() { SetOutputStream(&std::cerr); }
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      // With --benchmark_repetitions, the mean of the repetitions.
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "mean") continue;
      if (r.run_type == Run::RT_Iteration && r.iterations == 0) continue;
      ns_[r.run_name.str()] =
          r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit) * 1e9;
    }
  }
  const std::map<std::string, double>& ns() const { return ns_; }

 private:
  std::map<std::string, double> ns_;
};

}  // namespace
}  // namespace fleetwes::aggregator

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fleetwes::aggregator::Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  nlohmann::json out;
  for (const auto& [name, ns] : reporter.ns()) {
    std::string key = name.substr(3);  // without "BM_"
    for (char& c : key) {
      if (c == '/') c = '_';
    }
    out[key + "_ns"] = ns;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
