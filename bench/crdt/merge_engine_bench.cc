// Parse and merge with persistence off: what one merge thread can do when storage is free. This is
// figure (b) of bench/replay.sh, compared there with the simdjson baseline of
// bench/core/shard_decoder_bench.cc on the same recording.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <limits>
#include <memory>

#include "bench_recording.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/merge_engine.h"
#include "lattice/crdt/ttl.h"

namespace lattice::bench {
namespace {

// As the replayer does between batches: the watermark follows the newest ts seen.
constexpr std::size_t kWatermarkEvery = 65536;

// Decodes every line and applies it to a fresh MergeEngine, one thread. Creating and destroying
// the engine is not timed; the final AdvanceWatermark is.
void ParseAndMerge(benchmark::State& state, const crdt::EngineOptions& options) {
  const Recording& rec = BenchRecording();
  core::ShardDecoder decoder;
  std::size_t nodes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto engine = std::make_unique<crdt::MergeEngine>(options);
    state.ResumeTiming();
    std::int64_t max_ts = std::numeric_limits<std::int64_t>::min();
    std::size_t since_watermark = 0;
    for (std::string_view line : rec.lines) {
      auto shard = decoder.DecodeEnvelope(line, /*padded=*/true);
      if (!shard.ok()) {
        state.SkipWithError(shard.status().ToString().c_str());
        return;
      }
      max_ts = std::max(max_ts, (*shard)->ts);
      crdt::ApplyResult r = engine->Apply(**shard);
      benchmark::DoNotOptimize(r.outcome);
      if (++since_watermark == kWatermarkEvery) {
        engine->AdvanceWatermark(max_ts);
        since_watermark = 0;
      }
    }
    engine->AdvanceWatermark(max_ts);
    state.PauseTiming();
    const crdt::ApplyCounts& counts = engine->counts();
    if (counts.applied + counts.duplicates != rec.lines.size()) {
      state.SkipWithError("some shards were not applied (conflict, late or invalid)");
      return;
    }
    nodes = engine->node_count();
    engine.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rec.lines.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rec.bytes));
  state.counters["shards"] = static_cast<double>(rec.lines.size());
  state.counters["nodes"] = static_cast<double>(nodes);
  state.SetLabel(rec.origin);
}

// Figure (b).
void BM_MergeEngineParseAndMerge(benchmark::State& state) { ParseAndMerge(state, {}); }
BENCHMARK(BM_MergeEngineParseAndMerge)->Unit(benchmark::kMillisecond);

// The same with the TTL rules of bench/ttl_speed.sh (every intent, node message and scrape domain
// tracked): the merge-side cost of TTL bookkeeping (issue 3: within 20%), without RocksDB.
void BM_MergeEngineParseAndMergeWithTtl(benchmark::State& state) {
  crdt::EngineOptions options;
  for (const char* text : {"intents.*=1h", "nodes.*.msg=10m", "scrape.*=1h"}) {
    auto rule = crdt::ParseTtlRule(text);
    if (!rule.ok()) {
      state.SkipWithError(rule.status().ToString().c_str());
      return;
    }
    options.ttl.push_back(*rule);
  }
  ParseAndMerge(state, options);
}
BENCHMARK(BM_MergeEngineParseAndMergeWithTtl)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lattice::bench

BENCHMARK_MAIN();
