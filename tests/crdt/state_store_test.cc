// Tests of the durable state: StateStore (merge + RocksDB commit with source positions) and
// StateReader (read-only view of a state directory), through their public API only.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../envelope.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/merge_engine.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/types.h"
#include "reference.h"

namespace lattice::crdt {
namespace {

// A mix of everything a state holds: nested objects, scalars of every type, arrays, counters
// with several slots, max/min registers, erased paths and odd keys.
const std::vector<std::string> kShards = {
    Env("a", 1, 10, R"({"nodes":{"n1":{"status":"working","heartbeat":{"$max":10}}},"x":1})"),
    Env("b", 1, 11, R"({"nodes":{"n2":{"status":"waiting","heartbeat":{"$max":11}}}})"),
    Env("a", 2, 12, R"({"scrape":{"example.com":{"items":{"$inc":3}}},"x":null})"),
    Env("b", 2, 13, R"({"scrape":{"example.com":{"items":{"$inc":4},"rate":{"$inc":0.5}}}})"),
    Env("c", 1, 14, R"({"":{"$$lit":true,"k.d":[1,{"b":2,"a":null}],"e":{}},"lo":{"$min":-2}})"),
    Env("c", 2, 15, R"({"é":"ü\n\"q\"","f":1.5,"g":-0.0,"h":false})"),
    Env("a", 3, 16, R"({"nodes":{"n1":{"status":"paused"}},"lo":{"$min":1}})"),
};

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/lattice_state_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<StateStore> Open() {
    auto store = StateStore::Open(dir_, StoreOptions{});
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  Outcome Apply(StateStore& store, const std::string& line) {
    auto shard = decoder_.DecodeEnvelope(line);
    EXPECT_TRUE(shard.ok()) << shard.status().ToString();
    return shard.ok() ? store.Apply(**shard).outcome : Outcome::kInvalid;
  }

  // Applies all of kShards and commits them with two positions.
  void Fill(StateStore& store) {
    for (const std::string& line : kShards) {
      ASSERT_EQ(Apply(store, line), Outcome::kApplied) << line;
    }
    store.StagePosition(SourcePosition{"/data/rec.ndjson", 1234, 7});
    store.StagePosition(SourcePosition{"lattice.shards/3", 99, 0});
    ASSERT_TRUE(store.Commit().ok());
    ASSERT_TRUE(store.Flush().ok());
  }

  std::string dir_;
  core::ShardDecoder decoder_;
};

TEST_F(StateStoreTest, EmptyStoreDumpsAnEmptyObject) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Dump(), "{}\n");
  EXPECT_EQ(store->Position("anything"), std::nullopt);
}

TEST_F(StateStoreTest, MatchesTheReference) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  Fill(*store);
  EXPECT_EQ(store->Dump(), reference::ReferenceDump(kShards));
}

// The merge loop's hints (Prefetch, PrefetchChild) read the state ahead of Apply and change
// nothing: shards merged with a hint for every shard before them (and for their own, existing
// and new keys under a wide child index, long keys, paths of one entry) dump like the reference.
TEST_F(StateStoreTest, PrefetchHintsChangeNothing) {
  std::vector<std::string> lines;
  for (int i = 0; i < 60; ++i) {
    const std::string id = (i % 3 == 0 ? "a-long-intent-id-" : "i") + std::to_string(i % 25);
    std::string body = R"({"intents":{")";
    body.append(id).append(i % 4 == 3 ? R"(":null}})" : R"(":{"host":"h","n":{"$inc":1}}}})");
    lines.push_back(
        Env(i % 2 == 0 ? "a" : "b", static_cast<std::uint64_t>(i / 2 + 1), 100 + i, body));
  }
  lines.push_back(Env("c", 1, 500, R"({"x":1})"));
  lines.push_back(Env("c", 2, 501, R"({"intents":{"i3":{"host":"z"}},"x":2})"));
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // A decoder per shard: a decoded shard's keys point into its decoder.
  std::vector<std::unique_ptr<core::ShardDecoder>> decoders;
  std::vector<const core::Shard*> shards;
  for (const std::string& line : lines) {
    decoders.push_back(std::make_unique<core::ShardDecoder>());
    auto shard = decoders.back()->DecodeEnvelope(line);
    ASSERT_TRUE(shard.ok()) << shard.status().ToString();
    shards.push_back(*shard);
  }
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string before = store->Dump();
    for (std::size_t j = 0; j < shards.size(); ++j) {
      store->Prefetch(*shards[j]);
      store->PrefetchChild(*shards[j]);
    }
    ASSERT_EQ(store->Dump(), before) << i;
    ASSERT_EQ(store->Apply(*shards[i]).outcome, Outcome::kApplied) << lines[i];
  }
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->Dump(), reference::ReferenceDump(lines));
}

