// Tests of ShardDecoder::ExpectLines: with it, ValidateEnvelope runs simdjson's stage 1 once over a
// piece of many lines and walks each line over the piece's index. Every line must get exactly
// what it gets checked alone (verdict, reason, fields, the body's bytes), whatever the lines
// before it hold: an unclosed string or a stray quote in one line inverts stage 1's idea of what
// is inside a string for everything after it in the piece.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "json_mutation.h"
#include "lattice/core/shard.h"

namespace lattice::core {
namespace {

// A result as text: the reason of an error, or every field, with the body's place in `text`.
std::string Describe(const Result<CheckedEnvelope>& v, std::string_view text) {
  if (!v.ok()) {
    return "error: " + v.status().ToString();
  }
  return std::string(v->blade) + "|" + std::to_string(v->seq) + "|" + std::to_string(v->ts) + "|" +
         std::to_string(v->body.data() - text.data()) + "+" + std::to_string(v->body.size()) + "|" +
         (v->no_backslash ? "plain" : "?");
}

// Checks the lines of `text` as `lattice emit -f` does (MappedLines::Fill: split at '\n', a final
// '\r' dropped, blank lines skipped, padded if 64 bytes of the text follow) with `lines`, which
// was told ExpectLines(text), and with `alone`, line by line, and expects the same results.
// Lines whose number is in `skip` are not checked by either (as a refused or bare line).
// Returns the number of lines checked.
std::size_t ExpectSameResults(ShardDecoder& lines, ShardDecoder& alone, std::string_view text,
                              const std::vector<bool>& skip = {}) {
  lines.ExpectLines(text);
  std::size_t number = 0, checked = 0;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* line = p;
    std::size_t len = static_cast<std::size_t>((nl != nullptr ? nl : end) - p);
    p = nl != nullptr ? nl + 1 : end;
    ++number;
    if (number < skip.size() && skip[number]) {
      continue;
    }
    if (len > 0 && line[len - 1] == '\r') {
      --len;
    }
    std::size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) {
      ++i;
    }
    if (i == len) {
      continue;
    }
    const bool padded = end - (line + len) >= 64;
    const std::string_view l(line, len);
    const std::string want = Describe(alone.ValidateEnvelope(l, padded), text);
    const std::string got = Describe(lines.ValidateEnvelope(l, padded), text);
    EXPECT_EQ(got, want) << "line " << number << ": " << l.substr(0, 300);
    ++checked;
  }
  return checked;
}

std::string Envelope(std::string_view body, std::uint64_t seq = 1, std::string_view blade = "b-1") {
  return R"({"blade":")" + std::string(blade) + R"(","seq":)" + std::to_string(seq) +
         R"(,"ts":1732350000000,"shard":)" + std::string(body) + "}";
}

// Lines at the points the argument for pieces rests on, each followed by good lines and by lines
// that would be good if stage 1's string state were inverted.
TEST(ShardDecoderLinesTest, LinesAfterAStringLeftOpenGetTheirOwnResult) {
  const std::string good = Envelope(R"({"a":{"b":1,"c":{"$inc":2}},"d":[1,"x"]})");
  const std::vector<std::string> before = {
      good,
      Envelope(R"({"a":"x})"),            // an unclosed string: the rest is "inside"
      Envelope(R"({"a":"x"})") + "\"",    // a stray quote after the envelope
      Envelope(R"({"a":"x"})") + " \"",   // ... after white space
      Envelope(R"({"a":"x"})") + " 1\"",  // ... after a scalar
      "\"" + good,                        // a leading quote
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x\"}})",   // an escaped closing quote
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x\\"}})",  // an escaped backslash
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x"}}\)",   // a backslash at the end
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"\u00e9"}})",
      Envelope("{\"a\":\"x\x01y\"}"),  // a control character in a string
      Envelope("{\"a\":\"x\xffy\"}"),  // invalid UTF-8
      Envelope("{\"a\":\"x\xc3"),      // a multi-byte character cut at the line's end
      Envelope(R"({"a":1.5})"),        // good, but not the token walk's shape
      Envelope(R"({"a":[1,2)"),        // truncated: the next line would complete it
      Envelope(R"({"a":)"),
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x"},"y":)",
      "",
      "  \t",
      "\r",
      "{}",
      "x",
  };
  // Good only when read as if the string state were inverted (the quote at the start closes the
  // previous line's string), good, and lines that complete a truncated line.
  const std::vector<std::string> after = {
      "\"" + good.substr(0, good.size() - 1) + "}",
      "\"}}",
      "\"" + good,
      good,
      "1]}}",
      "{\"z\":1}}",
      good + "\"",
      "   " + good + "  ",
  };
  ShardDecoder lines, alone;
  std::size_t checked = 0;
  for (const std::string& b : before) {
    for (const std::string& a : after) {
      for (const char* eol : {"\n", "\r\n"}) {
        std::string text;
        for (int rep = 0; rep < 2; ++rep) {
          for (int i = 0; i < 10; ++i) {
            text += good + eol;
          }
          text += b + eol + a + eol;
        }
        text += good + eol + good;
        text.append(100, '\n');  // so that every line is in a piece
        SCOPED_TRACE("after: " + b + "\nthen: " + a);
        checked += ExpectSameResults(lines, alone, text);
      }
    }
  }
  EXPECT_GT(checked, 8000u);
  // Many lines went over a piece (else this tested nothing).
  EXPECT_GT(lines.PieceLinesForTesting(), checked / 4);
}

