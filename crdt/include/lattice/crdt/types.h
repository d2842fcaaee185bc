// Value types shared by the merge engine, the state store and their callers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lattice::crdt {

/// What happened to one shard offered to the engine.
enum class Outcome : std::uint8_t {
  kApplied,    // merged (possibly changing nothing visible, e.g. an older write under a newer one)
  kDuplicate,  // this (blade, seq) was applied before with the same body: nothing changes
  kConflict,   // this (blade, seq) was applied before with a different body: dead-lettered
  kLate,       // older than what the kept stamps can decide exactly: dead-lettered
  kInvalid,    // would overflow a counter: dead-lettered
};

/// The outcome and, for anything but kApplied/kDuplicate, the reason.
struct ApplyResult {
  Outcome outcome = Outcome::kApplied;
  std::string reason;
};

/// Running totals of outcomes.
struct ApplyCounts {
  std::uint64_t applied = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t late = 0;
  std::uint64_t invalid = 0;
  /// TTL (DESIGN.md §4): evictions done (a whole subtree, or what a subtree held before an idle
  /// gap longer than its duration) and counter slots folded into their counter's retired sum.
  std::uint64_t evicted = 0;
  std::uint64_t folded_slots = 0;
  /// Entries of the time-ordered TTL index taken up when their time came (a TTL subtree decided,
  /// or an entry left stale by a newer one): eviction costs this much, however large the state.
  std::uint64_t ttl_visits = 0;
  void Add(Outcome o) {
    switch (o) {
      case Outcome::kApplied: ++applied; break;
      case Outcome::kDuplicate: ++duplicates; break;
      case Outcome::kConflict: ++conflicts; break;
      case Outcome::kLate: ++late; break;
      case Outcome::kInvalid: ++invalid; break;
    }
  }
};

/// A TTL rule (DESIGN.md §4): a subtree at a path matching `pattern` (keys from the root; "*"
/// matches any one key) is evicted when nothing under it was written for `duration_ms`, in event
/// time. Written `intents.*=1h` (lattice/crdt/ttl.h parses it).
struct TtlRule {
  std::vector<std::string> pattern{};
  std::int64_t duration_ms = 0;
};

/// What time TTL eviction follows: event time (the default, replay-exact) or the wall clock of the
/// merging process (for live use; not replay-exact). See docs/configuration.md.
enum class TtlClock : std::uint8_t { kEventTime, kWallClock };

/// Options of the merge engine (DESIGN.md §3, §4).
struct EngineOptions {
  /// How far behind the watermark a shard may arrive and still be merged exactly, in ms.
  std::int64_t allowed_lateness_ms = 5 * 60 * 1000;
  /// TTL rules; where several match one path, the shortest duration applies.
  std::vector<TtlRule> ttl{};
  TtlClock ttl_clock = TtlClock::kEventTime;
  /// A counter's blade slot untouched this long (event time, behind the lateness horizon) is
  /// folded into the counter's retired sum; 0 = never. Integer counters only.
  std::int64_t counter_slot_ttl_ms = 0;
  /// A blade silent this long gives up its window of recent seqs: any seq up to its last applied
  /// one is then a duplicate. Default 7 days.
  std::int64_t blade_ttl_ms = 7LL * 24 * 3600 * 1000;
};

/// Where a source stands: the next byte/offset to read and how many lines (records) precede it.
/// `source` names the source: an absolute file path, or "topic/partition" for Kafka.
struct SourcePosition {
  std::string source;
  std::uint64_t offset = 0;
  std::uint64_t line = 0;
};

/// Where one shard came from, passed with it to Apply() for provenance (`lattice blame`):
/// `source` is an absolute file path with the shard's 1-based `line` and the byte `offset` of
/// that line, or "topic/partition" with the Kafka `offset` (line 0). The engine copies what it
/// keeps; the view need only live for the call.
struct ShardSource {
  std::string_view source;
  std::uint64_t offset = 0;
  std::uint64_t line = 0;
};

/// Who decided the visible value at a path (DESIGN.md §10, `lattice blame`).
struct Provenance {
  /// A shard: its stamp and, if it was applied with a ShardSource, where it came from.
  struct Writer {
    std::string blade;
    std::uint64_t seq = 0;
    std::int64_t ts = 0;
    std::string source;  // empty: not known (applied without a source)
    std::uint64_t offset = 0;
    std::uint64_t line = 0;
  };
  /// One slot of a counter (per blade), or the winning entry of a max/min register.
  struct Share {
    std::string blade;
    std::string value_json;  // the slot's sum (counter) or the winning value (max/min)
    std::uint64_t seq = 0;   // counter: the blade's newest increment here; max/min: the winner's
    std::int64_t ts = 0;
  };
  /// "object", "value" (string, number, bool or array), "counter", "max" or "min".
  std::string kind;
  std::string value_json;  // the visible value (canonical JSON)
  /// The newest write at or under the path: for a value the shard that set it; for an object the
  /// newest write anywhere under it; for a register its newest operation.
  Writer writer;
  std::vector<Share> shares;  // counters: by blade name; max/min: the winner
  /// Counters: the sum of blade slots folded away after `counter_slot_ttl` (nullopt: none).
  std::optional<std::string> retired_json;
};

/// Why a visible value changed (DESIGN.md §6).
enum class ChangeCause : std::uint8_t {
  kSet,      // a shard wrote a scalar or object (or replaced a value of another type)
  kErase,    // a shard wrote null over the path (or an ancestor)
  kCounter,  // a $inc / $max / $min changed the visible number
  kEvict,    // a TTL rule removed the subtree (DESIGN.md §4)
};

/// The wire name of a cause: set / erase / counter / evict.
inline std::string_view ChangeCauseName(ChangeCause cause) {
  switch (cause) {
    case ChangeCause::kSet: return "set";
    case ChangeCause::kErase: return "erase";
    case ChangeCause::kCounter: return "counter";
    case ChangeCause::kEvict: return "evict";
  }
  return "set";
}

/// One visible change of the merged state: the value at `path` went from `old_json` to
/// `new_json` (canonical JSON; nullopt = nothing visible there). Emitted at the highest path whose
/// visible value changed as one unit (an erased subtree is one change at its root). The stamp is
/// the shard's (blade, seq, ts) that caused it; for an eviction, the ts that triggered it.
///
/// Wire form (topic `lattice.changes`, the observer's live stream, `lattice step --json`):
///   {"path":"nodes.b1.status","old":"waiting","new":"working",
///    "stamp":{"blade":"b1","seq":42,"ts":1732350000123},"cause":"set"}
/// with `old` / `new` null when absent and cause one of set / erase / counter / evict.
struct Change {
  std::string path;  // dotted, with `\.` escapes (core::Path::ToString)
  std::optional<std::string> old_json;
  std::optional<std::string> new_json;
  std::string blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  ChangeCause cause = ChangeCause::kSet;
};

/// Receives changes synchronously on the merging thread, in the order they happen. Must not call
/// back into the engine; copy what it needs.
using ChangeSink = std::function<void(const Change&)>;

}  // namespace lattice::crdt
