// Small helpers over canonical JSON text (what the state reader returns) and client JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lattice::observer::internal {

/// Splits a JSON object's text into its members: (unescaped key, raw value text). Returns false
/// if `json` is not an object. Whitespace-tolerant.
bool SplitObject(std::string_view json, std::vector<std::pair<std::string, std::string_view>>& out);

/// The string a JSON string literal holds, if `raw` is one.
std::optional<std::string> AsString(std::string_view raw);
/// The value of a JSON number, if `raw` is one.
std::optional<double> AsNumber(std::string_view raw);
/// The value of a JSON integer (no fraction, no exponent, fits int64), if `raw` is one.
std::optional<std::int64_t> AsInt(std::string_view raw);

/// A decimal job id ("0", "17"; no sign, no leading zero, at most 18 digits) as a number.
std::optional<std::uint64_t> DecimalId(std::string_view id);

}  // namespace lattice::observer::internal
