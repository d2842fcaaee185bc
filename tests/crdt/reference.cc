// The reference merge of DESIGN.md §3: sort the distinct shards by stamp, apply them one by one.
// Written from the design text only; see reference.h for why nothing is shared with crdt/ or core/.
#include "reference.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>
#include <utility>

namespace lattice::reference {

namespace {

using nlohmann::json;

// Byte order of UTF-8 strings (unsigned bytes), spelled out rather than trusting char's sign.
struct ByteLess {
  bool operator()(const std::string& a, const std::string& b) const {
    const std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i) {
      const auto x = static_cast<unsigned char>(a[i]);
      const auto y = static_cast<unsigned char>(b[i]);
      if (x != y) {
        return x < y;
      }
    }
    return a.size() < b.size();
  }
};

RefNumber NumberOf(const json& v) {
  RefNumber n;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw std::invalid_argument("integer out of the int64 range");
    }
    n.is_int = true;
    n.i = static_cast<std::int64_t>(u);
  } else if (v.is_number_integer()) {
    n.is_int = true;
    n.i = v.get<std::int64_t>();
  } else if (v.is_number_float()) {
    n.is_int = false;
    n.d = v.get<double>();
  } else {
    throw std::invalid_argument("operand is not a number: " + v.dump());
  }
  return n;
}

void AppendString(std::string& out, const std::string& s) {
  out.push_back('"');
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == 0x08) {
      out += "\\b";
    } else if (c == 0x0c) {
      out += "\\f";
    } else if (c == 0x0a) {
      out += "\\n";
    } else if (c == 0x0d) {
      out += "\\r";
    } else if (c == 0x09) {
      out += "\\t";
    } else if (c < 0x20) {
      const char* hex = "0123456789abcdef";
      out += "\\u00";
      out.push_back(hex[c / 16]);
      out.push_back(hex[c % 16]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

template <typename T>
void AppendToChars(std::string& out, T v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  if (r.ec != std::errc()) {
    throw std::runtime_error("to_chars failed");
  }
  out.append(buf, r.ptr);
}

// A double: the shortest std::to_chars form, with two rules that keep the dump a fixpoint (a dump
// read back and dumped again is the same text), decided in core (commit 66902af):
//  - zero of either sign is written 0 (numerically equal values print the same);
//  - a magnitude of 2^63 or more whose shortest form has no '.' and no exponent (it would read
//    back as an integer out of the int64 range) is written in shortest scientific form.
void AppendDouble(std::string& out, double v) {
  if (v == 0.0) {
    out.push_back('0');
    return;
  }
  std::string text;
  AppendToChars(text, v);
  if (std::abs(v) >= 9223372036854775808.0 && text.find_first_of(".eE") == std::string::npos) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
    if (r.ec != std::errc()) {
      throw std::runtime_error("to_chars failed");
    }
    text.assign(buf, r.ptr);
  }
  out += text;
}

void AppendJson(std::string& out, const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      out += "null";
      return;
    case json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case json::value_t::number_integer:
      AppendToChars(out, v.get<std::int64_t>());
      return;
    case json::value_t::number_unsigned:
      AppendToChars(out, v.get<std::uint64_t>());
      return;
    case json::value_t::number_float:
      AppendDouble(out, v.get<double>());
      return;
    case json::value_t::string:
      AppendString(out, v.get_ref<const std::string&>());
      return;
    case json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const json& e : v) {
        if (!first) {
          out.push_back(',');
        }
        first = false;
        AppendJson(out, e);
      }
      out.push_back(']');
      return;
    }
    case json::value_t::object: {
      std::vector<std::string> keys;
      for (auto it = v.begin(); it != v.end(); ++it) {
        keys.push_back(it.key());
      }
      std::sort(keys.begin(), keys.end(), ByteLess());
      out.push_back('{');
      bool first = true;
      for (const std::string& k : keys) {
        if (!first) {
          out.push_back(',');
        }
        first = false;
        AppendString(out, k);
        out.push_back(':');
        AppendJson(out, v.at(k));
      }
      out.push_back('}');
      return;
    }
    default:
      throw std::invalid_argument("not a JSON value");
  }
}

bool IsOperatorKey(const std::string& k) { return k == "$inc" || k == "$max" || k == "$min"; }

// A literal key `$$name` means `$name`; any other `$` key outside an operator object is invalid.
std::string UnescapeKey(const std::string& k) {
  if (!k.empty() && k[0] == '$') {
    if (k.size() >= 2 && k[1] == '$') {
      return k.substr(1);
    }
    throw std::invalid_argument("operator key '" + k + "' where a plain key is expected");
  }
  return k;
}

}  // namespace

RefNumber AddNumbers(const RefNumber& a, const RefNumber& b) {
  RefNumber r;
  if (a.is_int && b.is_int) {
    if (__builtin_add_overflow(a.i, b.i, &r.i)) {
      throw std::overflow_error("integer counter overflow in a test input");
    }
    r.is_int = true;
    return r;
  }
  r.is_int = false;
  r.d = (a.is_int ? static_cast<double>(a.i) : a.d) + (b.is_int ? static_cast<double>(b.i) : b.d);
  return r;
}

