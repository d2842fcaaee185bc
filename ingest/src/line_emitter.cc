// LineEmitter (line_emitter.h).
#include "lattice/ingest/line_emitter.h"

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

// FNV-1a of a blade (a few bytes), to group a batch's lines by blade.
std::uint32_t BladeHash(std::string_view blade) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : blade) {
    h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

}  // namespace

void CheckedLines::GroupByBlade() {
  const auto n = static_cast<std::uint32_t>(items_.size());
  order_.resize(n);
  bool moved = false;
  std::uint32_t begin = 0;
  while (begin < n) {
    if (items_[begin].kind != Kind::kEnvelope) {
      order_[begin] = begin;  // a bare body or a refused line keeps its place
      ++begin;
      continue;
    }
    std::uint32_t end = begin + 1;
    while (end < n && items_[end].kind == Kind::kEnvelope) {
      ++end;
    }
    moved |= GroupRun(begin, end);
    begin = end;
  }
  if (!moved) {
    return;
  }
  // The items and their bytes are moved into that order here, so that the sending thread reads
  // both front to back (it reads what this thread wrote, from the other core's cache: in order,
  // the hardware prefetcher fetches ahead). Reading them here in that order is not front to
  // back: each blade's lines are spread over the batch (or the mapped file), so the bytes of the
  // line kAhead places on are prefetched (perf: the copy's share of the samples 9% -> 5%).
  grouped_items_.clear();
  grouped_bytes_.clear();
  constexpr std::uint32_t kAhead = 8;
  const auto prefetch = [&](std::uint32_t k) {
    const Item& ahead = items_[order_[k]];
    __builtin_prefetch(Blade(ahead).data());
    const std::string_view body = Body(ahead);
    for (std::size_t at = 0; at < body.size() && at < 256; at += 64) {
      __builtin_prefetch(body.data() + at);
    }
  };
  for (std::uint32_t k = 0; k < n && k < kAhead; ++k) {
    prefetch(k);
  }
  for (std::uint32_t k = 0; k < n; ++k) {
    if (k + kAhead < n) {
      prefetch(k + kAhead);
    }
    Item item = items_[order_[k]];
    const std::string_view blade = Blade(item);
    const std::string_view body = Body(item);
    item.stable = false;
    item.blade = grouped_bytes_.size();
    grouped_bytes_.append(blade);
    item.body = grouped_bytes_.size();
    grouped_bytes_.append(body);
    grouped_items_.push_back(item);
  }
  items_.swap(grouped_items_);
  bytes_.swap(grouped_bytes_);
}

bool CheckedLines::GroupRun(std::uint32_t begin, std::uint32_t end) {
  const std::uint32_t n = end - begin;
  std::size_t cap = 16;
  while (cap < 2 * static_cast<std::size_t>(n)) {
    cap *= 2;
  }
  const std::size_t mask = cap - 1;
  slots_.assign(cap, 0);
  group_of_.resize(n);
  group_pos_.clear();
  for (std::uint32_t k = 0; k < n; ++k) {
    const std::uint32_t h = items_[begin + k].hash;
    std::uint32_t g = 0;
    for (std::size_t s = h & mask;; s = (s + 1) & mask) {
      const std::uint64_t slot = slots_[s];
      if (slot == 0) {
        g = static_cast<std::uint32_t>(group_pos_.size());
        group_pos_.push_back(0);
        slots_[s] = (std::uint64_t{h} << 32) | (g + 1);
        break;
      }
      if (slot >> 32 == h) {
        // Blades whose hashes collide share a group: harmless, as a group keeps its lines'
        // order (each blade's order is all that must hold); they just interleave.
        g = static_cast<std::uint32_t>(slot) - 1;
        break;
      }
    }
    group_of_[k] = g;
    ++group_pos_[g];
  }
  if (group_pos_.size() == 1 || group_pos_.size() == n) {
    for (std::uint32_t k = 0; k < n; ++k) {
      order_[begin + k] = begin + k;  // already grouped
    }
    return false;
  }
  std::uint32_t place = begin;
  for (std::uint32_t& pos : group_pos_) {
    const std::uint32_t size = pos;
    pos = place;
    place += size;
  }
  for (std::uint32_t k = 0; k < n; ++k) {
    order_[group_pos_[group_of_[k]]++] = begin + k;
  }
  return true;
}

struct LineEmitter::Impl {
  core::ShardDecoder decoder;
  CheckedLines one;  // Add's and Reject's batch of one
};

LineEmitter::LineEmitter(Emitter& emitter, LineEmitterOptions options)
    : emitter_(emitter), options_(options), impl_(std::make_unique<Impl>()) {}

LineEmitter::~LineEmitter() = default;

Status LineEmitter::Reject(std::uint64_t number, std::string_view reason) {
  CheckedLines& one = impl_->one;
  one.Clear();
  CheckRefused(number, reason, one);
  return SendChecked(one, 0);
}

Status LineEmitter::Add(std::string_view line, std::uint64_t number, bool padded) {
  CheckedLines& one = impl_->one;
  one.Clear();
  Check(line, number, padded, one);
  return SendChecked(one, 0);
}

