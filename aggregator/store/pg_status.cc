#include "aggregator/store/pg_status.h"

#include <pqxx/except>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fleetwes::aggregator {

absl::Status PgExceptionToStatus(absl::string_view what, const std::exception& e) {
  absl::string_view text = absl::StripTrailingAsciiWhitespace(e.what());
  const std::string message = absl::StrCat(what, ": ", text);
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return absl::UnknownError(message);
  }
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return absl::UnavailableError(message);
  }
  if (dynamic_cast<const pqxx::unique_violation*>(&e) != nullptr) {
    return absl::AlreadyExistsError(message);
  }
  if (dynamic_cast<const pqxx::insufficient_privilege*>(&e) != nullptr) {
    return absl::PermissionDeniedError(message);
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql != nullptr) {
    const std::string& state = sql->sqlstate();
    if (absl::StartsWith(state, "08") || absl::StartsWith(state, "57P")) {
      return absl::UnavailableError(message);
    }
    if (absl::StartsWith(state, "53")) return absl::ResourceExhaustedError(message);
    if (state == "57014") return absl::DeadlineExceededError(message);
    if (state == "40001" || state == "40P01") return absl::AbortedError(message);
    if (absl::StartsWith(state, "22") || absl::StartsWith(state, "23")) {
      return absl::InvalidArgumentError(message);
    }
    return absl::InternalError(message);
  }
  return absl::InternalError(message);
}

absl::Status EnsurePgConnection(std::unique_ptr<pqxx::connection>* conn, const std::string& url) {
  if (*conn != nullptr) {
    // Reading pending input notices a connection the server closed while it was idle.
    try {
      (*conn)->get_notifs();
    } catch (const std::exception&) {
      conn->reset();
    }
  }
  if (*conn != nullptr && (*conn)->is_open()) return absl::OkStatus();
  conn->reset();
  try {
    *conn = std::make_unique<pqxx::connection>(url);
  } catch (const std::exception& e) {
    return PgExceptionToStatus("connect", e);
  }
  return absl::OkStatus();
}

}  // namespace fleetwes::aggregator
