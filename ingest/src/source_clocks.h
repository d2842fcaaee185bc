// SourceClocks: the watermark of a replay over several sources — the newest ts each source has
// delivered, the minimum over the sources still delivering (DESIGN.md §3.1). Shared by the
// replayer and in-memory time travel so both advance the watermark the same way. Private.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace lattice::ingest::internal {

class SourceClocks {
 public:
  explicit SourceClocks(std::size_t sources) : clocks_(sources) {}

  /// Source `i` delivered a merged shard with this ts.
  void Observe(std::size_t i, std::int64_t ts) {
    clocks_[i].max_ts = std::max(clocks_[i].max_ts, ts);
  }

  /// Source `i` has (or has not) delivered its last line.
  void SetDone(std::size_t i, bool done) { clocks_[i].done = done; }

  /// The slowest source still delivering decides; when none is, the newest ts of any source.
  /// INT64_MIN before anything was delivered.
  std::int64_t Watermark() const {
    std::int64_t watermark = kNone;
    bool any_active = false;
    for (const Clock& c : clocks_) {
      if (!c.done && c.max_ts != kNone) {
        watermark = any_active ? std::min(watermark, c.max_ts) : c.max_ts;
        any_active = true;
      }
    }
    if (!any_active) {
      for (const Clock& c : clocks_) {
        watermark = std::max(watermark, c.max_ts);
      }
    }
    return watermark;
  }

 private:
  static constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::min();
  struct Clock {
    std::int64_t max_ts = kNone;
    bool done = false;
  };
  std::vector<Clock> clocks_;
};

}  // namespace lattice::ingest::internal