int CompareNumbers(const RefNumber& a, const RefNumber& b) {
  // long double holds every int64 and every double exactly (64-bit mantissa or more), so one
  // conversion makes the comparison mathematical.
  static_assert(std::numeric_limits<long double>::digits >= 64);
  const long double x = a.is_int ? static_cast<long double>(a.i) : static_cast<long double>(a.d);
  const long double y = b.is_int ? static_cast<long double>(b.i) : static_cast<long double>(b.d);
  return x < y ? -1 : (x > y ? 1 : 0);
}

std::string CanonicalNumber(const RefNumber& n) {
  std::string out;
  if (n.is_int) {
    AppendToChars(out, n.i);
  } else {
    AppendDouble(out, n.d);
  }
  return out;
}

std::string CanonicalJson(const json& value) {
  std::string out;
  AppendJson(out, value);
  return out;
}

Envelope ParseEnvelope(std::string_view line) {
  const json j = json::parse(line.begin(), line.end());
  if (!j.is_object() || !j.contains("blade") || !j.contains("seq") || !j.contains("ts") ||
      !j.contains("shard")) {
    throw std::invalid_argument("not an envelope: " + std::string(line));
  }
  Envelope e;
  e.blade = j.at("blade").get<std::string>();
  const RefNumber seq = NumberOf(j.at("seq"));
  const RefNumber ts = NumberOf(j.at("ts"));
  if (!seq.is_int || seq.i < 0 || !ts.is_int) {
    throw std::invalid_argument("seq and ts must be integers: " + std::string(line));
  }
  e.seq = static_cast<std::uint64_t>(seq.i);
  e.ts = ts.i;
  e.body = j.at("shard");
  if (!e.body.is_object()) {
    throw std::invalid_argument("the shard is not an object: " + std::string(line));
  }
  return e;
}

struct ReferenceState::Node {
  enum class Kind { kObject, kValue, kCounter, kMax, kMin };
  Kind kind = Kind::kObject;
  std::map<std::string, std::unique_ptr<Node>, ByteLess> children;  // kObject
  json value;                                                       // kValue
  // kCounter: per blade, the increments (seq, amount) applied since the counter was created.
  std::map<std::string, std::vector<std::pair<std::uint64_t, RefNumber>>, ByteLess> slots;
  RefNumber best;  // kMax, kMin
  // §4: the largest ts of a body entry at or below this node since it was created.
  std::int64_t newest = std::numeric_limits<std::int64_t>::min();

  RefNumber Visible() const {
    if (kind == Kind::kMax || kind == Kind::kMin) {
      return best;
    }
    // Each slot sums in its blade's seq order; the slots sum in blade byte order.
    RefNumber total;
    for (const auto& [blade, incs] : slots) {
      auto sorted = incs;
      std::stable_sort(sorted.begin(), sorted.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
      RefNumber slot;
      for (const auto& [seq, amount] : sorted) {
        slot = AddNumbers(slot, amount);
      }
      total = AddNumbers(total, slot);
    }
    return total;
  }

  void Write(std::string& out) const {
    switch (kind) {
      case Kind::kObject: {
        out.push_back('{');
        bool first = true;
        for (const auto& [k, child] : children) {
          if (!first) {
            out.push_back(',');
          }
          first = false;
          AppendString(out, k);
          out.push_back(':');
          child->Write(out);
        }
        out.push_back('}');
        return;
      }
      case Kind::kValue:
        AppendJson(out, value);
        return;
      case Kind::kCounter:
      case Kind::kMax:
      case Kind::kMin:
        out += CanonicalNumber(Visible());
        return;
    }
  }

  void CollectLeaves(std::vector<std::string>& path,
                     std::vector<std::pair<std::vector<std::string>, std::string>>& out) const {
    if (kind != Kind::kObject) {
      std::string json_text;
      Write(json_text);
      out.emplace_back(path, std::move(json_text));
      return;
    }
    for (const auto& [k, child] : children) {
      path.push_back(k);
      child->CollectLeaves(path, out);
      path.pop_back();
    }
  }
};

namespace {

using Node = ReferenceState::Node;

void ApplyOperator(std::unique_ptr<Node>& slot, const std::string& op, const RefNumber& n,
                   const Envelope& env) {
  if (op == "$inc") {
    if (!slot || slot->kind != Node::Kind::kCounter) {
      slot = std::make_unique<Node>();
      slot->kind = Node::Kind::kCounter;
    }
    slot->slots[env.blade].emplace_back(env.seq, n);
    return;
  }
  const Node::Kind kind = op == "$max" ? Node::Kind::kMax : Node::Kind::kMin;
  if (slot && slot->kind == kind) {
    const int c = CompareNumbers(n, slot->best);
    // Replace only when strictly better: on a tie the older (earlier applied) value stays.
    if (kind == Node::Kind::kMax ? c > 0 : c < 0) {
      slot->best = n;
    }
    return;
  }
  slot = std::make_unique<Node>();
  slot->kind = kind;
  slot->best = n;
}

void ApplyObject(Node& node, const json& body, const Envelope& env) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string key = UnescapeKey(it.key());
    const json& v = it.value();
    if (v.is_null()) {
      node.children.erase(key);  // with its whole subtree; absent: nothing happens
      continue;
    }
    if (v.is_object()) {
      if (v.size() == 1 && IsOperatorKey(v.begin().key())) {
        std::unique_ptr<Node>& child = node.children[key];
        ApplyOperator(child, v.begin().key(), NumberOf(v.begin().value()), env);
        child->newest = std::max(child->newest, env.ts);
        continue;
      }
      std::unique_ptr<Node>& child = node.children[key];
      if (!child || child->kind != Node::Kind::kObject) {
        child = std::make_unique<Node>();  // an empty object
      }
      child->newest = std::max(child->newest, env.ts);
      ApplyObject(*child, v, env);
      continue;
    }
    // string, number, bool, array: set (arrays are atomic values).
    auto leaf = std::make_unique<Node>();
    leaf->kind = Node::Kind::kValue;
    leaf->value = v;
    leaf->newest = env.ts;
    node.children[key] = std::move(leaf);
  }
}

