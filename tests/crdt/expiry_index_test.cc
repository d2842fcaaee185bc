// Tests of the TTL index on disk (the `expiry` column family, docs/state-layout.md): eviction
// reads only what is due, a reopened store works from the stored index, evicted records are
// physically gone after a compaction, and other formats and rules are handled. The StateStore is
// driven through its public API; the directory is then inspected with RocksDB itself, against
// the documented layout.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/table_properties.h>
#include <stdlib.h>

#include "../envelope.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {
namespace {

std::string Enc(const std::vector<std::string>& segments) { return core::Path(segments).Encode(); }

// The documented `expiry` key: big-endian u64 of (due XOR 2^63), then the encoded path.
std::string ExpiryKey(std::int64_t due, const std::string& path) {
  const std::uint64_t t = static_cast<std::uint64_t>(due) ^ (std::uint64_t{1} << 63);
  std::string k;
  for (int shift = 56; shift >= 0; shift -= 8) {
    k.push_back(static_cast<char>((t >> shift) & 0xff));
  }
  return k + path;
}

const std::vector<std::string> kCfs = {"default", "state",   "counters", "meta",
                                       "history", "changes", "expiry"};

/// The state directory opened with RocksDB directly (the store must be closed).
class RawDb {
 public:
  explicit RawDb(const std::string& dir) {
    rocksdb::Options options;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const std::string& name : kCfs) {
      cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(options, dir, cfs, &handles_, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }
  ~RawDb() {
    for (auto* h : handles_) {
      (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
  }
  rocksdb::ColumnFamilyHandle* cf(const std::string& name) const {
    for (std::size_t i = 0; i < kCfs.size(); ++i) {
      if (kCfs[i] == name) {
        return handles_[i];
      }
    }
    return nullptr;
  }
  /// Keys of `cf` that start with `prefix`, in order.
  std::vector<std::string> Keys(const std::string& cf_name, const std::string& prefix = "") const {
    std::vector<std::string> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(cf_name)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      out.push_back(it->key().ToString());
    }
    EXPECT_TRUE(it->status().ok());
    return out;
  }
  void FlushAll() {
    for (auto* h : handles_) {
      ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions(), h).ok());
    }
  }
  void CompactAll() {
    rocksdb::CompactRangeOptions o;
    o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (auto* h : handles_) {
      ASSERT_TRUE(db_->CompactRange(o, h, nullptr, nullptr).ok());
    }
  }
  struct FileCounts {
    std::uint64_t entries = 0;  // every record in the table files, tombstones included
    std::uint64_t deletions = 0;
    std::uint64_t range_deletions = 0;
  };
  /// What the table files of `cf` physically hold (their table properties).
  FileCounts Files(const std::string& cf_name) const {
    rocksdb::TablePropertiesCollection props;
    EXPECT_TRUE(db_->GetPropertiesOfAllTables(cf(cf_name), &props).ok());
    FileCounts c;
    for (const auto& [file, p] : props) {
      c.entries += p->num_entries;
      c.deletions += p->num_deletions;
      c.range_deletions += p->num_range_deletions;
    }
    return c;
  }
  rocksdb::DB& db() { return *db_; }

