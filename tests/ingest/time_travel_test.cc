// Tests of time travel (ingest/time_travel.h) and `Replay` with a cut, through the public API:
// the state at a cut equals the independent reference over the shards the cut names; a diff
// applied to the old dump (by an applier written here on nlohmann_json) gives the new dump, over
// random cut points of synthetic recordings; a replay stopped by --until and continued later
// equals one full replay, also when a blade's clock went backwards across the cut.
#include "../envelope.h"
#include "lattice/ingest/time_travel.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>

#include "../crdt/reference.h"
#include "lattice/core/path.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/ingest/replayer.h"
#include "lattice/ingest/synthetic.h"

namespace lattice::ingest {
namespace {

std::vector<std::string> Synthetic(std::uint64_t shards, std::uint32_t blades, std::uint64_t seed) {
  SyntheticOptions options;
  options.shards = shards;
  options.blades = blades;
  options.seed = seed;
  options.intent_window = 40;  // erasures early and often
  options.domains = 5;
  std::vector<std::string> lines;
  GenerateSynthetic(options, [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

// Keeps each blade's lines in their order but interleaves the blades at random, as partitions
// consumed at different speeds do: many shards then arrive after newer shards of other blades.
std::vector<std::string> InterleaveBlades(const std::vector<std::string>& lines,
                                          std::mt19937_64& rng) {
  std::map<std::string, std::vector<std::string>> by_blade;
  for (const std::string& line : lines) {
    by_blade[reference::ParseEnvelope(line).blade].push_back(line);
  }
  std::vector<std::pair<std::vector<std::string>*, std::size_t>> heads;
  for (auto& [blade, v] : by_blade) {
    heads.push_back({&v, 0});
  }
  std::vector<std::string> out;
  while (!heads.empty()) {
    const std::size_t k = std::uniform_int_distribution<std::size_t>(0, heads.size() - 1)(rng);
    auto& [v, i] = heads[k];
    out.push_back((*v)[i++]);
    if (i == v->size()) {
      heads.erase(heads.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  return out;
}

std::vector<std::string> UpToTs(const std::vector<std::string>& lines, std::int64_t ts) {
  std::vector<std::string> out;
  for (const std::string& line : lines) {
    if (reference::ParseEnvelope(line).ts <= ts) {
      out.push_back(line);
    }
  }
  return out;
}

// Applies a leaf diff to a JSON document as time_travel.h specifies: a removal erases the path
// and every ancestor object it leaves empty (except the root); a set creates missing ancestors.
// Independent of the diff code: nlohmann_json trees, paths split by core::Path::Parse.
::testing::AssertionResult ApplyDiff(nlohmann::json& doc, const std::vector<LeafChange>& changes) {
  for (const LeafChange& c : changes) {
    auto parsed = core::Path::Parse(c.path);
    if (!parsed.ok()) {
      return ::testing::AssertionFailure() << "unparsable path " << c.path;
    }
    const std::vector<std::string>& keys = parsed->segments();
    if (keys.empty()) {
      return ::testing::AssertionFailure() << "a change at the root";
    }
    if (c.new_json) {
      nlohmann::json* node = &doc;
      for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
        if (!node->contains(keys[i])) {
          (*node)[keys[i]] = nlohmann::json::object();
        }
        node = &(*node)[keys[i]];
        if (!node->is_object()) {
          return ::testing::AssertionFailure() << c.path << ": an ancestor is not an object";
        }
      }
      if (c.old_json.has_value() != node->contains(keys.back())) {
        return ::testing::AssertionFailure() << c.path << ": old value presence disagrees";
      }
      (*node)[keys.back()] = nlohmann::json::parse(*c.new_json);
    } else {
      std::vector<nlohmann::json*> chain{&doc};
      for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
        if (!chain.back()->contains(keys[i])) {
          return ::testing::AssertionFailure() << c.path << ": removed path is absent";
        }
        chain.push_back(&(*chain.back())[keys[i]]);
      }
      if (!chain.back()->contains(keys.back()) ||
          reference::CanonicalJson((*chain.back())[keys.back()]) != *c.old_json) {
        return ::testing::AssertionFailure() << c.path << ": removed value differs from old";
      }
      chain.back()->erase(keys.back());
      for (std::size_t i = chain.size() - 1; i > 0 && chain[i]->empty(); --i) {
        chain[i - 1]->erase(keys[i - 1]);
      }
    }
  }
  return ::testing::AssertionSuccess();
}

class TimeTravelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "lattice_time_travel_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string PathOf(const std::string& name) const { return (dir_ / name).string(); }

  std::string Write(const std::string& name, const std::vector<std::string>& lines) {
    const std::string path = PathOf(name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (const std::string& line : lines) {
      out << line << '\n';
    }
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::string StateAt(const std::vector<std::string>& files, const Cut& cut) {
    auto states = StatesAt(files, {cut}, TimeTravelOptions());
    EXPECT_TRUE(states.ok()) << states.status().ToString();
    return states.ok() ? (*states)[0].dump : "";
  }

  // Replays into the store directory `name` (opened for this call only) and returns its dump.
  std::string ReplayInto(const std::string& name, const std::vector<std::string>& files,
                         const Cut& until, std::size_t batch = 1 << 16) {
    auto store = crdt::StateStore::Open(PathOf(name), crdt::StoreOptions());
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) {
      return "";
    }
    ReplayOptions options;
    options.files = files;
    options.dead_letter_path = PathOf(name + ".dead.ndjson");
    options.batch_shards = batch;
    options.until = until;
    auto report = Replay(**store, options);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report.ok() ? report->rejected() : 1, 0u);
    return (*store)->Dump();
  }

  std::filesystem::path dir_;
};

TEST(CutFilterTest, TsCutAdmitsLateLinesButStopsABladeAtItsFirstShardPastTheCut) {
  CutFilter f(Cut::UntilTs(100));
  EXPECT_TRUE(f.Admit(true, "a", 50));
  EXPECT_FALSE(f.Admit(true, "b", 150));  // past the cut
  EXPECT_TRUE(f.Admit(true, "a", 90));    // a late line of another blade still counts
  EXPECT_FALSE(f.Admit(true, "b", 60));   // b's clock went back: b stays stopped
  EXPECT_TRUE(f.Admit(false, "", 0));     // undecodable lines are admitted (dead-lettered)
  EXPECT_TRUE(f.Admit(true, "a", 100));   // ts == cut is in
  EXPECT_FALSE(f.Full());
}

TEST(CutFilterTest, LinesCutAdmitsTheFirstNLines) {
  CutFilter f(Cut::FirstLines(2));
  EXPECT_FALSE(f.Full());
  EXPECT_TRUE(f.Admit(false, "", 0));
  EXPECT_TRUE(f.Admit(true, "a", 1000));
  EXPECT_TRUE(f.Full());
  EXPECT_FALSE(f.Admit(true, "a", 1));
  CutFilter none(Cut::FirstLines(0));
  EXPECT_TRUE(none.Full());
}

TEST(DiffCanonicalTest, LeafChangesAddRemoveAndTypeChanges) {
  const std::string a =
      R"({"a":{"b":1,"c":{}},"k\"q":"x","l":[1,2],"o":{"p":1},"s":"old","t":{"u":{"v":true}}})"
      "\n";
  const std::string b = R"({"a":{"b":2},"k\"q":{"z":null},"l":[1,2],"o":{},"s":{"n":1},"t":5})"
                        "\n";
  auto d = DiffCanonical(a, b, core::Path());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  std::vector<std::string> lines;
  for (const LeafChange& c : *d) {
    lines.push_back(c.path + " " + c.old_json.value_or("-") + " " + c.new_json.value_or("-"));
  }
  const std::vector<std::string> expected = {
      "a.b 1 2", "a.c {} -",     R"(k"q "x" -)", "k\"q.z - null", "o.p 1 -",
      "o - {}",  R"(s "old" -)", "s.n - 1",      "t.u.v true -",  "t - 5",
  };
  EXPECT_EQ(lines, expected);
  nlohmann::json doc = nlohmann::json::parse(a);
  ASSERT_TRUE(ApplyDiff(doc, *d));
  EXPECT_EQ(reference::CanonicalJson(doc) + "\n", b);
}

