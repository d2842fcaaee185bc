// The observer's summary of a state that follows the well-known paths (DESIGN.md §13): nodes and
// their derived status, jobs, the job-queue distribution, counters with rates, checks and errors.
// The rules are in docs/observer-protocol.md ("Summary rules"); this is their implementation.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/crdt/types.h"

namespace lattice::observer {

struct SummaryOptions {
  /// A node whose heartbeat is older than this (relative to `now`) is dead.
  std::int64_t dead_after_ms = 10'000;
  /// `now` is the newest event time known (false) or the wall clock (true).
  bool wall_clock = false;
};

/// A node's derived status changed (seed 000's worker_node_status_change).
struct StatusChange {
  std::string node;
  std::optional<std::string> old_status;  // nullopt: the node is new
  std::optional<std::string> new_status;  // nullopt: the node vanished
  std::int64_t updated_at = 0;
};

/// The summary model: built from a full read of a state, then kept up to date from its changes.
///
/// Thread safety: none (the follower thread owns it); ToJson() returns a string the caller shares.
class Summary {
 public:
  explicit Summary(SummaryOptions options);
  ~Summary();
  Summary(const Summary&) = delete;
  Summary& operator=(const Summary&) = delete;

  /// Reads everything the summary needs from `reader` (at start, and after a gap).
  /// Errors: as the reader's.
  Status Rebuild(const crdt::StateReader& reader, std::int64_t watermark);

  /// Applies the changes of one catch-up, re-reading what they touched from `reader`.
  /// Returns true if the summary may have changed.
  Result<bool> Apply(const crdt::StateReader& reader, const std::vector<crdt::Change>& changes,
                     std::int64_t watermark);

  /// Recomputes derived statuses at `wall_ms` and returns every change since the last call
  /// (the first call after construction reports every node with a null old status).
  std::vector<StatusChange> DeriveStatuses(std::int64_t wall_ms);

  /// Takes one sample of every counter for the rates, at wall time `wall_ms`.
  void SampleCounters(std::int64_t wall_ms);

  /// The summary object of docs/observer-protocol.md, for `commit`, at wall time `wall_ms`.
  std::string ToJson(std::uint64_t commit, std::int64_t wall_ms) const;

  /// Derived node counts by status, and job counts by status (for /metrics).
  std::map<std::string, std::uint64_t> NodesByStatus(std::int64_t wall_ms) const;
  std::map<std::string, std::uint64_t> JobsByStatus() const;
  /// (path, value, rate or nullopt) of the counters in the summary.
  struct CounterView {
    std::string path;
    double value = 0;
    std::optional<double> rate;
  };
  std::vector<CounterView> Counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::observer
