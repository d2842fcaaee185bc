// Tests of the observer's summary rules (docs/observer-protocol.md, "Summary rules") against the
// golden summary of tests/data/observer/golden/summary_state.ndjson, and of how it follows changes.
#include "../envelope.h"
#include "lattice/observer/summary.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>

#include "lattice/core/shard.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"

namespace lattice::observer {
namespace {

using nlohmann::json;

constexpr std::int64_t T = 1732350000000;

class SummaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/lattice_observer_summary_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    auto store = crdt::StateStore::Open(root_ + "/state", crdt::StoreOptions{});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override {
    reader_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  void Commit(const std::vector<std::string>& lines) {
    for (const std::string& line : lines) {
      auto shard = decoder_.DecodeEnvelope(line);
      ASSERT_TRUE(shard.ok()) << shard.status().ToString() << ": " << line;
      store_->Apply(**shard);
      newest_ = std::max(newest_, (*shard)->ts);
    }
    store_->AdvanceWatermark(newest_);
    ASSERT_TRUE(store_->Commit().ok());
    ASSERT_TRUE(store_->Flush().ok());
  }

  void Follow() {
    auto reader = crdt::StateReader::OpenSecondary(root_ + "/state", root_ + "/secondary");
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    reader_ = std::move(*reader);
  }

