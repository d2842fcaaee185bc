// Unit tests of the merge engine on concrete cases with hand-written expected dumps
// (DESIGN.md §3). Each merge case is also checked against the independent reference
// (reference.h), so these expectations pin the reference as well as the engine; and where the
// order of arrival is not the point, every arrival order that keeps each blade's seq order is run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../envelope.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/merge_engine.h"
#include "lattice/crdt/types.h"
#include "reference.h"

namespace lattice::crdt {
namespace {

// One envelope line. `body` is JSON text, inserted as is.
// An engine fed with envelope lines.
class Feeder {
 public:
  explicit Feeder(EngineOptions options = {}) : engine_(options) {}

  ApplyResult Apply(const std::string& line) {
    auto shard = decoder_.DecodeEnvelope(line);
    if (!shard.ok()) {
      ADD_FAILURE() << "decode failed: " << shard.status().ToString() << " for " << line;
      return {Outcome::kInvalid, shard.status().ToString()};
    }
    return engine_.Apply(**shard);
  }
  crdt::Outcome Offer(const std::string& line) { return Apply(line).outcome; }

  MergeEngine& engine() { return engine_; }
  std::string Dump() const { return engine_.Dump(); }

 private:
  MergeEngine engine_;
  core::ShardDecoder decoder_;
};

std::string EngineDump(const std::vector<std::string>& lines) {
  Feeder f(EngineOptions{.allowed_lateness_ms = std::numeric_limits<std::int64_t>::max() / 4});
  for (const std::string& line : lines) {
    const Outcome o = f.Offer(line);
    EXPECT_TRUE(o == Outcome::kApplied || o == Outcome::kDuplicate) << line;
  }
  return f.Dump();
}

// Checks that the engine and the reference both merge `lines` into `expected`, in the given
// order and in every other arrival order that keeps each blade's shards in seq order.
void ExpectMergeInAnyOrder(const std::vector<std::string>& lines, const std::string& expected) {
  ASSERT_EQ(reference::ReferenceDump(lines), expected) << "the reference disagrees";
  std::vector<reference::Envelope> envs;
  for (const std::string& line : lines) {
    envs.push_back(reference::ParseEnvelope(line));
  }
  std::vector<std::size_t> perm(lines.size());
  for (std::size_t i = 0; i < perm.size(); ++i) {
    perm[i] = i;
  }
  int orders = 0;
  do {
    std::map<std::string, std::uint64_t> last_seq;
    bool in_seq_order = true;
    for (std::size_t i : perm) {
      std::uint64_t& last = last_seq[envs[i].blade];
      in_seq_order = in_seq_order && envs[i].seq > last;
      last = envs[i].seq;
    }
    if (!in_seq_order) {
      continue;
    }
    std::vector<std::string> ordered;
    std::string order_text;
    for (std::size_t i : perm) {
      ordered.push_back(lines[i]);
      order_text += "\n  " + lines[i];
    }
    EXPECT_EQ(EngineDump(ordered), expected) << "arrival order:" << order_text;
    ++orders;
  } while (std::next_permutation(perm.begin(), perm.end()));
  EXPECT_GT(orders, 0);
}

// The state after merging `lines` in the given order, checked against the reference too.
std::string MergeInOrder(const std::vector<std::string>& lines) {
  const std::string dump = EngineDump(lines);
  EXPECT_EQ(dump, reference::ReferenceDump(lines)) << "engine and reference disagree";
  return dump;
}

// ---------------------------------------------------------------------------------------------

TEST(MergeEngineTest, EmptyStateDumpsAnEmptyObject) {
  MergeEngine engine;
  EXPECT_EQ(engine.Dump(), "{}\n");
  EXPECT_EQ(reference::ReferenceDump({}), "{}\n");
  EXPECT_EQ(engine.Get(core::Path()), "{}");
  EXPECT_EQ(engine.Get(core::Path({"a"})), std::nullopt);
}

TEST(MergeEngineTest, SeedExampleMergesTwoBladesIntoOneObject) {
  ExpectMergeInAnyOrder(
      {
          Env("blade_host_A", 1, 1000, R"({"1":{"foo":"bar"}})"),
          Env("blade_host_A", 2, 1001, R"({"1":{"n":2}})"),
          Env("blade_host_B", 1, 1000, R"({"2":{"msg":"Hello World"}})"),
      },
      R"({"1":{"foo":"bar","n":2},"2":{"msg":"Hello World"}})"
      "\n");
}

TEST(MergeEngineTest, NestedObjectsMergeKeyByKey) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"n":{"x":{"p":1},"y":true}})"),
          Env("b", 1, 11, R"({"n":{"x":{"q":[1,2]},"z":"s"}})"),
          Env("b", 2, 12, R"({"n":{"x":{}}})"),  // {} keeps the children
      },
      R"({"n":{"x":{"p":1,"q":[1,2]},"y":true,"z":"s"}})"
      "\n");
}

TEST(MergeEngineTest, LateEraseKeepsNewerWritesUnderIt) {
  // Arrival: an older write, a newer write, then the erase whose stamp lies between them.
  const std::vector<std::string> lines = {
      Env("a", 1, 5, R"({"p":{"old":1}})"),
      Env("b", 1, 20, R"({"p":{"new":2}})"),
      Env("c", 1, 10, R"({"p":null})"),
  };
  EXPECT_EQ(MergeInOrder(lines), R"({"p":{"new":2}})"
                                 "\n");
  ExpectMergeInAnyOrder(lines, R"({"p":{"new":2}})"
                               "\n");
}

TEST(MergeEngineTest, OlderWriteUnderNewerEraseStaysErased) {
  const std::vector<std::string> lines = {
      Env("a", 1, 20, R"({"p":null})"),
      Env("b", 1, 10, R"({"p":{"q":{"r":1}}})"),
  };
  EXPECT_EQ(MergeInOrder(lines), "{}\n");
  ExpectMergeInAnyOrder(lines, "{}\n");
}

TEST(MergeEngineTest, LateEraseOfAnAbsentPathChangesNothing) {
  ExpectMergeInAnyOrder({Env("a", 1, 20, R"({"x":1})"), Env("b", 1, 10, R"({"p":null})")},
                        R"({"x":1})"
                        "\n");
}

TEST(MergeEngineTest, ScalarThenObjectAtOnePath) {
  ExpectMergeInAnyOrder({Env("a", 1, 10, R"({"x":"s"})"), Env("b", 1, 20, R"({"x":{"y":1}})")},
                        R"({"x":{"y":1}})"
                        "\n");
}

TEST(MergeEngineTest, ObjectThenScalarAtOnePath) {
  ExpectMergeInAnyOrder({Env("a", 1, 10, R"({"x":{"y":1}})"), Env("b", 1, 20, R"({"x":"s"})")},
                        R"({"x":"s"})"
                        "\n");
}

TEST(MergeEngineTest, EmptyObjectReplacesAScalarAndKeepsAnObject) {
  ExpectMergeInAnyOrder({Env("a", 1, 10, R"({"x":"s","y":{"k":1}})"),
                         Env("b", 1, 20, R"({"x":{},"y":{}})")},
                        R"({"x":{},"y":{"k":1}})"
                        "\n");
}

TEST(MergeEngineTest, CounterThenScalarThenCounterStartsAFreshCounter) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"x":{"$inc":5}})"),
          Env("b", 1, 20, R"({"x":"s"})"),
          Env("a", 2, 30, R"({"x":{"$inc":1}})"),
      },
      R"({"x":1})"
      "\n");
}

TEST(MergeEngineTest, ScalarThenCounterAtOnePath) {
  ExpectMergeInAnyOrder({Env("a", 1, 10, R"({"x":"s"})"), Env("b", 1, 20, R"({"x":{"$inc":2}})")},
                        R"({"x":2})"
                        "\n");
}

TEST(MergeEngineTest, CounterThenObjectThenCounterAtOnePath) {
  const std::vector<std::string> lines = {
      Env("a", 1, 10, R"({"x":{"$inc":2}})"),
      Env("b", 1, 20, R"({"x":{"y":1}})"),
  };
  ExpectMergeInAnyOrder(lines, R"({"x":{"y":1}})"
                               "\n");
  std::vector<std::string> more = lines;
  more.push_back(Env("c", 1, 30, R"({"x":{"$inc":7}})"));
  more.push_back(Env("c", 2, 40, R"({"x":{"z":true}})"));
  ExpectMergeInAnyOrder(more, R"({"x":{"z":true}})"
                              "\n");
}

TEST(MergeEngineTest, MaxRegisterThenCounterThenMinRegister) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"x":{"$max":9}})"),
          Env("b", 1, 20, R"({"x":{"$inc":1}})"),
          Env("a", 2, 30, R"({"x":{"$min":4}})"),
          Env("b", 2, 40, R"({"x":{"$min":6}})"),
      },
      R"({"x":4})"
      "\n");
}

TEST(MergeEngineTest, CounterSlotsArePerBlade) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"n":{"$inc":1}})"),
          Env("b", 1, 11, R"({"n":{"$inc":2}})"),
          Env("a", 2, 12, R"({"n":{"$inc":3}})"),
          Env("c", 1, 13, R"({"n":{"$inc":-10}})"),
      },
      R"({"n":-4})"
      "\n");
}

TEST(MergeEngineTest, LateResetOfACounterKeepsOnlyNewerIncrements) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"n":{"$inc":1}})"),
          Env("b", 1, 20, R"({"n":{"$inc":2}})"),
          Env("c", 1, 15, R"({"n":null})"),
          Env("a", 2, 30, R"({"n":{"$inc":3}})"),
      },
      R"({"n":5})"
      "\n");
}

TEST(MergeEngineTest, IncrementsBeyond32BitsMixWithQueuedOnesExactly) {
  // A queued increment holds a 32-bit amount; 2^31 and -2^31 - 1 take the slot path between
  // queued ones, and the late reset at ts 25 must still keep exactly the newer increments.
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"n":{"$inc":2147483647}})"),
          Env("a", 2, 20, R"({"n":{"$inc":2147483648}})"),
          Env("b", 1, 30, R"({"n":{"$inc":-2147483648}})"),
          Env("a", 3, 40, R"({"n":{"$inc":-2147483649}})"),
          Env("b", 2, 50, R"({"n":{"$inc":5}})"),
          Env("c", 1, 25, R"({"n":null})"),
      },
      R"({"n":-4294967292})"
      "\n");
}

TEST(MergeEngineTest, QueuedIncrementsFarApartInTsAndSeqStayExact) {
  // A queued increment keeps its ts and seq as 32-bit offsets from the first one of its queue and
  // its amount in 16 bits. Here a seq is below the base (a negative offset), a seq and a ts are
  // 2^31 and more away from it, and two amounts are out of 16 bits: those take the slot path
  // between queued ones, and the late reset at ts 3e9 must keep exactly the newer increments.
  ExpectMergeInAnyOrder(
      {
          Env("a", 1000, 10, R"({"n":{"$inc":1}})"),
          Env("b", 1, 11, R"({"n":{"$inc":2}})"),
          Env("b", 4294967296, 20, R"({"n":{"$inc":4}})"),
          Env("a", 1001, 2147483658, R"({"n":{"$inc":32767}})"),
          Env("b", 4294967297, 4000000000, R"({"n":{"$inc":-32769}})"),
          Env("a", 1002, 4000000001, R"({"n":{"$inc":-32768}})"),
          Env("a", 1003, 4000000002, R"({"n":{"$inc":32768}})"),
          Env("c", 1, 3000000000, R"({"n":null})"),
      },
      R"({"n":-32769})"
      "\n");
  // A seq 2^32 above the queue's base, then a late erase by the same blade at the same ts with
  // the seq just below it: the erase is older than the increment and keeps it.
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1000, 10, R"({"n":{"$inc":1}})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("b", 4294967296, 20, R"({"n":{"$inc":4}})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("b", 4294967295, 20, R"({"n":null})")), Outcome::kApplied);
  EXPECT_EQ(f.Dump(), R"({"n":4})"
                      "\n");
}

TEST(MergeEngineTest, FloatIncrementsSumSlotsInBladeOrder) {
  // ((0 + 0.1) + 0.2) + 0.3 = 0.6000000000000001, whereas 0.3 + 0.2 + 0.1 = 0.6.
  ExpectMergeInAnyOrder(
      {
          Env("c", 1, 10, R"({"f":{"$inc":0.3}})"),
          Env("b", 1, 10, R"({"f":{"$inc":0.2}})"),
          Env("a", 1, 10, R"({"f":{"$inc":0.1}})"),
      },
      R"({"f":0.6000000000000001})"
      "\n");
}

TEST(MergeEngineTest, FloatIncrementsSumInSeqOrderEvenWhenTsIsNot) {
  // Seq order: 1e16 + 1 rounds to 1e16, then - 1e16 = 0. Stamp order would give 1.
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"f":{"$inc":1e16}})"),
          Env("a", 2, 30, R"({"f":{"$inc":1.0}})"),
          Env("a", 3, 20, R"({"f":{"$inc":-1e16}})"),
      },
      R"({"f":0})"
      "\n");
}

TEST(MergeEngineTest, IntegerIncrementsStayExactAndMixWithDoubles) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"i":{"$inc":9007199254740992},"m":{"$inc":1}})"),
          Env("a", 2, 11, R"({"i":{"$inc":1},"m":{"$inc":0.5}})"),
          Env("b", 1, 12, R"({"h":{"$inc":0.5}})"),
          Env("b", 2, 13, R"({"h":{"$inc":-0.5}})"),
      },
      R"({"h":0,"i":9007199254740993,"m":1.5})"
      "\n");
}

TEST(MergeEngineTest, IntegerOverflowIsRejectedAndChangesNothing) {
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"c":{"$inc":9223372036854775807}})")), Outcome::kApplied);
  const ApplyResult r = f.Apply(Env("b", 1, 11, R"({"c":{"$inc":1},"d":1})"));
  EXPECT_EQ(r.outcome, Outcome::kInvalid);
  EXPECT_FALSE(r.reason.empty());
  EXPECT_EQ(f.Dump(), R"({"c":9223372036854775807})"
                      "\n");
  EXPECT_EQ(f.engine().counts().invalid, 1u);
}

TEST(MergeEngineTest, MaxAndMinKeepTheLargestAndSmallest) {
  const std::vector<std::string> lines = {
      Env("a", 1, 10, R"({"hi":{"$max":3},"lo":{"$min":3}})"),
      Env("b", 1, 20, R"({"hi":{"$max":1},"lo":{"$min":1}})"),
      Env("c", 1, 30, R"({"hi":{"$max":7},"lo":{"$min":7}})"),
      Env("c", 2, 40, R"({"hi":{"$max":2.5},"lo":{"$min":-0.5}})"),
  };
  ExpectMergeInAnyOrder(lines, R"({"hi":7,"lo":-0.5})"
                               "\n");
}

TEST(MergeEngineTest, MaxComparesIntegersAndDoublesExactly) {
  // 2^53 + 1 is larger than the double 2^53, though converting it to a double would tie.
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"m":{"$max":9007199254740992.0},"n":{"$min":9007199254740993}})"),
          Env("b", 1, 20, R"({"m":{"$max":9007199254740993},"n":{"$min":9007199254740992.0}})"),
      },
      R"({"m":9007199254740993,"n":9007199254740992})"
      "\n");
}

TEST(MergeEngineTest, MaxAndMinKeepTheOlderValueOnATie) {
  // The integer 10^18 and the double 1e18 are equal numbers that print differently: the one
  // applied first (smaller stamp) stays.
  ExpectMergeInAnyOrder(
      {Env("a", 1, 10, R"({"m":{"$min":1000000000000000000},"x":{"$max":1e18}})"),
       Env("b", 1, 20, R"({"m":{"$min":1e18},"x":{"$max":1000000000000000000}})")},
      R"({"m":1000000000000000000,"x":1e+18})"
      "\n");
}

// Integers against doubles just above INT64_MAX (a double-to-int64 cast there is undefined).
TEST(MergeEngineTest, MaxComparesNumbersNear2To63Exactly) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"m":{"$max":9223372036854775807},"n":{"$min":9.25e18}})"),
          Env("b", 1, 20, R"({"m":{"$max":9.25e18},"n":{"$min":9223372036854775807}})"),
      },
      R"({"m":9.25e+18,"n":9223372036854775807})"
      "\n");
}

TEST(MergeEngineTest, DollarKeysAndOddKeysAreOrderedByBytes) {
  ExpectMergeInAnyOrder({Env("a", 1, 10, R"({"b":1,"a":2,"é":3,"Z":4,"":5,"$$x":6,"k.d":7})")},
                        R"({"":5,"$x":6,"Z":4,"a":2,"b":1,"k.d":7,"é":3})"
                        "\n");
}

TEST(MergeEngineTest, StringsAreEscapedCanonically) {
  ExpectMergeInAnyOrder(
      {Env("a", 1, 10, R"({"s":"q\"b\\s\/\u0001\u001f\n\t\b\f\r\u00e9\ud83d\ude00\u007f"})")},
      "{\"s\":\"q\\\"b\\\\s/\\u0001\\u001f\\n\\t\\b\\f\\r\xC3\xA9\xF0\x9F\x98\x80\x7F\"}\n");
}

TEST(MergeEngineTest, NumbersArePrintedCanonically) {
  ExpectMergeInAnyOrder(
      {Env("a", 1, 10,
           R"({"a":1.0,"b":0.5,"c":1e21,"d":1e-7,"e":-12,"f":1E2,"g":123456.789,"h":-0.0,"i":0,"j":-0,)"
           R"("k":1.2345678901234567e19,"l":-1e19,"m":9007199254740992.0})")},
      R"({"a":1,"b":0.5,"c":1e+21,"d":1e-07,"e":-12,"f":100,"g":123456.789,"h":0,"i":0,"j":0,)"
      R"("k":1.2345678901234567e+19,"l":-1e+19,"m":9007199254740992})"
      "\n");
}

TEST(MergeEngineTest, ArraysAreAtomicValuesPrintedCanonically) {
  ExpectMergeInAnyOrder(
      {
          Env("a", 1, 10, R"({"l":[1,2,3],"m":[{"b":1,"a":{"d":null,"c":2.0}}, [], "x"]})"),
          Env("b", 1, 20, R"({"l":[4]})"),
      },
      R"({"l":[4],"m":[{"a":{"c":2,"d":null},"b":1},[],"x"]})"
      "\n");
}

TEST(MergeEngineTest, GetReturnsTheCanonicalValueAtAPath) {
  Feeder f;
  ASSERT_EQ(f.Offer(Env("a", 1, 10, R"({"x":{"y":{"$inc":2},"z":"s","k.d":{}}})")),
            Outcome::kApplied);
  EXPECT_EQ(f.engine().Get(core::Path({"x"})), R"({"k.d":{},"y":2,"z":"s"})");
  EXPECT_EQ(f.engine().Get(core::Path({"x", "y"})), "2");
  EXPECT_EQ(f.engine().Get(core::Path({"x", "k.d"})), "{}");
  EXPECT_EQ(f.engine().Get(core::Path({"x", "z", "w"})), std::nullopt);
  EXPECT_EQ(f.engine().Get(core::Path({"nope"})), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Redelivery and conflicts

TEST(MergeEngineTest, RedeliveryIsADuplicateAndChangesNothing) {
  Feeder f;
  const std::string line = Env("a", 1, 10, R"({"n":{"$inc":1},"s":"x"})");
  EXPECT_EQ(f.Offer(line), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("a", 2, 11, R"({"n":{"$inc":1}})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(line), Outcome::kDuplicate);
  EXPECT_EQ(f.Dump(), R"({"n":2,"s":"x"})"
                      "\n");
  EXPECT_EQ(f.engine().counts().applied, 2u);
  EXPECT_EQ(f.engine().counts().duplicates, 1u);
}

TEST(MergeEngineTest, RedeliverySpelledDifferentlyIsStillADuplicate) {
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"n":{"$inc":1},"s":"é","t":[1.0]})")), Outcome::kApplied);
  // Other envelope field order, whitespace, escapes and number spelling: the same body.
  EXPECT_EQ(f.Offer(R"({ "ts": 10, "shard": { "n": {"$inc": 1}, "s": "\u00e9", "t": [1.00] }, "seq": 1, "blade": "a" })"),
            Outcome::kDuplicate);
  EXPECT_EQ(f.Dump(), R"({"n":1,"s":"é","t":[1]})"
                      "\n");
}

// JSON objects are unordered: the same keys in another order are the same body.
TEST(MergeEngineTest, RedeliveryWithKeysInAnotherOrderIsADuplicate) {
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"n":{"$inc":1},"o":{"x":1,"y":2}})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"o":{"y":2,"x":1},"n":{"$inc":1}})")),
            Outcome::kDuplicate);
  EXPECT_EQ(f.Dump(), R"({"n":1,"o":{"x":1,"y":2}})"
                      "\n");
}

TEST(MergeEngineTest, SameSeqWithAnotherBodyIsAConflictAndChangesNothing) {
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"n":{"$inc":1}})")), Outcome::kApplied);
  const ApplyResult other_body = f.Apply(Env("a", 1, 10, R"({"n":{"$inc":2}})"));
  EXPECT_EQ(other_body.outcome, Outcome::kConflict);
  EXPECT_FALSE(other_body.reason.empty());
  EXPECT_EQ(f.Offer(Env("a", 1, 11, R"({"n":{"$inc":1}})")), Outcome::kConflict)
      << "same body, other ts";
  EXPECT_EQ(f.Dump(), R"({"n":1})"
                      "\n");
  EXPECT_EQ(f.engine().counts().conflicts, 2u);
}

TEST(MergeEngineTest, SameSeqFromAnotherBladeIsNoConflict) {
  Feeder f;
  EXPECT_EQ(f.Offer(Env("a", 1, 10, R"({"n":{"$inc":1}})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("b", 1, 10, R"({"n":{"$inc":2}})")), Outcome::kApplied);
  EXPECT_EQ(f.Dump(), R"({"n":3})"
                      "\n");
}

// A shard applied out of seq order (here a late shard, dead-lettered, that is redelivered once it
// is dominated) must not make an older, already applied seq that left the engine's window of
// recent seqs look new: it would be applied a second time, counting its $inc twice.
TEST(MergeEngineTest, RedeliveryAfterAnOutOfOrderSeqIsStillADuplicate) {
  Feeder f(EngineOptions{.allowed_lateness_ms = 10});
  f.engine().AdvanceWatermark(200);  // horizon 190
  const std::string late = Env("a", 1, 150, R"({"k":"v"})");
  EXPECT_EQ(f.Offer(late), Outcome::kLate);  // nothing decides "k" yet
  const std::string inc = Env("a", 2, 195, R"({"c":{"$inc":1}})");
  EXPECT_EQ(f.Offer(inc), Outcome::kApplied);
  EXPECT_EQ(f.Offer(Env("b", 1, 200, R"({"k":"w"})")), Outcome::kApplied);
  EXPECT_EQ(f.Offer(late), Outcome::kApplied);  // now dominated by b's newer "k": seq 1 after 2
  for (std::uint64_t seq = 3; seq <= 65; ++seq) {  // 63 more: seq 2 leaves the window of 64
    EXPECT_EQ(f.Offer(Env("a", seq, 195, "{}")), Outcome::kApplied);
  }
  EXPECT_EQ(f.Offer(inc), Outcome::kDuplicate);
  EXPECT_EQ(f.Dump(), R"({"c":1,"k":"w"})"
                      "\n");
}

// ---------------------------------------------------------------------------------------------
// Shards behind the GC horizon (watermark - allowed lateness)

class LateShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(f_.Offer(Env("a", 1, 100, R"({"a":"new","c":{"$inc":1},"o":{"p":1}})")),
              Outcome::kApplied);
    f_.engine().AdvanceWatermark(200);  // horizon 190
    before_ = f_.Dump();
  }
  Feeder f_{EngineOptions{.allowed_lateness_ms = 10}};
  std::string before_;
};

TEST_F(LateShardTest, DominatedLateShardIsAppliedWithoutChange) {
  EXPECT_EQ(f_.Offer(Env("b", 1, 50, R"({"a":"old"})")), Outcome::kApplied);
  EXPECT_EQ(f_.Offer(Env("b", 2, 60, R"({"a":null,"o":{"p":null}})")), Outcome::kApplied);
  EXPECT_EQ(f_.Dump(), before_);
  EXPECT_EQ(f_.engine().counts().late, 0u);
}

TEST_F(LateShardTest, UndecidableLateShardIsReportedLate) {
  const ApplyResult r = f_.Apply(Env("b", 1, 50, R"({"new_path":"x"})"));
  EXPECT_EQ(r.outcome, Outcome::kLate);
  EXPECT_FALSE(r.reason.empty());
  EXPECT_EQ(f_.Offer(Env("b", 2, 60, R"({"c":{"$inc":5}})")), Outcome::kLate);
  EXPECT_EQ(f_.Offer(Env("b", 3, 70, R"({"a":"older","zz":1})")), Outcome::kLate)
      << "one undecidable entry makes the whole shard late";
  EXPECT_EQ(f_.Dump(), before_);
  EXPECT_EQ(f_.engine().counts().late, 3u);
}

TEST_F(LateShardTest, ShardAtTheHorizonIsNotLate) {
  EXPECT_EQ(f_.Offer(Env("b", 1, 190, R"({"x":1,"c":{"$inc":2}})")), Outcome::kApplied);
  EXPECT_EQ(f_.Dump(), R"({"a":"new","c":3,"o":{"p":1},"x":1})"
                       "\n");
}

// ---------------------------------------------------------------------------------------------
// The change feed (docs/merge-rules.md, "Change events")

std::string ChangeText(const Change& c) {
  const char* cause = c.cause == ChangeCause::kSet       ? "set"
                      : c.cause == ChangeCause::kErase   ? "erase"
                      : c.cause == ChangeCause::kCounter ? "counter"
                                                         : "evict";
  return c.path + " " + c.old_json.value_or("-") + " -> " + c.new_json.value_or("-") + " " +
         cause + " " + c.blade + "/" + std::to_string(c.seq) + "@" + std::to_string(c.ts);
}

class FeedTest : public ::testing::Test {
 protected:
  FeedTest() {
    f_.engine().SetChangeSink([this](const Change& c) { events_.push_back(ChangeText(c)); });
  }
  std::vector<std::string> Take() { return std::exchange(events_, {}); }
  Feeder f_;
  std::vector<std::string> events_;
};

TEST_F(FeedTest, ANewSubtreeIsOneChangeAtItsRoot) {
  f_.Offer(Env("b", 1, 10, R"({"a":{"b":{"c":1,"d":"x"}}})"));
  EXPECT_EQ(Take(), std::vector<std::string>{R"(a - -> {"b":{"c":1,"d":"x"}} set b/1@10)"});
  f_.Offer(Env("b", 2, 11, R"({"a":{"b":{"c":2},"e":{}}})"));
  EXPECT_EQ(Take(), (std::vector<std::string>{"a.b.c 1 -> 2 set b/2@11", "a.e - -> {} set b/2@11"}));
}

TEST_F(FeedTest, AnEraseIsOneChangeWithTheOldSubtree) {
  f_.Offer(Env("b", 1, 10, R"({"a":{"b":{"c":1}},"n":{"$inc":2}})"));
  Take();
  f_.Offer(Env("b", 2, 11, R"({"a":null,"n":{"$inc":3},"zz":null})"));
  EXPECT_EQ(Take(), (std::vector<std::string>{R"(a {"b":{"c":1}} -> - erase b/2@11)",
                                              "n 2 -> 5 counter b/2@11"}));
}

TEST_F(FeedTest, NothingVisibleNothingEmitted) {
  f_.Offer(Env("b", 2, 20, R"({"a":"new","m":{"$max":5}})"));
  Take();
  f_.Offer(Env("b", 2, 20, R"({"a":"new","m":{"$max":5}})"));  // redelivery
  f_.Offer(Env("c", 1, 10, R"({"a":"old"})"));                 // older under newer
  f_.Offer(Env("c", 2, 21, R"({"a":"new","m":{"$max":4}})"));  // same value, smaller max
  EXPECT_EQ(Take(), std::vector<std::string>{});
}

TEST_F(FeedTest, ALateEraseReportsWhatItRemoved) {
  f_.Offer(Env("o", 1, 1000, R"({"job":{"owner":"orch","status":"queued"}})"));
  f_.Offer(Env("w", 1, 3000, R"({"job":{"status":"running"}})"));
  Take();
  f_.Offer(Env("o", 2, 2000, R"({"job":null})"));
  EXPECT_EQ(Take(), std::vector<std::string>{
                        R"(job {"owner":"orch","status":"running"} -> {"status":"running"} erase o/2@2000)"});
}

TEST_F(FeedTest, ReplacementByAnotherType) {
  f_.Offer(Env("b", 1, 10, R"({"a":{"x":1}})"));
  Take();
  f_.Offer(Env("b", 2, 11, R"({"a":{"$inc":1}})"));
  f_.Offer(Env("b", 3, 12, R"({"a":{"y":true}})"));
  EXPECT_EQ(Take(), (std::vector<std::string>{R"(a {"x":1} -> 1 counter b/2@11)",
                                              R"(a 1 -> {"y":true} set b/3@12)"}));
}

// ---------------------------------------------------------------------------------------------
// Provenance (Blame)

TEST(BlameTest, NamesTheDecidingShardAndEachCounterSlot) {
  MergeEngine engine;
  core::ShardDecoder decoder;
  const std::vector<std::string> lines = {
      Env("b1", 1, 100, R"({"intents":{"42":{"host":"a"}},"n":{"$inc":2},"m":{"$max":7}})"),
      Env("b2", 1, 200, R"({"intents":{"42":{"host":"b"}},"n":{"$inc":5},"m":{"$max":3}})"),
      Env("b1", 2, 300, R"({"n":{"$inc":1},"intents":{"43":"x"}})"),
      Env("b3", 1, 150, R"({"intents":{"42":{"host":"late"}}})"),  // older than b2's: loses
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    auto shard = decoder.DecodeEnvelope(lines[i]);
    ASSERT_TRUE(shard.ok());
    const ShardSource src{"/rec/a.ndjson", i * 100, i + 1};
    ASSERT_EQ(engine.Apply(**shard, i == 2 ? nullptr : &src).outcome, Outcome::kApplied);
  }
  auto host = engine.Blame(*core::Path::Parse("intents.42.host"));
  ASSERT_TRUE(host);
  EXPECT_EQ(host->kind, "value");
  EXPECT_EQ(host->value_json, R"("b")");
  EXPECT_EQ(host->writer.blade, "b2");
  EXPECT_EQ(host->writer.seq, 1u);
  EXPECT_EQ(host->writer.ts, 200);
  EXPECT_EQ(host->writer.source, "/rec/a.ndjson");
  EXPECT_EQ(host->writer.line, 2u);
  EXPECT_EQ(host->writer.offset, 100u);

  auto n = engine.Blame(*core::Path::Parse("n"));
  ASSERT_TRUE(n);
  EXPECT_EQ(n->kind, "counter");
  EXPECT_EQ(n->value_json, "8");
  EXPECT_EQ(n->writer.blade, "b1");  // the newest increment, applied without a source
  EXPECT_EQ(n->writer.source, "");
  ASSERT_EQ(n->shares.size(), 2u);
  EXPECT_EQ(n->shares[0].blade, "b1");
  EXPECT_EQ(n->shares[0].value_json, "3");
  EXPECT_EQ(n->shares[0].seq, 2u);
  EXPECT_EQ(n->shares[0].ts, 300);
  EXPECT_EQ(n->shares[1].blade, "b2");
  EXPECT_EQ(n->shares[1].value_json, "5");
  EXPECT_FALSE(n->retired_json);

  auto m = engine.Blame(*core::Path::Parse("m"));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, "max");
  ASSERT_EQ(m->shares.size(), 1u);
  EXPECT_EQ(m->shares[0].blade, "b1");  // the winner, not the newest
  EXPECT_EQ(m->shares[0].value_json, "7");

  auto intents = engine.Blame(*core::Path::Parse("intents"));
  ASSERT_TRUE(intents);
  EXPECT_EQ(intents->kind, "object");
  EXPECT_EQ(intents->writer.ts, 300);  // the newest write under it
  EXPECT_FALSE(engine.Blame(*core::Path::Parse("intents.44")));
}