 private:
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

class ExpiryIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/lattice_expiry_index_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<StateStore> Open(std::int64_t duration_ms = 10'000) {
    StoreOptions options;
    options.engine.allowed_lateness_ms = 0;
    if (duration_ms > 0) {
      options.engine.ttl = {TtlRule{{"intents", "*"}, duration_ms}};
    }
    auto store = StateStore::Open(dir_, options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  void Apply(StateStore& store, const std::string& line) {
    auto shard = decoder_.DecodeEnvelope(line);
    ASSERT_TRUE(shard.ok()) << shard.status().ToString();
    ASSERT_EQ(store.Apply(**shard).outcome, Outcome::kApplied) << line;
  }

  void CommitAndClose(std::unique_ptr<StateStore>& store) {
    ASSERT_TRUE(store->Commit().ok());
    ASSERT_TRUE(store->Flush().ok());
    store.reset();
  }

  std::string dir_;
  core::ShardDecoder decoder_;
};

TEST_F(ExpiryIndexTest, EvictionVisitsOnlyWhatIsDueAfterAReopen) {
  constexpr int kOld = 10;
  constexpr int kNew = 3000;
  auto store = Open();
  std::uint64_t seq = 0;
  for (int i = 0; i < kOld; ++i) {
    Apply(*store, Env("b", ++seq, i, R"({"intents":{"old)" + std::to_string(i) + R"(":{"n":1}}})"));
  }
  for (int i = 0; i < kNew; ++i) {
    Apply(*store, Env("b", ++seq, 100'000 + i,
                      R"({"intents":{")" + std::to_string(i) + R"(":{"n":{"$inc":1}}}})"));
  }
  CommitAndClose(store);
  {
    // One entry per intent, due at its pending write (nothing is final yet), in time order.
    RawDb raw(dir_);
    const std::vector<std::string> keys = raw.Keys("expiry");
    ASSERT_EQ(keys.size(), static_cast<std::size_t>(kOld + kNew));
    EXPECT_EQ(keys.front(), ExpiryKey(0, Enc({"intents", "old0"})));
    EXPECT_EQ(keys.back(),
              ExpiryKey(100'000 + kNew - 1, Enc({"intents", std::to_string(kNew - 1)})));
  }

  store = Open();  // schedules from the stored index
  EXPECT_EQ(store->counts().ttl_visits, 0u);
  store->AdvanceWatermark(50'000);
  // Each old intent is looked at twice (its write becomes final, then it is due); none of the
  // others is looked at.
  EXPECT_EQ(store->counts().evicted, static_cast<std::uint64_t>(kOld));
  EXPECT_LE(store->counts().ttl_visits, static_cast<std::uint64_t>(2 * kOld));
  EXPECT_FALSE(store->Get(*core::Path::Parse("intents.old3")).has_value());
  EXPECT_EQ(store->Get(*core::Path::Parse("intents.7.n")), "1");
  CommitAndClose(store);
  {
    RawDb raw(dir_);
    const std::vector<std::string> keys = raw.Keys("expiry");
    ASSERT_EQ(keys.size(), static_cast<std::size_t>(kNew));
    EXPECT_EQ(keys.front(), ExpiryKey(100'000, Enc({"intents", "0"})));
    EXPECT_TRUE(raw.Keys("state", Enc({"intents", "old3"})).empty());
  }

  // A reopened store evicts the rest exactly when it is due, from the index alone.
  store = Open();
  store->AdvanceWatermark(100'000 + 10'000 + 100);  // final; intents 0..99 are due
  EXPECT_EQ(store->counts().evicted, 100u);
  EXPECT_FALSE(store->Get(*core::Path::Parse("intents.99")).has_value());
  EXPECT_EQ(store->Get(*core::Path::Parse("intents.100.n")), "1");
}

TEST_F(ExpiryIndexTest, EvictedRecordsAreGoneAfterCompaction) {
  constexpr int kIntents = 300;
  auto store = Open();
  std::uint64_t seq = 0;
  for (int i = 0; i < kIntents; ++i) {
    // Nodes, a counter with two blades' slots and their history, a max register.
    const std::string id = std::to_string(i);
    Apply(*store,
          Env("a", ++seq, 1000 + i,
              R"({"intents":{")" + id +
                  R"(":{"host":"h","d":{"x":[1,2]},"c":{"$inc":2},"m":{"$max":)" + id + "}}}}"));
    Apply(*store, Env("b", seq, 1000 + i, R"({"intents":{")" + id + R"(":{"c":{"$inc":3}}}})"));
  }
  Apply(*store, Env("a", ++seq, 1000 + kIntents, R"({"keep":{"c":{"$inc":1}}})"));
  store->StagePosition(SourcePosition{"rec", 1, 1});
  CommitAndClose(store);

  const std::string intents = Enc({"intents"});
  std::size_t state_before = 0;
  {
    RawDb raw(dir_);
    raw.FlushAll();
    state_before = raw.Keys("state", intents).size();
    EXPECT_EQ(state_before, 1u + kIntents * 6u);  // intents, and per intent 6 nodes
    EXPECT_EQ(raw.Keys("counters", intents).size(), kIntents * 3u);  // 2 counter slots, 1 max
    EXPECT_EQ(raw.Keys("history", intents).size(), kIntents * 3u);
    EXPECT_EQ(raw.Keys("expiry").size(), static_cast<std::size_t>(kIntents));
    EXPECT_GE(raw.Files("state").entries, state_before);
  }

  // Evict everything under intents.*, from the index of a reopened store.
  store = Open();
  store->AdvanceWatermark(1000 + kIntents + 20'000);
  EXPECT_EQ(store->counts().evicted, static_cast<std::uint64_t>(kIntents));
  EXPECT_EQ(store->Dump(), "{\"intents\":{},\"keep\":{\"c\":1}}\n");
  CommitAndClose(store);

  RawDb raw(dir_);
  raw.FlushAll();
  // Before compaction the data is still in the files, covered by range deletions.
  EXPECT_GT(raw.Files("state").range_deletions, 0u);
  EXPECT_GE(raw.Files("state").entries, state_before);
  raw.CompactAll();
  // What an iteration sees: nothing under intents.* in any column family, no index entries.
  EXPECT_EQ(raw.Keys("state", intents), std::vector<std::string>{intents});
  EXPECT_TRUE(raw.Keys("counters", intents).empty());
  EXPECT_TRUE(raw.Keys("history", intents).empty());
  EXPECT_TRUE(raw.Keys("expiry").empty());
  // What the files hold: exactly the live records, no tombstones and nothing they covered.
  for (const std::string cf : {"state", "counters", "history", "expiry"}) {
    SCOPED_TRACE(cf);
    const RawDb::FileCounts files = raw.Files(cf);
    EXPECT_EQ(files.entries, raw.Keys(cf).size());
    EXPECT_EQ(files.deletions, 0u);
    EXPECT_EQ(files.range_deletions, 0u);
  }
  EXPECT_EQ(raw.Keys("state").size(), 3u);  // intents, keep, keep.c
}

TEST_F(ExpiryIndexTest, OtherRulesRebuildTheIndex) {
  auto store = Open(10'000);
  Apply(*store, Env("a", 1, 1000, R"({"intents":{"1":{"n":1}}})"));
  store->AdvanceWatermark(2000);  // the write at 1000 is final: due at 1000 + 10000 + 1
  CommitAndClose(store);
  const std::string path = Enc({"intents", "1"});
  {
    RawDb raw(dir_);
    EXPECT_EQ(raw.Keys("expiry"), std::vector<std::string>{ExpiryKey(11'001, path)});
  }
  store = Open(20'000);  // another duration: the index is rebuilt by the next commit
  CommitAndClose(store);
  {
    RawDb raw(dir_);
    EXPECT_EQ(raw.Keys("expiry"), std::vector<std::string>{ExpiryKey(21'001, path)});
  }
  store = Open(20'000);  // the same rules: the index is used as it is
  store->AdvanceWatermark(15'000);
  EXPECT_EQ(store->counts().evicted, 0u);
  store->AdvanceWatermark(21'001);
  EXPECT_EQ(store->counts().evicted, 1u);
  EXPECT_EQ(store->Dump(), "{\"intents\":{}}\n");
  CommitAndClose(store);
  store = Open(0);  // no rules: no index
  Apply(*store, Env("a", 2, 30'000, R"({"intents":{"2":{"n":1}}})"));
  CommitAndClose(store);
  RawDb raw(dir_);
  EXPECT_TRUE(raw.Keys("expiry").empty());
}

TEST_F(ExpiryIndexTest, AnIndexThatDisagreesWithTheStateIsCorruption) {
  auto store = Open();
  Apply(*store, Env("a", 1, 1000, R"({"intents":{"1":{"n":1},"2":{"n":2}}})"));
  CommitAndClose(store);
  {
    RawDb raw(dir_);
    ASSERT_TRUE(raw.db()
                    .Delete(rocksdb::WriteOptions(), raw.cf("expiry"),
                            ExpiryKey(1000, Enc({"intents", "2"})))
                    .ok());
  }
  StoreOptions options;
  options.engine.ttl = {TtlRule{{"intents", "*"}, 10'000}};
  auto missing = StateStore::Open(dir_, options);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kCorruption) << missing.status().ToString();
  {
    RawDb raw(dir_);
    ASSERT_TRUE(raw.db()
                    .Put(rocksdb::WriteOptions(), raw.cf("expiry"),
                         ExpiryKey(999, Enc({"intents", "2"})), "")
                    .ok());
  }
  auto wrong = StateStore::Open(dir_, options);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kCorruption) << wrong.status().ToString();
  EXPECT_NE(wrong.status().message().find("intents.2"), std::string::npos)
      << wrong.status().ToString();
}

TEST_F(ExpiryIndexTest, AnOlderStateFormatIsRefusedWithAClearError) {
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {{"default", rocksdb::ColumnFamilyOptions()},
                                                        {"meta", rocksdb::ColumnFamilyOptions()}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir_, cfs, &handles, &raw).ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[1], "format", "lattice-state 4").ok());
    for (auto* h : handles) {
      (void)raw->DestroyColumnFamilyHandle(h);
    }
    (void)raw->Close();
    delete raw;
  }
  const std::string expected = "'" + dir_ +
                               "' has state format 'lattice-state 4'; this lattice reads "
                               "'lattice-state 5' only: replay its recordings into a new state "
                               "directory";
  auto store = StateStore::Open(dir_, StoreOptions{});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.status().message(), expected);
  auto reader = StateReader::Open(dir_);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().message(), expected);
}

// The change log (format 1, docs/state-layout.md) names the state nodes a commit puts; deletions
// (an erased subtree's nodes, an evicted subtree) are not logged: the reader reports an erase from
// the tombstone put at the erased path, and skips 'D' entries (which older directories hold).
TEST_F(ExpiryIndexTest, TheChangeLogNamesOnlyTheNodesACommitPuts) {
  auto store = Open();
  Apply(*store, Env("b", 1, 0, R"({"intents":{"i1":{"host":"h"}},"jobs":{"1":{"a":1,"b":2}}})"));
  ASSERT_TRUE(store->Commit().ok());
  // Erase jobs.1 and let intents.i1 be evicted (due at 10,000).
  Apply(*store, Env("b", 2, 20'000, R"({"jobs":{"1":null},"x":1})"));
  store->AdvanceWatermark(20'000);
  EXPECT_EQ(store->counts().evicted, 1u);
  CommitAndClose(store);

  RawDb raw(dir_);
  EXPECT_TRUE(raw.Keys("state", Enc({"jobs", "1", "a"})).empty()) << "deleted by commit 2";
  EXPECT_TRUE(raw.Keys("state", Enc({"intents", "i1"})).empty()) << "evicted by commit 2";
  std::vector<std::vector<std::string>> logged;  // per commit, the keys in order
  std::unique_ptr<rocksdb::Iterator> it(
      raw.db().NewIterator(rocksdb::ReadOptions(), raw.cf("changes")));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string rec = it->value().ToString();
    ASSERT_FALSE(rec.empty());
    ASSERT_EQ(rec[0], '\x01') << "format 1";
    logged.emplace_back();
    for (std::size_t i = 1; i < rec.size();) {
      ASSERT_EQ(rec[i], 'P') << "a deletion in the change log of commit " << logged.size();
      const std::size_t len = static_cast<unsigned char>(rec[i + 1]);  // one-byte varints here
      ASSERT_LT(len, 128u);
      logged.back().push_back(rec.substr(i + 2, len));
      i += 2 + len;
    }
  }
  ASSERT_TRUE(it->status().ok());
  ASSERT_EQ(logged.size(), 2u);
  EXPECT_EQ(logged[1], (std::vector<std::string>{Enc({"jobs"}), Enc({"jobs", "1"}), Enc({"x"})}))
      << "jobs (its stamps), the tombstone put at jobs.1 and the new x";
}

}  // namespace
}  // namespace lattice::crdt
