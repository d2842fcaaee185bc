// The input every benchmark program shares: one recording held in memory, so that the baseline
// and the programs measured against it read the same bytes.
//
// By default the recording is generated in-process with ingest::GenerateSynthetic (200,000 shards,
// 64 blades, seed 7; LATTICE_BENCH_SHARDS changes the count). If LATTICE_BENCH_FILE names a
// recording (.ndjson or .ndjson.zst), that file is read instead; bench/replay.sh uses this to run
// the in-memory figures on the very file it replays. Loading is not timed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/core/line_reader.h"
#include "lattice/core/shard.h"
#include "lattice/ingest/synthetic.h"

namespace lattice::bench {

/// A recording in one contiguous buffer. Every line is followed by at least
/// core::ShardDecoder::kPadding readable bytes (the next lines, then explicit padding), so the
/// decoder and simdjson can parse in place without copying.
struct Recording {
  std::string buffer;                   // the lines, each ending in '\n', then padding
  std::vector<std::string_view> lines;  // views into `buffer`, without the newline
  std::uint64_t bytes = 0;              // bytes of the lines including their newlines
  std::string origin;                   // where the lines came from, for the benchmark context
};

namespace internal {

inline Recording LoadRecording() {
  Recording rec;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  auto add = [&](std::string_view line) {
    spans.emplace_back(rec.buffer.size(), line.size());
    rec.buffer.append(line);
    rec.buffer.push_back('\n');
  };
  if (const char* file = std::getenv("LATTICE_BENCH_FILE"); file != nullptr && *file != '\0') {
    auto reader = core::LineReader::Open(file);
    if (!reader.ok()) {
      std::fprintf(stderr, "LATTICE_BENCH_FILE: %s\n", reader.status().ToString().c_str());
      std::exit(2);
    }
    while (true) {
      auto line = (*reader)->Next();
      if (!line.ok()) {
        std::fprintf(stderr, "LATTICE_BENCH_FILE: %s\n", line.status().ToString().c_str());
        std::exit(2);
      }
      if (!line->has_value()) {
        break;
      }
      add((*line)->text);
    }
    rec.origin = file;
  } else {
    ingest::SyntheticOptions options;
    options.shards = 200000;
    if (const char* n = std::getenv("LATTICE_BENCH_SHARDS"); n != nullptr && *n != '\0') {
      options.shards = std::strtoull(n, nullptr, 10);
    }
    options.blades = 64;
    options.seed = 7;
    rec.buffer.reserve(options.shards * 160);
    ingest::GenerateSynthetic(options, add);
    rec.origin = "GenerateSynthetic(shards=" + std::to_string(options.shards) +
                 ", blades=64, seed=7)";
  }
  rec.bytes = rec.buffer.size();
  rec.buffer.append(core::ShardDecoder::kPadding, '\0');
  rec.lines.reserve(spans.size());
  for (const auto& [offset, size] : spans) {
    rec.lines.emplace_back(rec.buffer.data() + offset, size);
  }
  return rec;
}

}  // namespace internal

/// The shared recording, loaded on first use. Thread safety: first use from one thread.
inline const Recording& BenchRecording() {
  static const Recording rec = internal::LoadRecording();
  return rec;
}

}  // namespace lattice::bench
