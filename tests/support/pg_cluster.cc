#include "tests/support/pg_cluster.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/support/child_process.h"

namespace fleetwes::testing {
namespace {

namespace fs = std::filesystem;

bool Executable(const fs::path& p) { return ::access(p.c_str(), X_OK) == 0; }

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::string> PgCluster::FindBinDir() {
  std::vector<fs::path> candidates = {"/usr/lib/postgresql/15/bin"};
  std::error_code ec;
  std::vector<fs::path> others;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    others.push_back(e.path() / "bin");
  }
  std::sort(others.rbegin(), others.rend());
  candidates.insert(candidates.end(), others.begin(), others.end());
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    for (absl::string_view d : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      candidates.emplace_back(std::string(d));
    }
  }
  for (const fs::path& d : candidates) {
    if (Executable(d / "initdb") && Executable(d / "pg_ctl")) return d.string();
  }
  return absl::NotFoundError(
      "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or "
      "PATH; install postgresql-15");
}

absl::StatusOr<std::unique_ptr<PgCluster>> PgCluster::Create() {
  absl::StatusOr<std::string> bindir = FindBinDir();
  if (!bindir.ok()) return bindir.status();
  // /tmp, not $TMPDIR: the postgres user must be able to reach the directory.
  char tmpl[] = "/tmp/fleetwes-pgcluster.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  std::unique_ptr<PgCluster> cluster(new PgCluster(*bindir, tmpl));
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      return absl::NotFoundError("running as root and there is no `postgres` user for initdb");
    }
    if (chown(tmpl, pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", tmpl, " failed"));
    }
  }
  if (absl::Status s =
          cluster->RunTool({cluster->bindir_ + "/initdb", "-D", cluster->dir_ + "/data", "-U",
                            "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"});
      !s.ok()) {
    return s;
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    cluster->port_ = FreeLoopbackPort();
    if (cluster->port_ == 0) continue;
    if (cluster->Start().ok()) return cluster;
  }
  return absl::UnavailableError(
      absl::StrCat("could not start PostgreSQL in ", cluster->dir_, ":\n", cluster->Log()));
}

PgCluster::~PgCluster() {
  if (running_) (void)Stop("immediate");
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

absl::Status PgCluster::RunTool(const std::vector<std::string>& argv) {
  std::vector<std::string> full;
  if (geteuid() == 0) full = {"/usr/sbin/runuser", "-u", "postgres", "--"};
  if (!full.empty() && !Executable(full[0])) full[0] = "/sbin/runuser";
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (std::string& a : full) args.push_back(a.data());
  args.push_back(nullptr);
  const std::string log = dir_ + "/tools.log";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", log));
  const pid_t pid = fork();
  if (pid == 0) {
    if (chdir(dir_.c_str()) != 0) _exit(126);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fd);
  if (pid < 0) return absl::InternalError("fork failed");
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(absl::StrJoin(argv, " "), " failed (status ", status, "):\n", ReadAll(log)));
}

absl::Status PgCluster::Start() {
  const std::string options =
      absl::StrCat("-p ", port_, " -k ", dir_,
                   " -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on"
                   " -c full_page_writes=off -c max_connections=100");
  absl::Status s = RunTool({bindir_ + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/postgres.log",
                            "-w", "-t", "60", "-o", options, "start"});
  if (s.ok()) running_ = true;
  return s;
}

absl::Status PgCluster::Stop(const std::string& mode) {
  absl::Status s =
      RunTool({bindir_ + "/pg_ctl", "-D", dir_ + "/data", "-m", mode, "-w", "-t", "60", "stop"});
  if (s.ok()) running_ = false;
  return s;
}

absl::Status PgCluster::Restart(const std::string& mode) {
  if (absl::Status s = Stop(mode); !s.ok()) return s;
  return Start();
}

std::string PgCluster::Url(const std::string& dbname) const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", dbname);
}

std::string PgCluster::Log() const { return ReadAll(fs::path(dir_) / "postgres.log"); }

}  // namespace fleetwes::testing
