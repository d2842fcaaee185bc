// ChildProcess: a subcommand of this same `lattice` executable run as a child process (what
// `lattice demo` starts: the broker, the aggregator, the observer), with its output in a log
// file, stopped with SIGTERM (then SIGKILL) and never outliving the parent.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::cli {

class ChildProcess {
 public:
  /// Starts `/proc/self/exe args...` with stdin from /dev/null and stdout+stderr appended to
  /// `log_path`. The child gets SIGTERM if this process dies (PR_SET_PDEATHSIG) and runs in its
  /// own process group, so a terminal's Ctrl-C reaches only the parent, which stops children in
  /// order. Errors: Unavailable when the log cannot be opened or fork/exec fails.
  static Result<ChildProcess> Start(const std::string& name, const std::vector<std::string>& args,
                                    const std::string& log_path);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  /// Stops the child if it still runs (Stop with a 5 s grace).
  ~ChildProcess();

  /// The exit status if the child has exited (without blocking): the exit code, or 128 + signal.
  std::optional<int> Poll();

  /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status (as Poll).
  int Stop(std::chrono::milliseconds grace);

  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

 private:
  ChildProcess(std::string name, std::string log_path, pid_t pid)
      : name_(std::move(name)), log_path_(std::move(log_path)), pid_(pid) {}
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// The last `lines` lines of a text file (for error messages about a child that failed).
std::string TailOfFile(const std::string& path, int lines);

}  // namespace lattice::cli
