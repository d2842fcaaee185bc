// Canonical JSON text: the one way Lattice writes numbers and strings.
//
// The canonical form is what makes "two states are equal exactly when their dumps are byte-equal"
// true: no insignificant whitespace, strings escaped only where JSON requires it (the quote, the
// backslash and control characters below 0x20; everything else, including non-ASCII UTF-8, is
// written as is), integers as exact decimals, and floating-point numbers in the shortest form that
// reads back to the same double (std::to_chars), so 1.0 is written 1 and 0.1 is written 0.1.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lattice::core {

/// A JSON number as Lattice keeps it: an exact 64-bit integer or a finite double.
struct Number {
  bool is_int = true;
  std::int64_t i = 0;
  double d = 0.0;

  static Number Int(std::int64_t v) { return {true, v, 0.0}; }
  static Number Double(double v) { return {false, 0, v}; }
  double AsDouble() const { return is_int ? static_cast<double>(i) : d; }
};

/// Appends `s` (valid UTF-8) as a canonical JSON string literal, quotes included.
void AppendJsonString(std::string& out, std::string_view s);

/// Appends an integer in decimal.
void AppendJsonInt(std::string& out, std::int64_t v);

/// Appends a finite double in its shortest round-trip form (std::to_chars).
void AppendJsonDouble(std::string& out, double v);

/// Appends a Number canonically.
void AppendJsonNumber(std::string& out, const Number& n);

/// Compares two numbers by value (an integer and a double compare mathematically).
/// Returns <0, 0 or >0.
int CompareNumbers(const Number& a, const Number& b);

/// Appends `json` (valid JSON text) to `out` without the whitespace between its tokens; strings
/// and numbers are kept byte for byte (simdjson's text minifier; nothing is re-serialized).
void AppendWithoutWhitespace(std::string& out, std::string_view json);

}  // namespace lattice::core
