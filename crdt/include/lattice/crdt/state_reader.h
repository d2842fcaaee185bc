// StateReader: reads a state directory without writing it (RocksDB read-only open).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/path.h"
#include "lattice/core/status.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {

/// What a visible leaf is.
enum class LeafKind : std::uint8_t { kScalar, kCounter, kMax, kMin };

/// One visible leaf value with the stamp of its newest write (for a counter, its newest
/// increment): who wrote it and when.
struct Leaf {
  core::Path path;
  std::string_view json;  // canonical JSON; valid during the visit only
  LeafKind kind = LeafKind::kScalar;
  std::string_view blade;  // empty if unknown; valid during the visit only
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
};

/// What a follower learned from one StateReader::CatchUp().
struct CatchUpResult {
  std::uint64_t commit = 0;    // the writer's commit counter now visible
  std::int64_t watermark = 0;  // the writer's watermark (event time, ms) at that commit
  /// True when the changes since the previous catch-up cannot be told exactly (the change log was
  /// trimmed past it, the state has no change log, or there were more than `max_changes`):
  /// `changes` is then empty and the caller must re-read what it shows.
  bool gap = false;
  /// The visible changes, one per path, in order of first appearance. See CatchUp().
  std::vector<Change> changes;
};

/// A read-only view of one state directory.
///
/// Open(): a RocksDB read-only instance, the state as of the moment it was opened.
/// OpenSecondary(): a RocksDB secondary instance that follows a writer (or a state no process
/// has open) with CatchUp(). Neither takes the writer's lock or writes the directory.
/// Thread safety: const methods may be called from several threads, also while one thread calls
/// CatchUp().
class StateReader {
 public:
  /// Errors: NotFound if `dir` holds no state; Corruption if it is not a Lattice state.
  static Result<std::unique_ptr<StateReader>> Open(const std::string& dir);
  /// Opens `dir` as a secondary instance whose own files (info log) go to `secondary_dir`
  /// (created if needed; must not be inside `dir`). Errors as Open().
  static Result<std::unique_ptr<StateReader>> OpenSecondary(const std::string& dir,
                                                            const std::string& secondary_dir);
  ~StateReader();

  /// Secondary only: catches up with the writer's newest commit and returns the changes since the
  /// previous call (or since the open, for the first call).
  ///
  /// From a format-1 change log (the state keys each commit wrote) a change is exact in `path`,
  /// `new_json`, the stamp and the cause (set for scalars and objects replacing values, counter
  /// for counter/max/min registers, erase for an erased path — one change at the erased subtree's
  /// root); `old_json` is the value this reader last reported at the path (nullopt if it never did;
  /// it remembers at most `kOldValues` paths). Errors: Unavailable if RocksDB fails to catch up;
  /// InvalidArgument on an Open() reader.
  Result<CatchUpResult> CatchUp(std::size_t max_changes = 100000);
  static constexpr std::size_t kOldValues = 200000;

  /// Whether the state has a change log (a `changes` column family) this reader follows.
  bool has_change_log() const;

  /// The writer's commit counter and watermark as of the last open or catch-up.
  std::uint64_t commit() const;
  std::int64_t watermark() const;

  /// The canonical JSON of the value at `path` (the whole state for the root), or nullopt.
  Result<std::optional<std::string>> Get(const core::Path& path) const;

  /// Who decided the visible value at `path` (see MergeEngine::Blame; the same answer from the
  /// committed records), or nullopt if nothing visible is there. Counter shares are in blade
  /// byte order. On a secondary the counter slots are read from a second secondary instance
  /// (its files in `secondary_dir`/counters), opened by the first call that needs them and caught
  /// up at each such call: the follower's CatchUp() does not replay them, so the shares may be a
  /// few commits newer than the value. Errors: Corruption on a malformed record; Unavailable on an
  /// I/O error.
  Result<std::optional<Provenance>> Blame(const core::Path& path) const;

  /// Calls `visit` with the path and canonical JSON of every visible leaf value under `prefix`
  /// (scalars, counters, max/min registers; empty objects are not leaves), in key order.
  Status Scan(const core::Path& prefix,
              const std::function<void(const core::Path&, std::string_view json)>& visit) const;

  /// Like Scan(), with each leaf's kind and stamp.
  Status ScanLeaves(const core::Path& prefix, const std::function<void(const Leaf&)>& visit) const;

  /// Streams the canonical dump (the whole state, trailing newline) to `write`.
  Status Dump(const std::function<void(std::string_view chunk)>& write) const;

  /// Every committed source position.
  std::vector<SourcePosition> Positions() const;

 private:
  struct Impl;
  StateReader();
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::crdt
