// Time travel over recordings (DESIGN.md §10): the state as of a point of a recording (a cut),
// the leaf-by-leaf difference between two states, and the walk through a recording shard by shard
// with the visible changes each shard made. Everything here merges in memory (crdt::MergeEngine);
// `Replay` with ReplayOptions::until builds a cut into a state directory.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/path.h"
#include "lattice/core/status.h"
#include "lattice/crdt/types.h"

namespace lattice::ingest {

/// A point of a recording: which of its lines make up "the state as of" that point.
///
/// - kAll: every line.
/// - kTs: every shard with ts <= `ts`, read to the end of every file (a late line with a small
///   ts still counts). A blade's shards are taken in the order they arrive: once one of a blade's
///   shards is past `ts`, its later shards are left out too. With per-blade clocks that never go
///   backwards this is exactly "ts <= TS"; when a blade's clock did go backwards, the cut stays a
///   prefix of each blade's shards, which is what keeps a later replay that continues the same
///   state directory exact (a blade's skipped seq is never taken for an old duplicate).
/// - kLines: the first `lines` non-blank lines in replay order (bad lines included), the order
///   `lattice replay` merges them in (several files k-way by ts; each file in its own order).
struct Cut {
  enum class Kind : std::uint8_t { kAll, kTs, kLines };
  Kind kind = Kind::kAll;
  std::int64_t ts = 0;
  std::uint64_t lines = 0;

  static Cut All() { return {}; }
  static Cut UntilTs(std::int64_t ts) { return {Kind::kTs, ts, 0}; }
  static Cut FirstLines(std::uint64_t lines) { return {Kind::kLines, 0, lines}; }
};

/// Decides, line by line in replay order, which lines belong to a cut.
/// Thread safety: none. Memory: one entry per blade that went past a kTs cut.
class CutFilter {
 public:
  explicit CutFilter(Cut cut) : cut_(cut) {}

  /// Offers the next line in replay order. `decoded` says whether it decoded to a shard; `blade`
  /// and `ts` are that shard's (ignored otherwise). A kTs cut admits every line that did not
  /// decode (it has no ts; `Replay` dead-letters it).
  bool Admit(bool decoded, std::string_view blade, std::int64_t ts);

  /// True when no later line can be admitted (a kLines cut that is full), so reading may stop.
  bool Full() const { return cut_.kind == Cut::Kind::kLines && admitted_ >= cut_.lines; }

  const Cut& cut() const { return cut_; }