TEST_F(StateStoreTest, ReopenKeepsStateAndPositions) {
  std::string dump;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    Fill(*store);
    dump = store->Dump();
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Dump(), dump);
  const auto file = store->Position("/data/rec.ndjson");
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(file->source, "/data/rec.ndjson");
  EXPECT_EQ(file->offset, 1234u);
  EXPECT_EQ(file->line, 7u);
  const auto topic = store->Position("lattice.shards/3");
  ASSERT_TRUE(topic.has_value());
  EXPECT_EQ(topic->offset, 99u);
  EXPECT_EQ(store->Position("lattice.shards/4"), std::nullopt);

  // What was applied before is still known: redeliveries are duplicates, counters go on from
  // their restored slots.
  EXPECT_EQ(Apply(*store, kShards[2]), Outcome::kDuplicate);
  EXPECT_EQ(Apply(*store, Env("a", 4, 20, R"({"scrape":{"example.com":{"items":{"$inc":1}}}})")),
            Outcome::kApplied);
  EXPECT_EQ(store->Get(core::Path({"scrape", "example.com", "items"})), "8");
  std::vector<std::string> all = kShards;
  all.push_back(Env("a", 4, 20, R"({"scrape":{"example.com":{"items":{"$inc":1}}}})"));
  EXPECT_EQ(store->Dump(), reference::ReferenceDump(all));
}

// The write-ahead log stays near StoreOptions::max_wal_bytes however many commits there are:
// past it RocksDB flushes the families that still have records in the oldest log file, which
// can then go. Without the bound the `meta` family (positions and clock, in every commit, never
// a full write buffer) keeps every log file alive: all ~13 MB written here would still be live,
// and the next open would replay them. The state reopens intact.
TEST_F(StateStoreTest, WriteAheadLogStaysNearItsBound) {
  StoreOptions options;
  options.max_wal_bytes = 1 << 20;
  constexpr int kCommits = 400;
  constexpr int kShardsPerCommit = 16;  // 16 values of 2,000 bytes: ~34 KB of log per commit
  std::string dump;
  std::uint64_t seq = 0;
  {
    auto store = StateStore::Open(dir_, options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int c = 0; c < kCommits; ++c) {
      for (int i = 0; i < kShardsPerCommit; ++i) {
        ++seq;
        const std::string value(2000, static_cast<char>('a' + (c + i) % 26));
        const std::string body =
            R"({"big":{"k)" + std::to_string(i) + R"(":")" + value + R"("},"n":{"$inc":1}})";
        const std::string line = Env("w", seq, static_cast<std::int64_t>(seq), body);
        ASSERT_EQ(Apply(**store, line), Outcome::kApplied);
      }
      (*store)->StagePosition(SourcePosition{"lattice.shards/0", seq, 0});
      ASSERT_TRUE((*store)->Commit().ok());
      // RocksDB enforces the bound when a write finds the log over it, and releases the old
      // file when the flushes it scheduled are done: wait for them, so that how far the log
      // gets past the bound does not depend on how fast this host flushes.
      ASSERT_TRUE((*store)->Flush().ok());
      ASSERT_TRUE((*store)->WaitForBackgroundWork().ok());
    }
    // The bound, plus the commit that found the log over it.
    EXPECT_LE((*store)->Stats().wal_bytes, options.max_wal_bytes + (256u << 10));
    dump = (*store)->Dump();
  }
  auto store = StateStore::Open(dir_, options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Dump(), dump);
  EXPECT_EQ((*store)->Get(core::Path({"n"})), std::to_string(seq));
  const auto position = (*store)->Position("lattice.shards/0");
  ASSERT_TRUE(position.has_value());
  EXPECT_EQ(position->offset, seq);
}

