// `lattice emit`: send shards (NDJSON envelopes or bare bodies) to Kafka.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "kafka_options.h"
#include "lattice/core/duration.h"
#include "lattice/core/line_reader.h"
#include "lattice/ingest/emitter.h"
#include "lattice/ingest/line_emitter.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_emit_stop{false};
// The first SIGINT/SIGTERM stops reading at the next line and delivers what was queued; a second
// one (e.g. while waiting for a line on an interactive stdin) ends the process at once.
extern "C" void OnEmitStopSignal(int signal) {
  if (g_emit_stop.exchange(true)) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

constexpr std::uint64_t kMaxShownErrors = 20;

struct EmitArgs {
  KafkaFlags kafka;
  std::vector<std::string> bodies;
  std::string file;
  std::string topic = std::string(ingest::kShardsTopic);
  std::string blade;
  std::string seq_file;
  std::uint64_t seq_block = 4096;
  std::optional<std::uint64_t> first_seq;
  std::optional<std::int64_t> ts;
  bool bodies_only = false;
  bool no_validate = false;
  bool strict = false;
  bool json = false;
  std::string timeout = "60s";
};

int RunEmit(const EmitArgs& args) {
  auto timeout_ms = core::ParseDurationMs(args.timeout);
  if (!timeout_ms.ok()) {
    return Fail("--timeout: " + timeout_ms.status().message());
  }
  if (!args.bodies.empty() && !args.file.empty()) {
    return Fail("give shards either as arguments or with --file, not both");
  }
  auto settings = ResolveKafkaFlags(args.kafka);
  if (!settings.ok()) {
    return Fail(settings.status().ToString());
  }
  ingest::EmitterOptions options;
  options.kafka = std::move(settings).value();
  options.topic = args.topic;
  options.blade = args.blade;
  options.seq_file = args.seq_file;
  options.seq_block = args.seq_block;
  options.first_seq = args.first_seq;
  options.validate = !args.no_validate;
  auto opened = ingest::Emitter::Open(std::move(options));
  if (!opened.ok()) {
    return Fail(opened.status().ToString());
  }
  ingest::Emitter& emitter = **opened;
  ingest::LineEmitterOptions line_options;
  line_options.bodies_only = args.bodies_only;
  line_options.ts = args.ts;
  line_options.validate = !args.no_validate;
  ingest::LineEmitter lines(emitter, line_options);

  std::signal(SIGINT, OnEmitStopSignal);
  std::signal(SIGTERM, OnEmitStopSignal);
  const auto start = std::chrono::steady_clock::now();
  Status stop_status;  // why sending stopped early, if it did
  auto add = [&](std::string_view text, std::uint64_t number, bool padded, bool too_long) {
    Status s = too_long ? lines.Reject(number, "line longer than 1 MiB + 64 KiB")
                        : lines.Add(text, number, padded);
    if (s.ok()) {
      return true;
    }
    if (s.code() != StatusCode::kInvalidArgument || args.strict) {
      stop_status = std::move(s);
      return false;
    }
    if (lines.report().invalid <= kMaxShownErrors) {
      std::fprintf(stderr, "lattice emit: %s\n", s.message().c_str());
      if (lines.report().invalid == kMaxShownErrors) {
        std::fprintf(stderr, "lattice emit: (further invalid lines are counted, not shown)\n");
      }
    }
    return true;
  };
  if (!args.bodies.empty()) {
    std::uint64_t n = 0;
    for (const auto& b : args.bodies) {
      if (g_emit_stop.load() || !add(b, ++n, false, false)) {
        break;
      }
    }
  } else {
    const std::string path = args.file.empty() ? "-" : args.file;
    auto reader = core::LineReader::Open(path);
    if (!reader.ok()) {
      return Fail(reader.status().ToString());
    }
    while (!g_emit_stop.load()) {
      auto line = (*reader)->Next();
      if (!line.ok()) {
        stop_status = line.status().WithContext(path);
        break;
      }
      if (!line->has_value()) {
        break;
      }
      const core::Line& l = **line;
      if (!add(l.text, l.number, true, l.too_long)) {
        break;
      }
    }
  }
  Status flushed = emitter.Close(std::chrono::milliseconds(*timeout_ms));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ingest::EmitterStats stats = emitter.stats();
  const ingest::LineEmitterReport& r = lines.report();
  const double rate = seconds > 0 ? static_cast<double>(stats.delivered) / seconds : 0;
  if (args.json) {
    std::printf(
        "{\"lines\":%llu,\"sent\":%llu,\"envelopes\":%llu,\"bodies\":%llu,\"invalid\":%llu,"
        "\"delivered\":%llu,\"failed\":%llu,\"bytes\":%llu,\"seconds\":%.3f,"
        "\"shards_per_second\":%.0f}\n",
        static_cast<unsigned long long>(r.lines), static_cast<unsigned long long>(stats.queued),
        static_cast<unsigned long long>(r.envelopes), static_cast<unsigned long long>(r.bodies),
        static_cast<unsigned long long>(r.invalid),
        static_cast<unsigned long long>(stats.delivered),
        static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(stats.bytes),
        seconds, rate);
  } else {
    std::printf(
        "sent %llu shards (%llu envelopes, %llu bare bodies) in %.3f s: %.0f shards/s, "
        "%.1f MB/s; delivered %llu, failed %llu, invalid lines %llu\n",
        static_cast<unsigned long long>(stats.queued), static_cast<unsigned long long>(r.envelopes),
        static_cast<unsigned long long>(r.bodies), seconds, rate,
        seconds > 0 ? static_cast<double>(stats.bytes) / seconds / 1e6 : 0.0,
        static_cast<unsigned long long>(stats.delivered),
        static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(r.invalid));
  }
  std::fflush(stdout);
  if (!stop_status.ok()) {
    return Fail(stop_status.ToString());
  }
  if (!flushed.ok()) {
    return Fail(flushed.ToString());
  }
  if (g_emit_stop.load()) {
    std::fprintf(stderr, "lattice emit: interrupted; everything queued was delivered\n");
    return 130;
  }
  return 0;
}

}  // namespace

