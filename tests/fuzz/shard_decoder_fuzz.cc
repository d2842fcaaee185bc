// libFuzzer target for ShardDecoder: untrusted bytes go to DecodeEnvelope (copied and padded) and
// DecodeBody, and every shard that comes back ok must satisfy the flattening invariants of
// shard.h. The decoder's walks (token, tape, careful) must all give the same result, field for
// field, or the same reason, and ValidateEnvelope the same verdict as DecodeEnvelope (its body
// bytes decoding to the same shard), alone or over ExpectLines' pieces, and DecodeBody the same
// alone or over ExpectBodies' pieces. Any crash, sanitizer report or failed invariant is a bug.
// See README.md for how to run.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"

namespace {

using lattice::core::BodyEntry;
using lattice::core::CompareNumbers;
using lattice::core::DecodeLimits;
using lattice::core::Number;
using lattice::core::OpKind;
using lattice::core::Shard;
using lattice::core::ShardDecoder;

#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)

int Sign(int v) { return v < 0 ? -1 : (v > 0 ? 1 : 0); }

// Exact comparison through long double (x87: a 64-bit mantissa holds every int64 and double).
int ReferenceCompare(const Number& a, const Number& b) {
  const long double x = a.is_int ? static_cast<long double>(a.i) : static_cast<long double>(a.d);
  const long double y = b.is_int ? static_cast<long double>(b.i) : static_cast<long double>(b.d);
  return x < y ? -1 : (x > y ? 1 : 0);
}

// A decoder with generous limits, used to re-read canonical values.
ShardDecoder& Rereader() {
  static ShardDecoder* decoder = [] {
    DecodeLimits limits;
    limits.max_body_bytes = std::size_t{64} << 20;
    limits.max_depth = 256;
    return new ShardDecoder(limits);
  }();
  return *decoder;
}

void CheckShard(const Shard& shard) {
  const std::vector<BodyEntry>& es = shard.entries;
  const auto n = static_cast<std::uint32_t>(es.size());
  bool any_int_inc = false;
  bool any_float_inc = false;
  std::uint64_t max_abs = 0;
  std::vector<Number> numbers;
  for (std::uint32_t i = 0; i < n; ++i) {
    const BodyEntry& e = es[i];
    FUZZ_CHECK(e.depth >= 1);
    FUZZ_CHECK(e.end > i);
    FUZZ_CHECK(e.end <= n);
    if (e.kind == OpKind::kObject) {
      // Direct children are one level deeper and tile [i + 1, end) exactly.
      std::uint32_t j = i + 1;
      while (j < e.end) {
        FUZZ_CHECK(es[j].depth == e.depth + 1);
        FUZZ_CHECK(es[j].end > j && es[j].end <= e.end);
        j = es[j].end;
      }
      FUZZ_CHECK(j == e.end);
    } else {
      FUZZ_CHECK(e.end == i + 1);
    }
    if (e.kind == OpKind::kSet) {
      FUZZ_CHECK(!e.value.empty());
      // Canonical text is a fixpoint: reading it back gives the same text.
      std::string wrapped = "{\"v\":";
      wrapped.append(e.value);
      wrapped.push_back('}');
      auto again = Rereader().DecodeBody(wrapped, "fuzz", 1, 0);
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK((*again)->entries.size() == 1);
      FUZZ_CHECK((*again)->entries[0].kind == OpKind::kSet);
      FUZZ_CHECK((*again)->entries[0].value == e.value);
    }
    if (e.kind == OpKind::kInc || e.kind == OpKind::kMax || e.kind == OpKind::kMin) {
      FUZZ_CHECK(e.number.is_int || std::isfinite(e.number.d));
      numbers.push_back(e.number);
      if (e.kind == OpKind::kInc) {
        if (e.number.is_int) {
          any_int_inc = true;
          const std::uint64_t mag = e.number.i < 0 ? 0 - static_cast<std::uint64_t>(e.number.i)
                                                   : static_cast<std::uint64_t>(e.number.i);
          max_abs = mag > max_abs ? mag : max_abs;
        } else {
          any_float_inc = true;
        }
      }
    }
  }
  // The top level tiles the whole vector with depth-1 entries.
  for (std::uint32_t i = 0; i < n; i = es[i].end) {
    FUZZ_CHECK(es[i].depth == 1);
  }
  FUZZ_CHECK(shard.has_int_inc == any_int_inc);
  FUZZ_CHECK(shard.has_float_inc == any_float_inc);
  FUZZ_CHECK(shard.max_abs_inc == max_abs);
  // Operands compare exactly and antisymmetrically.
  const std::size_t m = numbers.size() < 8 ? numbers.size() : 8;
  for (std::size_t a = 0; a < m; ++a) {
    for (std::size_t b = 0; b < m; ++b) {
      const int ab = Sign(CompareNumbers(numbers[a], numbers[b]));
      FUZZ_CHECK(ab == -Sign(CompareNumbers(numbers[b], numbers[a])));
      FUZZ_CHECK(ab == ReferenceCompare(numbers[a], numbers[b]));
    }
  }
}

// Everything a result holds, as text: the reason of an error, or every field and entry (without
// the provenance fields if not `provenance`).
std::string Summary(const lattice::Result<const Shard*>& r, bool provenance = true) {
  if (!r.ok()) {
    return "error: " + r.status().ToString();
  }
  const Shard& s = **r;
  std::string out;
  out.append(s.blade).append("|").append(std::to_string(s.seq)).append("|");
  out.append(std::to_string(s.ts)).append("|").append(std::to_string(s.hash)).append("|");
  if (provenance) {
    out.append(s.topic).append("|").append(std::to_string(s.partition)).append("|");
    out.append(std::to_string(s.offset)).append("|");
  }
  out.append(std::to_string(s.has_int_inc));
  out.append(std::to_string(s.has_float_inc)).append("|").append(std::to_string(s.max_abs_inc));
  for (const BodyEntry& e : s.entries) {
    out.append("\n").append(std::to_string(e.depth)).append(" ").append(e.key).append(" ");
    out.append(std::to_string(static_cast<int>(e.kind))).append(" ");
    out.append(std::to_string(e.end)).append(" ").append(e.value).append(" ");
    if (e.kind == OpKind::kInc || e.kind == OpKind::kMax || e.kind == OpKind::kMin) {
      lattice::core::AppendJsonNumber(out, e.number);
      out.append(e.number.is_int ? "i" : "d");
    }
  }
  return out;
}

// Decoders that start at each walk (shard.h): all must give the same result.
ShardDecoder& WalkDecoder(ShardDecoder::Walk first) {
  static ShardDecoder* decoders[3] = {nullptr, nullptr, nullptr};
  ShardDecoder*& d = decoders[static_cast<int>(first)];
  if (d == nullptr) {
    d = new ShardDecoder();
    d->SetFirstWalkForTesting(first);
  }
  return *d;
}

// ValidateEnvelope on a decoder starting at `walk`: the same verdict (and reason) as
// DecodeEnvelope, and on success the envelope's fields and a body whose bytes, decoded as a bare
// body, give the same shard.
void CheckValidateAgrees(ShardDecoder::Walk walk, std::string_view input) {
  ShardDecoder& d = WalkDecoder(walk);
  const std::string whole = Summary(d.DecodeEnvelope(input), /*provenance=*/false);
  auto v = d.ValidateEnvelope(input);
  if (!v.ok()) {
    FUZZ_CHECK("error: " + v.status().ToString() == whole);
    return;
  }
  FUZZ_CHECK(v->body.data() >= input.data() &&
             v->body.data() + v->body.size() <= input.data() + input.size());
  FUZZ_CHECK(!v->no_backslash || std::memchr(input.data(), '\\', input.size()) == nullptr);
  // Generous limits: a line over the body limit is checked by its body's minified size, while
  // DecodeBody measures the bytes as they are.
  FUZZ_CHECK(Summary(Rereader().DecodeBody(v->body, v->blade, v->seq, v->ts),
                     /*provenance=*/false) == whole);
}

// ValidateEnvelope of a padded line (stage 1 then runs on the line where it is when the byte after
// it is white space or NUL): whatever the padding holds, the same verdict, reason and fields as
// unpadded. The padding is a newline or a zero byte and then the input again (as a LineReader's
// next line), or the input itself (not white space: the decoder copies).
void CheckPaddedValidateAgrees(std::string_view input) {
  ShardDecoder& d = WalkDecoder(ShardDecoder::Walk::kToken);
  std::string expected;
  {
    auto v = d.ValidateEnvelope(input);
    expected = v.ok() ? std::string(v->blade) + " " + std::to_string(v->seq) + " " +
                            std::to_string(v->ts) + " " + std::string(v->body)
                      : "error: " + v.status().ToString();
  }
  for (const std::string_view after :
       {std::string_view("\n"), std::string_view("\0", 1), std::string_view("\r"),
        std::string_view(" "), std::string_view()}) {
    std::string padded(input);
    padded.append(after);
    padded.append(input);
    padded.append(ShardDecoder::kPadding, '}');
    const std::string_view line(padded.data(), input.size());
    auto v = d.ValidateEnvelope(line, /*padded=*/true);
    const std::string got = v.ok() ? std::string(v->blade) + " " + std::to_string(v->seq) + " " +
                                         std::to_string(v->ts) + " " + std::string(v->body)
                                   : "error: " + v.status().ToString();
    FUZZ_CHECK(got == expected);
    if (v.ok()) {
      FUZZ_CHECK(v->body.data() >= line.data() &&
                 v->body.data() + v->body.size() <= line.data() + line.size());
      FUZZ_CHECK(!v->no_backslash || std::memchr(line.data(), '\\', line.size()) == nullptr);
    }
  }
}

// ValidateEnvelope over ExpectLines' pieces (stage 1 once for many lines): every line of a text
// made of the input (its own lines), good envelopes and the input again gets exactly what it
// gets checked alone, as `lattice emit -f` checks a file's lines (MappedLines::Fill). Lines of a
// length of 3 modulo 5 are skipped (as emit skips bare bodies and refused lines): the next line
// must not be read on from them.
void CheckLinesAgree(std::string_view input) {
  static ShardDecoder* lines = new ShardDecoder();
  ShardDecoder& alone = WalkDecoder(ShardDecoder::Walk::kToken);
  static constexpr std::string_view kGood =
      R"({"blade":"b-1","seq":1,"ts":2,"shard":{"a":{"b":1,"c":{"$inc":2}},"d":[1,"x"]}})";
  std::string text;
  for (const std::string_view part : {kGood, input, kGood, input, kGood, kGood}) {
    text.append(part);
    text.append(part == input && text.size() % 3 == 0 ? "\r\n" : "\n");
  }
  text.append(ShardDecoder::kPadding, '\n');
  lines->ExpectLines(text);
  auto describe = [&text](const lattice::Result<lattice::core::CheckedEnvelope>& v) {
    return v.ok() ? std::string(v->blade) + " " + std::to_string(v->seq) + " " +
                        std::to_string(v->ts) + " " + std::to_string(v->body.data() - text.data()) +
                        " " + std::to_string(v->body.size()) + " " + std::to_string(v->no_backslash)
                  : "error: " + v.status().ToString();
  };
  const char* p = text.data();
  const char* end = text.data() + text.size();
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
    const char* line = p;
    std::size_t len = static_cast<std::size_t>((nl != nullptr ? nl : end) - p);
    p = nl != nullptr ? nl + 1 : end;
    if (len > 0 && line[len - 1] == '\r') {
      --len;
    }
    if (std::string_view(line, len).find_first_not_of(" \t") == std::string_view::npos ||
        len % 5 == 3) {
      continue;
    }
    const bool padded = end - (line + len) >= 64;
    const std::string_view l(line, len);
    const std::string want = describe(alone.ValidateEnvelope(l, padded));
    FUZZ_CHECK(describe(lines->ValidateEnvelope(l, padded)) == want);
  }
}

