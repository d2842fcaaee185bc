// ShardDecoder: simdjson DOM parse, then one validating walk that flattens the body into
// BodyEntry records (see shard.h). simdjson stays inside this file.
#include <simdjson.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "lattice/core/shard.h"

namespace lattice::core {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

std::string ErrorText(simdjson::error_code code) {
  switch (code) {
    case simdjson::DEPTH_ERROR:
      return "nesting too deep";
    case simdjson::UTF8_ERROR:
      return "invalid UTF-8";
    case simdjson::NUMBER_ERROR:
      return "invalid or out-of-range number";
    case simdjson::EMPTY:
      return "empty line";
    default:
      return std::string("invalid JSON (") + simdjson::error_message(code) + ")";
  }
}

}  // namespace

struct ShardDecoder::Impl {
  simdjson::dom::parser parser;
  Shard shard;
  std::string arena;  // canonical values of kSet entries
  std::vector<std::pair<std::uint32_t, std::uint32_t>> spans;  // arena span per entry
  std::vector<std::string_view> path;  // keys from the body root to the current position
  std::vector<std::string_view> key_scratch;
  std::string hash_scratch;
  std::vector<std::uint64_t> subtree_hash;
  std::string minify_scratch;
  DecodeLimits limits;

  std::string PathText() const {
    if (path.empty()) {
      return "(body)";
    }
    std::string out;
    for (std::size_t i = 0; i < path.size(); ++i) {
      if (i > 0) {
        out.push_back('.');
      }
      out.append(path[i]);
    }
    return out;
  }

  Status Bad(const std::string& what) const {
    return Status::InvalidArgument("at " + PathText() + ": " + what);
  }