void AddEmitCommand(CLI::App& app) {
  auto args = std::make_shared<EmitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "emit",
      "Send shards to Kafka: NDJSON lines from stdin or --file, or shards given as arguments. "
      "Envelope lines ({\"blade\",\"seq\",\"ts\",\"shard\"}) keep their own blade, seq and ts "
      "(a recording is re-emitted faithfully); bare bodies are shards of --blade.");
  cmd->footer(
      "Each shard becomes one message: key = blade, value = body, timestamp = ts, header "
      "lattice-seq = seq; the producer is idempotent. Bare bodies take the seq from --seq-file "
      "(block-reserved, survives restarts) or, without one, from the clock in microseconds. "
      "See docs/operations.md for the environment variables.");
  AddKafkaFlags(cmd, args->kafka);
  cmd->add_option("shards", args->bodies, "Shards (envelopes or bare bodies) to send");
  cmd->add_option("-f,--file", args->file,
                  "NDJSON file to send (- for stdin, the default; .zst is decompressed)");
  cmd->add_option("-t,--topic", args->topic, "Topic")->capture_default_str();
  cmd->add_option("--blade", args->blade, "Blade id (message key) of bare bodies");
  cmd->add_option("--seq-file", args->seq_file,
                  "File keeping the blade's seq high-water mark across runs (bare bodies)");
  cmd->add_option("--seq-block", args->seq_block, "Seqs reserved per fsync of the seq file")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--seq", args->first_seq, "First seq of the bare bodies")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 62));
  cmd->add_option("--ts", args->ts, "Event time (ms) of the bare bodies (default: now)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 50));
  cmd->add_flag("--bodies", args->bodies_only,
                "Every line is a bare body, even one with \"blade\" and \"shard\" keys");
  cmd->add_flag("--no-validate", args->no_validate,
                "Send shards without checking them against the shard rules (e.g. to test the "
                "dead-letter path)");
  cmd->add_flag("--strict", args->strict, "Stop at the first invalid line (exit code 1)");
  cmd->add_flag("--json", args->json, "Print the summary as one JSON object");
  cmd->add_option("--timeout", args->timeout,
                  "How long to wait at the end for every shard to be delivered")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunEmit(*args)); });
}

}  // namespace lattice::cli
