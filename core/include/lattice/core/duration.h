// Durations as users write them on command lines and in config files: "250ms", "30s", "5m", "1h",
// "7d", or a bare number of milliseconds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lattice/core/status.h"

namespace lattice::core {

/// Parses a duration into milliseconds. Errors: InvalidArgument naming the bad text.
Result<std::int64_t> ParseDurationMs(std::string_view text);

/// Formats milliseconds the short way ("1h", "90s", "250ms").
std::string FormatDurationMs(std::int64_t ms);

}  // namespace lattice::core
