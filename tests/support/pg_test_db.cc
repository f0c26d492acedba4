#include "tests/support/pg_test_db.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <pqxx/pqxx>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleetwes::testing {

namespace {

std::string UniqueName() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return absl::StrFormat("fleetwes_test_%d_%d_%08x", static_cast<int>(getpid()), counter++, rd());
}

}  // namespace

std::optional<std::string> PgTestDb::ClusterUrl() {
  const char* v = std::getenv(kTestDatabaseUrlEnv);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

std::string PgTestDb::SkipMessage() {
  return absl::StrCat(kTestDatabaseUrlEnv,
                      " is not set: PostgreSQL tests skipped (tests/run.sh sets it to a test "
                      "cluster; set it by hand to run them, e.g. "
                      "postgresql://postgres@127.0.0.1:5432/postgres)");
}

std::string PgTestDb::WithDatabase(const std::string& cluster_url, const std::string& dbname) {
  for (const char* scheme : {"postgresql://", "postgres://"}) {
    if (!absl::StartsWith(cluster_url, scheme)) continue;
    const size_t authority = std::string(scheme).size();
    const size_t query = cluster_url.find('?', authority);
    const size_t path = cluster_url.find('/', authority);
    const size_t authority_end = std::min(path == std::string::npos ? cluster_url.size() : path,
                                          query == std::string::npos ? cluster_url.size() : query);
    std::string out = cluster_url.substr(0, authority_end);
    absl::StrAppend(&out, "/", dbname);
    if (query != std::string::npos) absl::StrAppend(&out, cluster_url.substr(query));
    return out;
  }
  // key=value form: a later keyword overrides an earlier one.
  return absl::StrCat(cluster_url, " dbname=", dbname);
}

absl::StatusOr<std::unique_ptr<PgTestDb>> PgTestDb::Create(const std::string& cluster_url) {
  const std::string name = UniqueName();
  try {
    pqxx::connection admin(cluster_url);
    pqxx::nontransaction tx(admin);
    tx.exec(absl::StrCat("CREATE DATABASE ", tx.quote_name(name)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot create test database ", name, " on ",
                                               kTestDatabaseUrlEnv, ": ", e.what()));
  }
  return std::unique_ptr<PgTestDb>(
      new PgTestDb(cluster_url, name, WithDatabase(cluster_url, name)));
}

PgTestDb::PgTestDb(std::string cluster_url, std::string name, std::string url)
    : cluster_url_(std::move(cluster_url)), name_(std::move(name)), url_(std::move(url)) {}

PgTestDb::~PgTestDb() {
  try {
    pqxx::connection admin(cluster_url_);
    pqxx::nontransaction tx(admin);
    tx.exec(absl::StrCat("DROP DATABASE IF EXISTS ", tx.quote_name(name_), " WITH (FORCE)"));
  } catch (const std::exception& e) {
    std::cerr << "warning: could not drop test database " << name_ << ": " << e.what() << "\n";
  }
}

void PgTest::SetUp() {
  std::optional<std::string> cluster = PgTestDb::ClusterUrl();
  if (!cluster.has_value()) GTEST_SKIP() << PgTestDb::SkipMessage();
  absl::StatusOr<std::unique_ptr<PgTestDb>> db = PgTestDb::Create(*cluster);
  ASSERT_TRUE(db.ok()) << db.status();
  db_ = *std::move(db);
}

}  // namespace fleetwes::testing