// An envelope split over two lines: read on from the first line, the walk would accept both as
// one envelope ending in the second line. Whether the caller skips the first line (a bare body
// or a refused line) or checks it, the second must get its own result.
TEST(ShardDecoderLinesTest, AnEnvelopeSplitOverTwoLinesIsNotReadAsOne) {
  const std::string good = Envelope(R"({"a":{"b":1},"d":[1,"x"]})");
  const std::vector<std::pair<std::string, std::string>> splits = {
      {R"({"blade":"b","seq":1,)", R"("ts":2,"shard":{}})"},
      {R"({"blade":"b","seq":1,"ts":2,"shard":)", R"({"a":1}})"},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{"a":)", R"({"c":1}}})"},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{"a":[1,)", R"(2]}})"},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1},)", R"("x":{"y":[]}})"},
      {"{", R"("blade":"b","seq":1,"ts":2,"shard":{}})"},
  };
  ShardDecoder lines, alone;
  for (bool skip_first : {true, false}) {
    for (const auto& [first, second] : splits) {
      for (const char* eol : {"\n", "\r\n", "\n  \n"}) {
        SCOPED_TRACE(first + " / " + second);
        std::string text;
        std::vector<bool> skip(1, false);
        for (int i = 0; i < 5; ++i) {
          text += good + eol;
          skip.push_back(false);
        }
        text += first + "\n";
        skip.push_back(skip_first);
        text += second + "\n";
        skip.push_back(false);
        text += good + "\n";
        text.append(100, '\n');
        const std::uint64_t before = lines.PieceLinesForTesting();
        ExpectSameResults(lines, alone, text, skip);
        EXPECT_GE(lines.PieceLinesForTesting(), before + 5);
      }
    }
  }
}

std::string Mutate(std::string line, std::mt19937& rng) {
  return test_support::MutateJson(std::move(line), rng, /*newlines=*/false);
}

// Many generated lines, good and bad, over many pieces: the same results as line by line.
TEST(ShardDecoderLinesTest, GeneratedLinesGetTheirOwnResult) {
  const std::vector<std::string> bodies = {
      R"({"nodes":{"b-023":{"status":"working","job":1,"msg":"working job 1"}}})",
      R"({"scrape":{"d35.example.com":{"tries":{"$inc":1},"item_collected":{"$inc":-3}}}})",
      R"({"intents":{"i1":{"host":"b-007","resolution":{"b-007":{"ok":true,"ms":0}}}}})",
      R"({"intents":{"i1":null}})",
      R"({"a":[1,[],"x",false],"$$b":{}})",
      R"({ "a" : [ 1 , "x y" ] , "b" : { "$max" : 7 } })",
      R"({"a":"caf\u00e9","b":"\"q\"","c\n":1})",  // escapes: handed on
      R"({"a":1.5e3,"b":-0})",                     // numbers the token walk hands on
      R"({"a":[{"b":1}]})",                        // an object in an array
      "{\"a\":\"\xc3\xa9\xe2\x82\xac\"}",          // multi-byte UTF-8
      R"({"a":1,"a":2})",                          // a duplicate key
      R"({"a":{"$inc":1,"b":2}})",                 // an operator beside another key
  };
  std::mt19937 rng(20261207);
  ShardDecoder lines, alone;
  std::size_t checked = 0;
  for (int round = 0; round < 12; ++round) {
    std::string text;
    std::vector<bool> skip(1, false);
    // Mostly good lines, as a recording; every fourth round a fifth of them broken.
    const unsigned broken = round % 4 == 3 ? 200 : 20;  // per 1000 lines
    while (text.size() < 300 * 1024) {
      std::string line;
      const auto pick = rng() % 1000;
      if (pick < broken) {
        line = Mutate(Envelope(bodies[rng() % bodies.size()], rng() % 1000), rng);
        if (rng() % 4 == 0) {
          line = Mutate(line, rng);
        }
      } else if (pick < broken + 10) {
        line = std::string(rng() % 3, ' ') + (rng() % 2 ? "\t" : "");  // blank
      } else if (pick < broken + 20) {
        line = " ";  // white space around
        line += Envelope(bodies[0]);
        line += "\t ";
      } else if (pick < broken + 30) {
        line = bodies[rng() % bodies.size()];  // a bare body
      } else if (pick < broken + 32) {
        // Longer than a piece (64 KiB), or longer than a small body limit.
        line = Envelope("{\"a\":\"" + std::string(rng() % 2 ? 70000 : 900, 'x') + "\"}");
      } else if (pick < broken + 37) {
        line = "\"";  // a leading quote
        line += Envelope(bodies[0]);
      } else {
        line = Envelope(bodies[rng() % bodies.size()], rng() % 100000,
                        "b-" + std::to_string(rng() % 64));
      }
      text += line;
      text += rng() % 10 == 0 ? "\r\n" : "\n";
      skip.push_back(rng() % 100 == 0);  // a line the caller does not check
    }
    if (round % 2 == 1) {
      text += Envelope(bodies[1]);  // a last line without a newline
    }
    SCOPED_TRACE("round " + std::to_string(round));
    checked += ExpectSameResults(lines, alone, text, round % 3 == 0 ? skip : std::vector<bool>());
  }
  EXPECT_GT(checked, 20000u);
  EXPECT_GT(lines.PieceLinesForTesting(), checked / 4);

  // Smaller limits: lines over the body limit take the careful walk, as alone.
  DecodeLimits small;
  small.max_body_bytes = 600;
  small.max_depth = 5;
  ShardDecoder lines_small(small), alone_small(small);
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    std::string line = Envelope(bodies[rng() % bodies.size()], i);
    if (i % 7 == 0) {
      line = Envelope("{\"a\":\"" + std::string(rng() % 1000, 'x') + "\"}");
    } else if (i % 11 == 0) {
      line = Envelope(R"({"a":{"b":{"c":{"d":{"e":{"f":1}}}}}})");  // too deep
    } else if (i % 13 == 0) {
      line = Mutate(line, rng);
    }
    text += line + "\n";
  }
  const std::size_t before = lines_small.PieceLinesForTesting();
  ExpectSameResults(lines_small, alone_small, text);
  EXPECT_GT(lines_small.PieceLinesForTesting(), before + 500);
}

