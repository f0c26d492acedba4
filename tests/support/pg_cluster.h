// A private PostgreSQL cluster for tests that must stop or restart the database (the shared
// cluster of FLEETWES_TEST_DATABASE_URL cannot be). Create() runs initdb into a temporary
// directory (as the `postgres` user via runuser when running as root: initdb refuses root) and
// starts it with pg_ctl on a free loopback port, with its socket in that directory. Stop(),
// Start() and Restart() keep the port and the data; the destructor stops the server
// (immediate mode) and removes the directory. Server binaries are looked up in
// /usr/lib/postgresql/15/bin, then other /usr/lib/postgresql/*/bin, then PATH.
// Not thread-safe; one owner.
#ifndef FLEETWES_TESTS_SUPPORT_PG_CLUSTER_H_
#define FLEETWES_TESTS_SUPPORT_PG_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fleetwes::testing {

class PgCluster {
 public:
  // The directory holding initdb and pg_ctl; NotFound (saying what to install) when absent.
  static absl::StatusOr<std::string> FindBinDir();

  // initdb + start. NotFound when the server binaries are missing (tests skip on it).
  static absl::StatusOr<std::unique_ptr<PgCluster>> Create();
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // pg_ctl stop; `mode` is "fast" (disconnect clients, clean shutdown) or "immediate" (like a
  // crash of the server: recovery from the WAL at the next start).
  absl::Status Stop(const std::string& mode = "fast");
  // pg_ctl start on the same port; waits until it accepts connections.
  absl::Status Start();
  absl::Status Restart(const std::string& mode = "fast");

  // "postgresql://postgres@127.0.0.1:<port>/<dbname>".
  std::string Url(const std::string& dbname = "postgres") const;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // The server log, for failure messages.
  std::string Log() const;

 private:
  PgCluster(std::string bindir, std::string dir)
      : bindir_(std::move(bindir)), dir_(std::move(dir)) {}
  // Runs a server tool (as `postgres` when root) from dir_, output appended to dir_/tools.log.
  absl::Status RunTool(const std::vector<std::string>& argv);

  const std::string bindir_;
  const std::string dir_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_PG_CLUSTER_H_