TEST(DiffCanonicalTest, PrefixLimitsTheDiffAndMayNameALeafOrNothing) {
  const std::string a = R"({"x":{"y":1,"z":2},"w":{"q":{"r":1}}})";
  const std::string b = R"({"x":{"y":1,"z":3},"w":7})";
  auto d = DiffCanonical(a, b, *core::Path::Parse("x"));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].path, "x.z");
  auto leaf = DiffCanonical(a, b, *core::Path::Parse("w"));
  ASSERT_TRUE(leaf.ok());
  ASSERT_EQ(leaf->size(), 2u);
  EXPECT_EQ((*leaf)[0].path, "w.q.r");
  EXPECT_FALSE((*leaf)[0].new_json.has_value());
  EXPECT_EQ((*leaf)[1].path, "w");
  EXPECT_EQ((*leaf)[1].new_json, "7");
  auto none = DiffCanonical(a, b, *core::Path::Parse("nothing.here"));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(DiffCanonical("{\"a\":", b, core::Path()).ok());
}

TEST(DiffCanonicalTest, CanonicalAtFindsEscapedKeys) {
  const std::string doc = R"({"a.b":{"c\\d":[1,{"e":"}"}]},"f":"x"})";
  auto v = CanonicalAt(doc, core::Path({"a.b", "c\\d"}));
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ(**v, R"([1,{"e":"}"}])");
  auto missing = CanonicalAt(doc, core::Path({"f", "g"}));
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(TimeTravelTest, StateAtATsCutEqualsTheReferenceOverTheShardsUpToIt) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const std::vector<std::string> lines = InterleaveBlades(Synthetic(1500, 6, seed), rng);
    const std::string file = Write("rec.ndjson", lines);
    const std::int64_t first = 1732350000000;
    std::vector<Cut> cuts;
    std::vector<std::int64_t> ts;
    for (int i = 0; i < 6; ++i) {
      ts.push_back(first - 1 + std::uniform_int_distribution<std::int64_t>(0, 1502)(rng));
      cuts.push_back(Cut::UntilTs(ts.back()));
    }
    auto states = StatesAt({file}, cuts, TimeTravelOptions());
    ASSERT_TRUE(states.ok()) << states.status().ToString();
    for (std::size_t i = 0; i < cuts.size(); ++i) {
      SCOPED_TRACE("cut at ts " + std::to_string(ts[i]));
      const std::vector<std::string> upto = UpToTs(lines, ts[i]);
      EXPECT_EQ((*states)[i].dump, reference::ReferenceState::FromLines(upto).Dump());
      EXPECT_EQ((*states)[i].summary.lines, upto.size());
      EXPECT_EQ((*states)[i].summary.applied, upto.size());
    }
  }
}

