// Decoding envelopes, against the baseline every parse figure is compared with: a plain simdjson
// DOM parse of the same line that reads every key and every value (bench/replay.sh prints the
// ratio). Both parse in place (the lines are padded), one thread, the recording in memory.
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <bit>
#include <cstdint>

#include "bench_recording.h"
#include "lattice/core/shard.h"

namespace lattice::bench {
namespace {

// Reads every key and value under `e` and folds them into a number the compiler must produce.
std::uint64_t TouchAll(simdjson::dom::element e) {
  using simdjson::dom::element_type;
  switch (e.type()) {
    case element_type::OBJECT: {
      std::uint64_t h = 1;
      simdjson::dom::object object;
      if (e.get_object().get(object) != simdjson::SUCCESS) {
        return 0;
      }
      for (simdjson::dom::key_value_pair field : object) {
        h += field.key.size() + static_cast<unsigned char>(field.key.empty() ? 0 : field.key[0]);
        h += TouchAll(field.value);
      }
      return h;
    }
    case element_type::ARRAY: {
      std::uint64_t h = 2;
      simdjson::dom::array array;
      if (e.get_array().get(array) != simdjson::SUCCESS) {
        return 0;
      }
      for (simdjson::dom::element child : array) {
        h += TouchAll(child);
      }
      return h;
    }
    case element_type::STRING: {
      std::string_view s = e.get_string().value_unsafe();
      return s.size() + static_cast<unsigned char>(s.empty() ? 0 : s.back());
    }
    case element_type::INT64:
      return static_cast<std::uint64_t>(e.get_int64().value_unsafe());
    case element_type::UINT64:
      return e.get_uint64().value_unsafe();
    case element_type::DOUBLE:
      return std::bit_cast<std::uint64_t>(e.get_double().value_unsafe());
    case element_type::BOOL:
      return e.get_bool().value_unsafe() ? 3 : 4;
    case element_type::NULL_VALUE:
      return 5;
  }
  return 0;
}

void SetCounters(benchmark::State& state, const Recording& rec) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rec.lines.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rec.bytes));
  state.counters["shards"] = static_cast<double>(rec.lines.size());
  state.SetLabel(rec.origin);
}

// The baseline: simdjson's DOM parser (validation, UTF-8 checks, string unescaping) plus a walk
// that reads every field; no merge semantics, no canonical text, no hashing.
void BM_SimdjsonParseTouchAll(benchmark::State& state) {
  const Recording& rec = BenchRecording();
  simdjson::dom::parser parser;
  std::uint64_t sink = 0;
  for (auto _ : state) {
    for (std::string_view line : rec.lines) {
      simdjson::dom::element doc;
      if (parser.parse(line.data(), line.size(), /*realloc_if_needed=*/false).get(doc) !=
          simdjson::SUCCESS) {
        state.SkipWithError("simdjson rejected a line of the recording");
        return;
      }
      sink += TouchAll(doc);
    }
    benchmark::DoNotOptimize(sink);
  }
  SetCounters(state, rec);
}
BENCHMARK(BM_SimdjsonParseTouchAll)->Unit(benchmark::kMillisecond);

// ShardDecoder::DecodeEnvelope: parse, validate (DESIGN.md §2.3), flatten into BodyEntry records,
// canonicalise values and hash the body.
void BM_ShardDecoderDecodeEnvelope(benchmark::State& state) {
  const Recording& rec = BenchRecording();
  core::ShardDecoder decoder;
  std::uint64_t sink = 0;
  for (auto _ : state) {
    for (std::string_view line : rec.lines) {
      auto shard = decoder.DecodeEnvelope(line, /*padded=*/true);
      if (!shard.ok()) {
        state.SkipWithError(shard.status().ToString().c_str());
        return;
      }
      sink += (*shard)->hash + (*shard)->entries.size();
    }
    benchmark::DoNotOptimize(sink);
  }
  SetCounters(state, rec);
}
BENCHMARK(BM_ShardDecoderDecodeEnvelope)->Unit(benchmark::kMillisecond);

// ShardDecoder::DecodeBody: the aggregator's decode of a Kafka message value (the envelope comes
// from the message's key, header and timestamp), on the bodies of the same recording, each copied
// into a buffer of its own as a message value is (not padded: the decoder copies it).
void BM_ShardDecoderDecodeBody(benchmark::State& state) {
  const Recording& rec = BenchRecording();
  core::ShardDecoder decoder;
  struct Body {
    std::string blade;
    std::uint64_t seq;
    std::int64_t ts;
    std::string text;
  };
  std::vector<Body> bodies;
  bodies.reserve(rec.lines.size());
  for (std::string_view line : rec.lines) {
    auto shard = decoder.DecodeEnvelope(line, /*padded=*/true);
    const std::size_t at = line.find("\"shard\":");
    if (!shard.ok() || at == std::string_view::npos) {
      state.SkipWithError("a line without a body");
      return;
    }
    std::string_view body = line.substr(at + 8);
    body.remove_suffix(1);  // the envelope's closing brace
    bodies.push_back({std::string((*shard)->blade), (*shard)->seq, (*shard)->ts, std::string(body)});
  }
  std::uint64_t sink = 0;
  for (auto _ : state) {
    for (const Body& b : bodies) {
      auto shard = decoder.DecodeBody(b.text, b.blade, b.seq, b.ts);
      if (!shard.ok()) {
        state.SkipWithError(shard.status().ToString().c_str());
        return;
      }
      sink += (*shard)->hash + (*shard)->entries.size();
    }
    benchmark::DoNotOptimize(sink);
  }
  SetCounters(state, rec);
}
BENCHMARK(BM_ShardDecoderDecodeBody)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lattice::bench

BENCHMARK_MAIN();
