// Parsing and formatting of RFC 3339 timestamps (proleptic Gregorian calendar, UTC).
#include "lattice/core/timestamp.h"

#include <charconv>
#include <cstdio>

namespace lattice::core {

namespace {

// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
std::int64_t DaysFromCivil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t y;
  unsigned m;
  unsigned d;
};

Civil CivilFromDays(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2 ? 1 : 0), m, d};
}

bool IsLeap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysInMonth(std::int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

// Reads exactly `n` digits at `pos`.
bool Digits(std::string_view s, std::size_t& pos, std::size_t n, unsigned& out) {
  if (pos + n > s.size()) {
    return false;
  }
  out = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') {
      return false;
    }
    out = out * 10 + static_cast<unsigned>(c - '0');
  }
  pos += n;
  return true;
}

bool Expect(std::string_view s, std::size_t& pos, char c) {
  if (pos < s.size() && s[pos] == c) {
    ++pos;
    return true;
  }
  return false;
}

}  // namespace

Result<std::int64_t> ParseTimestampMs(std::string_view text) {
  auto bad = [&](std::string_view what) {
    std::string msg("'");
    msg.append(text).append("' ").append(what);
    return Status::InvalidArgument(std::move(msg));
  };
  const std::size_t dash = text.find('-', 1);
  if (dash == std::string_view::npos) {
    std::int64_t ms = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
    if (ec == std::errc() && ptr == text.data() + text.size() && !text.empty()) {
      return ms;
    }
    return bad(
        "is not a timestamp (use milliseconds since the epoch or RFC 3339, e.g. "
        "2024-11-23T08:20:00Z)");
  }
  std::size_t pos = 0;
  unsigned year = 0;
  unsigned month = 0;
  unsigned day = 0;
  if (!Digits(text, pos, 4, year) || !Expect(text, pos, '-') || !Digits(text, pos, 2, month) ||
      !Expect(text, pos, '-') || !Digits(text, pos, 2, day)) {
    return bad("is not a date-time (expected YYYY-MM-DD[THH:MM:SS[.fff][Z|+HH:MM]])");
  }
  if (month < 1 || month > 12) {
    return bad("has a month out of range");
  }
  if (day < 1 || day > DaysInMonth(year, month)) {
    return bad("has a day out of range");
  }
  std::int64_t ms = DaysFromCivil(year, month, day) * 86400000;
  if (pos == text.size()) {
    return ms;
  }
  if (text[pos] != 'T' && text[pos] != 't' && text[pos] != ' ') {
    return bad("has no 'T' between the date and the time");
  }
  ++pos;
  unsigned hour = 0;
  unsigned minute = 0;
  unsigned second = 0;
  if (!Digits(text, pos, 2, hour) || !Expect(text, pos, ':') || !Digits(text, pos, 2, minute) ||
      !Expect(text, pos, ':') || !Digits(text, pos, 2, second)) {
    return bad("has no time HH:MM:SS after the date");
  }
  if (hour > 23 || minute > 59 || second > 60) {
    return bad("has a time out of range");
  }
  ms += (static_cast<std::int64_t>(hour) * 3600 + minute * 60 + second) * 1000;
  if (Expect(text, pos, '.')) {
    std::size_t digits = 0;
    std::int64_t frac = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (digits < 3) {
        frac = frac * 10 + (text[pos] - '0');
      }
      ++digits;
      ++pos;
    }
    if (digits == 0) {
      return bad("has a '.' without digits");
    }
    for (std::size_t i = digits; i < 3; ++i) {
      frac *= 10;
    }
    ms += frac;
  }
  if (pos == text.size() || Expect(text, pos, 'Z') || Expect(text, pos, 'z')) {
    if (pos != text.size()) {
      return bad("has characters after the time zone");
    }
    return ms;
  }
  const char sign = text[pos];
  if (sign != '+' && sign != '-') {
    return bad("has an invalid time zone (use Z, +HH:MM or -HH:MM)");
  }
  ++pos;
  unsigned off_h = 0;
  unsigned off_m = 0;
  if (!Digits(text, pos, 2, off_h) || !Expect(text, pos, ':') || !Digits(text, pos, 2, off_m) ||
      pos != text.size() || off_h > 23 || off_m > 59) {
    return bad("has an invalid time zone (use Z, +HH:MM or -HH:MM)");
  }
  const std::int64_t offset = (static_cast<std::int64_t>(off_h) * 60 + off_m) * 60000;
  // 10:00+01:00 is 09:00 UTC.
  return sign == '+' ? ms - offset : ms + offset;
}

std::string FormatTimestampMs(std::int64_t ms) {
  std::int64_t days = ms / 86400000;
  std::int64_t rem = ms % 86400000;
  if (rem < 0) {
    rem += 86400000;
    --days;
  }
  const Civil c = CivilFromDays(days);
  if (c.y < 0 || c.y > 9999) {
    return std::to_string(ms);
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(c.y), c.m,
                c.d, static_cast<int>(rem / 3600000), static_cast<int>(rem / 60000 % 60),
                static_cast<int>(rem / 1000 % 60), static_cast<int>(rem % 1000));
  return buf;
}

}  // namespace lattice::core
