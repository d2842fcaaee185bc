// Value types shared by the merge engine, the state store and their callers.
#pragma once

#include <cstdint>
#include <string>

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

/// Options of the merge engine (DESIGN.md §3).
struct EngineOptions {
  /// How far behind the watermark a shard may arrive and still be merged exactly, in ms.
  std::int64_t allowed_lateness_ms = 5 * 60 * 1000;
};

/// Where a source stands: the next byte/offset to read and how many lines (records) precede it.
/// `source` names the source: an absolute file path, or "topic/partition" for Kafka.
struct SourcePosition {
  std::string source;
  std::uint64_t offset = 0;
  std::uint64_t line = 0;
};

}  // namespace lattice::crdt
