// Aggregator: the Kafka consumer-group member that merges the shards topic into a state directory
// with exactly-once effects (DESIGN.md §1, §7). The Kafka twin of the replayer.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/types.h"
#include "lattice/ingest/kafka_settings.h"

namespace lattice::ingest {

/// How an aggregator connects and batches. Defaults are documented in docs/operations.md.
struct AggregatorOptions {
  /// Brokers and librdkafka properties (`-X key=value`), applied to both the consumer and the
  /// dead-letter producer after Lattice's own settings, so they win.
  KafkaSettings kafka;
  std::string topic = "lattice.shards";
  std::string group = "lattice-aggregator";
  /// Standalone mode: read the partitions below by manual assignment, without joining a
  /// consumer group (like `kcat -C` without -G), so there is no group formation or rebalance.
  /// For one aggregator owning the whole topic (or a fixed, disjoint share of it); `group` is
  /// then only used to commit offsets to Kafka for lag tools.
  bool standalone = false;
  /// With `standalone`: the partitions to read; empty for every partition of the topic.
  std::vector<std::int32_t> partitions;
  /// Rejected shards go here with headers lattice-outcome, lattice-reason, lattice-source.
  std::string dead_topic = "lattice.dead";
  /// Change events (DESIGN.md §6) go here, key = path, value = the wire JSON of crdt::Change,
  /// after the batch that made them is durable; empty: in-process subscribers only.
  std::string changes_topic = "lattice.changes";
  /// Blade of messages without a key: `<default_blade>/<partition>` (see message_identity.h).
  std::string default_blade = "unkeyed";
  /// A batch (one RocksDB commit) holds at most this many messages; the limit adapts between
  /// min and max: doubled while batches fill up, halved while polls come back short. A catch-up
  /// goes straight to max; each commit writes every record changed since the previous one, so
  /// fewer, bigger commits write less: records born and deleted in different partitions' shards
  /// of one batch are never written, and a hot record is written once per commit. Unset, the
  /// largest batch is kMaxBatch without change events and kMaxBatchPublishing with them (a
  /// changes topic or a subscriber): a batch's change events wait in memory until it is durable.
  std::size_t min_batch = 1024;
  std::optional<std::size_t> max_batch;
  /// 1,048,576 with the 1 s time budget below commits a 2 M-shard catch-up 2-3 times instead of
  /// 8 (262,144 and 500 ms before session 11): the writer's CPU falls from ~0.28 to ~0.08 s. With
  /// change events on it would hold ~60% more memory at peak (~850 instead of ~560 MB in that
  /// catch-up) for no speed (docs/operations.md "Batches").
  static constexpr std::size_t kMaxBatch = 1 << 20;
  static constexpr std::size_t kMaxBatchPublishing = 1 << 18;
  /// A batch is committed at the latest this long after its first message (a quiet topic's
  /// batches end sooner: when the consumer's queue runs empty).
  std::int64_t max_batch_ms = 1000;
  /// Stop (committing everything) when every assigned partition has reached the end offset it had
  /// when the aggregator started (or when it was first assigned).
  bool exit_at_end = false;
  /// Seconds between progress lines in the log (lag, rates, batch sizes); 0 disables them.
  double log_interval_s = 5.0;
  /// When set (e.g. by a SIGTERM handler) the aggregator finishes the batch in hand, commits it,
  /// leaves the group and returns.
  const std::atomic<bool>* stop = nullptr;
};

/// What an aggregator run did.
struct AggregatorReport {
  std::uint64_t messages = 0;  // messages consumed
  std::uint64_t bytes = 0;     // value bytes consumed
  std::uint64_t applied = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t late = 0;
  std::uint64_t bad = 0;           // undecodable, too large, bad header, or would overflow
  std::uint64_t dead_letters = 0;  // delivered to the dead-letter topic
  std::uint64_t batches = 0;
  std::uint64_t max_batch = 0;  // the largest batch limit in force (AggregatorOptions::max_batch)
  std::uint64_t rebalances = 0;
  std::uint64_t changes = 0;  // change events published (to subscribers and the changes topic)
  /// Times librdkafka's fetcher was woken after its queue (queued.min.messages) had been full.
  std::uint64_t fetcher_wakeups = 0;
  double seconds = 0;
  /// From the first partition assignment to the end (without the wait for the group to form).
  double assigned_seconds = 0;
  bool reached_end = false;  // with exit_at_end: stopped because everything was consumed
  std::uint64_t rejected() const { return conflicts + late + bad; }
};

/// A consumer-group member that polls the shards topic in batches, merges them into a StateStore
/// and commits state and consumed offsets in one RocksDB WriteBatch per batch.
///
/// On every partition assignment it starts each partition from the offset stored in the state
/// (not from Kafka's committed offsets, which it also commits, asynchronously and after the
/// durable commit, for lag tools). On revocation it commits the batch in hand before letting the
/// partitions go. Rejected shards are produced to the dead-letter topic and delivered before the
/// offsets that pass them are committed.
///
/// Thread safety: Run() on one thread; Subscribe() before Run().
class Aggregator {
 public:
  /// Receives one change event after the batch that made it is durable.
  using Subscriber = std::function<void(const crdt::Change&)>;

  /// Creates the Kafka clients (they connect lazily). `store` must outlive the aggregator.
  /// Errors: InvalidArgument for a bad librdkafka property or option.
  static Result<std::unique_ptr<Aggregator>> Create(crdt::StateStore& store,
                                                    AggregatorOptions options);
  ~Aggregator();
  Aggregator(const Aggregator&) = delete;
  Aggregator& operator=(const Aggregator&) = delete;

  /// Delivers every change whose dotted path starts with `prefix` ("" for all) to `callback`, on
  /// the Run() thread, in the order they happened, after their batch is durable. Call before Run().
  void Subscribe(std::string prefix, Subscriber callback);

  /// Consumes until `options.stop` is set (or, with exit_at_end, until the end), then commits,
  /// leaves the group and returns the report. A broker that is away is waited for.
  /// Errors: Unavailable when the state cannot be written (e.g. a full disk; nothing of the
  /// failed batch and none of its offsets are committed), when dead letters cannot be delivered
  /// for a permanent reason, or when the topic does not exist.
  Result<AggregatorReport> Run();

 private:
  struct Impl;
  explicit Aggregator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest
