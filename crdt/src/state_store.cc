// StateStore: the engine plus RocksDB, with one WriteBatch per commit and a background writer.
#include "lattice/crdt/state_store.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <pthread.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include "batch_rep.h"
#include "change_set.h"
#include "engine.h"
#include "layout.h"
#include "records.h"

namespace lattice::crdt {

using internal::FromRocks;

namespace {

/// The change-log record of one commit (the change log's format 1): the format byte, then per
/// node key 'P' | 'D', varint length, key. This writer logs the nodes it puts only ('P'): the
/// reader reports a change from a node's current record, and a deletion's only reader skipped it
/// (an erase is a put of a tombstone; the deletes are tombstones collected, nodes under an erased
/// or evicted subtree, and nodes that died after a commit wrote them). Directories written before
/// have 'D' entries too, and readers still skip them. Reused across commits (a full-size buffer,
/// like BatchRep's). Thread safety: none.
class ChangeLogRecord {
 public:
  void Start() {
    if (buf_.size() < 4096) {
      buf_.resize(4096);
    }
    buf_[0] = static_cast<char>(internal::kChangeLogKeys);
    n_ = 1;
  }
  void Add(char op, std::string_view key) {
    if (buf_.size() - n_ < 1 + internal::kMaxVarint + key.size()) {
      buf_.resize(std::max(2 * buf_.size(), n_ + 1 + internal::kMaxVarint + key.size()));
    }
    char* p = buf_.data() + n_;
    *p++ = op;
    p = internal::PutVarintTo(p, key.size());
    if (!key.empty()) {
      std::memcpy(p, key.data(), key.size());
    }
    n_ = static_cast<std::size_t>(p + key.size() - buf_.data());
  }
  std::string_view view() const { return std::string_view(buf_.data(), n_); }

 private:
  std::string buf_;
  std::size_t n_ = 0;
};

/// The column families of a state directory with their BatchRep tags.
struct Families {
  internal::BatchTags state, counters, history, meta, changes, expiry;
};

class BatchSink final : public internal::RecordSink {
 public:
  BatchSink(internal::BatchRep& rep, const Families& cf) : rep_(rep), cf_(cf) {}
  void PutNode(std::string_view key, std::string_view value) override {
    rep_.Put(cf_.state, key, value);
    if (log_ != nullptr) {
      log_->Add('P', key);
    }
  }
  void DeleteNode(std::string_view key) override { rep_.Delete(cf_.state, key); }
  void PutSlot(std::string_view key, std::string_view value) override {
    rep_.Put(cf_.counters, key, value);
  }
  void DeleteSlot(std::string_view key) override { rep_.Delete(cf_.counters, key); }
  void PutHistory(std::string_view key, std::string_view value) override {
    rep_.Put(cf_.history, key, value);
  }
  void DeleteHistory(std::string_view key) override { rep_.Delete(cf_.history, key); }
  void PutSource(std::uint32_t id, std::string_view name) override {
    rep_.Put(cf_.meta, internal::IdKey(internal::kSourcePrefix, id), name);
  }
  void PutBlade(std::uint32_t id, std::string_view value) override {
    rep_.Put(cf_.meta, internal::BladeKey(id), value);
  }
  void DeleteSubtree(std::string_view key) override {
    // [key, key with its last byte + 1): an encoded path ends with 00 01, so the end is the same
    // path ending with 00 02, and the range is exactly the keys that start with `key`.
    std::string end(key);
    end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
    for (const internal::BatchTags* cf : {&cf_.state, &cf_.counters, &cf_.history}) {
      rep_.DeleteRange(*cf, key, end);
    }
  }
  void PutExpiry(std::int64_t due, std::string_view key) override {
    rep_.Put(cf_.expiry, internal::ExpiryKey(due, key), std::string_view());
  }
  void DeleteExpiry(std::int64_t due, std::string_view key) override {
    rep_.Delete(cf_.expiry, internal::ExpiryKey(due, key));
  }

  /// Collects the keys of the nodes this commit puts into `log`, if set.
  void set_change_log(ChangeLogRecord* log) { log_ = log; }

