// Tests of ShardDecoder::ExpectBodies: with it, DecodeBody runs simdjson's stage 1 once over a
// piece of many bodies (the aggregator copies a group of message values into one text, each
// followed by a newline) and walks each body over the piece's index. Every body must get exactly
// what it gets decoded alone (verdict, reason, every field and entry, the hash), whatever the
// bodies before it hold.
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "json_mutation.h"
#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"

namespace lattice::core {
namespace {

// A result as text: the reason of an error, or every field and entry.
std::string Describe(const Result<const Shard*>& r) {
  if (!r.ok()) {
    return "error: " + r.status().ToString();
  }
  const Shard& s = **r;
  std::string out = std::string(s.blade) + "|" + std::to_string(s.seq) + "|" +
                    std::to_string(s.ts) + "|" + std::to_string(s.hash) + "|" +
                    std::string(s.topic) + "|" + std::to_string(s.partition) + "|" +
                    std::to_string(s.offset) + "|" + std::to_string(s.has_int_inc) +
                    std::to_string(s.has_float_inc) + "|" + std::to_string(s.max_abs_inc);
  for (const BodyEntry& e : s.entries) {
    out += "\n" + std::to_string(e.depth) + " " + std::string(e.key) + " " +
           std::to_string(static_cast<int>(e.kind)) + " " + std::to_string(e.end) + " " +
           std::string(e.value) + " ";
    if (e.kind == OpKind::kInc || e.kind == OpKind::kMax || e.kind == OpKind::kMin) {
      AppendJsonNumber(out, e.number);
      out += e.number.is_int ? "i" : "d";
    }
  }
  return out;
}

// Decodes `bodies` as the aggregator does: copied one after another into one text, each followed
// by a newline, then kPadding newlines; `pieces` is told ExpectBodies(text) and decodes each copy,
// `alone` each body where it is. Bodies whose index is in `skip` are copied but not decoded (as a
// message with a bad header). Returns the number decoded.
std::size_t ExpectSameResults(ShardDecoder& pieces, ShardDecoder& alone,
                              const std::vector<std::string>& bodies,
                              const std::vector<bool>& skip = {}) {
  std::string text;
  std::vector<std::size_t> at;
  for (const std::string& b : bodies) {
    at.push_back(text.size());
    text += b;
    text += '\n';
  }
  text.append(ShardDecoder::kPadding, '\n');
  pieces.ExpectBodies(text);
  std::size_t decoded = 0;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    if (i < skip.size() && skip[i]) {
      continue;
    }
    const std::string_view copy(text.data() + at[i], bodies[i].size());
    const std::uint64_t seq = 1000 + i;
    const std::string want = Describe(alone.DecodeBody(bodies[i], "b-1", seq, 1732350000000));
    const std::string got = Describe(pieces.DecodeBody(copy, "b-1", seq, 1732350000000));
    EXPECT_EQ(got, want) << "body " << i << ": " << bodies[i].substr(0, 300);
    ++decoded;
  }
  pieces.ExpectBodies({});
  return decoded;
}

const std::string kGood = R"({"a":{"b":1,"c":{"$inc":2}},"d":[1,"x"],"e":"y"})";

// Bodies at the points the argument for pieces rests on, each followed by good bodies and by
// bodies that would be good if stage 1's string state were inverted.
TEST(ShardDecoderBodiesTest, BodiesAfterAStringLeftOpenGetTheirOwnResult) {
  const std::vector<std::string> before = {
      kGood,
      R"({"a":"x})",         // an unclosed string: the rest is "inside"
      R"({"a":"x"}")",       // a stray quote after the body
      R"({"a":"x"} ")",      // ... after white space
      R"({"a":"x"} 1")",     // ... after a scalar
      "\"" + kGood,          // a leading quote
      R"({"a":"x\"})",       // an escaped closing quote
      R"({"a":"x\\"})",      // an escaped backslash
      R"({"a":"x"}\)",       // a backslash at the end
      R"({"a":"\u00e9"})",   // an escape
      "{\"a\":\"x\x01y\"}",  // a control character in a string
      "{\"a\":\"x\xffy\"}",  // invalid UTF-8
      "{\"a\":\"x\xc3",      // a multi-byte character cut at the end
      R"({"a":1.5})",        // good, but not the token walk's shape
      R"({"a":[1,2)",        // truncated: the next body would complete it
      R"({"a":)",
      R"({"a":{"b":)",
      "",  // an empty value
      "  \t",
      "\n",
      "{\n\"a\" :\n1}",  // newlines as white space
      "{}",
      "[]",
      "x",
      "1",
      R"({"a":1}{"b":2})",  // two objects
      R"({"a":1},)",
  };
  const std::vector<std::string> after = {
      "\"" + kGood.substr(0, kGood.size() - 1) + "}",
      "\"}",
      "\"" + kGood,
      kGood,
      "1]}",
      "{\"z\":1}}",
      "2}",
      kGood + "\"",
      "   " + kGood + "  ",
  };
  ShardDecoder pieces, alone;
  std::size_t decoded = 0;
  for (const std::string& b : before) {
    for (const std::string& a : after) {
      std::vector<std::string> bodies;
      for (int rep = 0; rep < 2; ++rep) {
        for (int i = 0; i < 10; ++i) {
          bodies.push_back(kGood);
        }
        bodies.push_back(b);
        bodies.push_back(a);
      }
      bodies.push_back(kGood);
      SCOPED_TRACE("after: " + b + "\nthen: " + a);
      decoded += ExpectSameResults(pieces, alone, bodies);
    }
  }
  EXPECT_GT(decoded, 5000u);
  // Many bodies went over a piece (else this tested nothing).
  EXPECT_GT(pieces.PieceLinesForTesting(), decoded / 4);
}

