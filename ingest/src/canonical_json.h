// A reader of canonical JSON text (docs/merge-rules.md#the-canonical-dump) that never builds a
// tree: values are views into the text, which is already canonical, so a sub-value can be printed,
// compared byte for byte or walked further as is. Private to ingest/ (time travel).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lattice/core/status.h"

namespace lattice::ingest::internal {

/// One member of an object: its key (unescaped) and its value's text.
struct Member {
  std::string key;
  std::string_view value;
};

/// True if `value` is an object (its text starts with '{').
inline bool IsObject(std::string_view value) { return !value.empty() && value.front() == '{'; }

/// The members of the object `object`, sorted by key bytes.
/// Errors: Corruption if the text is not a well-formed JSON object without whitespace.
Result<std::vector<Member>> Members(std::string_view object);

/// Where the JSON value starting at `pos` of `text` ends. Errors: Corruption if malformed.
Result<std::size_t> SkipValue(std::string_view text, std::size_t pos);

}  // namespace lattice::ingest::internal