 private:
  ChangeLogRecord* log_ = nullptr;
  internal::BatchRep& rep_;
  const Families& cf_;
};

/// Lazy open: the length of the prefix of an encoded key (a node, slot or history key) that
/// encodes its first `depth` path segments, or 0 if its path has `depth` segments or fewer.
std::size_t PagePrefixLength(std::string_view key, std::uint32_t depth) {
  std::uint32_t seen = 0;
  for (std::size_t i = 0; i + 1 < key.size(); ++i) {
    if (key[i] != '\0') {
      continue;
    }
    const auto next = static_cast<unsigned char>(key[i + 1]);
    if (next == 0x01) {
      if (seen == depth) {
        break;
      }
      if (++seen == depth) {
        // A segment follows if the key goes on with anything but a slot marker.
        if (i + 2 < key.size() && !(key[i + 2] == '\0' && i + 3 < key.size() &&
                                    static_cast<unsigned char>(key[i + 3]) == 0x02)) {
          return i + 2;
        }
        return 0;
      }
      ++i;
    } else if (next == 0xFF) {
      ++i;  // an escaped 00 inside a key
    } else {
      return 0;  // the slot marker 00 02: the path ended before `depth`
    }
  }
  return 0;
}

/// The TTL rules as the `ttl` meta record holds them (the index's keys depend on them): per rule
/// varint key count, each key (varint length, bytes), varint zigzag(duration). Empty = no rules.
std::string RulesRecord(const std::vector<TtlRule>& rules) {
  std::string out;
  for (const TtlRule& rule : rules) {
    internal::PutVarint(out, rule.pattern.size());
    for (const std::string& key : rule.pattern) {
      internal::PutVarint(out, key.size());
      out.append(key);
    }
    internal::PutVarint(out, internal::ZigZag(rule.duration_ms));
  }
  return out;
}

}  // namespace

struct StateStore::Impl final : internal::PageSource {
  StoreOptions options;
  internal::Engine engine;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* state_cf = nullptr;
  rocksdb::ColumnFamilyHandle* counters_cf = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;
  rocksdb::ColumnFamilyHandle* history_cf = nullptr;
  rocksdb::ColumnFamilyHandle* changes_cf = nullptr;
  rocksdb::ColumnFamilyHandle* expiry_cf = nullptr;
  // Opened with other TTL rules than the stored index was built for: the next commit deletes
  // these index keys and records the current rules (the engine rewrites every entry).
  bool rebuild_index = false;
  std::vector<std::string> stale_index_keys;
  Families families;  // the column families' BatchRep tags
  // The last commit's changes (Engine::CollectChanges). The writer turns them into the batch's
  // records (BuildBatch) while the merge thread merges the next batch; `changes_busy` (guarded
  // by mu) is set until it has, and the merge thread waits for that before it frees their dead
  // nodes and collects the next (Commit).
  internal::ChangeSet changes;
  bool changes_busy = false;
  // Used by whichever thread builds batches (the writer, or the committing thread without
  // pipelining): the batch and change-log record being built, scratch for keys and values.
  internal::BatchRep rep;
  ChangeLogRecord change_log;
  std::string key_scratch, value_scratch;
  // Sizes of the change-log entries written since open (oldest first), their sum, and the bytes
  // the log holds since the last trim (entries from before open are trimmed by the first trim).
  // Kept by the thread that builds batches.
  std::deque<std::pair<std::uint64_t, std::size_t>> log_sizes;
  std::size_t log_bytes = 0;
  std::size_t log_bytes_at_trim = 0;
  bool log_trim_due = false;
  std::map<std::string, SourcePosition> positions;  // committed (or in flight)
  std::map<std::string, SourcePosition> staged_positions;  // for the next commit
  std::uint64_t commits_made = 0;  // Commit() calls that handed a batch over

  // The background writer: one batch being written, at most one waiting. Batches are written in
  // order, and after a failed write none is written any more: a later batch holds positions past
  // the failed one's state, so writing it would put positions ahead of durable state.
  mutable std::mutex mu;
  std::condition_variable cv;
  struct Pending {
    std::uint64_t commit = 0;               // its number in commits_made
    std::uint64_t engine_commit = 0;        // the engine's commit number (history chunks)
    std::uint64_t log_commit = 0;           // the change-log key (the engine's commits())
    std::vector<SourcePosition> positions;  // the positions it holds
    std::string clock;                      // the clock record
    // Opened with other TTL rules: the index keys to delete first and the rules to record.
    bool rebuild_index = false;
    std::vector<std::string> stale_index_keys;
    std::string rules;
  };
  std::optional<Pending> pending;
  // Buffers of written batches, recycled (BatchRep::Recycle) for the next ones: their pages
  // stay touched, so building a batch does not page-fault. At most three are in use.
  std::vector<std::string> spares;
  bool writing = false;
  bool stop = false;
  Status write_error;                 // sticky: the first failed write
  std::uint64_t commits_durable = 0;  // guarded by mu
  // Engine commit numbers (history chunk numbers) below this are written. Guarded by mu.
  std::uint64_t engine_durable_below = 0;
  std::map<std::string, SourcePosition> durable_positions;  // guarded by mu
  std::thread writer;

