// JsonBody: builds one shard body from (path, JSON value) pairs, nesting shared prefixes, so the
// simulation writes `Put({"nodes", id, "status"}, Str("working"))` instead of JSON by hand.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>

#include "lattice/core/json_text.h"

namespace lattice::processors::internal {

inline std::string Str(std::string_view s) {
  std::string out;
  core::AppendJsonString(out, s);
  return out;
}
inline std::string Int(std::int64_t v) {
  std::string out;
  core::AppendJsonInt(out, v);
  return out;
}
inline std::string Dbl(double v) {
  std::string out;
  core::AppendJsonDouble(out, v);
  return out;
}
inline std::string Inc(std::int64_t v) { return "{\"$inc\":" + Int(v) + "}"; }
inline std::string Max(std::int64_t v) { return "{\"$max\":" + Int(v) + "}"; }

class JsonBody {
 public:
  /// Sets `path` to the JSON text `value` (a scalar, an operator object, null or any object).
  /// A later Put of the same path replaces it; a path below a value put earlier is not allowed.
  void Put(std::initializer_list<std::string_view> path, std::string value) {
    Node* node = &root_;
    for (std::string_view key : path) {
      node = &node->kids[std::string(key)];
    }
    node->value = std::move(value);
    node->kids.clear();
  }
  bool empty() const { return root_.kids.empty(); }
  std::string Json() const {
    std::string out;
    Write(root_, out);
    return out;
  }

 private:
  struct Node {
    std::string value;  // JSON text when a leaf
    std::map<std::string, Node> kids;
  };
  static void Write(const Node& node, std::string& out) {
    if (node.kids.empty() && !node.value.empty()) {
      out.append(node.value);
      return;
    }
    out.push_back('{');
    bool first = true;
    for (const auto& [key, kid] : node.kids) {
      if (!first) {
        out.push_back(',');
      }
      first = false;
      core::AppendJsonString(out, key);
      out.push_back(':');
      Write(kid, out);
    }
    out.push_back('}');
  }
  Node root_;
};

}  // namespace lattice::processors::internal