TEST_F(TimeTravelTest, DiffAppliedToTheOldDumpGivesTheNewDumpAtRandomCuts) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed * 7919);
    const std::vector<std::string> lines = InterleaveBlades(Synthetic(1200, 5, seed), rng);
    const std::string file = Write("rec.ndjson", lines);
    auto random_cut = [&]() {
      if (rng() % 2 == 0) {
        return Cut::FirstLines(std::uniform_int_distribution<std::uint64_t>(0, 1250)(rng));
      }
      return Cut::UntilTs(1732350000000 - 5 +
                          std::uniform_int_distribution<std::int64_t>(0, 1210)(rng));
    };
    for (int round = 0; round < 8; ++round) {
      const Cut from = random_cut();
      const Cut to = random_cut();
      SCOPED_TRACE("round " + std::to_string(round));
      auto states = StatesAt({file}, {from, to}, TimeTravelOptions());
      ASSERT_TRUE(states.ok()) << states.status().ToString();
      const std::string& old_dump = (*states)[0].dump;
      const std::string& new_dump = (*states)[1].dump;
      auto diff = Diff({file}, from, to, core::Path(), TimeTravelOptions());
      ASSERT_TRUE(diff.ok()) << diff.status().ToString();
      EXPECT_EQ(diff->added + diff->removed + diff->changed, diff->changes.size());
      EXPECT_EQ(diff->changes.empty(), old_dump == new_dump);
      nlohmann::json doc = nlohmann::json::parse(old_dump);
      ASSERT_TRUE(ApplyDiff(doc, diff->changes));
      EXPECT_EQ(reference::CanonicalJson(doc) + "\n", new_dump);

      // Under a prefix: only paths under it, and applying them fixes exactly that subtree.
      for (const char* prefix : {"intents", "nodes", "scrape"}) {
        auto sub = Diff({file}, from, to, *core::Path::Parse(prefix), TimeTravelOptions());
        ASSERT_TRUE(sub.ok());
        nlohmann::json partial = nlohmann::json::parse(old_dump);
        ASSERT_TRUE(ApplyDiff(partial, sub->changes));
        const nlohmann::json want = nlohmann::json::parse(new_dump);
        EXPECT_EQ(partial.value(prefix, nlohmann::json()), want.value(prefix, nlohmann::json()))
            << prefix;
        for (const LeafChange& c : sub->changes) {
          EXPECT_TRUE(c.path == prefix || c.path.rfind(std::string(prefix) + ".", 0) == 0)
              << c.path;
        }
      }
    }
  }
}

