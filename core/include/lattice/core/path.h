// Paths into the merged state and their byte encoding as RocksDB keys.
//
// A path is a sequence of object keys (any UTF-8 strings, including empty ones and ones with dots).
// Users write paths dotted: `intents.42.host`; a literal dot or backslash inside a key is escaped
// with a backslash (`hosts.example\.com.up`). The empty string is the root; an empty key is an
// empty segment (`a..b`), or `\e` as a whole segment — the only spelling of the one-segment path
// [""], which ToString() writes as `\e`.
//
// The key encoding makes a subtree one contiguous key range and keeps byte order of keys: each
// segment is written with 0x00 escaped as 0x00 0xFF and terminated by 0x00 0x01. So the encoding of
// `p` is a prefix of the encoding of everything under `p`, and iterating keys in order visits a
// subtree depth-first with children in byte order of their keys — the canonical dump order.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::core {

/// A path: the keys from the root down. Empty means the root.
class Path {
 public:
  Path() = default;
  explicit Path(std::vector<std::string> segments) : segments_(std::move(segments)) {}

  /// Parses a dotted path with backslash escapes. Errors: InvalidArgument on a dangling backslash,
  /// an escape of anything but `.`, `\` and `e`, or a `\e` that is not a whole segment.
  static Result<Path> Parse(std::string_view dotted);

  /// The dotted form, escaping `.` and `\` inside keys. Parse(ToString()) round-trips.
  std::string ToString() const;

  const std::vector<std::string>& segments() const { return segments_; }
  bool empty() const { return segments_.empty(); }
  std::size_t size() const { return segments_.size(); }

  /// The order-preserving key encoding of this path (see the file comment).
  std::string Encode() const;

  /// Decodes a key made by Encode() (optionally followed by a suffix starting with 0x00 0x02,
  /// which is returned in `rest`). Errors: Corruption on a malformed key.
  struct Decoded;
  static Result<Decoded> Decode(std::string_view key);

  bool operator==(const Path& other) const = default;

 private:
  std::vector<std::string> segments_;
};

struct Path::Decoded {
  Path path;
  std::string_view rest;  // bytes after the last segment (empty for a plain node key)
};

/// Appends the encoding of one segment to `out`.
void AppendEncodedSegment(std::string& out, std::string_view segment);

/// The marker that starts a suffix after an encoded path (e.g. a counter slot's blade).
inline constexpr std::string_view kKeySuffixMarker{"\x00\x02", 2};

}  // namespace lattice::core
