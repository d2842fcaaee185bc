// TTL configuration (DESIGN.md §4): rules `pattern=duration` from flags and config files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt {

/// Parses `intents.*=1h` (a dotted pattern, `*` = any one key, `\.` for a literal dot; then `=`
/// and a duration as core::ParseDurationMs reads it, e.g. 250ms, 30s, 10m, 1h, 7d).
/// Errors: InvalidArgument naming the text and what is wrong (no `=`, an empty pattern, a bad or
/// non-positive duration).
Result<TtlRule> ParseTtlRule(std::string_view text);

/// The TTL part of a YAML config file (docs/configuration.md):
///
///   ttl:
///     clock: event            # or wall
///     counter_slot_ttl: 1h    # optional
///     blade_ttl: 7d           # optional
///     rules:
///       intents.*: 1h
///       jobs.*.errors: 48h
///
/// applied onto `options` (rules are appended). Errors: NotFound if the file cannot be read;
/// InvalidArgument naming the file, the key and the problem for anything malformed or unknown.
Status LoadTtlConfig(const std::string& file, EngineOptions& options);

/// The rule as written back: `intents.*=1h`.
std::string FormatTtlRule(const TtlRule& rule);

}  // namespace lattice::crdt
