// Tests of following a state as it is written: StateReader::OpenSecondary + CatchUp() against a
// StateStore writing the same directory (the change log of format 1), through the public API.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <stdlib.h>

#include "../envelope.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {
namespace {

class StateFollowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/lattice_state_follow_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/state";
    auto store = StateStore::Open(dir_, StoreOptions{});
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
      ASSERT_TRUE(shard.ok()) << shard.status().ToString();
      ASSERT_EQ(store_->Apply(**shard).outcome, Outcome::kApplied) << line;
    }
    ASSERT_TRUE(store_->Commit().ok());
    ASSERT_TRUE(store_->Flush().ok());
  }

  void Follow() {
    auto reader = StateReader::OpenSecondary(dir_, root_ + "/secondary");
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    reader_ = std::move(*reader);
  }

  // Reopens the store with its write-ahead log bounded at `bytes` (StoreOptions::max_wal_bytes),
  // commits `n` = 1 and follows it.
  void FollowWithLogBound(std::uint64_t bytes) {
    store_.reset();
    StoreOptions options;
    options.max_wal_bytes = bytes;
    auto store = StateStore::Open(dir_, options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    Commit({Env("a", 1, 10, R"({"n":{"$inc":1}})")});
    Follow();
  }

  // A body that counts in `n` and carries 16 values of 1,000 bytes (~16 KB of log), their bytes
  // chosen by `salt`.
  static std::string BigBody(std::uint64_t salt) {
    std::string body = R"({"n":{"$inc":1},"big":{)";
    for (std::uint64_t k = 0; k < 16; ++k) {
      body.append(k ? "," : "").append("\"k").append(std::to_string(k)).append("\":\"");
      body.append(1000, static_cast<char>('a' + (salt + k) % 26)).append("\"");
    }
    body += "}}";
    return body;
  }

  // The writer thread's commit of BigBody(seq) from `blade` in the concurrent tests. Commits
  // written faster than RocksDB flushes outrun the log bound (a log file is deleted only after
  // its flushes): every 8th commit lets them finish, so that files are deleted every ~8 commits.
  void CommitBig(const std::string& blade, std::uint64_t seq) {
    auto shard =
        decoder_.DecodeEnvelope(Env(blade, seq, static_cast<std::int64_t>(seq), BigBody(seq)));
    ASSERT_TRUE(shard.ok()) << shard.status().ToString();
    ASSERT_EQ(store_->Apply(**shard).outcome, Outcome::kApplied);
    ASSERT_TRUE(store_->Commit().ok());
    if (seq % 8 == 0) {
      ASSERT_TRUE(store_->Flush().ok());
      ASSERT_TRUE(store_->WaitForBackgroundWork().ok());
    }
  }

  // The names of the state directory's write-ahead log files.
  std::set<std::string> WalFiles() const {
    std::set<std::string> files;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir_, ec), end; !ec && it != end;
         it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.ends_with(".log")) {
        files.insert(name);
      }
    }
    return files;
  }

  CatchUpResult CatchUp() {
    auto r = reader_->CatchUp();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : CatchUpResult{};
  }

  static std::map<std::string, const Change*> ByPath(const CatchUpResult& r) {
    std::map<std::string, const Change*> m;
    for (const Change& c : r.changes) {
      EXPECT_TRUE(m.emplace(c.path, &c).second) << "two changes for " << c.path;
    }
    return m;
  }

  std::string root_, dir_;
  core::ShardDecoder decoder_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<StateReader> reader_;
};

