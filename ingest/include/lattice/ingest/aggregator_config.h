// The settings of `lattice aggregate` from three sources — flags, LATTICE_* environment
// variables and a YAML config file — resolved with the precedence flag > environment > file >
// default (docs/operations.md lists every setting).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/ingest/aggregator.h"

namespace lattice::ingest {

/// Settings by name ("brokers", "topic", "max_batch", ...; "kafka.<property>" for librdkafka
/// properties), as text, from one source.
using SettingMap = std::map<std::string, std::string>;

/// One setting: its name in a config file, its environment variable and its meaning.
struct SettingInfo {
  std::string_view name;
  std::string_view env;
  std::string_view help;
};

/// Every setting `lattice aggregate` knows, in documentation order.
const std::vector<SettingInfo>& AggregateSettings();

/// Reads a YAML config file: a map of the setting names above to scalars, and an optional map
/// `kafka:` of librdkafka properties. Errors: NotFound if it cannot be read; InvalidArgument with
/// the file and the line for bad YAML, an unknown setting or a non-scalar value.
Result<SettingMap> ReadAggregateConfigFile(const std::string& path);

/// The LATTICE_* variables of the settings above that are set in the environment.
SettingMap ReadAggregateEnvironment();

/// Parses the `assign` setting: "" or "group" is group mode (nullopt); "all" is standalone mode
/// on every partition (an empty list); "0-31,40" standalone mode on those partitions (sorted).
/// Errors: InvalidArgument for a bad number or range, or a partition named twice.
Result<std::optional<std::vector<std::int32_t>>> ParseAssign(std::string_view text);

/// What `lattice aggregate` runs with.
struct AggregateConfig {
  AggregatorOptions options;
  std::string state;
  std::int64_t allowed_lateness_ms = 5 * 60 * 1000;
  bool sync = false;
  /// crdt::StoreOptions::memory_budget (setting memory_budget; unset: the state stays in memory).
  std::optional<std::uint64_t> memory_budget;
  /// crdt::StoreOptions::max_wal_bytes (setting max_wal_size; unset: the store's default, 256 MiB).
  std::optional<std::uint64_t> max_wal_bytes;
  /// librdkafka properties from the config file's `kafka:` map (lowest precedence: the
  /// environment's LATTICE_KAFKA_* and -X override them).
  std::vector<std::pair<std::string, std::string>> file_kafka_properties;
};

/// Resolves `layers` (highest precedence first, e.g. {flags, environment, file}) over the
/// defaults. Errors: InvalidArgument naming the setting for a value out of range or unparsable,
/// or for a missing state directory.
Result<AggregateConfig> ResolveAggregateConfig(const std::vector<SettingMap>& layers);

}  // namespace lattice::ingest