 private:
  Cut cut_;
  std::uint64_t admitted_ = 0;
  std::set<std::string, std::less<>> past_;  // blades with a shard past a kTs cut
};

/// Resolves a point in time as users write it: milliseconds since the epoch, an RFC 3339
/// date-time (core::ParseTimestampMs), or `+D` (a duration, core::ParseDurationMs) after the ts of
/// the first shard of `files` in replay order (FirstShardTs).
/// Errors: InvalidArgument for text that is none of these; those of FirstShardTs for `+D`.
Result<std::int64_t> ResolveTimestamp(std::string_view text, const std::vector<std::string>& files);

/// The ts of the first shard of `files` in replay order: the smallest, over the files, of the ts
/// of each file's first line that decodes. Errors: NotFound when no line decodes;
/// InvalidArgument for stdin ("-"), which cannot be read twice; LineReader's errors.
Result<std::int64_t> FirstShardTs(const std::vector<std::string>& files);

/// How in-memory time travel merges. The watermark advances every `batch_shards` admitted lines
/// and at the end, as `lattice replay --batch` does, so lateness decisions (and TTL, which
/// follows the watermark at the end) match a replay into a state directory.
struct TimeTravelOptions {
  crdt::EngineOptions engine;
  std::size_t batch_shards = 1 << 16;
};

/// What merging one cut did.
struct CutSummary {
  std::uint64_t lines = 0;             // lines admitted by the cut
  std::uint64_t applied = 0;           // shards merged
  std::uint64_t duplicates = 0;        // redeliveries of an applied (blade, seq)
  std::uint64_t rejected = 0;          // bad, conflicting, late or overflowing lines (not merged)
  std::optional<std::int64_t> max_ts;  // the largest ts merged
};

/// The state of a recording at one cut: its canonical dump and what merging it did.
struct CutState {
  std::string dump;  // canonical JSON with a trailing newline (crdt::MergeEngine::Dump)
  CutSummary summary;
};

/// Builds the in-memory state of `files` at each of `cuts` in one read of the files (one merge
/// engine per cut). Errors: those of reading the files (NotFound, InvalidArgument, Unavailable).
/// Cost: one decode of every line, one merge per cut that admits it; memory: one state per cut.
Result<std::vector<CutState>> StatesAt(const std::vector<std::string>& files,
                                       const std::vector<Cut>& cuts,
                                       const TimeTravelOptions& options);

/// One leaf that differs between two states. A leaf is a value that is not an object (a scalar,
/// an array, a counter's or max/min register's number) or an empty object; old/new are canonical
/// JSON, nullopt where the leaf is absent.
///
/// The changes of a diff, applied in order to the old state (an absent `new_json` removes the
/// path, and with it every ancestor object left empty except the root; a present one sets it,
/// creating missing ancestors), give exactly the new state.
struct LeafChange {
  std::string path;  // dotted, with `\.` escapes (core::Path::ToString)
  std::optional<std::string> old_json;
  std::optional<std::string> new_json;
};

/// Compares the values at `prefix` of two canonical JSON documents (e.g. two dumps) leaf by leaf,
/// in canonical key order (depth first); where a leaf turns into an object or back, the removals
/// come before the additions. Errors: Corruption if either text is not canonical JSON.
Result<std::vector<LeafChange>> DiffCanonical(std::string_view old_json, std::string_view new_json,
                                              const core::Path& prefix);

/// The value at `path` inside the canonical JSON document `json` (a view into it), or nullopt
/// when nothing is there. Errors: Corruption if `json` is not canonical JSON.
Result<std::optional<std::string_view>> CanonicalAt(std::string_view json, const core::Path& path);

/// What changed between two cuts of a recording, under a prefix.
struct DiffReport {
  CutSummary from;
  CutSummary to;
  std::vector<LeafChange> changes;
  std::uint64_t added = 0;
  std::uint64_t removed = 0;
  std::uint64_t changed = 0;
};

/// The leaf diff of the states of `files` at `from` and at `to` (StatesAt + DiffCanonical).
/// `from` may come after `to` (the diff then goes backwards). Errors: those of StatesAt.
Result<DiffReport> Diff(const std::vector<std::string>& files, const Cut& from, const Cut& to,
                        const core::Path& prefix, const TimeTravelOptions& options);

/// One step of a walk through a recording (Step): a shard and the visible changes it made under
/// the walk's prefix, or (`watermark`) the changes the final watermark made (TTL evictions).
struct StepEvent {
  bool watermark = false;
  std::uint64_t ordinal = 0;   // the line's number in replay order (1-based; --until-seq N
                               // gives the state right after step N)
  std::size_t file_index = 0;  // index into the walked files
  std::uint64_t line = 0;      // 1-based line number in that file
  std::uint64_t offset = 0;    // byte offset of the line (decompressed, for .zst)
  std::string blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;  // for a watermark step: the watermark
  std::string topic;    // Kafka provenance of the envelope, if it has one
  std::int64_t partition = -1;
  std::int64_t kafka_offset = -1;
  crdt::Outcome outcome = crdt::Outcome::kApplied;
  std::string reason;  // why a shard was rejected
  /// The changes under the prefix, in the order the engine reported them. A change at an
  /// ancestor of the prefix (an erase of `intents` seen from `intents.42`) is narrowed to the
  /// prefix, its old and new values taken at the prefix. Empty for a shard that wrote under the
  /// prefix but changed nothing visible there, or was rejected.
  std::vector<crdt::Change> changes;
};

struct StepOptions {
  /// The walk starts from the state at `from` (merged silently; the empty state by default) and
  /// goes through every later line in replay order that is within `until`.
  Cut from = Cut::FirstLines(0);
  Cut until = Cut::All();
  /// Only changes at, under or above this path.
  core::Path prefix;
  TimeTravelOptions merge;
};

/// What a walk did.
struct StepSummary {
  std::uint64_t lines = 0;    // lines walked (after `from`, within `until`)
  std::uint64_t steps = 0;    // events passed to `visit`
  std::uint64_t changes = 0;  // changes under the prefix
};

/// Walks `files` shard by shard, merging in memory, and calls `visit` for every shard that wrote
/// at, under or above `options.prefix` (changed something there or not, applied or rejected),
/// and for the final watermark if it changed something there. Folding the changes in order onto
/// the state at `from` gives the state at `until` under the prefix.
/// Errors: those of reading the files; InvalidArgument for stdin with a `from` other than the
/// empty state (the files are read twice).
Result<StepSummary> Step(const std::vector<std::string>& files, const StepOptions& options,
                         const std::function<void(const StepEvent&)>& visit);

/// Who decided the visible value at `path` in the state of `files` at `cut` (in memory, as
/// StatesAt builds it): crdt::MergeEngine::Blame, with every shard applied with its file (as named
/// in `files`) and line as its source. nullopt when nothing is visible at `path`.
/// Errors: those of reading the files.
Result<std::optional<crdt::Provenance>> BlameAt(const std::vector<std::string>& files,
                                                const Cut& cut, const core::Path& path,
                                                const TimeTravelOptions& options);

}  // namespace lattice::ingest