  explicit Impl(StoreOptions o) : options(o), engine(o.engine, /*persistent=*/true) {}

  rocksdb::WriteOptions WriteOpts() const {
    rocksdb::WriteOptions wo;
    wo.sync = options.sync;
    wo.disableWAL = options.disable_wal;
    return wo;
  }

  // The WriteBatch bytes of one commit: `changes`' records, then its change-log entry, its
  // positions and the clock, in `buffer` (a recycled one, best). On the thread that writes.
  std::string BuildBatch(const Pending& job, std::string buffer) {
    internal::BatchRep& batch = rep;
    batch.Start(std::move(buffer));
    BatchSink sink(batch, families);
    const Families& cf = families;
    if (job.rebuild_index) {
      // Before the engine's puts: an entry it writes again may have the same key.
      for (const std::string& key : job.stale_index_keys) {
        batch.Delete(cf.expiry, key);
      }
      if (job.rules.empty()) {
        batch.Delete(cf.meta, internal::kTtlRulesKey);
      } else {
        batch.Put(cf.meta, internal::kTtlRulesKey, job.rules);
      }
    }
    if (options.change_log) {
      change_log.Start();
      sink.set_change_log(&change_log);
    }
    internal::WriteChanges(changes, sink, key_scratch, value_scratch);
    if (options.change_log) {
      // Every commit gets an entry (possibly empty), so a reader can tell a trimmed log from a
      // commit that changed nothing. The log keeps the last kChangeLogCommits commits and at
      // most options.change_log_max_bytes of them (a reader further behind resyncs from a
      // snapshot); trimming is a range delete from commit 0 (which also covers entries left
      // from before a reopen), issued every 64 commits or as soon as the kept bytes pass twice
      // the bound.
      const std::uint64_t commit = job.log_commit;
      const std::string_view log = change_log.view();
      batch.Put(cf.changes, internal::CommitKey(commit), log);
      log_sizes.emplace_back(commit, log.size());
      log_bytes += log.size();
      while (log_sizes.size() > 1 && (log_sizes.size() > internal::kChangeLogCommits ||
                                      log_bytes > options.change_log_max_bytes)) {
        log_bytes -= log_sizes.front().second;
        log_sizes.pop_front();
        log_trim_due = true;
      }
      const bool far_over = log_bytes_at_trim > 2 * options.change_log_max_bytes;
      if (log_trim_due && (commit % 64 == 0 || far_over)) {
        batch.DeleteRange(cf.changes, internal::CommitKey(0),
                          internal::CommitKey(log_sizes.front().first));
        log_trim_due = false;
        log_bytes_at_trim = log_bytes;
      } else {
        log_bytes_at_trim += log.size();
      }
    }
    std::string value;
    for (const SourcePosition& p : job.positions) {
      value.clear();
      internal::PutVarint(value, p.offset);
      internal::PutVarint(value, p.line);
      batch.Put(cf.meta, std::string(1, internal::kPositionPrefix) + p.source, value);
    }
    batch.Put(cf.meta, internal::kClockKey, job.clock);
    return batch.Finish();
  }

  // Builds and writes one batch (on the writer thread, or the caller's without pipelining)
  // unless an earlier write failed, and records what became durable. REQUIRES: `lock` holds mu.
  void WriteLocked(std::unique_lock<std::mutex>& lock, Pending job) {
    std::string buffer;
    if (!spares.empty()) {
      buffer = std::move(spares.back());
      spares.pop_back();
    }
    if (write_error.ok()) {
      writing = true;
      lock.unlock();
      std::string bytes = BuildBatch(job, std::move(buffer));
      lock.lock();
      changes_busy = false;  // built: the merge thread may release the changes
      cv.notify_all();
      lock.unlock();
      rocksdb::WriteBatch batch(std::move(bytes));
      rocksdb::Status s = db->Write(WriteOpts(), &batch);
      // Take the buffer back (the batch is not used again; its rep is a plain member, so the
      // const_cast is well-defined) and ready it for reuse here, off the committing thread.
      buffer = std::move(const_cast<std::string&>(batch.Data()));
      internal::BatchRep::Recycle(buffer);
      lock.lock();
      writing = false;
      if (s.ok()) {
        commits_durable = job.commit;
        engine_durable_below = job.engine_commit + 1;
        for (SourcePosition& p : job.positions) {
          durable_positions[p.source] = std::move(p);
        }
      } else {
        write_error = FromRocks(s, "writing the state");
      }
    } else {
      changes_busy = false;  // never written: nothing reads them
    }
    if (spares.size() < 3 && buffer.capacity() > 0) {
      spares.push_back(std::move(buffer));
    }
    cv.notify_all();
  }

  void WriterLoop() {
    pthread_setname_np(pthread_self(), "lattice-writer");  // for top -H, perf, /proc/*/task
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stop || pending.has_value(); });
      if (!pending.has_value() && stop) {
        return;
      }
      Pending job = std::move(*pending);
      pending.reset();
      WriteLocked(lock, std::move(job));
    }
  }

  // Paging: the records strictly under `prefix`, from the writer's own database (all of them are
  // written: only clean pages leave memory).
  Status LoadPage(std::string_view prefix, internal::Engine& eng) override {
    std::string end(prefix);
    end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
    const rocksdb::Slice upper(end);
    for (int pass = 0; pass < 3; ++pass) {
      rocksdb::ColumnFamilyHandle* cf = pass == 0 ? state_cf : pass == 1 ? counters_cf : history_cf;
      rocksdb::ReadOptions ro;
      ro.iterate_upper_bound = &upper;
      ro.fill_cache = true;
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf));
      for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
        const std::string_view key(it->key().data(), it->key().size());
        const std::string_view value(it->value().data(), it->value().size());
        if (pass == 0) {
          if (key.size() == prefix.size()) {
            continue;  // the page root's own record: it stayed in memory (and may be newer)
          }
          LATTICE_RETURN_IF_ERROR(eng.LoadNode(key, value));
        } else if (pass == 1) {
          LATTICE_RETURN_IF_ERROR(eng.LoadSlot(key, value));
        } else {
          LATTICE_RETURN_IF_ERROR(eng.LoadHistory(key, value));
        }
      }
      LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "reading a paged-out subtree"));
    }
    return Status::Ok();
  }

  Status WaitIdle() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !pending.has_value() && !writing; });
    return write_error;
  }

  ~Impl() {
    if (writer.joinable()) {
      {
        std::lock_guard lock(mu);
        stop = true;
      }
      cv.notify_all();
      writer.join();
    }
    for (auto* h : handles) {
      if (db) {
        (void)db->DestroyColumnFamilyHandle(h);
      }
    }
    if (db) {
      (void)db->Close();
    }
  }
};

namespace {

// A whole number of bytes with an optional unit (ParseByteSize); nullopt if `text` is not one.
std::optional<std::uint64_t> ByteSize(std::string_view text) {
  std::size_t digits = 0;
  std::uint64_t n = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    if (__builtin_mul_overflow(n, std::uint64_t{10}, &n) ||
        __builtin_add_overflow(n, static_cast<std::uint64_t>(text[digits] - '0'), &n)) {
      return std::nullopt;
    }
    ++digits;
  }
  if (digits == 0) {
    return std::nullopt;
  }
  static constexpr std::pair<std::string_view, std::uint64_t> kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KiB", std::uint64_t{1} << 10},
      {"MiB", std::uint64_t{1} << 20},
      {"GiB", std::uint64_t{1} << 30},
      {"TiB", std::uint64_t{1} << 40},
      {"KB", 1000},
      {"MB", 1000 * 1000},
      {"GB", 1000 * 1000 * 1000},
      {"TB", std::uint64_t{1000} * 1000 * 1000 * 1000},
  };
  const std::string_view unit = text.substr(digits);
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) {
      std::uint64_t bytes;
      if (__builtin_mul_overflow(n, factor, &bytes)) {
        return std::nullopt;
      }
      return bytes;
    }
  }
  return std::nullopt;
}

}  // namespace

