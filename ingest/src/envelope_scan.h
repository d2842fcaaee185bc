// Private: a structural scan of an NDJSON envelope line that finds the top-level fields without
// building anything, so `lattice emit` can send the shard body bytes as they are.
#pragma once

#include <cstdint>
#include <string_view>

namespace lattice::ingest::internal {

struct EnvelopeFields {
  bool is_object = false;  // the line is one well-formed top-level object (structurally)
  std::string_view blade;  // raw text between the quotes of "blade" (escapes not decoded)
  bool blade_is_string = false;
  bool blade_has_escape = false;
  std::string_view seq;  // raw text of the values (numbers unparsed)
  std::string_view ts;
  std::string_view shard;  // the body's JSON text, exactly as in the line
  bool has_blade = false, has_seq = false, has_ts = false, has_shard = false;
};

/// Scans `line`. Structural only: strings are skipped by their quotes and escapes, nested values
/// by bracket depth. Values are not validated (the decoder does that). Cost: one pass.
EnvelopeFields ScanEnvelope(std::string_view line);

}  // namespace lattice::ingest::internal