TEST_F(TimeTravelTest, UntilTheLastTsEqualsTheFullReplay) {
  std::mt19937_64 rng(11);
  const std::vector<std::string> lines = InterleaveBlades(Synthetic(3000, 8, 11), rng);
  const std::string file = Write("rec.ndjson", lines);
  std::int64_t last = 0;
  for (const std::string& line : lines) {
    last = std::max(last, reference::ParseEnvelope(line).ts);
  }
  const std::string full = ReplayInto("full", {file}, Cut::All());
  EXPECT_EQ(full, reference::ReferenceState::FromLines(lines).Dump());
  EXPECT_EQ(StateAt({file}, Cut::UntilTs(last)), full);
  EXPECT_EQ(StateAt({file}, Cut::All()), full);
  EXPECT_EQ(StateAt({file}, Cut::FirstLines(lines.size())), full);
  EXPECT_EQ(ReplayInto("until", {file}, Cut::UntilTs(last)), full);
  EXPECT_NE(StateAt({file}, Cut::UntilTs(last - 1)), full);
}

TEST_F(TimeTravelTest, ReplayUntilEqualsTheInMemoryStateAndContinuesExactly) {
  std::mt19937_64 rng(5);
  const std::vector<std::string> lines = InterleaveBlades(Synthetic(4000, 6, 5), rng);
  const std::string file = Write("rec.ndjson", lines);
  const std::string full = ReplayInto("full", {file}, Cut::All());
  const std::int64_t t1 = 1732350000000 + 1000;
  const std::int64_t t2 = 1732350000000 + 2500;
  // Small batches: positions and the watermark are committed often in between.
  EXPECT_EQ(ReplayInto("s", {file}, Cut::UntilTs(t1), 97), StateAt({file}, Cut::UntilTs(t1)));
  EXPECT_EQ(ReplayInto("s", {file}, Cut::UntilTs(t2), 97), StateAt({file}, Cut::UntilTs(t2)));
  EXPECT_EQ(ReplayInto("s", {file}, Cut::All(), 97), full);

  // --until-seq: a prefix of the replay order; the next run starts after it.
  EXPECT_EQ(ReplayInto("n", {file}, Cut::FirstLines(1234), 50),
            StateAt({file}, Cut::FirstLines(1234)));
  EXPECT_EQ(ReplayInto("n", {file}, Cut::FirstLines(1000), 50),
            StateAt({file}, Cut::FirstLines(2234)));
  EXPECT_EQ(ReplayInto("n", {file}, Cut::All(), 50), full);
}

