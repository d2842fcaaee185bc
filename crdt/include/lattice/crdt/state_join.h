// The CRDT join of several state directories (DESIGN.md §1, §11): aggregators of one consumer group
// own disjoint partitions, each with its own state; readers join the partial states into the state
// a single aggregator would have built.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::crdt {

/// Streams the canonical dump of the join of the states in `dirs` (trailing newline) to `write`.
///
/// Per path the newest event of all states decides (scalars, erasures, objects), an erasure or
/// replacement in one state hides older writes below it in every other state, and registers are
/// re-folded over the union of their runs: a counter sums, per blade, the slot of the state that
/// holds the blade's most recent seq (so a blade consumed by two aggregators one after the other
/// counts once), max/min keep the best entry. Exact for states whose blades are disjoint and for a
/// state joined with itself or with an older copy of itself, as long as the register entries it
/// needs are newer than each state's lateness horizon (older ones are folded into a slot's base:
/// a base is then kept or dropped whole). One directory gives its own dump.
///
/// Opens each directory read-only (no lock, works while aggregators write them). Errors:
/// NotFound / Corruption as StateReader::Open; Corruption for a record that does not decode.
Status DumpJoinedStates(const std::vector<std::string>& dirs,
                        const std::function<void(std::string_view chunk)>& write);

}  // namespace lattice::crdt