// Keys with 00 bytes are escaped in the record keys (00 FF) at any depth, next to keys without
// them and to a sibling that is their prefix; commits before and after a reopen write them.
TEST_F(StateStoreTest, KeysWithNulBytesRoundTripThroughReopen) {
  const std::vector<std::string> first = {
      Env("a", 1, 10, R"({"p":{"a":1,"a\u0000b":{"c":1,"d":{"$inc":2}}},"\u0000":"z"})"),
      Env("a", 2, 11, R"({"q":{"r":{"s\u0000":{"t":"u","\u0000\u0000":{"v":[1]}}}}})"),
      Env("b", 1, 12, R"({"p":{"a\u0000b":{"d":{"$inc":3}}},"q":{"r":{"s":true}}})"),
  };
  const std::vector<std::string> second = {
      Env("b", 2, 13, R"({"p":{"a\u0000b":{"c":2,"d":{"$inc":1}}},"\u0000":null})"),
      Env("a", 3, 14, R"({"q":{"r":{"s\u0000":{"\u0000\u0000":null,"w":"x"}}}})"),
  };
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (const std::string& line : first) {
      ASSERT_EQ(Apply(*store, line), Outcome::kApplied) << line;
    }
    ASSERT_TRUE(store->Commit().ok());
    ASSERT_TRUE(store->Flush().ok());
  }
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->Dump(), reference::ReferenceDump(first));
    for (const std::string& line : second) {
      ASSERT_EQ(Apply(*store, line), Outcome::kApplied) << line;
    }
    ASSERT_TRUE(store->Commit().ok());
    ASSERT_TRUE(store->Flush().ok());
  }
  std::vector<std::string> all = first;
  all.insert(all.end(), second.begin(), second.end());
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Dump(), reference::ReferenceDump(all));
  EXPECT_EQ(store->Get(core::Path({"p", std::string("a\0b", 3), "d"})), "6");
}

TEST_F(StateStoreTest, WhatWasNotCommittedIsGoneAfterReopen) {
  std::string committed;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    Fill(*store);
    committed = store->Dump();
    ASSERT_EQ(Apply(*store, Env("d", 1, 30, R"({"x":"uncommitted","lo":null})")),
              Outcome::kApplied);
    store->StagePosition(SourcePosition{"/data/rec.ndjson", 5000, 9});  // staged, not committed
    EXPECT_NE(store->Dump(), committed);
  }  // a crash: no Commit()
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Dump(), committed);
  ASSERT_TRUE(store->Position("/data/rec.ndjson").has_value());
  EXPECT_EQ(store->Position("/data/rec.ndjson")->offset, 1234u);
  // The lost shard is new again.
  EXPECT_EQ(Apply(*store, Env("d", 1, 30, R"({"x":"uncommitted","lo":null})")), Outcome::kApplied);
}