// DecodeBody over ExpectBodies' pieces (stage 1 once for many bodies), as the aggregator decodes
// a group of message values: the input, good bodies and the input's halves copied one after
// another into one text, each followed by a newline. Every body gets exactly what it gets decoded
// alone. Bodies of a length of 3 modulo 5 are skipped (as a message with a bad header): the next
// body must not be read on from them.
void CheckBodiesAgree(std::string_view input) {
  static ShardDecoder* pieces = new ShardDecoder();
  ShardDecoder& alone = WalkDecoder(ShardDecoder::Walk::kToken);
  static constexpr std::string_view kGood = R"({"a":{"b":1,"c":{"$inc":2}},"d":[1,"x"]})";
  const std::string_view parts[] = {
      kGood, input, kGood, input.substr(0, input.size() / 2), input.substr(input.size() / 2),
      kGood, input, kGood};
  std::string text;
  std::vector<std::size_t> at;
  for (const std::string_view part : parts) {
    at.push_back(text.size());
    text.append(part);
    text.push_back('\n');
  }
  text.append(ShardDecoder::kPadding, '\n');
  pieces->ExpectBodies(text);
  for (std::size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); ++i) {
    if (parts[i].size() % 5 == 3) {
      continue;
    }
    const std::string want = Summary(alone.DecodeBody(parts[i], "b", 3 + i, 4));
    FUZZ_CHECK(Summary(pieces->DecodeBody(std::string_view(text.data() + at[i], parts[i].size()),
                                          "b", 3 + i, 4)) == want);
  }
  pieces->ExpectBodies({});
}

