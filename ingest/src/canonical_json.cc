// The canonical JSON reader of time travel (see canonical_json.h).
#include "canonical_json.h"

#include <algorithm>

namespace lattice::ingest::internal {

namespace {

Status Malformed(std::string_view text, std::size_t pos, std::string_view what) {
  std::string msg("canonical JSON: ");
  msg.append(what).append(" at byte ").append(std::to_string(pos)).append(" of ");
  msg.append(std::to_string(text.size()));
  return Status::Corruption(std::move(msg));
}

// Appends the UTF-8 encoding of a code point.
void AppendUtf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool Hex4(std::string_view text, std::size_t pos, std::uint32_t& out) {
  if (pos + 4 > text.size()) {
    return false;
  }
  out = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    const char c = text[pos + i];
    out <<= 4;
    if (c >= '0' && c <= '9') {
      out |= static_cast<std::uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      out |= static_cast<std::uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      out |= static_cast<std::uint32_t>(c - 'A' + 10);
    } else {
      return false;
    }
  }
  return true;
}

// Reads the string literal starting at `pos` (a '"'); returns its end and, if `out`, its value.
Result<std::size_t> ReadString(std::string_view text, std::size_t pos, std::string* out) {
  if (pos >= text.size() || text[pos] != '"') {
    return Malformed(text, pos, "expected a string");
  }
  ++pos;
  while (pos < text.size()) {
    const char c = text[pos];
    if (c == '"') {
      return pos + 1;
    }
    if (c != '\\') {
      if (out != nullptr) {
        out->push_back(c);
      }
      ++pos;
      continue;
    }
    if (pos + 1 >= text.size()) {
      break;
    }
    const char e = text[pos + 1];
    pos += 2;
    char plain = 0;
    switch (e) {
      case '"':
        plain = '"';
        break;
      case '\\':
        plain = '\\';
        break;
      case '/':
        plain = '/';
        break;
      case 'b':
        plain = '\b';
        break;
      case 'f':
        plain = '\f';
        break;
      case 'n':
        plain = '\n';
        break;
      case 'r':
        plain = '\r';
        break;
      case 't':
        plain = '\t';
        break;
      case 'u': {
        std::uint32_t cp = 0;
        if (!Hex4(text, pos, cp)) {
          return Malformed(text, pos, "bad \\u escape");
        }
        pos += 4;
        if (cp >= 0xD800 && cp < 0xDC00) {
          std::uint32_t low = 0;
          if (pos + 6 > text.size() || text[pos] != '\\' || text[pos + 1] != 'u' ||
              !Hex4(text, pos + 2, low) || low < 0xDC00 || low >= 0xE000) {
            return Malformed(text, pos, "unpaired surrogate");
          }
          pos += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        if (out != nullptr) {
          AppendUtf8(*out, cp);
        }
        continue;
      }
      default:
        return Malformed(text, pos - 1, "bad escape");
    }
    if (out != nullptr) {
      out->push_back(plain);
    }
  }
  return Malformed(text, pos, "unterminated string");
}

}  // namespace

Result<std::size_t> SkipValue(std::string_view text, std::size_t pos) {
  if (pos >= text.size()) {
    return Malformed(text, pos, "expected a value");
  }
  const char c = text[pos];
  if (c == '"') {
    return ReadString(text, pos, nullptr);
  }
  if (c == '{' || c == '[') {
    // Depth counting; strings are skipped whole so brackets inside them do not count.
    std::size_t depth = 0;
    while (pos < text.size()) {
      const char d = text[pos];
      if (d == '"') {
        LATTICE_ASSIGN_OR_RETURN(pos, ReadString(text, pos, nullptr));
        continue;
      }
      if (d == '{' || d == '[') {
        ++depth;
      } else if (d == '}' || d == ']') {
        if (--depth == 0) {
          return pos + 1;
        }
      }
      ++pos;
    }
    return Malformed(text, pos, "unterminated object or array");
  }
  // A number, true, false or null: up to the next delimiter.
  const std::size_t start = pos;
  while (pos < text.size() && text[pos] != ',' && text[pos] != '}' && text[pos] != ']' &&
         text[pos] != '\n') {
    ++pos;
  }
  if (pos == start) {
    return Malformed(text, pos, "expected a value");
  }
  return pos;
}

Result<std::vector<Member>> Members(std::string_view object) {
  std::vector<Member> members;
  if (!IsObject(object)) {
    return Malformed(object, 0, "expected an object");
  }
  std::size_t pos = 1;
  if (pos < object.size() && object[pos] == '}') {
    return members;
  }
  while (true) {
    Member m;
    LATTICE_ASSIGN_OR_RETURN(pos, ReadString(object, pos, &m.key));
    if (pos >= object.size() || object[pos] != ':') {
      return Malformed(object, pos, "expected ':'");
    }
    ++pos;
    LATTICE_ASSIGN_OR_RETURN(std::size_t end, SkipValue(object, pos));
    m.value = object.substr(pos, end - pos);
    members.push_back(std::move(m));
    pos = end;
    if (pos < object.size() && object[pos] == ',') {
      ++pos;
      continue;
    }
    if (pos < object.size() && object[pos] == '}') {
      break;
    }
    return Malformed(object, pos, "expected ',' or '}'");
  }
  // Canonical dumps are sorted already; sorting again keeps the merge walk right whatever order
  // the writer used for escaped keys.
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.key < b.key; });
  return members;
}

}  // namespace lattice::ingest::internal
