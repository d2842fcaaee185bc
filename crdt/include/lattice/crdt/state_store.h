// StateStore: the aggregator's durable merged state — the merge engine plus its RocksDB database,
// where state and source positions are committed together (DESIGN.md §1, §5).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/core/status.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {

struct StoreOptions {
  EngineOptions engine;
  /// fsync the WAL on every commit. Off by default: a process crash loses nothing (the WAL is in
  /// the OS), a machine crash can lose the last commits — and their positions with them, so they
  /// are read again. On for the paranoid.
  bool sync = false;
  /// Benchmarks only: no write-ahead log; a crash can lose committed batches.
  bool disable_wal = false;
  /// Write each batch on a background thread while the next one is merged.
  bool pipelined = true;
  /// Keep a change log (the `changes` column family: per commit, the state keys it wrote, in the
  /// same WriteBatch; the last 4096 commits, at most 64 MiB of them) for readers that follow the
  /// state, e.g. the observer.
  bool change_log = true;
  /// The change log keeps at most this many bytes of entries (and at most 4096 commits); a
  /// follower further behind sees a gap and resyncs.
  std::size_t change_log_max_bytes = 64u << 20;
  /// Bounded memory (docs/state-layout.md, "Bounded memory"): when set, subtrees under object
  /// nodes at `page_depth` whose records are all written leave memory after a commit while the
  /// engine's estimate of its memory (trie nodes x 300 bytes) is over this many bytes, and are
  /// read back from the database when needed. 0 pages out every clean page after every commit
  /// (tests). Unset (the default): the whole state stays in memory.
  std::optional<std::uint64_t> memory_budget;
  std::uint32_t page_depth = 2;
  /// Bound on the write-ahead log (RocksDB's max_total_wal_size): once the live log files hold
  /// more than this many bytes, RocksDB flushes the column families that still have records in
  /// the oldest one, so that it can be deleted. Without a bound a log file lives until every
  /// family with records in it has flushed, and the small `meta` family (positions and clock,
  /// written by every commit) never fills a write buffer: the log would grow to RocksDB's
  /// default, 4x all the write buffers (~10 GiB), and opening the state replays all of it
  /// (docs/operations.md, "Disk use and restart time"). 0 = RocksDB's default.
  std::uint64_t max_wal_bytes = 256u << 20;
};

/// Parses a size in bytes: a whole number with an optional unit B, KiB, MiB, GiB, TiB (powers of
/// 1024) or KB, MB, GB, TB (powers of 1000), e.g. `256MiB`, `2GiB`, `0`. Errors: InvalidArgument
/// naming the text.
Result<std::uint64_t> ParseByteSize(std::string_view text);

/// Parses a memory budget (StoreOptions::memory_budget): a size as ParseByteSize reads it; `off`
/// (or an empty text) means none. Errors: InvalidArgument naming the text.
Result<std::optional<std::uint64_t>> ParseMemoryBudget(std::string_view text);

/// Sizes of a store, for metrics and the bounded-memory benchmark.
struct StoreStats {
  /// RocksDB's rocksdb.estimate-live-data-size of the state (families state, counters, history,
  /// meta); the change log (`changes`, the last 4096 commits, at most 64 MiB) is counted apart.
  std::uint64_t live_data_bytes = 0;
  std::uint64_t change_log_bytes = 0;
  std::uint64_t sst_bytes = 0;       // rocksdb.total-sst-files-size
  std::uint64_t memtable_bytes = 0;  // rocksdb.cur-size-all-mem-tables
  /// The live write-ahead log files (DB::GetSortedWalFiles): what the next open replays, and
  /// what StoreOptions::max_wal_bytes bounds.
  std::uint64_t wal_bytes = 0;
  std::uint64_t rss_bytes = 0;       // this process's resident set size (/proc/self/statm)
  std::uint64_t nodes = 0;           // trie nodes in memory (node_count())
  std::uint64_t pages_out = 0;       // subtrees paged out of memory (memory_budget)
  std::uint64_t pages_in = 0;        // paged-out subtrees read back
};

