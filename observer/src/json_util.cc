// Small helpers over JSON text; Boost.JSON (header-only, compiled here) decodes strings and
// numbers.
#include "json_util.h"

#include <boost/json.hpp>
#include <boost/json/src.hpp>

namespace lattice::observer::internal {

namespace {

// Skips one JSON value starting at `i` (whitespace already skipped); returns the index after it,
// or npos if malformed. Only tracks strings and nesting: the value is validated elsewhere.
std::size_t SkipValue(std::string_view s, std::size_t i) {
  int depth = 0;
  bool in_string = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
        if (depth == 0) {
          return i + 1;
        }
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        ++depth;
        break;
      case '}':
      case ']':
        if (depth == 0) {
          return i;  // end of the enclosing container: a scalar ended here
        }
        if (--depth == 0) {
          return i + 1;
        }
        break;
      case ',':
        if (depth == 0) {
          return i;
        }
        break;
      default:
        break;
    }
  }
  return depth == 0 && !in_string ? i : std::string_view::npos;
}

std::size_t SkipSpace(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
    ++i;
  }
  return i;
}

}  // namespace

bool SplitObject(std::string_view s, std::vector<std::pair<std::string, std::string_view>>& out) {
  out.clear();
  std::size_t i = SkipSpace(s, 0);
  if (i >= s.size() || s[i] != '{') {
    return false;
  }
  i = SkipSpace(s, i + 1);
  if (i < s.size() && s[i] == '}') {
    return true;
  }
  while (i < s.size()) {
    if (s[i] != '"') {
      return false;
    }
    const std::size_t key_end = SkipValue(s, i);
    if (key_end == std::string_view::npos) {
      return false;
    }
    std::optional<std::string> key = AsString(s.substr(i, key_end - i));
    if (!key) {
      return false;
    }
    i = SkipSpace(s, key_end);
    if (i >= s.size() || s[i] != ':') {
      return false;
    }
    i = SkipSpace(s, i + 1);
    const std::size_t value_end = SkipValue(s, i);
    if (value_end == std::string_view::npos || value_end == i) {
      return false;
    }
    std::size_t trimmed = value_end;
    while (trimmed > i && (s[trimmed - 1] == ' ' || s[trimmed - 1] == '\n' ||
                           s[trimmed - 1] == '\t' || s[trimmed - 1] == '\r')) {
      --trimmed;
    }
    out.emplace_back(std::move(*key), s.substr(i, trimmed - i));
    i = SkipSpace(s, value_end);
    if (i < s.size() && s[i] == ',') {
      i = SkipSpace(s, i + 1);
      continue;
    }
    return i < s.size() && s[i] == '}';
  }
  return false;
}

std::optional<std::string> AsString(std::string_view raw) {
  if (raw.empty() || raw.front() != '"') {
    return std::nullopt;
  }
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(raw, ec);
  if (ec || !v.is_string()) {
    return std::nullopt;
  }
  return std::string(v.as_string().data(), v.as_string().size());
}

std::optional<double> AsNumber(std::string_view raw) {
  if (raw.empty() || !(raw.front() == '-' || (raw.front() >= '0' && raw.front() <= '9'))) {
    return std::nullopt;
  }
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(raw, ec);
  if (ec) {
    return std::nullopt;
  }
  if (v.is_int64()) {
    return static_cast<double>(v.as_int64());
  }
  if (v.is_uint64()) {
    return static_cast<double>(v.as_uint64());
  }
  if (v.is_double()) {
    return v.as_double();
  }
  return std::nullopt;
}

std::optional<std::int64_t> AsInt(std::string_view raw) {
  if (raw.empty() || raw.find_first_of(".eE") != std::string_view::npos) {
    return std::nullopt;
  }
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(raw, ec);
  if (ec || !v.is_int64()) {
    return std::nullopt;
  }
  return v.as_int64();
}

std::optional<std::uint64_t> DecimalId(std::string_view id) {
  if (id.empty() || id.size() > 18 || (id.size() > 1 && id[0] == '0')) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (char c : id) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

}  // namespace lattice::observer::internal