// The pipelined commit hands each batch to the writer thread; commits_durable() and
// DurablePosition() say what is on disk, and what they report is what a reader opening the
// directory finds.
TEST_F(StateStoreTest, DurabilityIsReportedInCommitOrder) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->commits_made(), 0u);
  EXPECT_EQ(store->commits_durable(), 0u);
  EXPECT_EQ(store->DurablePosition("/data/rec.ndjson"), std::nullopt);
  for (std::size_t i = 0; i < kShards.size(); ++i) {
    ASSERT_EQ(Apply(*store, kShards[i]), Outcome::kApplied);
    store->StagePosition(SourcePosition{"/data/rec.ndjson", 100 * (i + 1), i + 1});
    ASSERT_TRUE(store->Commit().ok());
    ASSERT_EQ(store->commits_made(), i + 1);
    // Staged positions are visible at once; durable ones at most one batch written and one
    // waiting behind.
    EXPECT_EQ(store->Position("/data/rec.ndjson")->offset, 100 * (i + 1));
    EXPECT_LE(store->commits_durable(), i + 1);
    EXPECT_GE(store->commits_durable() + 2, i + 1);
    if (auto durable = store->DurablePosition("/data/rec.ndjson")) {
      EXPECT_LE(durable->offset, 100 * (i + 1));
    }
    if (i == 3) {
      ASSERT_TRUE(store->WaitDurable(store->commits_made()).ok());
      EXPECT_EQ(store->commits_durable(), 4u);
      EXPECT_EQ(store->DurablePosition("/data/rec.ndjson")->offset, 400u);
      auto reader = StateReader::Open(dir_);
      ASSERT_TRUE(reader.ok()) << reader.status().ToString();
      const std::vector<SourcePosition> on_disk = (*reader)->Positions();
      ASSERT_EQ(on_disk.size(), 1u);
      EXPECT_EQ(on_disk[0].offset, 400u);
      std::string dump;
      ASSERT_TRUE((*reader)->Dump([&](std::string_view chunk) { dump.append(chunk); }).ok());
      EXPECT_EQ(dump, reference::ReferenceDump(
                          std::vector<std::string>(kShards.begin(), kShards.begin() + 4)));
    }
  }
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(store->commits_durable(), kShards.size());
  EXPECT_EQ(store->DurablePosition("/data/rec.ndjson")->offset, 100 * kShards.size());
  store.reset();
  store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->commits_made(), 0u);  // counted per open
  ASSERT_TRUE(store->DurablePosition("/data/rec.ndjson").has_value());
  EXPECT_EQ(store->DurablePosition("/data/rec.ndjson")->offset, 100 * kShards.size());
  EXPECT_EQ(store->Dump(), reference::ReferenceDump(kShards));
}

TEST_F(StateStoreTest, SecondOpenOfAnOpenDirectoryIsUnavailable) {
  auto first = Open();
  ASSERT_NE(first, nullptr);
  auto second = StateStore::Open(dir_, StoreOptions{});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
  first.reset();
  auto third = StateStore::Open(dir_, StoreOptions{});
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

TEST_F(StateStoreTest, ReaderOfAMissingDirectoryIsNotFound) {
  auto reader = StateReader::Open(dir_ + "/does-not-exist");
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), StatusCode::kNotFound) << reader.status().ToString();
}

