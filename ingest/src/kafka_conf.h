// Private: librdkafka configuration and handles built from KafkaSettings, shared by the emitter,
// the recorder, the dev broker and the aggregator. The only place that knows how Lattice's
// settings map onto librdkafka properties.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <librdkafka/rdkafka.h>

#include "lattice/core/status.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::ingest::internal {

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
  void operator()(rd_kafka_conf_t* conf) const { rd_kafka_conf_destroy(conf); }
  void operator()(rd_kafka_topic_partition_list_t* list) const {
    rd_kafka_topic_partition_list_destroy(list);
  }
  void operator()(rd_kafka_headers_t* headers) const { rd_kafka_headers_destroy(headers); }
  void operator()(rd_kafka_queue_t* queue) const { rd_kafka_queue_destroy(queue); }
  void operator()(rd_kafka_message_t* message) const { rd_kafka_message_destroy(message); }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;
using KafkaConf = std::unique_ptr<rd_kafka_conf_t, KafkaDeleter>;
using KafkaPartitionList = std::unique_ptr<rd_kafka_topic_partition_list_t, KafkaDeleter>;
using KafkaQueue = std::unique_ptr<rd_kafka_queue_t, KafkaDeleter>;
using KafkaMessage = std::unique_ptr<rd_kafka_message_t, KafkaDeleter>;

using KafkaProperties = std::vector<std::pair<std::string, std::string>>;

/// Builds a librdkafka configuration: `defaults` first (the caller's choices for its role, e.g.
/// enable.idempotence=true for a producer), then the LATTICE_KAFKA_* environment and `-X`
/// properties of `settings` in order, then bootstrap.servers from `settings.brokers` (or
/// LATTICE_BROKERS).
///
/// Errors: InvalidArgument "Kafka property 'key=value': <librdkafka's reason>" for an unknown key
/// or a bad value; InvalidArgument from RequireBrokers() when `require_brokers` and no bootstrap
/// list is given anywhere.
Result<KafkaConf> BuildKafkaConf(const KafkaSettings& settings, const KafkaProperties& defaults,
                                 bool require_brokers = true);

/// Sets one property. Errors: InvalidArgument as for BuildKafkaConf().
Status SetKafkaProperty(rd_kafka_conf_t* conf, std::string_view key, std::string_view value);

/// Creates a producer or consumer handle, taking ownership of `conf`.
/// Errors: InvalidArgument with librdkafka's reason (e.g. an inconsistent configuration).
Result<KafkaHandle> NewKafkaHandle(rd_kafka_type_t type, KafkaConf conf);

/// "<name>: <description>" for a librdkafka error code, e.g.
/// "_MSG_TIMED_OUT: Local: Message timed out".
std::string KafkaErrorText(rd_kafka_resp_err_t err);

}  // namespace lattice::ingest::internal
