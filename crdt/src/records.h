// Byte encodings of the records the state store keeps: varints, stamps and numbers.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "lattice/core/json_text.h"

namespace lattice::crdt::internal {

inline void PutVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
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

}  // namespace lattice::crdt::internal