// A recording's lines (good, CRLF or not, blank lines between) all go over pieces.
TEST(ShardDecoderLinesTest, GoodLinesGoOverPieces) {
  std::string text;
  for (int i = 0; i < 5000; ++i) {
    text += Envelope(R"({"nodes":{"b-023":{"status":"working","job":1,"msg":"working job 1"}}})", i,
                     "b-" + std::to_string(i % 64));
    text += i % 3 == 0 ? "\r\n" : "\n";
    if (i % 100 == 0) {
      text += "  \n\n";
    }
  }
  ShardDecoder lines, alone;
  EXPECT_EQ(ExpectSameResults(lines, alone, text), 5000u);
  // All but the last lines (in the text's last kPadding bytes, checked alone).
  EXPECT_GE(lines.PieceLinesForTesting(), 4999u);
}

// Lines outside the expected text, or not in order, are checked alone.
TEST(ShardDecoderLinesTest, LinesOutsideTheTextOrOutOfOrderAreCheckedAlone) {
  std::string text;
  for (int i = 0; i < 50; ++i) {
    text += Envelope(R"({"a":1})", i) + "\n";
  }
  text.append(64, '\n');
  ShardDecoder lines, alone;
  lines.ExpectLines(text);
  const std::string other = Envelope(R"({"a":"x"})", 7);
  std::vector<std::size_t> starts;
  for (std::size_t p = 0; p < text.size() && text[p] == '{'; p = text.find('\n', p) + 1) {
    starts.push_back(p);
  }
  ASSERT_EQ(starts.size(), 50u);
  auto line_at = [&](std::size_t i) {
    return std::string_view(text).substr(starts[i], text.find('\n', starts[i]) - starts[i]);
  };
  for (std::size_t i : {0, 1, 2, 10, 5, 6, 49, 3}) {
    EXPECT_EQ(Describe(lines.ValidateEnvelope(line_at(i), true), text),
              Describe(alone.ValidateEnvelope(line_at(i), true), text));
    EXPECT_EQ(Describe(lines.ValidateEnvelope(other), other),
              Describe(alone.ValidateEnvelope(other), other));
  }
  const std::uint64_t over_pieces = lines.PieceLinesForTesting();
  EXPECT_GT(over_pieces, 0u);
  // An empty text ends it: the same lines are then checked alone.
  lines.ExpectLines({});
  for (std::size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(Describe(lines.ValidateEnvelope(line_at(i), true), text),
              Describe(alone.ValidateEnvelope(line_at(i), true), text));
  }
  EXPECT_EQ(lines.PieceLinesForTesting(), over_pieces);
}

}  // namespace
}  // namespace lattice::core
