#include "aggregator/store/track_store.h"

#include <exception>
#include <pqxx/binarystring>
#include <pqxx/pqxx>
#include <pqxx/tablewriter>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aggregator/store/pg_status.h"
#include "aggregator/store/sql_text.h"
#include "common/logging.h"

namespace fleetwes::aggregator {

namespace {

// Nodes whose tracks are copied out of the fleet state under one shared lock.
constexpr size_t kNodesPerBatch = 256;

}  // namespace

v1::BoardTrack EncodeTrack(const FleetState::SavedTrack& track) {
  v1::BoardTrack out;
  out.set_rank(track.rank);
  out.set_previous_rank(track.previous_rank.value_or(0));
  for (size_t i = 0; i < track.points.size(); ++i) {
    const FleetState::RankPoint& p = track.points[i];
    if (i == 0) {
      out.set_first_minute(p.minute);
    } else {
      out.add_minute_steps(static_cast<uint32_t>(p.minute - track.points[i - 1].minute));
    }
    out.add_ranks(p.rank);
  }
  if (track.last_rank_event != absl::InfinitePast()) {
    out.set_last_rank_event_unix_s(absl::ToUnixSeconds(track.last_rank_event));
  }
  for (const Baseline::Slot& s : track.baseline.slots()) {
    v1::BaselineSlot* slot = out.add_baseline_slots();
    slot->set_index(s.index);
    for (const Baseline::Bin& b : s.bins) {
      slot->add_bins(b.bin);
      slot->add_counts(b.count);
      slot->add_sums(b.sum);
    }
  }
  return out;
}

absl::StatusOr<FleetState::SavedTrack> DecodeTrack(const v1::BoardTrack& stored) {
  FleetState::SavedTrack t;
  t.rank = stored.rank();
  if (stored.previous_rank() > 0) t.previous_rank = stored.previous_rank();
  if (stored.ranks_size() > static_cast<int>(FleetState::kRankHistoryPoints)) {
    return absl::InvalidArgumentError(absl::StrCat("rank history: ", stored.ranks_size(),
                                                   " points, at most ",
                                                   FleetState::kRankHistoryPoints));
  }
  if (stored.ranks_size() > 0 && stored.minute_steps_size() != stored.ranks_size() - 1) {
    return absl::InvalidArgumentError("rank history: minute steps do not match the ranks");
  }
  // Minutes since the epoch fit in 40 bits for any date a timestamp can hold.
  constexpr int64_t kMaxMinute = int64_t{1} << 40;
  int64_t minute = stored.first_minute();
  if (minute < -kMaxMinute || minute > kMaxMinute) {
    return absl::InvalidArgumentError("rank history: first minute out of range");
  }
  for (int i = 0; i < stored.ranks_size(); ++i) {
    if (i > 0) {
      const uint32_t step = stored.minute_steps(i - 1);
      if (step == 0) return absl::InvalidArgumentError("rank history: minutes not increasing");
      minute += step;
    }
    t.points.push_back(FleetState::RankPoint{minute, stored.ranks(i)});
  }
  if (stored.has_last_rank_event_unix_s()) {
    const int64_t s = stored.last_rank_event_unix_s();
    if (s < -kMaxMinute * 60 || s > kMaxMinute * 60) {
      return absl::InvalidArgumentError("last rank event out of range");
    }
    t.last_rank_event = absl::FromUnixSeconds(s);
  }
  std::vector<Baseline::Slot> slots;
  slots.reserve(stored.baseline_slots_size());
  for (const v1::BaselineSlot& s : stored.baseline_slots()) {
    if (s.counts_size() != s.bins_size() || s.sums_size() != s.bins_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("baseline: slot ", s.index(), ": bins, counts and sums differ in length"));
    }
    Baseline::Slot& slot = slots.emplace_back();
    slot.index = s.index();
    for (int i = 0; i < s.bins_size(); ++i) {
      slot.bins.push_back(Baseline::Bin{s.bins(i), s.counts(i), s.sums(i)});
      slot.count += s.counts(i);
    }
  }
  absl::StatusOr<Baseline> baseline = Baseline::FromSlots(std::move(slots));
  if (!baseline.ok()) return baseline.status();
  t.baseline = *std::move(baseline);
  return t;
}

absl::StatusOr<CheckpointResult> SaveCheckpoint(pqxx::connection& conn, const FleetState& state,
                                                absl::Time now) {
  CheckpointResult result;
  const std::vector<std::string> ids = state.NodeIds();
  const std::string saved_at = sql::Time(now);
  try {
    pqxx::work tx(conn);
    tx.exec0("TRUNCATE board_tracks");
    const std::vector<std::string> columns = {"node_id", "board", "track", "saved_at"};
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // tablewriter is the libpqxx 6 API that takes preformatted COPY text lines.
    pqxx::tablewriter writer(tx, "board_tracks", columns.begin(), columns.end());
#pragma GCC diagnostic pop
    std::string bytes;
    for (size_t begin = 0; begin < ids.size(); begin += kNodesPerBatch) {
      const std::vector<std::string> batch(
          ids.begin() + static_cast<std::ptrdiff_t>(begin),
          ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), begin + kNodesPerBatch)));
      for (const FleetState::SavedTrack& t : state.SaveTracks(batch)) {
        bytes.clear();
        EncodeTrack(t).SerializeToString(&bytes);
        sql::CopyRow row;
        row.Text(t.node_id).Text(t.board).Bytes(bytes).Time(now);
        writer.write_raw_line(row.line());
        ++result.tracks;
        result.bytes += bytes.size();
      }
    }
    writer.complete();
    tx.commit();
  } catch (const std::exception& e) {
    return PgExceptionToStatus("save checkpoint", e);
  }
  return result;
}

absl::StatusOr<RestoreResult> LoadCheckpoint(pqxx::connection& conn, FleetState* state,
                                             absl::Time now) {
  RestoreResult result;
  std::vector<FleetState::SavedTrack> tracks;
  auto log = Logger("store");
  try {
    pqxx::read_transaction tx(conn);
    for (const pqxx::row& row : tx.exec("SELECT node_id, board, track FROM board_tracks")) {
      ++result.rows;
      const std::string node_id = row[0].as<std::string>();
      const pqxx::binarystring bytes(row[2]);
      v1::BoardTrack stored;
      absl::StatusOr<FleetState::SavedTrack> track =
          stored.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))
              ? DecodeTrack(stored)
              : absl::InvalidArgumentError("does not parse");
      if (!track.ok()) {
        ++result.invalid;
        log->warn("checkpointed track of node {} on '{}' skipped: {}", node_id,
                  row[1].as<std::string>(), std::string(track.status().message()));
        continue;
      }
      track->node_id = node_id;
      track->board = row[1].as<std::string>();
      tracks.push_back(*std::move(track));
    }
  } catch (const std::exception& e) {
    return PgExceptionToStatus("load checkpoint", e);
  }
  result.restored = state->RestoreTracks(std::move(tracks), now);
  return result;
}

}  // namespace fleetwes::aggregator
