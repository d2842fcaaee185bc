// `lattice demo`: the whole pipeline on one machine (DESIGN.md §14). It starts the dev broker, the
// aggregator and the observer as child processes of this same executable (so a crash in one is
// its own, and they run exactly as in production), then runs the simulated cluster
// (processors/demo_cluster.h) in this process, sending its shards with an Emitter. It prints the
// observer's URL, runs until interrupted or for --for, stops every child in order, and prints a
// summary of the merged state.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "child_process.h"
#include "commands.h"
#include "lattice/core/duration.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/ingest/emitter.h"
#include "lattice/processors/demo_cluster.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnDemoSignal(int /*signal*/) { g_stop.store(true); }

struct DemoArgs {
  std::string run_for;
  std::string listen = "127.0.0.1:8080";
  std::string dir;
  std::string web;
  std::string record;
  std::uint32_t workers = 6;
  std::uint64_t seed = 0;
  bool keep = false;
  bool json = false;
};

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
Result<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return Status::Unavailable("socket() failed");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return Status::Unavailable("cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// Whether something accepts TCP connections on host:port.
bool Listening(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1 &&
                  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

class Demo {
 public:
  explicit Demo(const DemoArgs& args) : args_(args) {}

  int Run() {
    // Flags.
    std::optional<std::int64_t> run_for_ms;
    if (!args_.run_for.empty()) {
      auto d = core::ParseDurationMs(args_.run_for);
      if (!d.ok()) {
        return Fail("--for: " + d.status().message());
      }
      if (*d <= 0) {
        return Fail("--for: must be positive, e.g. 60s");
      }
      run_for_ms = *d;
    }
    const auto colon = args_.listen.rfind(':');
    if (colon == std::string::npos) {
      return Fail("--listen: expected HOST:PORT, e.g. 127.0.0.1:8080, not '" + args_.listen + "'");
    }
    host_ = args_.listen.substr(0, colon);
    port_ = std::atoi(args_.listen.c_str() + colon + 1);
    if (port_ < 0 || port_ > 65535) {
      return Fail("--listen: port out of range in '" + args_.listen + "'");
    }
    if (port_ == 0) {
      auto p = FreePort();
      if (!p.ok()) {
        return Fail(p.status().ToString());
      }
      port_ = *p;
    } else if (Listening(host_ == "0.0.0.0" ? "127.0.0.1" : host_, port_)) {
      return Fail(fmt::format("--listen: {} is already in use (another demo or observer?); "
                              "pick another port, or --listen 127.0.0.1:0 for a free one",
                              args_.listen));
    }
    // The working directory: state, logs, the broker's address.
    std::error_code ec;
    if (args_.dir.empty()) {
      std::string tmpl = (std::filesystem::temp_directory_path() / "lattice-demo.XXXXXX").string();
      if (::mkdtemp(tmpl.data()) == nullptr) {
        return Fail("cannot create a temporary directory for the demo");
      }
      dir_ = tmpl;
      remove_dir_ = !args_.keep;
    } else {
      dir_ = args_.dir;
      std::filesystem::create_directories(dir_, ec);
      if (ec) {
        return Fail("--dir: cannot create '" + dir_ + "': " + ec.message());
      }
    }
    state_ = (std::filesystem::path(dir_) / "state").string();

    std::signal(SIGINT, OnDemoSignal);
    std::signal(SIGTERM, OnDemoSignal);
    std::signal(SIGPIPE, SIG_IGN);

    const int code = Pipeline(run_for_ms);
    StopAll();
    if (code == 0 || stopped_by_signal_) {
      PrintSummary();
    }
    if (remove_dir_) {
      std::filesystem::remove_all(dir_, ec);
    } else {
      fmt::print("state and logs kept in {}\n", dir_);
    }
    return code;
  }

 private:
  int Pipeline(std::optional<std::int64_t> run_for_ms) {
    const std::string log_dir = dir_;
    // 1. The dev broker; its bootstrap address appears in a file once it listens.
    const std::string bootstrap_file = (std::filesystem::path(dir_) / "bootstrap").string();
    std::filesystem::remove(bootstrap_file);
    auto broker = ChildProcess::Start(
        "broker",
        {"broker", "--topic", "lattice.shards:16", "--bootstrap-file", bootstrap_file,
         "--no-stdin"},
        log_dir + "/broker.log");
    if (!broker.ok()) {
      return Fail(broker.status().ToString());
    }
    children_.push_back(std::move(*broker));
    std::string brokers;
    if (!WaitFor("the broker", std::chrono::seconds(15), [&] {
          std::ifstream in(bootstrap_file);
          std::getline(in, brokers);
          return !brokers.empty();
        })) {
      return 1;
    }
    // 2. The aggregator: small batch times, so the page sees changes within tens of ms.
    auto aggregator = ChildProcess::Start(
        "aggregator",
        {"aggregate", "--brokers", brokers, "--state", state_, "--max-batch-time", "20ms",
         "--log-interval", "0"},
        log_dir + "/aggregate.log");
    if (!aggregator.ok()) {
      return Fail(aggregator.status().ToString());
    }
    children_.push_back(std::move(*aggregator));
    // 3. The simulated cluster starts emitting now; the observer needs a state to open.
    ingest::EmitterOptions emitter_options;
    emitter_options.kafka.brokers = brokers;
    emitter_options.validate = false;  // Send() never validates; the simulation's bodies are ours
    auto emitter = ingest::Emitter::Open(emitter_options);
    if (!emitter.ok()) {
      return Fail("cannot open the emitter: " + emitter.status().ToString());
    }
    processors::DemoClusterOptions cluster_options;
    cluster_options.workers = args_.workers;
    cluster_options.dying_worker = std::min<std::uint32_t>(4, args_.workers);
    cluster_options.seed = args_.seed == 0 ? static_cast<std::uint64_t>(NowMs()) : args_.seed;
    const std::int64_t start = NowMs();
    processors::DemoCluster cluster(cluster_options, start);
    // Seqs continue across demo runs on the same state: they start at the start time in µs.
    const std::uint64_t seq_base = static_cast<std::uint64_t>(start) * 1000;
    std::ofstream record;
    if (!args_.record.empty()) {
      record.open(args_.record, std::ios::app);
      if (!record) {
        return Fail("--record: cannot write '" + args_.record + "'");
      }
    }
    Status send_status = Status::Ok();
    std::string envelope;
    const auto emit = [&](const processors::DemoShard& s) {
      if (!send_status.ok()) {
        return;
      }
      send_status = (*emitter)->Send(s.blade, seq_base + s.seq, s.ts, s.body);
      last_ts_ = s.ts;
      if (record.is_open()) {
        envelope.clear();
        envelope.append("{\"blade\":\"").append(s.blade).append("\",\"seq\":");
        envelope.append(std::to_string(seq_base + s.seq)).append(",\"ts\":");
        envelope.append(std::to_string(s.ts)).append(",\"shard\":").append(s.body).append("}\n");
        record << envelope;
      }
    };
    cluster.Advance(NowMs(), emit);
    (*emitter)->Poll();
    if (!WaitFor("the aggregator's state", std::chrono::seconds(30), [&] {
          cluster.Advance(NowMs(), emit);
          (*emitter)->Poll();
          // Readable as a Lattice state (not merely created): what the observer needs to start.
          return std::filesystem::exists(std::filesystem::path(state_) / "CURRENT") &&
                 crdt::StateReader::Open(state_).ok();
        })) {
      return 1;
    }
    // 4. The observer.
    std::vector<std::string> observe_args = {"observe", "--state", state_, "--listen",
                                             fmt::format("{}:{}", host_, port_)};
    if (!args_.web.empty()) {
      observe_args.push_back("--web");
      observe_args.push_back(args_.web);
    }
    auto observer = ChildProcess::Start("observer", observe_args, log_dir + "/observe.log");
    if (!observer.ok()) {
      return Fail(observer.status().ToString());
    }
    children_.push_back(std::move(*observer));
    const std::string probe_host = host_ == "0.0.0.0" ? "127.0.0.1" : host_;
    if (!WaitFor("the observer", std::chrono::seconds(30), [&] {
          cluster.Advance(NowMs(), emit);
          (*emitter)->Poll();
          return Listening(probe_host, port_);
        })) {
      return 1;
    }
    fmt::print("Lattice demo: {} workers, 3 scrapers, 2 spotters, an orchestrator and a checker\n",
               cluster_options.workers);
    fmt::print("  observer   http://{}:{}/\n", probe_host, port_);
    fmt::print("  broker     {}\n", brokers);
    fmt::print("  state      {}\n", state_);
    fmt::print("  logs       {}/{{broker,aggregate,observe}}.log\n", dir_);
    fmt::print("{}\n", run_for_ms ? fmt::format("running for {} s", static_cast<double>(*run_for_ms) / 1000.0)
                                  : std::string("running until Ctrl-C"));
    std::fflush(stdout);

    // 5. Run: advance the simulation, watch the children.
    const std::int64_t run_start = NowMs();
    while (!g_stop.load()) {
      const std::int64_t now = NowMs();
      if (run_for_ms && now - run_start >= *run_for_ms) {
        break;
      }
      cluster.Advance(now, emit);
      (*emitter)->Poll();
      if (!send_status.ok()) {
        return Fail("sending shards: " + send_status.ToString());
      }
      for (ChildProcess& child : children_) {
        if (auto code = child.Poll()) {
          return Fail(fmt::format("the {} stopped unexpectedly (exit {}); the end of {}:\n{}",
                                  child.name(), *code, child.log_path(),
                                  TailOfFile(child.log_path(), 15)));
        }
      }
      // 10 ms keeps the simulation's event times (tick times) close to the wall clock, so the
      // page's live latency measures the pipeline, not this loop.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stopped_by_signal_ = g_stop.load();
    // 6. Deliver what was produced and let the aggregator commit it before stopping.
    Status flushed = (*emitter)->Close(std::chrono::seconds(10));
    if (!flushed.ok()) {
      std::fprintf(stderr, "lattice: warning: %s\n", flushed.ToString().c_str());
    }
    stats_ = cluster.stats();
    have_stats_ = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return 0;
  }

  // Waits until `ready()` or the timeout, failing early when a child exits.
  template <typename F>
  bool WaitFor(const std::string& what, std::chrono::milliseconds timeout, F ready) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!g_stop.load()) {
      if (ready()) {
        return true;
      }
      for (ChildProcess& child : children_) {
        if (auto code = child.Poll()) {
          Fail(fmt::format("the {} stopped while waiting for {} (exit {}); the end of {}:\n{}",
                           child.name(), what, *code, child.log_path(),
                           TailOfFile(child.log_path(), 15)));
          return false;
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        Fail(fmt::format("timed out after {} s waiting for {} (logs in {})",
                         static_cast<double>(timeout.count()) / 1000.0, what, dir_));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Observer first (it reads), then the aggregator (it commits what it has), then the broker.
  void StopAll() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      it->Stop(std::chrono::seconds(10));
    }
    children_.clear();
  }

  void PrintSummary() {
    auto reader = crdt::StateReader::Open(state_);
    if (!reader.ok()) {
      std::fprintf(stderr, "lattice: warning: no merged state to summarize: %s\n",
                   reader.status().ToString().c_str());
      return;
    }
    processors::DemoClusterOptions defaults;
    auto summary = processors::SummarizeState(**reader, last_ts_ != 0 ? last_ts_ : NowMs(),
                                              defaults.heartbeat_timeout_ms);
    if (!summary.ok()) {
      std::fprintf(stderr, "lattice: warning: %s\n", summary.status().ToString().c_str());
      return;
    }
    fmt::print("== the merged state\n{}", processors::FormatSummary(*summary));
    if (have_stats_) {
      fmt::print("== what the simulated cluster did\n");
      fmt::print("shards sent {}, jobs submitted {} (done {}, failed {}, taken over {}), "
                 "intents {}, errors {}, deaths {}, restarts {}\n",
                 stats_.shards, stats_.jobs_submitted, stats_.jobs_done, stats_.jobs_failed,
                 stats_.jobs_taken_over, stats_.intents, stats_.errors, stats_.deaths,
                 stats_.restarts);
    }
  }

  DemoArgs args_;
  std::string host_;
  int port_ = 0;
  std::string dir_;
  std::string state_;
  bool remove_dir_ = false;
  bool stopped_by_signal_ = false;
  std::vector<ChildProcess> children_;
  std::int64_t last_ts_ = 0;
  processors::DemoClusterStats stats_;
  bool have_stats_ = false;
};

}  // namespace

void AddDemoCommand(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "Run the whole pipeline on this machine: the dev broker, the aggregator, the observer and a "
      "simulated cluster (an orchestrator setting intents, scrapers and spotters resolving them "
      "and counting items, workers taking jobs through their five states, one dying and coming "
      "back). Prints the observer's URL; runs until Ctrl-C, or for --for, then prints a summary "
      "of the merged state (docs/demo.md).");
  cmd->add_option("--for", args->run_for, "Run this long (e.g. 60s, 5m), then stop and summarize");
  cmd->add_option("--listen", args->listen,
                  "Where the observer listens; port 0 picks a free one")
      ->capture_default_str();
  cmd->add_option("--dir", args->dir,
                  "Working directory for the state and the logs (kept) [a temporary directory, "
                  "removed at the end]");
  cmd->add_option("--web", args->web, "The page's directory, passed to the observer [its default]");
  cmd->add_option("--record", args->record,
                  "Also append every simulated shard to this NDJSON recording");
  cmd->add_option("--workers", args->workers, "Simulated worker nodes")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the simulation [the clock]");
  cmd->add_flag("--keep", args->keep, "Keep the temporary directory (state and logs)");
  cmd->callback([args] { std::exit(Demo(*args).Run()); });
}

}  // namespace lattice::cli