// Everything a reader can say about `dir`, checked against an in-memory state (`dump` and `get`).
void ExpectReaderAgrees(const std::string& dir, const std::string& expected_dump,
                        const std::function<std::optional<std::string>(const core::Path&)>& get) {
  auto opened = StateReader::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  const StateReader& reader = **opened;

  std::string dump;
  ASSERT_TRUE(reader.Dump([&](std::string_view chunk) { dump.append(chunk); }).ok());
  EXPECT_EQ(dump, expected_dump);

  const std::vector<std::vector<std::string>> paths = {
      {},
      {"nodes"},
      {"nodes", "n1"},
      {"nodes", "n1", "status"},
      {"nodes", "n2", "heartbeat"},
      {"scrape", "example.com", "items"},
      {"scrape", "example.com", "rate"},
      {""},
      {"", "$lit"},
      {"", "k.d"},
      {"", "e"},
      {"é"},
      {"f"},
      {"g"},
      {"h"},
      {"lo"},
      // Missing: never written, erased, below a scalar, below a counter, a near miss.
      {"missing"},
      {"x"},
      {"f", "below"},
      {"scrape", "example.com", "items", "below"},
      {"nodes", "n"},
      {"", "$$lit"},
  };
  for (const auto& segments : paths) {
    const core::Path path(segments);
    auto got = reader.Get(path);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, get(path)) << "Get(" << path.ToString() << ")";
  }
  EXPECT_EQ(get(core::Path()).value_or("") + "\n", expected_dump);
  EXPECT_EQ(get(core::Path({"missing"})), std::nullopt);
  auto missing = reader.Get(core::Path({"x"}));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(*missing, std::nullopt);

  std::string scanned;
  ASSERT_TRUE(reader
                  .Scan(core::Path(),
                        [&](const core::Path& path, std::string_view json) {
                          scanned += path.ToString() + "=" + std::string(json) + "\n";
                        })
                  .ok());
  EXPECT_EQ(scanned,
            ".$lit=true\n"  // the key "" and below it "$lit"
            ".k\\.d=[1,{\"a\":null,\"b\":2}]\n"
            "f=1.5\n"
            "g=0\n"  // -0.0 dumps as 0
            "h=false\n"
            "lo=-2\n"
            "nodes.n1.heartbeat=10\n"
            "nodes.n1.status=\"paused\"\n"
            "nodes.n2.heartbeat=11\n"
            "nodes.n2.status=\"waiting\"\n"
            "scrape.example\\.com.items=7\n"
            "scrape.example\\.com.rate=0.5\n"
            "é=\"ü\\n\\\"q\\\"\"\n");

  std::string nodes;
  ASSERT_TRUE(reader
                  .Scan(core::Path({"nodes", "n2"}),
                        [&](const core::Path& path, std::string_view json) {
                          nodes += path.ToString() + "=" + std::string(json) + "\n";
                        })
                  .ok());
  EXPECT_EQ(nodes, "nodes.n2.heartbeat=11\nnodes.n2.status=\"waiting\"\n");

  bool positions_found = false;
  for (const SourcePosition& p : reader.Positions()) {
    if (p.source == "/data/rec.ndjson") {
      positions_found = true;
      EXPECT_EQ(p.offset, 1234u);
      EXPECT_EQ(p.line, 7u);
    }
  }
  EXPECT_TRUE(positions_found);
}

TEST_F(StateStoreTest, ReaderAgreesWithTheStoreWhileItIsOpen) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  Fill(*store);
  ExpectReaderAgrees(dir_, store->Dump(),
                     [&](const core::Path& path) { return store->Get(path); });
}

TEST_F(StateStoreTest, ReaderAgreesWithAnEngineAfterTheStoreIsClosed) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  Fill(*store);
  store.reset();
  MergeEngine engine;
  for (const std::string& line : kShards) {
    auto shard = decoder_.DecodeEnvelope(line);
    ASSERT_TRUE(shard.ok());
    ASSERT_EQ(engine.Apply(**shard).outcome, Outcome::kApplied);
  }
  EXPECT_EQ(engine.Dump(), reference::ReferenceDump(kShards));
  ExpectReaderAgrees(dir_, engine.Dump(),
                     [&](const core::Path& path) { return engine.Get(path); });
}

