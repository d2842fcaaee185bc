// The `lattice` executable: one binary, one subcommand per job (docs/cli.md).
#include <cstdio>

#include "commands.h"

namespace lattice::cli {

int Fail(const std::string& message) {
  std::fprintf(stderr, "lattice: error: %s\n", message.c_str());
  return 1;
}

}  // namespace lattice::cli

int main(int argc, char** argv) {
  CLI::App app{"Lattice: an event-sourced, log-merging monitor for running clusters.\n"
               "Shards (small JSON documents) from every blade are deep-merged into one CRDT "
               "state kept in RocksDB.",
               "lattice"};
  app.set_version_flag("--version", std::string("lattice 0.1.0"));
  app.require_subcommand(1);
  lattice::cli::AddReplayCommand(app);
  lattice::cli::AddStateCommand(app);
  lattice::cli::AddGenCommand(app);
  lattice::cli::AddObserveCommand(app);
  lattice::cli::AddBrokerCommand(app);
  lattice::cli::AddEmitCommand(app);
  lattice::cli::AddDiffCommand(app);
  lattice::cli::AddDemoCommand(app);
  lattice::cli::AddAggregateCommand(app);
  lattice::cli::AddRecordCommand(app);
  lattice::cli::AddStepCommand(app);
  lattice::cli::AddBlameCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Subcommands run from their callbacks and exit with their own code.
  return 0;
}