TEST_F(StateFollowTest, ReportsSetsCountersAndStampsWhileTheWriterRuns) {
  Commit({Env("a", 1, 10, R"({"nodes":{"n1":{"status":"waiting"}}})")});
  Follow();
  EXPECT_EQ(reader_->commit(), 1u);
  EXPECT_TRUE(reader_->has_change_log());
  CatchUpResult r = CatchUp();
  EXPECT_FALSE(r.gap);
  EXPECT_TRUE(r.changes.empty()) << "nothing new since the open";

  Commit({Env("a", 2, 20, R"({"nodes":{"n1":{"status":"working"}}})"),
          Env("b", 1, 21, R"({"scrape":{"x.y":{"items":{"$inc":3}}}})")});
  Commit({Env("b", 2, 22, R"({"scrape":{"x.y":{"items":{"$inc":4}}}})")});
  r = CatchUp();
  EXPECT_FALSE(r.gap);
  EXPECT_EQ(r.commit, 3u);
  EXPECT_EQ(r.watermark, std::numeric_limits<std::int64_t>::min()) << "never advanced";
  auto m = ByPath(r);
  ASSERT_EQ(m.size(), 2u);
  ASSERT_TRUE(m.count("nodes.n1.status"));
  const Change& s = *m["nodes.n1.status"];
  EXPECT_EQ(s.new_json, std::optional<std::string>("\"working\""));
  EXPECT_EQ(s.old_json, std::nullopt) << "never reported before";
  EXPECT_EQ(s.blade, "a");
  EXPECT_EQ(s.seq, 2u);
  EXPECT_EQ(s.ts, 20);
  EXPECT_EQ(s.cause, ChangeCause::kSet);
  ASSERT_TRUE(m.count("scrape.x\\.y.items"));
  const Change& c = *m["scrape.x\\.y.items"];
  EXPECT_EQ(c.new_json, std::optional<std::string>("7")) << "two commits, reported once";
  EXPECT_EQ(c.cause, ChangeCause::kCounter);
  EXPECT_EQ(c.blade, "b");
  EXPECT_EQ(c.ts, 22);

  // The next change of a reported path carries the old value.
  Commit({Env("a", 3, 30, R"({"nodes":{"n1":{"status":"paused"}}})")});
  r = CatchUp();
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].old_json, std::optional<std::string>("\"working\""));
  EXPECT_EQ(r.changes[0].new_json, std::optional<std::string>("\"paused\""));
}

// A follower does not replay the counters column family at each catch-up; Blame() reads the
// counter slots from an instance it opens on first use and catches up at each call.
TEST_F(StateFollowTest, BlameOfACounterSeesSlotsWrittenAfterTheFollowerOpened) {
  Commit({Env("a", 1, 10, R"({"c":{"$inc":2}})")});
  Follow();
  auto path = core::Path::Parse("c");
  ASSERT_TRUE(path.ok());
  auto first = reader_->Blame(*path);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(first->has_value());
  ASSERT_EQ((*first)->shares.size(), 1u);
  EXPECT_EQ((*first)->shares[0].blade, "a");
  EXPECT_EQ((*first)->shares[0].value_json, "2");

  Commit({Env("b", 1, 20, R"({"c":{"$inc":5}})")});
  Commit({Env("a", 2, 30, R"({"c":{"$inc":1}})")});
  CatchUpResult r = CatchUp();
  EXPECT_EQ(r.commit, 3u);
  auto second = reader_->Blame(*path);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->value_json, "8");
  ASSERT_EQ((*second)->shares.size(), 2u) << "the slot written after the first Blame";
  EXPECT_EQ((*second)->shares[0].blade, "a");
  EXPECT_EQ((*second)->shares[0].value_json, "3");
  EXPECT_EQ((*second)->shares[0].seq, 2u);
  EXPECT_EQ((*second)->shares[1].blade, "b");
  EXPECT_EQ((*second)->shares[1].value_json, "5");
}

TEST_F(StateFollowTest, AnErasedSubtreeIsOneChangeAtItsRoot) {
  Commit({Env("a", 1, 10,
              R"({"jobs":{"1":{"status":"done","progress":1},"2":{"status":"queued"}}})")});
  Follow();
  Commit({Env("a", 2, 20, R"({"jobs":{"1":null}})")});
  CatchUpResult r = CatchUp();
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].path, "jobs.1");
  EXPECT_EQ(r.changes[0].cause, ChangeCause::kErase);
  EXPECT_EQ(r.changes[0].new_json, std::nullopt);
  EXPECT_EQ(r.changes[0].ts, 20);
  // A scalar replacing an object is a set at that path.
  Commit({Env("a", 3, 30, R"({"jobs":{"2":"gone"}})")});
  r = CatchUp();
  auto m = ByPath(r);
  ASSERT_TRUE(m.count("jobs.2"));
  EXPECT_EQ(m["jobs.2"]->new_json, std::optional<std::string>("\"gone\""));
  // And an object replacing a reported scalar is a set of the object.
  Commit({Env("a", 4, 40, R"({"jobs":{"2":{"status":"queued"}}})")});
  r = CatchUp();
  m = ByPath(r);
  ASSERT_TRUE(m.count("jobs.2"));
  EXPECT_EQ(m["jobs.2"]->old_json, std::optional<std::string>("\"gone\""));
  EXPECT_EQ(m["jobs.2"]->new_json, std::optional<std::string>(R"({"status":"queued"})"));
}

