// For scale: raw RocksDB writes of every leaf of every shard, with no merge and no coalescing.
// Each leaf write of the recording becomes one Put (a Delete for an erase) keyed by its dotted
// path (counters: path + NUL + blade), in one WriteBatch per 65,536 shards with the WAL on and no
// fsync, as `lattice replay` commits. Only DB::Write is timed: decoding and building the batch
// are not, so this is what RocksDB alone costs for that write stream. The options mirror
// crdt/src/state_store.cc (DbOptions); RocksDB is linked here directly because it is the
// baseline, as simdjson is in shard_decoder_bench.cc.
#include <benchmark/benchmark.h>
#include <rocksdb/db.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench_recording.h"
#include "lattice/core/shard.h"

namespace lattice::bench {
namespace {

constexpr std::size_t kBatchShards = 65536;

// The state store's own options (crdt/src/state_store.cc, DbOptions()), copied because they are
// private to crdt/ and RocksDB types stay out of its public headers. Keep the two in step, or this
// baseline stops measuring the same database.
rocksdb::Options DbOptions() {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.IncreaseParallelism(2);
  o.max_background_jobs = 2;
  o.write_buffer_size = 128 << 20;  // the store without a memory budget
  o.max_write_buffer_number = 3;
  o.compression = rocksdb::kLZ4Compression;
  o.bottommost_compression = rocksdb::kZSTD;
  o.max_open_files = 256;
  o.max_total_wal_size = 256 << 20;  // StoreOptions::max_wal_bytes
  o.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
  o.allow_concurrent_memtable_write = false;
  return o;
}

// Appends one Put/Delete per leaf of `shard` to `batch`; `path` and `key` are scratch.
void AddLeaves(const core::Shard& shard, rocksdb::WriteBatch& batch,
               std::vector<std::string_view>& path, std::string& key) {
  path.clear();
  for (const core::BodyEntry& e : shard.entries) {
    path.resize(e.depth - 1);
    path.push_back(e.key);
    if (e.kind == core::OpKind::kObject) {
      continue;
    }
    key.clear();
    for (std::size_t i = 0; i < path.size(); ++i) {
      if (i > 0) {
        key.push_back('.');
      }
      key.append(path[i]);
    }
    switch (e.kind) {
      case core::OpKind::kSet:
        (void)batch.Put(key, rocksdb::Slice(e.value.data(), e.value.size()));
        break;
      case core::OpKind::kErase:
        (void)batch.Delete(key);
        break;
      default: {
        key.push_back('\0');
        key.append(shard.blade);
        char value[8];
        std::memcpy(value, e.number.is_int ? static_cast<const void*>(&e.number.i)
                                           : static_cast<const void*>(&e.number.d),
                    sizeof(value));
        (void)batch.Put(key, rocksdb::Slice(value, sizeof(value)));
        break;
      }
    }
  }
}

void BM_RocksDbPutEveryLeaf(benchmark::State& state) {
  const Recording& rec = BenchRecording();
  core::ShardDecoder decoder;
  std::vector<std::string_view> path;
  std::string key;
  std::uint64_t leaves = 0;
  const std::filesystem::path base = std::filesystem::temp_directory_path();
  for (auto _ : state) {
    state.PauseTiming();
    std::string dir = (base / "lattice-rocksdb-bench-XXXXXX").string();
    if (::mkdtemp(dir.data()) == nullptr) {
      state.SkipWithError("mkdtemp failed");
      return;
    }
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(DbOptions(), dir, &raw);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteOptions wo;  // WAL on, no fsync: as the state store by default
    leaves = 0;
    for (std::size_t begin = 0; begin < rec.lines.size(); begin += kBatchShards) {
      rocksdb::WriteBatch batch;
      const std::size_t end = std::min(rec.lines.size(), begin + kBatchShards);
      for (std::size_t i = begin; i < end; ++i) {
        auto shard = decoder.DecodeEnvelope(rec.lines[i], /*padded=*/true);
        if (!shard.ok()) {
          state.SkipWithError(shard.status().ToString().c_str());
          return;
        }
        AddLeaves(**shard, batch, path, key);
      }
      leaves += batch.Count();
      state.ResumeTiming();
      s = db->Write(wo, &batch);
      state.PauseTiming();
      if (!s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        return;
      }
    }
    db.reset();
    std::filesystem::remove_all(dir);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rec.lines.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rec.bytes));
  state.counters["shards"] = static_cast<double>(rec.lines.size());
  state.counters["leaves"] = static_cast<double>(leaves);
  state.SetLabel(rec.origin);
}
BENCHMARK(BM_RocksDbPutEveryLeaf)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace lattice::bench

BENCHMARK_MAIN();