TEST_F(TimeTravelTest, ABladeWhoseClockWentBackAcrossTheCutStaysExactWhenContinued) {
  // Blade "skew" jumps ahead past the cut at seq 2, then its clock goes back: seqs 3..202 have
  // small ts. Had the cut taken them (ts <= cut) while leaving seq 2 out, seq 2 would arrive in
  // the continuing run below 200 newer seqs of its blade and be taken for an old duplicate.
  std::vector<std::string> lines;
  lines.push_back(Env("skew", 1, 100, R"({"k":{"$inc":1}})"));
  lines.push_back(Env("other", 1, 150, R"({"o":1})"));
  lines.push_back(Env("skew", 2, 5000, R"({"k":{"$inc":1000},"jump":true})"));
  for (std::uint64_t s = 3; s <= 202; ++s) {
    lines.push_back(Env("skew", s, 200 + static_cast<std::int64_t>(s), R"({"k":{"$inc":1}})"));
    lines.push_back(Env("other", s - 1, 200 + static_cast<std::int64_t>(s),
                        R"({"o":)" + std::to_string(s) + "}"));
  }
  const std::string file = Write("skew.ndjson", lines);
  const std::string at_cut = ReplayInto("s", {file}, Cut::UntilTs(1000));
  EXPECT_EQ(at_cut, R"({"k":1,"o":202})"
                    "\n");
  EXPECT_EQ(StateAt({file}, Cut::UntilTs(1000)), at_cut);
  const std::string full = ReplayInto("s", {file}, Cut::All());
  EXPECT_EQ(full, reference::ReferenceState::FromLines(lines).Dump());
  EXPECT_EQ(full, R"({"jump":true,"k":1201,"o":202})"
                  "\n");
}

TEST_F(TimeTravelTest, ReplayUntilBeforeTheStatesWatermarkIsRefused) {
  const std::string file =
      Write("r.ndjson", {Env("a", 1, 100, R"({"x":1})"), Env("a", 2, 200, R"({"x":2})")});
  ReplayInto("s", {file}, Cut::All());
  auto store = crdt::StateStore::Open(PathOf("s"), crdt::StoreOptions());
  ASSERT_TRUE(store.ok());
  ReplayOptions options;
  options.files = {file};
  options.dead_letter_path = PathOf("dead.ndjson");
  options.until = Cut::UntilTs(150);
  auto report = Replay(**store, options);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(TimeTravelTest, BadLinesPastTheCutAreDeadLetteredOnceByTheRunThatPassesThem) {
  const std::string file =
      Write("r.ndjson", {Env("a", 1, 100, R"({"x":1})"), Env("a", 2, 900, R"({"x":2})"), "not json",
                         Env("b", 1, 200, R"({"y":1})")});
  EXPECT_EQ(ReplayInto("s", {file}, Cut::UntilTs(500)), R"({"x":1,"y":1})"
                                                        "\n");
  auto count_dead = [&]() {
    std::ifstream in(PathOf("s.dead.ndjson"));
    std::size_t n = 0;
    for (std::string l; std::getline(in, l);) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(count_dead(), 0u);
  auto store = crdt::StateStore::Open(PathOf("s"), crdt::StoreOptions());
  ASSERT_TRUE(store.ok());
  ReplayOptions options;
  options.files = {file};
  options.dead_letter_path = PathOf("s.dead.ndjson");
  auto report = Replay(**store, options);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->bad, 1u);
  EXPECT_EQ(report->duplicates, 1u);  // b's line, merged by the first run past the left-out line
  EXPECT_EQ((*store)->Dump(), R"({"x":2,"y":1})"
                              "\n");
  EXPECT_EQ(count_dead(), 1u);
}

// Folds change events onto a document as the change feed specifies (docs/merge-rules.md, "Change
// events"): each event's old value must be what is there; new replaces it (creating missing
// parents), absent new removes it (parents stay).
::testing::AssertionResult FoldChanges(nlohmann::json& doc,
                                       const std::vector<crdt::Change>& changes) {
  for (const crdt::Change& c : changes) {
    auto parsed = core::Path::Parse(c.path);
    if (!parsed.ok() || parsed->empty()) {
      return ::testing::AssertionFailure() << "bad path '" << c.path << "'";
    }
    const std::vector<std::string>& keys = parsed->segments();
    nlohmann::json* node = &doc;
    for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
      if (!node->contains(keys[i])) {
        (*node)[keys[i]] = nlohmann::json::object();
      }
      node = &(*node)[keys[i]];
    }
    const bool there = node->contains(keys.back());
    const std::string old_there =
        there ? reference::CanonicalJson((*node)[keys.back()]) : std::string("(absent)");
    if (old_there != c.old_json.value_or("(absent)")) {
      return ::testing::AssertionFailure() << c.path << ": old " << c.old_json.value_or("(absent)")
                                           << " but " << old_there << " is there";
    }
    if (c.new_json) {
      (*node)[keys.back()] = nlohmann::json::parse(*c.new_json);
    } else {
      node->erase(keys.back());
    }
  }
  return ::testing::AssertionSuccess();
}

// The value at `path` of a document, null when absent.
nlohmann::json At(const nlohmann::json& doc, const core::Path& path) {
  const nlohmann::json* node = &doc;
  for (const std::string& key : path.segments()) {
    if (!node->is_object() || !node->contains(key)) {
      return nullptr;
    }
    node = &node->at(key);
  }
  return *node;
}

TEST_F(TimeTravelTest, StepChangesFoldedOntoTheStateAtFromGiveTheStateAtUntil) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed * 31);
    const std::vector<std::string> lines = InterleaveBlades(Synthetic(1200, 5, seed), rng);
    const std::string file = Write("rec.ndjson", lines);
    for (int round = 0; round < 5; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      const std::int64_t t1 =
          1732350000000 + std::uniform_int_distribution<std::int64_t>(-5, 1210)(rng);
      const std::int64_t t2 = t1 + std::uniform_int_distribution<std::int64_t>(0, 600)(rng);
      // `from` before `until`: both by ts, or both by line count.
      const bool by_lines = rng() % 2 == 0;
      const auto n1 = static_cast<std::uint64_t>(t1 - 1732349999000);
      const auto n2 = static_cast<std::uint64_t>(t2 - 1732349999000);
      const Cut from = round == 0 ? Cut::FirstLines(0)
                       : by_lines ? Cut::FirstLines(n1)
                                  : Cut::UntilTs(t1);
      const Cut until = round == 1 ? Cut::All() : by_lines ? Cut::FirstLines(n2) : Cut::UntilTs(t2);
      auto states = StatesAt({file}, {from, until}, TimeTravelOptions());
      ASSERT_TRUE(states.ok());
      for (const char* prefix : {"", "intents", "nodes", "scrape", "intents.i3"}) {
        SCOPED_TRACE(std::string("prefix '") + prefix + "'");
        StepOptions options;
        options.from = from;
        options.until = until;
        options.prefix = *core::Path::Parse(prefix);
        std::vector<crdt::Change> changes;
        std::uint64_t last = 0;
        auto summary = Step({file}, options, [&](const StepEvent& e) {
          EXPECT_GT(e.ordinal, last - (e.watermark ? 1 : 0));
          last = e.ordinal;
          if (!e.watermark) {
            EXPECT_EQ(reference::ParseEnvelope(lines[e.line - 1]).blade, e.blade);
          }
          changes.insert(changes.end(), e.changes.begin(), e.changes.end());
        });
        ASSERT_TRUE(summary.ok()) << summary.status().ToString();
        EXPECT_EQ(summary->changes, changes.size());
        nlohmann::json doc = nlohmann::json::parse((*states)[0].dump);
        ASSERT_TRUE(FoldChanges(doc, changes));
        const nlohmann::json want = nlohmann::json::parse((*states)[1].dump);
        if (std::string(prefix).empty()) {
          EXPECT_EQ(reference::CanonicalJson(doc) + "\n", (*states)[1].dump);
        } else {
          EXPECT_EQ(At(doc, options.prefix), At(want, options.prefix));
        }
      }
    }
  }
}

