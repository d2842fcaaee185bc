// Tests of ShardDecoder (shard.h): every bad shard of DESIGN.md §2.3 is rejected with
// InvalidArgument and a reason naming the problem, and good shards flatten to the documented
// BodyEntry list with canonical values and a hash of ts and the canonical body.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lattice/core/shard.h"

namespace lattice::core {
namespace {

const char* KindName(OpKind k) {
  switch (k) {
    case OpKind::kObject:
      return "object";
    case OpKind::kSet:
      return "set";
    case OpKind::kErase:
      return "erase";
    case OpKind::kInc:
      return "inc";
    case OpKind::kMax:
      return "max";
    case OpKind::kMin:
      return "min";
  }
  return "?";
}

// One entry as "depth key kind end [value]", e.g. "1 a set 1 [1,2]" or "2 c inc 4 3".
std::vector<std::string> Describe(const Shard& shard) {
  std::vector<std::string> out;
  for (const BodyEntry& e : shard.entries) {
    std::string s = std::to_string(e.depth) + " " + std::string(e.key) + " " + KindName(e.kind) +
                    " " + std::to_string(e.end);
    if (e.kind == OpKind::kSet) {
      s += " " + std::string(e.value);
    } else if (e.kind == OpKind::kInc || e.kind == OpKind::kMax || e.kind == OpKind::kMin) {
      s += " ";
      AppendJsonNumber(s, e.number);
      s += e.number.is_int ? "i" : "d";
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string Envelope(std::string_view body, std::int64_t ts = 1000, std::uint64_t seq = 1,
                     std::string_view blade = "b-1") {
  return "{\"blade\":\"" + std::string(blade) + "\",\"seq\":" + std::to_string(seq) +
         ",\"ts\":" + std::to_string(ts) + ",\"shard\":" + std::string(body) + "}";
}

// True if `message` contains `part`, or one of its '|'-separated alternatives.
bool ContainsAlternative(std::string_view message, std::string_view part) {
  while (true) {
    const std::size_t bar = part.find('|');
    if (message.find(part.substr(0, bar)) != std::string_view::npos) {
      return true;
    }
    if (bar == std::string_view::npos) {
      return false;
    }
    part.remove_prefix(bar + 1);
  }
}

// Checks that `r` is InvalidArgument whose message contains every one of `parts` (a part may
// list alternatives separated by '|').
void ExpectBad(const Result<const Shard*>& r, std::string_view input,
               std::initializer_list<std::string_view> parts) {
  ASSERT_FALSE(r.ok()) << "accepted: " << input;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  for (std::string_view part : parts) {
    EXPECT_TRUE(ContainsAlternative(r.status().message(), part))
        << "reason for " << input.substr(0, 200) << "\n  is: " << r.status().message()
        << "\n  expected it to contain: " << part;
  }
}

std::string Summary(const Result<const Shard*>& r);

// Every test runs once per walk the decoder may take first (shard.h, ShardDecoder::Walk): each walk
// must accept and reject the same shards, with the same result and reason.
class ShardDecoderTest : public ::testing::TestWithParam<ShardDecoder::Walk> {
 protected:
  ShardDecoderTest() { decoder_.SetFirstWalkForTesting(GetParam()); }

  // Decodes `line` as an envelope and as a bare body (`body` given separately) and expects both
  // to fail alike.
  void ExpectBadBody(std::string_view body, std::initializer_list<std::string_view> parts) {
    const std::string line = Envelope(body);
    {
      SCOPED_TRACE("DecodeEnvelope");
      ExpectBad(decoder_.DecodeEnvelope(line), line, parts);
    }
    {
      SCOPED_TRACE("DecodeBody");
      ExpectBad(decoder_.DecodeBody(body, "b-1", 1, 1000), body, parts);
    }
  }

  void ExpectBadLine(std::string_view line, std::initializer_list<std::string_view> parts) {
    ExpectBad(decoder_.DecodeEnvelope(line), line, parts);
  }

  std::vector<std::string> Flatten(std::string_view body) {
    auto r = decoder_.DecodeBody(body, "b-1", 1, 1000);
    EXPECT_TRUE(r.ok()) << body << ": " << r.status().ToString();
    if (!r.ok()) {
      return {"<error>"};
    }
    std::vector<std::string> via_body = Describe(**r);
    auto e = decoder_.DecodeEnvelope(Envelope(body));
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (e.ok()) {
      EXPECT_EQ(Describe(**e), via_body) << "envelope and bare body decode alike";
    }
    return via_body;
  }

  // The canonical value of a body {"v": <value>}.
  std::string CanonicalValue(std::string_view value) {
    auto lines = Flatten("{\"v\":" + std::string(value) + "}");
    if (lines.size() != 1 || lines[0].rfind("1 v set 1 ", 0) != 0) {
      ADD_FAILURE() << value << " flattened to " << ::testing::PrintToString(lines);
      return "<not a set>";
    }
    return lines[0].substr(10);
  }

  std::uint64_t HashOf(std::string_view line) {
    auto r = decoder_.DecodeEnvelope(line);
    EXPECT_TRUE(r.ok()) << line << ": " << r.status().ToString();
    return r.ok() ? (*r)->hash : 0;
  }

  ShardDecoder decoder_;
};

// ---------------------------------------------------------------------------------------------
// Good shards

TEST_P(ShardDecoderTest, DecodesTheEnvelope) {
  auto r = decoder_.DecodeEnvelope(
      R"({"blade":"b-17","seq":42,"ts":1732350000123,"shard":{"msg":"Hello World"}})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Shard& s = **r;
  EXPECT_EQ(s.blade, "b-17");
  EXPECT_EQ(s.seq, 42u);
  EXPECT_EQ(s.ts, 1732350000123);
  EXPECT_EQ(Describe(s), (std::vector<std::string>{"1 msg set 1 \"Hello World\""}));
  EXPECT_EQ(s.topic, "");
  EXPECT_EQ(s.partition, -1);
  EXPECT_EQ(s.offset, -1);
}

TEST_P(ShardDecoderTest, EnvelopeFieldsInAnyOrderWithProvenanceAndUnknownFields) {
  auto r = decoder_.DecodeEnvelope(
      R"({"shard":{},"offset":7,"future_field":[1,{"x":null}],"ts":0,"partition":3,)"
      R"("topic":"lattice.shards","seq":18446744073709551615,"blade":"b"})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->blade, "b");
  EXPECT_EQ((*r)->seq, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ((*r)->ts, 0);
  EXPECT_EQ((*r)->topic, "lattice.shards");
  EXPECT_EQ((*r)->partition, 3);
  EXPECT_EQ((*r)->offset, 7);
  EXPECT_TRUE((*r)->entries.empty());
  // Provenance does not leak into the next shard.
  auto next = decoder_.DecodeEnvelope(Envelope("{}"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)->topic, "");
  EXPECT_EQ((*next)->partition, -1);
  EXPECT_EQ((*next)->offset, -1);
}

TEST_P(ShardDecoderTest, FlattensDepthFirstWithKindsDepthsAndEnds) {
  EXPECT_EQ(Flatten(R"({"a":1,"b":{"c":"x","d":null,"e":{}},"f":{"$inc":2},"g":{"$max":1.5},)"
                    R"("h":{"$min":-3},"i":{"j":{"k":true}},"l":false})"),
            (std::vector<std::string>{
                "1 a set 1 1",
                "1 b object 5",
                "2 c set 3 \"x\"",
                "2 d erase 4",
                "2 e object 5",
                "1 f inc 6 2i",
                "1 g max 7 1.5d",
                "1 h min 8 -3i",
                "1 i object 11",
                "2 j object 11",
                "3 k set 11 true",
                "1 l set 12 false",
            }));
}

TEST_P(ShardDecoderTest, EmptyBodyHasNoEntries) { EXPECT_TRUE(Flatten("{}").empty()); }

TEST_P(ShardDecoderTest, OperatorsNestedInObjects) {
  EXPECT_EQ(
      Flatten(
          R"({"scrape":{"example.com":{"items":{"$inc":-7},"best":{"$max":9007199254740993}}}})"),
      (std::vector<std::string>{
          "1 scrape object 4",
          "2 example.com object 4",
          "3 items inc 3 -7i",
          "3 best max 4 9007199254740993i",
      }));
}

TEST_P(ShardDecoderTest, ChildrenAreContiguousAndOneLevelDeeper) {
  auto r = decoder_.DecodeBody(R"({"a":{"b":{"c":1,"d":{}},"e":[1]},"f":{"g":null}})", "b", 1, 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto& es = (*r)->entries;
  for (std::uint32_t i = 0; i < es.size(); ++i) {
    ASSERT_GT(es[i].end, i);
    ASSERT_LE(es[i].end, es.size());
    for (std::uint32_t j = i + 1; j < es[i].end; ++j) {
      EXPECT_GT(es[j].depth, es[i].depth);
      EXPECT_LE(es[j].end, es[i].end);
    }
    if (es[i].end < es.size()) {
      EXPECT_LE(es[es[i].end].depth, es[i].depth);
    }
  }
}

TEST_P(ShardDecoderTest, DoubleDollarIsALiteralDollarKey) {
  EXPECT_EQ(Flatten(R"({"$$x":1,"o":{"$$inc":{"$inc":1},"$$":"d"},"$$$y":{}})"),
            (std::vector<std::string>{
                "1 $x set 1 1",
                "1 o object 4",
                "2 $inc inc 3 1i",
                "2 $ set 4 \"d\"",
                "1 $$y object 5",
            }));
}

TEST_P(ShardDecoderTest, LiteralDollarKeyBesideOtherKeysIsNotAnOperator) {
  EXPECT_EQ(Flatten(R"({"o":{"$$inc":5,"b":2}})"),
            (std::vector<std::string>{"1 o object 3", "2 $inc set 2 5", "2 b set 3 2"}));
}

TEST_P(ShardDecoderTest, KeysAreUnescaped) {
  EXPECT_EQ(Flatten(R"({"\u0061\"\\\n":1,"caf\u00e9":2,"k\ud83d\ude00":3})"),
            (std::vector<std::string>{"1 a\"\\\n set 1 1", "1 caf\xc3\xa9 set 2 2",
                                      "1 k\xf0\x9f\x98\x80 set 3 3"}));
}

TEST_P(ShardDecoderTest, SetValuesAreCanonical) {
  EXPECT_EQ(CanonicalValue(R"([1.0,{"b":1,"a":"\u00e9"}])"), "[1,{\"a\":\"\xc3\xa9\",\"b\":1}]");
  EXPECT_EQ(CanonicalValue(" [ 1 , 2 ,\t3 ] "), "[1,2,3]");
  EXPECT_EQ(CanonicalValue("1.0"), "1");
  EXPECT_EQ(CanonicalValue("0.1"), "0.1");
  EXPECT_EQ(CanonicalValue("1.50"), "1.5");
  EXPECT_EQ(CanonicalValue("1e2"), "100");
  EXPECT_EQ(CanonicalValue("2.5E-3"), "0.0025");
  EXPECT_EQ(CanonicalValue("-0"), "0");
  EXPECT_EQ(CanonicalValue("9223372036854775807"), "9223372036854775807");
  EXPECT_EQ(CanonicalValue("-9223372036854775808"), "-9223372036854775808");
  EXPECT_EQ(CanonicalValue(R"("a\/b")"), "\"a/b\"");
  EXPECT_EQ(CanonicalValue(R"("\u0041\t\u001F\u007f")"), "\"A\\t\\u001f\x7f\"");
  EXPECT_EQ(CanonicalValue(R"("\ud83d\ude00")"), "\"\xf0\x9f\x98\x80\"");
  EXPECT_EQ(CanonicalValue("\"caf\xc3\xa9\""), "\"caf\xc3\xa9\"");
  EXPECT_EQ(CanonicalValue("true"), "true");
  EXPECT_EQ(CanonicalValue("[]"), "[]");
  EXPECT_EQ(CanonicalValue("[[],{},null,[{}]]"), "[[],{},null,[{}]]");
  EXPECT_EQ(CanonicalValue(R"([{"z":{"y":[{"b":2,"a":1}],"x":0}}])"),
            R"([{"z":{"x":0,"y":[{"a":1,"b":2}]}}])");
  EXPECT_EQ(CanonicalValue(R"([{"$inc":1,"$$x":null}])"), R"([{"$$x":null,"$inc":1}])")
      << "objects inside arrays are plain values: no operators, no $$ unescaping";
}

TEST_P(ShardDecoderTest, CanonicalValuesAreAFixpoint) {
  for (std::string_view v : {R"([1.0,{"b":1,"a":"\u00e9"}])", "0.1", "1e300", "-2.5e-7", "1e19",
                             "9.3e18", R"("\u001f\n\"")", "[[],{}]", "-9223372036854775808"}) {
    const std::string once = CanonicalValue(v);
    EXPECT_EQ(CanonicalValue(once), once) << v;
  }
}

// BUG (core/src/json_text.cc, AppendJsonDouble; found by shard_decoder_fuzz): a double of
// magnitude >= 2^63 can be written as an integer literal beyond int64, which the decoder then
// rejects, so the canonical value of an accepted shard is not itself acceptable. Repro:
// {"v":12345678901234567890.0} -> value 12345678901234567168 -> {"v":12345678901234567168} is
// "an integer out of the signed 64-bit range". See JsonTextTest.DISABLED_LargeDoublesAre...
TEST_P(ShardDecoderTest, CanonicalValuesReadBack) {
  for (std::string_view v : {"12345678901234567890.0", "-12345678901234567890.0",
                             "9223372036854775808.0", "[14184744607370955161.5]"}) {
    const std::string once = CanonicalValue(v);
    EXPECT_EQ(CanonicalValue(once), once) << v;
  }
}

// -0.0 == 0, so both dump as 0 (equal values, equal dumps).
TEST_P(ShardDecoderTest, NegativeZeroDouble) {
  EXPECT_EQ(CanonicalValue("-0.0"), "0");
  EXPECT_EQ(CanonicalValue("-0"), "0");
}

TEST_P(ShardDecoderTest, OperandsKeepTheirNumberKind) {
  EXPECT_EQ(Flatten(R"({"a":{"$inc":1.0},"b":{"$inc":1},"c":{"$max":-0.5},"d":{"$min":1e3}})"),
            (std::vector<std::string>{"1 a inc 1 1d", "1 b inc 2 1i", "1 c max 3 -0.5d",
                                      "1 d min 4 1000d"}));
}

TEST_P(ShardDecoderTest, ReportsIncrementSummary) {
  auto r = decoder_.DecodeBody(R"({"a":{"$inc":-5},"b":{"$inc":3},"c":{"$max":100}})", "b", 1, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)->has_int_inc);
  EXPECT_FALSE((*r)->has_float_inc);
  EXPECT_EQ((*r)->max_abs_inc, 5u);
  r = decoder_.DecodeBody(R"({"a":{"$inc":0.5}})", "b", 1, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->has_int_inc);
  EXPECT_TRUE((*r)->has_float_inc);
  EXPECT_EQ((*r)->max_abs_inc, 0u);
  r = decoder_.DecodeBody(R"({"a":{"$inc":-9223372036854775808}})", "b", 1, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->max_abs_inc, std::uint64_t{1} << 63);
  r = decoder_.DecodeBody(R"({"a":1})", "b", 1, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->has_int_inc);
  EXPECT_FALSE((*r)->has_float_inc);
  EXPECT_EQ((*r)->max_abs_inc, 0u);
}

TEST_P(ShardDecoderTest, DecodeBodyTakesTheEnvelopeFromTheCaller) {
  auto r = decoder_.DecodeBody(R"({"nodes":{"n1":{"status":"working"}}})", "blade-9", 77, 123456);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->blade, "blade-9");
  EXPECT_EQ((*r)->seq, 77u);
  EXPECT_EQ((*r)->ts, 123456);
  EXPECT_EQ(Describe(**r), (std::vector<std::string>{"1 nodes object 3", "2 n1 object 3",
                                                     "3 status set 3 \"working\""}));
  const std::uint64_t body_hash = (*r)->hash;
  EXPECT_EQ(HashOf(Envelope(R"({"nodes":{"n1":{"status":"working"}}})", 123456, 77, "blade-9")),
            body_hash);
}

TEST_P(ShardDecoderTest, DecodeBodyRejectsBadBladeIds) {
  ExpectBad(decoder_.DecodeBody("{}", "", 1, 1), "(empty blade)", {"blade"});
  const std::string long_blade(257, 'b');
  ExpectBad(decoder_.DecodeBody("{}", long_blade, 1, 1), "(long blade)", {"blade", "256"});
  EXPECT_TRUE(decoder_.DecodeBody("{}", std::string(256, 'b'), 1, 1).ok());
}

TEST_P(ShardDecoderTest, PaddedLinesDecodeWithoutACopy) {
  std::string buf = Envelope(R"({"a":[1,2]})");
  const std::size_t n = buf.size();
  buf.append(ShardDecoder::kPadding, ' ');
  auto r = decoder_.DecodeEnvelope(std::string_view(buf.data(), n), /*padded=*/true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Describe(**r), (std::vector<std::string>{"1 a set 1 [1,2]"}));
}

TEST_P(ShardDecoderTest, DecoderIsReusableAfterErrors) {
  ASSERT_TRUE(decoder_.DecodeEnvelope(Envelope(R"({"a":{"b":1,"c":2}})")).ok());
  ASSERT_FALSE(decoder_.DecodeEnvelope(Envelope(R"({"x":{"y":1,"$inc":2}})")).ok());
  ASSERT_FALSE(decoder_.DecodeEnvelope("{not json").ok());
  auto r = decoder_.DecodeEnvelope(Envelope(R"({"z":[true]})", 5, 2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Describe(**r), (std::vector<std::string>{"1 z set 1 [true]"}));
  EXPECT_EQ((*r)->seq, 2u);
  EXPECT_EQ((*r)->ts, 5);
}

// ---------------------------------------------------------------------------------------------
// Hash

TEST_P(ShardDecoderTest, SameCanonicalBodyWithDifferentWhitespaceHasTheSameHash) {
  const std::uint64_t h = HashOf(Envelope(R"({"a":{"b":[1,{"c":2,"d":3}]},"e":{"$inc":1}})"));
  EXPECT_EQ(h, HashOf(R"(  { "blade" : "b-1" , "seq":1, "ts" : 1000 ,)"
                      "\n\t\"shard\" : { \"a\" : { \"b\" : [ 1.0 , { \"d\" : 3 , \"c\" : 2 } ] } ,"
                      " \"e\" : { \"$inc\" : 1 } } }  "));
  // Escapes in keys and strings that denote the same text.
  EXPECT_EQ(HashOf(Envelope(R"({"a":"é"})")), HashOf(Envelope(R"({"\u0061":"\u00e9"})")));
  // Blade, seq and provenance are not part of the hash (they identify the shard).
  EXPECT_EQ(h, HashOf(Envelope(R"({"a":{"b":[1,{"c":2,"d":3}]},"e":{"$inc":1}})", 1000, 9, "x")));
}

TEST_P(ShardDecoderTest, DifferentTsGivesADifferentHash) {
  EXPECT_NE(HashOf(Envelope(R"({"a":1})", 1000)), HashOf(Envelope(R"({"a":1})", 1001)));
}

TEST_P(ShardDecoderTest, DifferentBodiesGiveDifferentHashes) {
  const char* bodies[] = {
      R"({})",
      R"({"a":1})",
      R"({"a":2})",
      R"({"a":"1"})",
      R"({"a":[1]})",
      R"({"a":null})",
      R"({"a":{}})",
      R"({"b":1})",
      R"({"a":{"$inc":1}})",
      R"({"a":{"$inc":1.0}})",
      R"({"a":{"$max":1}})",
      R"({"a":{"$min":1}})",
      R"({"a":{"b":1}})",
      R"({"a":{},"b":1})",
      R"({"a":{"b":1},"c":{}})",
      R"({"a":{"b":1,"c":{}}})",
      R"({"$$a":1})",
  };
  std::vector<std::uint64_t> hashes;
  for (const char* b : bodies) {
    hashes.push_back(HashOf(Envelope(b)));
  }
  for (std::size_t i = 0; i < hashes.size(); ++i) {
    for (std::size_t j = i + 1; j < hashes.size(); ++j) {
      EXPECT_NE(hashes[i], hashes[j]) << bodies[i] << " vs " << bodies[j];
    }
  }
}

// BUG? (core/src/shard_decoder.cc, DecodeBodyElement): shard.h documents the hash as "ts and the
// canonical body", but the body's own keys are hashed in document order, so a redelivery whose
// producer re-serialised the object with another key order (same meaning: keys are unique) is
// reported as a conflict and dead-lettered. Arrays' objects are already key-sorted. Repro:
// {"a":1,"b":2} and {"b":2,"a":1} with the same ts get different hashes.
TEST_P(ShardDecoderTest, KeyOrderDoesNotChangeTheHash) {
  EXPECT_EQ(HashOf(Envelope(R"({"a":1,"b":{"c":2,"d":3}})")),
            HashOf(Envelope(R"({"b":{"d":3,"c":2},"a":1})")));
}

// ---------------------------------------------------------------------------------------------
// Bad lines and envelopes

TEST_P(ShardDecoderTest, RejectsInvalidJson) {
  ExpectBadLine("{not json}", {"invalid JSON"});
  ExpectBadLine("{\"blade\":\"b\",}", {"invalid JSON"});
  ExpectBadLine(Envelope("{}") + "x", {"invalid JSON"});
  ExpectBadLine(Envelope("{}") + "{}", {"invalid JSON"});
  ExpectBadLine("{'blade':'b'}", {"invalid JSON"});
  ExpectBadLine("", {"empty"});
  ExpectBadBody(R"({"a":1,})", {"invalid JSON"});
  ExpectBadBody(R"({"a":tru})", {"invalid JSON"});
  ExpectBadBody(R"({"a":"\x"})", {"invalid JSON"});
  ExpectBadBody(R"({"a":01})", {"number"});
}

TEST_P(ShardDecoderTest, RejectsTruncatedLines) {
  const std::string line = Envelope(R"({"a":{"b":[1,2,3]},"c":"text"})");
  for (std::size_t n :
       {std::size_t{1}, std::size_t{10}, line.size() / 2, line.size() - 8, line.size() - 1}) {
    ExpectBadLine(line.substr(0, n), {"invalid JSON"});
  }
}

TEST_P(ShardDecoderTest, RejectsAnEnvelopeThatIsNotAnObject) {
  for (std::string_view line : {"[1,2]", "\"text\"", "42", "null", "true"}) {
    ExpectBadLine(line, {"envelope must be a JSON object"});
  }
}

TEST_P(ShardDecoderTest, RejectsWrongEnvelopeTypes) {
  ExpectBadLine(R"({"blade":17,"seq":1,"ts":1,"shard":{}})", {"'blade' must be a string"});
  ExpectBadLine(R"({"blade":null,"seq":1,"ts":1,"shard":{}})", {"'blade' must be a string"});
  ExpectBadLine(R"({"blade":"","seq":1,"ts":1,"shard":{}})", {"'blade'", "1 to 256 bytes"});
  ExpectBadLine(Envelope("{}", 1, 1, std::string(257, 'b')), {"'blade'", "1 to 256 bytes"});
  for (std::string_view seq : {"\"1\"", "-1", "1.5", "1.0", "null", "[1]", "1e3"}) {
    ExpectBadLine(R"({"blade":"b","seq":)" + std::string(seq) + R"(,"ts":1,"shard":{}})",
                  {"'seq' must be a non-negative integer"});
  }
  for (std::string_view ts : {"\"1\"", "-1", "1.5", "true", "{}", "9223372036854775808"}) {
    ExpectBadLine(R"({"blade":"b","seq":1,"ts":)" + std::string(ts) + R"(,"shard":{}})",
                  {"'ts' must be a non-negative integer"});
  }
  ExpectBadLine(R"({"blade":"b","seq":1,"ts":1,"shard":{},"topic":5})",
                {"'topic' must be a string"});
  ExpectBadLine(R"({"blade":"b","seq":1,"ts":1,"shard":{},"partition":-1})", {"'partition'"});
  ExpectBadLine(R"({"blade":"b","seq":1,"ts":1,"shard":{},"offset":"3"})", {"'offset'"});
}

TEST_P(ShardDecoderTest, RejectsMissingEnvelopeFields) {
  ExpectBadLine(R"({"seq":1,"ts":1,"shard":{}})", {"'blade' is missing"});
  ExpectBadLine(R"({"blade":"b","ts":1,"shard":{}})", {"'seq' is missing"});
  ExpectBadLine(R"({"blade":"b","seq":1,"shard":{}})", {"'ts' is missing"});
  ExpectBadLine(R"({"blade":"b","seq":1,"ts":1})", {"'shard' is missing"});
  ExpectBadLine("{}", {"is missing"});
}

TEST_P(ShardDecoderTest, RejectsDuplicateEnvelopeFields) {
  ExpectBadLine(R"({"blade":"a","seq":1,"ts":1,"shard":{},"blade":"b"})",
                {"'blade' appears twice"});
  ExpectBadLine(R"({"blade":"a","seq":1,"seq":2,"ts":1,"shard":{}})", {"'seq' appears twice"});
  ExpectBadLine(R"({"blade":"a","seq":1,"ts":1,"ts":1,"shard":{}})", {"'ts' appears twice"});
  ExpectBadLine(R"({"blade":"a","seq":1,"ts":1,"shard":{},"shard":{"x":1}})",
                {"'shard' appears twice"});
  ExpectBadLine(R"({"blade":"a","seq":1,"ts":1,"shard":{},"topic":"t","topic":"u"})",
                {"'topic' appears twice"});
}

TEST_P(ShardDecoderTest, RejectsABodyThatIsNotAnObject) {
  for (std::string_view body : {"[]", "[{\"a\":1}]", "\"a\"", "1", "null", "true"}) {
    ExpectBadBody(body, {"body must be a JSON object"});
  }
}

// ---------------------------------------------------------------------------------------------
// Bad bodies

TEST_P(ShardDecoderTest, RejectsUnknownOperators) {
  ExpectBadBody(R"({"a":{"$foo":1}})", {"at a", "unknown operator '$foo'"});
  ExpectBadBody(R"({"a":{"b":{"$set":1}}})", {"at a.b", "unknown operator '$set'"});
  ExpectBadBody(R"({"a":{"$":1}})", {"unknown operator '$'"});
  ExpectBadBody(R"({"a":{"$INC":1}})", {"unknown operator '$INC'"});
}

// Either wording names the problem; the second also names the operator.
constexpr std::string_view kBeside = "only key|beside other keys";

TEST_P(ShardDecoderTest, RejectsAnOperatorBesideOtherKeys) {
  ExpectBadBody(R"({"a":{"$inc":1,"b":2}})", {"at a", "operator", kBeside});
  ExpectBadBody(R"({"a":{"b":2,"$inc":1}})", {"at a", "operator", kBeside});
  ExpectBadBody(R"({"a":{"$inc":1,"$max":2}})", {"at a", "operator", kBeside});
  ExpectBadBody(R"({"a":{"$inc":1,"$$lit":2}})", {"at a", "operator", kBeside});
  ExpectBadBody(R"({"a":{"$foo":1,"b":2}})", {"at a", "operator", kBeside});
  ExpectBadBody(R"({"x":{"y":{"$max":1,"z":null}}})", {"at x.y", kBeside});
  ExpectBadBody(R"({"x":{"y":{"z":null,"$max":1}}})", {"at x.y", kBeside});
}

TEST_P(ShardDecoderTest, RejectsAnOperatorAtTheTopLevel) {
  ExpectBadBody(R"({"$inc":1})", {"operator '$inc'", "top level"});
  ExpectBadBody(R"({"a":1,"$max":2})", {"operator '$max'", "top level"});
  ExpectBadBody(R"({"$foo":{}})", {"'$foo'", "top level"});
}

TEST_P(ShardDecoderTest, RejectsNonNumberOperands) {
  ExpectBadBody(R"({"a":{"$inc":"5"}})", {"at a", "operand of $inc must be a number"});
  ExpectBadBody(R"({"a":{"b":{"$inc":"x"}}})", {"at a.b", "$inc", "number"});
  for (std::string_view operand : {"true", "null", "[1]", "{}", "{\"$inc\":1}"}) {
    for (std::string_view op : {"$inc", "$max", "$min"}) {
      ExpectBadBody("{\"c\":{\"" + std::string(op) + "\":" + std::string(operand) + "}}",
                    {"at c", op, "must be a number"});
    }
  }
}

TEST_P(ShardDecoderTest, RejectsDuplicateKeys) {
  ExpectBadBody(R"({"a":1,"a":2})", {"duplicate key 'a'"});
  ExpectBadBody(R"({"a":1,"b":{},"a":{}})", {"duplicate key 'a'"});
  ExpectBadBody(R"({"x":{"k":1,"k":1}})", {"at x", "duplicate key 'k'"});
  ExpectBadBody(R"({"a":1,"\u0061":2})", {"duplicate key 'a'"});
  ExpectBadBody(R"({"$$a":1,"$$a":2})", {"duplicate key"});
  // Big objects take another code path (sorting).
  ExpectBadBody(R"({"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k4":0})",
                {"duplicate key 'k4'"});
  EXPECT_EQ(
      Flatten(R"({"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9})").size(),
      10u);
}

TEST_P(ShardDecoderTest, RejectsDuplicateKeysInsideArrays) {
  ExpectBadBody(R"({"a":[{"x":1,"x":2}]})", {"duplicate key 'x'"});
  ExpectBadBody(R"({"a":[1,[{"y":{"z":1,"z":1}}]]})", {"duplicate key 'z'"});
  ExpectBadBody(
      R"({"a":[{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k1":0}]})",
      {"duplicate key 'k1'"});
}

TEST_P(ShardDecoderTest, RejectsInvalidUtf8) {
  ExpectBadBody("{\"a\":\"\xff\"}", {"invalid UTF-8"});
  ExpectBadBody("{\"\xc3\":1}", {"invalid UTF-8"});
  ExpectBadBody("{\"a\":\"\xc0\xaf\"}", {"invalid UTF-8"});           // overlong '/'
  ExpectBadBody("{\"a\":\"\xed\xa0\x80\"}", {"invalid UTF-8"});       // a surrogate
  ExpectBadBody("{\"a\":\"\xf4\x90\x80\x80\"}", {"invalid UTF-8"});   // above U+10FFFF
  ExpectBadBody("{\"a\":[\"ok\",\"\xe2\x82\"]}", {"invalid UTF-8"});  // cut short
  ExpectBadLine("{\"blade\":\"b\xfe\",\"seq\":1,\"ts\":1,\"shard\":{}}", {"invalid UTF-8"});
  ExpectBadLine("{\"blade\":\"b\",\"seq\":1,\"ts\":1,\"shard\":{},\"x\":\"\x80\"}",
                {"invalid UTF-8"});
}

// `objects` nested objects, the body being the first, the innermost holding {"a": leaf}:
// NestedObjects(2, "1") is {"a":{"a":1}}. A container leaf adds one more level of nesting.
std::string NestedObjects(int objects, std::string_view leaf) {
  std::string s;
  for (int i = 1; i < objects; ++i) {
    s += "{\"a\":";
  }
  s += "{\"a\":" + std::string(leaf) + "}";
  s.append(static_cast<std::size_t>(objects - 1), '}');
  return s;
}

TEST_P(ShardDecoderTest, NestingOf64ObjectsIsAccepted) {
  // 63 objects whose innermost key holds {}: 64 objects, the limit.
  const auto entries = Flatten(NestedObjects(63, "{}"));
  ASSERT_EQ(entries.size(), 63u);
  EXPECT_EQ(entries.front(), "1 a object 63");
  EXPECT_EQ(entries.back(), "63 a object 63");
  EXPECT_EQ(Flatten(NestedObjects(63, "{\"$inc\":1}")).back(), "63 a inc 63 1i");
  EXPECT_EQ(Flatten(NestedObjects(63, "[]")).back(), "63 a set 63 []");
}

// BUG (core/src/shard_decoder.cc, WalkObject): a plain value is written with
// WriteCanonical(value, depth + 1), which applies the container-depth limit to the value itself,
// so a scalar in the 64th object (nesting 64, the limit) is rejected as "nesting deeper than 64",
// while an empty object or an operator at the same place is accepted. Likewise a scalar inside an
// array that is itself the 64th container. Fix: check the limit only when the value is an array
// (or object) — scalars add no nesting. Repro: {"a":{"a":...{"a":1}...}} with 64 objects.
TEST_P(ShardDecoderTest, ScalarInThe64thObjectIsAccepted) {
  EXPECT_EQ(Flatten(NestedObjects(64, "1")).size(), 64u);
  EXPECT_EQ(Flatten(NestedObjects(63, "[1,\"s\"]")).size(), 63u);
}

TEST_P(ShardDecoderTest, NestingDeeperThan64IsRejected) {
  ExpectBadBody(NestedObjects(64, "{}"), {"nesting deeper than 64"});
  ExpectBadBody(NestedObjects(65, "1"), {"nesting deeper than 64"});
  ExpectBadBody(NestedObjects(66, "1"), {"nesting deeper than 64"});
  ExpectBadBody(NestedObjects(64, "[1]"), {"nesting deeper than 64"});
  ExpectBadBody(NestedObjects(60, "[[[[[1]]]]]"), {"nesting deeper than 64"});
  ExpectBadBody(NestedObjects(1, std::string(64, '[') + std::string(64, ']')),
                {"nesting deeper than 64"});
}

TEST_P(ShardDecoderTest, ArraysCountTowardsNesting) {
  // The body object plus 63 arrays is 64 containers.
  EXPECT_EQ(Flatten(NestedObjects(1, std::string(63, '[') + std::string(63, ']'))).size(), 1u);
}

TEST_P(ShardDecoderTest, VeryDeepNestingIsRejectedWithoutCrashing) {
  const std::string deep_objects = NestedObjects(10000, "1");
  ExpectBadBody(deep_objects, {"nesting deeper than 64"});
  const std::string deep_arrays =
      "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  ExpectBadBody(deep_arrays, {"nesting deeper than 64"});
  // Unbalanced: deep and truncated.
  ExpectBadLine(Envelope("") + std::string(50000, '['), {});
}

TEST_P(ShardDecoderTest, SmallerDepthLimitIsHonoured) {
  DecodeLimits limits;
  limits.max_depth = 3;
  ShardDecoder d(limits);
  d.SetFirstWalkForTesting(GetParam());
  EXPECT_TRUE(d.DecodeBody(R"({"a":{"b":{}}})", "b", 1, 1).ok());
  ExpectBad(d.DecodeBody(R"({"a":{"b":{"c":{}}}})", "b", 1, 1), "depth 4", {"deeper than 3"});
  ExpectBad(d.DecodeEnvelope(Envelope(R"({"a":{"b":{"c":{}}}})")), "depth 4", {"deeper than 3"});
}

std::string BodyOfSize(std::size_t n) {
  // {"a":"xxx..."} of exactly n bytes.
  return "{\"a\":\"" + std::string(n - 8, 'x') + "\"}";
}

TEST_P(ShardDecoderTest, BodyOfExactly1MiBIsAccepted) {
  const std::string body = BodyOfSize(1 << 20);
  ASSERT_EQ(body.size(), std::size_t{1} << 20);
  EXPECT_TRUE(decoder_.DecodeEnvelope(Envelope(body)).ok());
  EXPECT_TRUE(decoder_.DecodeBody(body, "b", 1, 1).ok());
}

TEST_P(ShardDecoderTest, RejectsABodyOver1MiB) {
  ExpectBadBody(BodyOfSize((1 << 20) + 1), {"exceeds the limit of 1048576 bytes"});
  ExpectBadBody(BodyOfSize(3 << 20), {"exceeds", "1048576"});
  // Many small keys rather than one big string.
  std::string body = "{";
  for (int i = 0; body.size() < (1 << 20) + 100; ++i) {
    body += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  }
  body.back() = '}';
  ExpectBadBody(body, {"exceeds"});
}

TEST_P(ShardDecoderTest, BodySizeIsMeasuredWithoutInsignificantWhitespace) {
  // An envelope whose body is over the limit only because of spaces is fine: the canonical body
  // is what counts.
  std::string body = BodyOfSize((1 << 20) - 100);
  body.insert(1, std::string(1000, ' '));
  EXPECT_TRUE(decoder_.DecodeEnvelope(Envelope(body)).ok());
}

TEST_P(ShardDecoderTest, SmallerBodyLimitIsHonoured) {
  DecodeLimits limits;
  limits.max_body_bytes = 100;
  ShardDecoder d(limits);
  d.SetFirstWalkForTesting(GetParam());
  EXPECT_TRUE(d.DecodeEnvelope(Envelope(BodyOfSize(100))).ok());
  ExpectBad(d.DecodeEnvelope(Envelope(BodyOfSize(101))), "101 bytes", {"exceeds the limit of 100"});
  ExpectBad(d.DecodeBody(BodyOfSize(101), "b", 1, 1), "101 bytes", {"exceeds the limit of 100"});
}

TEST_P(ShardDecoderTest, RejectsIntegersOutOfInt64Range) {
  ExpectBadBody(R"({"a":9223372036854775808})", {"at a", "out of the signed 64-bit range"});
  ExpectBadBody(R"({"a":18446744073709551615})", {"out of the signed 64-bit range"});
  ExpectBadBody(R"({"a":{"$inc":9223372036854775808}})", {"at a", "$inc", "64-bit range"});
  ExpectBadBody(R"({"a":[1,9223372036854775808]})", {"64-bit range"});
  ExpectBadBody(R"({"a":-9223372036854775809})", {"range"});
  ExpectBadBody(R"({"a":{"$max":18446744073709551616}})", {"range"});
  ExpectBadBody(R"({"a":1e400})", {"number"});
  // The boundaries themselves are fine.
  EXPECT_EQ(Flatten(R"({"a":{"$inc":9223372036854775807},"b":{"$min":-9223372036854775808}})"),
            (std::vector<std::string>{"1 a inc 1 9223372036854775807i",
                                      "1 b min 2 -9223372036854775808i"}));
}

TEST_P(ShardDecoderTest, ReasonsNameThePathOfTheProblem) {
  ExpectBadBody(R"({"jobs":{"17":{"progress":{"$inc":"half"}}}})", {"at jobs.17.progress"});
  ExpectBadBody(R"({"ok":1,"nodes":{"n1":{"status":"up","x":{"$nope":1}}}})",
                {"at nodes.n1.x", "$nope"});
}

// An object with keys k0 .. k<n-1> (values 0 .. n-1); `inner` replaces the value of k<n-1>.
std::string ManyKeys(int n, std::string_view extra = "", std::string_view inner = "") {
  std::string s = "{";
  for (int i = 0; i < n; ++i) {
    s += "\"k" + std::to_string(i) + "\":";
    s += (i == n - 1 && !inner.empty()) ? std::string(inner) : std::to_string(i);
    s += ",";
  }
  s += extra;
  if (s.back() == ',') {
    s.pop_back();
  }
  return s + "}";
}

TEST_P(ShardDecoderTest, RejectsDuplicateKeysInObjectsWithManyKeys) {
  // Past 16 keys the walks check duplicates by sorting the object's keys.
  for (int n : {15, 16, 17, 40}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(Flatten(ManyKeys(n)).size(), static_cast<std::size_t>(n));
    ExpectBadBody(ManyKeys(n, "\"k0\":1"), {"(body)", "duplicate key 'k0'"});
    ExpectBadBody(ManyKeys(n, "\"k" + std::to_string(n - 1) + "\":1"),
                  {"duplicate key 'k" + std::to_string(n - 1) + "'"});
    // Nested objects with many keys: the same key names at two levels are no duplicate, and a
    // duplicate inside is reported at its path.
    const std::string inner = ManyKeys(n);
    EXPECT_EQ(Flatten(ManyKeys(n, "", inner)).size(), static_cast<std::size_t>(2 * n));
    ExpectBadBody(ManyKeys(n, "", ManyKeys(n, "\"k3\":0")),
                  {"at k" + std::to_string(n - 1), "duplicate key 'k3'"});
    // A duplicate among the keys before and after a nested object with many keys.
    ExpectBadBody(ManyKeys(n, "\"k2\":{\"a\":1}", inner), {"duplicate key 'k2'"});
    // Inside an array value.
    ExpectBadBody("{\"a\":[" + ManyKeys(n, "\"k1\":1") + "]}", {"duplicate key 'k1'"});
  }
}

TEST_P(ShardDecoderTest, TokenWalkHandsOnWhatItDoesNotCover) {
  // Valid shards outside the token walk's shapes decode all the same.
  EXPECT_EQ(CanonicalValue(R"("a\"b\u0063")"), R"("a\"bc")");
  EXPECT_EQ(CanonicalValue("1.5"), "1.5");
  EXPECT_EQ(CanonicalValue("-0"), "0");
  EXPECT_EQ(CanonicalValue("1e3"), "1000");
  EXPECT_EQ(CanonicalValue("123456789012345678"), "123456789012345678");
  EXPECT_EQ(CanonicalValue("-1234567890123456789"), "-1234567890123456789");
  EXPECT_EQ(CanonicalValue(R"([{"b":1,"a":[{"d":2,"c":3}]},2])"),
            R"([{"a":[{"c":3,"d":2}],"b":1},2])");
  EXPECT_EQ(Flatten(R"({"a\u0062":{"$inc":0.5},"c":{"$max":-0}})"),
            (std::vector<std::string>{"1 ab inc 1 0.5d", "1 c max 2 0i"}));
  auto r = decoder_.DecodeEnvelope(
      R"({"blade":"b\u0031","seq":18446744073709551615,"ts":5,"shard":{},"x":[1.5,{"y":"\n"}]})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->blade, "b1");
  EXPECT_EQ((*r)->seq, 18446744073709551615u);
}

// ValidateEnvelope (for `lattice emit`) must reject exactly what DecodeEnvelope rejects, with the
// same status, and on success give the same envelope and the body's bytes as written in the line.
TEST_P(ShardDecoderTest, ValidateEnvelopeAgreesWithDecodeEnvelope) {
  struct Case {
    std::string line;
    std::string body;  // the expected body text when good
  };
  const std::string deep = std::string(70, '[') + std::string(70, ']');
  const std::string big(static_cast<std::size_t>(1 << 20) + 10, ' ');
  const std::vector<Case> cases = {
      // Good: the token walk's shapes, and shapes it hands on (escapes, floats, objects in
      // arrays, escaped envelope keys, unknown fields holding braces and quotes).
      {Envelope(R"({"a":{"b":1,"c":{"$inc":-2}},"d":[1,"x",true,null],"e":null})"),
       R"({"a":{"b":1,"c":{"$inc":-2}},"d":[1,"x",true,null],"e":null})"},
      {R"( { "ts" : 5 , "shard" : { "k" : true } , "seq" : 0, "blade" : "b-2" } )",
       R"({ "k" : true })"},
      {R"({"x":"}{\"[","blade":"b\u0031","seq":18446744073709551615,"ts":5,"shard":{"m":1.5}})",
       R"({"m":1.5})"},
      {R"({"blade":"b","seq":1,"ts":2,"sh\u0061rd":{"a\"}":[{"z":1,"y":"\n"}]},"topic":"t"})",
       R"({"a\"}":[{"z":1,"y":"\n"}]})"},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{},"partition":3,"offset":4,"other":[{}]})", "{}"},
      {Envelope(R"({"$$lit":{"$inc":1.25},"k":{"$max":-0}})"),
       R"({"$$lit":{"$inc":1.25},"k":{"$max":-0}})"},
      // Bad, one per rule.
      {"not json", ""},
      {"", ""},
      {"[1]", ""},
      {R"({"blade":"b","seq":1,"ts":2})", ""},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{}} x)", ""},
      {R"({"blade":"","seq":1,"ts":2,"shard":{}})", ""},
      {R"({"blade":"b","seq":-1,"ts":2,"shard":{}})", ""},
      {R"({"blade":"b","seq":1,"ts":2.5,"shard":{}})", ""},
      {R"({"blade":"b","blade":"c","seq":1,"ts":2,"shard":{}})", ""},
      {R"({"blade":"b","seq":1,"ts":2,"shard":{},"shard":{}})", ""},
      {Envelope("[1]"), ""},
      {Envelope(R"({"a":1,"a":2})"), ""},
      {Envelope(R"({"a":{"$inc":1,"b":2}})"), ""},
      {Envelope(R"({"a":{"$pow":2}})"), ""},
      {Envelope(R"({"a":{"$inc":"1"}})"), ""},
      {Envelope(R"({"$inc":1})"), ""},
      {Envelope(R"({"a":[{"b":1,"b":2}]})"), ""},
      {Envelope(R"({"a":99999999999999999999})"), ""},
      {Envelope("{\"a\":\"\xff\"}"), ""},
      {Envelope(R"({"a":)" + deep + "}"), ""},
      {Envelope(R"({"a":")" + big + R"("})"), ""},
      {Envelope(R"({"a":1})", 5, 7, std::string(300, 'b')), ""},
  };
  ShardDecoder reference;  // decodes the body on its own, to compare hashes
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line.substr(0, 120));
    const std::string expected = Summary(decoder_.DecodeEnvelope(c.line));
    std::string padded = c.line;
    padded.append(ShardDecoder::kPadding, '\0');
    for (bool is_padded : {false, true}) {
      const std::string_view line =
          is_padded ? std::string_view(padded.data(), c.line.size()) : std::string_view(c.line);
      auto v = decoder_.ValidateEnvelope(line, is_padded);
      if (c.body.empty()) {
        ASSERT_FALSE(v.ok()) << "accepted a bad line";
        EXPECT_EQ("error: " + v.status().ToString(), expected);
        continue;
      }
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      EXPECT_EQ(v->body, c.body);
      EXPECT_GE(v->body.data(), line.data()) << "the body is a view into the line";
      EXPECT_LE(v->body.data() + v->body.size(), line.data() + line.size());
      EXPECT_EQ(Summary(decoder_.DecodeEnvelope(line, is_padded)), expected);
      auto whole = reference.DecodeEnvelope(line, is_padded);
      ASSERT_TRUE(whole.ok());
      const std::string blade((*whole)->blade);
      const std::uint64_t hash = (*whole)->hash;
      const std::vector<std::string> entries = Describe(**whole);
      auto again = decoder_.ValidateEnvelope(line, is_padded);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(again->blade, blade);
      EXPECT_EQ(again->seq, (*whole)->seq);
      EXPECT_EQ(again->ts, (*whole)->ts);
      auto body = reference.DecodeBody(again->body, again->blade, again->seq, again->ts);
      ASSERT_TRUE(body.ok()) << body.status().ToString();
      EXPECT_EQ((*body)->hash, hash) << "the body's bytes decode to the same shard";
      EXPECT_EQ(Describe(**body), entries);
    }
  }
}