void LineEmitter::CheckRefused(std::uint64_t number, std::string_view reason, CheckedLines& out) {
  out.items_.push_back({CheckedLines::Kind::kRefused, false, 0, 0, 0, out.bytes_.size(),
                        reason.size(), number, 0, 0});
  out.bytes_.append(reason);
  out.held_ += reason.size();
}

namespace {
// True if `part` lies within `whole`.
bool Within(std::string_view part, std::string_view whole) {
  const auto p = reinterpret_cast<std::uintptr_t>(part.data());
  const auto w = reinterpret_cast<std::uintptr_t>(whole.data());
  return p >= w && p + part.size() <= w + whole.size();
}
}  // namespace

void LineEmitter::AddEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                              std::string_view body, std::uint64_t number, CheckedLines& out,
                              std::string_view stable) {
  const auto blade_size = static_cast<std::uint32_t>(blade.size());
  const std::uint32_t hash = BladeHash(blade);
  out.held_ += blade.size() + body.size();
  if (!stable.empty() && Within(blade, stable) && Within(body, stable)) {
    out.items_.push_back({CheckedLines::Kind::kEnvelope, true, blade_size, hash,
                          CheckedLines::Address(blade), CheckedLines::Address(body), body.size(),
                          number, seq, ts});
    return;
  }
  const std::size_t at = out.bytes_.size();
  out.items_.push_back({CheckedLines::Kind::kEnvelope, false, blade_size, hash, at,
                        at + blade.size(), body.size(), number, seq, ts});
  out.bytes_.append(blade);
  out.bytes_.append(body);
}

void LineEmitter::AddValidEnvelope(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                                   std::string_view body, std::uint64_t number, CheckedLines& out,
                                   std::string_view stable) {
  const std::size_t limit = impl_->decoder.limits().max_body_bytes;
  if (body.size() <= limit) {
    return AddEnvelope(blade, seq, ts, body, number, out, stable);
  }
  // The decoder measures a long line's body without whitespace (docs/shard-format.md), but a
  // Kafka message's body is measured as it is (the aggregator refuses one over the limit): send
  // the body without its whitespace, or refuse the line if even that is too long (a body full of
  // escapes the decoder measured unescaped).
  const std::size_t start = out.bytes_.size();
  out.bytes_.append(blade);
  core::AppendWithoutWhitespace(out.bytes_, body);
  const std::size_t size = out.bytes_.size() - start - blade.size();
  if (size > limit) {
    out.bytes_.resize(start);
    return CheckRefused(number,
                        "shard body of " + std::to_string(size) +
                            " bytes without whitespace exceeds the limit of " +
                            std::to_string(limit) + " bytes for a Kafka message body",
                        out);
  }
  out.items_.push_back({CheckedLines::Kind::kEnvelope, false,
                        static_cast<std::uint32_t>(blade.size()), BladeHash(blade), start,
                        start + blade.size(), size, number, seq, ts});
  out.held_ += blade.size() + size;
}

void LineEmitter::Check(std::string_view line, std::uint64_t number, bool padded, CheckedLines& out,
                        bool stable_line) {
  const std::string_view stable = stable_line ? line : std::string_view();
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
                                out, stable);
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
                              stable);
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
        return AddEnvelope(decoded->blade, decoded->seq, decoded->ts, f.shard, number, out, stable);
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
      return AddEnvelope(f.blade, seq, ts, f.shard, number, out, stable);
    }
  }
  const std::int64_t ts = options_.ts ? *options_.ts
                                      : std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count();
  out.held_ += line.size();
  if (stable_line) {
    out.items_.push_back({CheckedLines::Kind::kBody, true, 0, 0, 0, CheckedLines::Address(line),
                          line.size(), number, 0, ts});
    return;
  }
  out.items_.push_back(
      {CheckedLines::Kind::kBody, false, 0, 0, 0, out.bytes_.size(), line.size(), number, 0, ts});
  out.bytes_.append(line);
}

Status LineEmitter::SendChecked(const CheckedLines& lines, std::size_t i) {
  const CheckedLines::Item& item = lines.items_[i];
  ++report_.lines;
  switch (item.kind) {
    case CheckedLines::Kind::kRefused:
      ++report_.invalid;
      return LineError(item.number, lines.Body(item));
    case CheckedLines::Kind::kEnvelope: {
      Status s = emitter_.Send(lines.Blade(item), item.seq, item.ts, lines.Body(item));
      if (!s.ok()) {
        if (s.code() == StatusCode::kInvalidArgument) {
          ++report_.invalid;
          return LineError(item.number, s.message());
        }
        return s;
      }
      ++report_.envelopes;
      return Status::Ok();
    }
    case CheckedLines::Kind::kBody:
      break;
  }
  Status s = emitter_.RawAt(lines.Body(item), item.ts);
  if (!s.ok()) {
    if (s.code() == StatusCode::kInvalidArgument) {
      ++report_.invalid;
      if (s.message().find("no blade id") != std::string::npos) {
        return LineError(item.number,
                         "not an envelope (it needs \"blade\" and \"shard\" fields), and no "
                         "--blade was given for bare bodies");
      }
      return LineError(item.number, s.message());
    }
    return s;
  }
  ++report_.bodies;
  return Status::Ok();
}

}  // namespace lattice::ingest
