// The Kafka flags every Kafka subcommand shares (--brokers, -X key=value) and their resolution
// with the LATTICE_BROKERS / LATTICE_KAFKA_* environment into an ingest::KafkaSettings.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "lattice/core/status.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::cli {

/// The raw flag values, filled by CLI11.
struct KafkaFlags {
  std::string brokers;
  std::vector<std::string> properties;  // "key=value", in order
};

/// Adds --brokers and -X/--property to `cmd`.
void AddKafkaFlags(CLI::App* cmd, KafkaFlags& flags);

/// Resolves the flags and the environment (flags win). Errors: InvalidArgument for a malformed
/// -X or LATTICE_KAFKA_* entry. Does not require brokers (use ingest::RequireBrokers for that).
Result<ingest::KafkaSettings> ResolveKafkaFlags(const KafkaFlags& flags);

}  // namespace lattice::cli
