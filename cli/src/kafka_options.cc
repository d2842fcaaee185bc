// Shared Kafka flags (kafka_options.h).
#include "kafka_options.h"

namespace lattice::cli {

void AddKafkaFlags(CLI::App* cmd, KafkaFlags& flags) {
  cmd->add_option("-b,--brokers", flags.brokers,
                  "Kafka bootstrap list HOST:PORT[,...] (default: $LATTICE_BROKERS)");
  cmd->add_option("-X,--property", flags.properties,
                  "librdkafka property key=value, repeatable (like kcat -X); also "
                  "LATTICE_KAFKA_<KEY>=value with '.' written '_', e.g. "
                  "LATTICE_KAFKA_SECURITY_PROTOCOL=ssl");
}

Result<ingest::KafkaSettings> ResolveKafkaFlags(const KafkaFlags& flags) {
  ingest::KafkaSettings settings;
  settings.brokers = flags.brokers;
  for (const auto& p : flags.properties) {
    LATTICE_ASSIGN_OR_RETURN(auto kv, ingest::ParseKafkaProperty(p));
    settings.properties.push_back(std::move(kv));
  }
  LATTICE_RETURN_IF_ERROR(ingest::ApplyKafkaEnvironment(settings));
  return settings;
}

}  // namespace lattice::cli
