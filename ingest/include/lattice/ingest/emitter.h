// Emitter: how a blade (or a processor) sends shards to Kafka (DESIGN.md §2.1, §7).
//
// Each shard becomes one message on the shards topic: key = blade id, value = the body, CreateTime
// timestamp = event time in ms, header `lattice-seq` = the blade's sequence number in decimal. The
// producer is idempotent (enable.idempotence=true), so a retried request is written once.
//
// Sequence numbers keep increasing across restarts of the emitting process:
// - with a seq file, the emitter reserves blocks of `seq_block` seqs: before handing out any seq
//   below a high-water mark H it has written H to the file and fsynced it; after a restart it
//   starts at the stored H. The cost is one small write + fsync per block (and up to
//   seq_block - 1 seqs skipped per restart, which is harmless: seqs need not be contiguous);
// - without one, the first seq is the current time in microseconds since the epoch, so seqs
//   still grow across restarts as long as the blade sends fewer than a million shards per second
//   on average and the clock does not step back.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "lattice/core/status.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::ingest {

struct EmitterOptions {
  KafkaSettings kafka;
  std::string topic = std::string(kShardsTopic);
  /// The blade id used as the key by Set/Erase/Inc/Max/Min/Raw (not needed for Send()).
  std::string blade;
  /// Where the seq high-water mark is kept; empty: seqs start at the clock (see the file comment).
  std::string seq_file;
  /// Seqs reserved per fsync of the seq file (1 … 2^32).
  std::uint64_t seq_block = 4096;
  /// When set, the first seq handed out (and the seq file, if any, is moved past it).
  std::optional<std::uint64_t> first_seq;
  /// Check every body of Set/Erase/Inc/Max/Min/Raw against the shard rules (DESIGN.md §2.3)
  /// before sending it (Send() never checks: its caller has).
  bool validate = true;
};

/// Counters since the emitter was opened. `failed` messages were reported by librdkafka as not
/// delivered (after its retries); `first_error` describes the first of them.
struct EmitterStats {
  std::uint64_t queued = 0;
  std::uint64_t delivered = 0;
  std::uint64_t failed = 0;
  std::uint64_t bytes = 0;  // body bytes queued
  std::string first_error;
};

/// A producer of shards for one topic.
///
/// Thread safety: none (one thread calls it). Cost: a call copies the key and body into
/// librdkafka's queue and returns; messages are batched (linger.ms=5, batch.num.messages=10000,
/// no compression by default; all overridable with -X properties).
class Emitter {
 public:
  /// Creates the producer (it connects lazily) and opens/locks the seq file.
  /// Errors: InvalidArgument for bad settings (no brokers, an unknown property, a bad blade id);
  /// Unavailable when the seq file cannot be read, written or locked (another emitter holds it);
  /// Corruption when it does not hold a number.
  static Result<std::unique_ptr<Emitter>> Open(EmitterOptions options);

  /// Flushes for up to 5 s and closes; call Close() to know whether everything was delivered.
  ~Emitter();
  Emitter(const Emitter&) = delete;
  Emitter& operator=(const Emitter&) = delete;

  /// Sets the value at `path` (dotted, `\.` escapes a dot) to `json` (any JSON value; an object
  /// merges into what is there). Errors: InvalidArgument for a bad path or value; Unavailable when
  /// the producer failed fatally or the seq file cannot be written.
  Status Set(std::string_view path, std::string_view json);
  /// Erases `path` and everything under it.
  Status Erase(std::string_view path);
  /// Adds `n` to the counter at `path`.
  Status Inc(std::string_view path, std::int64_t n);
  Status Inc(std::string_view path, double n);
  /// Keeps the largest / smallest value seen at `path`.
  Status Max(std::string_view path, double n);
  Status Min(std::string_view path, double n);
  /// Sends a whole body (a JSON object) as one shard of this emitter's blade.
  Status Raw(std::string_view body);
  /// The same with an explicit event time (ms since the epoch).
  Status RawAt(std::string_view body, std::int64_t ts);

  /// Sends one shard with an explicit envelope (re-emitting a recording). Uses no seq of the
  /// emitter and does not validate `body`. Errors: Unavailable after a fatal producer error;
  /// InvalidArgument for an empty blade.
  Status Send(std::string_view blade, std::uint64_t seq, std::int64_t ts, std::string_view body);

  /// The seq the next Set/Erase/Inc/Max/Min/Raw will use.
  std::uint64_t next_seq() const;

  /// Waits until every queued shard is delivered or failed, up to `timeout`. Serves delivery
  /// reports. Errors: Unavailable "N shard(s) not delivered: <first error>" when any message
  /// failed since the emitter was opened, or "N shard(s) still in flight" after the timeout.
  Status Flush(std::chrono::milliseconds timeout);

  /// Flush(timeout), then releases the producer (later calls fail). Returns Flush's status.
  Status Close(std::chrono::milliseconds timeout);

  /// Serves delivery reports without blocking (Send does this every so often on its own).
  void Poll();

  EmitterStats stats() const;

 private:
  struct Impl;
  explicit Emitter(std::unique_ptr<Impl> impl);
  Status SendOwn(std::string_view body, std::int64_t ts);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest
