// The subcommands of the `lattice` executable; each adds itself to the CLI11 app.
#pragma once

#include <CLI/CLI.hpp>

namespace lattice::cli {

void AddReplayCommand(CLI::App& app);
void AddStateCommand(CLI::App& app);
void AddGenCommand(CLI::App& app);
void AddObserveCommand(CLI::App& app);
void AddBrokerCommand(CLI::App& app);
void AddEmitCommand(CLI::App& app);
void AddDiffCommand(CLI::App& app);
void AddDemoCommand(CLI::App& app);
void AddAggregateCommand(CLI::App& app);
void AddRecordCommand(CLI::App& app);
void AddStepCommand(CLI::App& app);
void AddBlameCommand(CLI::App& app);

/// Prints "lattice: error: <message>" to stderr and returns the exit code for a failure.
int Fail(const std::string& message);

}  // namespace lattice::cli
