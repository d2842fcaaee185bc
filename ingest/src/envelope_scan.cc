// ScanEnvelope (envelope_scan.h).
#include "envelope_scan.h"

namespace lattice::ingest::internal {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void SkipSpace(std::string_view s, std::size_t& i) {
  while (i < s.size() && IsSpace(s[i])) {
    ++i;
  }
}

// The bytes that matter while skipping a nested value: quotes (a string starts) and brackets.
struct StructuralBytes {
  bool is[256] = {};
  constexpr StructuralBytes() {
    is[static_cast<unsigned char>('"')] = true;
    is[static_cast<unsigned char>('{')] = true;
    is[static_cast<unsigned char>('[')] = true;
    is[static_cast<unsigned char>('}')] = true;
    is[static_cast<unsigned char>(']')] = true;
  }
};
constexpr StructuralBytes kStructural;

// REQUIRES: s[i] == '"'. Moves i past the closing quote; false if unterminated. A byte loop: the
// strings of shards are short, and `lattice emit` scans every line (it was 20% of its time with
// memchr calls per string).
bool SkipString(std::string_view s, std::size_t& i, bool* has_escape) {
  const char* p = s.data();
  const std::size_t n = s.size();
  ++i;
  while (i < n) {
    const char c = p[i];
    if (c == '"') {
      ++i;
      return true;
    }
    if (c == '\\') {
      if (has_escape != nullptr) {
        *has_escape = true;
      }
      i += 2;  // the escaped byte, whatever it is, does not end the string
      continue;
    }
    ++i;
  }
  return false;
}

// Skips one value starting at s[i] (after whitespace); false if malformed structurally.
bool SkipValue(std::string_view s, std::size_t& i) {
  if (i >= s.size()) {
    return false;
  }
  const char c = s[i];
  if (c == '"') {
    return SkipString(s, i, nullptr);
  }
  if (c == '{' || c == '[') {
    const char* p = s.data();
    const std::size_t n = s.size();
    int depth = 0;
    while (i < n) {
      const char d = p[i];
      if (!kStructural.is[static_cast<unsigned char>(d)]) {
        ++i;
        continue;
      }
      if (d == '"') {
        if (!SkipString(s, i, nullptr)) {
          return false;
        }
        continue;
      }
      if (d == '{' || d == '[') {
        ++depth;
      } else if (--depth == 0) {  // '}' or ']'
        ++i;
        return true;
      }
      ++i;
    }
    return false;
  }
  const std::size_t start = i;
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !IsSpace(s[i])) {
    ++i;
  }
  return i > start;
}

}  // namespace

EnvelopeFields ScanEnvelope(std::string_view s) {
  EnvelopeFields f;
  std::size_t i = 0;
  SkipSpace(s, i);
  if (i >= s.size() || s[i] != '{') {
    return f;
  }
  ++i;
  SkipSpace(s, i);
  if (i < s.size() && s[i] == '}') {
    ++i;
    SkipSpace(s, i);
    f.is_object = i == s.size();
    return f;
  }
  for (;;) {
    SkipSpace(s, i);
    if (i >= s.size() || s[i] != '"') {
      return f;
    }
    const std::size_t key_start = i + 1;
    bool key_escape = false;
    if (!SkipString(s, i, &key_escape)) {
      return f;
    }
    const std::string_view key = s.substr(key_start, i - 1 - key_start);
    SkipSpace(s, i);
    if (i >= s.size() || s[i] != ':') {
      return f;
    }
    ++i;
    SkipSpace(s, i);
    const std::size_t value_start = i;
    bool value_escape = false;
    if (i < s.size() && s[i] == '"') {
      if (!SkipString(s, i, &value_escape)) {
        return f;
      }
    } else if (!SkipValue(s, i)) {
      return f;
    }
    const std::string_view value = s.substr(value_start, i - value_start);
    if (!key_escape) {
      if (key == "blade") {
        f.has_blade = true;
        f.blade_is_string = value.size() >= 2 && value.front() == '"';
        f.blade = f.blade_is_string ? value.substr(1, value.size() - 2) : value;
        f.blade_has_escape = value_escape;
      } else if (key == "seq") {
        f.has_seq = true;
        f.seq = value;
      } else if (key == "ts") {
        f.has_ts = true;
        f.ts = value;
      } else if (key == "shard") {
        f.has_shard = true;
        f.shard = value;
      }
    }
    SkipSpace(s, i);
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') {
      ++i;
      SkipSpace(s, i);
      f.is_object = i == s.size();
      return f;
    }
    return f;
  }
}

}  // namespace lattice::ingest::internal
