// Private: reading Lattice's fields out of a librdkafka message.
#pragma once

#include <cstdint>
#include <cstring>
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

/// The `lattice-seq` header of a consumed message as SeqHeaderReader::Read finds it.
struct RawSeqHeader {
  /// False: the serialized header block could not be read here (another librdkafka, no headers,
  /// anything unusual); read the header through librdkafka's header list instead.
  bool read = false;
  /// When read: the value of the message's last `lattice-seq` header (empty for a null value,
  /// as rd_kafka_header_get_last gives it), nullopt if it has none. A view into the message.
  std::optional<std::string_view> value;
};

/// Reads the `lattice-seq` header straight from a consumed message's serialized header block,
/// without the header list rd_kafka_message_headers() builds. That list costs a calloc'd shadow
/// buffer, the list, a malloc and two copies per header, and their frees: ~0.16 us per message
/// on this host, a quarter of the aggregator's fetch and decode threads (docs/benchmarks.md,
/// "Session 8 fetch and decode"). librdkafka has no public call that returns the raw block.
///
/// librdkafka 2.0.x keeps the block in its private rd_kafka_msg_t, which starts with the public
/// rd_kafka_message_t: `rkm_u.consumer.binhdrs`, a {int32 length; const void* data} pair at byte
/// 0x78 (read from rd_kafka_message_headers() in Debian 12's 2.0.2, which parses exactly that
/// pair). For a v2 record the block is the rest of the record after the value, so its data
/// pointer is `payload + len`. Read() uses the block only when the library is 2.0.2 (checked once,
/// at construction, with rd_kafka_version()), the pair's pointer is exactly `payload + len` (which
/// a different layout would not give), and the block parses completely as the Kafka record
/// header format: a zigzag varint count, then per header a varint key length, the key, a varint
/// value length (-1: null) and the value. Anything else returns `read = false`. On success the
/// result equals what rd_kafka_header_get_last(list, "lattice-seq") returns on librdkafka's list.
///
/// Thread safety: Read() is const and touches only the message.
class SeqHeaderReader {
 public:
  SeqHeaderReader() : enabled_((rd_kafka_version() >> 8) == 0x020002) {}

  /// False when Read() always returns `read = false` (not librdkafka 2.0.2).
  bool enabled() const { return enabled_; }

  /// The message's last `lattice-seq` header, read from its serialized header block.
  RawSeqHeader Read(const rd_kafka_message_t* m) const {
    RawSeqHeader out;
    if (!enabled_ || m->payload == nullptr) {
      return out;
    }
    const char* base = reinterpret_cast<const char*>(m);
    std::int32_t size = 0;
    const char* data = nullptr;
    std::memcpy(&size, base + kBinHdrsLen, sizeof size);
    std::memcpy(&data, base + kBinHdrsData, sizeof data);
    if (size <= 0 || data != static_cast<const char*>(m->payload) + m->len) {
      return out;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(data);
    const unsigned char* end = p + size;
    std::int64_t count = 0;
    // librdkafka refuses more than 100,000 headers; a count <= 0 is left to it too.
    if (!ReadVarint(p, end, count) || count <= 0 || count > 100000) {
      return out;
    }
    std::optional<std::string_view> value;
    for (std::int64_t i = 0; i < count; ++i) {
      std::int64_t key_len = 0;
      if (!ReadVarint(p, end, key_len) || key_len < 0 || key_len > end - p) {
        return out;
      }
      const auto* key = reinterpret_cast<const char*>(p);
      p += key_len;
      std::int64_t value_len = 0;
      if (!ReadVarint(p, end, value_len) || value_len < -1 || value_len > end - p) {
        return out;
      }
      const auto* v = reinterpret_cast<const char*>(p);
      p += value_len < 0 ? 0 : value_len;
      const auto name = std::string_view(key, static_cast<std::size_t>(key_len));
      if (name.size() >= kSeqHeader.size() && name.starts_with(kSeqHeader)) {
        if (name.size() > kSeqHeader.size()) {
          // librdkafka compares names as C strings: "lattice-seq\0..." would match there.
          if (name[kSeqHeader.size()] == '\0') {
            return out;
          }
          continue;
        }
        value = value_len < 0 ? std::string_view()
                              : std::string_view(v, static_cast<std::size_t>(value_len));
      }
    }
    if (p != end) {
      return out;  // bytes after the last header: left to librdkafka
    }
    out.read = true;
    out.value = value;
    return out;
  }

 private:
  // librdkafka 2.0.2's rd_kafka_msg_t: rkm_u.consumer.binhdrs {int32_t len; const void* data}.
  static constexpr std::size_t kBinHdrsLen = 0x78;
  static constexpr std::size_t kBinHdrsData = 0x80;
  static_assert(sizeof(rd_kafka_message_t) <= kBinHdrsLen);

  // A zigzag varint of at most 10 bytes, as librdkafka's rd_slice_read_varint reads it.
  static bool ReadVarint(const unsigned char*& p, const unsigned char* end, std::int64_t& out) {
    std::uint64_t v = 0;
    for (unsigned shift = 0; shift < 70 && p != end; shift += 7) {
      const unsigned b = *p++;
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        out = static_cast<std::int64_t>((v >> 1) ^ (~(v & 1) + 1));
        return true;
      }
    }
    return false;
  }

  bool enabled_;
};

/// What MessageIdentity reads of a consumed message, given its `lattice-seq` header (nullopt:
/// none; an empty view for a null value): views into `m`.
inline MessageFields MessageFieldsOf(const rd_kafka_message_t* m,
                                     std::optional<std::string_view> seq_header) {
  MessageFields fields;
  fields.key = MessageKey(m);
  fields.seq_header = seq_header;
  rd_kafka_timestamp_type_t type;
  const std::int64_t ts = rd_kafka_message_timestamp(m, &type);
  if (type != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE) {
    fields.timestamp_ms = ts;
  }
  fields.partition = m->partition;
  fields.offset = m->offset;
  return fields;
}

/// The last `lattice-seq` header in a header list (nullptr: none), as MessageFields holds it.
inline std::optional<std::string_view> SeqHeaderOf(const rd_kafka_headers_t* headers) {
  if (headers != nullptr) {
    const void* value = nullptr;
    std::size_t size = 0;
    if (rd_kafka_header_get_last(headers, kSeqHeader.data(), &value, &size) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      return value == nullptr ? std::string_view()
                              : std::string_view(static_cast<const char*>(value), size);
    }
  }
  return std::nullopt;
}

/// What MessageIdentity reads of a consumed message, given its header list (nullptr: none):
/// views into `m` and `headers`.
inline MessageFields MessageFieldsOf(const rd_kafka_message_t* m,
                                     const rd_kafka_headers_t* headers) {
  return MessageFieldsOf(m, SeqHeaderOf(headers));
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
