// LineEmitter: turns NDJSON lines into shards on Kafka for `lattice emit` (docs/cli.md).
//
// A line is an envelope when its top-level object has both a "blade" and a "shard" field
// (DESIGN.md §2.2): it keeps its own blade, seq and ts, so a recording is re-emitted faithfully
// (provenance fields are ignored). Any other line is a bare body, sent as a shard of the
// Emitter's blade with the Emitter's next seq and the given or current ts. With `bodies_only`
// every line is a bare body (for bodies that happen to have "blade" and "shard" keys).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/ingest/emitter.h"

namespace lattice::ingest {

struct LineEmitterOptions {
  bool bodies_only = false;
  /// Event time of bare bodies; unset: the current time.
  std::optional<std::int64_t> ts;
  /// Check every envelope's shard against the shard rules before sending (bare bodies are
  /// checked by the Emitter according to EmitterOptions::validate).
  bool validate = true;
};

struct LineEmitterReport {
  std::uint64_t lines = 0;
  std::uint64_t envelopes = 0;  // sent as envelopes
  std::uint64_t bodies = 0;     // sent as bare bodies
  std::uint64_t invalid = 0;    // refused (not sent)
};

/// Lines checked by LineEmitter::Check and not yet sent: their envelopes (blade, seq, ts, and the
/// body's bytes, copied in or, for lines checked as `stable`, where they are), bare bodies, or the
/// reason a line is refused. A batch is filled on one thread and sent on another (`lattice emit`
/// checks on a helper thread while its main thread produces); Clear() keeps the memory for the
/// next batch.
class CheckedLines {
 public:
  void Clear() {
    items_.clear();
    bytes_.clear();
    held_ = 0;
  }
  std::size_t size() const { return items_.size(); }
  /// Bytes of blades, bodies and reasons held, whether copied in or referred to where they are.
  std::size_t bytes() const { return held_; }

  /// Makes SendChecked(*this, i) send the lines grouped by blade: each run of envelopes between
  /// two other lines (a bare body or a refused line, which keep their places) is sent blade by
  /// blade, in the order each blade first appears, and each blade's envelopes in their own order.
  /// So each blade's shards keep their order in its partition; only blades sharing a partition
  /// interleave differently (two blades whose 32-bit hashes collide stay interleaved as in the
  /// lines). librdkafka then queues a partition's messages one after the other, and its broker
  /// thread reads them from adjacent memory instead of one cache line per message scattered
  /// among all partitions' (docs/benchmarks.md "Session 8 emit"). Call it once the batch is
  /// complete. If it changes their order, it copies the lines into the batch in that order (the
  /// bytes of `stable` lines too), so that the sending thread reads them front to back.
  void GroupByBlade();

 private:
  friend class LineEmitter;
  enum class Kind : std::uint8_t { kEnvelope, kBody, kRefused };
  struct Item {
    Kind kind;
    bool stable;               // blade and body are addresses of the line's own bytes
    std::uint32_t blade_size;  // kEnvelope
    std::uint32_t hash;        // kEnvelope: the blade's hash (GroupByBlade)
    std::uint64_t blade;       // offset in bytes_ (or the address, if stable)
    std::uint64_t body;        // the body's (or reason's) offset in bytes_ (or address)
    std::uint64_t size;        // body (or reason) bytes
    std::uint64_t number;
    std::uint64_t seq;
    std::int64_t ts;
  };
  static std::uint64_t Address(std::string_view s) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(s.data()));
  }
  std::string_view View(bool stable, std::uint64_t at, std::size_t size) const {
    return stable ? std::string_view(reinterpret_cast<const char*>(static_cast<std::uintptr_t>(at)),
                                     size)
                  : std::string_view(bytes_).substr(at, size);
  }
  std::string_view Blade(const Item& item) const {
    return View(item.stable, item.blade, item.blade_size);
  }
  std::string_view Body(const Item& item) const { return View(item.stable, item.body, item.size); }
  // The envelopes in items_[begin, end) by blade, into order_[begin, end); false if that is
  // their order already.
  bool GroupRun(std::uint32_t begin, std::uint32_t end);

  std::vector<Item> items_;
  std::string bytes_;
  std::size_t held_ = 0;
  // GroupByBlade's scratch, kept for the next batch.
  std::vector<std::uint32_t> order_;  // the item to send as i-th
  std::vector<Item> grouped_items_;   // items_ and bytes_ in that order, then swapped in
  std::string grouped_bytes_;
  std::vector<std::uint32_t> group_of_;   // each item's group
  std::vector<std::uint32_t> group_pos_;  // each group's size, then its next place in order_
  std::vector<std::uint64_t> slots_;      // hash table of the groups: hash << 32 | group + 1
};

/// Thread safety: Check() and CheckRefused() may run on one thread while SendChecked() and
/// report() run on another (the halves share no state); Add() and Reject() run both halves on the
/// calling thread. Nothing else is thread-safe. Cost per envelope line: one pass
/// (ShardDecoder::ValidateEnvelope) when validating, one structural scan when not, plus a copy of
/// the blade and body into the batch.
class LineEmitter {
 public:
  LineEmitter(Emitter& emitter, LineEmitterOptions options);
  ~LineEmitter();
  LineEmitter(const LineEmitter&) = delete;
  LineEmitter& operator=(const LineEmitter&) = delete;

  /// Sends one line: Check() and SendChecked() in one go. `padded`: at least 64 readable bytes
  /// follow `line` (no copy is made for the check). Errors: InvalidArgument "line N: <reason>"
  /// for a line that cannot be sent (counted in `invalid`; nothing was sent); Unavailable when
  /// the Emitter failed (fatal producer error).
  Status Add(std::string_view line, std::uint64_t number, bool padded = false);

  /// Counts line `number` as invalid without sending it; returns InvalidArgument
  /// "line N: <reason>".
  Status Reject(std::uint64_t number, std::string_view reason);

  /// The first half of Add: classifies and checks `line` and appends it (or why it is refused)
  /// to `out`; sends nothing and counts nothing. Bare bodies are checked when sent (by the
  /// Emitter, EmitterOptions::validate). `stable`: the line's bytes stay valid and unchanged
  /// until `out` is sent or cleared (e.g. a mapped file), so `out` refers to them where they are
  /// instead of copying them (a blade with escapes, or a body sent without its whitespace, is
  /// still copied).
  void Check(std::string_view line, std::uint64_t number, bool padded, CheckedLines& out,
             bool stable = false);
  /// Appends a line refused for `reason` (as Reject) to `out`.
  void CheckRefused(std::uint64_t number, std::string_view reason, CheckedLines& out);

  /// The second half of Add: sends item `i` of `lines` and counts it; returns what Add returns.
  Status SendChecked(const CheckedLines& lines, std::size_t i);

  const LineEmitterReport& report() const { return report_; }

 private:
  struct Impl;
  // Appends an envelope; refers to `blade` and `body` where they are if both lie in `stable`
  // (a stable line), or copies them.
  void AddEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                   std::string_view body, std::uint64_t number, CheckedLines& out,
                   std::string_view stable);
  // AddEnvelope for a line the decoder accepted: a body over the limit is sent without its
  // whitespace (or the line is refused when that is still over the limit).
  void AddValidEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                        std::string_view body, std::uint64_t number, CheckedLines& out,
                        std::string_view stable);
  Emitter& emitter_;
  LineEmitterOptions options_;
  LineEmitterReport report_;
  bool last_was_bare_ = false;  // the last line checked was a bare body (see Check)
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest
