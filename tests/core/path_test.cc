// Tests of Path (path.h): dotted syntax with escapes, and the order-preserving key encoding
// (byte order of keys == lexicographic order of segment lists; a subtree is one prefix range).
#include "lattice/core/path.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace lattice::core {
namespace {

using Segments = std::vector<std::string>;

Segments ParseOk(std::string_view dotted) {
  auto p = Path::Parse(dotted);
  EXPECT_TRUE(p.ok()) << dotted << ": " << p.status().ToString();
  return p.ok() ? p->segments() : Segments{"<parse failed>"};
}

// Random segment lists over an alphabet that stresses the encoding: NUL (escaped as 00 FF), the
// terminator/marker bytes 01 and 02, FF, and the dotted syntax's '.' and '\'.
class RandomPaths {
 public:
  explicit RandomPaths(std::uint32_t seed) : rng_(seed) {}

  std::string Segment() {
    static constexpr char kAlphabet[] = {'\0', '\x01', '\x02', 'a', 'b', '.', '\\', '\xff', '\x7f'};
    std::uniform_int_distribution<int> len(0, 4);
    std::uniform_int_distribution<std::size_t> pick(0, sizeof(kAlphabet) - 1);
    std::string s;
    for (int n = len(rng_); n > 0; --n) {
      s.push_back(kAlphabet[pick(rng_)]);
    }
    return s;
  }

  Segments List(int max_len = 4) {
    std::uniform_int_distribution<int> len(0, max_len);
    Segments out;
    for (int n = len(rng_); n > 0; --n) {
      out.push_back(Segment());
    }
    return out;
  }

  std::mt19937& rng() { return rng_; }

 private:
  std::mt19937 rng_;
};

// A fresh seed per run (printed), or LATTICE_TEST_SEED to reproduce a failure.
std::uint32_t TestSeed() {
  const char* env = std::getenv("LATTICE_TEST_SEED");
  const std::uint32_t seed = env != nullptr ? static_cast<std::uint32_t>(std::strtoul(env, nullptr, 10))
                                            : std::random_device{}();
  std::printf("random seed: %u (set LATTICE_TEST_SEED to repeat)\n", seed);
  return seed;
}

TEST(PathTest, ParsesDottedSegments) {
  EXPECT_EQ(ParseOk("intents.42.host"), (Segments{"intents", "42", "host"}));
  EXPECT_EQ(ParseOk("a"), (Segments{"a"}));
  EXPECT_EQ(ParseOk("nodes.n-1.status"), (Segments{"nodes", "n-1", "status"}));
}

TEST(PathTest, EmptyStringIsTheRoot) {
  auto p = Path::Parse("");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->empty());
  EXPECT_EQ(p->size(), 0u);
  EXPECT_EQ(p->ToString(), "");
  EXPECT_EQ(p->Encode(), "");
}

TEST(PathTest, EmptySegmentsAreKept) {
  EXPECT_EQ(ParseOk("a..b"), (Segments{"a", "", "b"}));
  EXPECT_EQ(ParseOk("."), (Segments{"", ""}));
  EXPECT_EQ(ParseOk("a."), (Segments{"a", ""}));
  EXPECT_EQ(ParseOk(".a"), (Segments{"", "a"}));
}

TEST(PathTest, BackslashEscapesDotAndBackslash) {
  EXPECT_EQ(ParseOk("hosts.example\\.com.up"), (Segments{"hosts", "example.com", "up"}));
  EXPECT_EQ(ParseOk("a\\\\b"), (Segments{"a\\b"}));
  EXPECT_EQ(ParseOk("a\\\\.b"), (Segments{"a\\", "b"}));
  EXPECT_EQ(ParseOk("\\.\\."), (Segments{".."}));
  EXPECT_EQ(ParseOk("\\\\"), (Segments{"\\"}));
}

TEST(PathTest, KeepsNonAsciiAndDollarKeys) {
  EXPECT_EQ(ParseOk("caf\xc3\xa9.$x"), (Segments{"caf\xc3\xa9", "$x"}));
}

TEST(PathTest, RejectsBadEscapes) {
  for (std::string_view bad : {"a\\", "\\", "a\\b", "a\\n", "a.\\x.b", "\\\\\\", "a\\ "}) {
    auto p = Path::Parse(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(p.status().message().find(std::string(bad)), std::string::npos)
        << "the message names the path: " << p.status().message();
  }
  auto dangling = Path::Parse("a\\");
  EXPECT_NE(dangling.status().message().find("dangling"), std::string::npos);
  auto unknown = Path::Parse("a\\n");
  EXPECT_NE(unknown.status().message().find("escape"), std::string::npos);
}

TEST(PathTest, ToStringEscapesDotsAndBackslashes) {
  EXPECT_EQ(Path({"hosts", "example.com", "up"}).ToString(), "hosts.example\\.com.up");
  EXPECT_EQ(Path({"a\\b"}).ToString(), "a\\\\b");
  EXPECT_EQ(Path({"a", "", "b"}).ToString(), "a..b");
  EXPECT_EQ(Path({"x"}).ToString(), "x");
}

TEST(PathTest, ToStringRoundTripsThroughParse) {
  RandomPaths gen(TestSeed());
  for (int i = 0; i < 5000; ++i) {
    Segments s = gen.List();
    const Path p(s);
    auto back = Path::Parse(p.ToString());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->segments(), s);
  }
}

// The one-segment path [""] cannot print as "" (the root): it is spelled `\e`, which is also
// accepted as any whole empty segment, and nowhere else.
TEST(PathTest, SingleEmptySegmentRoundTrips) {
  const Path p(Segments{""});
  EXPECT_EQ(p.ToString(), "\\e");
  auto back = Path::Parse(p.ToString());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->segments(), Segments{""});
  EXPECT_EQ(Path::Parse("")->size(), 0u);
}

TEST(PathTest, EmptyKeyEscapeIsAWholeSegment) {
  EXPECT_EQ(Path::Parse("a.\\e.b")->segments(), (Segments{"a", "", "b"}));
  EXPECT_EQ(Path::Parse("\\e.b")->segments(), (Segments{"", "b"}));
  EXPECT_EQ(Path::Parse("a.\\e")->segments(), (Segments{"a", ""}));
  EXPECT_EQ(Path::Parse("a\\\\e")->segments(), Segments{"a\\e"});  // an escaped backslash, then e
  for (std::string_view bad : {"a\\e", "\\ea", "\\e\\e", "a.\\eb", "\\.\\e", "x\\e.y"}) {
    auto p = Path::Parse(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_NE(p.status().message().find("whole segment"), std::string::npos)
        << p.status().message();
  }
}

TEST(PathTest, EncodeExamples) {
  using namespace std::string_literals;
  EXPECT_EQ(Path({"a"}).Encode(), "a\0\x01"s);
  EXPECT_EQ(Path({"a", "bc"}).Encode(), "a\0\x01"s "bc\0\x01"s);
  EXPECT_EQ(Path({""}).Encode(), "\0\x01"s);
  EXPECT_EQ(Path({"a\0b"s}).Encode(), "a\0\xff"s "b\0\x01"s);
  std::string appended;
  AppendEncodedSegment(appended, "a");
  AppendEncodedSegment(appended, "bc");
  EXPECT_EQ(appended, Path({"a", "bc"}).Encode());
}

TEST(PathTest, EncodeOrderEqualsLexicographicOrderOfSegments) {
  RandomPaths gen(TestSeed());
  for (int i = 0; i < 20000; ++i) {
    const Segments a = gen.List();
    const Segments b = gen.List();
    const std::string ea = Path(a).Encode();
    const std::string eb = Path(b).Encode();
    // std::string compares bytes as unsigned char, which is the order RocksDB uses.
    EXPECT_EQ(a < b, ea < eb) << Path(a).ToString() << " vs " << Path(b).ToString();
    EXPECT_EQ(a == b, ea == eb);
  }
}

TEST(PathTest, SortedEncodingsGiveSortedSegmentLists) {
  RandomPaths gen(TestSeed());
  std::vector<Segments> paths;
  for (int i = 0; i < 2000; ++i) {
    paths.push_back(gen.List(5));
  }
  std::vector<std::string> keys;
  for (const auto& p : paths) {
    keys.push_back(Path(p).Encode());
  }
  std::sort(paths.begin(), paths.end());
  std::sort(keys.begin(), keys.end());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    auto d = Path::Decode(keys[i]);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->path.segments(), paths[i]) << "position " << i;
  }
}

TEST(PathTest, SubtreeIsExactlyThePrefixRange) {
  RandomPaths gen(TestSeed());
  for (int i = 0; i < 20000; ++i) {
    const Segments p = gen.List(3);
    Segments q = gen.List(4);
    if (i % 2 == 0) {
      // Half the time make q a descendant (or p itself).
      Segments tail = gen.List(2);
      q = p;
      q.insert(q.end(), tail.begin(), tail.end());
    }
    const bool under = q.size() >= p.size() && std::equal(p.begin(), p.end(), q.begin());
    const std::string ep = Path(p).Encode();
    const std::string eq = Path(q).Encode();
    EXPECT_EQ(under, eq.compare(0, ep.size(), ep) == 0 && eq.size() >= ep.size())
        << Path(q).ToString() << " under " << Path(p).ToString();
  }
}

TEST(PathTest, SiblingWithLongerKeyIsNotInTheSubtree) {
  const std::string a = Path({"a"}).Encode();
  const std::string ab = Path({"ab"}).Encode();
  const std::string a_nul = Path({std::string("a\0", 2)}).Encode();
  const std::string a_x = Path({"a", "x"}).Encode();
  EXPECT_NE(ab.compare(0, a.size(), a), 0);
  EXPECT_NE(a_nul.compare(0, a.size(), a), 0);
  EXPECT_EQ(a_x.compare(0, a.size(), a), 0);
}

TEST(PathTest, DecodeRoundTripsIncludingNulBytes) {
  using namespace std::string_literals;
  const Segments cases[] = {
      {},
      {""},
      {"", ""},
      {"a", "b", "c"},
      {"\0"s},
      {"\0\0"s, "x\0"s, "\0y"s},
      {"\0\xff"s, "\0\x01"s, "\0\x02"s},
      {"caf\xc3\xa9", "$x", "a.b", "c\\d"},
  };
  for (const auto& s : cases) {
    auto d = Path::Decode(Path(s).Encode());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->path.segments(), s);
    EXPECT_TRUE(d->rest.empty());
  }
  RandomPaths gen(TestSeed());
  for (int i = 0; i < 5000; ++i) {
    const Segments s = gen.List(6);
    auto d = Path::Decode(Path(s).Encode());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->path, Path(s));
  }
}

TEST(PathTest, DecodeReturnsTheSuffixAfterTheMarker) {
  std::string key = Path({"counters", "c"}).Encode();
  key += kKeySuffixMarker;
  key += "blade-7";
  auto d = Path::Decode(key);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->path.segments(), (Segments{"counters", "c"}));
  EXPECT_EQ(d->rest, std::string(kKeySuffixMarker) + "blade-7");
}

TEST(PathTest, DecodeRejectsMalformedKeys) {
  using namespace std::string_literals;
  for (const std::string& bad : {"a"s, "a\0"s, "a\0\x03"s, "\0"s, "a\0\x01"
                                                                 "b"s,
                                 "a\0\x02"s}) {
    auto d = Path::Decode(bad);
    ASSERT_FALSE(d.ok()) << "key of " << bad.size() << " bytes";
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption);
  }
}

}  // namespace
}  // namespace lattice::core
