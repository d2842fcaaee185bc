// The shard model: an envelope (blade, seq, ts) and a body flattened into merge operations, and the
// decoder that turns untrusted JSON into it (DESIGN.md §2).
//
// The body is flattened depth-first into BodyEntry records: an object value becomes a kObject
// entry followed by its children (depth + 1), so the merge walks one flat vector with a node stack
// and never copies a path. The decoder validates everything before returning: a shard that comes
// back ok is applied whole; a bad one comes back as InvalidArgument with the path and the reason.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/json_text.h"
#include "lattice/core/status.h"

namespace lattice::core {

/// What a body entry does at its path (DESIGN.md §3).
enum class OpKind : std::uint8_t {
  kObject,  // make sure an object exists here (children follow)
  kSet,     // set a plain value (string, number, bool, array): `value` holds canonical JSON
  kErase,   // null: remove the path and everything under it
  kInc,     // {"$inc": n}
  kMax,     // {"$max": n}
  kMin,     // {"$min": n}
};

/// One key of the body with what happens there.
struct BodyEntry {
  std::string_view key;     // the key, unescaped ($$name already turned into $name)
  std::uint32_t depth = 0;  // 1 for the keys of the body object itself
  std::uint32_t end = 0;    // index one past the last entry of this entry's subtree
  OpKind kind = OpKind::kObject;
  std::string_view value;  // kSet: the value as canonical JSON text
  Number number;           // kInc, kMax, kMin: the operand
};

/// A decoded shard. Its views point into the decoder that produced it and stay valid until that
/// decoder decodes again.
struct Shard {
  std::string_view blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  std::vector<BodyEntry> entries;
  /// Hash of ts and the canonical body: two deliveries of one (blade, seq) with different hashes
  /// are a conflict.
  std::uint64_t hash = 0;
  bool has_int_inc = false;       // some kInc has an integer operand
  bool has_float_inc = false;     // some kInc has a floating-point operand
  std::uint64_t max_abs_inc = 0;  // largest |operand| of an integer kInc (saturating)
  // Optional provenance from a recording made by `lattice record`.
  std::string_view topic;
  std::int64_t partition = -1;
  std::int64_t offset = -1;
};

/// An envelope line checked by ShardDecoder::ValidateEnvelope: its fields, and the body's bytes.
struct CheckedEnvelope {
  std::string_view blade;  // unescaped; points into the line or into the decoder
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  std::string_view body;  // the "shard" value exactly as written: a view into the line
  bool no_backslash = false;  // the line is known to hold no backslash (false: not known)
};

/// Limits applied to untrusted shards (DESIGN.md §2.3).
struct DecodeLimits {
  std::size_t max_body_bytes = 1 << 20;  // 1 MiB
  std::uint32_t max_depth = 64;          // nesting of the body, the body object being 1
  std::size_t max_blade_bytes = 256;
};

/// Decodes NDJSON envelopes and bare bodies into Shards.
///
/// Errors: InvalidArgument with a precise reason (which field or path, what is wrong) for invalid
/// JSON, invalid UTF-8, wrong envelope types, a body that is not an object, duplicate keys, unknown
/// operators, an operator beside other keys or at the top, a non-number operand, an integer out of
/// the signed 64-bit range, nesting deeper than max_depth, and a body over max_body_bytes.
/// Thread safety: none; use one decoder per thread. Cost: one simdjson parse plus a linear walk.
class ShardDecoder {
 public:
  explicit ShardDecoder(DecodeLimits limits = {});
  ~ShardDecoder();
  ShardDecoder(const ShardDecoder&) = delete;
  ShardDecoder& operator=(const ShardDecoder&) = delete;

  /// Decodes one envelope line `{"blade","seq","ts","shard"[,"topic","partition","offset"]}`.
  /// If `padded`, at least 64 readable bytes follow `line` in memory and no copy is made.
  Result<const Shard*> DecodeEnvelope(std::string_view line, bool padded = false);

  /// Checks one envelope line against every rule DecodeEnvelope applies, for a caller that sends
  /// the body on as it is (`lattice emit`): it fails exactly when DecodeEnvelope fails, with the
  /// same status, but a good body is neither flattened nor hashed. `blade` stays valid until the
  /// decoder's next call; `body` as long as `line`. If `padded` and the byte after `line` is
  /// white space or NUL (a LineReader line), the token walk reads the line where it is (no copy).
  /// Cost: about 60% of DecodeEnvelope for the common shapes (the token walk without building);
  /// other lines are decoded in full.
  Result<CheckedEnvelope> ValidateEnvelope(std::string_view line, bool padded = false);

  /// Tells ValidateEnvelope that the lines it gets next lie in `text`, in order, as a file's
  /// lines (`text` stays valid and unchanged while they are checked; nothing past it is read).
  /// A line in `text`, followed by white space and ending at least kPadding bytes before its
  /// end, is then checked over one run of simdjson's stage 1 for many lines (a piece of up to
  /// 8 KiB) instead of one of its own. Results are exactly those without; lines anywhere else
  /// are checked alone. Lines may be skipped (the next line then starts a new piece). An empty
  /// `text` ends this (call it before `text` goes away if the decoder is used on).
  void ExpectLines(std::string_view text);
  /// Lines ValidateEnvelope (or bodies DecodeBody) accepted over a piece since construction.
  std::uint64_t PieceLinesForTesting() const;

  /// ExpectLines for DecodeBody: the bodies it gets next lie in `text`, in order (`text` stays
  /// valid and unchanged while they are decoded and while their shards are used; nothing past it
  /// is read). A body in `text`, followed by white space and ending at least kPadding bytes before
  /// its end, is then walked over one run of stage 1 for many bodies; its shard's keys may point
  /// into `text`. Results are exactly those without. ValidateEnvelope takes no pieces meanwhile.
  /// An empty `text` ends this.
  void ExpectBodies(std::string_view text);

  /// Decodes a bare body (e.g. a Kafka message value) with the envelope given separately.
  Result<const Shard*> DecodeBody(std::string_view body, std::string_view blade, std::uint64_t seq,
                                  std::int64_t ts);

  const DecodeLimits& limits() const { return limits_; }

  /// The decoder's walks, fastest first. Each one either decodes a shard exactly as the careful
  /// walk would or hands it on to the next: the token walk (over simdjson's structural index,
  /// for the common shapes), the tape walk (over simdjson's DOM tape, no messages), and the
  /// careful walk (DOM, builds the reasons). Only tests and the fuzz target choose one.
  enum class Walk : std::uint8_t { kToken, kTape, kCareful };
  /// Makes the decoder start at `first` (default kToken): kCareful runs only the careful walk.
  void SetFirstWalkForTesting(Walk first);
  /// The walk that produced the last result (ok or not).
  Walk LastWalkForTesting() const;

  /// Bytes of padding a caller must provide after a line to pass `padded = true`.
  static constexpr std::size_t kPadding = 64;

 private:
  struct Impl;
  // DecodeEnvelope after the token walk handed the line on: the tape and careful walks.
  Result<const Shard*> DecodeEnvelopeAfterTokenWalk(std::string_view line, bool padded);
  DecodeLimits limits_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::core
