// A deterministic synthetic recording, shaped like a scraping cluster: counters per domain, node
// statuses, intents resolved by blades and erased when old. Used to load-test a deployment
// (`lattice gen`) and by the tests and benchmarks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace lattice::ingest {

struct SyntheticOptions {
  std::uint64_t shards = 1000;
  std::uint32_t blades = 16;
  std::uint64_t seed = 1;
  /// Plain numbers instead of $inc (running totals set as values) and no erasures, so the
  /// recording's merge equals jq's `reduce inputs as $s ({}; . * $s.shard)`.
  bool plain = false;
  std::int64_t start_ts = 1732350000000;
  std::int64_t step_ms = 1;  // ts advances this much per shard
  std::uint32_t domains = 50;
  std::uint32_t intent_window = 1000;  // live intents kept before the oldest is erased
  /// Churn (`lattice gen --churn`): `blades` is the number of blades active at a time; every
  /// `churn_every` shards the oldest active blade falls silent for good and a new one appears, and
  /// intents are never erased (old ones just go idle). Without TTL rules the state of such a
  /// recording grows without bound; with them it stays flat (bench/ttl_memory.sh).
  bool churn = false;
  std::uint64_t churn_every = 10000;
};

/// Generates the recording line by line (each line an NDJSON envelope without the newline).
/// The mix: ~40% counter shards (scrape.<domain>.{tries,item_collected}), ~30% node status
/// shards (nodes.<blade>.{status,job,msg}), ~20% intent resolutions
/// (intents.<id>.{host,resolution.<blade>}), ~10% erasures of the oldest live intent.
/// The same options always produce the same bytes.
void GenerateSynthetic(const SyntheticOptions& options,
                       const std::function<void(std::string_view line)>& emit);

}  // namespace lattice::ingest