// Bounded memory: with a budget, the nodes in memory stay under it after every commit (pages
// of written subtrees leave memory), and what is read back is the same state as without one
// (also against the reference, after a reopen, and through point reads of paged-out paths).
TEST_F(StateStoreTest, MemoryBudgetBoundsTheNodesInMemory) {
  constexpr int kHosts = 3000;
  std::vector<std::string> lines;
  // (Strings built with append: g++ 12's -Wrestrict misfires on chains of operator+.)
  for (int i = 0; i < kHosts; ++i) {
    const std::string h = std::to_string(i);
    std::string body = R"({"hosts":{"h)";
    body.append(h).append(R"(":{"cpu":{"user":)").append(h);
    body.append(R"(,"n":{"$inc":1}},"mem":{"free":")").append(h).append(R"("}}}})");
    std::string blade = "b";
    blade.append(std::to_string(i % 7));
    lines.push_back(Env(blade, static_cast<std::uint64_t>(i / 7 + 1), 1000 + i, body));
  }
  // Revisit every 10th host later: a write below a paged-out page root reads it back first.
  for (int i = 0; i < kHosts; i += 10) {
    std::string body = R"({"hosts":{"h)";
    body.append(std::to_string(i)).append(R"(":{"cpu":{"n":{"$inc":2}}}}})");
    lines.push_back(Env("late", static_cast<std::uint64_t>(i / 10 + 1), 5000 + i, body));
  }
  // 3,002 nodes at or above the page depth (stubs) stay; a budget of 5,000 nodes leaves room for
  // about 2,000 below them, of the 15,000 the state has.
  const std::uint64_t budget = 5000 * 300;
  StoreOptions options;
  options.memory_budget = budget;
  options.pipelined = false;  // every commit is written when Commit() returns
  std::string paged_dump;
  {
    auto store = StateStore::Open(dir_, options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::size_t most = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      ASSERT_EQ(Apply(**store, lines[i]), Outcome::kApplied);
      if (i % 100 == 99) {
        ASSERT_TRUE((*store)->Commit().ok());
        most = std::max(most, (*store)->node_count());
      }
    }
    ASSERT_TRUE((*store)->Commit().ok());
    EXPECT_LE(most, 5000u);
    EXPECT_LE((*store)->node_count(), 5000u);
    const StoreStats stats = (*store)->Stats();
    EXPECT_GT(stats.pages_out, 2000u);
    EXPECT_GT(stats.pages_in, 200u);  // the revisits
    EXPECT_EQ((*store)->Get(core::Path({"hosts", "h1234", "mem", "free"})), R"("1234")");
    EXPECT_EQ((*store)->Get(core::Path({"hosts", "h2990", "cpu", "n"})), "3");
    paged_dump = (*store)->Dump();
  }
  EXPECT_EQ(paged_dump, reference::ReferenceDump(lines));
  {
    // Lazy open: with a budget, only the nodes down to the page depth are read at open.
    auto lazy = StateStore::Open(dir_, options);
    ASSERT_TRUE(lazy.ok()) << lazy.status().ToString();
    EXPECT_EQ((*lazy)->node_count(), std::size_t{kHosts + 2});  // the root, `hosts`, its children
    EXPECT_EQ((*lazy)->Get(core::Path({"hosts", "h17", "cpu", "user"})), "17");
    ASSERT_EQ(Apply(**lazy, Env("again", 1, 9000, R"({"hosts":{"h17":{"cpu":{"n":{"$inc":5}}}}})")),
              Outcome::kApplied);
    ASSERT_TRUE((*lazy)->Commit().ok());
    EXPECT_EQ((*lazy)->Get(core::Path({"hosts", "h17", "cpu", "n"})), "6");
    EXPECT_EQ((*lazy)->Get(core::Path({"hosts", "h2990", "cpu", "n"})), "3");
  }
  lines.push_back(Env("again", 1, 9000, R"({"hosts":{"h17":{"cpu":{"n":{"$inc":5}}}}})"));
  paged_dump = reference::ReferenceDump(lines);
  auto reopened = Open();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->Dump(), paged_dump);
}

TEST(MemoryBudgetTest, ParsesSizesAndRejectsTheRest) {
  EXPECT_EQ(*ParseMemoryBudget("0"), 0u);
  EXPECT_EQ(*ParseMemoryBudget("4096"), 4096u);
  EXPECT_EQ(*ParseMemoryBudget("512MiB"), 512u << 20);
  EXPECT_EQ(*ParseMemoryBudget("2GiB"), std::uint64_t{2} << 30);
  EXPECT_EQ(*ParseMemoryBudget("3GB"), 3'000'000'000u);
  EXPECT_EQ(*ParseMemoryBudget("10B"), 10u);
  EXPECT_EQ(*ParseMemoryBudget("off"), std::nullopt);
  EXPECT_EQ(*ParseMemoryBudget(""), std::nullopt);
  for (const char* bad : {"lots", "2 GiB", "-1", "1.5GiB", "2gib", "GiB", "99999999999999999999",
                          "20000000TiB"}) {
    auto r = ParseMemoryBudget(bad);
    ASSERT_FALSE(r.ok()) << bad;
    std::string quoted = "'";
    quoted.append(bad).append("'");
    EXPECT_NE(r.status().message().find(quoted), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace lattice::crdt