  std::string root_;
  core::ShardDecoder decoder_;
  std::unique_ptr<crdt::StateStore> store_;
  std::unique_ptr<crdt::StateReader> reader_;
  std::int64_t newest_ = 0;
};

TEST_F(SummaryTest, GoldenSummaryOfTheGoldenState) {
  std::ifstream in(std::string(LATTICE_TEST_DATA) + "/observer/golden/summary_state.ndjson");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 58u);
  Commit(lines);
  Follow();
  Summary s(SummaryOptions{10'000, false});
  ASSERT_TRUE(s.Rebuild(*reader_, reader_->watermark()).ok());
  s.SampleCounters(1000);
  std::ifstream g(std::string(LATTICE_TEST_DATA) + "/observer/golden/summary.json");
  const json golden = json::parse(g)["payload"]["summary"];
  const json got = json::parse(s.ToJson(reader_->commit(), 1000));
  EXPECT_EQ(got, golden) << got.dump(2);
  // The first derivation reports every node as new.
  auto changes = s.DeriveStatuses(1000);
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[2].node, "w3");
  EXPECT_EQ(changes[2].old_status, std::nullopt);
  EXPECT_EQ(changes[2].new_status, std::optional<std::string>("dead"));
  EXPECT_EQ(s.NodesByStatus(1000).at("dead"), 1u);
  EXPECT_EQ(s.JobsByStatus().at("queued"), 10u);
}

TEST_F(SummaryTest, FollowsChangesNodesComeBackAndDieAndRatesAppear) {
  Commit({Env("w1", 1, T,
              R"({"nodes":{"w1":{"status":"waiting","heartbeat":{"$max":)" + std::to_string(T) +
                  "}}}}"),
          Env("w2", 1, T,
              R"({"nodes":{"w2":{"status":"working","heartbeat":{"$max":)" + std::to_string(T) +
                  R"(}}},"c":{"$inc":10}})")});
  Follow();
  Summary s(SummaryOptions{10'000, false});
  ASSERT_TRUE(s.Rebuild(*reader_, reader_->watermark()).ok());
  s.SampleCounters(0);
  EXPECT_EQ(s.DeriveStatuses(0).size(), 2u);
  // w1 keeps beating for 15 s, w2 goes silent: w2 is dead, decided by event time.
  Commit({Env("w1", 2, T + 15000,
              R"({"nodes":{"w1":{"heartbeat":{"$max":)" + std::to_string(T + 15000) +
                  R"(}}},"c":{"$inc":20}})")});
  auto r = reader_->CatchUp();
  ASSERT_TRUE(r.ok());
  ASSERT_FALSE(r->gap);
  auto applied = s.Apply(*reader_, r->changes, r->watermark);
  ASSERT_TRUE(applied.ok());
  EXPECT_TRUE(*applied);
  s.SampleCounters(2000);
  auto sc = s.DeriveStatuses(2000);
  ASSERT_EQ(sc.size(), 1u);
  EXPECT_EQ(sc[0].node, "w2");
  EXPECT_EQ(sc[0].old_status, std::optional<std::string>("working"));
  EXPECT_EQ(sc[0].new_status, std::optional<std::string>("dead"));
  EXPECT_EQ(sc[0].updated_at, T + 15000);
  json got = json::parse(s.ToJson(2, 2000));
  EXPECT_EQ(got["counters"][0]["value"], 30);
  EXPECT_DOUBLE_EQ(got["counters"][0]["rate"].get<double>(), 10.0) << "20 in 2 s";
  EXPECT_EQ(got["nodes"]["live"], 1);
  // w2 comes back with a status write: the change carries that write's event time.
  Commit({Env("w2", 2, T + 16000,
              R"({"nodes":{"w2":{"status":"waiting","heartbeat":{"$max":)" +
                  std::to_string(T + 16000) + "}}}}")});
  r = reader_->CatchUp();
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(s.Apply(*reader_, r->changes, r->watermark).ok());
  sc = s.DeriveStatuses(3000);
  ASSERT_EQ(sc.size(), 1u);
  EXPECT_EQ(sc[0].old_status, std::optional<std::string>("dead"));
  EXPECT_EQ(sc[0].new_status, std::optional<std::string>("waiting"));
  EXPECT_EQ(sc[0].updated_at, T + 16000);
  // A node erased from the state vanishes.
  Commit({Env("admin", 1, T + 17000, R"({"nodes":{"w1":null}})")});
  r = reader_->CatchUp();
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(s.Apply(*reader_, r->changes, r->watermark).ok());
  sc = s.DeriveStatuses(4000);
  ASSERT_EQ(sc.size(), 1u);
  EXPECT_EQ(sc[0].node, "w1");
  EXPECT_EQ(sc[0].new_status, std::nullopt);
  // Erasing the counter removes it.
  Commit({Env("admin", 2, T + 18000, R"({"c":null})")});
  r = reader_->CatchUp();
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(s.Apply(*reader_, r->changes, r->watermark).ok());
  got = json::parse(s.ToJson(5, 5000));
  EXPECT_TRUE(got["counters"].empty());
}

TEST_F(SummaryTest, QueueSectionsWithMoreNodesThanIdsAndWithoutLiveNodes) {
  std::vector<std::string> lines;
  std::uint64_t seq = 0;
  for (const char* n : {"a", "b", "c"}) {
    lines.push_back(
        Env(n, 1, T, std::string(R"({"nodes":{")") + n + R"(":{"status":"waiting"}}})"));
  }
  for (int j = 5; j <= 6; ++j) {
    lines.push_back(
        Env("orch", ++seq, T, R"({"jobs":{")" + std::to_string(j) + R"(":{"status":"queued"}}})"));
  }
  lines.push_back(
      Env("orch", ++seq, T, R"({"jobs":{"x":{"status":"queued"},"4":{"status":"done"}}})"));
  Commit(lines);
  Follow();
  Summary s(SummaryOptions{10'000, false});
  ASSERT_TRUE(s.Rebuild(*reader_, reader_->watermark()).ok());
  json got = json::parse(s.ToJson(1, 0));
  EXPECT_EQ(got["queue"]["from"], 5);
  EXPECT_EQ(got["queue"]["to"], 6);
  ASSERT_EQ(got["queue"]["sections"].size(), 2u) << "3 nodes, 2 ids: c gets none";
  EXPECT_EQ(got["queue"]["sections"][0],
            json::parse(R"({"node":"a","from":5,"to":5,"queued":1,"running":0})"));
  EXPECT_EQ(got["queue"]["sections"][1]["node"], "b");
  EXPECT_TRUE(got["nodes"]["list"][2]["section"].is_null());
  EXPECT_EQ(got["jobs"]["count"], 4);
  EXPECT_EQ(got["jobs"]["queued"], 3) << "the non-decimal id counts as a job";
  EXPECT_EQ(got["jobs"]["lowest_unfinished"], 5);
  // With the wall clock far ahead, nodes without a heartbeat are still never dead.
  Summary wall(SummaryOptions{10'000, true});
  ASSERT_TRUE(wall.Rebuild(*reader_, reader_->watermark()).ok());
  got = json::parse(wall.ToJson(1, T + 1'000'000));
  EXPECT_EQ(got["clock"], "wall");
  EXPECT_EQ(got["nodes"]["live"], 3);
}

}  // namespace
}  // namespace lattice::observer
