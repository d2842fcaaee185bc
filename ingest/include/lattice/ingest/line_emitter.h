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
///
/// With `group_by_blade`, SendChecked sends the lines grouped by blade: each run of envelopes
/// between two other lines (a bare body or a refused line, which keep their places) is sent blade
/// by blade, in the order each blade first appears, and each blade's envelopes in their own order.
/// So each blade's shards keep their order in its partition; only blades sharing a partition
/// interleave differently (two blades whose 32-bit hashes collide stay interleaved as in the
/// lines). librdkafka then queues a partition's messages one after the other, and its broker
/// thread reads them from adjacent memory instead of one cache line per message scattered among
/// all partitions' (docs/benchmarks.md "Session 8 emit"). The lines are grouped as they are
/// checked: each line is copied, while it is hot, to the end of its group's own buffer (the bytes
/// of `stable` lines too), and the sending thread reads each group front to back, one after the
/// other (docs/benchmarks.md "Session 10 emit").
class CheckedLines {
 public:
  explicit CheckedLines(bool group_by_blade = false) : group_(group_by_blade) {}
  CheckedLines(const CheckedLines&) = delete;
  CheckedLines& operator=(const CheckedLines&) = delete;

  void Clear();
  /// Lines held.
  std::size_t size() const { return lines_; }
  /// Bytes of blades, bodies and reasons held, whether copied in or referred to where they are.
  std::size_t bytes() const { return held_; }

  /// A place in the order the lines are sent in: LineEmitter::SendChecked sends the line there
  /// and moves on. Starts at the first line.
  struct Cursor {
    std::size_t part = 0;
    std::size_t at = 0;
  };
  /// True once `c` is past the last line.
  bool Done(const Cursor& c) const { return c.part >= parts_used_; }

 private:
  friend class LineEmitter;
  // A line is a record in a part: a Header, then the blade's and the body's bytes (the reason's
  // for a refused line; padded to 8 bytes), or, for the *At kinds, the addresses of the bytes
  // where they are (a stable line). The parts are sent one after the other, each front to back.
  // Grouped, each run of envelopes has one part per group (a blade, or blades whose hashes
  // collide); other lines go to a part of their own. Ungrouped, all lines go to one part.
  enum Kind : std::uint32_t { kEnvelope, kEnvelopeAt, kBody, kBodyAt, kRefused };
  struct Header {
    std::uint32_t tag;   // Kind | blade bytes << 3
    std::uint32_t size;  // body (or reason) bytes
    std::uint64_t number;
    std::uint64_t seq;
    std::int64_t ts;
  };
  static constexpr std::size_t kSlack = 32;          // writable bytes past a part's end
  static constexpr std::size_t kMaxKept = 16 << 20;  // parts' memory Clear() keeps at most
  static constexpr std::size_t Pad8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }
  static std::uint32_t Tag(Kind kind, std::size_t blade_size);
  // Writes a record with the bytes `a` and `b` copied in at `r`.
  static void PutCopy(char* r, const Header& h, std::string_view a, std::string_view b);
  // Writes a record referring to `a` and `b` where they are at `r`.
  static void PutAt(char* r, const Header& h, const char* a, const char* b);
  static constexpr std::size_t kAtSize = sizeof(Header) + 2 * sizeof(std::uint64_t);
  class Part {
   public:
    // Room for `n` bytes (and kSlack after them) at the end; the caller writes them.
    char* Extend(std::size_t n) {
      if (cap_ - size_ < n + kSlack) [[unlikely]] {
        Grow(n);
      }
      char* p = data_.get() + size_;
      size_ += n;
      return p;
    }
    void Shrink(std::size_t size) { size_ = size; }
    void Clear() { size_ = 0; }
    std::size_t size() const { return size_; }
    std::size_t capacity() const { return cap_; }
    const char* data() const { return data_.get(); }

   private:
    void Grow(std::size_t n);
    std::unique_ptr<char[]> data_;
    std::size_t size_ = 0;
    std::size_t cap_ = 0;
  };
  // The part an envelope of blade hash `hash` goes to (LineEmitter::AddEnvelope).
  Part& EnvelopePart(std::uint32_t hash) {
    if (!group_) {
      return OtherPart();
    }
    if (!slots_.empty()) {
      // The common case: the blade's group, at its hash's own slot.
      const std::uint64_t slot = slots_[hash & (slots_.size() - 1)];
      const std::uint32_t p = static_cast<std::uint32_t>(slot) - 1;  // ~0 if free
      if (slot >> 32 == hash && p - run_begin_ < parts_used_ - run_begin_) {
        return parts_[p];
      }
    }
    return GroupPart(hash);
  }
  // The part a bare body or refused line goes to: it ends a run of grouped envelopes.
  Part& OtherPart() {
    if (other_part_ == kNoPart) [[unlikely]] {
      other_part_ = NewPart();
      run_begin_ = parts_used_;
    }
    return parts_[other_part_];
  }
  Part& GroupPart(std::uint32_t hash);
  std::uint32_t NewPart();
  void GrowTable();

  static constexpr std::uint32_t kNoPart = ~std::uint32_t{0};
  const bool group_;
  std::size_t lines_ = 0;
  std::size_t held_ = 0;
  std::vector<Part> parts_;  // [0, parts_used_) hold this batch's lines, in send order
  std::uint32_t parts_used_ = 0;
  std::uint32_t other_part_ = kNoPart;  // the last part, if it takes lines in line order
  // Grouped: the current run's groups are parts [run_begin_, parts_used_); slots_ maps a hash to
  // its group (hash << 32 | part + 1; an entry of a part before run_begin_ is free).
  std::uint32_t run_begin_ = 0;
  std::vector<std::uint64_t> slots_;
  std::vector<std::uint32_t> part_hash_;  // each group part's hash (GrowTable)
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
  /// Tells Check that the lines it gets next lie in `text`, in order (a mapped file's lines), so
  /// that the decoder checks many at a time (core::ShardDecoder::ExpectLines). Same results.
  void ExpectLines(std::string_view text);
  /// Appends a line refused for `reason` (as Reject) to `out`.
  void CheckRefused(std::uint64_t number, std::string_view reason, CheckedLines& out);

  /// The second half of Add: sends the line of `lines` at `at`, counts it and moves `at` to the
  /// next line; returns what Add returns. REQUIRES: !lines.Done(at).
  Status SendChecked(const CheckedLines& lines, CheckedLines::Cursor& at);

  const LineEmitterReport& report() const { return report_; }

 private:
  struct Impl;
  // The line being checked (Check's arguments).
  struct Source {
    std::string_view line;
    bool stable = false;
    bool padded = false;
  };
  // Appends an envelope; in line order, refers to `blade` and `body` where they are if both lie
  // in a stable line, or copies them.
  void AddEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                   std::string_view body, std::uint64_t number, CheckedLines& out,
                   const Source& src);
  // AddEnvelope for a line the decoder accepted: a body over the limit is sent without its
  // whitespace (or the line is refused when that is still over the limit).
  void AddValidEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                        std::string_view body, std::uint64_t number, CheckedLines& out,
                        const Source& src);
  Emitter& emitter_;
  LineEmitterOptions options_;
  LineEmitterReport report_;
  bool last_was_bare_ = false;  // the last line checked was a bare body (see Check)
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest
