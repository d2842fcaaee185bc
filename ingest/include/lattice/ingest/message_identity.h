// The one rule that turns a Kafka message of the shards topic into a shard's envelope (blade, seq,
// ts) (DESIGN.md §2.1). The aggregator and `lattice record` both use it, so a recording replays
// into exactly the state the aggregator built.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "lattice/core/status.h"
#include "lattice/ingest/kafka_settings.h"  // kSeqHeader

namespace lattice::ingest {

/// What the rule reads of one message (no librdkafka types: callers copy views out of theirs).
struct MessageFields {
  std::optional<std::string_view> key;         // nullopt: the message has no key
  std::optional<std::string_view> seq_header;  // the last `lattice-seq` header, if any
  std::optional<std::int64_t> timestamp_ms;    // nullopt: the message carries no timestamp
  std::int32_t partition = 0;
  std::int64_t offset = 0;
};

/// A message's envelope. `blade` points into the message's key or into the MessageIdentity that
/// produced it, and is valid until that object identifies the next message.
struct MessageEnvelope {
  std::string_view blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
};

/// The rule:
///  * blade = the key (UTF-8) when the message has a non-empty key; otherwise
///    `<default_blade>/<partition>` — producers spread unkeyed messages over partitions, and an
///    offset is unique only within its partition;
///  * seq = the `lattice-seq` header when present, otherwise the message's offset (one blade's
///    messages stay in one partition, so its offsets increase; mixing both for one blade is not
///    supported);
///  * ts = the message timestamp (CreateTime or LogAppendTime) in ms, or 0 when it has none.
///
/// Thread safety: none (one per thread); cheap (no allocation once the default blade's buffer has
/// grown to its size).
class MessageIdentity {
 public:
  explicit MessageIdentity(std::string default_blade);

  /// Errors: InvalidArgument when the `lattice-seq` header is not a decimal integer in 0..2^64-1.
  Result<MessageEnvelope> Identify(const MessageFields& message);

  const std::string& default_blade() const { return default_blade_; }

 private:
  std::string default_blade_;
  std::string scratch_;
};

}  // namespace lattice::ingest
