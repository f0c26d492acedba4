// Versioned schema migrations (docs/schema.md). Each migration runs in its own transaction that
// first takes a transaction-level advisory lock, so aggregators starting together apply each
// version exactly once; applied versions are recorded in schema_migrations(version, applied_at).
// Applying is idempotent: a second run applies nothing. Functions are thread-compatible (one
// connection per caller).
#ifndef FLEETWES_AGGREGATOR_STORE_MIGRATIONS_H_
#define FLEETWES_AGGREGATOR_STORE_MIGRATIONS_H_

#include <pqxx/connection>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fleetwes::aggregator {

struct Migration {
  int version;  // strictly increasing from 1
  absl::string_view description;
  absl::string_view sql;
};

// The schema of this build, in order.
absl::Span<const Migration> SchemaMigrations();

// The advisory lock key held while a migration runs ("fleetwes" in ASCII).
inline constexpr long long kMigrationLockKey = 0x666c656574776573LL;

// Applies the migrations of `migrations` that `conn`'s database has not recorded. Returns how
// many were applied. Errors: the mapped libpqxx error of the first failing migration (its
// transaction is rolled back; earlier ones stay applied). A database that records versions this
// build does not know is accepted (a newer aggregator migrated it) and logged.
absl::StatusOr<int> ApplyMigrations(pqxx::connection& conn,
                                    absl::Span<const Migration> migrations = SchemaMigrations());

// Versions recorded in schema_migrations, ascending (empty if the table does not exist).
absl::StatusOr<std::vector<int>> AppliedMigrations(pqxx::connection& conn);

}  // namespace fleetwes::aggregator

#endif  // FLEETWES_AGGREGATOR_STORE_MIGRATIONS_H_
