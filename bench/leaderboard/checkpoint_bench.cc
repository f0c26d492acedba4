// The checkpoint of rank histories and baselines (aggregator/store/track_store.h) in process: a
// fleet of 10,000 nodes on the fleet leaderboard and two models' (30,000 tracks), each track full
// (72 one-minute rank points, 24 hourly baseline slots of 4 bins). BM_CheckpointEncode copies the
// tracks out of the fleet state in batches and serializes them, as SaveCheckpoint does before
// COPY; BM_CheckpointRestore parses, validates and restores them, as LoadCheckpoint does after
// reading the rows. Reported per checkpoint, with the serialized size as counters. The database
// side (COPY of the rows, reading them back) is in bench/restart.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aggregator/fleet/fleet_state.h"
#include "aggregator/ingest/recompute_wes.h"
#include "aggregator/proto_time.h"
#include "aggregator/store/track_store.h"

namespace fleetwes::aggregator {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'767'225'600) + absl::Hours(30);
constexpr char const* kModels[] = {"llama3-8b", "qwen2-7b"};

std::shared_ptr<const v1::Frame> Frame(size_t i) {
  v1::Frame f;
  f.set_node_id(absl::StrCat("edge-", i));
  f.set_boot_id("boot");
  f.set_seq(1);
  *f.mutable_window_start() = ToProtoTime(kNow - absl::Seconds(2));
  *f.mutable_window_end() = ToProtoTime(kNow);
  f.set_interval_s(2);
  f.set_pue(1.0);
  f.set_thermal_state(v1::THERMAL_STATE_NORMAL);
  const double tps = 10 + static_cast<double>(i % 190);
  for (const char* model : kModels) {
    v1::ModelSample* m = f.add_models();
    m->set_engine_id("vllm-0");
    m->set_engine(v1::ENGINE_KIND_VLLM);
    m->set_model(model);
    m->set_decode_tokens_per_s(tps);
    m->set_watts_attributed(50);
    m->mutable_wes()->set_tokens_per_s(tps);
    m->mutable_wes()->set_watts(50);
    m->mutable_wes()->set_pue(1.0);
  }
  f.mutable_node_wes()->set_tokens_per_s(2 * tps);
  f.mutable_node_wes()->set_watts(100);
  f.mutable_node_wes()->set_pue(1.0);
  RecomputeWes(ThermalPenalties{}, &f);
  return std::make_shared<const v1::Frame>(std::move(f));
}

// A full track: an hour and more of rank points, a day of baseline slots.
FleetState::SavedTrack FullTrack(const std::string& node, const std::string& board, size_t i) {
  FleetState::SavedTrack t;
  t.node_id = node;
  t.board = board;
  t.rank = static_cast<uint32_t>(1 + i % 5000);
  t.previous_rank = t.rank + 1;
  const int64_t now_minute = absl::ToUnixSeconds(kNow) / 60;
  for (int64_t m = now_minute - 71; m <= now_minute; ++m) {
    t.points.push_back({m, static_cast<uint32_t>(t.rank + (m % 7))});
  }
  t.last_rank_event = kNow - absl::Minutes(3);
  BaselineOptions o;
  for (int h = 0; h < 24; ++h) {
    for (int k = 0; k < 4; ++k) {
      t.baseline.Add(kNow - absl::Hours(23 - h),
                     1.0 + 0.011 * k + 0.001 * static_cast<double>(i % 50), o);
    }
  }
  return t;
}

std::unique_ptr<FleetState> FleetWithTracks(size_t nodes) {
  auto fleet = std::make_unique<FleetState>();
  std::vector<FleetState::SavedTrack> tracks;
  for (size_t i = 0; i < nodes; ++i) {
    fleet->ApplyFrame(Frame(i), kNow);
    const std::string node = absl::StrCat("edge-", i);
    tracks.push_back(FullTrack(node, "", i));
    for (const char* model : kModels) tracks.push_back(FullTrack(node, model, i));
  }
  fleet->RestoreTracks(std::move(tracks), kNow);
  return fleet;
}

struct Row {
  std::string node_id;
  std::string board;
  std::string track;
};

std::vector<Row> Encode(const FleetState& fleet, size_t* bytes) {
  std::vector<Row> out;
  const std::vector<std::string> ids = fleet.NodeIds();
  for (size_t begin = 0; begin < ids.size(); begin += 256) {
    const std::vector<std::string> batch(
        ids.begin() + static_cast<std::ptrdiff_t>(begin),
        ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), begin + 256)));
    for (const FleetState::SavedTrack& t : fleet.SaveTracks(batch)) {
      out.push_back(Row{t.node_id, t.board, EncodeTrack(t).SerializeAsString()});
      *bytes += out.back().track.size();
    }
  }
  return out;
}

void BM_CheckpointEncode(benchmark::State& state) {
  std::unique_ptr<FleetState> fleet = FleetWithTracks(static_cast<size_t>(state.range(0)));
  size_t bytes = 0;
  size_t tracks = 0;
  for (auto _ : state) {
    bytes = 0;
    tracks = Encode(*fleet, &bytes).size();
  }
  state.counters["tracks"] = static_cast<double>(tracks);
  state.counters["bytes_per_track"] = static_cast<double>(bytes) / static_cast<double>(tracks);
}
BENCHMARK(BM_CheckpointEncode)->Arg(10'000)->Unit(benchmark::kMillisecond);

void BM_CheckpointRestore(benchmark::State& state) {
  const size_t nodes = static_cast<size_t>(state.range(0));
  std::unique_ptr<FleetState> fleet = FleetWithTracks(nodes);
  size_t bytes = 0;
  const std::vector<Row> rows = Encode(*fleet, &bytes);
  // The boards the tracks go back to: the nodes rebuilt from their frames.
  FleetState restarted;
  for (size_t i = 0; i < nodes; ++i) restarted.ApplyFrame(Frame(i), kNow);
  size_t restored = 0;
  for (auto _ : state) {
    std::vector<FleetState::SavedTrack> tracks;
    tracks.reserve(rows.size());
    for (const Row& row : rows) {
      v1::BoardTrack stored;
      stored.ParseFromString(row.track);
      absl::StatusOr<FleetState::SavedTrack> t = DecodeTrack(stored);
      if (!t.ok()) continue;
      t->node_id = row.node_id;
      t->board = row.board;
      tracks.push_back(*std::move(t));
    }
    restored = restarted.RestoreTracks(std::move(tracks), kNow);
  }
  state.counters["restored"] = static_cast<double>(restored);
}
BENCHMARK(BM_CheckpointRestore)->Arg(10'000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fleetwes::aggregator
