// `lattice broker`: run a development Kafka cluster (librdkafka's mock) until SIGINT/SIGTERM.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include <signal.h>

#include "commands.h"
#include "lattice/ingest/dev_broker.h"

namespace lattice::cli {

namespace {

struct BrokerArgs {
  int brokers = 1;
  std::vector<std::string> topics;
  bool no_default_topics = false;
  std::string bootstrap_file;
  int control_port = -1;
  std::string control_file;
  bool no_stdin = false;
};

// Writes `text` to `path` atomically (temporary file in the same directory, then rename).
bool WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return false;
  }
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  ok = ok && std::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    std::remove(tmp.c_str());
  }
  return ok;
}

int RunBroker(const BrokerArgs& args) {
  ingest::DevBrokerOptions options;
  options.brokers = args.brokers;
  if (args.no_default_topics) {
    options.topics.clear();
  }
  for (const auto& t : args.topics) {
    auto spec = ingest::ParseTopicSpec(t);
    if (!spec.ok()) {
      return Fail(spec.status().message());
    }
    std::erase_if(options.topics, [&](const ingest::TopicSpec& s) { return s.name == spec->name; });
    options.topics.push_back(*spec);
  }
  // Block the stop signals before any thread starts (librdkafka's included), so only sigwait()
  // below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto started = ingest::DevBroker::Start(options);
  if (!started.ok()) {
    return Fail(started.status().ToString());
  }
  std::unique_ptr<ingest::DevBroker> broker = std::move(started).value();
  int control_port = args.control_port;
  if (control_port < 0 && !args.control_file.empty()) {
    control_port = 0;
  }
  std::string control_address;
  if (control_port >= 0) {
    auto port = broker->ListenControl(control_port);
    if (!port.ok()) {
      return Fail(port.status().ToString());
    }
    control_address = "127.0.0.1:" + std::to_string(*port);
  }
  if (!args.bootstrap_file.empty() &&
      !WriteFileAtomically(args.bootstrap_file, broker->bootstraps() + "\n")) {
    return Fail("cannot write the bootstrap file '" + args.bootstrap_file + "'");
  }
  if (!args.control_file.empty() &&
      !WriteFileAtomically(args.control_file, control_address + "\n")) {
    return Fail("cannot write the control file '" + args.control_file + "'");
  }
  std::printf("%s\n", broker->bootstraps().c_str());
  if (!control_address.empty()) {
    std::printf("control %s\n", control_address.c_str());
  }
  std::fflush(stdout);
  std::string topics;
  for (const auto& t : options.topics) {
    topics.append(topics.empty() ? "" : ", ")
        .append(t.name)
        .append(":")
        .append(std::to_string(t.partitions));
  }
  std::fprintf(stderr, "lattice broker: %d broker(s) at %s; topics %s%s%s\n", args.brokers,
               broker->bootstraps().c_str(), topics.empty() ? "(none)" : topics.c_str(),
               control_address.empty() ? "" : "; control at ", control_address.c_str());

  // Control commands on stdin, answers on stdout. The reader thread is never joined (it may be
  // blocked in a read); the mutex keeps it from using the broker once shutdown has begun.
  std::mutex mu;
  bool stopping = false;
  if (!args.no_stdin) {
    std::thread([&] {
      std::string line;
      while (std::getline(std::cin, line)) {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) {
          return;
        }
        if (line.find_first_not_of(" \t\r") == std::string::npos) {
          continue;
        }
        const std::string answer = broker->Execute(line);
        std::printf("%s\n", answer.c_str());
        std::fflush(stdout);
      }
    }).detach();
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
    broker.reset();
  }
  std::fprintf(stderr, "lattice broker: stopped (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  for (const auto& f : {args.bootstrap_file, args.control_file}) {
    if (!f.empty()) {
      std::remove(f.c_str());
    }
  }
  std::fflush(stdout);
  std::_Exit(0);  // the stdin reader may still be blocked in a read
}

}  // namespace

void AddBrokerCommand(CLI::App& app) {
  auto args = std::make_shared<BrokerArgs>();
  CLI::App* cmd = app.add_subcommand(
      "broker",
      "Run a development Kafka cluster on 127.0.0.1 (librdkafka's mock cluster) until "
      "SIGINT/SIGTERM. Prints the bootstrap address as the first line of stdout.");
  cmd->footer(
      std::string("Control commands (one per line on stdin, or over TCP with --control-port; "
                  "each answers one line):\n") +
      std::string(ingest::DevBroker::ControlHelp()) +
      "\nLimits of the mock in librdkafka 2.0.2: each partition keeps only about 5 MiB or "
      "100,000 message sets (older ones are dropped: use enough partitions for big runs); the "
      "Admin API cannot create topics (use --topic or the 'create' command; unknown topics are "
      "auto-created with 4 partitions when a client asks for their metadata); all brokers share "
      "one thread; ports are picked by the OS; nothing is persisted.");
  cmd->add_option("--brokers", args->brokers, "Number of brokers (ids 1..N)")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  cmd->add_option("--topic", args->topics,
                  "Topic to create as NAME:PARTITIONS, repeatable; adds to or overrides the "
                  "defaults lattice.shards:64, lattice.dead:1, lattice.changes:1, lattice.jobs:1");
  cmd->add_flag("--no-default-topics", args->no_default_topics,
                "Create only the topics given with --topic");
  cmd->add_option("--bootstrap-file", args->bootstrap_file,
                  "Write the bootstrap address to this file (atomically, once listening; removed "
                  "on exit)");
  cmd->add_option("--control-port", args->control_port,
                  "Serve control commands over TCP on 127.0.0.1:PORT (0 = any free port); the "
                  "address is printed as 'control 127.0.0.1:PORT' on the second line")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--control-file", args->control_file,
                  "Write the control address HOST:PORT to this file (implies --control-port 0 "
                  "unless a port is given)");
  cmd->add_flag("--no-stdin", args->no_stdin, "Do not read control commands from stdin");
  cmd->callback([args] { std::exit(RunBroker(*args)); });
}

}  // namespace lattice::cli