  // Fails if `obj` has a key twice. Small objects compare pairwise; bigger ones sort.
  Status CheckDuplicates(object obj) {
    const std::size_t n = obj.size();
    if (n < 2) {
      return Status::Ok();
    }
    key_scratch.clear();
    for (auto field : obj) {
      key_scratch.push_back(field.key);
    }
    if (n <= 8) {
      for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t j = i + 1; j < n; ++j) {
          if (key_scratch[i] == key_scratch[j]) {
            return Bad("duplicate key '" + std::string(key_scratch[i]) + "'");
          }
        }
      }
      return Status::Ok();
    }
    std::sort(key_scratch.begin(), key_scratch.end());
    auto dup = std::adjacent_find(key_scratch.begin(), key_scratch.end());
    if (dup != key_scratch.end()) {
      return Bad("duplicate key '" + std::string(*dup) + "'");
    }
    return Status::Ok();
  }

  Result<Number> ReadNumber(element e, std::string_view what) {
    switch (e.type()) {
      case element_type::INT64:
        return Number::Int(e.get_int64().value_unsafe());
      case element_type::UINT64:
        return Bad(std::string(what) + " is an integer out of the signed 64-bit range");
      case element_type::DOUBLE: {
        const double d = e.get_double().value_unsafe();
        if (!std::isfinite(d)) {
          return Bad(std::string(what) + " is not a finite number");
        }
        return Number::Double(d);
      }
      default:
        return Bad(std::string(what) + " must be a number");
    }
  }

  // Writes `e` (inside an atomic array value) canonically: sorted keys, no whitespace.
  // `depth` is the nesting `e` has if it is a container; scalars do not nest.
  Status WriteCanonical(element e, std::uint32_t depth) {
    const element_type type = e.type();
    if (depth > limits.max_depth &&
        (type == element_type::ARRAY || type == element_type::OBJECT)) {
      return Bad("nesting deeper than " + std::to_string(limits.max_depth));
    }
    switch (type) {
      case element_type::ARRAY: {
        arena.push_back('[');
        bool first = true;
        simdjson::dom::array array = e.get_array().value_unsafe();
        for (element child : array) {
          if (!first) {
            arena.push_back(',');
          }
          first = false;
          LATTICE_RETURN_IF_ERROR(WriteCanonical(child, depth + 1));
        }
        arena.push_back(']');
        return Status::Ok();
      }
      case element_type::OBJECT: {
        object obj = e.get_object().value_unsafe();
        LATTICE_RETURN_IF_ERROR(CheckDuplicates(obj));
        std::vector<std::pair<std::string_view, element>> fields;
        fields.reserve(obj.size());
        for (auto field : obj) {
          fields.emplace_back(field.key, field.value);
        }
        std::sort(fields.begin(), fields.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        arena.push_back('{');
        bool first = true;
        for (auto& [k, v] : fields) {
          if (!first) {
            arena.push_back(',');
          }
          first = false;
          AppendJsonString(arena, k);
          arena.push_back(':');
          LATTICE_RETURN_IF_ERROR(WriteCanonical(v, depth + 1));
        }
        arena.push_back('}');
        return Status::Ok();
      }
      case element_type::STRING:
        AppendJsonString(arena, e.get_string().value_unsafe());
        return Status::Ok();
      case element_type::INT64:
      case element_type::UINT64:
      case element_type::DOUBLE: {
        LATTICE_ASSIGN_OR_RETURN(Number n, ReadNumber(e, "a number"));
        AppendJsonNumber(arena, n);
        return Status::Ok();
      }
      case element_type::BOOL:
        arena += e.get_bool().value_unsafe() ? "true" : "false";
        return Status::Ok();
      case element_type::NULL_VALUE:
        arena += "null";
        return Status::Ok();
    }
    return Bad("unknown JSON element");
  }

  // Returns true and fills `entry` if `obj` is an operator object ({"$op": n}).
  // An object with more keys than one is never an operator: a `$` key among others is reported
  // by WalkObject as "beside other keys".
  Result<bool> ReadOperator(object obj, BodyEntry& entry) {
    if (obj.size() != 1) {
      return false;
    }
    auto field = *obj.begin();
    const std::string_view op = field.key;
    if (op.empty() || op[0] != '$' || (op.size() >= 2 && op[1] == '$')) {
      return false;
    }
    if (op == "$inc") {
      entry.kind = OpKind::kInc;
    } else if (op == "$max") {
      entry.kind = OpKind::kMax;
    } else if (op == "$min") {
      entry.kind = OpKind::kMin;
    } else {
      return Bad("unknown operator '" + std::string(op) + "' (known: $inc, $max, $min)");
    }
    LATTICE_ASSIGN_OR_RETURN(entry.number, ReadNumber(field.value, "the operand of " + std::string(op)));
    if (entry.kind == OpKind::kInc) {
      if (entry.number.is_int) {
        shard.has_int_inc = true;
        const std::uint64_t mag = entry.number.i < 0
                                      ? static_cast<std::uint64_t>(0) - static_cast<std::uint64_t>(entry.number.i)
                                      : static_cast<std::uint64_t>(entry.number.i);
        shard.max_abs_inc = std::max(shard.max_abs_inc, mag);
      } else {
        shard.has_float_inc = true;
      }
    }
    return true;
  }

  // Flattens the fields of body object `obj` at nesting `depth` (the body object is 1).
  Status WalkObject(object obj, std::uint32_t depth) {
    if (depth > limits.max_depth) {
      return Bad("nesting deeper than " + std::to_string(limits.max_depth));
    }
    LATTICE_RETURN_IF_ERROR(CheckDuplicates(obj));
    for (auto field : obj) {
      std::string_view key = field.key;
      if (!key.empty() && key[0] == '$') {
        if (key.size() >= 2 && key[1] == '$') {
          key.remove_prefix(1);
        } else if (depth == 1) {
          return Bad("operator '" + std::string(key) + "' at the top level of the body");
        } else {
          return Bad("operator '" + std::string(key) + "' beside other keys");
        }
      }
      path.push_back(key);
      const std::size_t index = shard.entries.size();
      shard.entries.emplace_back();
      spans.emplace_back(0, 0);
      {
        BodyEntry& entry = shard.entries.back();
        entry.key = key;
        entry.depth = depth;
      }
      element value = field.value;
      switch (value.type()) {
        case element_type::NULL_VALUE:
          shard.entries[index].kind = OpKind::kErase;
          break;
        case element_type::OBJECT: {
          object child = value.get_object().value_unsafe();
          if (depth + 1 > limits.max_depth) {
            return Bad("nesting deeper than " + std::to_string(limits.max_depth));
          }
          BodyEntry op_entry;
          LATTICE_ASSIGN_OR_RETURN(bool is_op, ReadOperator(child, op_entry));
          if (is_op) {
            shard.entries[index].kind = op_entry.kind;
            shard.entries[index].number = op_entry.number;
          } else {
            shard.entries[index].kind = OpKind::kObject;
            LATTICE_RETURN_IF_ERROR(WalkObject(child, depth + 1));
          }
          break;
        }
        default: {
          const auto start = static_cast<std::uint32_t>(arena.size());
          LATTICE_RETURN_IF_ERROR(WriteCanonical(value, depth + 1));
          shard.entries[index].kind = OpKind::kSet;
          spans[index] = {start, static_cast<std::uint32_t>(arena.size()) - start};
          break;
        }
      }
      shard.entries[index].end = static_cast<std::uint32_t>(shard.entries.size());
      path.pop_back();
    }
    return Status::Ok();
  }

  void Reset() {
    shard.entries.clear();
    shard.topic = {};
    shard.partition = -1;
    shard.offset = -1;
    shard.has_int_inc = false;
    shard.has_float_inc = false;
    shard.max_abs_inc = 0;
    arena.clear();
    spans.clear();
    path.clear();
  }

  Status CheckBodySize(element body) {
    minify_scratch = simdjson::minify(body);
    if (minify_scratch.size() > limits.max_body_bytes) {
      return Status::InvalidArgument("body of " + std::to_string(minify_scratch.size()) +
                                     " bytes exceeds the limit of " +
                                     std::to_string(limits.max_body_bytes) + " bytes");
    }
    return Status::Ok();
  }

  Status DecodeBodyElement(element body) {
    if (body.type() != element_type::OBJECT) {
      return Status::InvalidArgument("the shard body must be a JSON object");
    }
    LATTICE_RETURN_IF_ERROR(WalkObject(body.get_object().value_unsafe(), 1));
    for (std::size_t i = 0; i < spans.size(); ++i) {
      if (shard.entries[i].kind == OpKind::kSet) {
        shard.entries[i].value = std::string_view(arena.data() + spans[i].first, spans[i].second);
      }
    }
    // Hash ts and the canonical body so a conflicting redelivery is recognised. Key order does
    // not matter (a body re-serialised with other key order is the same shard): a subtree's hash
    // mixes its entry with the SUM of its children's hashes, which is order-independent.
    const std::size_t n = shard.entries.size();
    subtree_hash.resize(n);
    for (std::size_t i = n; i-- > 0;) {
      const BodyEntry& e = shard.entries[i];
      std::uint64_t children = 0;
      for (std::size_t j = i + 1; j < e.end; j = shard.entries[j].end) {
        children += subtree_hash[j];
      }
      hash_scratch.clear();
      char header[2] = {static_cast<char>(e.kind), static_cast<char>(e.number.is_int)};
      hash_scratch.append(header, 2);
      hash_scratch.append(reinterpret_cast<const char*>(&children), 8);
      if (e.kind == OpKind::kSet) {
        const auto key_size = static_cast<std::uint32_t>(e.key.size());
        hash_scratch.append(reinterpret_cast<const char*>(&key_size), 4);
        hash_scratch.append(e.key);
        hash_scratch.append(e.value);
      } else {
        hash_scratch.append(e.key);
        if (e.kind != OpKind::kObject && e.kind != OpKind::kErase) {
          hash_scratch.append(reinterpret_cast<const char*>(e.number.is_int ? static_cast<const void*>(&e.number.i)
                                                                            : static_cast<const void*>(&e.number.d)),
                              8);
        }
      }
      subtree_hash[i] = XXH3_64bits(hash_scratch.data(), hash_scratch.size());
    }
    std::uint64_t top = 0;
    for (std::size_t j = 0; j < n; j = shard.entries[j].end) {
      top += subtree_hash[j];
    }
    hash_scratch.clear();
    hash_scratch.append(reinterpret_cast<const char*>(&shard.ts), sizeof(shard.ts));
    hash_scratch.append(reinterpret_cast<const char*>(&top), sizeof(top));
    shard.hash = XXH3_64bits(hash_scratch.data(), hash_scratch.size());
    return Status::Ok();
  }
};