TEST_F(StateFollowTest, FollowsAfterTheWriterClosesAndReportsAGapWhenTheLogIsTrimmed) {
  Commit({Env("a", 1, 10, R"({"x":1})")});
  Follow();
  // More commits than the log keeps: the reader cannot tell what changed.
  for (std::uint64_t i = 2; i <= 4096 + 130; ++i) {
    Commit({Env("a", i, static_cast<std::int64_t>(i) * 10, R"({"x":)" + std::to_string(i) + "}")});
  }
  store_.reset();  // the writer stops
  CatchUpResult r = CatchUp();
  EXPECT_TRUE(r.gap);
  EXPECT_TRUE(r.changes.empty());
  EXPECT_EQ(r.commit, 4096u + 130u);
  auto x = reader_->Get(*core::Path::Parse("x"));
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(*x, std::optional<std::string>(std::to_string(4096 + 130)));
  r = CatchUp();
  EXPECT_FALSE(r.gap);
  EXPECT_TRUE(r.changes.empty());
}

TEST_F(StateFollowTest, TheLogIsBoundedInBytesAndAFollowerBehindItSeesAGap) {
  store_.reset();
  StoreOptions options;
  options.change_log_max_bytes = 4096;
  auto store = StateStore::Open(dir_, options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store_ = std::move(*store);
  Commit({Env("a", 1, 10, R"({"x":1})")});
  Follow();
  // 70 commits of 20 keys each (about 600 bytes of log per commit): far more than 4096 bytes.
  std::uint64_t seq = 2;
  for (int c = 0; c < 70; ++c) {
    std::string body = "{";
    for (int k = 0; k < 20; ++k) {
      body += (k ? "," : "") + std::string(R"("key-with-a-long-name-)") + std::to_string(k) +
              R"(":)" + std::to_string(c);
    }
    body += "}";
    Commit({Env("a", seq, static_cast<std::int64_t>(seq) * 10, body)});
    ++seq;
  }
  CatchUpResult r = CatchUp();
  EXPECT_TRUE(r.gap) << "the follower is further behind than the log";
  r = CatchUp();
  EXPECT_FALSE(r.gap);
  // Caught up again: the next commit is reported as a change.
  Commit({Env("a", seq, static_cast<std::int64_t>(seq) * 10, R"({"x":2})")});
  r = CatchUp();
  EXPECT_FALSE(r.gap);
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].path, "x");
}

// A follower keeps up while the writer's write-ahead log is kept near a small bound
// (StoreOptions::max_wal_bytes): RocksDB flushes families and deletes log files between catch-ups,
// also while the follower is several commits behind, and the follower still sees every commit.
TEST_F(StateFollowTest, FollowsWhileTheWriterDeletesLogFiles) {
  constexpr std::uint64_t kLogBound = 128 << 10;
  FollowWithLogBound(kLogBound);
  ASSERT_FALSE(HasFatalFailure());
  std::uint64_t seq = 2;
  std::uint64_t most_wal = 0;
  // 60 commits of 16 values of 1,000 bytes: ~1 MB of log in all, 8x the bound.
  for (int c = 0; c < 60; ++c) {
    Commit({Env("a", seq, static_cast<std::int64_t>(seq), BigBody(static_cast<std::uint64_t>(c)))});
    ++seq;
    ASSERT_TRUE(store_->WaitForBackgroundWork().ok());
    most_wal = std::max(most_wal, store_->Stats().wal_bytes);
    if (c % 7 == 6) {  // behind by 7 commits, across flushes and deleted log files
      const CatchUpResult r = CatchUp();
      EXPECT_FALSE(r.gap);
      EXPECT_EQ(r.commit, store_->commits_made()) << "after commit " << c;
    }
  }
  EXPECT_LE(most_wal, kLogBound + (64u << 10)) << "log files were deleted";
  const CatchUpResult r = CatchUp();
  EXPECT_FALSE(r.gap);
  EXPECT_EQ(r.commit, store_->commits_made());
  std::string followed;
  ASSERT_TRUE(reader_->Dump([&](std::string_view chunk) { followed.append(chunk); }).ok());
  EXPECT_EQ(followed, store_->Dump());
  const auto n = reader_->Get(core::Path({"n"}));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, std::optional<std::string>(std::to_string(seq - 1)));
}

