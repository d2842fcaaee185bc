// LineEmitter (line_emitter.h).
#include "lattice/ingest/line_emitter.h"

#include <charconv>
#include <chrono>

#include "envelope_scan.h"
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

}  // namespace

struct LineEmitter::Impl {
  core::ShardDecoder decoder;
};

LineEmitter::LineEmitter(Emitter& emitter, LineEmitterOptions options)
    : emitter_(emitter), options_(options), impl_(std::make_unique<Impl>()) {}

LineEmitter::~LineEmitter() = default;

Status LineEmitter::Reject(std::uint64_t number, std::string_view reason) {
  ++report_.lines;
  ++report_.invalid;
  return LineError(number, reason);
}

Status LineEmitter::Add(std::string_view line, std::uint64_t number, bool padded) {
  ++report_.lines;
  internal::EnvelopeFields f;
  if (!options_.bodies_only) {
    f = internal::ScanEnvelope(line);
  }
  if (!options_.bodies_only && f.has_blade && f.has_shard) {
    std::string_view blade;
    std::uint64_t seq = 0;
    std::int64_t ts = 0;
    if (options_.validate || !f.is_object || f.blade_has_escape || !f.blade_is_string) {
      auto decoded = impl_->decoder.DecodeEnvelope(line, padded);
      if (!decoded.ok()) {
        ++report_.invalid;
        return LineError(number, decoded.status().message());
      }
      blade = (*decoded)->blade;
      seq = (*decoded)->seq;
      ts = (*decoded)->ts;
    } else {
      if (!f.has_seq || !f.has_ts || !ParseNumber(f.seq, seq) || !ParseNumber(f.ts, ts) || ts < 0 ||
          f.blade.empty()) {
        ++report_.invalid;
        return LineError(number,
                         "envelope needs a non-empty string 'blade', non-negative integers "
                         "'seq' and 'ts', and 'shard'");
      }
      blade = f.blade;
    }
    Status s = emitter_.Send(blade, seq, ts, f.shard);
    if (!s.ok()) {
      if (s.code() == StatusCode::kInvalidArgument) {
        ++report_.invalid;
        return LineError(number, s.message());
      }
      return s;
    }
    ++report_.envelopes;
    return Status::Ok();
  }
  const std::int64_t ts = options_.ts ? *options_.ts
                                      : std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count();
  Status s = emitter_.RawAt(line, ts);
  if (!s.ok()) {
    if (s.code() == StatusCode::kInvalidArgument) {
      ++report_.invalid;
      if (s.message().find("no blade id") != std::string::npos) {
        return LineError(number,
                         "not an envelope (it needs \"blade\" and \"shard\" fields), and no "
                         "--blade was given for bare bodies");
      }
      return LineError(number, s.message());
    }
    return s;
  }
  ++report_.bodies;
  return Status::Ok();
}

}  // namespace lattice::ingest
