// The on-disk layout of a state directory: column families and meta keys (docs/state-layout.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include "lattice/core/status.h"

namespace lattice::crdt::internal {

inline constexpr std::string_view kStateCf = "state";        // encoded path -> node record
inline constexpr std::string_view kCountersCf = "counters";  // encoded path + 00 02 + blade -> slot
inline constexpr std::string_view kHistoryCf = "history";    // slot key + BE u64 commit -> entries
inline constexpr std::string_view kMetaCf = "meta";          // the keys below
// BE u64 commit number -> change-log record (kChangeLogFormat, then the node keys the commit wrote)
inline constexpr std::string_view kChangesCf = "changes";
inline constexpr std::uint8_t kChangeLogKeys = 1;  // format 1: 'P'|'D', varint length, key; ...
inline constexpr std::uint64_t kChangeLogCommits = 4096;  // entries kept (older ones are trimmed)

// Big-endian u64 of (due time XOR 2^63) + encoded path -> empty: the TTL index (time-ordered).
inline constexpr std::string_view kExpiryCf = "expiry";

inline std::string CommitKey(std::uint64_t commit) {
  std::string k;
  for (int shift = 56; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((commit >> shift) & 0xff));
  }
  return k;
}

inline constexpr std::string_view kFormatKey = "format";  // "lattice-state 5"
inline constexpr std::string_view kFormatValue = "lattice-state 5";
inline constexpr std::string_view kFormatPrefix = "lattice-state ";
inline constexpr std::string_view kClockKey = "clock";  // watermark, gc horizon, commits (varints)
// The TTL rules the `expiry` index was built for (ExpiryRulesKey()); absent = no rules.
inline constexpr std::string_view kTtlRulesKey = "ttl";
inline constexpr char kBladePrefix = 'b';               // 'b' + big-endian u32 id -> blade
inline constexpr char kPositionPrefix = 'p';            // 'p' + source -> offset, line varints
inline constexpr char kSourcePrefix = 's';  // 's' + big-endian u32 id -> source name (provenance)

/// The `expiry` key of the TTL node at encoded path `path` due at `due`: ordered by time, then
/// path, so the entries due by a horizon are a prefix of the column family.
inline std::string ExpiryKey(std::int64_t due, std::string_view path) {
  const std::uint64_t t = static_cast<std::uint64_t>(due) ^ (std::uint64_t{1} << 63);
  std::string k;
  k.reserve(8 + path.size());
  for (int shift = 56; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((t >> shift) & 0xff));
  }
  k.append(path);
  return k;
}

/// The due time of an `expiry` key (REQUIRES: key.size() >= 8); its path is key.substr(8).
inline std::int64_t ExpiryDue(std::string_view key) {
  std::uint64_t t = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    t = (t << 8) | static_cast<std::uint8_t>(key[i]);
  }
  return static_cast<std::int64_t>(t ^ (std::uint64_t{1} << 63));
}

inline std::string IdKey(char prefix, std::uint32_t id) {
  std::string k(1, prefix);
  for (int shift = 24; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((id >> shift) & 0xff));
  }
  return k;
}

/// The error for a state directory whose format marker is not kFormatValue.
inline Status WrongFormat(const std::string& dir, std::string_view format) {
  if (format.substr(0, kFormatPrefix.size()) == kFormatPrefix) {
    return Status::InvalidArgument("'" + dir + "' has state format '" + std::string(format) +
                                   "'; this lattice reads '" + std::string(kFormatValue) +
                                   "' only: replay its recordings into a new state directory");
  }
  return Status::Corruption("'" + dir + "' is not a Lattice state directory");
}

inline std::string BladeKey(std::uint32_t id) {
  std::string k(1, kBladePrefix);
  for (int shift = 24; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((id >> shift) & 0xff));
  }
  return k;
}

inline Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) {
    return Status::Ok();
  }
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace()) {
    return Status::Unavailable(msg + " (disk full)");
  }
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Status::Unavailable(msg + " (is another process using this state directory?)");
  }
  if (s.IsCorruption()) {
    return Status::Corruption(msg);
  }
  if (s.IsIOError() || s.IsBusy() || s.IsTryAgain()) {
    return Status::Unavailable(msg);
  }
  return Status::Internal(msg);
}

}  // namespace lattice::crdt::internal