// The shortest duration of the rules matching `path` exactly, or 0 if none does.
std::int64_t TtlFor(const std::vector<std::string>& path, const std::vector<RefTtlRule>& ttl) {
  std::int64_t best = 0;
  for (const RefTtlRule& rule : ttl) {
    if (rule.pattern.size() != path.size()) {
      continue;
    }
    bool match = true;
    for (std::size_t i = 0; i < path.size() && match; ++i) {
      match = rule.pattern[i] == "*" || rule.pattern[i] == path[i];
    }
    if (match && (best == 0 || rule.duration < best)) {
      best = rule.duration;
    }
  }
  return best;
}

// §4: removes every subtree under `node` matching a rule whose newest write is older than
// ts - duration.
void Evict(Node& node, std::vector<std::string>& path, std::int64_t ts,
           const std::vector<RefTtlRule>& ttl) {
  for (auto it = node.children.begin(); it != node.children.end();) {
    path.push_back(it->first);
    const std::int64_t d = TtlFor(path, ttl);
    if (d > 0 && it->second->newest < ts - d) {
      it = node.children.erase(it);
    } else {
      if (it->second->kind == Node::Kind::kObject) {
        Evict(*it->second, path, ts, ttl);
      }
      ++it;
    }
    path.pop_back();
  }
}

}  // namespace

ReferenceState ReferenceState::FromLines(const std::vector<std::string>& lines,
                                         const std::vector<RefTtlRule>& ttl) {
  std::vector<Envelope> shards;
  std::set<std::pair<std::string, std::uint64_t>> seen;
  for (const std::string& line : lines) {
    Envelope e = ParseEnvelope(line);
    if (seen.insert({e.blade, e.seq}).second) {
      shards.push_back(std::move(e));
    }
  }
  std::stable_sort(shards.begin(), shards.end(), [](const Envelope& a, const Envelope& b) {
    if (a.ts != b.ts) {
      return a.ts < b.ts;
    }
    if (a.blade != b.blade) {
      return ByteLess()(a.blade, b.blade);
    }
    return a.seq < b.seq;
  });
  ReferenceState state;
  state.root_ = std::make_shared<Node>();
  std::vector<std::string> path;
  for (const Envelope& e : shards) {
    if (!ttl.empty()) {
      Evict(*state.root_, path, e.ts, ttl);
    }
    ApplyObject(*state.root_, e.body, e);
  }
  if (!ttl.empty() && !shards.empty()) {
    Evict(*state.root_, path, shards.back().ts, ttl);
  }
  return state;
}

std::string ReferenceState::Dump() const {
  std::string out;
  root_->Write(out);
  out.push_back('\n');
  return out;
}

std::optional<std::string> ReferenceState::Get(const std::vector<std::string>& path) const {
  const Node* node = root_.get();
  for (const std::string& k : path) {
    if (node->kind != Node::Kind::kObject) {
      return std::nullopt;
    }
    auto it = node->children.find(k);
    if (it == node->children.end()) {
      return std::nullopt;
    }
    node = it->second.get();
  }
  std::string out;
  node->Write(out);
  return out;
}

std::vector<std::pair<std::vector<std::string>, std::string>> ReferenceState::Leaves() const {
  std::vector<std::pair<std::vector<std::string>, std::string>> out;
  std::vector<std::string> path;
  root_->CollectLeaves(path, out);
  return out;
}

std::string ReferenceDump(const std::vector<std::string>& lines) {
  return ReferenceState::FromLines(lines).Dump();
}

}  // namespace lattice::reference