void CheckWalksAgree(std::string_view input) {
  using Walk = ShardDecoder::Walk;
  const std::string token = Summary(WalkDecoder(Walk::kToken).DecodeEnvelope(input));
  FUZZ_CHECK(token == Summary(WalkDecoder(Walk::kTape).DecodeEnvelope(input)));
  FUZZ_CHECK(token == Summary(WalkDecoder(Walk::kCareful).DecodeEnvelope(input)));
  CheckValidateAgrees(Walk::kToken, input);
  CheckValidateAgrees(Walk::kCareful, input);
  CheckPaddedValidateAgrees(input);
  CheckLinesAgree(input);
  CheckBodiesAgree(input);
  const std::string body = Summary(WalkDecoder(Walk::kToken).DecodeBody(input, "b", 3, 4));
  FUZZ_CHECK(body == Summary(WalkDecoder(Walk::kTape).DecodeBody(input, "b", 3, 4)));
  FUZZ_CHECK(body == Summary(WalkDecoder(Walk::kCareful).DecodeBody(input, "b", 3, 4)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ShardDecoder* decoder = new ShardDecoder();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckWalksAgree(input);

  // As an envelope, unpadded (the decoder copies) ...
  std::uint64_t envelope_hash = 0;
  bool envelope_ok = false;
  {
    auto r = decoder->DecodeEnvelope(input);
    if (r.ok()) {
      CheckShard(**r);
      envelope_ok = true;
      envelope_hash = (*r)->hash;
      FUZZ_CHECK(!(*r)->blade.empty());
    } else {
      FUZZ_CHECK(r.status().code() == lattice::StatusCode::kInvalidArgument);
      FUZZ_CHECK(!r.status().message().empty());
    }
  }
  // ... and padded (no copy): same outcome, same hash.
  {
    std::string padded(input);
    padded.append(ShardDecoder::kPadding, '\0');
    auto r = decoder->DecodeEnvelope(std::string_view(padded.data(), size), /*padded=*/true);
    FUZZ_CHECK(r.ok() == envelope_ok);
    if (r.ok()) {
      CheckShard(**r);
      FUZZ_CHECK((*r)->hash == envelope_hash);
    }
  }
  // As a bare body.
  {
    auto r = decoder->DecodeBody(input, "fuzz-blade", 7, 1732350000000);
    if (r.ok()) {
      CheckShard(**r);
      FUZZ_CHECK((*r)->blade == "fuzz-blade");
      FUZZ_CHECK((*r)->seq == 7);
      FUZZ_CHECK((*r)->ts == 1732350000000);
      // Deterministic: the same body decodes to the same hash.
      const std::uint64_t h = (*r)->hash;
      auto again = decoder->DecodeBody(input, "fuzz-blade", 7, 1732350000000);
      FUZZ_CHECK(again.ok() && (*again)->hash == h);
    } else {
      FUZZ_CHECK(r.status().code() == lattice::StatusCode::kInvalidArgument);
    }
  }
  return 0;
}