/// The merged state of one aggregator: merges shards in memory and commits them, with the
/// positions of the sources they came from, in one RocksDB WriteBatch per Commit().
///
/// Exactly-once effects: a caller stages the position after the last shard it applied and
/// commits; after a crash the store reopens at the last commit and the caller resumes from the
/// stored positions. Thread safety: one owner thread, except where a method says otherwise; the
/// background writer is internal.
class StateStore {
 public:
  /// Opens (creating if needed) the state in `dir` and loads it.
  /// Errors: Unavailable if another process holds the directory; Corruption if records do not
  /// decode; InvalidArgument if `dir` is not a Lattice state directory.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& dir, StoreOptions options);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  /// Merges one shard into memory; nothing is durable until Commit(). `source`, if given, is
  /// kept as the provenance of what the shard decides (Blame()).
  ApplyResult Apply(const core::Shard& shard, const ShardSource* source = nullptr);
  /// A hint that `shard` is applied soon (a few shards ahead): prefetches what its Apply() will
  /// look up in the state. Changes nothing.
  void Prefetch(const core::Shard& shard) const;
  /// A second hint, after Prefetch() and closer to the Apply(): prefetches the state node the
  /// shard's first path names at its second level. Changes nothing.
  void PrefetchChild(const core::Shard& shard) const;

  /// Sets the watermark (the slowest source's newest ts); see MergeEngine::AdvanceWatermark.
  void AdvanceWatermark(std::int64_t watermark_ms);

  /// Declares the input complete; see MergeEngine::Close. Commit() afterwards to persist it.
  void Close();

  /// Sets (or with an empty function, removes) the receiver of the change feed; see
  /// MergeEngine::SetChangeSink. Changes are reported as shards are merged, before Commit().
  void SetChangeSink(ChangeSink sink);

  /// Stages a source position to be committed with the next batch.
  void StagePosition(const SourcePosition& position);

  /// Writes everything merged since the last commit and the staged positions atomically, as
  /// one WriteBatch: state and positions become durable together or not at all.
  ///
  /// With `pipelined` (the default) this takes the changes out of the engine on the caller's
  /// thread and hands them to the store's writer thread, which turns them into the batch's
  /// records and writes it while the caller merges the next batch; the call waits only while
  /// the writer has not yet built the previous batch (it is nearly always done).
  /// The commit is then durable once commits_durable() reaches its number (commits_made() right
  /// after the call): see WaitDurable(), Flush(). Without `pipelined` it returns once written.
  /// Batches are written in order, and after a failed write no later batch is written, so a
  /// position on disk is never ahead of the state on disk.
  /// Errors: Unavailable on an I/O failure such as a full disk, from this write or (pipelined)
  /// an earlier one; the error is sticky: every later Commit(), Flush() and WaitDurable()
  /// returns it, and nothing merged since the last durable commit is written.
  Status Commit();

  /// Waits until every commit is durable (to the configured sync level). Errors: as Commit().
  Status Flush();

  /// Waits until the RocksDB flushes and compactions scheduled so far have finished, e.g. the
  /// flushes that release write-ahead log files (StoreOptions::max_wal_bytes). For tests and
  /// benchmarks: nothing in the aggregator needs it. Errors: none so far (Status for the future).
  Status WaitForBackgroundWork();

  /// The number of commits this object has made (successful Commit() calls since Open()).
  std::uint64_t commits_made() const;
  /// The number of them that are durable; at most commits_made(). Thread-safe.
  std::uint64_t commits_durable() const;
  /// Waits until commit number `commit` (1 = the first Commit() since Open()) is durable.
  /// Errors: the write error if it (or an earlier commit) failed.
  Status WaitDurable(std::uint64_t commit);

  /// The position of `source` that the next run resumes from after this one's commits are
  /// written: as staged by the last Commit(), which may still be in flight (pipelined). Use
  /// DurablePosition() for what is on disk.
  std::optional<SourcePosition> Position(const std::string& source) const;
  /// The position of `source` as of the last durable commit (or as loaded at Open()), e.g. the
  /// offset that is safe to report to Kafka. Thread-safe.
  std::optional<SourcePosition> DurablePosition(const std::string& source) const;

  /// The canonical dump of the in-memory state (equal to the committed one after Flush()).
  std::string Dump() const;
  std::optional<std::string> Get(const core::Path& path) const;
  /// Who decided the visible value at `path` (see MergeEngine::Blame); nullopt if none.
  std::optional<Provenance> Blame(const core::Path& path) const;

  const ApplyCounts& counts() const;
  /// Sizes of the database and the process (a few RocksDB property reads).
  StoreStats Stats() const;
  std::int64_t watermark() const;
  std::size_t node_count() const;
  const std::string& dir() const { return dir_; }

 private:
  struct Impl;
  explicit StateStore(std::string dir);
  std::string dir_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::crdt
