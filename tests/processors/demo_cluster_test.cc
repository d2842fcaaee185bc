// The simulated demo cluster: its shards are valid, merge (through the real replayer and state
// store) into a state that says what the simulation did — counters exact, no job lost, the dying
// worker dead while silent and back afterwards — and the same options give the same bytes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/ingest/replayer.h"
#include "lattice/processors/demo_cluster.h"

namespace lattice::processors {
namespace {

constexpr std::int64_t kStart = 1'700'000'000'000;

class DemoClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("lattice-demo-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    recording_ = (dir_ / "demo.ndjson").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs the cluster up to `until`, appending its shards as envelopes to the recording, and
  // checks each shard on the way.
  void RunUntil(DemoCluster& cluster, std::int64_t until) {
    std::ofstream out(recording_, std::ios::app);
    cluster.Advance(until, [&](const DemoShard& s) {
      ASSERT_GE(s.ts, last_ts_);
      last_ts_ = s.ts;
      ASSERT_EQ(s.seq, ++seqs_[s.blade]) << s.blade;
      const auto body = nlohmann::json::parse(s.body);  // throws (fails the test) if invalid
      ASSERT_TRUE(body.is_object());
      nlohmann::json envelope = {{"blade", s.blade}, {"seq", s.seq}, {"ts", s.ts}};
      out << envelope.dump().substr(0, envelope.dump().size() - 1) << ",\"shard\":" << s.body
          << "}\n";
    });
  }

  // Merges the recording (resuming) and returns the whole state as JSON.
  nlohmann::json Merge() {
    {
      auto store = crdt::StateStore::Open((dir_ / "state").string(), crdt::StoreOptions{});
      EXPECT_TRUE(store.ok()) << store.status().ToString();
      ingest::ReplayOptions options;
      options.files = {recording_};
      options.strict = true;
      options.dead_letter_path = (dir_ / "dead.ndjson").string();
      auto report = ingest::Replay(**store, options);
      EXPECT_TRUE(report.ok()) << report.status().ToString();
    }
    auto reader = crdt::StateReader::Open((dir_ / "state").string());
    EXPECT_TRUE(reader.ok());
    std::string dump;
    EXPECT_TRUE((*reader)->Dump([&](std::string_view c) { dump.append(c); }).ok());
    return nlohmann::json::parse(dump);
  }

  DemoSummary Summary(std::int64_t now, std::int64_t timeout) {
    auto reader = crdt::StateReader::Open((dir_ / "state").string());
    EXPECT_TRUE(reader.ok());
    auto summary = SummarizeState(**reader, now, timeout);
    EXPECT_TRUE(summary.ok()) << summary.status().ToString();
    return *summary;
  }

  std::filesystem::path dir_;
  std::string recording_;
  std::int64_t last_ts_ = 0;
  std::map<std::string, std::uint64_t> seqs_;
};

TEST_F(DemoClusterTest, MergedStateMatchesWhatTheClusterDid) {
  DemoClusterOptions options;  // worker-4 dies at 20 s for 25 s
  DemoCluster cluster(options, kStart);

  // 35 s in: worker-4 has been silent for 15 s, longer than the heartbeat timeout.
  RunUntil(cluster, kStart + 35'000);
  nlohmann::json state = Merge();
  DemoSummary dead = Summary(kStart + 35'000, options.heartbeat_timeout_ms);
  EXPECT_EQ(dead.nodes, options.workers);  // scrapers, spotters etc. report under `blades`
  EXPECT_EQ(dead.nodes_by_status["dead"], 1u);
  const std::int64_t hb4 = state["nodes"]["worker-4"]["heartbeat"].get<std::int64_t>();
  EXPECT_LE(hb4, kStart + 20'000);
  EXPECT_GE(hb4, kStart + 19'000);
  EXPECT_EQ(state["checks"]["heartbeats"]["status"], "failing");
  EXPECT_TRUE(state["checks"]["heartbeats"]["evidence"]["stale"].contains("worker-4"));
  // Nobody started a job on worker-4 while it was silent.
  for (const auto& [id, job] : state["jobs"].items()) {
    if (job["node"] == "worker-4") {
      EXPECT_LE(job["started"].get<std::int64_t>(), kStart + 20'000) << "job " << id;
    }
  }

  // 90 s in: worker-4 came back at 45 s.
  RunUntil(cluster, kStart + 90'000);
  state = Merge();
  DemoSummary back = Summary(kStart + 90'000, options.heartbeat_timeout_ms);
  EXPECT_EQ(back.nodes_by_status.count("dead"), 0u);
  EXPECT_GE(state["nodes"]["worker-4"]["heartbeat"].get<std::int64_t>(), kStart + 89'000);
  EXPECT_EQ(state["checks"]["heartbeats"]["status"], "passing");
  EXPECT_EQ(cluster.stats().deaths, 1u);
  EXPECT_EQ(cluster.stats().restarts, 1u);
  // The job worker-4 was running when it died was taken over by a live worker and finished.
  EXPECT_GE(cluster.stats().jobs_taken_over, 1u);
  std::uint64_t taken_over = 0;
  for (const auto& [id, job] : state["jobs"].items()) {
    if (job.contains("taken_over_from")) {
      ++taken_over;
      EXPECT_EQ(job["taken_over_from"], "worker-4") << id;
      EXPECT_NE(job["node"], "worker-4") << id;
      EXPECT_GT(job["started"].get<std::int64_t>(), hb4 + options.heartbeat_timeout_ms) << id;
      EXPECT_TRUE(job["status"] == "done" || job["status"] == "failed") << id;
    }
  }
  EXPECT_EQ(taken_over, cluster.stats().jobs_taken_over);

  // Every status is one of the four a node writes (dead is derived, never written).
  const std::set<std::string> statuses = {"initializing", "waiting", "working", "paused"};
  EXPECT_EQ(state["nodes"].size(), options.workers);
  EXPECT_EQ(state["blades"].size(), options.scrapers + options.spotters + 2);
  for (const auto& [id, node] : state["nodes"].items()) {
    EXPECT_TRUE(statuses.count(node["status"].get<std::string>())) << id;
    EXPECT_EQ(node["role"], "worker") << id;
    EXPECT_TRUE(node["heartbeat"].is_number_integer()) << id;
  }
  // Counters: exactly what the scrapers counted.
  const auto& counted = cluster.stats().counters;
  ASSERT_FALSE(counted.empty());
  for (const auto& [domain, fields] : counted) {
    for (const auto& [field, value] : fields) {
      EXPECT_EQ(state["scrape"][domain][field].get<std::int64_t>(), value) << domain << field;
    }
    EXPECT_LE(fields.at("item_sent"), fields.at("item_collected"));
    EXPECT_LE(fields.at("item_collected"), fields.at("tries"));
  }
  // No job lost: ids 1..submitted are all present (none is old enough to be erased yet), each
  // with a status, and done jobs carry their node and full progress; running jobs run on live
  // nodes; the oldest jobs are finished (the queue moves).
  const auto& st = cluster.stats();
  ASSERT_GT(st.jobs_submitted, 20u);
  EXPECT_EQ(state["jobs"].size(), st.jobs_submitted);
  std::uint64_t done = 0;
  for (std::uint64_t id = 1; id <= st.jobs_submitted; ++id) {
    const auto& job = state["jobs"][std::to_string(id)];
    ASSERT_TRUE(job.contains("status")) << id;
    if (job["status"] != "queued") {
      EXPECT_TRUE(job["node"].is_string()) << id;
    }
    if (job["status"] == "done") {
      ++done;
      EXPECT_EQ(job["progress"], 1);
      EXPECT_TRUE(job["result"]["items"].is_number_integer());
    }
  }
  EXPECT_EQ(done, st.jobs_done);
  EXPECT_EQ(back.jobs_by_status["done"], st.jobs_done);
  EXPECT_EQ(back.jobs_by_status["failed"], st.jobs_failed);
  // Intents: a scraper resolved most of them, with the spotter too for most.
  EXPECT_GT(back.intents, 5u);
  EXPECT_GT(back.intents_resolved, back.intents / 2);
  for (const auto& [id, intent] : state["intents"].items()) {
    EXPECT_TRUE(intent["host"].is_string()) << id;
    if (intent.contains("resolution")) {
      EXPECT_TRUE(intent["resolution"].contains(intent["host"].get<std::string>())) << id;
    }
  }
  EXPECT_EQ(back.checks.size(), 4u);
  const std::string text = FormatSummary(back);
  EXPECT_NE(text.find("nodes: 6"), std::string::npos) << text;
}

TEST_F(DemoClusterTest, OldJobsAndIntentsAreErased) {
  DemoClusterOptions options;
  options.jobs_kept = 30;
  options.intent_lifetime_ms = 20'000;
  DemoCluster cluster(options, kStart);
  RunUntil(cluster, kStart + 120'000);
  nlohmann::json state = Merge();
  EXPECT_LT(state["jobs"].size(), cluster.stats().jobs_submitted);
  for (const auto& [id, intent] : state["intents"].items()) {
    EXPECT_GT(intent["created"].get<std::int64_t>(), kStart + 100'000 - 1) << id;
  }
}

TEST(DemoClusterDeterminism, SameOptionsSameShards) {
  auto run = [](std::uint64_t seed) {
    DemoClusterOptions options;
    options.seed = seed;
    DemoCluster cluster(options, kStart);
    std::string all;
    cluster.Advance(kStart + 30'000, [&](const DemoShard& s) {
      all += s.blade + " " + std::to_string(s.seq) + " " + std::to_string(s.ts) + " " + s.body;
      all += '\n';
    });
    return all;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

}  // namespace
}  // namespace lattice::processors
