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

/// A header list taken from a consumed message with rd_kafka_message_detach_headers(), destroyed
/// with this object. The aggregator's decode threads detach the list librdkafka parses for the
/// `lattice-seq` header and free it at once, while it is in the parsing core's cache and in that
/// thread's malloc cache; left on the message, it was freed with the message on another thread (a
/// cache miss per list element, and glibc handing the chunks back across threads: ~10% of the
/// decode threads' CPU). A detached message still has its raw headers: a later
/// rd_kafka_message_headers() (a dead letter's copy) parses them again.
class DetachedHeaders {
 public:
  DetachedHeaders() = default;
  ~DetachedHeaders() {
    if (list_ != nullptr) {
      rd_kafka_headers_destroy(list_);
    }
  }
  DetachedHeaders(const DetachedHeaders&) = delete;
  DetachedHeaders& operator=(const DetachedHeaders&) = delete;

  /// Detaches `m`'s parsed header list (parsing it first); nullptr when `m` has no headers.
  rd_kafka_headers_t* Detach(rd_kafka_message_t* m) {
    if (rd_kafka_message_detach_headers(m, &list_) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      list_ = nullptr;
    }
    return list_;
  }

 private:
  rd_kafka_headers_t* list_ = nullptr;
};

/// What MessageIdentity reads of a consumed message, given its header list (nullptr: none):
/// views into `m` and `headers`.
inline MessageFields MessageFieldsOf(const rd_kafka_message_t* m,
                                     const rd_kafka_headers_t* headers) {
  MessageFields fields;
  fields.key = MessageKey(m);
  if (headers != nullptr) {
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

/// What MessageIdentity reads of a consumed message (views into `m`; parses its headers once).
inline MessageFields MessageFieldsOf(const rd_kafka_message_t* m) {
  rd_kafka_headers_t* headers = nullptr;
  if (rd_kafka_message_headers(m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    headers = nullptr;
  }
  return MessageFieldsOf(m, headers);
}

}  // namespace lattice::ingest::internal
