// LineEmitter (line_emitter.h).
#include "lattice/ingest/line_emitter.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstring>

#include "envelope_scan.h"
#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"

namespace lattice::ingest {

namespace {

Status LineError(std::uint64_t number, std::string_view reason) {
  std::string msg = "line ";
  msg.append(std::to_string(number)).append(": ").append(reason);
  return Status::InvalidArgument(std::move(msg));
}

template <typename Int>
bool ParseNumber(std::string_view s, Int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// An envelope as LineEmitter defines it (line_emitter.h): "blade" and "shard" keys at the top.
bool IsEnvelope(const internal::EnvelopeFields& f) { return f.has_blade && f.has_shard; }

// A hash of a blade (a few bytes), to group a batch's lines by blade. It depends on the bytes
// alone, however they are read: `over_read` says that 7 bytes past the blade may be read (they
// are masked off), which saves assembling the last word byte by byte.
std::uint32_t BladeHash(std::string_view blade, bool over_read) {
  constexpr std::uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  const char* p = blade.data();
  const std::size_t n = blade.size();
  std::uint64_t h = (n + 1) * kMul;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 31;
  }
  if (i < n) {
    std::uint64_t w = 0;
    if (std::endian::native == std::endian::little && over_read) {
      std::memcpy(&w, p + i, 8);
      w &= ~std::uint64_t{0} >> (64 - 8 * (n - i));
    } else {
      std::memcpy(&w, p + i, n - i);
    }
    h = (h ^ w) * kMul;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

// Copies `n` bytes in steps of 32: reads and writes up to 31 bytes past each end.
inline void CopyOver(char* dst, const char* src, std::size_t n) {
  for (std::size_t i = 0; i < n; i += 32) {
    std::memcpy(dst + i, src + i, 32);
  }
}

}  // namespace

void CheckedLines::Part::Grow(std::size_t n) {
  const std::size_t cap = std::max({2 * cap_, size_ + n + kSlack, std::size_t{1024}});
  auto data = std::make_unique_for_overwrite<char[]>(cap);
  if (size_ > 0) {
    std::memcpy(data.get(), data_.get(), size_);
  }
  data_ = std::move(data);
  cap_ = cap;
}

void CheckedLines::Clear() {
  std::size_t cap = 0;
  for (std::uint32_t p = 0; p < parts_used_; ++p) {
    parts_[p].Clear();
    cap += parts_[p].capacity();
  }
  if (cap > kMaxKept) {
    parts_.clear();  // a batch of many groups, or a skewed one: do not keep it all
  }
  parts_used_ = 0;
  other_part_ = kNoPart;
  run_begin_ = 0;
  std::fill(slots_.begin(), slots_.end(), 0);
  lines_ = 0;
  held_ = 0;
}

std::uint32_t CheckedLines::NewPart() {
  if (parts_used_ == parts_.size()) {
    parts_.emplace_back();
    part_hash_.resize(parts_.size());
  }
  return parts_used_++;
}

void CheckedLines::GrowTable() {
  slots_.assign(std::max<std::size_t>(64, 2 * slots_.size()), 0);
  const std::size_t mask = slots_.size() - 1;
  for (std::uint32_t p = run_begin_; p < parts_used_; ++p) {
    std::size_t s = part_hash_[p] & mask;
    while (slots_[s] != 0) {
      s = (s + 1) & mask;
    }
    slots_[s] = (std::uint64_t{part_hash_[p]} << 32) | (p + 1);
  }
}

CheckedLines::Part& CheckedLines::GroupPart(std::uint32_t hash) {
  if (2 * (parts_used_ - run_begin_ + 1) > slots_.size()) {
    GrowTable();
  }
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t s = hash & mask;; s = (s + 1) & mask) {
    const std::uint64_t slot = slots_[s];
    // Free: never used in this batch, or a group of an earlier run (parts only grow in a batch,
    // and a run's entries were all placed after it began, so a probe never passes a free slot
    // to reach one of them).
    if (slot == 0 || static_cast<std::uint32_t>(slot) - 1 < run_begin_) {
      const std::uint32_t p = NewPart();
      other_part_ = kNoPart;
      slots_[s] = (std::uint64_t{hash} << 32) | (p + 1);
      part_hash_[p] = hash;
      return parts_[p];
    }
    if (slot >> 32 == hash) {
      // Blades whose hashes collide share a group: harmless, as a group keeps its lines' order
      // (each blade's order is all that must hold); they just interleave.
      return parts_[static_cast<std::uint32_t>(slot) - 1];
    }
  }
}

std::uint32_t CheckedLines::Tag(Kind kind, std::size_t blade_size) {
  return static_cast<std::uint32_t>(kind) | static_cast<std::uint32_t>(blade_size << 3);
}

// Writes a record with the bytes `a` and `b` copied in (CheckedLines' layout).
void CheckedLines::PutCopy(char* r, const Header& h, std::string_view a, std::string_view b) {
  std::memcpy(r, &h, sizeof h);
  r += sizeof h;
  if (!a.empty()) {  // a bare body's or reason's `a` is empty (memcpy from null is undefined)
    std::memcpy(r, a.data(), a.size());
  }
  if (!b.empty()) {
    std::memcpy(r + a.size(), b.data(), b.size());
  }
}

// Writes a record referring to `a` and `b` where they are.
void CheckedLines::PutAt(char* r, const Header& h, const char* a, const char* b) {
  std::memcpy(r, &h, sizeof h);
  const std::uint64_t at[2] = {reinterpret_cast<std::uintptr_t>(a),
                               reinterpret_cast<std::uintptr_t>(b)};
  std::memcpy(r + sizeof h, at, sizeof at);
}

struct LineEmitter::Impl {
  core::ShardDecoder decoder;
  CheckedLines one;     // Add's and Reject's batch of one
  std::string compact;  // AddValidEnvelope's body without whitespace
};

LineEmitter::LineEmitter(Emitter& emitter, LineEmitterOptions options)
    : emitter_(emitter), options_(options), impl_(std::make_unique<Impl>()) {}

LineEmitter::~LineEmitter() = default;

void LineEmitter::ExpectLines(std::string_view text) { impl_->decoder.ExpectLines(text); }

Status LineEmitter::Reject(std::uint64_t number, std::string_view reason) {
  CheckedLines& one = impl_->one;
  one.Clear();
  CheckRefused(number, reason, one);
  CheckedLines::Cursor at;
  return SendChecked(one, at);
}

Status LineEmitter::Add(std::string_view line, std::uint64_t number, bool padded) {
  CheckedLines& one = impl_->one;
  one.Clear();
  Check(line, number, padded, one);
  CheckedLines::Cursor at;
  return SendChecked(one, at);
}

namespace {

// True if `part` lies within `whole`.
bool Within(std::string_view part, std::string_view whole) {
  const auto p = reinterpret_cast<std::uintptr_t>(part.data());
  const auto w = reinterpret_cast<std::uintptr_t>(whole.data());
  return p >= w && p + part.size() <= w + whole.size();
}

}  // namespace

void LineEmitter::CheckRefused(std::uint64_t number, std::string_view reason, CheckedLines& out) {
  const CheckedLines::Header h{CheckedLines::Tag(CheckedLines::kRefused, 0),
                               static_cast<std::uint32_t>(reason.size()), number, 0, 0};
  CheckedLines::PutCopy(out.OtherPart().Extend(sizeof h + CheckedLines::Pad8(reason.size())), h, {},
                        reason);
  ++out.lines_;
  out.held_ += reason.size();
}

void LineEmitter::AddEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                              std::string_view body, std::uint64_t number, CheckedLines& out,
                              const Source& src) {
  ++out.lines_;
  out.held_ += blade.size() + body.size();
  CheckedLines::Header h{CheckedLines::Tag(CheckedLines::kEnvelope, blade.size()),
                         static_cast<std::uint32_t>(body.size()), number, seq, ts};
  const std::size_t size = sizeof h + CheckedLines::Pad8(blade.size() + body.size());
  const bool within = Within(blade, src.line) && Within(body, src.line);
  if (out.group_) {
    // Both lie in the line and 64 readable bytes follow it: read and write in whole steps (the
    // part has CheckedLines::kSlack bytes of room after the record).
    const bool over = src.padded && within;
    char* r = out.EnvelopePart(BladeHash(blade, over)).Extend(size);
    if (over) {
      std::memcpy(r, &h, sizeof h);
      CopyOver(r + sizeof h, blade.data(), blade.size());
      CopyOver(r + sizeof h + blade.size(), body.data(), body.size());
    } else {
      CheckedLines::PutCopy(r, h, blade, body);
    }
    // The group's next line goes after this one, some 64 lines on (with 64 blades): fetch those
    // cache lines for writing now. The groups' ends are too many streams for the hardware
    // prefetcher (A/B: the check thread 0.46 -> 0.36 s per 2M lines; docs/benchmarks.md
    // "Session 10 emit").
    __builtin_prefetch(r + size + 64, 1);
    __builtin_prefetch(r + size + 128, 1);
    __builtin_prefetch(r + size + 192, 1);
    return;
  }
  if (src.stable && within) {
    h.tag = CheckedLines::Tag(CheckedLines::kEnvelopeAt, blade.size());
    CheckedLines::PutAt(out.OtherPart().Extend(CheckedLines::kAtSize), h, blade.data(),
                        body.data());
    return;
  }
  CheckedLines::PutCopy(out.OtherPart().Extend(size), h, blade, body);
}

[[gnu::always_inline]] inline void LineEmitter::AddValidEnvelope(
    std::string_view blade, std::uint64_t seq, std::int64_t ts, std::string_view body,
    std::uint64_t number, CheckedLines& out, const Source& src) {
  const std::size_t limit = impl_->decoder.limits().max_body_bytes;
  if (body.size() <= limit) [[likely]] {
    return AddEnvelope(blade, seq, ts, body, number, out, src);
  }
  // The decoder measures a long line's body without whitespace (docs/shard-format.md), but a
  // Kafka message's body is measured as it is (the aggregator refuses one over the limit): send
  // the body without its whitespace, or refuse the line if even that is too long (a body full of
  // escapes the decoder measured unescaped).
  std::string& compact = impl_->compact;
  compact.clear();
  core::AppendWithoutWhitespace(compact, body);
  if (compact.size() > limit) {
    return CheckRefused(number,
                        "shard body of " + std::to_string(compact.size()) +
                            " bytes without whitespace exceeds the limit of " +
                            std::to_string(limit) + " bytes for a Kafka message body",
                        out);
  }
  AddEnvelope(blade, seq, ts, compact, number, out, Source{});
}

void LineEmitter::Check(std::string_view line, std::uint64_t number, bool padded, CheckedLines& out,
                        bool stable_line) {
  const Source src{line, stable_line, padded};
  if (!options_.bodies_only && options_.validate) {
    // Streams are mostly of one kind. After an envelope the line is checked as one right away:
    // one pass finds the fields and the body's bytes. After a bare body the structural scan
    // first tells whether it is an envelope, so bare bodies cost no failed envelope check. Both
    // orders classify alike: an envelope has "blade" and "shard" keys written without escapes
    // (ScanEnvelope); a line the decoder accepts with no backslash in it has them.
    if (!last_was_bare_) {
      auto checked = impl_->decoder.ValidateEnvelope(line, padded);
      if (checked.ok() &&
          (checked->no_backslash || std::memchr(line.data(), '\\', line.size()) == nullptr ||
           IsEnvelope(internal::ScanEnvelope(line)))) {
        return AddValidEnvelope(checked->blade, checked->seq, checked->ts, checked->body, number,
                                out, src);
      }
      if (!checked.ok() && IsEnvelope(internal::ScanEnvelope(line))) {
        return CheckRefused(number, checked.status().message(), out);
      }
    } else if (IsEnvelope(internal::ScanEnvelope(line))) {
      last_was_bare_ = false;
      auto checked = impl_->decoder.ValidateEnvelope(line, padded);
      if (!checked.ok()) {
        return CheckRefused(number, checked.status().message(), out);
      }
      return AddValidEnvelope(checked->blade, checked->seq, checked->ts, checked->body, number, out,
                              src);
    }
    last_was_bare_ = true;
  } else if (!options_.bodies_only) {
    const internal::EnvelopeFields f = internal::ScanEnvelope(line);
    if (f.has_blade && f.has_shard) {
      if (!f.is_object || f.blade_has_escape || !f.blade_is_string) {
        // Not sent as it is: the decoder unescapes the blade (or says why it cannot).
        auto decoded = impl_->decoder.ValidateEnvelope(line, padded);
        if (!decoded.ok()) {
          return CheckRefused(number, decoded.status().message(), out);
        }
        return AddEnvelope(decoded->blade, decoded->seq, decoded->ts, f.shard, number, out, src);
      }
      std::uint64_t seq = 0;
      std::int64_t ts = 0;
      if (!f.has_seq || !f.has_ts || !ParseNumber(f.seq, seq) || !ParseNumber(f.ts, ts) || ts < 0 ||
          f.blade.empty()) {
        return CheckRefused(number,
                            "envelope needs a non-empty string 'blade', non-negative integers "
                            "'seq' and 'ts', and 'shard'",
                            out);
      }
      return AddEnvelope(f.blade, seq, ts, f.shard, number, out, src);
    }
  }
  const std::int64_t ts = options_.ts ? *options_.ts
                                      : std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count();
  ++out.lines_;
  out.held_ += line.size();
  CheckedLines::Header h{CheckedLines::Tag(CheckedLines::kBody, 0),
                         static_cast<std::uint32_t>(line.size()), number, 0, ts};
  if (stable_line && !out.group_) {
    h.tag = CheckedLines::Tag(CheckedLines::kBodyAt, 0);
    CheckedLines::PutAt(out.OtherPart().Extend(CheckedLines::kAtSize), h, nullptr, line.data());
    return;
  }
  CheckedLines::PutCopy(out.OtherPart().Extend(sizeof h + CheckedLines::Pad8(line.size())), h, {},
                        line);
}

Status LineEmitter::SendChecked(const CheckedLines& lines, CheckedLines::Cursor& at) {
  const CheckedLines::Part& part = lines.parts_[at.part];
  const char* r = part.data() + at.at;
  CheckedLines::Header h;
  std::memcpy(&h, r, sizeof h);
  const auto kind = static_cast<CheckedLines::Kind>(h.tag & 7);
  const std::size_t blade_size = h.tag >> 3;
  std::string_view blade;
  std::string_view body;
  if (kind == CheckedLines::kEnvelopeAt || kind == CheckedLines::kBodyAt) {
    std::uint64_t where[2];
    std::memcpy(where, r + sizeof h, sizeof where);
    blade = {reinterpret_cast<const char*>(static_cast<std::uintptr_t>(where[0])), blade_size};
    body = {reinterpret_cast<const char*>(static_cast<std::uintptr_t>(where[1])), h.size};
    at.at += CheckedLines::kAtSize;
  } else {
    blade = {r + sizeof h, blade_size};
    body = {r + sizeof h + blade_size, h.size};
    at.at += sizeof h + CheckedLines::Pad8(blade_size + h.size);
  }
  if (at.at == part.size()) {
    ++at.part;
    at.at = 0;
  }
  ++report_.lines;
  switch (kind) {
    case CheckedLines::kRefused:
      ++report_.invalid;
      return LineError(h.number, body);
    case CheckedLines::kEnvelope:
    case CheckedLines::kEnvelopeAt: {
      Status s = emitter_.Send(blade, h.seq, h.ts, body);
      if (!s.ok()) {
        if (s.code() == StatusCode::kInvalidArgument) {
          ++report_.invalid;
          return LineError(h.number, s.message());
        }
        return s;
      }
      ++report_.envelopes;
      return Status::Ok();
    }
    case CheckedLines::kBody:
    case CheckedLines::kBodyAt:
      break;
  }
  Status s = emitter_.RawAt(body, h.ts);
  if (!s.ok()) {
    if (s.code() == StatusCode::kInvalidArgument) {
      ++report_.invalid;
      if (s.message().find("no blade id") != std::string::npos) {
        return LineError(h.number,
                         "not an envelope (it needs \"blade\" and \"shard\" fields), and no "
                         "--blade was given for bare bodies");
      }
      return LineError(h.number, s.message());
    }
    return s;
  }
  ++report_.bodies;
  return Status::Ok();
}

}  // namespace lattice::ingest