TEST_F(TimeTravelTest, StepShowsWritesThatChangeNothingAndNarrowsChangesAbove) {
  const std::string file =
      Write("r.ndjson", {Env("a", 1, 100, R"({"i":{"42":{"h":"x"},"7":{"h":"y"}}})"),
                         Env("a", 2, 300, R"({"i":{"42":null}})"),
                         Env("b", 1, 200, R"({"i":{"42":{"late":true}}})"),  // older than the erase
                         Env("b", 2, 400, R"({"i":{"7":{"z":1}}})"),         // beside the prefix
                         Env("c", 1, 500, R"({"i":null})")});
  StepOptions options;
  options.prefix = *core::Path::Parse("i.42");
  std::vector<StepEvent> events;
  auto summary = Step({file}, options, [&](const StepEvent& e) { events.push_back(e); });
  ASSERT_TRUE(summary.ok());
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].ordinal, 1u);
  ASSERT_EQ(events[0].changes.size(), 1u);
  // The engine reports the new subtree once at its root `i`; narrowed to the prefix:
  EXPECT_EQ(events[0].changes[0].path, "i.42");
  EXPECT_EQ(events[0].changes[0].new_json, R"({"h":"x"})");
  EXPECT_EQ(events[1].ordinal, 2u);
  ASSERT_EQ(events[1].changes.size(), 1u);
  EXPECT_EQ(events[1].changes[0].path, "i.42");
  EXPECT_EQ(events[1].changes[0].cause, crdt::ChangeCause::kErase);
  EXPECT_EQ(events[2].ordinal, 3u);
  EXPECT_EQ(events[2].blade, "b");
  EXPECT_EQ(events[2].line, 3u);
  EXPECT_TRUE(events[2].changes.empty());  // merged, but older than the erase
  EXPECT_EQ(events[3].ordinal, 5u);        // an erase above the prefix, with nothing below
  EXPECT_TRUE(events[3].changes.empty());
  EXPECT_EQ(summary->lines, 5u);

  // Narrowed: the erase of `i` seen from `i.7.h`; the first event, seen from there.
  options.prefix = *core::Path::Parse("i.7.h");
  events.clear();
  ASSERT_TRUE(Step({file}, options, [&](const StepEvent& e) { events.push_back(e); }).ok());
  ASSERT_EQ(events.size(), 2u);
  ASSERT_EQ(events[0].changes.size(), 1u);
  EXPECT_EQ(events[0].changes[0].path, "i.7.h");
  EXPECT_EQ(events[0].changes[0].old_json, std::nullopt);
  EXPECT_EQ(events[0].changes[0].new_json, "\"y\"");
  ASSERT_EQ(events[1].changes.size(), 1u);
  EXPECT_EQ(events[1].ordinal, 5u);
  EXPECT_EQ(events[1].changes[0].path, "i.7.h");
  EXPECT_EQ(events[1].changes[0].old_json, "\"y\"");
  EXPECT_EQ(events[1].changes[0].new_json, std::nullopt);
}