// The race FollowsWhileTheWriterDeletesLogFiles leaves out: the writer commits on its own thread
// with a tiny log bound while the follower catches up in a loop on another, so RocksDB deletes
// log files while a catch-up reads them (facebook/rocksdb#12469; #5323 made a log file that
// vanishes between listing and opening no error). A catch-up may fail or see an older state;
// what must hold: no crash, a successful catch-up is consistent (the clock and the state come
// from one commit, and the changes it reports are that commit's), and once the writer has
// stopped and flushed, catching up again gives the writer's state.
TEST_F(StateFollowTest, FollowsWhileLogFilesAreDeletedDuringCatchUps) {
  constexpr std::uint64_t kLogBound = 128 << 10;
  FollowWithLogBound(kLogBound);
  ASSERT_FALSE(HasFatalFailure());
  // `n` counts commits: after commit c it is c, in the same WriteBatch as the clock.
  auto wal_files = [&]() { return WalFiles(); };
  std::atomic<bool> writer_done{false};
  std::atomic<int> deleted_during_catch_ups{0};
  int catch_ups = 0, errors = 0, gaps = 0, went_back = 0, inconsistent = 0, missed = 0;
  int duplicated = 0;
  std::string first_error;
  std::set<std::string> seen_files;
  int deleted_between = 0;
  std::thread follower([&]() {
    std::uint64_t followed = 1;
    std::set<std::string> last;
    while (!writer_done.load()) {
      const std::set<std::string> before = wal_files();
      for (const std::string& f : last) {
        deleted_between += before.count(f) == 0 ? 1 : 0;
      }
      seen_files.insert(before.begin(), before.end());
      auto r = reader_->CatchUp();
      const std::set<std::string> after = wal_files();
      last = after;
      for (const std::string& f : before) {
        deleted_during_catch_ups += after.count(f) == 0 ? 1 : 0;
      }
      ++catch_ups;
      if (!r.ok()) {
        if (errors++ == 0) {
          first_error = r.status().ToString();
        }
        continue;
      }
      const auto n = reader_->Get(core::Path({"n"}));
      if (!n.ok() || *n != std::optional<std::string>(std::to_string(r->commit))) {
        ++inconsistent;  // the clock of one commit with the state of another
      }
      if (r->commit < followed) {
        ++went_back;  // reported as a gap by CatchUp
      }
      if (r->gap) {
        ++gaps;
      } else if (r->commit != followed) {
        std::set<std::string> paths;
        std::optional<std::string> n_json;
        for (const Change& c : r->changes) {
          duplicated += paths.insert(c.path).second ? 0 : 1;
          if (c.path == "n") {
            n_json = c.new_json;
          }
        }
        if (n_json != std::to_string(r->commit)) {
          ++missed;  // a feed built from the changes would keep a stale `n`
        }
      }
      followed = r->commit;
    }
  });
  std::thread writer([&]() {
    // Commits of 16 values of 1,000 bytes (~16 KB of log each, 8 per log bound) until log files
    // were seen deleted during catch-ups a few times, at most 1,500 (~24 MB of log).
    for (std::uint64_t seq = 2; seq <= 1500; ++seq) {
      if (seq > 100 && deleted_during_catch_ups.load() >= 5) {
        break;
      }
      CommitBig("a", seq);
      if (HasFatalFailure()) {
        return;
      }
    }
    ASSERT_TRUE(store_->Flush().ok());
    ASSERT_TRUE(store_->WaitForBackgroundWork().ok());
  });
  writer.join();
  writer_done = true;
  follower.join();
  std::printf(
      "[ info     ] %llu commits; %d catch-ups while writing: %d failed (first: %s), %d gaps, %d "
      "went back, %d inconsistent, %d missed a change, %d duplicated; %d log files deleted during "
      "catch-ups\n",
      static_cast<unsigned long long>(store_->commits_made()), catch_ups, errors,
      first_error.c_str(), gaps, went_back, inconsistent, missed, duplicated,
      deleted_during_catch_ups.load());
  std::printf("[ info     ] log files: %zu seen, %d deleted between catch-ups, %llu bytes now\n",
              seen_files.size(), deleted_between,
              static_cast<unsigned long long>(store_->Stats().wal_bytes));
  EXPECT_GT(deleted_during_catch_ups.load(), 0) << "the race under test did not happen";
  EXPECT_EQ(inconsistent, 0);
  EXPECT_EQ(missed, 0);
  EXPECT_EQ(duplicated, 0) << "a path reported twice by one catch-up";
  // The writer is done and flushed: catching up gives its state (a failed catch-up or an older
  // state may show once more; a third one would be a follower stuck for good).
  CatchUpResult last;
  for (int i = 0; i < 3; ++i) {
    auto r = reader_->CatchUp();
    if (r.ok()) {
      last = std::move(*r);
      if (last.commit == store_->commits_made()) {
        break;
      }
    }
  }
  EXPECT_EQ(last.commit, store_->commits_made());
  std::string followed;
  ASSERT_TRUE(reader_->Dump([&](std::string_view chunk) { followed.append(chunk); }).ok());
  EXPECT_EQ(followed, store_->Dump());
}