// A body split over two: read on from the first, the walk would accept both as one body ending in
// the second. Whether the caller skips the first or decodes it, the second gets its own result.
TEST(ShardDecoderBodiesTest, ABodySplitOverTwoIsNotReadAsOne) {
  const std::vector<std::pair<std::string, std::string>> splits = {
      {R"({"a":1,)", R"("b":2})"},
      {R"({"a":)", R"({"c":1}})"},
      {R"({"a":[1,)", R"(2]})"},
      {"{", R"("a":1})"},
      {R"({"a":{"b":1},)", R"("x":{"y":[]}})"},
  };
  ShardDecoder pieces, alone;
  for (bool skip_first : {true, false}) {
    for (const auto& [first, second] : splits) {
      SCOPED_TRACE(first + " / " + second);
      std::vector<std::string> bodies(5, kGood);
      bodies.push_back(first);
      bodies.push_back(second);
      bodies.push_back(kGood);
      std::vector<bool> skip(bodies.size(), false);
      skip[5] = skip_first;
      const std::uint64_t before = pieces.PieceLinesForTesting();
      ExpectSameResults(pieces, alone, bodies, skip);
      EXPECT_GE(pieces.PieceLinesForTesting(), before + 5);
    }
  }
}

std::string Mutate(std::string body, std::mt19937& rng) {
  return test_support::MutateJson(std::move(body), rng, /*newlines=*/true);
}

