// Real processes for end-to-end tests: a child whose stdout and stderr go to a file, stopped on
// destruction and killed if the test process dies (PR_SET_PDEATHSIG); plus free loopback ports
// and polling with a deadline. Not thread-safe; one owner per child.
#ifndef FLEETWES_TESTS_SUPPORT_CHILD_PROCESS_H_
#define FLEETWES_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace fleetwes::testing {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with `env` added to this process's environment; null when the
  // output file cannot be created or fork fails.
  static std::unique_ptr<ChildProcess> Spawn(const std::vector<std::string>& argv,
                                             const std::string& output_path,
                                             const std::map<std::string, std::string>& env = {});
  ~ChildProcess();  // Stop()
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool Running();
  // Waits for the process to exit by itself: its exit code (128+signal when killed); nullopt on
  // timeout.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, up to `grace` to exit, then SIGKILL. Returns the exit code (128+signal if killed).
  int Stop(absl::Duration grace = absl::Seconds(15));
  // SIGKILL now and reap. Returns 128+9 unless it had exited already.
  int Kill();

  std::string Output() const;
  pid_t pid() const { return pid_; }

 private:
  ChildProcess(pid_t pid, std::string path) : pid_(pid), path_(std::move(path)) {}
  int ExitCode() const;
  pid_t pid_;
  std::string path_;
  bool exited_ = false;
  int status_ = 0;
};

// A free loopback TCP port: bound to port 0, read back, released. 0 on failure.
int FreeLoopbackPort();

// Polls `done` every 50 ms until it returns true (true) or `timeout` passes (false).
bool PollUntil(absl::Duration timeout, const std::function<bool()>& done);

}  // namespace fleetwes::testing

#endif  // FLEETWES_TESTS_SUPPORT_CHILD_PROCESS_H_
