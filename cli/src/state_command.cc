// `lattice state get|dump|scan`: read a state directory.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "lattice/core/path.h"
#include "lattice/crdt/state_join.h"
#include "lattice/crdt/state_reader.h"

namespace lattice::cli {

namespace {

struct StateArgs {
  std::string state;
  std::string path;
  std::vector<std::string> states;  // dump: one or more
};

int RunGet(const StateArgs& args, bool scan) {
  auto path = core::Path::Parse(args.path);
  if (!path.ok()) {
    return Fail(path.status().message());
  }
  auto reader = crdt::StateReader::Open(args.state);
  if (!reader.ok()) {
    return Fail(reader.status().ToString());
  }
  if (scan) {
    Status st = (*reader)->Scan(*path, [](const core::Path& p, std::string_view json) {
      fmt::print("{}\t{}\n", p.ToString(), json);
    });
    return st.ok() ? 0 : Fail(st.ToString());
  }
  auto value = (*reader)->Get(*path);
  if (!value.ok()) {
    return Fail(value.status().ToString());
  }
  if (!value->has_value()) {
    std::fprintf(stderr, "lattice: nothing at '%s'\n", args.path.c_str());
    return 1;
  }
  fmt::print("{}\n", **value);
  return 0;
}

int RunDump(const StateArgs& args) {
  if (args.states.size() > 1) {
    // The CRDT join of partial states (e.g. of aggregators sharing a consumer group).
    Status st = crdt::DumpJoinedStates(args.states, [](std::string_view chunk) {
      std::fwrite(chunk.data(), 1, chunk.size(), stdout);
    });
    std::fflush(stdout);
    return st.ok() ? 0 : Fail(st.ToString());
  }
  auto reader = crdt::StateReader::Open(args.state);
  if (!reader.ok()) {
    return Fail(reader.status().ToString());
  }
  Status st = (*reader)->Dump([](std::string_view chunk) {
    std::fwrite(chunk.data(), 1, chunk.size(), stdout);
  });
  std::fflush(stdout);
  return st.ok() ? 0 : Fail(st.ToString());
}

}  // namespace

void AddStateCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("state", "Read a state directory");
  cmd->require_subcommand(1);

  auto get = std::make_shared<StateArgs>();
  CLI::App* get_cmd = cmd->add_subcommand(
      "get", "Print the canonical JSON at PATH (dotted; escape a dot in a key as \\.). Exits 1 "
             "if nothing is there.");
  get_cmd->add_option("path", get->path, "Dotted path, e.g. intents.42.host")->required();
  get_cmd->add_option("--state", get->state, "State directory")->required();
  get_cmd->callback([get] { std::exit(RunGet(*get, false)); });

  auto scan = std::make_shared<StateArgs>();
  CLI::App* scan_cmd = cmd->add_subcommand(
      "scan", "Print every leaf value under PREFIX as 'path<TAB>json', in key order");
  scan_cmd->add_option("prefix", scan->path, "Dotted path prefix (empty for everything)");
  scan_cmd->add_option("--state", scan->state, "State directory")->required();
  scan_cmd->callback([scan] { std::exit(RunGet(*scan, true)); });

  auto dump = std::make_shared<StateArgs>();
  CLI::App* dump_cmd = cmd->add_subcommand(
      "dump", "Print the whole state as canonical JSON (sorted keys, no spaces, one newline). "
              "Two states are equal exactly when their dumps are byte-equal. With several "
              "--state, print their CRDT join: the state one aggregator would have built from "
              "what all of them merged (e.g. aggregators of one consumer group).");
  dump_cmd->add_option("--state", dump->states, "State directory (repeat to join several)")
      ->required();
  dump_cmd->callback([dump] {
    dump->state = dump->states.front();
    std::exit(RunDump(*dump));
  });
}

}  // namespace lattice::cli