// Counters written by more blades than Register::kIndexFrom: queued increments go to their
// slots through a table by blade id that one register fills and clears (Engine::Materialize).
// Here "b" has other slots, in another order, than "a", which is materialized just before it,
// and gets new blades' slots: a table left filled by "a" would put b10..b19's increments into
// slots of other blades.
TEST(BlameTest, CounterSlotsOfManyBladesStayPerBlade) {
  MergeEngine engine;
  core::ShardDecoder decoder;
  std::map<std::string, std::map<std::string, std::int64_t>> want;  // counter -> blade -> sum
  std::map<std::string, std::uint64_t> seqs;
  std::int64_t ts = 1000;
  auto inc = [&](const std::string& counter, int blade, std::int64_t amount) {
    std::string name = "b";
    name.append(std::to_string(100 + blade));
    std::string body = R"({")";
    body.append(counter).append(R"(":{"$inc":)").append(std::to_string(amount)).append("}}");
    auto shard = decoder.DecodeEnvelope(Env(name, ++seqs[name], ++ts, body));
    ASSERT_TRUE(shard.ok());
    ASSERT_EQ(engine.Apply(**shard).outcome, Outcome::kApplied);
    want[counter][name] += amount;
  };
  auto check = [&](const std::string& counter) {
    auto b = engine.Blame(*core::Path::Parse(counter));  // materializes its queued increments
    ASSERT_TRUE(b);
    std::map<std::string, std::int64_t> got;
    std::int64_t total = 0;
    for (const auto& share : b->shares) {
      got[share.blade] = std::stoll(share.value_json);
      total += got[share.blade];
    }
    EXPECT_EQ(got, want[counter]) << counter;
    EXPECT_EQ(b->value_json, std::to_string(total)) << counter;
  };
  for (int i = 0; i < 20; ++i) {
    inc("a", i, i + 1);
  }
  for (int i = 9; i >= 0; --i) {
    inc("b", i, 30 + i);
  }
  for (int i = 20; i < 30; ++i) {
    inc("b", i, 30 + i);
  }
  check("a");
  check("b");
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 20; ++i) {
      inc("a", i, 100 * (round + 1) + i);
      inc("b", 19 - i, 1000 * (round + 1) + i);
    }
    check("a");
    check("b");
  }
}

