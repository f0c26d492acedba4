// The events table (docs/schema.md, "events"): validation of an event before it is stored, the
// batched insert and the filtered read behind Fleet.Events. Functions take the caller's
// connection; thread-compatible.
#ifndef FLEETWES_AGGREGATOR_STORE_EVENT_STORE_H_
#define FLEETWES_AGGREGATOR_STORE_EVENT_STORE_H_

#include <cstddef>
#include <pqxx/connection>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleetwes/v1/fleet.pb.h"

namespace fleetwes::aggregator {

inline constexpr size_t kMaxEventMessageLength = 1024;

// OK when `e` can be stored: a valid node id, a model of at most kMaxNameLength bytes, a known
// kind other than UNSPECIFIED, known thermal states, a valid time, a message of at most
// kMaxEventMessageLength bytes; no NUL byte in any text. InvalidArgument naming the field.
absl::Status ValidateEvent(const v1::Event& e);

// Inserts `events` (validated) in one transaction, creating the day partitions they need first.
// Returns how many rows were inserted. Errors: the mapped database error; nothing is inserted.
absl::StatusOr<size_t> InsertEvents(pqxx::connection& conn, const std::vector<v1::Event>& events);

struct EventQuery {
  std::string node_id;               // empty: every node
  std::string model;                 // empty: every model
  std::vector<v1::EventKind> kinds;  // empty: every kind
  absl::Time start;
  absl::Time end;
  size_t limit = 100;
};

// Events with time in [start, end] matching the filters, newest first (detection order breaks
// ties), at most `limit`. Errors: the mapped database error.
absl::StatusOr<std::vector<v1::Event>> QueryEvents(pqxx::connection& conn, const EventQuery& q);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_EVENT_STORE_H_
