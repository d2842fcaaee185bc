// Event-time timestamps as users write and read them: milliseconds since the Unix epoch, or
// RFC 3339 / ISO 8601 date-times ("2024-11-23T08:20:00.123Z", "2024-11-23T09:20:00+01:00").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lattice/core/status.h"

namespace lattice::core {

/// Parses a timestamp into milliseconds since the Unix epoch. Accepted forms:
///   - an integer number of milliseconds (may be negative): `1732350000123`;
///   - an RFC 3339 date-time `YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]` (`T` may be a
///     space or `t`, `Z` may be `z`; the fraction is cut to milliseconds; no offset means UTC);
///   - a date `YYYY-MM-DD` (midnight UTC).
/// Errors: InvalidArgument naming the text and what is wrong.
Result<std::int64_t> ParseTimestampMs(std::string_view text);

/// Formats milliseconds since the epoch as RFC 3339 in UTC with milliseconds,
/// `2024-11-23T08:20:00.123Z`; ParseTimestampMs reads it back. Years outside 0000..9999 are
/// printed as the plain number of milliseconds.
std::string FormatTimestampMs(std::int64_t ms);

}  // namespace lattice::core