// Many generated bodies, good and bad, over many pieces: the same results as alone.
TEST(ShardDecoderBodiesTest, GeneratedBodiesGetTheirOwnResult) {
  const std::vector<std::string> good = {
      R"({"nodes":{"b-023":{"status":"working","job":1,"msg":"working job 1"}}})",
      R"({"scrape":{"d35.example.com":{"tries":{"$inc":1},"item_collected":{"$inc":-3}}}})",
      R"({"intents":{"i1":{"host":"b-007","resolution":{"b-007":{"ok":true,"ms":0}}}}})",
      R"({"intents":{"i1":null}})",
      R"({"a":[1,[],"x",false],"$$b":{}})",
      R"({ "a" : [ 1 , "x y" ] , "b" : { "$max" : 7 } })",
      R"({"a":{"$min":-9223372036854775808},"b":{"$inc":9223372036854775807}})",
      R"({"a":"caf\u00e9","b":"\"q\"","c\n":1})",  // escapes: handed on
      R"({"a":1.5e3,"b":-0,"c":{"$inc":0.5}})",    // numbers the token walk hands on
      R"({"a":[{"b":1}]})",                        // an object in an array
      "{\"a\":\"\xc3\xa9\xe2\x82\xac\"}",          // multi-byte UTF-8
      R"({"a":1,"a":2})",                          // a duplicate key
      R"({"a":{"$inc":1,"b":2}})",                 // an operator beside another key
      R"({"$inc":1})",                             // an operator at the top
  };
  std::mt19937 rng(20261207);
  ShardDecoder pieces, alone;
  std::size_t decoded = 0;
  for (int round = 0; round < 12; ++round) {
    // Mostly good bodies, as a topic; every fourth round a fifth of them broken.
    const unsigned broken = round % 4 == 3 ? 200 : 20;  // per 1000 bodies
    std::vector<std::string> bodies;
    std::vector<bool> skip;
    std::size_t bytes = 0;
    while (bytes < 300 * 1024) {
      std::string body;
      const auto pick = rng() % 1000;
      if (pick < broken) {
        body = Mutate(good[rng() % good.size()], rng);
        if (rng() % 4 == 0) {
          body = Mutate(body, rng);
        }
      } else if (pick < broken + 10) {
        body = "\n " + good[0] + "\t\n";  // white space around
      } else if (pick < broken + 12) {
        // Longer than a piece (8 KiB), or longer than a small body limit.
        body = "{\"a\":\"" + std::string(rng() % 2 ? 9000 : 900, 'x') + "\"}";
      } else if (pick < broken + 17) {
        body = "\"" + good[0];  // a leading quote
      } else {
        body = good[rng() % good.size()];
      }
      bytes += body.size() + 1;
      bodies.push_back(std::move(body));
      skip.push_back(rng() % 100 == 0);  // a body the caller does not decode
    }
    SCOPED_TRACE("round " + std::to_string(round));
    // Groups of up to ~8 KiB, as the aggregator makes them.
    std::size_t i = 0;
    while (i < bodies.size()) {
      std::size_t j = i, group = 0;
      while (j < bodies.size() && (j == i || group + bodies[j].size() + 1 <= 8192)) {
        group += bodies[j].size() + 1;
        ++j;
      }
      const std::vector<std::string> part(bodies.begin() + i, bodies.begin() + j);
      const std::vector<bool> part_skip(skip.begin() + i, skip.begin() + j);
      decoded +=
          ExpectSameResults(pieces, alone, part, round % 3 == 0 ? part_skip : std::vector<bool>());
      i = j;
    }
  }
  EXPECT_GT(decoded, 20000u);
  EXPECT_GT(pieces.PieceLinesForTesting(), decoded / 8);

  // Smaller limits: bodies over the limits take the careful walk, as alone.
  DecodeLimits small;
  small.max_body_bytes = 600;
  small.max_depth = 5;
  ShardDecoder pieces_small(small), alone_small(small);
  std::vector<std::string> bodies;
  for (int i = 0; i < 3000; ++i) {
    std::string body = good[rng() % good.size()];
    if (i % 7 == 0) {
      body = "{\"a\":\"" + std::string(rng() % 1000, 'x') + "\"}";
    } else if (i % 11 == 0) {
      body = R"({"a":{"b":{"c":{"d":{"e":{"f":1}}}}}})";  // too deep
    } else if (i % 13 == 0) {
      body = Mutate(body, rng);
    }
    bodies.push_back(std::move(body));
  }
  const std::uint64_t before = pieces_small.PieceLinesForTesting();
  ExpectSameResults(pieces_small, alone_small, bodies);
  EXPECT_GT(pieces_small.PieceLinesForTesting(), before + 300);
}

// A topic's bodies all go over pieces; bodies outside the text are decoded alone, and an empty
// text ends it. ValidateEnvelope takes no piece of a text of bodies.
TEST(ShardDecoderBodiesTest, GoodBodiesGoOverPiecesAndOthersAlone) {
  std::vector<std::string> bodies;
  for (int i = 0; i < 100; ++i) {
    bodies.push_back(R"({"nodes":{"b-)" + std::to_string(i) +
                     R"(":{"status":"working","job":1,"msg":"working job 1"}}})");
  }
  ShardDecoder pieces, alone;
  EXPECT_EQ(ExpectSameResults(pieces, alone, bodies), 100u);
  EXPECT_EQ(pieces.PieceLinesForTesting(), 100u);

  std::string text;
  for (int i = 0; i < 50; ++i) {
    text += R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1}})";
    text += '\n';
  }
  text.append(ShardDecoder::kPadding, '\n');
  pieces.ExpectBodies(text);
  const std::string other = kGood;
  std::size_t at = 0;
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Describe(pieces.DecodeBody(other, "b", 1, 2)),
              Describe(alone.DecodeBody(other, "b", 1, 2)));
    const std::size_t nl = text.find('\n', at);
    EXPECT_TRUE(pieces.ValidateEnvelope(std::string_view(text).substr(at, nl - at), true).ok());
    at = nl + 1;
  }
  EXPECT_EQ(pieces.PieceLinesForTesting(), 100u);
  pieces.ExpectBodies({});
}

}  // namespace
}  // namespace lattice::core
