// ShardDecoder: simdjson DOM parse, then one validating walk that flattens the body into
// BodyEntry records (see shard.h). simdjson stays inside this file.
//
// There are two walks over the parsed document. The fast walk (Fast*) is the one every good shard
// takes: it validates, flattens, writes canonical values and hashes in one pass, without building
// error messages or a path. It only has to answer "good or bad"; when it says bad, the careful walk
// (the rest of Impl) runs over the same parsed document and produces the exact reason, with the
// same precedence between errors as always (e.g. a duplicate key is reported before a problem
// inside the duplicated values). Bad shards are rare, so they may pay for two walks. The fast walk
// must never accept what the careful walk rejects, and on acceptance must produce exactly what the
// careful walk would (entries, canonical values, flags and the same hash bits: hashes are stored
// in state directories to recognise redeliveries, so they must not change).
#include <simdjson.h>

// Inlined: the per-entry hashes are XXH3 over a few dozen bytes, where the call overhead of the
// shared library is a large part of the cost. Same algorithm, same bits as the library.
#define XXH_INLINE_ALL
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include <xxhash.h>

#include "lattice/core/copy_small.h"
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

// True if any byte of `s` must be escaped in canonical JSON: below 0x20, '"' or '\\'.
// Eight bytes at a time (SWAR): values are mostly short, clean strings.
inline bool NeedsEscape(std::string_view s) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
  const char* p = s.data();
  std::size_t n = s.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    // A byte is "zero" in x ^ c where it equals c; (x - 1) & ~x & high finds zero bytes exactly
    // when the bytes do not borrow from each other, which the standard form below guarantees.
    const std::uint64_t quote = w ^ (kOnes * '"');
    const std::uint64_t slash = w ^ (kOnes * '\\');
    const std::uint64_t t =
        ((w - kOnes * 0x20) & ~w) | ((quote - kOnes) & ~quote) | ((slash - kOnes) & ~slash);
    if ((t & kHigh) != 0) {
      return true;
    }
    p += 8;
    n -= 8;
  }
  for (; n > 0; --n, ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c < 0x20 || c == '"' || c == '\\') {
      return true;
    }
  }
  return false;
}

// Writes `v` in decimal at `out` (room for 20 bytes), exactly as std::to_chars; returns the end.
inline char* WriteInt(char* out, std::int64_t v) {
  std::uint64_t mag = static_cast<std::uint64_t>(v);
  if (v < 0) {
    *out++ = '-';
    mag = std::uint64_t{0} - mag;
  }
  char tmp[20];
  char* t = tmp + sizeof(tmp);
  do {
    *--t = static_cast<char>('0' + mag % 10);
    mag /= 10;
  } while (mag != 0);
  const auto len = static_cast<std::size_t>(tmp + sizeof(tmp) - t);
  std::memcpy(out, t, len);
  return out + len;
}

// The value of eight ASCII digits loaded little-endian (the first digit in the lowest byte).
inline std::uint64_t EightDigits(std::uint64_t w) {
  w -= 0x3030303030303030ULL;
  w = (w * 10) + (w >> 8);  // pairs of digits in every other byte
  w = (((w & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
       (((w >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >>
      32;
  return w;
}

// XXH3_64bits with its size dispatch inlined for the short inputs of the entry hashes: the same
// steps as XXH3_64bits_internal with the default secret and seed 0, so the same bits (hashes are
// stored in state directories). The library entry point stayed an out-of-line call.
__attribute__((always_inline)) inline std::uint64_t Xxh3(const char* p, std::size_t len) {
  const auto* in = reinterpret_cast<const xxh_u8*>(p);
  if (len <= 16) {
    return XXH3_len_0to16_64b(in, len, XXH3_kSecret, 0);
  }
  if (len <= 128) {
    return XXH3_len_17to128_64b(in, len, XXH3_kSecret, sizeof(XXH3_kSecret), 0);
  }
  return XXH3_64bits(p, len);
}

// JSON's white space.
inline bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Moves past white space from `i`.
inline std::size_t SkipJsonSpace(std::string_view s, std::size_t i) {
  while (i < s.size() && IsJsonSpace(s[i])) {
    ++i;
  }
  return i;
}

// REQUIRES: s[i] == '"' starts a valid string. Returns the index past its closing quote.
inline std::size_t SkipJsonString(std::string_view s, std::size_t i) {
  for (++i; s[i] != '"'; ++i) {
    if (s[i] == '\\') {
      ++i;  // the escaped byte never ends the string
    }
  }
  return i + 1;
}

// REQUIRES: a valid JSON value starts at s[i]. Returns the index past it.
std::size_t SkipJsonValue(std::string_view s, std::size_t i) {
  if (s[i] == '"') {
    return SkipJsonString(s, i);
  }
  if (s[i] == '{' || s[i] == '[') {
    std::size_t depth = 0;
    while (true) {
      const char c = s[i];
      if (c == '"') {
        i = SkipJsonString(s, i);
        continue;
      }
      ++i;
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i;
      }
    }
  }
  while (i < s.size() && !IsJsonSpace(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') {
    ++i;
  }
  return i;
}

// The text of the value of field number `field` (0-based) of the object in `line`.
// REQUIRES: `line` is valid JSON, an object with more than `field` fields.
std::string_view FieldText(std::string_view line, std::size_t field) {
  std::size_t i = SkipJsonSpace(line, 0) + 1;  // past '{'
  for (std::size_t f = 0;; ++f) {
    i = SkipJsonString(line, SkipJsonSpace(line, i));                           // past the key
    const std::size_t begin = SkipJsonSpace(line, SkipJsonSpace(line, i) + 1);  // past ':'
    const std::size_t end = SkipJsonValue(line, begin);
    if (f == field) {
      return line.substr(begin, end - begin);
    }
    i = SkipJsonSpace(line, end) + 1;  // past ','
  }
}

// The bytes of `s` (at most 8) as one little-endian word, as a load from memory would give them.
template <std::size_t N>
constexpr std::uint64_t Word(const char (&s)[N]) {
  static_assert(N - 1 <= 8);
  std::uint64_t w = 0;
  for (std::size_t i = 0; i + 1 < N; ++i) {
    w |= std::uint64_t{static_cast<unsigned char>(s[i])} << (8 * i);
  }
  return w;
}

// The envelope fields ScanEnvelope knows.
enum class Field : std::uint8_t { kBlade, kSeq, kTs, kShard, kTopic, kPartition, kOffset, kOther };

// k == name with the length known at compile time: string_view's operator== stayed an
// out-of-line call per envelope field.
template <std::size_t N>
inline bool IsKey(std::string_view k, const char (&name)[N]) {
  return k.size() == N - 1 && std::memcmp(k.data(), name, N - 1) == 0;
}

}  // namespace

struct ShardDecoder::Impl {
  simdjson::dom::parser parser;
  Shard shard;
  std::string arena;                                           // canonical values of kSet entries
  std::vector<std::pair<std::uint32_t, std::uint32_t>> spans;  // arena span per entry
  std::vector<std::string_view> path;  // keys from the body root to the current position
  std::vector<std::string_view> key_scratch;
  std::string hash_scratch;
  std::vector<std::uint64_t> subtree_hash;
  std::string minify_scratch;
  DecodeLimits limits;
  // Fast walk state. The arena is written through `arena_len` (its size() is only capacity):
  // std::string::append is not inlined and dominated the walk.
  std::size_t arena_len = 0;
  struct ValueSpan {
    std::uint32_t entry, offset, size;
  };
  std::vector<ValueSpan> value_spans;       // where each kSet value lies in the arena
  std::vector<std::string_view> fast_keys;  // duplicate checks of objects with many keys

  // Makes room for `n` more bytes at arena_len and returns where they go.
  char* ArenaRoom(std::size_t n) {
    if (arena_len + n > arena.size()) {
      arena.resize(std::max(arena.size() * 2, arena_len + n + 256));
    }
    return arena.data() + arena_len;
  }
  void ArenaPut(const char* p, std::size_t n) {
    std::memcpy(ArenaRoom(n), p, n);
    arena_len += n;
  }
  void ArenaPut(char c) {
    *ArenaRoom(1) = c;
    ++arena_len;
  }

  // Appends `s` as a canonical JSON string literal.
  void FastString(std::string_view s) {
    if (NeedsEscape(s)) {
      // Rare: escape through the shared writer into a scratch string.
      hash_scratch.clear();
      AppendJsonString(hash_scratch, s);
      ArenaPut(hash_scratch.data(), hash_scratch.size());
      return;
    }
    PutQuoted(s);
  }

  // Appends `s`, which needs no escapes, in quotes.
  void PutQuoted(std::string_view s) {
    char* out = ArenaRoom(s.size() + 2);
    out[0] = '"';
    CopySmall(out + 1, s.data(), s.size());
    out[s.size() + 1] = '"';
    arena_len += s.size() + 2;
  }

  // The fast walk reads simdjson's tape directly (simdjson's doc/tape.md): one 64-bit word per
  // scalar or bracket, the type in the top byte; '{' and '[' hold the index after their closing
  // word in the low 32 bits and the element count in bits 32..55; strings hold an offset into
  // the string buffer (a 4-byte length, then the bytes); 'l', 'u' and 'd' take the next word for
  // the value. Going through dom::element costs about twice as much (every access re-reads the
  // type and re-checks it). The layout is checked once per decoder (TapeLayoutIsKnown); if a
  // simdjson version ever lays it out differently, every shard takes the careful walk instead.
  const std::uint64_t* tape = nullptr;
  const std::uint8_t* strings = nullptr;
  bool tape_ok = false;
  Walk first_walk = Walk::kToken;  // tests may skip the faster walks
  Walk last_walk = Walk::kCareful;

  char Type(std::size_t i) const { return static_cast<char>(tape[i] >> 56); }
  std::string_view Str(std::size_t i) const {
    const std::size_t offset = tape[i] & simdjson::internal::JSON_VALUE_MASK;
    std::uint32_t len;
    std::memcpy(&len, strings + offset, sizeof(len));
    return {reinterpret_cast<const char*>(strings + offset + sizeof(len)), len};
  }
  std::int64_t Int(std::size_t i) const {
    std::int64_t v;
    std::memcpy(&v, &tape[i + 1], sizeof(v));
    return v;
  }
  double Double(std::size_t i) const {
    double v;
    std::memcpy(&v, &tape[i + 1], sizeof(v));
    return v;
  }
  // Index one past the element at `i`.
  std::size_t After(std::size_t i) const {
    switch (Type(i)) {
      case '{':
      case '[':
        return static_cast<std::uint32_t>(tape[i]);
      case 'l':
      case 'u':
      case 'd':
        return i + 2;
      default:
        return i + 1;
    }
  }
  // Fields of the object at `i` (as the tape counts them, saturating like obj.size()).
  std::size_t Count(std::size_t i) const {
    return static_cast<std::size_t>((tape[i] >> 32) & simdjson::internal::JSON_COUNT_MASK);
  }
  // Index of the closing word of the container at `i`.
  std::size_t End(std::size_t i) const { return static_cast<std::uint32_t>(tape[i]) - 1; }

  // Parses a document using every tape word kind and checks the layout the fast walk assumes.
  bool TapeLayoutIsKnown() {
    static constexpr char kProbe[] =
        R"({"ab":[-3,18446744073709551615,0.5,"xyz",true,false,null,{}],"c":{"d":1}})";
    auto parsed = parser.parse(kProbe, sizeof(kProbe) - 1, true);
    if (parsed.error()) {
      return false;
    }
    tape = parser.doc.tape.get();
    strings = parser.doc.string_buf.get();
    const std::size_t root = 1;
    if (Type(0) != 'r' || Type(root) != '{' || Count(root) != 2 || Str(2) != "ab" ||
        Type(3) != '[' || Count(3) != 8) {
      return false;
    }
    std::size_t i = 4;
    if (Type(i) != 'l' || Int(i) != -3) return false;
    i = After(i);
    if (Type(i) != 'u' || static_cast<std::uint64_t>(Int(i)) != 18446744073709551615ULL)
      return false;
    i = After(i);
    if (Type(i) != 'd' || Double(i) != 0.5) return false;
    i = After(i);
    if (Type(i) != '"' || Str(i) != "xyz") return false;
    i = After(i);
    if (Type(i) != 't' || Type(i + 1) != 'f' || Type(i + 2) != 'n') return false;
    i += 3;
    if (Type(i) != '{' || Count(i) != 0 || Type(End(i)) != '}') return false;
    i = After(i);
    if (Type(i) != ']' || After(3) != i + 1) return false;
    ++i;
    if (Str(i) != "c" || Type(i + 1) != '{' || Count(i + 1) != 1 || Str(i + 2) != "d") {
      return false;
    }
    i = After(i + 1);
    return Type(i) == '}' && End(root) == i && After(root) == i + 1 && Type(i + 1) == 'r';
  }

  // Reads an operand; false where ReadNumber fails.
  bool FastNumber(std::size_t i, Number& n) const {
    switch (Type(i)) {
      case 'l':
        n = Number::Int(Int(i));
        return true;
      case 'd': {
        const double d = Double(i);
        if (!std::isfinite(d)) {
          return false;
        }
        n = Number::Double(d);
        return true;
      }
      default:
        return false;
    }
  }

  // True if no key of the object at `obj` appears twice, as CheckDuplicates decides.
  bool FastNoDuplicates(std::size_t obj) {
    const std::size_t n = Count(obj);
    if (n < 2) {
      return true;
    }
    const std::size_t end = End(obj);
    if (n <= 16) {
      std::string_view keys[16];
      std::size_t k = 0;
      for (std::size_t j = obj + 1; j < end; j = After(j + 1)) {
        const std::string_view key = Str(j);
        for (std::size_t m = 0; m < k; ++m) {
          if (keys[m].size() == key.size() &&
              std::memcmp(keys[m].data(), key.data(), key.size()) == 0) {
            return false;
          }
        }
        keys[k++] = key;
      }
      return true;
    }
    fast_keys.clear();
    for (std::size_t j = obj + 1; j < end; j = After(j + 1)) {
      fast_keys.push_back(Str(j));
    }
    std::sort(fast_keys.begin(), fast_keys.end());
    return std::adjacent_find(fast_keys.begin(), fast_keys.end()) == fast_keys.end();
  }

  // WriteCanonical without messages, for the element at tape index `i`.
  bool FastCanonical(std::size_t i, std::uint32_t depth) {
    switch (Type(i)) {
      case '"':
        FastString(Str(i));
        return true;
      case 'l': {
        char* out = ArenaRoom(24);
        arena_len = static_cast<std::size_t>(WriteInt(out, Int(i)) - arena.data());
        return true;
      }
      case 'd': {
        const double d = Double(i);
        if (!std::isfinite(d)) {
          return false;
        }
        hash_scratch.clear();
        AppendJsonDouble(hash_scratch, d);
        ArenaPut(hash_scratch.data(), hash_scratch.size());
        return true;
      }
      case 't':
        ArenaPut("true", 4);
        return true;
      case 'f':
        ArenaPut("false", 5);
        return true;
      case 'n':
        ArenaPut("null", 4);
        return true;
      case '[': {
        if (depth > limits.max_depth) {
          return false;
        }
        ArenaPut('[');
        const std::size_t end = End(i);
        for (std::size_t j = i + 1; j < end; j = After(j)) {
          if (j != i + 1) {
            ArenaPut(',');
          }
          if (!FastCanonical(j, depth + 1)) {
            return false;
          }
        }
        ArenaPut(']');
        return true;
      }
      case '{': {
        if (depth > limits.max_depth || !FastNoDuplicates(i)) {
          return false;
        }
        std::vector<std::pair<std::string_view, std::size_t>> fields;
        fields.reserve(Count(i));
        const std::size_t end = End(i);
        for (std::size_t j = i + 1; j < end; j = After(j + 1)) {
          fields.emplace_back(Str(j), j + 1);
        }
        std::sort(fields.begin(), fields.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        ArenaPut('{');
        bool first = true;
        for (auto& [k, v] : fields) {
          if (!first) {
            ArenaPut(',');
          }
          first = false;
          FastString(k);
          ArenaPut(':');
          if (!FastCanonical(v, depth + 1)) {
            return false;
          }
        }
        ArenaPut('}');
        return true;
      }
      default:  // 'u': an integer out of the signed 64-bit range
        return false;
    }
  }

  // XXH3 of one entry, laid out exactly as DecodeBodyElement lays it out.
  __attribute__((always_inline)) std::uint64_t EntryHash(const BodyEntry& e, std::uint64_t children,
                                                         std::string_view value) {
    const std::size_t size = 2 + 8 + 4 + e.key.size() + value.size() + 8;
    char stack[256];
    char* buf = stack;
    if (size > sizeof(stack)) {
      hash_scratch.resize(size);
      buf = hash_scratch.data();
    }
    char* p = buf;
    p[0] = static_cast<char>(e.kind);
    p[1] = static_cast<char>(e.number.is_int);
    std::memcpy(p + 2, &children, 8);
    p += 10;
    if (e.kind == OpKind::kSet) {
      const auto key_size = static_cast<std::uint32_t>(e.key.size());
      std::memcpy(p, &key_size, 4);
      p += 4;
      CopySmall(p, e.key.data(), e.key.size());
      p += e.key.size();
      CopySmall(p, value.data(), value.size());
      p += value.size();
    } else {
      CopySmall(p, e.key.data(), e.key.size());
      p += e.key.size();
      if (e.kind != OpKind::kObject && e.kind != OpKind::kErase) {
        if (e.number.is_int) {
          std::memcpy(p, &e.number.i, 8);
        } else {
          std::memcpy(p, &e.number.d, 8);
        }
        p += 8;
      }
    }
    return Xxh3(buf, static_cast<std::size_t>(p - buf));
  }

  // WalkObject without messages, for the object at tape index `obj`; adds the subtree hashes of
  // its fields to `hash_sum`.
  bool FastWalk(std::size_t obj, std::uint32_t depth, std::uint64_t& hash_sum) {
    if (depth > limits.max_depth) {
      return false;
    }
    // Duplicates: small objects are checked as the keys come (the walk stops at the first bad
    // thing anyway), bigger ones up front.
    const std::size_t count = Count(obj);
    if (count > 16 && !FastNoDuplicates(obj)) {
      return false;
    }
    std::string_view seen[16];
    std::size_t n_seen = 0;
    const std::size_t end = End(obj);
    for (std::size_t j = obj + 1; j < end;) {
      std::string_view key = Str(j);
      const std::size_t v = j + 1;
      j = After(v);
      if (count <= 16) {
        for (std::size_t m = 0; m < n_seen; ++m) {
          if (seen[m].size() == key.size() &&
              std::memcmp(seen[m].data(), key.data(), key.size()) == 0) {
            return false;
          }
        }
        seen[n_seen++] = key;
      }
      if (!UnescapeKey(key)) {
        return false;
      }
      const auto index = static_cast<std::uint32_t>(shard.entries.size());
      BodyEntry* entry = &shard.entries.emplace_back();
      entry->key = key;
      entry->depth = depth;
      std::uint64_t children = 0;
      std::string_view canonical;
      const char type = Type(v);
      if (type == 'n') {
        entry->kind = OpKind::kErase;
      } else if (type == '{') {
        if (depth + 1 > limits.max_depth) {
          return false;
        }
        const std::string_view op = Count(v) == 1 ? Str(v + 1) : std::string_view();
        if (!op.empty() && op[0] == '$' && !(op.size() >= 2 && op[1] == '$')) {
          if (!OperatorKind(op, entry->kind) || !FastNumber(v + 2, entry->number)) {
            return false;
          }
          if (entry->kind == OpKind::kInc) {
            NoteInc(entry->number);
          }
        } else {
          entry->kind = OpKind::kObject;
          if (!FastWalk(v, depth + 1, children)) {
            return false;
          }
          entry = &shard.entries[index];  // the vector may have grown
        }
      } else {
        const std::size_t start = arena_len;
        if (!FastCanonical(v, depth + 1)) {
          return false;
        }
        entry->kind = OpKind::kSet;
        const auto size = static_cast<std::uint32_t>(arena_len - start);
        value_spans.push_back({index, static_cast<std::uint32_t>(start), size});
        canonical = std::string_view(arena.data() + start, size);
      }
      entry->end = static_cast<std::uint32_t>(shard.entries.size());
      hash_sum += EntryHash(*entry, children, canonical);
    }
    return true;
  }

  // The operator named `op` ($inc, $max or $min); false for any other name.
  static bool OperatorKind(std::string_view op, OpKind& kind) {
    if (IsKey(op, "$inc")) {
      kind = OpKind::kInc;
    } else if (IsKey(op, "$max")) {
      kind = OpKind::kMax;
    } else if (IsKey(op, "$min")) {
      kind = OpKind::kMin;
    } else {
      return false;
    }
    return true;
  }

  // Records an `$inc` operand in the shard's summary (whether it has integer or float increments,
  // and the largest integer magnitude).
  void NoteInc(const Number& n) {
    if (!n.is_int) {
      shard.has_float_inc = true;
      return;
    }
    shard.has_int_inc = true;
    const std::uint64_t mag = n.i < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(n.i)
                                      : static_cast<std::uint64_t>(n.i);
    shard.max_abs_inc = std::max(shard.max_abs_inc, mag);
  }

  // A body key as the fast walks store it: "$$x" stands for the key "$x"; false for an operator
  // key ("$x"), which is an error where a field is expected (the careful walk says which).
  static bool UnescapeKey(std::string_view& key) {
    if (!key.empty() && key[0] == '$') {
      if (key.size() >= 2 && key[1] == '$') {
        key.remove_prefix(1);
      } else {
        return false;  // an operator at the top or beside other keys
      }
    }
    return true;
  }

  // Points the fast walk at the document just parsed.
  void UseTape() {
    tape = parser.doc.tape.get();
    strings = parser.doc.string_buf.get();
  }

  // DecodeBodyElement without messages, for the body at tape index `body`. On false the shard
  // is half built; the caller resets it.
  bool FastBody(std::size_t body) {
    if (Type(body) != '{') {
      return false;
    }
    arena_len = 0;
    value_spans.clear();
    std::uint64_t top = 0;
    if (!FastWalk(body, 1, top)) {
      return false;
    }
    for (const ValueSpan& v : value_spans) {
      shard.entries[v.entry].value = std::string_view(arena.data() + v.offset, v.size);
    }
    char buf[16];
    std::memcpy(buf, &shard.ts, 8);
    std::memcpy(buf + 8, &top, 8);
    shard.hash = XXH3_64bits(buf, sizeof(buf));
    return true;
  }

  // The envelope fields as DecodeEnvelope's loop reads them, without messages. Returns the tape
  // index of the body, or 0 if the careful walk must decide.
  std::size_t FastEnvelope() {
    const std::size_t root = 1;
    if (Type(root) != '{') {
      return 0;
    }
    std::size_t body = 0;
    bool have_blade = false, have_seq = false, have_ts = false;
    bool seen_topic = false, seen_partition = false, seen_offset = false;
    auto take = [](bool& seen) {
      const bool was = seen;
      seen = true;
      return !was;
    };
    auto non_negative = [this](std::size_t i) { return Type(i) == 'l' && Int(i) >= 0; };
    const std::size_t end = End(root);
    for (std::size_t j = root + 1; j < end;) {
      const std::string_view k = Str(j);
      const std::size_t v = j + 1;
      j = After(v);
      if (IsKey(k, "blade")) {
        if (!take(have_blade) || Type(v) != '"') {
          return 0;
        }
        shard.blade = Str(v);
        if (shard.blade.empty() || shard.blade.size() > limits.max_blade_bytes) {
          return 0;
        }
      } else if (IsKey(k, "seq")) {
        if (!take(have_seq) || !(non_negative(v) || Type(v) == 'u')) {
          return 0;
        }
        shard.seq = static_cast<std::uint64_t>(Int(v));
      } else if (IsKey(k, "ts")) {
        if (!take(have_ts) || !non_negative(v)) {
          return 0;
        }
        shard.ts = Int(v);
      } else if (IsKey(k, "shard")) {
        if (body != 0) {
          return 0;
        }
        body = v;
      } else if (IsKey(k, "topic")) {
        if (!take(seen_topic) || Type(v) != '"') {
          return 0;
        }
        shard.topic = Str(v);
      } else if (IsKey(k, "partition") || IsKey(k, "offset")) {
        if (!take(IsKey(k, "partition") ? seen_partition : seen_offset) || !non_negative(v)) {
          return 0;
        }
        (IsKey(k, "partition") ? shard.partition : shard.offset) = Int(v);
      }
    }
    return have_blade && have_seq && have_ts ? body : 0;
  }

  // ---------------------------------------------------------------------------------------------
  // The token walk: simdjson's stage 1 only (UTF-8 validation, unclosed strings, control
  // characters in strings, and the index of every structural character and scalar start), then
  // one pass over that index that checks the JSON grammar itself and flattens, canonicalises and
  // hashes like FastWalk. It skips building and re-reading the DOM tape (stage 2), which cost
  // about as much as everything else together. It covers the common shapes only: a string with a
  // backslash, a number with a fraction or exponent or more than 18 digits, an object inside an
  // array, and anything unexpected hand the line on to the tape walk (Scan* return false). It
  // must never accept what the careful walk rejects, and on acceptance produce exactly what the
  // tape walk would.
  //
  // The line is copied into `scan_buf` (padded, with a NUL after it): the index refers to it, and
  // keys and strings are views into it, valid until the next decode as shard.h promises.
  std::unique_ptr<char[]> scan_buf;
  std::size_t scan_cap = 0;
  const char* sbuf = nullptr;               // the line in scan_buf
  const std::uint32_t* sidx = nullptr;      // stage 1's structural index
  std::uint32_t scan_n = 0;                 // number of structural indexes
  std::size_t scan_len = 0;                 // bytes of the text in scan_buf
  const char* tok_arena = nullptr;          // arena.data() when the token walk started
  std::uint32_t sp = 0;                     // the current token
  std::vector<std::string_view> scan_keys;  // keys of open objects with more than 16 keys
  bool scan_ok = false;                     // stage 1 behaves as checked by ScanLayoutIsKnown
  bool no_backslash = false;                // the line has no backslash at all
  bool stage1_done = false;                 // the last ScanStage1 succeeded (sidx, scan_n are its)
  std::uint32_t body_begin = 0, body_end = 0;  // ScanEnvelope: the body's bytes in the line

  // The token walk writes its entries in place into shard.entries, which keeps the previous
  // shard's entries (Reset clears it only for the other walks) and is cut to size at the end:
  // std::vector::emplace_back stayed an out-of-line call in ScanObject (with its register saves,
  // ~29 instructions per entry); this is a few stores, and a call only past the last size.
  std::uint32_t tok_count = 0;    // entries the token walk has made
  std::uint32_t tok_limit = 0;    // shard.entries.size()
  BodyEntry* tok_base = nullptr;  // shard.entries.data()

  void StartTokEntries() {
    tok_count = 0;
    tok_limit = static_cast<std::uint32_t>(shard.entries.size());
    tok_base = shard.entries.data();
  }
  __attribute__((always_inline)) BodyEntry* NewTokEntry() {
    if (tok_count == tok_limit) [[unlikely]] {
      GrowTokEntries();
    }
    BodyEntry* e = tok_base + tok_count++;
    *e = BodyEntry();
    return e;
  }
  __attribute__((noinline)) void GrowTokEntries() {
    shard.entries.emplace_back();
    tok_limit = static_cast<std::uint32_t>(shard.entries.size());
    tok_base = shard.entries.data();
  }

  // The first byte of the current token; NUL past the last one (stage 1 ends the index with the
  // line's length, where scan_buf holds a NUL, and NUL starts no token of a valid line).
  char Tok() const { return sbuf[sidx[sp]]; }

  // Runs stage 1 on a copy of `text`, or on `text` where it is if `in_place` (ValidateEnvelope:
  // nothing it returns points into scan_buf) and `padded` and the byte after it is white space
  // or NUL, as after LineReader's lines (their newline, a '\r' or the zeroed padding): that byte
  // then stops the walk where scan_buf's NUL would (no token starts or continues there, and no
  // 8-byte key pattern holds it), and the padding covers the bytes read past the line. False if
  // stage 1 fails (the DOM parse then says why).
  bool ScanStage1(std::string_view text, bool in_place = false, bool padded = false) {
    stage1_done = false;
    if (in_place && padded && !text.empty() &&
        (text.data()[text.size()] == '\0' || IsSpace(text.data()[text.size()]))) {
      sbuf = text.data();
    } else {
      const std::size_t need = text.size() + simdjson::SIMDJSON_PADDING;
      if (need > scan_cap) {
        scan_cap = std::max(need, scan_cap * 2);
        scan_buf = std::make_unique<char[]>(scan_cap);
      }
      std::memcpy(scan_buf.get(), text.data(), text.size());
      std::memset(scan_buf.get() + text.size(), 0, simdjson::SIMDJSON_PADDING);
      sbuf = scan_buf.get();
    }
    if (text.empty()) {
      return false;
    }
    if (!parser.implementation || text.size() > parser.capacity()) {
      if (parser.allocate(text.size(), limits.max_depth + 2) != simdjson::SUCCESS) {
        return false;
      }
    }
    auto& impl = *parser.implementation;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(sbuf);
    if (impl.stage1(bytes, text.size(), simdjson::stage1_mode::regular) != simdjson::SUCCESS) {
      return false;
    }
    scan_len = text.size();
    sidx = impl.structural_indexes.get();
    scan_n = impl.n_structural_indexes;
    sp = 0;
    no_backslash = std::memchr(text.data(), '\\', text.size()) == nullptr;
    stage1_done = true;
    return true;
  }

  // True at the end of a number or literal: white space or what may follow a value.
  static bool ScanTerminator(char c) {
    return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\n' || c == '\r' || c == '\t';
  }

  static bool IsSpace(char c) {
    constexpr std::uint64_t kSpaces =
        (1ULL << ' ') | (1ULL << '\n') | (1ULL << '\r') | (1ULL << '\t');
    const auto u = static_cast<unsigned char>(c);
    return u <= ' ' && ((kSpaces >> u) & 1) != 0;
  }

  // The string at the current token, if it has no backslash; moves past it.
  __attribute__((always_inline)) bool ScanString(std::string_view& out) {
    if (Tok() != '"') {
      return false;
    }
    const char* start = sbuf + sidx[sp] + 1;
    if (no_backslash) [[likely]] {
      // Without escapes the first quote after `start` closes the string, and only white space
      // can lie between it and the next token (stage 1 makes anything else a token), so the
      // closing quote is the last non-space before the next token.
      const char* end = sbuf + sidx[sp + 1];
      while (IsSpace(end[-1])) {
        --end;
      }
      --end;
      if (*end != '"' || end < start) {
        return false;
      }
      out = std::string_view(start, static_cast<std::size_t>(end - start));
      ++sp;
      return true;
    }
    // The length comes back by value: with `out` passed to this out-of-line call, every key the
    // token walk reads lived in memory, and copying it into its entry then waited for the
    // stores (a failed store-to-load forward, ~18% of ScanObject's samples).
    const std::ptrdiff_t n = ScanStringSlow(start);
    if (n < 0) {
      return false;
    }
    out = std::string_view(start, static_cast<std::size_t>(n));
    ++sp;
    return true;
  }

  // ScanString for a line with a backslash somewhere: looks for the end of the string itself.
  // Returns its length, or -1 if it has an escape.
  __attribute__((noinline)) std::ptrdiff_t ScanStringSlow(const char* start) {
    const char* p = start;
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
    constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
    // Stage 1 found the closing quote before the line's end, and the padding covers the last
    // eight bytes read.
    while (true) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      const std::uint64_t quote = w ^ (kOnes * '"');
      const std::uint64_t slash = w ^ (kOnes * '\\');
      // Exact for the lowest matching byte (borrows only run upwards).
      const std::uint64_t t = (((quote - kOnes) & ~quote) | ((slash - kOnes) & ~slash)) & kHigh;
      if (t != 0) {
        p += std::countr_zero(t) / 8;
        break;
      }
      p += 8;
    }
    if (*p != '"') {
      return -1;  // an escape: the tape walk unescapes
    }
    return p - start;
  }

  // The integer at the current token, if it has at most 18 digits and no fraction or exponent
  // (so it fits; "-0" is left to the tape walk); moves past it. The token runs up to the last
  // non-space before the next token: stage 1 starts a new token after any white space, so
  // anything glued to the digits ("1x", "1.5", "1\"a\"") is inside that span and fails the check.
  // If `text` is given, it gets the token's bytes: for an integer the token walk accepts (no '+',
  // no leading zero, no "-0") they are its canonical text, as WriteInt would write it.
  __attribute__((always_inline)) bool ScanInt(std::int64_t& out, std::string_view* text = nullptr) {
    const char* p = sbuf + sidx[sp];
    const char* end = sbuf + sidx[sp + 1];
    while (IsSpace(end[-1])) {
      --end;
    }
    if (text != nullptr) {
      *text = std::string_view(p, static_cast<std::size_t>(end - p));
    }
    const bool negative = *p == '-';
    p += negative ? 1 : 0;
    auto n = static_cast<std::size_t>(end - p);
    if (end <= p || n > 18 || (*p == '0' && (n > 1 || negative))) {
      return false;
    }
    // Eight digits at a time. Four to seven last digits are loaded as eight bytes (the line's
    // padding covers the bytes past the token), shifted so that only theirs remain and filled
    // with leading '0's; up to three go digit by digit (cheaper than the word for "1" or "42").
    static constexpr std::uint64_t kPow10[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
    std::uint64_t v = 0;
    while (n >= 4) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      std::uint64_t scale = 100000000;
      std::size_t used = 8;
      if (n < 8) {
        const auto drop = static_cast<unsigned>(8 * (8 - n));  // 8..32
        w = (w << drop) | (0x3030303030303030ULL >> (64 - drop));
        scale = kPow10[n];
        used = n;
      }
      if ((w & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL ||
          ((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL) {
        return false;
      }
      v = v * scale + EightDigits(w);
      p += used;
      n -= used;
    }
    for (; n > 0; --n, ++p) {
      const unsigned d = static_cast<unsigned char>(*p) - unsigned{'0'};
      if (d > 9) {
        return false;
      }
      v = v * 10 + d;
    }
    out = negative ? -static_cast<std::int64_t>(v) : static_cast<std::int64_t>(v);
    ++sp;
    return true;
  }

  __attribute__((always_inline)) bool ScanNonNegative(std::int64_t& out) {
    return Tok() != '-' && ScanInt(out);
  }

  // Moves past the literal `word` at the current token.
  template <std::size_t N>
  bool ScanLiteral(const char (&word)[N]) {
    const char* p = sbuf + sidx[sp];
    if (std::memcmp(p, word, N - 1) != 0 || !ScanTerminator(p[N - 1])) {
      return false;
    }
    ++sp;
    return true;
  }

  // FastCanonical for the value at the current token (arrays of scalars and arrays). Without
  // kBuild it only checks the value (ValidateEnvelope): the same decisions, nothing written.
  template <bool kBuild>
  bool ScanCanonical(std::uint32_t depth) {
    switch (Tok()) {
      case '"': {
        std::string_view s;
        if (!ScanString(s)) {
          return false;
        }
        // No backslash (ScanString), no quote (it ends the string), no control character (stage
        // 1 rejects them in strings): nothing to escape.
        if constexpr (kBuild) {
          PutQuoted(s);
        }
        return true;
      }
      case 't':
        if (!ScanLiteral("true")) return false;
        if constexpr (kBuild) ArenaPut("true", 4);
        return true;
      case 'f':
        if (!ScanLiteral("false")) return false;
        if constexpr (kBuild) ArenaPut("false", 5);
        return true;
      case 'n':
        if (!ScanLiteral("null")) return false;
        if constexpr (kBuild) ArenaPut("null", 4);
        return true;
      case '[': {
        if (depth > limits.max_depth) {
          return false;
        }
        ++sp;
        if constexpr (kBuild) ArenaPut('[');
        if (Tok() == ']') {
          ++sp;
          if constexpr (kBuild) ArenaPut(']');
          return true;
        }
        while (true) {
          if (!ScanCanonical<kBuild>(depth + 1)) {
            return false;
          }
          const char c = Tok();
          ++sp;
          if (c == ']') {
            if constexpr (kBuild) ArenaPut(']');
            return true;
          }
          if (c != ',') {
            return false;
          }
          if constexpr (kBuild) ArenaPut(',');
        }
      }
      default: {
        std::int64_t v;
        std::string_view text;
        if (!ScanInt(v, &text)) {
          return false;  // also '{' inside an array: the tape walk sorts its keys
        }
        if constexpr (kBuild) {
          // The token's bytes are the canonical text (ScanInt): no conversion back to decimal.
          CopySmall(ArenaRoom(text.size()), text.data(), text.size());
          arena_len += text.size();
        }
        return true;
      }
    }
  }

  // FastWalk for the object at the current token; adds its fields' subtree hashes to `hash_sum`.
  // Without kBuild it only checks the object (ValidateEnvelope): every decision is the same, but
  // no entry, canonical value or hash is made, and `hash_sum` is left alone.
  template <bool kBuild>
  bool ScanObject(std::uint32_t depth, std::uint64_t& hash_sum) {
    if (depth > limits.max_depth) {
      return false;
    }
    ++sp;  // '{'
    if (Tok() == '}') {
      ++sp;
      return true;
    }
    // Duplicates: pairwise among the first 16 keys (kept on the stack, uninitialised), then all
    // keys go to scan_keys, sorted when the object ends.
    struct KeyRef {
      const char* data;
      std::size_t size;
    };
    KeyRef keys[16];
    std::size_t count = 0;
    std::size_t base = 0;  // where this object's keys start in scan_keys, once count > 16
    while (true) {
      std::string_view key;
      if (!ScanString(key) || Tok() != ':') {
        return false;
      }
      ++sp;
      if (count < 16) {
        for (std::size_t m = 0; m < count; ++m) {
          if (keys[m].size == key.size() &&
              std::memcmp(keys[m].data, key.data(), key.size()) == 0) {
            return false;
          }
        }
        keys[count] = {key.data(), key.size()};
      } else {
        if (count == 16) {
          base = scan_keys.size();
          for (const KeyRef& k : keys) {
            scan_keys.emplace_back(k.data, k.size);
          }
        }
        // A copy, so that `key` itself stays in registers (see ScanString).
        scan_keys.push_back(std::string_view(key.data(), key.size()));
      }
      ++count;
      if (!UnescapeKey(key)) {
        return false;
      }
      [[maybe_unused]] std::uint32_t index = 0;
      BodyEntry scratch;  // the entry when not building (only its kind and number are used)
      BodyEntry* entry = &scratch;
      if constexpr (kBuild) {
        index = tok_count;
        entry = NewTokEntry();
        entry->key = key;
        entry->depth = depth;
      }
      std::uint64_t children = 0;
      [[maybe_unused]] std::string_view canonical;
      const char type = Tok();
      if (type == 'n') {
        if (!ScanLiteral("null")) {
          return false;
        }
        entry->kind = OpKind::kErase;
      } else if (type == '{') {
        if (depth + 1 > limits.max_depth) {
          return false;
        }
        // An operator is an object whose only key starts with a single '$'. Its first key
        // decides: if that starts with a single '$', the object must be {"$op": integer}.
        const char* first = sbuf + sidx[sp + 1];
        if (first[0] == '"' && first[1] == '$' && first[2] != '$') {
          ++sp;
          std::string_view op;
          if (!ScanString(op) || Tok() != ':') {
            return false;
          }
          ++sp;
          if (!OperatorKind(op, entry->kind)) {
            return false;
          }
          std::int64_t v;
          if (!ScanInt(v) || Tok() != '}') {
            return false;  // a double operand, a bad operand, or more keys
          }
          ++sp;
          if constexpr (kBuild) {
            entry->number = Number::Int(v);
            if (entry->kind == OpKind::kInc) {
              NoteInc(entry->number);
            }
          }
        } else {
          entry->kind = OpKind::kObject;
          if (!ScanObject<kBuild>(depth + 1, children)) {
            return false;
          }
          if constexpr (kBuild) {
            entry = tok_base + index;  // the vector may have grown
          }
        }
      } else {
        [[maybe_unused]] const std::size_t start = arena_len;
        if (!ScanCanonical<kBuild>(depth + 1)) {
          return false;
        }
        entry->kind = OpKind::kSet;
        if constexpr (kBuild) {
          // The arena does not move during the token walk (ScanBody): the view stays valid.
          canonical = std::string_view(arena.data() + start, arena_len - start);
          entry->value = canonical;
        }
      }
      if constexpr (kBuild) {
        entry->end = tok_count;
        hash_sum += EntryHash(*entry, children, canonical);
      }
      const char c = Tok();
      ++sp;
      if (c == '}') {
        break;
      }
      if (c != ',') {
        return false;
      }
    }
    if (count > 16) {
      std::sort(scan_keys.begin() + static_cast<std::ptrdiff_t>(base), scan_keys.end());
      if (std::adjacent_find(scan_keys.begin() + static_cast<std::ptrdiff_t>(base),
                             scan_keys.end()) != scan_keys.end()) {
        return false;
      }
      scan_keys.resize(base);
    }
    return true;
  }

  // Moves past any JSON value (an unknown envelope field), checking it like the rest.
  bool ScanSkip(std::uint32_t depth) {
    const char c = Tok();
    if (c == '{' || c == '[') {
      if (depth > limits.max_depth) {
        return false;
      }
      const char close = c == '{' ? '}' : ']';
      ++sp;
      if (Tok() == close) {
        ++sp;
        return true;
      }
      while (true) {
        if (c == '{') {
          std::string_view key;
          if (!ScanString(key) || Tok() != ':') {
            return false;
          }
          ++sp;
        }
        if (!ScanSkip(depth + 1)) {
          return false;
        }
        const char next = Tok();
        ++sp;
        if (next == close) {
          return true;
        }
        if (next != ',') {
          return false;
        }
      }
    }
    std::string_view s;
    std::int64_t v;
    switch (c) {
      case '"':
        return ScanString(s);
      case 't':
        return ScanLiteral("true");
      case 'f':
        return ScanLiteral("false");
      case 'n':
        return ScanLiteral("null");
      default:
        return ScanInt(v);
    }
  }

  // FastBody for the object at the current token: flattens it and hashes it with shard.ts
  // (without kBuild: only checks it).
  template <bool kBuild>
  bool ScanBody(std::uint64_t& top) {
    if (Tok() != '{') {
      return false;
    }
    if constexpr (kBuild) {
      // The canonical values of the token walk take at most the bytes of the text they come
      // from (strings keep their quotes, integers their digits, arrays lose white space), so
      // with room for the whole text the arena never moves and entries can hold views into it
      // at once. ScanFinish checks that it did not move.
      arena_len = 0;
      if (arena.size() < scan_len) {
        arena.resize(scan_len + 256);
      }
      tok_arena = arena.data();
      StartTokEntries();
    }
    scan_keys.clear();
    return ScanObject<kBuild>(1, top);
  }

  // Completes the shard after a token walk that accepted it; false if it cannot be used.
  bool ScanFinish(std::uint64_t top) {
    if (arena.data() != tok_arena) [[unlikely]] {
      return false;  // the arena moved (ScanBody rules that out): the values' views are stale
    }
    shard.entries.resize(tok_count);  // never grows here: NewTokEntry grew it
    char buf[16];
    std::memcpy(buf, &shard.ts, 8);
    std::memcpy(buf + 8, &top, 8);
    shard.hash = Xxh3(buf, sizeof(buf));
    return true;
  }

  // DecodeEnvelope by the token walk. False hands the line on (the shard is then half built).
  // Without kBuild (ValidateEnvelope) the body is only checked, and its bytes are found: they
  // lie at [body_begin, body_end) in the line (scan_buf holds the line at the same offsets).
  // `in_place` and `padded` as for ScanStage1 (never in place when building: the shard's views
  // must stay valid after the caller's line is gone).
  template <bool kBuild>
  bool ScanEnvelope(std::string_view line, bool in_place = false, bool padded = false) {
    std::uint64_t top = 0;
    // Nothing may follow the envelope.
    if (!ScanStage1(line, !kBuild && in_place, padded) || !ScanEnvelopeTokens<kBuild>(top) ||
        sp != scan_n) {
      return false;
    }
    if constexpr (kBuild) {
      return ScanFinish(top);
    }
    return true;
  }

  // ScanEnvelope's walk from the current token (the envelope's '{'): true if it read a whole
  // envelope object with every field it needs. The caller checks what follows it.
  template <bool kBuild>
  __attribute__((always_inline)) bool ScanEnvelopeTokens(std::uint64_t& top) {
    if (Tok() != '{') {
      return false;
    }
    ++sp;
    bool have_blade = false, have_seq = false, have_ts = false, have_body = false;
    bool seen_topic = false, seen_partition = false, seen_offset = false;
    auto take = [](bool& seen) {
      const bool was = seen;
      seen = true;
      return !was;
    };
    if (Tok() == '}') {
      return false;  // fields are missing
    }
    while (true) {
      // The four keys every line has, written as recordings write them (`"blade":` with nothing
      // between the closing quote and the colon), are told by one 8-byte load at the token: the
      // string then ends at the quote (no byte of it is a backslash) and the colon is the next
      // token. Anything else takes ScanString and the name comparisons.
      Field f = Field::kOther;
      std::uint64_t w;
      std::memcpy(&w, sbuf + sidx[sp], 8);  // scan_buf's padding covers the bytes past the line
      if (w == Word("\"blade\":")) {
        f = Field::kBlade;
      } else if (w == Word("\"shard\":")) {
        f = Field::kShard;
      } else if ((w & 0xFFFFFFFFFFFFULL) == Word("\"seq\":")) {
        f = Field::kSeq;
      } else if ((w & 0xFFFFFFFFFFULL) == Word("\"ts\":")) {
        f = Field::kTs;
      }
      if (f != Field::kOther) {
        sp += 2;  // the key and the colon
      } else {
        std::string_view k;
        if (!ScanString(k) || Tok() != ':') {
          return false;
        }
        ++sp;
        f = IsKey(k, "blade")       ? Field::kBlade
            : IsKey(k, "seq")       ? Field::kSeq
            : IsKey(k, "ts")        ? Field::kTs
            : IsKey(k, "shard")     ? Field::kShard
            : IsKey(k, "topic")     ? Field::kTopic
            : IsKey(k, "partition") ? Field::kPartition
            : IsKey(k, "offset")    ? Field::kOffset
                                    : Field::kOther;
      }
      std::int64_t v;
      if (f == Field::kBlade) {
        if (!take(have_blade) || !ScanString(shard.blade) || shard.blade.empty() ||
            shard.blade.size() > limits.max_blade_bytes) {
          return false;
        }
      } else if (f == Field::kSeq) {
        if (!take(have_seq) || !ScanNonNegative(v)) {
          return false;
        }
        shard.seq = static_cast<std::uint64_t>(v);
      } else if (f == Field::kTs) {
        if (!take(have_ts) || !ScanNonNegative(v)) {
          return false;
        }
        shard.ts = v;
      } else if (f == Field::kShard) {
        body_begin = sidx[sp];
        if (!take(have_body) || !ScanBody<kBuild>(top)) {
          return false;
        }
        body_end = sidx[sp - 1] + 1;  // past the body's closing brace, the last token read
      } else if (f == Field::kTopic) {
        if (!take(seen_topic) || !ScanString(shard.topic)) {
          return false;
        }
      } else if (f == Field::kPartition) {
        if (!take(seen_partition) || !ScanNonNegative(shard.partition)) {
          return false;
        }
      } else if (f == Field::kOffset) {
        if (!take(seen_offset) || !ScanNonNegative(shard.offset)) {
          return false;
        }
      } else if (!ScanSkip(2)) {
        return false;
      }
      const char c = Tok();
      ++sp;
      if (c == '}') {
        break;
      }
      if (c != ',') {
        return false;
      }
    }
    return have_blade && have_seq && have_ts && have_body;
  }

  // DecodeBody by the token walk.
  bool ScanBareBody(std::string_view body) {
    std::uint64_t top = 0;
    return ScanStage1(body) && ScanBody<true>(top) && sp == scan_n && ScanFinish(top);
  }

  // ---------------------------------------------------------------------------------------------
  // Stage 1 over many lines (ExpectLines). simdjson's stage 1 has a fixed cost per call that
  // dominates on a line of ~120 bytes, so ValidateEnvelope runs it once over a piece of the
  // expected text (whole lines, up to kMaxPiece bytes) and walks each line over the piece's
  // index, where it is. It must give exactly what the line's own stage 1 and walk give:
  //
  // - Stage 1 is causal: whether a byte starts a token depends on the bytes before it only
  //   through three carries (inside a string, escaped by a backslash run, after a scalar). At a
  //   line that follows only white space after a position where stage 1 was outside a string
  //   (`trusted`), all three are those of a fresh start, so the piece's index over the line is
  //   the line's own index, shifted. A piece starts fresh at its first line. (Independently of
  //   that: stage 1 fails on a raw control character inside a string, so in a piece it accepted
  //   no newline lies inside a string, and every line after a newline starts outside one.)
  // - The line's own stage 1 would also have failed on invalid UTF-8, on a control character in
  //   a string, or on an unclosed string. A piece with the first two anywhere is not used (its
  //   stage 1 fails). An unclosed string is not seen by the piece's stage 1 if the piece goes
  //   on, but a walk that accepts the line ends at its closing '}' with no token after it in the
  //   line: then only white space follows that '}' (anything else would start a token), so the
  //   line ends outside a string, and the position after the '}' is trusted for the next line.
  // - The line's walk stops at the end of its index, where it reads white space (the byte after
  //   the line). Over the piece it goes on into the next line's tokens instead, so an accepted
  //   walk counts only if it took the line's tokens and no other: its last token lies in the
  //   line and the next one after it. It then read the same tokens and bytes as the line's own
  //   walk, and the same next-token offsets (it looks one token ahead only inside the line).
  // - Anything else (a walk that fails, a line not right after trusted white space, a piece
  //   whose stage 1 fails) takes the line's own path, which gives the true result. If that
  //   path's stage 1 succeeded, the line ends outside a string and the piece goes on after it.
  //
  // Reads stay in bounds: a piece ends before a newline at least kPadding bytes before the end
  // of the text, so its index ends at that newline (white space, which stops every walk) and the
  // walk's 8-byte loads stay in the text; every string a token opens is closed in the piece (the
  // piece's stage 1 saw no unclosed string), which bounds ScanStringSlow. A walk that runs on
  // into the next lines is bounded by the piece and by the nesting limit.
  //
  // Cost: lines that fail keep pieces small and rare (PieceFailed), so text full of them costs
  // about what it costs line by line.
  static constexpr std::size_t kMaxPiece = 8 * 1024;  // ~64 lines of a recording
  static constexpr std::size_t kMinPiece = 1024;      // after a piece that did not pay
  static constexpr std::uint32_t kMaxMisses = 4;      // more than hits: the piece is left
  static constexpr std::uint32_t kMaxPause = 255;     // most lines checked alone between pieces
  // The piece's index (its own buffers: the line's own path must not overwrite it).
  std::unique_ptr<simdjson::internal::dom_parser_implementation> lines_impl;
  const char* lines_begin = nullptr;  // ExpectLines' text
  const char* lines_end = nullptr;    // its end less kPadding: pieces end before this
  const char* piece = nullptr;        // stage 1 ran over [piece, piece + piece_len)
  std::uint32_t piece_len = 0;
  std::uint32_t piece_n = 0;     // structural indexes of the piece
  bool piece_ok = false;         // the piece's index holds for lines at or after `trusted`
  std::uint32_t trusted = 0;     // offset in the piece where stage 1 was as at a fresh start
  std::uint32_t cursor = 0;      // the piece's first index at or after `trusted`
  std::uint32_t line_first = 0;  // the first index of the line being checked
  const char* next_backslash = nullptr;  // the piece's first backslash at or after a line start
  std::uint32_t piece_hits = 0;          // the piece's lines accepted over it
  std::uint32_t piece_misses = 0;        // the piece's lines walked over it in vain
  std::size_t piece_target = kMaxPiece;  // bytes of the next piece
  const char* alone_until = nullptr;     // a piece failed up to here: lines before go alone
  std::uint32_t pause = 0;               // lines to check alone before the next piece
  std::uint32_t streak = 0;              // pieces in a row that did not pay
  std::uint64_t piece_lines = 0;         // lines accepted over a piece (for tests)
  bool for_bodies = false;  // the text holds bodies for DecodeBody (ExpectBodies), not envelopes

  void ExpectLines(std::string_view text, bool bodies = false) {
    for_bodies = bodies;
    lines_begin = text.data();
    lines_end = text.size() > ShardDecoder::kPadding
                    ? text.data() + text.size() - ShardDecoder::kPadding
                    : text.data();
    piece_ok = false;
    piece_target = kMaxPiece;
    alone_until = nullptr;
    pause = 0;
    streak = 0;
  }

  // A piece did not pay: the next lines are checked alone, more of them with each such piece in
  // a row (up to kMaxPause), and the next piece is small, so that text where lines keep failing,
  // or keep leaving the token walk, costs little more than line by line.
  void PieceFailed() {
    piece_ok = false;
    piece_target = kMinPiece;
    pause = streak;
    streak = std::min(2 * streak + 1, kMaxPause);
  }

  // Leaves the piece, at its end or where its index stops holding. It paid if it served at least
  // half its bytes (a caller that checks only some lines, e.g. the envelopes between bare bodies,
  // would otherwise have stage 1 run over a whole piece per line) and more of its lines were
  // accepted over it than walked in vain (such a line costs its share of the piece on top of its
  // own path): the next one may be twice as large.
  void LeavePiece() {
    if (2 * std::size_t{trusted} >= piece_len && piece_hits > piece_misses) {
      piece_ok = false;
      piece_target = std::min(2 * piece_target, kMaxPiece);
      streak = 0;
    } else {
      PieceFailed();
    }
  }

  // True if `line` is to be walked over a piece (forming one if needed); sets line_first.
  bool EnterPiece(std::string_view line) {
    const char* p = line.data();
    const char* e = p + line.size();
    // In the text, before its padding, and followed by white space (as a file's line).
    if (p < lines_begin || e >= lines_end || !IsSpace(*e)) {
      return false;
    }
    if (piece_ok) {
      const char* from = piece + trusted;
      if (p >= from && e <= piece + piece_len) {
        while (from < p && IsSpace(*from)) {
          ++from;
        }
        if (from == p) {
          line_first = cursor;
          return true;
        }
      }
      // At its end, or something unchecked lies between (a bare body, a refused line).
      LeavePiece();
    }
    if (p < alone_until) {
      return false;
    }
    alone_until = nullptr;
    if (pause > 0) {
      --pause;
      return false;
    }
    if (lines_impl == nullptr &&
        simdjson::get_active_implementation()->create_dom_parser_implementation(
            kMaxPiece, limits.max_depth + 2, lines_impl) != simdjson::SUCCESS) {
      lines_impl.reset();
      return false;
    }
    // A new piece from this line to the last newline in reach (a line that does not fit in a
    // piece is checked alone).
    const char* limit = p + std::min<std::size_t>(piece_target, lines_end - p);
    const auto* nl = e < limit ? static_cast<const char*>(memrchr(e, '\n', limit - e)) : nullptr;
    if (nl == nullptr) {
      return false;
    }
    const auto len = static_cast<std::size_t>(nl - p);
    if (lines_impl->stage1(reinterpret_cast<const std::uint8_t*>(p), len,
                           simdjson::stage1_mode::regular) != simdjson::SUCCESS) {
      // A line in it has invalid UTF-8, a control character in a string or an odd number of
      // quotes: the lines up to the piece's end are checked alone, or up to the first whose own
      // stage 1 fails (AfterAlone), and the next piece starts after it.
      alone_until = nl;
      PieceFailed();
      return false;
    }
    piece = p;
    piece_len = static_cast<std::uint32_t>(len);
    piece_n = lines_impl->n_structural_indexes;
    piece_ok = true;
    piece_hits = piece_misses = 0;
    trusted = 0;
    cursor = 0;
    line_first = 0;
    next_backslash = static_cast<const char*>(std::memchr(p, '\\', len));
    if (next_backslash == nullptr) {
      next_backslash = p + len;
    }
    return true;
  }

  // Points the token walk at `text`'s tokens in the piece's index (EnterPiece said yes) and
  // notes whether `text` holds a backslash; returns where `text` ends in the piece.
  std::uint32_t BeginPieceWalk(std::string_view text) {
    const char* p = text.data();
    const char* e = p + text.size();
    if (next_backslash < p) {
      next_backslash = static_cast<const char*>(std::memchr(p, '\\', piece + piece_len - p));
      if (next_backslash == nullptr) {
        next_backslash = piece + piece_len;
      }
    }
    no_backslash = next_backslash >= e;
    sbuf = piece;
    sidx = lines_impl->structural_indexes.get();
    scan_n = piece_n;
    sp = line_first;
    return static_cast<std::uint32_t>(e - piece);
  }

  // A walk over the piece counts only if it took the text's tokens and no other: its last token
  // lies before `end`, and the next one at or after it.
  bool WalkEndedAt(std::uint32_t end) const { return sidx[sp - 1] < end && sidx[sp] >= end; }

  // The walk counted: the piece is trusted up to the text's closing '}'.
  void AcceptPieceWalk() {
    trusted = sidx[sp - 1] + 1;  // past the closing '}'
    cursor = sp;
    ++piece_hits;
    ++piece_lines;
  }

  // ValidateEnvelope's walk of `line` (EnterPiece said yes) over the piece's index.
  bool ScanEnvelopeInPiece(std::string_view line) {
    const std::uint32_t end = BeginPieceWalk(line);
    std::uint64_t top = 0;
    if (!ScanEnvelopeTokens<false>(top) || !WalkEndedAt(end)) {
      return false;
    }
    AcceptPieceWalk();
    return true;
  }

  // DecodeBody's token walk of `body` (EnterPiece said yes) over the piece's index, building the
  // shard (its keys are views into the piece). The same checks as ScanEnvelopeInPiece.
  bool ScanBodyInPiece(std::string_view body) {
    const std::uint32_t end = BeginPieceWalk(body);
    scan_len = body.size();  // ScanBody's room for the canonical values, as for the body alone
    std::uint64_t top = 0;
    if (!ScanBody<true>(top) || !WalkEndedAt(end) || !ScanFinish(top)) {
      return false;
    }
    AcceptPieceWalk();
    return true;
  }

  // After `line` was walked over the piece in vain and took its own path: if that path's stage 1
  // succeeded (its index is sidx/scan_n), the line ends outside a string and the piece goes on
  // after it, unless it keeps failing.
  void AfterOwnPath(std::string_view line) {
    ++piece_misses;
    const auto end = static_cast<std::uint32_t>(line.data() + line.size() - piece);
    const std::uint32_t next = line_first + scan_n;
    const std::uint32_t* idx = lines_impl->structural_indexes.get();
    if (stage1_done && piece_misses <= piece_hits + kMaxMisses && next <= piece_n &&
        (next == line_first || idx[next - 1] < end) && idx[next] >= end) {
      trusted = end;
      cursor = next;
      return;
    }
    LeavePiece();
  }

  // After `line` was checked alone (not over a piece): if lines go alone because a piece failed
  // and this line's own stage 1 failed, it may be why, and the next line may start a piece.
  void AfterAlone(std::string_view line) {
    if (alone_until != nullptr && !stage1_done && line.data() < alone_until) {
      alone_until = nullptr;
    }
  }

  // Checks once per decoder that stage 1 indexes a line as the token walk expects.
  bool ScanLayoutIsKnown() {
    static constexpr char kProbe[] = R"( {"a" : [1,"x"],"b":true} )";
    if (!ScanStage1(std::string_view(kProbe, sizeof(kProbe) - 1))) {
      return false;
    }
    static constexpr std::uint32_t kExpected[] = {1, 2, 6, 8, 9, 10, 11, 14, 15, 16, 19, 20, 24};
    if (scan_n != sizeof(kExpected) / sizeof(kExpected[0])) {
      return false;
    }
    for (std::uint32_t i = 0; i < scan_n; ++i) {
      if (sidx[i] != kExpected[i]) {
        return false;
      }
    }
    // The index ends with the length (the NUL after the line).
    return sidx[scan_n] == sizeof(kProbe) - 1 && Tok() == '{';
  }

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
    if (depth > limits.max_depth && (type == element_type::ARRAY || type == element_type::OBJECT)) {
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
    if (!OperatorKind(op, entry.kind)) {
      return Bad("unknown operator '" + std::string(op) + "' (known: $inc, $max, $min)");
    }
    LATTICE_ASSIGN_OR_RETURN(entry.number,
                             ReadNumber(field.value, "the operand of " + std::string(op)));
    if (entry.kind == OpKind::kInc) {
      NoteInc(entry.number);
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
    ResetKeepingEntries();
  }

  // Reset but for shard.entries, which the token walk overwrites in place (NewTokEntry).
  void ResetKeepingEntries() {
    shard.topic = {};
    shard.partition = -1;
    shard.offset = -1;
    shard.has_int_inc = false;
    shard.has_float_inc = false;
    shard.max_abs_inc = 0;
    // The arena is not cleared here: the fast walk writes it by arena_len and uses its size as
    // capacity. The careful walk appends, so it clears it first (StartCarefulWalk).
    spans.clear();
    path.clear();
  }

  // After a fast walk said "bad": forget what it built.
  void StartCarefulWalk() {
    Reset();
    arena.clear();
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
          hash_scratch.append(reinterpret_cast<const char*>(
                                  e.number.is_int ? static_cast<const void*>(&e.number.i)
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
  impl_->tape_ok = impl_->TapeLayoutIsKnown();
  impl_->scan_ok = impl_->ScanLayoutIsKnown();
}

void ShardDecoder::ExpectLines(std::string_view text) { impl_->ExpectLines(text); }

void ShardDecoder::ExpectBodies(std::string_view text) {
  impl_->ExpectLines(text, /*bodies=*/true);
}

std::uint64_t ShardDecoder::PieceLinesForTesting() const { return impl_->piece_lines; }

void ShardDecoder::SetFirstWalkForTesting(Walk first) { impl_->first_walk = first; }

ShardDecoder::Walk ShardDecoder::LastWalkForTesting() const { return impl_->last_walk; }

ShardDecoder::~ShardDecoder() = default;

Result<const Shard*> ShardDecoder::DecodeEnvelope(std::string_view line, bool padded) {
  Impl& d = *impl_;
  d.last_walk = Walk::kCareful;
  // A line longer than the body limit needs the body size check, which the careful walk does.
  if (line.size() <= limits_.max_body_bytes && d.scan_ok && d.first_walk == Walk::kToken) {
    d.ResetKeepingEntries();
    d.last_walk = Walk::kToken;
    if (d.ScanEnvelope<true>(line)) {
      return &d.shard;
    }
  }
  d.Reset();
  return DecodeEnvelopeAfterTokenWalk(line, padded);
}

Result<CheckedEnvelope> ShardDecoder::ValidateEnvelope(std::string_view line, bool padded) {
  Impl& d = *impl_;
  d.Reset();
  d.last_walk = Walk::kCareful;
  if (line.size() <= limits_.max_body_bytes && d.scan_ok && d.first_walk == Walk::kToken) {
    d.last_walk = Walk::kToken;
    const bool in_piece = d.lines_begin != nullptr && !d.for_bodies && d.EnterPiece(line);
    if (in_piece) {
      if (d.ScanEnvelopeInPiece(line)) {
        CheckedEnvelope e;
        e.blade = d.shard.blade;  // a view into the line, where the piece is
        e.seq = d.shard.seq;
        e.ts = d.shard.ts;
        e.body = std::string_view(d.piece + d.body_begin, d.body_end - d.body_begin);
        e.no_backslash = d.no_backslash;
        return e;
      }
      d.Reset();
    }
    const bool scanned = d.ScanEnvelope<false>(line, /*in_place=*/true, padded);
    if (in_piece) {
      d.AfterOwnPath(line);
    } else {
      d.AfterAlone(line);
    }
    if (scanned) {
      // The token walk reads no escaped string, so the blade's bytes in the line are the blade;
      // scan_buf holds the line at the same offsets.
      CheckedEnvelope e;
      e.blade = line.substr(static_cast<std::size_t>(d.shard.blade.data() - d.sbuf),
                            d.shard.blade.size());
      e.seq = d.shard.seq;
      e.ts = d.shard.ts;
      e.body = line.substr(d.body_begin, d.body_end - d.body_begin);
      e.no_backslash = d.no_backslash;  // ScanStage1 looked
      return e;
    }
    d.Reset();
  }
  // Rare: a line the token walk does not cover (or a bad one). Decode it fully, then find the
  // body's bytes: the line is valid JSON now, and the document says which field is the body.
  LATTICE_ASSIGN_OR_RETURN(const Shard* shard, DecodeEnvelopeAfterTokenWalk(line, padded));
  std::size_t field = 0;
  const object env = d.parser.doc.root().get_object().value_unsafe();
  for (auto f : env) {
    if (f.key == "shard") {
      break;
    }
    ++field;
  }
  CheckedEnvelope e;
  e.blade = shard->blade;
  e.seq = shard->seq;
  e.ts = shard->ts;
  e.body = FieldText(line, field);
  return e;
}

Result<const Shard*> ShardDecoder::DecodeEnvelopeAfterTokenWalk(std::string_view line,
                                                                bool padded) {
  Impl& d = *impl_;
  // An envelope line has some room around its body; anything much larger than the body limit is
  // refused before parsing.
  if (line.size() > limits_.max_body_bytes + 64 * 1024) {
    return Status::InvalidArgument("line of " + std::to_string(line.size()) +
                                   " bytes exceeds the body limit of " +
                                   std::to_string(limits_.max_body_bytes) + " bytes");
  }
  const bool fast = line.size() <= limits_.max_body_bytes;
  auto parsed = d.parser.parse(line.data(), line.size(), !padded);
  d.last_walk = Walk::kCareful;
  if (parsed.error()) {
    if (parsed.error() == simdjson::DEPTH_ERROR) {
      return Status::InvalidArgument("nesting deeper than " + std::to_string(limits_.max_depth));
    }
    return Status::InvalidArgument(ErrorText(parsed.error()));
  }
  element root = parsed.value_unsafe();
  if (fast && d.tape_ok && d.first_walk != Walk::kCareful) {
    d.UseTape();
    if (const std::size_t body = d.FastEnvelope(); body != 0 && d.FastBody(body)) {
      d.last_walk = Walk::kTape;
      return &d.shard;
    }
  }
  // Bad (or no fast walk): the careful walk says why.
  d.StartCarefulWalk();
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
  d.ResetKeepingEntries();  // the token walk overwrites them; Reset below for the other walks
  d.last_walk = Walk::kCareful;
  if (body.size() > limits_.max_body_bytes) {
    return Status::InvalidArgument("body of " + std::to_string(body.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits_.max_body_bytes) + " bytes");
  }
  if (blade.empty() || blade.size() > limits_.max_blade_bytes) {
    return Status::InvalidArgument("blade id must have 1 to " +
                                   std::to_string(limits_.max_blade_bytes) + " bytes");
  }
  d.shard.blade = blade;
  d.shard.seq = seq;
  d.shard.ts = ts;
  if (d.scan_ok && d.first_walk == Walk::kToken) {
    d.last_walk = Walk::kToken;
    const bool in_piece = d.lines_begin != nullptr && d.for_bodies && d.EnterPiece(body);
    if (in_piece) {
      if (d.ScanBodyInPiece(body)) {
        return &d.shard;
      }
      d.ResetKeepingEntries();  // what the walk over the piece set (the shard's flags)
    }
    const bool scanned = d.ScanBareBody(body);
    if (in_piece) {
      d.AfterOwnPath(body);
    } else if (d.for_bodies) {
      d.AfterAlone(body);
    }
    if (scanned) {
      return &d.shard;
    }
  }
  d.Reset();
  auto parsed = d.parser.parse(body.data(), body.size(), true);
  d.last_walk = Walk::kCareful;
  if (parsed.error()) {
    if (parsed.error() == simdjson::DEPTH_ERROR) {
      return Status::InvalidArgument("nesting deeper than " + std::to_string(limits_.max_depth));
    }
    return Status::InvalidArgument(ErrorText(parsed.error()));
  }
  if (d.tape_ok && d.first_walk != Walk::kCareful) {
    d.UseTape();
    if (d.FastBody(1)) {  // the root element follows the root word
      d.last_walk = Walk::kTape;
      return &d.shard;
    }
  }
  // Bad (or no fast walk): the careful walk says why.
  d.StartCarefulWalk();
  LATTICE_RETURN_IF_ERROR(d.DecodeBodyElement(parsed.value_unsafe()));
  return &d.shard;
}

}  // namespace lattice::core
