// A fresh PostgreSQL database per test, on the cluster named by FLEETWES_TEST_DATABASE_URL
// (tests/run.sh sets it). The database gets a unique name, is created on construction and dropped
// (WITH (FORCE)) on destruction. When the variable is unset, tests skip with a message that says
// so. Not thread-safe; one instance per test.
//
//   class StoreTest : public fleetwes::testing::PgTest {};
//   TEST_F(StoreTest, Writes) { pqxx::connection c(db().url()); ... }
#ifndef FLEETWES_TESTS_SUPPORT_PG_TEST_DB_H_
#define FLEETWES_TESTS_SUPPORT_PG_TEST_DB_H_

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace fleetwes::testing {

inline constexpr char kTestDatabaseUrlEnv[] = "FLEETWES_TEST_DATABASE_URL";

class PgTestDb {
 public:
  // The value of FLEETWES_TEST_DATABASE_URL; nullopt when unset or empty.
  static std::optional<std::string> ClusterUrl();
  // Why a test skips when ClusterUrl() is nullopt.
  static std::string SkipMessage();

  // Creates a database with a unique name on the cluster at `cluster_url` (a libpq URL or
  // key=value string that connects to an existing database, e.g. "postgres").
  static absl::StatusOr<std::unique_ptr<PgTestDb>> Create(const std::string& cluster_url);

  ~PgTestDb();  // drops the database; failures are printed, not thrown
  PgTestDb(const PgTestDb&) = delete;
  PgTestDb& operator=(const PgTestDb&) = delete;

  // A connection string for the new database.
  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  // `cluster_url` with its database name replaced by `dbname`.
  static std::string WithDatabase(const std::string& cluster_url, const std::string& dbname);

 private:
  PgTestDb(std::string cluster_url, std::string name, std::string url);
  std::string cluster_url_;
  std::string name_;
  std::string url_;
};

// A fixture that gives each test its own database, or skips when no cluster is configured.
class PgTest : public ::testing::Test {
 protected:
  void SetUp() override;
  const PgTestDb& db() const { return *db_; }

 private:
  std::unique_ptr<PgTestDb> db_;
};

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_PG_TEST_DB_H_
