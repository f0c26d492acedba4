// Maps libpqxx exceptions to absl::Status, once, at the store adapter's edge:
//   - broken connection, connection-class SQLSTATE (08*), server shutting down (57P0*): Unavailable
//   - insufficient resources (53*: disk full, out of memory): ResourceExhausted
//   - statement timeout (57014): DeadlineExceeded
//   - commit outcome unknown (in_doubt_error): Unknown
//   - unique violation: AlreadyExists
//   - serialization failure, deadlock: Aborted
//   - insufficient privilege: PermissionDenied
//   - bad data, other constraint violations: InvalidArgument
//   - anything else: Internal
// Thread-safe (pure).
#ifndef FLEETWES_AGGREGATOR_STORE_PG_STATUS_H_
#define FLEETWES_AGGREGATOR_STORE_PG_STATUS_H_

#include <exception>
#include <memory>
#include <pqxx/connection>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fleetwes::aggregator {

// `what` names the operation ("write batch"); the message is "<what>: <exception text>".
absl::Status PgExceptionToStatus(absl::string_view what, const std::exception& e);

// Makes *conn an open connection to `url`: keeps a live one, replaces one the server closed while
// it was idle (restart, idle timeout), connects when there is none. Unavailable (or the mapped
// error) when the database cannot be reached; *conn is then null.
absl::Status EnsurePgConnection(std::unique_ptr<pqxx::connection>* conn, const std::string& url);

// True for store errors worth retrying the same work after a wait: the database is unreachable,
// overloaded, timed out, aborted the transaction, or the commit's outcome is unknown (retrying is
// safe because frames are deduplicated on their key).
inline bool IsTransientStoreError(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_PG_STATUS_H_
