// `lattice observe`: the read-only observer (REST, WebSocket /v1/stream, /metrics, the web page)
// over a state directory, until SIGINT/SIGTERM (docs/cli.md, docs/observer-protocol.md).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <signal.h>
#include <unistd.h>

#include "commands.h"
#include "lattice/core/duration.h"
#include "lattice/observer/server.h"

namespace lattice::cli {

namespace {

struct ObserveArgs {
  std::string state;
  std::string listen = "127.0.0.1:8080";
  std::string token;
  std::string web;
  std::string url_file;
  std::string poll = "10ms";
  std::string dead_after = "10s";
  std::string clock = "event";
  int threads = 2;
  std::size_t max_clients = 1024;
  std::size_t client_queue_bytes = 1u << 20;
  std::string client_max_lag = "1s";
};

// The page's directory when --web is not given: next to an installed binary, else the source tree
// this binary was built from.
std::string DefaultWebDir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path installed = exe.parent_path() / ".." / "share" / "lattice" / "web";
    if (std::filesystem::is_directory(installed, ec)) {
      return std::filesystem::canonical(installed, ec).string();
    }
  }
#ifdef LATTICE_SOURCE_DIR
  const std::filesystem::path source =
      std::filesystem::path(LATTICE_SOURCE_DIR) / "observer" / "web";
  if (std::filesystem::is_directory(source, ec)) {
    return source.string();
  }
#endif
  return std::string();
}

int RunObserve(const ObserveArgs& args) {
  observer::ObserverOptions o;
  o.state_dir = args.state;
  const std::size_t colon = args.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Fail("--listen: expected HOST:PORT, got '" + args.listen + "'");
  }
  o.host = args.listen.substr(0, colon);
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') {
    o.host = o.host.substr(1, o.host.size() - 2);
  }
  const std::string port = args.listen.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
    return Fail("--listen: bad port '" + port + "' (0 .. 65535; 0 picks a free one)");
  }
  o.port = static_cast<std::uint16_t>(p);
  o.token = args.token;
  if (o.token.empty()) {
    if (const char* env = std::getenv("LATTICE_OBSERVER_TOKEN")) {
      o.token = env;
    }
  }
  o.web_dir = args.web.empty() ? DefaultWebDir() : args.web;
  auto poll = core::ParseDurationMs(args.poll);
  if (!poll.ok()) {
    return Fail("--poll: " + poll.status().message());
  }
  if (*poll < 1 || *poll > 60'000) {
    return Fail("--poll: must be 1ms .. 60s");
  }
  o.poll_ms = *poll;
  auto dead = core::ParseDurationMs(args.dead_after);
  if (!dead.ok()) {
    return Fail("--dead-after: " + dead.status().message());
  }
  if (*dead < 1) {
    return Fail("--dead-after: must be positive");
  }
  o.dead_after_ms = *dead;
  if (args.clock != "event" && args.clock != "wall") {
    return Fail("--clock: expected 'event' or 'wall', got '" + args.clock + "'");
  }
  o.wall_clock = args.clock == "wall";
  o.threads = args.threads;
  o.max_clients = args.max_clients;
  o.client_queue_bytes = args.client_queue_bytes;
  auto max_lag = core::ParseDurationMs(args.client_max_lag);
  if (!max_lag.ok()) {
    return Fail("--client-max-lag: " + max_lag.status().message());
  }
  if (*max_lag < 10 || *max_lag > 600'000) {
    return Fail("--client-max-lag: must be 10ms .. 10m");
  }
  o.client_max_lag_ms = *max_lag;

  // Block the stop signals before any thread starts, so only sigwait() sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto obs = observer::Observer::Start(o);
  if (!obs.ok()) {
    return Fail(obs.status().message());
  }
  const std::string url = (*obs)->url();
  std::printf("%s\n", url.c_str());
  std::fflush(stdout);
  if (!args.url_file.empty()) {
    const std::string tmp = args.url_file + ".tmp." + std::to_string(::getpid());
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    bool ok = f != nullptr && std::fprintf(f, "%s\n", url.c_str()) > 0;
    ok = f != nullptr && std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), args.url_file.c_str()) != 0) {
      return Fail("cannot write --url-file '" + args.url_file + "'");
    }
  }
  std::fprintf(stderr, "lattice observe: following %s (read-only secondary), web page from %s\n",
               o.state_dir.c_str(), o.web_dir.empty() ? "(none)" : o.web_dir.c_str());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*obs)->Stop();
  obs->reset();
  std::fprintf(stderr, "lattice observe: stopped (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  return 0;
}

}  // namespace

void AddObserveCommand(CLI::App& app) {
  auto args = std::make_shared<ObserveArgs>();
  CLI::App* cmd = app.add_subcommand(
      "observe",
      "Serve a read-only view of a state directory: REST (/v1/state, /v1/summary, /v1/health), "
      "the WebSocket /v1/stream (periodic, manual and live updates), /metrics and the web page. "
      "Follows the state as a RocksDB secondary instance while a writer runs and after it "
      "stops. Prints the URL on the first line of stdout; runs until SIGINT/SIGTERM.");
  cmd->add_option("--state", args->state, "The state directory to observe")->required();
  cmd->add_option("--listen", args->listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  cmd->add_option("--token", args->token,
                  "Bearer token required for /v1/* and /metrics (default: $LATTICE_OBSERVER_TOKEN; "
                  "none if unset)");
  cmd->add_option("--web", args->web,
                  "Directory of the web page (default: share/lattice/web next to the binary, else "
                  "observer/web of the source tree)");
  cmd->add_option("--url-file", args->url_file, "Also write the URL to this file (atomically)");
  cmd->add_option("--poll", args->poll,
                  "Catch up with the writer at least this often (a write to its WAL wakes the "
                  "observer sooner)")
      ->capture_default_str();
  cmd->add_option("--dead-after", args->dead_after,
                  "A node whose heartbeat is older than this is dead")
      ->capture_default_str();
  cmd->add_option("--clock", args->clock,
                  "'event': now is the newest event time in the state; 'wall': the wall clock")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Server threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--max-clients", args->max_clients, "Most WebSocket connections at once")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
      ->capture_default_str();
  cmd->add_option("--client-queue-bytes", args->client_queue_bytes,
                  "Outgoing bytes buffered per client before it is dropped to a snapshot")
      ->check(CLI::Range(std::size_t{65536}, std::size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--client-max-lag", args->client_max_lag,
                  "A client whose oldest unsent message is older than this is dropped to a "
                  "snapshot (10ms .. 10m)")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunObserve(*args)); });
}

}  // namespace lattice::cli
