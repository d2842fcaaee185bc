// Private: reading Lattice's fields out of a librdkafka message.
#pragma once

#include <optional>
#include <string_view>

#include <librdkafka/rdkafka.h>

#include "lattice/ingest/kafka_settings.h"
#include "lattice/ingest/message_identity.h"

namespace lattice::ingest::internal {

/// The message key, nullopt when the message has none.
inline std::optional<std::string_view> MessageKey(const rd_kafka_message_t* m) {
  if (m->key == nullptr) {
    return std::nullopt;
  }
  return std::string_view(static_cast<const char*>(m->key), m->key_len);
}

/// What MessageIdentity reads of a consumed message (views into `m`).
inline MessageFields MessageFieldsOf(const rd_kafka_message_t* m) {
  MessageFields fields;
  fields.key = MessageKey(m);
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const void* value = nullptr;
    std::size_t size = 0;
    if (rd_kafka_header_get_last(headers, kSeqHeader.data(), &value, &size) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      fields.seq_header = value == nullptr
                              ? std::string_view()
                              : std::string_view(static_cast<const char*>(value), size);
    }
  }
  rd_kafka_timestamp_type_t type;
  const std::int64_t ts = rd_kafka_message_timestamp(m, &type);
  if (type != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE) {
    fields.timestamp_ms = ts;
  }
  fields.partition = m->partition;
  fields.offset = m->offset;
  return fields;
}

}  // namespace lattice::ingest::internal