// Blame on a follower reads counter slots from a second secondary instance, caught up at each
// call (StateReader::Blame), which FollowsWhileLogFilesAreDeletedDuringCatchUps does not cover:
// the writer commits increments from three blades on its own thread with a tiny log bound while
// the follower blames the counter in a loop on another, so log files are deleted while that
// instance catches up. What must hold: no crash; a successful Blame's slots never go back and
// never exceed what the writer had committed when it returned; once the writer has stopped and
// flushed, Blame gives every blade's exact sum.
TEST_F(StateFollowTest, BlamesCounterSlotsWhileLogFilesAreDeleted) {
  constexpr std::uint64_t kLogBound = 128 << 10;
  FollowWithLogBound(kLogBound);  // blade a: n += 1
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<std::string> blades = {"a", "b", "c"};
  std::vector<std::atomic<std::int64_t>> committed(blades.size());
  committed[0] = 1;
  const core::Path n = core::Path({"n"});
  std::atomic<bool> writer_done{false};
  std::atomic<int> deleted_during_blames{0};
  int blames = 0, errors = 0, went_back = 0, ahead = 0, unknown = 0;
  std::string first_error;
  std::thread follower([&]() {
    std::vector<std::int64_t> last(blades.size(), 0);
    while (!writer_done.load()) {
      const std::set<std::string> before = WalFiles();
      auto b = reader_->Blame(n);
      const std::set<std::string> after = WalFiles();
      for (const std::string& f : before) {
        deleted_during_blames += after.count(f) == 0 ? 1 : 0;
      }
      ++blames;
      if (!b.ok()) {
        if (errors++ == 0) {
          first_error = b.status().ToString();
        }
        continue;
      }
      if (!b->has_value()) {
        continue;  // the follower's own view of `n` is older than its first commit
      }
      for (const Provenance::Share& share : (*b)->shares) {
        const auto i = static_cast<std::size_t>(
            std::find(blades.begin(), blades.end(), share.blade) - blades.begin());
        if (i == blades.size()) {
          ++unknown;
          continue;
        }
        const std::int64_t v = std::stoll(share.value_json);
        went_back += v < last[i] ? 1 : 0;
        ahead += v > committed[i].load() ? 1 : 0;
        last[i] = std::max(last[i], v);
      }
    }
  });
  std::thread writer([&]() {
    // Commits of 16 values of 1,000 bytes (~16 KB of log each, 8 per log bound), each from the
    // next blade, until log files were seen deleted during Blame calls a few times, at most 1,500.
    for (std::uint64_t seq = 2; seq <= 1500; ++seq) {
      if (seq > 100 && deleted_during_blames.load() >= 5) {
        break;
      }
      const std::size_t i = seq % blades.size();
      ++committed[i];  // before the commit: a slot read as it lands is not ahead of the writer
      CommitBig(blades[i], seq);
      if (HasFatalFailure()) {
        return;
      }
    }
    ASSERT_TRUE(store_->Flush().ok());
    ASSERT_TRUE(store_->WaitForBackgroundWork().ok());
  });
  writer.join();
  writer_done = true;
  follower.join();
  std::printf(
      "[ info     ] %llu commits; %d blames while writing: %d failed (first: %s), %d slots went "
      "back, %d ahead of the writer, %d of unknown blades; %d log files deleted during blames\n",
      static_cast<unsigned long long>(store_->commits_made()), blames, errors, first_error.c_str(),
      went_back, ahead, unknown, deleted_during_blames.load());
  EXPECT_GT(deleted_during_blames.load(), 0) << "the race under test did not happen";
  EXPECT_EQ(went_back, 0);
  EXPECT_EQ(ahead, 0);
  EXPECT_EQ(unknown, 0);
  // The writer is done and flushed: Blame gives every blade's sum (a failed or older answer may
  // show once more; a third one would be a counters instance stuck for good).
  std::map<std::string, std::string> want, got;
  for (std::size_t i = 0; i < blades.size(); ++i) {
    want[blades[i]] = std::to_string(committed[i].load());
  }
  for (int i = 0; i < 3 && got != want; ++i) {
    auto b = reader_->Blame(n);
    if (b.ok() && b->has_value()) {
      got.clear();
      for (const Provenance::Share& share : (*b)->shares) {
        got[share.blade] = share.value_json;
      }
    }
  }
  EXPECT_EQ(got, want);
}

