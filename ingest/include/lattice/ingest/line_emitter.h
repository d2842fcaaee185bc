// LineEmitter: turns NDJSON lines into shards on Kafka for `lattice emit` (docs/cli.md).
//
// A line is an envelope when its top-level object has both a "blade" and a "shard" field
// (DESIGN.md §2.2): it keeps its own blade, seq and ts, so a recording is re-emitted faithfully
// (provenance fields are ignored). Any other line is a bare body, sent as a shard of the
// Emitter's blade with the Emitter's next seq and the given or current ts. With `bodies_only`
// every line is a bare body (for bodies that happen to have "blade" and "shard" keys).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

/// Thread safety: none. Cost per envelope line: one pass (ShardDecoder::ValidateEnvelope) when
/// validating, one structural scan when not.
class LineEmitter {
 public:
  LineEmitter(Emitter& emitter, LineEmitterOptions options);
  ~LineEmitter();
  LineEmitter(const LineEmitter&) = delete;
  LineEmitter& operator=(const LineEmitter&) = delete;

  /// Sends one line. `padded`: at least 64 readable bytes follow `line` (no copy is made).
  /// Errors: InvalidArgument "line N: <reason>" for a line that cannot be sent (counted in
  /// `invalid`; nothing was sent); Unavailable when the Emitter failed (fatal producer error).
  Status Add(std::string_view line, std::uint64_t number, bool padded = false);

  /// Counts line `number` as invalid without sending it; returns InvalidArgument
  /// "line N: <reason>".
  Status Reject(std::uint64_t number, std::string_view reason);

  const LineEmitterReport& report() const { return report_; }

 private:
  struct Impl;
  Status SendEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                      std::string_view body, std::uint64_t number);
  Emitter& emitter_;
  LineEmitterOptions options_;
  LineEmitterReport report_;
  bool last_was_bare_ = false;  // the last line was a bare body (see Add)
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::ingest
