// The simulated cluster behind `lattice demo` (DESIGN.md §14): an orchestrator setting intents and
// submitting sequential jobs, scraper and spotter blades resolving the intents and counting items
// per domain with $inc (seed 003), worker nodes taking jobs through their five states, one of them
// dying and coming back (seed 002), a checker writing live checks, and the odd error. It produces
// shards (blade, body, event time); the caller sends them somewhere (an Emitter, a recording).
// DemoSummary reads a merged state back and says what it holds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::crdt {
class StateReader;
}

namespace lattice::processors {

struct DemoClusterOptions {
  std::uint32_t workers = 6;
  std::uint32_t scrapers = 3;
  std::uint32_t spotters = 2;
  std::uint32_t domains = 8;
  std::uint64_t seed = 1;
  /// The simulation advances in ticks of this many ms of event time.
  std::int64_t tick_ms = 250;
  /// A node whose heartbeat is older than this is dead (the checker uses it; so should readers).
  std::int64_t heartbeat_timeout_ms = 10'000;
  /// Worker `dying_worker` (1-based; 0: none) stops emitting `die_after_ms` after the start, stays
  /// silent for `dead_for_ms`, then restarts; this repeats every `death_period_ms`.
  std::uint32_t dying_worker = 4;
  std::int64_t die_after_ms = 20'000;
  std::int64_t dead_for_ms = 25'000;
  std::int64_t death_period_ms = 90'000;
  /// Done jobs more than this many ids behind the newest are erased (keeps the state bounded).
  std::uint64_t jobs_kept = 400;
  /// Intents are erased this long after they were set.
  std::int64_t intent_lifetime_ms = 60'000;
};

/// One shard produced by the simulation: `body` is a JSON object (DESIGN.md §2.3), `seq` counts
/// the blade's shards from 1.
struct DemoShard {
  std::string blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  std::string body;
};

/// What the simulation did, as ground truth for tests and the summary.
struct DemoClusterStats {
  std::uint64_t shards = 0;
  std::uint64_t jobs_submitted = 0;
  std::uint64_t jobs_done = 0;
  std::uint64_t jobs_failed = 0;
  std::uint64_t jobs_taken_over = 0;
  std::uint64_t intents = 0;
  std::uint64_t errors = 0;
  std::uint64_t deaths = 0;
  std::uint64_t restarts = 0;
  /// Per domain: tries, item_collected, item_sent, as the blades counted them.
  std::map<std::string, std::map<std::string, std::int64_t>> counters;
};

/// The simulated cluster. Deterministic: the same options and the same sequence of Advance()
/// times produce the same shards. Thread safety: none (one driver thread).
class DemoCluster {
 public:
  /// `start_ms` is the event time of the first tick (the demo passes the wall clock).
  DemoCluster(const DemoClusterOptions& options, std::int64_t start_ms);
  ~DemoCluster();
  DemoCluster(const DemoCluster&) = delete;
  DemoCluster& operator=(const DemoCluster&) = delete;

  /// Runs every tick up to and including event time `now_ms`, passing each shard to `emit` in
  /// the order produced (event times never decrease). Cost: a few dozen shards per tick.
  void Advance(std::int64_t now_ms, const std::function<void(const DemoShard&)>& emit);

  const DemoClusterStats& stats() const;

  /// The node ids of the simulated blades (workers, scrapers, spotters, orchestrator, checker).
  std::vector<std::string> NodeIds() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// What a merged state says about a cluster that follows the well-known paths (DESIGN.md §13).
struct DemoSummary {
  /// Node status -> count; "dead" when the heartbeat is older than the timeout at `now_ms`.
  std::map<std::string, std::uint64_t> nodes_by_status;
  std::uint64_t nodes = 0;
  /// Job status -> count (queued / running / done / failed).
  std::map<std::string, std::uint64_t> jobs_by_status;
  /// Counter path (e.g. "scrape.a.example.tries") -> value, for every leaf under `scrape`.
  std::map<std::string, double> counters;
  std::uint64_t intents = 0;
  /// Intents whose resolution has at least two hosts (the scraper and the spotter).
  std::uint64_t intents_resolved = 0;
  /// Check id -> status.
  std::map<std::string, std::string> checks;
  std::uint64_t errors = 0;
};

/// Reads `reader`'s state. Errors: Corruption if a well-known path holds something unreadable.
Result<DemoSummary> SummarizeState(const crdt::StateReader& reader, std::int64_t now_ms,
                                   std::int64_t heartbeat_timeout_ms);

/// A few human-readable lines (what `lattice demo --for` prints).
std::string FormatSummary(const DemoSummary& summary);

}  // namespace lattice::processors