// Short keys (stored inside the string, not on the heap) included: deduplicating them once
// compared views of moved-from strings and reported such a path once per commit.
TEST_F(StateFollowTest, APathWrittenByTwoCommitsIsReportedOnce) {
  Commit({Env("a", 1, 10, R"({"x":1,"y":{"$inc":1}})")});
  Follow();
  Commit({Env("a", 2, 20, R"({"x":2,"y":{"$inc":1}})")});
  Commit({Env("a", 3, 30, R"({"x":3,"y":{"$inc":1}})")});
  const CatchUpResult r = CatchUp();
  EXPECT_FALSE(r.gap);
  ASSERT_EQ(r.changes.size(), 2u);
  const auto m = ByPath(r);
  ASSERT_EQ(m.count("x"), 1u);
  EXPECT_EQ(m.at("x")->new_json, std::optional<std::string>("3"));
  ASSERT_EQ(m.count("y"), 1u);
  EXPECT_EQ(m.at("y")->new_json, std::optional<std::string>("3"));
}

TEST_F(StateFollowTest, TooManyChangesAreAGap) {
  Follow();
  std::vector<std::string> lines;
  for (int i = 0; i < 50; ++i) {
    lines.push_back(Env("a", static_cast<std::uint64_t>(i + 1), 10 + i,
                        R"({"k":{")" + std::to_string(i) + R"(":1}})"));
  }
  Commit(lines);
  auto r = reader_->CatchUp(/*max_changes=*/10);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->gap);
}

TEST_F(StateFollowTest, ScanLeavesGivesKindsAndStamps) {
  Commit({Env("w1", 5, 100,
              R"({"nodes":{"w1":{"heartbeat":{"$max":100},"status":"working"}},"c":{"$inc":2}})")});
  Follow();
  std::vector<std::string> seen;
  ASSERT_TRUE(reader_
                  ->ScanLeaves(core::Path(),
                               [&](const Leaf& l) {
                                 seen.push_back(l.path.ToString() + "=" + std::string(l.json) +
                                                " " + std::to_string(static_cast<int>(l.kind)) +
                                                " " + std::string(l.blade) + "/" +
                                                std::to_string(l.seq) + "@" + std::to_string(l.ts));
                               })
                  .ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"c=2 1 w1/5@100", "nodes.w1.heartbeat=100 2 w1/5@100",
                                            "nodes.w1.status=\"working\" 0 w1/5@100"}));
}

TEST_F(StateFollowTest, ReadOnlyOpenStillWorksWithAChangeLog) {
  Commit({Env("a", 1, 10, R"({"x":1})")});
  store_.reset();
  auto reader = StateReader::Open(dir_);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ((*reader)->commit(), 1u);
  auto r = (*reader)->CatchUp();
  EXPECT_FALSE(r.ok()) << "CatchUp needs a secondary";
}

}  // namespace
}  // namespace lattice::crdt
