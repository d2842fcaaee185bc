// Byte encodings of the records the state store keeps: varints, stamps and numbers.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/json_text.h"

namespace lattice::crdt::internal {

inline void PutVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

/// Writes `v` as a varint at `p` (at most kMaxVarint bytes) and returns the end.
inline constexpr std::size_t kMaxVarint = 10;
inline char* PutVarintTo(char* p, std::uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

inline std::uint64_t ZigZag(std::int64_t v) {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
inline std::int64_t UnZigZag(std::uint64_t v) {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

/// A cursor over a record; every read reports failure instead of reading past the end.
class RecordReader {
 public:
  explicit RecordReader(std::string_view data) : data_(data) {}
  bool Varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) {
        return false;
      }
      const auto b = static_cast<std::uint8_t>(data_[pos_++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        return true;
      }
    }
    return false;
  }
  bool Byte(std::uint8_t& b) {
    if (pos_ >= data_.size()) {
      return false;
    }
    b = static_cast<std::uint8_t>(data_[pos_++]);
    return true;
  }
  bool Bytes(std::size_t n, std::string_view& out) {
    if (data_.size() - pos_ < n) {
      return false;
    }
    out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool Number(core::Number& n) {
    std::uint8_t tag;
    if (!Byte(tag)) {
      return false;
    }
    if (tag == 0) {
      std::uint64_t v;
      if (!Varint(v)) {
        return false;
      }
      n = core::Number::Int(UnZigZag(v));
      return true;
    }
    std::string_view raw;
    if (tag != 1 || !Bytes(8, raw)) {
      return false;
    }
    double d;
    std::memcpy(&d, raw.data(), 8);
    n = core::Number::Double(d);
    return true;
  }
  std::string_view Rest() {
    std::string_view r = data_.substr(pos_);
    pos_ = data_.size();
    return r;
  }
  bool AtEnd() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

/// Writes a number record field at `p` (at most kMaxNumber bytes) and returns the end.
inline constexpr std::size_t kMaxNumber = 1 + 8 + kMaxVarint;
inline char* PutNumberTo(char* p, const core::Number& n) {
  if (n.is_int) {
    *p++ = '\0';
    return PutVarintTo(p, ZigZag(n.i));
  }
  *p++ = '\1';
  std::memcpy(p, &n.d, 8);
  return p + 8;
}

inline void PutNumber(std::string& out, const core::Number& n) {
  if (n.is_int) {
    out.push_back('\0');
    PutVarint(out, ZigZag(n.i));
  } else {
    out.push_back('\1');
    char raw[8];
    std::memcpy(raw, &n.d, 8);
    out.append(raw, 8);
  }
}

/// Appends record fields to a string through a stack buffer: one append per few hundred bytes
/// instead of a capacity check per byte (a commit encodes tens of thousands of records on the
/// merge thread). The fields reach `out` when the writer is flushed or destroyed.
class RecordWriter {
 public:
  explicit RecordWriter(std::string& out) : out_(out) {}
  ~RecordWriter() { Flush(); }
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  void Byte(std::uint8_t b) {
    Room(1);
    *p_++ = static_cast<char>(b);
  }
  void Varint(std::uint64_t v) {
    Room(kMaxVarint);
    p_ = PutVarintTo(p_, v);
  }
  void Number(const core::Number& n) {
    Room(1 + 8 + kMaxVarint);
    if (n.is_int) {
      *p_++ = '\0';
      p_ = PutVarintTo(p_, ZigZag(n.i));
    } else {
      *p_++ = '\1';
      std::memcpy(p_, &n.d, 8);
      p_ += 8;
    }
  }
  void Bytes(std::string_view s) {
    if (s.size() <= kBuffer / 4) {
      Room(s.size());
      std::memcpy(p_, s.data(), s.size());
      p_ += s.size();
    } else {
      Flush();
      out_.append(s);
    }
  }
  void Flush() {
    out_.append(buf_, static_cast<std::size_t>(p_ - buf_));
    p_ = buf_;
  }
  /// Raw access for hot encoders: a pointer with room for `n` (<= 256) bytes; Advance() to the
  /// end of what was written there.
  char* Reserve(std::size_t n) {
    Room(n);
    return p_;
  }
  void Advance(char* end) { p_ = end; }

 private:
  static constexpr std::size_t kBuffer = 512;
  void Room(std::size_t n) {
    if (static_cast<std::size_t>(buf_ + kBuffer - p_) < n) {
      Flush();
    }
  }
  std::string& out_;
  char buf_[kBuffer];
  char* p_ = buf_;
};

/// A stamp as stored: ts, blade id + 1 (0 = none), seq.
struct RawStamp {
  std::int64_t ts = 0;
  std::uint64_t blade = 0;
  std::uint64_t seq = 0;
};

inline bool ReadRawStamp(RecordReader& r, RawStamp& s) {
  std::uint64_t ts;
  if (!r.Varint(ts) || !r.Varint(s.blade) || !r.Varint(s.seq)) {
    return false;
  }
  s.ts = UnZigZag(ts);
  return true;
}

/// Node record format 2 (docs/state-layout.md):
///   u8 2, u8 kind, stamp last, stamp reset, varint source id + 1 (0 = unknown), varint offset,
///   varint line, u8 flags (bit 0: TTL state follows),
///   [TTL state: zigzag newest final write ts, varint n, n x zigzag pending write ts],
///   then by kind: scalar -> the canonical JSON (rest of the record); register -> stamp boundary,
///   number total, u8 has_retired, [number retired].
inline constexpr std::uint8_t kNodeFormat = 2;
inline constexpr std::uint8_t kKindScalar = 2;  // Kind values as stored (engine.h)
inline constexpr std::uint8_t kKindCounter = 3;
inline constexpr std::uint8_t kKindMin = 5;

struct NodeRecord {
  std::uint8_t kind = 0;
  RawStamp last;
  RawStamp reset;
  std::uint64_t source = 0;
  std::uint64_t offset = 0;
  std::uint64_t line = 0;
  bool has_ttl = false;
  std::int64_t ttl_final = 0;
  std::vector<std::int64_t> ttl_pending;
  std::string_view scalar;
  RawStamp boundary;
  core::Number total;
  bool has_retired = false;
  core::Number retired;
};

/// Decodes a node record; false if it is malformed or of another format.
inline bool DecodeNodeRecord(std::string_view value, NodeRecord& n) {
  RecordReader r(value);
  std::uint8_t format, flags;
  if (!r.Byte(format) || format != kNodeFormat || !r.Byte(n.kind) || n.kind > kKindMin ||
      !ReadRawStamp(r, n.last) || !ReadRawStamp(r, n.reset) || !r.Varint(n.source) ||
      !r.Varint(n.offset) || !r.Varint(n.line) || !r.Byte(flags)) {
    return false;
  }
  n.has_ttl = (flags & 1) != 0;
  n.ttl_pending.clear();
  if (n.has_ttl) {
    std::uint64_t v, count;
    if (!r.Varint(v) || !r.Varint(count) || count > value.size()) {
      return false;
    }
    n.ttl_final = UnZigZag(v);
    for (std::uint64_t i = 0; i < count; ++i) {
      if (!r.Varint(v)) {
        return false;
      }
      n.ttl_pending.push_back(UnZigZag(v));
    }
  }
  if (n.kind == kKindScalar) {
    n.scalar = r.Rest();
  } else if (n.kind >= kKindCounter) {
    std::uint8_t has_retired;
    if (!ReadRawStamp(r, n.boundary) || !r.Number(n.total) || !r.Byte(has_retired)) {
      return false;
    }
    n.has_retired = has_retired != 0;
    if (n.has_retired && !r.Number(n.retired)) {
      return false;
    }
  }
  return true;
}

/// Slot record (counters CF), format of state 4:
///   u8 has_base, [number base, stamp base_stamp], varint front_skip, number value,
///   stamp mark (counter: the slot's newest entry; max/min: the winning entry).
struct SlotRecord {
  bool has_base = false;
  core::Number base;
  RawStamp base_stamp;
  std::uint64_t front_skip = 0;
  core::Number value;
  RawStamp mark;
};

inline bool DecodeSlotRecord(std::string_view value, SlotRecord& s) {
  RecordReader r(value);
  std::uint8_t has_base;
  if (!r.Byte(has_base)) {
    return false;
  }
  s.has_base = has_base != 0;
  if (s.has_base && (!r.Number(s.base) || !ReadRawStamp(r, s.base_stamp))) {
    return false;
  }
  return r.Varint(s.front_skip) && r.Number(s.value) && ReadRawStamp(r, s.mark);
}

}  // namespace lattice::crdt::internal