Result<std::uint64_t> ParseByteSize(std::string_view text) {
  const std::optional<std::uint64_t> bytes = ByteSize(text);
  if (!bytes) {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a size: a whole number of bytes with an optional "
                                   "unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. 256MiB, "
                                   "2GiB)");
  }
  return *bytes;
}

Result<std::optional<std::uint64_t>> ParseMemoryBudget(std::string_view text) {
  if (text.empty() || text == "off") {
    return std::optional<std::uint64_t>();
  }
  const std::optional<std::uint64_t> bytes = ByteSize(text);
  if (!bytes) {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a memory size: a whole number of bytes with an "
                                   "optional unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB "
                                   "(e.g. 512MiB, 2GiB), or off");
  }
  return bytes;
}

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {}

StateStore::~StateStore() {
  if (impl_) {
    (void)impl_->WaitIdle();
  }
}

namespace {

// bench/crdt/rocksdb_put_bench.cc copies these for its raw-RocksDB baseline: keep them in step.
rocksdb::Options DbOptions(bool paging, std::uint64_t max_wal_bytes) {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.IncreaseParallelism(2);
  o.max_background_jobs = 2;
  o.write_buffer_size = 64 << 20;
  o.max_write_buffer_number = 3;
  o.compression = rocksdb::kLZ4Compression;
  o.bottommost_compression = rocksdb::kZSTD;
  o.max_open_files = 256;
  // A log file is deleted only once every family with records in it has flushed, and `meta`
  // (positions and clock, a few hundred bytes per commit) never fills a write buffer: without
  // a bound the WAL of a long run grows to 4x all the write buffers (~10 GiB) and an open
  // replays all of it. Past the bound RocksDB flushes the families that pin the oldest file.
  o.max_total_wal_size = max_wal_bytes;
  // The aggregator never reads its own memtable after loading (readers open the directory
  // separately), so an append-only vector memtable, sorted once at flush, beats the skiplist.
  // With paging the writer does read its memtable (a page read back may have been written a
  // moment ago), and the vector memtable's iterator sorts a copy of it: keep the skiplist then.
  if (!paging) {
    o.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
    o.allow_concurrent_memtable_write = false;
    // Flushing a vector memtable sorts it: the one flush of a 2 M-shard catch-up (its 64 MiB
    // `state` memtable, ~1 M records, most of them overwritten or deleted again a few commits
    // later: the SST kept 5.6 MB of 59 MB) cost ~0.6 s of CPU. 128 MiB holds such a catch-up
    // (~100 MiB of `state` records) without one; a RocksDB secondary following the directory
    // (the observer) holds up to as much in its own memtables.
    o.write_buffer_size = 128 << 20;
  }
  return o;
}

}  // namespace

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir, StoreOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::InvalidArgument("cannot create state directory '" + dir + "': " + ec.message());
  }
  std::unique_ptr<StateStore> store(new StateStore(dir));
  store->impl_ = std::make_unique<Impl>(options);
  Impl& im = *store->impl_;

  rocksdb::Options db_options = DbOptions(options.memory_budget.has_value(), options.max_wal_bytes);
  rocksdb::ColumnFamilyOptions cf_options(db_options);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {std::string(internal::kStateCf), cf_options},
      {std::string(internal::kCountersCf), cf_options},
      {std::string(internal::kMetaCf), cf_options},
      {std::string(internal::kHistoryCf), cf_options},
      {std::string(internal::kChangesCf), cf_options},
      {std::string(internal::kExpiryCf), cf_options},
  };
  rocksdb::DB* raw = nullptr;
  std::vector<std::string> existing;
  if (!rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    // A new database: open it with the default family, then create the others in one call.
    // DB::Open creates missing families one by one, and each writes and syncs a new OPTIONS
    // file and the directory (7 in all: ~40 M instructions and ~40 fsyncs; now 2).
    LATTICE_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::Open(db_options, dir, {cfs[0]}, &im.handles, &raw),
                  "opening '" + dir + "'"));
    im.db.reset(raw);
    std::vector<std::string> names;
    for (std::size_t i = 1; i < cfs.size(); ++i) {
      names.push_back(cfs[i].name);
    }
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    const rocksdb::Status s = im.db->CreateColumnFamilies(cf_options, names, &created);
    im.handles.insert(im.handles.end(), created.begin(), created.end());
    LATTICE_RETURN_IF_ERROR(FromRocks(s, "creating the column families of '" + dir + "'"));
  } else {
    LATTICE_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db_options, dir, cfs, &im.handles, &raw),
                                      "opening '" + dir + "'"));
    im.db.reset(raw);
  }
  im.state_cf = im.handles[1];
  im.counters_cf = im.handles[2];
  im.meta_cf = im.handles[3];
  im.history_cf = im.handles[4];
  im.changes_cf = im.handles[5];
  im.expiry_cf = im.handles[6];
  for (auto [tags, handle] : {std::pair{&im.families.state, im.state_cf},
                              {&im.families.counters, im.counters_cf},
                              {&im.families.history, im.history_cf},
                              {&im.families.meta, im.meta_cf},
                              {&im.families.changes, im.changes_cf},
                              {&im.families.expiry, im.expiry_cf}}) {
    LATTICE_ASSIGN_OR_RETURN(*tags, internal::BatchTags::Probe(handle));
  }

  // Check or write the format marker.
  std::string format;
  rocksdb::Status s = im.db->Get(rocksdb::ReadOptions(), im.meta_cf, internal::kFormatKey, &format);
  if (s.IsNotFound()) {
    LATTICE_RETURN_IF_ERROR(FromRocks(im.db->Put(rocksdb::WriteOptions(), im.meta_cf,
                                                 internal::kFormatKey, internal::kFormatValue),
                                      "writing the format marker"));
  } else if (!s.ok()) {
    return FromRocks(s, "reading the format marker");
  } else if (format != internal::kFormatValue) {
    return internal::WrongFormat(dir, format);
  }

  // Load: blades, clocks and positions from meta; then nodes in key order; then slots; then the
  // TTL index, if it was built for these rules.
  std::string stored_rules;
  {
    std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(rocksdb::ReadOptions(), im.meta_cf));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      const std::string_view value(it->value().data(), it->value().size());
      if (key.size() == 5 && key[0] == internal::kBladePrefix) {
        std::uint32_t id = 0;
        for (int i = 1; i <= 4; ++i) {
          id = (id << 8) | static_cast<std::uint8_t>(key[static_cast<std::size_t>(i)]);
        }
        LATTICE_RETURN_IF_ERROR(im.engine.LoadBlade(id, value));
      } else if (key.size() == 5 && key[0] == internal::kSourcePrefix) {
        std::uint32_t id = 0;
        for (int i = 1; i <= 4; ++i) {
          id = (id << 8) | static_cast<std::uint8_t>(key[static_cast<std::size_t>(i)]);
        }
        LATTICE_RETURN_IF_ERROR(im.engine.LoadSource(id, value));
      } else if (!key.empty() && key[0] == internal::kPositionPrefix) {
        internal::RecordReader r(value);
        SourcePosition p;
        p.source = std::string(key.substr(1));
        if (!r.Varint(p.offset) || !r.Varint(p.line)) {
          return Status::Corruption("malformed position record for '" + p.source + "'");
        }
        im.positions[p.source] = p;
        im.durable_positions[p.source] = p;
      } else if (key == internal::kClockKey) {
        internal::RecordReader r(value);
        std::uint64_t wm, horizon, commits, max_ts;
        if (!r.Varint(wm) || !r.Varint(horizon) || !r.Varint(commits) || !r.Varint(max_ts)) {
          return Status::Corruption("malformed clock record");
        }
        im.engine.LoadClocks(internal::UnZigZag(wm), internal::UnZigZag(horizon), commits,
                             internal::UnZigZag(max_ts));
      } else if (key == internal::kTtlRulesKey) {
        stored_rules = std::string(value);
      }
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "reading meta"));
  }
  im.rebuild_index = stored_rules != RulesRecord(options.engine.ttl);
  // Lazy open (with a memory budget, and an index built for these rules, which finds the pages
  // that hold TTL nodes): records below the page depth stay on disk; the object at the page depth
  // is a stub whose subtree is read back when needed (or by LoadExpiry, below).
  const bool lazy = options.memory_budget.has_value() && !im.rebuild_index;
  const std::uint32_t page_depth = std::max<std::uint32_t>(1, options.page_depth);
  if (lazy) {
    im.engine.EnablePaging(&im, *options.memory_budget, page_depth, /*opening=*/true);
  }
  for (int pass = 0; pass < 3; ++pass) {
    rocksdb::ColumnFamilyHandle* cf = pass == 0   ? im.state_cf
                                      : pass == 1 ? im.counters_cf
                                                  : im.history_cf;
    std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(rocksdb::ReadOptions(), cf));
    std::string skip_to;
    for (it->SeekToFirst(); it->Valid();) {
      const std::string_view key(it->key().data(), it->key().size());
      const std::string_view value(it->value().data(), it->value().size());
      if (lazy) {
        if (const std::size_t len = PagePrefixLength(key, page_depth); len > 0) {
          // Below a page root: past the whole page (its key with the last byte + 1).
          skip_to.assign(key.substr(0, len));
          skip_to.back() = static_cast<char>(static_cast<unsigned char>(skip_to.back()) + 1);
          if (pass == 0) {
            LATTICE_RETURN_IF_ERROR(im.engine.LoadPagedStub(key.substr(0, len)));
          }
          it->Seek(skip_to);
          continue;
        }
      }
      LATTICE_RETURN_IF_ERROR(pass == 0   ? im.engine.LoadNode(key, value)
                              : pass == 1 ? im.engine.LoadSlot(key, value)
                                          : im.engine.LoadHistory(key, value));
      it->Next();
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "loading the state"));
  }
  {
    std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(rocksdb::ReadOptions(), im.expiry_cf));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      if (im.rebuild_index) {
        im.stale_index_keys.emplace_back(key);
      } else if (key.size() < 8) {
        return Status::Corruption("malformed expiry index key");
      } else {
        LATTICE_RETURN_IF_ERROR(im.engine.LoadExpiry(internal::ExpiryDue(key), key.substr(8)));
      }
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "loading the expiry index"));
  }
  LATTICE_RETURN_IF_ERROR(im.engine.page_error());  // a page LoadExpiry read back
  LATTICE_RETURN_IF_ERROR(im.engine.FinishLoad(!im.rebuild_index));
  im.engine_durable_below = im.engine.commits();
  if (lazy) {
    im.engine.FinishOpen();
  } else if (options.memory_budget) {
    im.engine.EnablePaging(&im, *options.memory_budget, options.page_depth);
  }
  if (options.pipelined) {
    im.writer = std::thread([&im] { im.WriterLoop(); });
  }
  return store;
}

ApplyResult StateStore::Apply(const core::Shard& shard, const ShardSource* source) {
  return impl_->engine.Apply(shard, source);
}

void StateStore::Prefetch(const core::Shard& shard) const { impl_->engine.Prefetch(shard); }
void StateStore::PrefetchChild(const core::Shard& shard) const {
  impl_->engine.PrefetchChild(shard);
}

std::optional<Provenance> StateStore::Blame(const core::Path& path) const {
  return impl_->engine.Blame(path);
}

void StateStore::AdvanceWatermark(std::int64_t watermark_ms) {
  impl_->engine.AdvanceWatermark(watermark_ms);
}

void StateStore::Close() { impl_->engine.Close(); }

void StateStore::SetChangeSink(ChangeSink sink) {
  impl_->engine.SetChangeFeed(std::move(sink));
}

void StateStore::StagePosition(const SourcePosition& position) {
  impl_->staged_positions[position.source] = position;
}

Status StateStore::Commit() {
  Impl& im = *impl_;
  if (!im.engine.page_error().ok()) {
    return im.engine.page_error();  // the state in memory is incomplete: write nothing
  }
  {
    // The writer reads the last commit's changes until it has built that batch, and the queue
    // holds one batch: wait for both (the writer is nearly always done long before).
    std::unique_lock lock(im.mu);
    im.cv.wait(lock, [&] { return !im.changes_busy && !im.pending.has_value(); });
  }
  im.engine.ReleaseChanges(im.changes);  // the last commit's dead nodes
  Impl::Pending job;
  if (im.rebuild_index) {
    job.rebuild_index = true;
    job.stale_index_keys = std::move(im.stale_index_keys);
    job.rules = RulesRecord(im.options.engine.ttl);
    im.stale_index_keys = {};
    im.rebuild_index = false;
  }
  im.engine.CollectChanges(im.changes);
  job.engine_commit = im.engine.commits() - 1;
  job.log_commit = im.engine.commits();
  job.positions.reserve(im.staged_positions.size());
  for (auto& [source, p] : im.staged_positions) {
    im.positions[source] = p;
    job.positions.push_back(p);
  }
  im.staged_positions.clear();
  internal::PutVarint(job.clock, internal::ZigZag(im.engine.watermark()));
  internal::PutVarint(job.clock, internal::ZigZag(im.engine.gc_horizon()));
  internal::PutVarint(job.clock, im.engine.commits());
  internal::PutVarint(job.clock, internal::ZigZag(im.engine.max_ts()));
  job.commit = ++im.commits_made;
  std::uint64_t durable_below = 0;
  {
    std::unique_lock lock(im.mu);
    if (!im.options.pipelined) {
      im.changes_busy = true;
      im.WriteLocked(lock, std::move(job));
    } else if (im.write_error.ok()) {
      im.changes_busy = true;
      im.pending = std::move(job);
      im.cv.notify_all();
    }
    if (!im.write_error.ok()) {
      return im.write_error;
    }
    if (im.engine.paging()) {
      // Paging out frees nodes: not while the writer may still read this commit's.
      im.cv.wait(lock, [&] { return !im.changes_busy; });
    }
    durable_below = im.engine_durable_below;
  }
  if (im.engine.paging()) {
    im.engine.SweepPages(durable_below);
  }
  return Status::Ok();
}

Status StateStore::Flush() { return impl_->WaitIdle(); }

Status StateStore::WaitForBackgroundWork() {
  // PauseBackgroundWork returns once no flush or compaction is scheduled or running.
  rocksdb::DB& db = *impl_->db;
  LATTICE_RETURN_IF_ERROR(FromRocks(db.PauseBackgroundWork(), "waiting for RocksDB's flushes"));
  return FromRocks(db.ContinueBackgroundWork(), "resuming RocksDB's flushes");
}

std::uint64_t StateStore::commits_made() const { return impl_->commits_made; }

std::uint64_t StateStore::commits_durable() const {
  std::lock_guard lock(impl_->mu);
  return impl_->commits_durable;
}

Status StateStore::WaitDurable(std::uint64_t commit) {
  Impl& im = *impl_;
  std::unique_lock lock(im.mu);
  im.cv.wait(lock, [&] { return im.commits_durable >= commit || !im.write_error.ok(); });
  return im.commits_durable >= commit ? Status::Ok() : im.write_error;
}

std::optional<SourcePosition> StateStore::DurablePosition(const std::string& source) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->durable_positions.find(source);
  if (it == impl_->durable_positions.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::optional<SourcePosition> StateStore::Position(const std::string& source) const {
  auto it = impl_->positions.find(source);
  if (it == impl_->positions.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::string StateStore::Dump() const { return impl_->engine.Dump(); }
std::optional<std::string> StateStore::Get(const core::Path& path) const {
  return impl_->engine.Get(path);
}
const ApplyCounts& StateStore::counts() const { return impl_->engine.counts(); }
StoreStats StateStore::Stats() const {
  StoreStats st;
  const Impl& im = *impl_;
  for (rocksdb::ColumnFamilyHandle* cf : im.handles) {
    std::uint64_t v = 0;
    if (im.db->GetIntProperty(cf, "rocksdb.estimate-live-data-size", &v)) {
      (cf == im.changes_cf ? st.change_log_bytes : st.live_data_bytes) += v;
    }
    if (im.db->GetIntProperty(cf, "rocksdb.total-sst-files-size", &v)) {
      st.sst_bytes += v;
    }
    if (im.db->GetIntProperty(cf, "rocksdb.cur-size-all-mem-tables", &v)) {
      st.memtable_bytes += v;
    }
  }
  rocksdb::VectorLogPtr wal_files;
  if (im.db->GetSortedWalFiles(wal_files).ok()) {
    for (const std::unique_ptr<rocksdb::LogFile>& file : wal_files) {
      st.wal_bytes += file->SizeFileBytes();
    }
  }
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long long size = 0, resident = 0;
    if (std::fscanf(f, "%llu %llu", &size, &resident) == 2) {
      st.rss_bytes = resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    }
    std::fclose(f);
  }
  st.nodes = impl_->engine.node_count();  // finishes deferred kills (the owner thread's)
  st.pages_out = im.engine.pages_out();
  st.pages_in = im.engine.pages_in();
  return st;
}

std::int64_t StateStore::watermark() const { return impl_->engine.watermark(); }
std::size_t StateStore::node_count() const { return impl_->engine.node_count(); }

}  // namespace lattice::crdt