// A padded line followed by white space or NUL is checked where it is (no copy): whatever
// follows, ValidateEnvelope gives the verdict and fields it gives unpadded. The lines end early
// on purpose: what follows them would complete them.
TEST_P(ShardDecoderTest, ValidateEnvelopeInPlaceIgnoresWhatFollowsTheLine) {
  const std::vector<std::string> lines = {
      Envelope(R"({"a":{"b":1,"c":{"$inc":-2}},"d":[1,"x",true,null],"e":null})"),
      R"({"blade":"b","seq":1,"ts":2,"shard":{})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":[1,2)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":tru)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1},"x":)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":{"$inc":1)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1},"bl)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1}} )",
      R"({"blade":"b\u0031","seq":1,"ts":2,"shard":{"a":"\n"}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x\\"}})",
      R"({"blade":"b","seq":1,"ts":)",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"x"})",
  };
  // Each completes some of the lines above if read on.
  const std::vector<std::string> rests = {"}",  "]}}",          "e}}",  "5}",
                                          "}}", "ade\":\"c\"}", "\"}}", "2,\"shard\":{}}"};
  auto text = [](const Result<CheckedEnvelope>& v) {
    return v.ok() ? std::string(v->blade) + " " + std::to_string(v->seq) + " " +
                        std::to_string(v->ts) + " " + std::string(v->body)
                  : v.status().ToString();
  };
  std::vector<std::string> expect;  // all first: the decoder's copy then holds another line
  for (const std::string& l : lines) {
    expect.push_back(text(decoder_.ValidateEnvelope(l)));
  }
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    const std::string& expected = expect[i];
    SCOPED_TRACE(l);
    for (const std::string_view after :
         {std::string_view("\n"), std::string_view("\0", 1), std::string_view("\r\n"),
          std::string_view(" "), std::string_view("\t"), std::string_view()}) {
      for (const std::string& rest : rests) {
        std::string padded = l;
        padded.append(after);
        padded.append(rest);
        padded.append(ShardDecoder::kPadding, '}');
        const std::string_view line(padded.data(), l.size());
        auto v = decoder_.ValidateEnvelope(line, /*padded=*/true);
        EXPECT_EQ(text(v), expected) << "followed by '" << after << rest << "'";
        if (v.ok()) {
          EXPECT_GE(v->body.data(), line.data());
          EXPECT_LE(v->body.data() + v->body.size(), line.data() + line.size());
          // Known only from the token walk, and then exactly "no backslash in the line".
          const bool plain = l.find('\\') == std::string::npos;
          EXPECT_TRUE(!v->no_backslash || plain);
          if (GetParam() == ShardDecoder::Walk::kToken && plain) {
            EXPECT_TRUE(v->no_backslash);
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Walks, ShardDecoderTest,
                         ::testing::Values(ShardDecoder::Walk::kToken, ShardDecoder::Walk::kTape,
                                           ShardDecoder::Walk::kCareful),
                         [](const ::testing::TestParamInfo<ShardDecoder::Walk>& param_info) {
                           switch (param_info.param) {
                             case ShardDecoder::Walk::kToken:
                               return std::string("Token");
                             case ShardDecoder::Walk::kTape:
                               return std::string("Tape");
                             case ShardDecoder::Walk::kCareful:
                               return std::string("Careful");
                           }
                           return std::string("Unknown");
                         });

// Everything a result holds, as text: the reason of an error, or the envelope, flags, hash and
// entries.
std::string Summary(const Result<const Shard*>& r) {
  if (!r.ok()) {
    return "error: " + r.status().ToString();
  }
  const Shard& s = **r;
  std::string out = std::string(s.blade) + " " + std::to_string(s.seq) + " " +
                    std::to_string(s.ts) + " " + std::to_string(s.hash) + " " +
                    std::string(s.topic) + " " + std::to_string(s.partition) + " " +
                    std::to_string(s.offset) + " " + std::to_string(s.has_int_inc) +
                    std::to_string(s.has_float_inc) + " " + std::to_string(s.max_abs_inc);
  for (const std::string& e : Describe(s)) {
    out += "\n" + e;
  }
  return out;
}

TEST(ShardDecoderWalksTest, TokenWalkTakesTheCommonShapes) {
  ShardDecoder d;
  for (
      const char* line : {
          R"({"blade":"b-023","seq":1,"ts":1732350000000,"shard":{"nodes":{"b-023":{"status":"working","job":1,"msg":"working job 1"}}}})",
          R"({"blade":"b-054","seq":1,"ts":1732350000002,"shard":{"scrape":{"d35.example.com":{"tries":{"$inc":1},"item_collected":{"$inc":-3}}}}})",
          R"({"blade":"b-007","seq":1,"ts":1732350000005,"shard":{"intents":{"i1":{"host":"b-007","resolution":{"b-007":{"ok":true,"ms":0}}}}}})",
          R"({"blade":"b-047","seq":1,"ts":1732350000006,"shard":{"intents":{"i1":null}}})",
          R"( { "blade" : "b" , "seq" : 2 , "ts" : 3 , "shard" : { "a" : [ 1 , [ ] , "x" , false ] , "$$b" : { } } , "topic" : "t" , "partition" : 0 , "offset" : 7 , "extra" : { "x" : [ null , true ] } } )",
      }) {
    auto r = d.DecodeEnvelope(line);
    EXPECT_TRUE(r.ok()) << line << ": " << r.status().ToString();
    EXPECT_EQ(d.LastWalkForTesting(), ShardDecoder::Walk::kToken) << line;
  }
  ASSERT_TRUE(d.DecodeBody(R"({"a":{"b":[1,2],"c":{"$max":7}}})", "b", 1, 2).ok());
  EXPECT_EQ(d.LastWalkForTesting(), ShardDecoder::Walk::kToken);
  // Escapes and doubles are left to the tape walk; errors to the careful walk.
  ASSERT_TRUE(d.DecodeBody(R"({"a":1.5})", "b", 1, 2).ok());
  EXPECT_EQ(d.LastWalkForTesting(), ShardDecoder::Walk::kTape);
  ASSERT_TRUE(d.DecodeBody(R"({"a\n":1})", "b", 1, 2).ok());
  EXPECT_EQ(d.LastWalkForTesting(), ShardDecoder::Walk::kTape);
  ASSERT_FALSE(d.DecodeBody(R"({"a":1,"a":2})", "b", 1, 2).ok());
  EXPECT_EQ(d.LastWalkForTesting(), ShardDecoder::Walk::kCareful);
}

// Lines at the edges of what the token walk accepts: every walk must give the same result.
TEST(ShardDecoderWalksTest, WalksAgreeOnEdgeCases) {
  const std::string env = R"({"blade":"b","seq":1,"ts":2,"shard":)";
  std::vector<std::string> lines;
  for (const char* body : {
           "{}",
           "{ }",
           "{\"a\":1}x",
           "{\"a\":1 2}",
           "{\"a\":1 \"b\":2}",
           "{\"a\" 1}",
           "{\"a\"::1}",
           "{\"a\":1,}",
           "{,\"a\":1}",
           "{\"a\":tru}",
           "{\"a\":truex}",
           "{\"a\":true1}",
           "{\"a\":nul}",
           "{\"a\":null,\"b\":false,\"c\":true}",
           "{\"a\":01}",
           "{\"a\":-01}",
           "{\"a\":1.}",
           "{\"a\":.5}",
           "{\"a\":-}",
           "{\"a\":+1}",
           "{\"a\":1e}",
           "{\"a\":-0}",
           "{\"a\":0}",
           "{\"a\":-5}",
           "{\"a\":999999999999999999}",
           "{\"a\":1000000000000000000}",
           "{\"a\":9223372036854775807}",
           "{\"a\":9223372036854775808}",
           "{\"a\":\"x\"y}",
           "{\"a\":\"x\" \"y\"}",
           "{\"a\":[1,]}",
           "{\"a\":[,1]}",
           "{\"a\":[1 2]}",
           "{\"a\":[}",
           "{\"a\":[1,[2,[3]]]}",
           "{\"a\":[{}]}",
           "{\"a\":{\"$inc\":1,\"b\":2}}",
           "{\"a\":{\"b\":2,\"$inc\":1}}",
           "{\"a\":{\"$inc\":\"1\"}}",
           "{\"a\":{\"$inc\":1.5}}",
           "{\"a\":{\"$inc\":}}",
           "{\"a\":{\"$inc\" 1}}",
           "{\"a\":{\"$inc\":1]}",
           "{\"a\":{\"$\":1}}",
           "{\"a\":{\"$$\":1}}",
           "{\"a\":{\"$$inc\":1}}",
           "{\"a\":{\"$incx\":1}}",
           "{\"$inc\":1}",
           "{\"$\":1}",
           "{\"$$\":1}",
           "{\"\":1}",
           "{\"a\":{\"\":{}}}",
           "{\"a\":{\"$max\":-9}}",
           "{\"a\":{\"$min\":9223372036854775807}}",
           "{\"a\":\"\\u00e9\"}",
           "{\"a\":\"\xc3\xa9\"}",
           "{\"a\":\"\xc3\"}",
           "{\"a\":\"\x01\"}",
           "{\"a\":\"\x7f\"}",
           "{\"a\":1}}",
           "{\"a\":1",
           "{\"a\":{}",
           "{\"a\"",
           "{\"a",
           "[]",
           "1",
           "\"x\"",
           "null",
           "{\"a\":1}\x00",
           "\xef\xbb\xbf{\"a\":1}",
           "{\"a\":1}\t\r ",
           "{\"a\":[true,false,null,\"s\",-1,[]]}",
       }) {
    lines.push_back(env + body + "}");
    lines.push_back(body);
  }
  for (const char* line : {
           R"({"blade":"b","seq":1,"ts":2})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"shard":{}})",
           R"({"blade":"","seq":1,"ts":2,"shard":{}})",
           R"({"blade":1,"seq":1,"ts":2,"shard":{}})",
           R"({"blade":"b","seq":-1,"ts":2,"shard":{}})",
           R"({"blade":"b","seq":1,"ts":-2,"shard":{}})",
           R"({"blade":"b","seq":1,"ts":2.0,"shard":{}})",
           R"({"blade":"b","seq":1,"ts":"2","shard":{}})",
           R"({"blade":"b","seq":1,"seq":1,"ts":2,"shard":{}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":[]})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"topic":1})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"partition":-1})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"offset":1.5})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"x":{"a":1,"a":2}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"x":[1,}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"x":})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{}}{})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{}} x)",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{}})",
           R"({})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"topic":"t","partition":1,"offset":2})",
           // The usual keys are told apart by their bytes up to the colon; variants of them.
           R"({"blade" :"b","seq" :1,"ts" :2,"shard" :{}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"seq":1})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"ts":2})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"blade":"b"})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{},"shard":{}})",
           R"({"shard":{"a":1},"ts":2,"seq":1,"blade":"b"})",
           R"({"bladex":"b","blade":"b","seq":1,"ts":2,"shard":{}})",
           R"({"blad":"b","blade":"b","seq":1,"ts":2,"shard":{}})",
           R"({"blade":"b","seqx":1,"seq":1,"tsx":2,"ts":2,"shard":{},"shardx":{}})",
           R"({"bl\u0061de":"b","seq":1,"ts":2,"shard":{}})",
           R"({"blade":"b","s\u0065q":1,"ts":2,"shard":{}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":{"blade":"x","seq":1,"ts":2,"shard":{}}})",
           R"({"blade":"b","seq":1,"ts":2,"shard":)",
           R"({"blade":"b","seq":1,"ts":2,"shard")",
           R"({"blade":)",
           R"({"ts":)",
       }) {
    lines.push_back(line);
  }
  // Nesting at and around the limit, as objects, arrays and unknown envelope fields.
  for (int n : {62, 63, 64, 65, 66}) {
    std::string nested;
    for (int i = 0; i < n; ++i) nested += "{\"a\":";
    nested += "1";
    nested.append(static_cast<std::size_t>(n), '}');
    lines.push_back(nested);
    lines.push_back(env + nested + "}");
    lines.push_back(env + "{},\"x\":" + nested + "}");
    const std::string arrays = std::string(static_cast<std::size_t>(n), '[') +
                               std::string(static_cast<std::size_t>(n), ']');
    lines.push_back("{\"a\":" + arrays + "}");
    lines.push_back(env + "{},\"x\":" + arrays + "}");
  }
  ShardDecoder token, tape, careful;
  tape.SetFirstWalkForTesting(ShardDecoder::Walk::kTape);
  careful.SetFirstWalkForTesting(ShardDecoder::Walk::kCareful);
  for (const std::string& line : lines) {
    SCOPED_TRACE(line.substr(0, 300));
    const std::string want = Summary(careful.DecodeEnvelope(line));
    EXPECT_EQ(Summary(token.DecodeEnvelope(line)), want);
    EXPECT_EQ(Summary(tape.DecodeEnvelope(line)), want);
    const std::string want_body = Summary(careful.DecodeBody(line, "b", 1, 2));
    EXPECT_EQ(Summary(token.DecodeBody(line, "b", 1, 2)), want_body);
    EXPECT_EQ(Summary(tape.DecodeBody(line, "b", 1, 2)), want_body);
  }
}