TEST_F(TimeTravelTest, BlameNamesTheNewestSetOfEachLeafAndCounterShareSumToTheValue) {
  std::mt19937_64 rng(77);
  const std::vector<std::string> lines = InterleaveBlades(Synthetic(1500, 5, 77), rng);
  const std::string file = Write("rec.ndjson", lines);
  // Independently, from the lines: per leaf path, the newest (ts, blade, seq) that set it, and
  // per counter path the lines that incremented it.
  using Stamp = std::tuple<std::int64_t, std::string, std::uint64_t>;
  std::map<std::vector<std::string>, std::pair<Stamp, std::size_t>> newest_set;
  std::map<std::vector<std::string>, std::set<std::size_t>> inc_lines;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const reference::Envelope env = reference::ParseEnvelope(lines[i]);
    const Stamp stamp{env.ts, env.blade, env.seq};
    std::function<void(const nlohmann::json&, std::vector<std::string>&)> walk =
        [&](const nlohmann::json& body, std::vector<std::string>& path) {
          for (const auto& [key, value] : body.items()) {
            path.push_back(key);
            if (value.is_object() && value.size() == 1 && value.contains("$inc")) {
              inc_lines[path].insert(i + 1);
            } else if (value.is_object()) {
              walk(value, path);
            } else if (!value.is_null()) {
              auto& slot = newest_set[path];
              if (slot.second == 0 || slot.first < stamp) {
                slot = {stamp, i + 1};
              }
            }
            path.pop_back();
          }
        };
    std::vector<std::string> path;
    walk(env.body, path);
  }
  const reference::ReferenceState ref = reference::ReferenceState::FromLines(lines);
  EXPECT_EQ(ReplayInto("s", {file}, Cut::All()), ref.Dump());
  auto reader = crdt::StateReader::Open(PathOf("s"));
  ASSERT_TRUE(reader.ok());
  std::size_t values = 0;
  std::size_t counters = 0;
  for (const auto& [path, json] : ref.Leaves()) {
    SCOPED_TRACE(core::Path(path).ToString());
    auto blame = BlameAt({file}, Cut::All(), core::Path(path), TimeTravelOptions());
    ASSERT_TRUE(blame.ok());
    ASSERT_TRUE(blame->has_value());
    const crdt::Provenance& p = **blame;
    EXPECT_EQ(p.value_json, json);
    EXPECT_EQ(p.writer.source, file);
    const reference::Envelope env = reference::ParseEnvelope(lines.at(p.writer.line - 1));
    EXPECT_EQ(env.blade, p.writer.blade);
    EXPECT_EQ(env.seq, p.writer.seq);
    EXPECT_EQ(env.ts, p.writer.ts);
    if (p.kind == "value") {
      ++values;
      ASSERT_TRUE(newest_set.count(path));
      EXPECT_EQ(p.writer.line, newest_set[path].second);
    } else if (p.kind == "counter") {
      ++counters;
      EXPECT_TRUE(inc_lines[path].count(p.writer.line)) << "line " << p.writer.line;
      std::int64_t sum = 0;
      for (const crdt::Provenance::Share& share : p.shares) {
        sum += std::stoll(share.value_json);
      }
      EXPECT_EQ(std::to_string(sum), json);
    }
    // The state directory answers the same, with the file's absolute path as its source.
    auto stored = (*reader)->Blame(core::Path(path));
    ASSERT_TRUE(stored.ok());
    ASSERT_TRUE(stored->has_value());
    EXPECT_EQ((*stored)->writer.line, p.writer.line);
    EXPECT_EQ((*stored)->writer.blade, p.writer.blade);
    EXPECT_EQ((*stored)->shares.size(), p.shares.size());
  }
  EXPECT_GT(values, 50u);
  EXPECT_GT(counters, 5u);
  auto none = BlameAt({file}, Cut::All(), *core::Path::Parse("no.such.path"), TimeTravelOptions());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(ResolveTimestampTest, MillisecondsRfc3339AndRelativeToTheFirstShard) {
  EXPECT_EQ(*ResolveTimestamp("1732350000123", {}), 1732350000123);
  EXPECT_EQ(*ResolveTimestamp("2024-11-23T08:20:00.123Z", {}), 1732350000123);
  EXPECT_FALSE(ResolveTimestamp("+5m", {"-"}).ok());
  EXPECT_FALSE(ResolveTimestamp("yesterday", {}).ok());
}

}  // namespace
}  // namespace lattice::ingest
