// Dotted path syntax and the order-preserving key encoding (see path.h).
#include "lattice/core/path.h"

namespace lattice::core {

Result<Path> Path::Parse(std::string_view dotted) {
  std::vector<std::string> segments;
  if (dotted.empty()) {
    return Path();
  }
  std::string current;
  for (std::size_t i = 0; i < dotted.size(); ++i) {
    const char c = dotted[i];
    if (c == '\\') {
      if (i + 1 >= dotted.size()) {
        return Status::InvalidArgument("path '" + std::string(dotted) +
                                       "' ends with a dangling backslash");
      }
      const char next = dotted[++i];
      if (next == 'e') {
        // `\e` is the empty key, written as a whole segment (needed for the one-segment path
        // [""], whose plain spelling "" is the root).
        const bool starts = i == 1 || dotted[i - 2] == '.';
        const bool ends = i + 1 == dotted.size() || dotted[i + 1] == '.';
        if (!starts || !ends || !current.empty()) {
          return Status::InvalidArgument("path '" + std::string(dotted) +
                                         "': '\\e' (the empty key) must be a whole segment");
        }
        continue;
      }
      if (next != '.' && next != '\\') {
        return Status::InvalidArgument(
            "path '" + std::string(dotted) +
            "': only '\\.', '\\\\' and '\\e' (the empty key) are valid escapes");
      }
      current.push_back(next);
    } else if (c == '.') {
      segments.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  segments.push_back(std::move(current));
  return Path(std::move(segments));
}

std::string Path::ToString() const {
  if (segments_.size() == 1 && segments_[0].empty()) {
    return "\\e";  // "" would be the root
  }
  std::string out;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    if (i > 0) {
      out.push_back('.');
    }
    for (char c : segments_[i]) {
      if (c == '.' || c == '\\') {
        out.push_back('\\');
      }
      out.push_back(c);
    }
  }
  return out;
}

void AppendEncodedSegment(std::string& out, std::string_view segment) {
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] == '\0') {
      out.append(segment.data() + run_start, i - run_start + 1);
      out.push_back('\xff');
      run_start = i + 1;
    }
  }
  out.append(segment.data() + run_start, segment.size() - run_start);
  out.push_back('\0');
  out.push_back('\x01');
}

std::string Path::Encode() const {
  std::string out;
  for (const auto& s : segments_) {
    AppendEncodedSegment(out, s);
  }
  return out;
}

Result<Path::Decoded> Path::Decode(std::string_view key) {
  std::vector<std::string> segments;
  std::string current;
  std::size_t i = 0;
  while (i < key.size()) {
    const char c = key[i];
    if (c != '\0') {
      current.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= key.size()) {
      return Status::Corruption("malformed path key: truncated escape");
    }
    const char next = key[i + 1];
    if (next == '\xff') {
      current.push_back('\0');
      i += 2;
    } else if (next == '\x01') {
      segments.push_back(std::move(current));
      current.clear();
      i += 2;
    } else if (next == '\x02') {
      if (!current.empty()) {
        return Status::Corruption("malformed path key: suffix inside a segment");
      }
      return Decoded{Path(std::move(segments)), key.substr(i)};
    } else {
      return Status::Corruption("malformed path key: bad escape byte");
    }
  }
  if (!current.empty()) {
    return Status::Corruption("malformed path key: unterminated segment");
  }
  return Decoded{Path(std::move(segments)), std::string_view()};
}

}  // namespace lattice::core
