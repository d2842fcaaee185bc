// Random mutations of good JSON text for the decoder's differential tests (pieces against alone):
// the bytes the piece argument of shard_decoder.cc is about, at random places.
#pragma once

#include <random>
#include <string>
#include <vector>

namespace lattice::core::test_support {

/// `text` with one random mutation: a byte sequence inserted, a byte erased or replaced, the
/// text truncated, or a quote dropped. With `newlines`, "\n" is among the insertions (a body's
/// text may hold one; a line's cannot).
inline std::string MutateJson(std::string text, std::mt19937& rng, bool newlines) {
  static const std::vector<std::string> inserts = {
      "\"",       "\\", "\\\"", "\\\\", "{",    "}",    "[",    "]",    ":",
      ",",        " ",  "\t",   "\x01", "\x1f", "\xff", "\x80", "\xc3", "\xe2\x82",
      "\xc3\xa9", "1",  "-",    "e",    "t",    "n",    "\"\"", "\r",   "\n"};
  const std::size_t choices = newlines ? inserts.size() : inserts.size() - 1;
  const int kind = static_cast<int>(rng() % 6);
  const std::size_t at = text.empty() ? 0 : rng() % (text.size() + 1);
  switch (kind) {
    case 0:
    case 1:
      text.insert(at, inserts[rng() % choices]);
      break;
    case 2:
      if (!text.empty()) {
        text.erase(at == text.size() ? at - 1 : at, 1);
      }
      break;
    case 3:
      text.resize(at);  // truncated
      break;
    case 4:
      if (at < text.size()) {
        text[at] = inserts[rng() % choices][0];
      }
      break;
    default: {
      const std::size_t q = text.find('"', at);  // drop a quote
      if (q != std::string::npos) {
        text.erase(q, 1);
      }
      break;
    }
  }
  return text;
}

}  // namespace lattice::core::test_support
