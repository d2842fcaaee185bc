// MergeEngine: the in-memory merge of shards into one CRDT state (DESIGN.md §3).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {

namespace internal {
class Engine;
}

/// Merges shards in any arrival order into the state DESIGN.md §3 defines: the result of applying
/// every distinct shard once in stamp order. Persistence is the StateStore's job; this class alone
/// is the hot state (used by the store, by benchmarks with persistence off, and by tests).
///
/// Thread safety: none; one engine is owned by one merge thread.
class MergeEngine {
 public:
  explicit MergeEngine(EngineOptions options = {});
  ~MergeEngine();
  MergeEngine(const MergeEngine&) = delete;
  MergeEngine& operator=(const MergeEngine&) = delete;

  /// Merges one decoded shard. Never fails as a call; the outcome says what happened.
  /// Cost: O(entries of the shard) in the common case; a late erase or replacement also walks
  /// the part of the replaced subtree that is newer than it.
  /// `source`, if given, is kept as the provenance of what the shard decides (Blame()); the
  /// engine interns the source name, so passing it costs a compare per shard.
  ApplyResult Apply(const core::Shard& shard, const ShardSource* source = nullptr);

  /// Tells the engine how far event time has progressed (the slowest source's newest ts). History
  /// older than watermark - allowed_lateness becomes final and is folded or dropped.
  void AdvanceWatermark(std::int64_t watermark_ms);

  /// Declares the input complete (the end of a replay): the watermark becomes the largest ts
  /// merged and the lateness horizon moves up to it, so every TTL eviction due by then happens —
  /// DESIGN.md §4's "after the last shard, the same for the watermark" — and history behind it is
  /// folded. A shard older than that arriving afterwards is late.
  void Close();

  /// Sets (or with an empty function, removes) the receiver of the change feed: every visible
  /// change of the state, synchronously, in the order it happens (docs/merge-rules.md, "Change
  /// events"). Off by default; when off it costs one predictable branch per shard.
  void SetChangeSink(ChangeSink sink);

  /// The canonical JSON of the whole visible state, with a trailing newline.
  std::string Dump() const;

  /// The canonical JSON of the value at `path`, or nullopt if nothing visible is there.
  std::optional<std::string> Get(const core::Path& path) const;

  /// Who decided the visible value at `path`, or nullopt if nothing visible is there: the newest
  /// write at or under it (blade, seq, ts, and the source position if the shard was applied with
  /// one) and, for a counter, each blade slot's sum with the blade's newest increment (for a
  /// max/min register, the winning entry). See docs/state-layout.md ("Provenance").
  std::optional<Provenance> Blame(const core::Path& path) const;

  const ApplyCounts& counts() const;

  /// Nodes held in memory, tombstones included (for metrics and tests of memory bounds).
  std::size_t node_count() const;

 private:
  std::unique_ptr<internal::Engine> engine_;
};

}  // namespace lattice::crdt
