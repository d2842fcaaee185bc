// StateReader: reads a state directory without writing it (RocksDB read-only open).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/path.h"
#include "lattice/core/status.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {

/// A read-only view of one state directory, as of the moment it was opened.
///
/// Works while an aggregator writes the same directory (it takes no lock). Thread safety: const
/// methods may be called from several threads.
class StateReader {
 public:
  /// Errors: NotFound if `dir` holds no state; Corruption if it is not a Lattice state.
  static Result<std::unique_ptr<StateReader>> Open(const std::string& dir);
  ~StateReader();

  /// The canonical JSON of the value at `path` (the whole state for the root), or nullopt.
  Result<std::optional<std::string>> Get(const core::Path& path) const;

  /// Calls `visit` with the path and canonical JSON of every visible leaf value under `prefix`
  /// (scalars, counters, max/min registers; empty objects are not leaves), in key order.
  Status Scan(const core::Path& prefix,
              const std::function<void(const core::Path&, std::string_view json)>& visit) const;

  /// Streams the canonical dump (the whole state, trailing newline) to `write`.
  Status Dump(const std::function<void(std::string_view chunk)>& write) const;

  /// Every committed source position.
  std::vector<SourcePosition> Positions() const;

 private:
  struct Impl;
  StateReader();
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::crdt
