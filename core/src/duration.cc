// Parsing and formatting of human-written durations.
#include "lattice/core/duration.h"

#include <charconv>

namespace lattice::core {

Result<std::int64_t> ParseDurationMs(std::string_view text) {
  std::int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  // Messages are built with append: g++ 12 warns falsely (-Wrestrict) on chained operator+.
  auto bad = [&](std::string_view what) {
    std::string msg("'");
    msg.append(text).append("' ").append(what);
    return Status::InvalidArgument(std::move(msg));
  };
  if (ec != std::errc() || ptr == text.data() || value < 0) {
    return bad("is not a duration (use e.g. 250ms, 30s, 5m, 1h, 7d)");
  }
  const std::string_view unit(ptr, static_cast<std::size_t>(text.data() + text.size() - ptr));
  std::int64_t scale;
  if (unit.empty() || unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60 * 1000;
  } else if (unit == "h") {
    scale = 3600 * 1000;
  } else if (unit == "d") {
    scale = 24 * 3600 * 1000;
  } else {
    return bad("has an unknown unit (use ms, s, m, h or d)");
  }
  std::int64_t out;
  if (__builtin_mul_overflow(value, scale, &out)) {
    return bad("is too large a duration");
  }
  return out;
}

std::string FormatDurationMs(std::int64_t ms) {
  static constexpr std::pair<std::int64_t, const char*> kUnits[] = {
      {24 * 3600 * 1000, "d"}, {3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}};
  for (const auto& [scale, name] : kUnits) {
    if (ms != 0 && ms % scale == 0) {
      std::string out = std::to_string(ms / scale);
      out.append(name);
      return out;
    }
  }
  std::string out = std::to_string(ms);
  out.append("ms");
  return out;
}

}  // namespace lattice::core
