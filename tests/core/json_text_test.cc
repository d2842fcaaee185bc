// Tests of canonical JSON text (json_text.h): string escaping, shortest doubles, exact
// integer/double comparison.
#include "lattice/core/json_text.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace lattice::core {
namespace {

std::string Str(std::string_view s) {
  std::string out;
  AppendJsonString(out, s);
  return out;
}

std::string Dbl(double d) {
  std::string out;
  AppendJsonDouble(out, d);
  return out;
}

std::string Int(std::int64_t v) {
  std::string out;
  AppendJsonInt(out, v);
  return out;
}

int Sign(int v) { return v < 0 ? -1 : (v > 0 ? 1 : 0); }

TEST(JsonTextTest, PlainStringIsQuotedUnchanged) {
  EXPECT_EQ(Str(""), "\"\"");
  EXPECT_EQ(Str("hello world"), "\"hello world\"");
  EXPECT_EQ(Str("a/b"), "\"a/b\"");  // the solidus is never escaped
  EXPECT_EQ(Str("'single'"), "\"'single'\"");
}

TEST(JsonTextTest, EscapesQuoteAndBackslash) {
  EXPECT_EQ(Str("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(Str("C:\\dir"), "\"C:\\\\dir\"");
  EXPECT_EQ(Str("\"\\\""), "\"\\\"\\\\\\\"\"");
}

TEST(JsonTextTest, EscapesControlCharactersShortFormWhereJsonHasOne) {
  EXPECT_EQ(Str("\n"), "\"\\n\"");
  EXPECT_EQ(Str("\r"), "\"\\r\"");
  EXPECT_EQ(Str("\t"), "\"\\t\"");
  EXPECT_EQ(Str("\b"), "\"\\b\"");
  EXPECT_EQ(Str("\f"), "\"\\f\"");
  EXPECT_EQ(Str("a\nb"), "\"a\\nb\"");
}

TEST(JsonTextTest, EscapesOtherControlCharactersAsLowercaseU00XX) {
  EXPECT_EQ(Str(std::string_view("\0", 1)), "\"\\u0000\"");
  EXPECT_EQ(Str("\x01"), "\"\\u0001\"");
  EXPECT_EQ(Str("\x0b"), "\"\\u000b\"");
  EXPECT_EQ(Str("\x1a"), "\"\\u001a\"");
  EXPECT_EQ(Str("\x1f"), "\"\\u001f\"");
  EXPECT_EQ(Str(std::string_view("x\0y", 3)), "\"x\\u0000y\"");
}

TEST(JsonTextTest, EveryByteBelow0x20IsEscapedAndNothingElse) {
  for (int c = 0; c < 0x80; ++c) {
    const std::string in(1, static_cast<char>(c));
    const std::string out = Str(in);
    if (c < 0x20 || c == '"' || c == '\\') {
      EXPECT_EQ(out[1], '\\') << "byte " << c;
    } else {
      EXPECT_EQ(out, "\"" + in + "\"") << "byte " << c;
    }
  }
}

TEST(JsonTextTest, DelAndNonAsciiAreWrittenRaw) {
  EXPECT_EQ(Str("\x7f"), "\"\x7f\"");
  EXPECT_EQ(Str("\xc3\xa9"), "\"\xc3\xa9\"");                        // é
  EXPECT_EQ(Str("\xe2\x82\xac"), "\"\xe2\x82\xac\"");                // €
  EXPECT_EQ(Str("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");        // 😀
  EXPECT_EQ(Str("\xe2\x80\xa8"), "\"\xe2\x80\xa8\"");                // U+2028 stays raw
}

TEST(JsonTextTest, AppendsToExistingText) {
  std::string out = "x:";
  AppendJsonString(out, "y");
  AppendJsonInt(out, 5);
  EXPECT_EQ(out, "x:\"y\"5");
}

TEST(JsonTextTest, IntegersAreExactDecimals) {
  EXPECT_EQ(Int(0), "0");
  EXPECT_EQ(Int(-1), "-1");
  EXPECT_EQ(Int(42), "42");
  EXPECT_EQ(Int(std::numeric_limits<std::int64_t>::max()), "9223372036854775807");
  EXPECT_EQ(Int(std::numeric_limits<std::int64_t>::min()), "-9223372036854775808");
  EXPECT_EQ(Int(9007199254740993), "9007199254740993");
}

TEST(JsonTextTest, DoublesUseShortestRoundTripForm) {
  EXPECT_EQ(Dbl(1.0), "1");
  EXPECT_EQ(Dbl(0.1), "0.1");
  EXPECT_EQ(Dbl(-2.5), "-2.5");
  EXPECT_EQ(Dbl(0.0), "0");
  EXPECT_EQ(Dbl(100.0), "100");
  EXPECT_EQ(Dbl(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(Dbl(1e300), "1e+300");
  EXPECT_EQ(Dbl(5e-324), "5e-324");
}

TEST(JsonTextTest, ShortestDoublesReadBackToTheSameBits) {
  const double values[] = {0.1, 1.0 / 3.0, 2.0 / 3.0, 1e-7, 123456.789, 9007199254740993.0,
                           1.7976931348623157e308, 2.2250738585072014e-308, -0.000123};
  for (double v : values) {
    const std::string text = Dbl(v);
    EXPECT_EQ(std::stod(text), v) << text;
  }
}

// BUG (core/src/json_text.cc, AppendJsonDouble): std::to_chars picks fixed notation whenever it
// is not longer than scientific, so a double of magnitude >= 2^63 with many significant digits
// comes out as an integer literal beyond int64: 12345678901234567890.0 is written
// 12345678901234567168. Lattice's own decoder then rejects that text ("integer out of the signed
// 64-bit range"), so a value it accepted and dumps cannot be fed back (a processor re-emitting a
// state value, a dump replayed as a shard), and other readers see an integer, not a double. Fix:
// for |v| >= 2^63 use std::chars_format::scientific (or append ".0"). Repro: the values below;
// see also ShardDecoderTest.DISABLED_CanonicalValuesReadBack.
TEST(JsonTextTest, LargeDoublesAreNotWrittenAsOutOfRangeIntegers) {
  for (double d : {9223372036854775808.0, 12345678901234567890.0, -12345678901234567890.0,
                   14184744607370955161.5, 123456789012345678901.0}) {
    const std::string text = Dbl(d);
    EXPECT_NE(text.find_first_of(".eE"), std::string::npos) << text;
    EXPECT_EQ(std::stod(text), d) << text;
  }
}

TEST(JsonTextTest, NumberIsWrittenByItsKind) {
  std::string out;
  AppendJsonNumber(out, Number::Int(7));
  out.push_back(' ');
  AppendJsonNumber(out, Number::Double(7.0));
  out.push_back(' ');
  AppendJsonNumber(out, Number::Double(7.25));
  EXPECT_EQ(out, "7 7 7.25");
}

TEST(JsonTextTest, CompareNumbersSameKind) {
  EXPECT_LT(CompareNumbers(Number::Int(1), Number::Int(2)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(2), Number::Int(1)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(-5), Number::Int(-5)), 0);
  EXPECT_LT(CompareNumbers(Number::Double(0.1), Number::Double(0.2)), 0);
  EXPECT_EQ(CompareNumbers(Number::Double(2.5), Number::Double(2.5)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(std::numeric_limits<std::int64_t>::max()),
                           Number::Int(std::numeric_limits<std::int64_t>::max() - 1)),
            0);
}

TEST(JsonTextTest, CompareNumbersIntAndDoubleByValue) {
  EXPECT_EQ(CompareNumbers(Number::Int(1), Number::Double(1.0)), 0);
  EXPECT_EQ(CompareNumbers(Number::Double(1.0), Number::Int(1)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(1), Number::Double(1.5)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(2), Number::Double(1.5)), 0);
  EXPECT_GT(CompareNumbers(Number::Double(1.5), Number::Int(1)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(-2), Number::Double(-1.5)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(-1), Number::Double(-1.5)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(-3), Number::Double(-3.0)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(0), Number::Double(-0.0)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(0), Number::Double(-1e-300)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(0), Number::Double(1e-300)), 0);
}

TEST(JsonTextTest, CompareNumbersDoesNotRoundTheIntegerToADouble) {
  // 2^53 + 1 is not a double: converting it would make it equal to 2^53.
  const std::int64_t big = 9007199254740993;
  EXPECT_GT(CompareNumbers(Number::Int(big), Number::Double(9007199254740992.0)), 0);
  EXPECT_LT(CompareNumbers(Number::Double(9007199254740992.0), Number::Int(big)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(big), Number::Double(9007199254740994.0)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(9007199254740992), Number::Double(9007199254740992.0)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(-big), Number::Double(-9007199254740992.0)), 0);
  // int64 max (2^63 - 1) is below the double 2^63, which is what (double)INT64_MAX rounds to.
  const auto max = std::numeric_limits<std::int64_t>::max();
  const auto min = std::numeric_limits<std::int64_t>::min();
  const double below_two63 = 9223372036854774784.0;  // 2^63 - 1024, the double below 2^63
  EXPECT_GT(CompareNumbers(Number::Int(max - 1000), Number::Double(below_two63)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(max - 1023), Number::Double(below_two63)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(max - 1024), Number::Double(below_two63)), 0);
  EXPECT_EQ(CompareNumbers(Number::Int(min), Number::Double(-9223372036854775808.0)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(min + 1), Number::Double(-9223372036854775808.0)), 0);
}

TEST(JsonTextTest, CompareNumbersWithDoublesFarOutsideInt64Range) {
  EXPECT_LT(CompareNumbers(Number::Int(std::numeric_limits<std::int64_t>::max()),
                           Number::Double(1e19)),
            0);
  EXPECT_GT(CompareNumbers(Number::Int(std::numeric_limits<std::int64_t>::min()),
                           Number::Double(-1e19)),
            0);
  EXPECT_LT(CompareNumbers(Number::Int(0), Number::Double(1e300)), 0);
  EXPECT_GT(CompareNumbers(Number::Double(1e300), Number::Int(0)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(0), Number::Double(-1e300)), 0);
}

// BUG (core/src/json_text.cc, CompareNumbers): the "outside int64" cut-offs are ±9.3e18, but
// int64 ends at 2^63 ≈ 9.2234e18. A double in [2^63, 9.3e18) or (-9.3e18, -2^63) is cast to
// int64 (undefined behaviour; on x86 it yields INT64_MIN), so e.g. 0 compares greater than
// 9.25e18 and INT64_MAX compares greater than 2^63. Fix: compare against 2^63 exactly
// (dv >= 0x1p63 -> int is smaller; dv < -0x1p63 -> int is larger).
TEST(JsonTextTest, CompareNumbersJustAboveInt64Range) {
  const auto max = std::numeric_limits<std::int64_t>::max();
  const auto min = std::numeric_limits<std::int64_t>::min();
  const double two63 = 9223372036854775808.0;  // 2^63
  EXPECT_LT(CompareNumbers(Number::Int(max), Number::Double(two63)), 0);
  EXPECT_GT(CompareNumbers(Number::Double(two63), Number::Int(max)), 0);
  EXPECT_LT(CompareNumbers(Number::Int(0), Number::Double(9.25e18)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(0), Number::Double(-9.25e18)), 0);
  EXPECT_GT(CompareNumbers(Number::Int(min), Number::Double(-9.25e18)), 0);
}

TEST(JsonTextTest, CompareNumbersIsAntisymmetricOnAGrid) {
  const std::int64_t ints[] = {std::numeric_limits<std::int64_t>::min(), -9007199254740993, -3,
                               -1, 0, 1, 2, 3, 9007199254740992, 9007199254740993,
                               std::numeric_limits<std::int64_t>::max()};
  const double dbls[] = {-1e300, -9007199254740994.0, -2.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.999,
                         9007199254740992.0, 1e18, 1e300};
  for (std::int64_t i : ints) {
    for (double d : dbls) {
      const int a = Sign(CompareNumbers(Number::Int(i), Number::Double(d)));
      const int b = Sign(CompareNumbers(Number::Double(d), Number::Int(i)));
      EXPECT_EQ(a, -b) << i << " vs " << d;
      // Where the double holds the integer exactly, the double comparison agrees.
      if (static_cast<double>(i) == d && std::abs(d) < 9007199254740992.0) {
        EXPECT_EQ(a, 0) << i << " vs " << d;
      }
    }
  }
}

}  // namespace
}  // namespace lattice::core

TEST(JsonTextTest, AppendWithoutWhitespaceDropsOnlyWhitespaceBetweenTokens) {
  std::string out = "k";
  lattice::core::AppendWithoutWhitespace(
      out, " {\n\t\"a b\" : [ 1 , 2.50 ] ,\r\"c\\\" d\": \"\\u0041 \" } ");
  // Strings (with their spaces and escapes) and numbers are kept byte for byte.
  EXPECT_EQ(out, R"(k{"a b":[1,2.50],"c\" d":"\u0041 "})");
}
