// The join of state directories (crdt/state_join.h) against the independent reference: random
// shard sets split by blade into two stores (as two aggregators owning disjoint partitions would
// hold them) join into the reference state of all shards; a state joined with itself, or with an
// older copy of itself, is itself. Prints the seed of a failing case (LATTICE_JOIN_SEED repeats
// one).
#include "lattice/crdt/state_join.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lattice/core/shard.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "reference.h"

namespace lattice::crdt {
namespace {

using nlohmann::json;
using Rng = std::mt19937_64;

int Pick(Rng& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
bool Chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }
template <typename T>
const T& OneOf(Rng& rng, const std::vector<T>& v) {
  return v[static_cast<std::size_t>(Pick(rng, 0, static_cast<int>(v.size()) - 1))];
}

// Few keys, so that blades write the same paths and the join has to decide between states.
const std::vector<std::string> kKeys = {"a", "a", "a", "b", "b", "c"};
const std::vector<std::string> kBlades = {"a", "b", "ab", "B", "z", "blade-10", "blade-9", "é"};

json GenValue(Rng& rng, int depth) {
  const int r = Pick(rng, 0, 99);
  if (r < 10) {
    return nullptr;
  }
  if (r < 40 && depth < 3) {
    json obj = json::object();
    for (int i = Pick(rng, 0, 3); i > 0; --i) {
      obj[OneOf(rng, kKeys)] = GenValue(rng, depth + 1);
    }
    return obj;
  }
  if (r < 50) {
    return OneOf(rng, std::vector<std::string>{"x", "y", "q\"uote"});
  }
  if (r < 60) {
    return Pick(rng, -3, 9);
  }
  if (r < 62) {
    return json::array({1, "two"});
  }
  if (r < 85) {
    return json{
        {"$inc", Chance(rng, 0.8) ? json(Pick(rng, -3, 7)) : json(0.25 * Pick(rng, -4, 8))}};
  }
  const char* op = r < 93 ? "$max" : "$min";
  return json{{op, Chance(rng, 0.7) ? json(Pick(rng, -5, 5)) : json(0.5 * Pick(rng, -5, 5))}};
}

struct Shard {
  std::string blade;
  std::uint64_t seq;
  std::int64_t ts;
  std::string line;
};

// The shards of 2-6 blades; each blade's in seq order with non-decreasing ts, ts close together
// so that stamps interleave across blades.
std::vector<Shard> GenShards(Rng& rng) {
  std::vector<std::string> names = kBlades;
  std::shuffle(names.begin(), names.end(), rng);
  names.resize(static_cast<std::size_t>(Pick(rng, 2, 6)));
  std::vector<Shard> out;
  for (const std::string& name : names) {
    std::int64_t ts = 1'732'350'000'000 + Pick(rng, 0, 3);
    const int n = Pick(rng, 1, 12);
    for (int seq = 1; seq <= n; ++seq) {
      ts += Pick(rng, 0, 2);
      json body = json::object();
      for (int i = Pick(rng, 1, 3); i > 0; --i) {
        body[OneOf(rng, kKeys)] = GenValue(rng, 1);
      }
      json env = {{"blade", name}, {"seq", seq}, {"ts", ts}, {"shard", body}};
      out.push_back({name, static_cast<std::uint64_t>(seq), ts, env.dump()});
    }
  }
  return out;
}

class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    path_ = (std::filesystem::temp_directory_path() /
             ("lattice-join-" + std::to_string(::getpid()) + "-" + name))
                .string();
    std::filesystem::remove_all(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Merges `lines` into a new state in `dir`, in the given order, committing every few shards.
void Build(const std::string& dir, const std::vector<const Shard*>& shards, Rng& rng) {
  auto store = StateStore::Open(dir, StoreOptions{});
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  core::ShardDecoder decoder;
  for (const Shard* s : shards) {
    auto shard = decoder.DecodeEnvelope(s->line);
    ASSERT_TRUE(shard.ok()) << shard.status().ToString() << " in " << s->line;
    (void)(*store)->Apply(**shard);
    if (Chance(rng, 0.3)) {
      ASSERT_TRUE((*store)->Commit().ok());
    }
  }
  ASSERT_TRUE((*store)->Commit().ok());
  ASSERT_TRUE((*store)->Flush().ok());
}

std::string JoinDump(const std::vector<std::string>& dirs) {
  std::string out;
  Status st = DumpJoinedStates(dirs, [&](std::string_view c) { out.append(c); });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

std::string ReaderDump(const std::string& dir) {
  auto reader = StateReader::Open(dir);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  std::string out;
  EXPECT_TRUE((*reader)->Dump([&](std::string_view c) { out.append(c); }).ok());
  return out;
}

// Each blade's shards in seq order, blades interleaved at random (one partition per blade).
std::vector<const Shard*> Interleave(const std::vector<const Shard*>& shards, Rng& rng) {
  std::vector<const Shard*> rest = shards;
  std::vector<const Shard*> out;
  while (!rest.empty()) {
    // Take the head (lowest seq) of a random blade.
    const std::string& blade =
        rest[static_cast<std::size_t>(Pick(rng, 0, static_cast<int>(rest.size()) - 1))]->blade;
    auto head =
        std::find_if(rest.begin(), rest.end(), [&](const Shard* s) { return s->blade == blade; });
    out.push_back(*head);
    rest.erase(head);
  }
  return out;
}

std::uint64_t Seed() {
  if (const char* s = std::getenv("LATTICE_JOIN_SEED")) {
    return std::strtoull(s, nullptr, 10);
  }
  return std::random_device{}();
}

TEST(StateJoinTest, StatesSplitByBladeJoinIntoTheReferenceOfAllShards) {
  const std::uint64_t base = Seed();
  const int cases = std::getenv("LATTICE_JOIN_SEED") != nullptr ? 1 : 24;
  for (int c = 0; c < cases; ++c) {
    const std::uint64_t seed = base + static_cast<std::uint64_t>(c);
    Rng rng(seed);
    const std::vector<Shard> shards = GenShards(rng);
    std::vector<std::string> lines;
    std::vector<std::string> blades;
    for (const Shard& s : shards) {
      lines.push_back(s.line);
      if (std::find(blades.begin(), blades.end(), s.blade) == blades.end()) {
        blades.push_back(s.blade);
      }
    }
    // Blades go to A or B (both non-empty).
    std::vector<const Shard*> a, b;
    std::vector<bool> to_a(blades.size());
    for (std::size_t i = 0; i < blades.size(); ++i) {
      to_a[i] = i == 0 ? true : i == 1 ? false : Chance(rng, 0.5);
    }
    for (const Shard& s : shards) {
      const auto i = static_cast<std::size_t>(std::find(blades.begin(), blades.end(), s.blade) -
                                              blades.begin());
      (to_a[i] ? a : b).push_back(&s);
    }
    TempDir da("a"), db("b");
    Build(da.path(), Interleave(a, rng), rng);
    Build(db.path(), Interleave(b, rng), rng);
    const std::string want = reference::ReferenceDump(lines);
    EXPECT_EQ(JoinDump({da.path(), db.path()}), want) << "seed " << seed << " (LATTICE_JOIN_SEED)";
    EXPECT_EQ(JoinDump({db.path(), da.path()}), want) << "seed " << seed << ", order B A";
    if (HasFailure()) {
      for (const std::string& l : lines) {
        std::cerr << l << "\n";
      }
      return;
    }
  }
}

TEST(StateJoinTest, JoiningAStateWithItselfOrAnOlderCopyGivesTheState) {
  const std::uint64_t base = Seed();
  const int cases = std::getenv("LATTICE_JOIN_SEED") != nullptr ? 1 : 12;
  for (int c = 0; c < cases; ++c) {
    const std::uint64_t seed = base + static_cast<std::uint64_t>(c);
    Rng rng(seed);
    const std::vector<Shard> shards = GenShards(rng);
    std::vector<const Shard*> all;
    std::vector<std::string> lines;
    for (const Shard& s : shards) {
      all.push_back(&s);
      lines.push_back(s.line);
    }
    const std::vector<const Shard*> order = Interleave(all, rng);
    // An older copy: a prefix of the same arrival order (as a partition handed over mid-way).
    const std::vector<const Shard*> prefix(
        order.begin(), order.begin() + Pick(rng, 0, static_cast<int>(order.size())));
    TempDir full("full"), old("old");
    Build(full.path(), order, rng);
    Build(old.path(), prefix, rng);
    const std::string want = reference::ReferenceDump(lines);
    ASSERT_EQ(ReaderDump(full.path()), want) << "seed " << seed;
    EXPECT_EQ(JoinDump({full.path()}), want) << "seed " << seed;
    EXPECT_EQ(JoinDump({full.path(), full.path()}), want) << "seed " << seed;
    EXPECT_EQ(JoinDump({old.path(), full.path()}), want) << "seed " << seed << ", older first";
    EXPECT_EQ(JoinDump({full.path(), old.path()}), want) << "seed " << seed << ", older last";
    if (HasFailure()) {
      return;
    }
  }
}

TEST(StateJoinTest, MissingDirectoryIsAnError) {
  std::string out;
  Status st =
      DumpJoinedStates({"/nonexistent/lattice-state"}, [&](std::string_view c) { out.append(c); });
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
}

}  // namespace
}  // namespace lattice::crdt
