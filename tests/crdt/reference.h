// The independent reference for the merge semantics of DESIGN.md §3, used by the property tests.
//
// It follows the definition literally: keep every distinct (blade, seq) once, sort by stamp
// (ts, blade bytes, seq) and apply the bodies one by one to an empty object. It is written from the
// design alone and shares no code with crdt/ or core/: it parses with nlohmann::json and prints
// with its own canonical printer, so a bug in the engine's (or core's) parsing, number handling or
// printing cannot hide by being shared. It is slow on purpose (plain maps, re-sorting on every
// dump) and meant for small test inputs only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lattice::reference {

/// A JSON number: an exact 64-bit integer (any integer literal) or a double (a literal with a
/// fraction or an exponent).
struct RefNumber {
  bool is_int = true;
  std::int64_t i = 0;
  double d = 0.0;
};

/// Adds with the counter rule: int + int stays an exact int (overflow throws
/// std::overflow_error: test inputs must not overflow), anything involving a double is
/// double(a) + double(b).
RefNumber AddNumbers(const RefNumber& a, const RefNumber& b);

/// Compares mathematically (an int and a double without rounding the int). Returns <0, 0, >0.
int CompareNumbers(const RefNumber& a, const RefNumber& b);

/// Canonical JSON text of a number: integers in decimal, doubles in std::to_chars shortest form
/// (zero of either sign as 0, and doubles of 2^63 or more that would print like an integer in
/// scientific form).
std::string CanonicalNumber(const RefNumber& n);

/// Canonical JSON text of any JSON value: keys sorted by bytes, no whitespace, strings escaped
/// only for `"`, `\` and bytes below 0x20.
std::string CanonicalJson(const nlohmann::json& value);

/// One parsed envelope line.
struct Envelope {
  std::string blade;
  std::uint64_t seq = 0;
  std::int64_t ts = 0;
  nlohmann::json body;
};

/// Parses `{"blade":..,"seq":..,"ts":..,"shard":{...}}`. Throws std::invalid_argument (or a
/// nlohmann exception) on a malformed line; the tests only feed it lines they generated.
Envelope ParseEnvelope(std::string_view line);

/// A TTL rule of DESIGN.md §4: `pattern` keys from the root, "*" = any one key.
struct RefTtlRule {
  std::vector<std::string> pattern;
  std::int64_t duration = 0;
};

/// The merged state of a set of envelope lines, as DESIGN.md §3 and §4 define it.
class ReferenceState {
 public:
  /// Merges `lines` (in any order, duplicates allowed: the first line of a (blade, seq) counts).
  /// With TTL rules, §4 literally: before each shard (in stamp order) with timestamp ts, every
  /// subtree at a path matching a rule whose newest write is older than ts - duration is removed
  /// (a write "under" a path is any body entry at or below it since the path was last created);
  /// after the last shard, the same with the largest ts.
  static ReferenceState FromLines(const std::vector<std::string>& lines,
                                  const std::vector<RefTtlRule>& ttl = {});

  /// The canonical dump of the whole state, "\n"-terminated ("{}\n" when empty).
  std::string Dump() const;

  /// The canonical JSON of the visible value at `path` (root for an empty path), or nullopt.
  std::optional<std::string> Get(const std::vector<std::string>& path) const;

  /// Every visible leaf (scalar, array, counter, max/min register; not objects) with its path,
  /// in canonical (byte) order of the paths' keys, depth first.
  std::vector<std::pair<std::vector<std::string>, std::string>> Leaves() const;

  struct Node;

 private:
  std::shared_ptr<Node> root_;
};

/// Convenience: ReferenceState::FromLines(lines).Dump().
std::string ReferenceDump(const std::vector<std::string>& lines);

}  // namespace lattice::reference
