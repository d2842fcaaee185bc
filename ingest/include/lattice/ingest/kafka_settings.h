// Kafka connection settings shared by every Lattice command that talks to Kafka (emit, record,
// aggregate): the bootstrap list, librdkafka properties passed through as `-X key=value`, and the
// LATTICE_* environment variables. Free of librdkafka types; ingest/src/kafka_conf.h turns a
// KafkaSettings into a librdkafka configuration.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::ingest {

/// Well-known topic names (DESIGN.md §1, §2.1) and the sequence-number header.
inline constexpr std::string_view kShardsTopic = "lattice.shards";
inline constexpr std::string_view kDeadTopic = "lattice.dead";
inline constexpr std::string_view kChangesTopic = "lattice.changes";
inline constexpr std::string_view kJobsTopic = "lattice.jobs";
inline constexpr std::string_view kSeqHeader = "lattice-seq";

/// Environment variables read by ApplyKafkaEnvironment().
inline constexpr std::string_view kBrokersEnv = "LATTICE_BROKERS";
/// Prefix of pass-through properties: LATTICE_KAFKA_SASL_MECHANISMS=PLAIN sets
/// `sasl.mechanisms=PLAIN` (the rest of the name lower-cased, '_' becoming '.').
inline constexpr std::string_view kKafkaEnvPrefix = "LATTICE_KAFKA_";

/// How to reach Kafka.
///
/// Precedence, lowest first: Lattice's defaults for the role (e.g. enable.idempotence for
/// producers), then the environment, then `properties` in order (a later key wins), then
/// `brokers` (which always sets bootstrap.servers when non-empty).
struct KafkaSettings {
  /// Bootstrap list "host:port[,host:port...]" (librdkafka's bootstrap.servers).
  std::string brokers;
  /// librdkafka properties, applied in order (`-X key=value`, like kcat).
  std::vector<std::pair<std::string, std::string>> properties;
};

/// Parses one "key=value" pass-through property (the value may contain '=').
///
/// Errors: InvalidArgument naming the text when there is no '=' or the key is empty.
Result<std::pair<std::string, std::string>> ParseKafkaProperty(std::string_view text);

/// Fills `settings` from the environment: LATTICE_BROKERS sets `brokers` if it is still empty;
/// each LATTICE_KAFKA_<NAME>=value is inserted before the explicit properties (so `-X` wins).
///
/// Errors: InvalidArgument for an empty LATTICE_KAFKA_ name.
Status ApplyKafkaEnvironment(KafkaSettings& settings);

/// The bootstrap list, or an InvalidArgument telling the user how to give one (--brokers,
/// LATTICE_BROKERS, -X bootstrap.servers=...).
Result<std::string> RequireBrokers(const KafkaSettings& settings);

}  // namespace lattice::ingest
