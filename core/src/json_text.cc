// Canonical JSON writing of strings and numbers (see json_text.h for the rules).
#include "lattice/core/json_text.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>

#include <simdjson.h>

namespace lattice::core {

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') {
      continue;
    }
    out.append(s.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xf]);
    }
  }
  out.append(s.data() + run_start, s.size() - run_start);
  out.push_back('"');
}

void AppendJsonInt(std::string& out, std::int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

void AppendJsonDouble(std::string& out, double v) {
  if (v == 0.0) {
    out.push_back('0');  // -0.0 too: numerically equal values print the same
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  // The shortest form of a double of 2^63 or more can look like an integer out of the 64-bit
  // range ("12345678901234567168"), which no reader would take back as this double.
  if (std::fabs(v) >= 9223372036854775808.0 &&
      std::string_view(buf, static_cast<std::size_t>(end - buf)).find_first_of(".eE") ==
          std::string_view::npos) {
    end = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific).ptr;
  }
  out.append(buf, static_cast<std::size_t>(end - buf));
}

void AppendJsonNumber(std::string& out, const Number& n) {
  if (n.is_int) {
    AppendJsonInt(out, n.i);
  } else {
    AppendJsonDouble(out, n.d);
  }
}

int CompareNumbers(const Number& a, const Number& b) {
  if (a.is_int && b.is_int) {
    return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
  }
  if (!a.is_int && !b.is_int) {
    return a.d < b.d ? -1 : (a.d > b.d ? 1 : 0);
  }
  // One integer, one double: compare exactly, without rounding the integer to a double.
  const bool a_int = a.is_int;
  const std::int64_t iv = a_int ? a.i : b.i;
  const double dv = a_int ? b.d : a.d;
  int r;  // sign of (iv - dv)
  if (dv >= 9223372036854775808.0) {  // 2^63: above every int64
    r = -1;
  } else if (dv < -9223372036854775808.0) {  // below -2^63 = INT64_MIN
    r = 1;
  } else {
    const double fl = std::floor(dv);
    const auto fi = static_cast<std::int64_t>(fl);
    if (iv < fi) {
      r = -1;
    } else if (iv > fi) {
      r = 1;
    } else {
      r = (dv > fl) ? -1 : 0;
    }
  }
  return a_int ? r : -r;
}

void AppendWithoutWhitespace(std::string& out, std::string_view json) {
  const std::size_t start = out.size();
  out.resize(start + json.size());  // the minified text is never longer
  std::size_t written = 0;
  if (simdjson::minify(json.data(), json.size(), out.data() + start, written) !=
      simdjson::SUCCESS) {
    out.resize(start);  // not JSON text (an unterminated string): keep it as it is
    out.append(json);
    return;
  }
  out.resize(start + written);
}

}  // namespace lattice::core
