// Recorder: writes what a Kafka topic carries into an NDJSON recording with provenance
// (`lattice record`, DESIGN.md §7), so that `lattice replay` of the recording rebuilds the state
// the aggregator built from the topic.
//
// Each message becomes one line. A message that is a valid shard (its envelope from
// MessageIdentity, the aggregator's rule; its body accepted by the shard decoder) is written as an envelope
//   {"blade":B,"seq":S,"ts":T,"shard":<the body's JSON text>,"topic":..,"partition":..,"offset":..}
// with the body as sent (carriage returns and newlines, which valid JSON only has as whitespace,
// become spaces). Any other message is written as a line with no "shard" field, which replay
// rejects as a bad shard just as the aggregator dead-letters the message:
//   {"blade":B,"seq":S,"ts":T,"raw":"<the value as a JSON string>","reason":"<why>",
//    "topic":..,"partition":..,"offset":..}
// ("raw_base64" instead of "raw" when the value is not UTF-8; "key"/"key_base64" when there is no
// usable blade; "blade", "seq", "ts" only when they could be derived). docs/shard-format.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "lattice/core/status.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::ingest {

/// Where in each partition recording starts.
struct RecordStart {
  enum class Kind : std::uint8_t { kBeginning, kEnd, kOffset, kTimestamp };
  Kind kind = Kind::kBeginning;
  std::int64_t value = 0;  // the offset (same in every partition) or the timestamp in ms
};

/// Parses "beginning", "end", an offset "N", or "@TIMESTAMP_MS". Errors: InvalidArgument.
Result<RecordStart> ParseRecordStart(std::string_view text);

struct RecordOptions {
  KafkaSettings kafka;
  std::string topic = std::string(kShardsTopic);
  RecordStart from;
  /// Stop at the end offsets captured when recording starts; otherwise follow until `stop`.
  bool until_end = false;
  /// Blade of messages without a key, followed by /<partition> (MessageIdentity; the same
  /// default as the aggregator's --default-blade).
  std::string default_blade = "unkeyed";
  /// Output file; "-" is stdout; a name ending in ".zst" is zstd-compressed.
  std::string output = "-";
  /// Set (e.g. by a signal handler) to end recording; what was read is written and flushed.
  const std::atomic<bool>* stop = nullptr;
};

struct RecordReport {
  std::uint64_t messages = 0;
  std::uint64_t shards = 0;  // written as envelopes
  std::uint64_t bad = 0;     // written as "raw" lines
  std::uint64_t bytes = 0;   // value bytes read
  int partitions = 0;
  double seconds = 0;
  bool interrupted = false;
  /// With from = @TIMESTAMP, a partition had no offset for the time (no message that recent, or
  /// a broker without offset lookup by time: librdkafka's mock), so the recorder read it from the
  /// beginning and skipped the messages before the first one at or after the timestamp.
  bool timestamp_fallback = false;
  std::uint64_t skipped = 0;
};

/// Records `options.topic` (all partitions).
///
/// Errors: InvalidArgument for bad settings; NotFound when the topic does not exist;
/// Unavailable when the brokers cannot be reached or the output cannot be written.
Result<RecordReport> Record(const RecordOptions& options);

}  // namespace lattice::ingest