ShardDecoder::ShardDecoder(DecodeLimits limits) : limits_(limits), impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  // Two levels more than the body limit: the envelope, and one to report the body's own excess.
  if (impl_->parser.allocate(64 * 1024, limits.max_depth + 2) != simdjson::SUCCESS) {
    // Allocation failure here only means the first parse allocates instead.
    impl_->parser = simdjson::dom::parser();
  }
}

ShardDecoder::~ShardDecoder() = default;

Result<const Shard*> ShardDecoder::DecodeEnvelope(std::string_view line, bool padded) {
  Impl& d = *impl_;
  d.Reset();
  // An envelope line has some room around its body; anything much larger than the body limit is
  // refused before parsing.
  if (line.size() > limits_.max_body_bytes + 64 * 1024) {
    return Status::InvalidArgument("line of " + std::to_string(line.size()) +
                                   " bytes exceeds the body limit of " +
                                   std::to_string(limits_.max_body_bytes) + " bytes");
  }
  auto parsed = d.parser.parse(line.data(), line.size(), !padded);
  if (parsed.error()) {
    if (parsed.error() == simdjson::DEPTH_ERROR) {
      return Status::InvalidArgument("nesting deeper than " + std::to_string(limits_.max_depth));
    }
    return Status::InvalidArgument(ErrorText(parsed.error()));
  }
  element root = parsed.value_unsafe();
  if (root.type() != element_type::OBJECT) {
    return Status::InvalidArgument("the envelope must be a JSON object");
  }
  object env = root.get_object().value_unsafe();
  bool have_blade = false, have_seq = false, have_ts = false, have_shard = false;
  element body;
  bool seen_topic = false, seen_partition = false, seen_offset = false;
  for (auto field : env) {
    const std::string_view k = field.key;
    element v = field.value;
    auto dup = [&](bool& seen) -> Status {
      if (seen) {
        return Status::InvalidArgument("envelope field '" + std::string(k) + "' appears twice");
      }
      seen = true;
      return Status::Ok();
    };
    if (k == "blade") {
      LATTICE_RETURN_IF_ERROR(dup(have_blade));
      if (v.type() != element_type::STRING) {
        return Status::InvalidArgument("envelope field 'blade' must be a string");
      }
      d.shard.blade = v.get_string().value_unsafe();
      if (d.shard.blade.empty() || d.shard.blade.size() > limits_.max_blade_bytes) {
        return Status::InvalidArgument("envelope field 'blade' must have 1 to " +
                                       std::to_string(limits_.max_blade_bytes) + " bytes");
      }
    } else if (k == "seq") {
      LATTICE_RETURN_IF_ERROR(dup(have_seq));
      if (v.type() == element_type::INT64 && v.get_int64().value_unsafe() >= 0) {
        d.shard.seq = static_cast<std::uint64_t>(v.get_int64().value_unsafe());
      } else if (v.type() == element_type::UINT64) {
        d.shard.seq = v.get_uint64().value_unsafe();
      } else {
        return Status::InvalidArgument("envelope field 'seq' must be a non-negative integer");
      }
    } else if (k == "ts") {
      LATTICE_RETURN_IF_ERROR(dup(have_ts));
      if (v.type() != element_type::INT64 || v.get_int64().value_unsafe() < 0) {
        return Status::InvalidArgument(
            "envelope field 'ts' must be a non-negative integer (milliseconds)");
      }
      d.shard.ts = v.get_int64().value_unsafe();
    } else if (k == "shard") {
      LATTICE_RETURN_IF_ERROR(dup(have_shard));
      body = v;
    } else if (k == "topic") {
      LATTICE_RETURN_IF_ERROR(dup(seen_topic));
      if (v.type() != element_type::STRING) {
        return Status::InvalidArgument("envelope field 'topic' must be a string");
      }
      d.shard.topic = v.get_string().value_unsafe();
    } else if (k == "partition" || k == "offset") {
      LATTICE_RETURN_IF_ERROR(dup(k == "partition" ? seen_partition : seen_offset));
      if (v.type() != element_type::INT64 || v.get_int64().value_unsafe() < 0) {
        return Status::InvalidArgument("envelope field '" + std::string(k) +
                                       "' must be a non-negative integer");
      }
      (k == "partition" ? d.shard.partition : d.shard.offset) = v.get_int64().value_unsafe();
    }
    // Other fields are ignored, so newer writers can add some.
  }
  if (!have_blade || !have_seq || !have_ts || !have_shard) {
    const char* missing = !have_blade ? "blade" : !have_seq ? "seq" : !have_ts ? "ts" : "shard";
    return Status::InvalidArgument(std::string("envelope field '") + missing + "' is missing");
  }
  if (line.size() > limits_.max_body_bytes) {
    LATTICE_RETURN_IF_ERROR(d.CheckBodySize(body));
  }
  LATTICE_RETURN_IF_ERROR(d.DecodeBodyElement(body));
  return &d.shard;
}

Result<const Shard*> ShardDecoder::DecodeBody(std::string_view body, std::string_view blade,
                                              std::uint64_t seq, std::int64_t ts) {
  Impl& d = *impl_;
  d.Reset();
  if (body.size() > limits_.max_body_bytes) {
    return Status::InvalidArgument("body of " + std::to_string(body.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits_.max_body_bytes) + " bytes");
  }
  if (blade.empty() || blade.size() > limits_.max_blade_bytes) {
    return Status::InvalidArgument("blade id must have 1 to " +
                                   std::to_string(limits_.max_blade_bytes) + " bytes");
  }
  auto parsed = d.parser.parse(body.data(), body.size(), true);
  if (parsed.error()) {
    if (parsed.error() == simdjson::DEPTH_ERROR) {
      return Status::InvalidArgument("nesting deeper than " + std::to_string(limits_.max_depth));
    }
    return Status::InvalidArgument(ErrorText(parsed.error()));
  }
  d.shard.blade = blade;
  d.shard.seq = seq;
  d.shard.ts = ts;
  LATTICE_RETURN_IF_ERROR(d.DecodeBodyElement(parsed.value_unsafe()));
  return &d.shard;
}

}  // namespace lattice::core
