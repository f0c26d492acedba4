// Checkpoints of the fleet state's rank histories and baselines in PostgreSQL (table
// board_tracks, docs/schema.md), so that a restarted aggregator serves the same previous ranks,
// ranks an hour ago and baseline losses as before. Frames rebuild everything else.
//
// A checkpoint replaces the table's contents in one transaction (TRUNCATE, then COPY of one row
// per node and leaderboard): the table holds exactly the last checkpoint and never grows beyond
// the fleet. Tracks are copied out of the fleet state a few hundred nodes at a time, each batch
// under its shared lock only, so ingest is not held up by a large fleet. Loading validates every
// row as outside data (a row that does not parse or breaks baseline.h's invariants is skipped and
// counted) and hands the rest to FleetState::RestoreTracks. Stateless functions; thread-safe as
// far as the connection passed is used by one thread.
#ifndef FLEETWES_AGGREGATOR_STORE_TRACK_STORE_H_
#define FLEETWES_AGGREGATOR_STORE_TRACK_STORE_H_

#include <cstddef>
#include <pqxx/connection>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aggregator/fleet/fleet_state.h"
#include "fleetwes/v1/checkpoint.pb.h"

namespace fleetwes::aggregator {

// A saved track as stored, and back. Decode validates: ranks and minutes as the encoder writes
// them (steps > 0, one rank per point, at most FleetState::kRankHistoryPoints points) and the
// baseline (Baseline::FromSlots); InvalidArgument naming the problem otherwise.
v1::BoardTrack EncodeTrack(const FleetState::SavedTrack& track);
absl::StatusOr<FleetState::SavedTrack> DecodeTrack(const v1::BoardTrack& stored);

struct CheckpointResult {
  size_t tracks = 0;  // rows written
  size_t bytes = 0;   // serialized tracks
};

// Writes every track of `state` as the new checkpoint, stamped `now`.
absl::StatusOr<CheckpointResult> SaveCheckpoint(pqxx::connection& conn, const FleetState& state,
                                                absl::Time now);

struct RestoreResult {
  size_t rows = 0;      // rows read
  size_t restored = 0;  // tracks put back (rows of nodes or leaderboards unknown now are not)
  size_t invalid = 0;   // rows skipped as malformed
};

// Reads the checkpoint into `state` (after its nodes are restored).
absl::StatusOr<RestoreResult> LoadCheckpoint(pqxx::connection& conn, FleetState* state,
                                             absl::Time now);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_TRACK_STORE_H_
