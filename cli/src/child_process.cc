// ChildProcess: fork + exec of this executable, with a log file, a process group of its own and a
// parent-death signal.
#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

namespace lattice::cli {

namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return 255;
}

}  // namespace

Result<ChildProcess> ChildProcess::Start(const std::string& name,
                                         const std::vector<std::string>& args,
                                         const std::string& log_path) {
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    return Status::Unavailable("cannot open the log '" + log_path + "': " + std::strerror(errno));
  }
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<std::string> argv_strings;
  argv_strings.reserve(args.size() + 1);
  argv_strings.push_back("lattice");
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(log);
    ::close(null);
    return Status::Unavailable("cannot start " + name + ": fork: " + std::strerror(e));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) {
      ::_exit(127);  // the parent died before prctl
    }
    ::setpgid(0, 0);
    ::dup2(null >= 0 ? null : log, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    // Default signal dispositions for the new program (the parent may have handlers).
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv("/proc/self/exe", argv.data());
    const char msg[] = "lattice: error: exec /proc/self/exe failed\n";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(log);
  if (null >= 0) {
    ::close(null);
  }
  return ChildProcess(name, log_path, pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : name_(std::move(other.name_)),
      log_path_(std::move(other.log_path_)),
      pid_(other.pid_),
      status_(other.status_) {
  other.pid_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) {
      Stop(std::chrono::seconds(5));
    }
    name_ = std::move(other.name_);
    log_path_ = std::move(other.log_path_);
    pid_ = other.pid_;
    status_ = other.status_;
    other.pid_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) {
    Stop(std::chrono::seconds(5));
  }
}

std::optional<int> ChildProcess::Poll() {
  if (status_ || pid_ <= 0) {
    return status_;
  }
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = DecodeWaitStatus(status);
  } else if (r < 0 && errno == ECHILD) {
    status_ = 255;
  }
  return status_;
}

int ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) {
    return 255;
  }
  if (Poll()) {
    return *status_;
  }
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (Poll()) {
      return *status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  if (::waitpid(pid_, &status, 0) == pid_) {
    status_ = DecodeWaitStatus(status);
  } else {
    status_ = 255;
  }
  return *status_;
}

std::string TailOfFile(const std::string& path, int lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) {
      last.pop_front();
    }
  }
  std::string out;
  for (const std::string& l : last) {
    out += "    " + l + "\n";
  }
  return out;
}

}  // namespace lattice::cli