// Integers of every length the token walk reads (it takes them eight, four to seven, or one digit
// at a time), with a bad byte at every position, in the envelope, as values, in arrays and as
// operands: every walk must give the same result.
TEST(ShardDecoderWalksTest, WalksAgreeOnIntegersOfEveryLength) {
  std::vector<std::string> lines;
  const std::string digits = "9876543210987654321";
  for (std::size_t n = 1; n <= digits.size(); ++n) {
    std::vector<std::string> numbers = {digits.substr(0, n), "-" + digits.substr(0, n),
                                        "1" + std::string(n - 1, '0')};
    for (std::size_t at = 0; at < n; ++at) {
      for (char bad : {'x', '.', ':', '/', 'e', ' '}) {
        std::string s = digits.substr(0, n);
        s[at] = bad;
        numbers.push_back(s);
      }
    }
    for (const std::string& v : numbers) {
      lines.push_back(R"({"blade":"b","seq":)" + v + R"(,"ts":)" + v + R"(,"shard":{"a":)" + v +
                      R"(,"b":[)" + v + "," + v + R"(],"c":{"$inc":)" + v + "}}}");
      lines.push_back(R"({"blade":"b","seq":1,"ts":2,"shard":{"a":)" + v + "}}");
    }
  }
  ShardDecoder token, tape, careful;
  tape.SetFirstWalkForTesting(ShardDecoder::Walk::kTape);
  careful.SetFirstWalkForTesting(ShardDecoder::Walk::kCareful);
  for (const std::string& line : lines) {
    SCOPED_TRACE(line);
    const std::string want = Summary(careful.DecodeEnvelope(line));
    EXPECT_EQ(Summary(token.DecodeEnvelope(line)), want);
    EXPECT_EQ(Summary(tape.DecodeEnvelope(line)), want);
  }
}