// ---------------------------------------------------------------------------------------------
// TTL (DESIGN.md §4)

// Concatenation without chained operator+ (g++ 12 -Wrestrict false positives).
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) {
    out.append(p);
  }
  return out;
}

// The seed's problem: "remove keys after a delay without breaking the counting". Blades count
// into per-blade counter slots, go idle and get folded; the totals stay exact, a redelivered old
// shard of a folded blade changes nothing, and a blade that comes back keeps counting.
TEST(TtlTest, FoldedCounterSlotsKeepExactTotalsAndRecogniseRedeliveries) {
  Feeder f(EngineOptions{.allowed_lateness_ms = 1000, .counter_slot_ttl_ms = 60'000});
  std::vector<std::string> lines;
  std::int64_t want = 0;
  // 40 blades, each counting for a while and then falling silent; ts advances 1 s per shard.
  std::int64_t ts = 1'000'000;
  for (int b = 0; b < 40; ++b) {
    for (int k = 1; k <= 5; ++k) {
      const int n = b * 7 + k;
      lines.push_back(Env(Cat({"w", std::to_string(b)}), static_cast<std::uint64_t>(k), ts,
                          Cat({R"({"jobs":{"done":{"$inc":)", std::to_string(n), "}}}"})));
      want += n;
      ts += 1000;
      ASSERT_EQ(f.Offer(lines.back()), Outcome::kApplied);
      f.engine().AdvanceWatermark(ts);
    }
  }
  EXPECT_EQ(f.Dump(), Cat({R"({"jobs":{"done":)", std::to_string(want), "}}\n"}));
  const std::uint64_t folded = f.engine().counts().folded_slots;
  EXPECT_GE(folded, 25u) << "slots idle for over a minute of event time must be folded";
  auto blame = f.engine().Blame(*core::Path::Parse("jobs.done"));
  ASSERT_TRUE(blame);
  ASSERT_TRUE(blame->retired_json);
  EXPECT_LE(blame->shares.size(), 40u - folded);
  std::int64_t sum = std::stoll(*blame->retired_json);
  for (const auto& share : blame->shares) {
    sum += std::stoll(share.value_json);
  }
  EXPECT_EQ(sum, want);
  // A redelivery of a folded blade's old shard is a duplicate and changes nothing.
  EXPECT_EQ(f.Offer(lines[2]), Outcome::kDuplicate);
  EXPECT_EQ(f.Offer(lines[7]), Outcome::kDuplicate);
  EXPECT_EQ(f.Dump(), Cat({R"({"jobs":{"done":)", std::to_string(want), "}}\n"}));
  // The blade comes back: a new slot on top of the retired sum.
  ASSERT_EQ(f.Offer(Env("w0", 6, ts, R"({"jobs":{"done":{"$inc":1000}}})")), Outcome::kApplied);
  EXPECT_EQ(f.Dump(), Cat({R"({"jobs":{"done":)", std::to_string(want + 1000), "}}\n"}));
  // The reference (which never folds) agrees.
  lines.push_back(Env("w0", 6, ts, R"({"jobs":{"done":{"$inc":1000}}})"));
  EXPECT_EQ(f.Dump(), reference::ReferenceDump(lines));
}

TEST(TtlTest, IdleSubtreesAreEvictedAndReportedOnTheChangeFeed) {
  Feeder f(EngineOptions{.allowed_lateness_ms = 0, .ttl = {TtlRule{{"intents", "*"}, 10'000}}});
  std::vector<std::string> events;
  f.engine().SetChangeSink([&](const Change& c) {
    if (c.cause == ChangeCause::kEvict) {
      events.push_back(Cat({c.path, " ", c.old_json.value_or("-"), " -> ",
                            c.new_json.value_or("-"), " @", std::to_string(c.ts)}));
    }
  });
  const std::vector<std::string> lines = {
      Env("o", 1, 1000, R"({"intents":{"41":{"host":"a"},"42":{"host":"b","module":"m"}}})"),
      Env("o", 2, 9000, R"({"intents":{"41":{"module":"x"}}})"),
      Env("o", 3, 16000, R"({"intents":{"42":{"module":"n"}}})"),
      Env("o", 4, 21000, R"({"other":1})"),
  };
  for (const auto& line : lines) {
    ASSERT_EQ(f.Offer(line), Outcome::kApplied);
  }
  f.engine().Close();
  EXPECT_EQ(f.Dump(), "{\"intents\":{\"42\":{\"module\":\"n\"}},\"other\":1}\n");
  std::sort(events.begin(), events.end());
  EXPECT_EQ(events, (std::vector<std::string>{
                        R"(intents.41 {"host":"a","module":"x"} -> - @19001)",
                        R"(intents.42 {"host":"b","module":"n"} -> {"module":"n"} @16000)"}));
  EXPECT_EQ(f.engine().counts().evicted, 2u);
}

TEST(MergeEngineTest, ThousandsOfNodesFreedAtOnceAreEachReusedOnce) {
  // An erase frees thousands of nodes at once; the engine sorts them by address for reuse (a
  // radix sort from 1,024 nodes, Engine::SortFree). Each path created next needs a node of its
  // own: a node lost or handed out twice shows in the dump or the node count.
  constexpr int kKeys = 3000;
  const auto object = [&](const std::string& top, int from) {
    std::string body = "{\"" + top + "\":{";
    std::map<std::string, int> sorted;
    for (int i = 0; i < kKeys; ++i) {
      std::string key = "k";
      key += std::to_string(i);
      body.append(i == 0 ? "\"" : ",\"").append(key).append("\":");
      body.append(std::to_string(from + i));
      sorted[key] = from + i;
    }
    std::string dump = "{\"" + top + "\":{";
    for (const auto& [key, value] : sorted) {
      dump.append(dump.back() == '{' ? "\"" : ",\"").append(key).append("\":");
      dump.append(std::to_string(value));
    }
    return std::pair{body + "}}", dump + "}}\n"};
  };
  Feeder f;
  const auto [first, first_dump] = object("o", 0);
  ASSERT_EQ(f.Offer(Env("b", 1, 10, first)), Outcome::kApplied);
  EXPECT_EQ(f.Dump(), first_dump);
  const std::size_t nodes = f.engine().node_count();
  for (int round = 1; round <= 3; ++round) {
    const std::string gone = round % 2 == 1 ? "o" : "p";
    const std::string next = round % 2 == 1 ? "p" : "o";
    ASSERT_EQ(f.Offer(Env("b", 2 * round, 20 * round, "{\"" + gone + "\":null}")),
              Outcome::kApplied);
    f.engine().node_count();  // the deferred kills run: kKeys nodes freed together
    const auto [body, dump] = object(next, round * kKeys);
    ASSERT_EQ(f.Offer(Env("b", 2 * round + 1, 20 * round + 10, body)), Outcome::kApplied);
    EXPECT_EQ(f.Dump(), dump) << "round " << round;
    // The erased object stays as a tombstone (the lateness window is long): one node more.
    EXPECT_EQ(f.engine().node_count(), nodes + 1) << "round " << round;
  }
}
}  // namespace
}  // namespace lattice::crdt