// One decoder reused for shards with more, fewer and no entries, good and bad, by both entry
// points: every result must be the one a fresh decoder gives.
TEST(ShardDecoderWalksTest, ReuseAcrossShardsOfEveryEntryCount) {
  std::vector<std::string> bodies;
  for (int n : {0, 5, 1, 40, 2, 3, 70, 0, 1, 16, 17, 4}) {
    std::string body = "{";
    for (int i = 0; i < n; ++i) {
      body += (i > 0 ? ",\"k" : "\"k") + std::to_string(i) +
              "\":" + (i % 3 == 0 ? "{\"x\":" + std::to_string(i) + "}" : std::to_string(i));
    }
    bodies.push_back(body + "}");
    bodies.push_back(body + (n > 0 ? ",\"k0\":1}" : "\"bad\"}"));  // a duplicate key, or bad JSON
    bodies.push_back(body + (n > 0 ? ",\"e\":\"\\n\"}" : "}"));    // an escape: the tape walk
  }
  ShardDecoder reused;
  for (int round = 0; round < 2; ++round) {
    for (const std::string& body : bodies) {
      SCOPED_TRACE(body);
      const std::string line = R"({"blade":"b","seq":1,"ts":2,"shard":)" + body + "}";
      EXPECT_EQ(Summary(reused.DecodeEnvelope(line)), Summary(ShardDecoder().DecodeEnvelope(line)));
      EXPECT_EQ(Summary(reused.DecodeBody(body, "b", 1, 2)),
                Summary(ShardDecoder().DecodeBody(body, "b", 1, 2)));
    }
  }
}

}  // namespace
}  // namespace lattice::core
