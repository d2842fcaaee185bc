// `lattice replay`: merge recordings into a state directory.
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "commands.h"
#include "cut_flags.h"
#include "lattice/core/duration.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/ttl.h"
#include "lattice/ingest/aggregator_config.h"
#include "lattice/ingest/replayer.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnStopSignal(int /*signal*/) { g_stop.store(true); }

struct ReplayArgs {
  std::vector<std::string> files;
  std::string state;
  std::string dead_letter;
  std::string allowed_lateness = "5m";
  std::size_t batch = 1 << 16;
  bool strict = false;
  bool json = false;
  bool sync = false;
  std::string until;
  std::optional<std::uint64_t> until_seq;
  std::vector<std::string> ttl;
  std::string config;
  std::string counter_slot_ttl;
  std::uint64_t progress = 0;
  std::string memory_budget;
};

int RunReplay(const ReplayArgs& args) {
  auto lateness = core::ParseDurationMs(args.allowed_lateness);
  if (!lateness.ok()) {
    return Fail("--allowed-lateness: " + lateness.status().message());
  }
  for (const std::string& file : args.files) {
    std::error_code ec;
    if (file != "-" && !std::filesystem::is_regular_file(file, ec) &&
        !std::filesystem::is_fifo(file, ec)) {
      return Fail("cannot read '" + file + "': no such file");
    }
  }
  auto until = CutFromFlags("--until", args.until, args.until_seq, args.files, ingest::Cut::All());
  if (!until.ok()) {
    return Fail(until.status().message());
  }
  crdt::StoreOptions store_options;
  store_options.engine.allowed_lateness_ms = *lateness;
  if (!args.config.empty()) {
    if (Status st = crdt::LoadTtlConfig(args.config, store_options.engine); !st.ok()) {
      return Fail("--config: " + st.message());
    }
  }
  for (const std::string& text : args.ttl) {
    auto rule = crdt::ParseTtlRule(text);
    if (!rule.ok()) {
      return Fail("--ttl: " + rule.status().message());
    }
    store_options.engine.ttl.push_back(*rule);
  }
  if (!args.counter_slot_ttl.empty()) {
    auto ms = core::ParseDurationMs(args.counter_slot_ttl);
    if (!ms.ok() || *ms < 0) {
      return Fail("--counter-slot-ttl: " +
                  (ms.ok() ? std::string("must not be negative") : ms.status().message()));
    }
    store_options.engine.counter_slot_ttl_ms = *ms;
  }
  store_options.sync = args.sync;
  // The memory budget: --memory-budget, else the config file's memory_budget key.
  std::string budget_text = args.memory_budget;
  std::string budget_where = "--memory-budget";
  if (budget_text.empty() && !args.config.empty()) {
    auto settings = ingest::ReadAggregateConfigFile(args.config);
    if (!settings.ok()) {
      return Fail("--config: " + settings.status().message());
    }
    if (auto it = settings->find("memory_budget"); it != settings->end()) {
      budget_text = it->second;
      budget_where = args.config;
      budget_where.append(": memory_budget");
    }
  }
  {
    auto budget = crdt::ParseMemoryBudget(budget_text);
    if (!budget.ok()) {
      return Fail(budget_where + ": " + budget.status().message());
    }
    store_options.memory_budget = *budget;
  }
  auto store = crdt::StateStore::Open(args.state, store_options);
  if (!store.ok()) {
    return Fail(store.status().ToString());
  }
  ingest::ReplayOptions options;
  options.files = args.files;
  options.strict = args.strict;
  options.until = *until;
  options.batch_shards = std::max<std::size_t>(args.batch, 1);
  // With TTL rules the input is closed at the end, so the state is exactly DESIGN.md §4's.
  options.close_at_end =
      !store_options.engine.ttl.empty() || store_options.engine.counter_slot_ttl_ms > 0;
  options.progress_every = args.progress;
  crdt::StateStore* st = store->get();
  options.progress = [st](const ingest::ReplayReport& r) {
    const crdt::StoreStats stats = st->Stats();
    std::fprintf(stderr,
                 "progress: lines %llu live_data_bytes %llu rss_bytes %llu nodes %llu evicted %llu "
                 "folded_slots %llu change_log_bytes %llu pages_out %llu pages_in %llu\n",
                 static_cast<unsigned long long>(r.lines),
                 static_cast<unsigned long long>(stats.live_data_bytes),
                 static_cast<unsigned long long>(stats.rss_bytes),
                 static_cast<unsigned long long>(stats.nodes),
                 static_cast<unsigned long long>(st->counts().evicted),
                 static_cast<unsigned long long>(st->counts().folded_slots),
                 static_cast<unsigned long long>(stats.change_log_bytes),
                 static_cast<unsigned long long>(stats.pages_out),
                 static_cast<unsigned long long>(stats.pages_in));
  };
  // SIGINT/SIGTERM: commit what was merged and stop; a rerun continues from there.
  options.stop = &g_stop;
  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  options.dead_letter_path = args.dead_letter.empty()
                                 ? (std::filesystem::path(args.state) / "dead-letter.ndjson").string()
                                 : args.dead_letter;
  auto report = ingest::Replay(**store, options);
  if (!report.ok()) {
    return Fail(report.status().ToString());
  }
  const ingest::ReplayReport& r = *report;
  const double rate = r.seconds > 0 ? static_cast<double>(r.lines) / r.seconds : 0.0;
  if (args.json) {
    fmt::print(
        "{{\"lines\":{},\"applied\":{},\"duplicates\":{},\"conflicts\":{},\"late\":{},\"bad\":{},"
        "\"bytes\":{},\"seconds\":{:.6f},\"shards_per_s\":{:.0f},\"interrupted\":{},"
        "\"held_back\":{},\"past_until\":{}}}\n",
        r.lines, r.applied, r.duplicates, r.conflicts, r.late, r.bad, r.bytes, r.seconds, rate,
        r.interrupted, r.held_back, r.past_until);
  } else {
    fmt::print("replayed {} lines from {} file(s) in {:.2f} s: {:.0f} shards/s, {:.1f} MB/s\n",
               r.lines, args.files.size(), r.seconds, rate,
               r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds / 1e6 : 0.0);
    fmt::print("  applied     {}\n  duplicates  {}\n  conflicts   {}\n  late        {}\n"
               "  bad         {}\n",
               r.applied, r.duplicates, r.conflicts, r.late, r.bad);
    if (!store_options.engine.ttl.empty() || store_options.engine.counter_slot_ttl_ms > 0) {
      fmt::print("  evicted     {}\n  folded      {}\n", (*store)->counts().evicted,
                 (*store)->counts().folded_slots);
    }
    if (until->kind != ingest::Cut::Kind::kAll) {
      fmt::print("  past until  {}\n", r.past_until);
    }
    if (r.rejected() > 0) {
      fmt::print("  rejected lines are in {}\n", options.dead_letter_path);
    }
  }
  if (r.held_back > 0) {
    std::fprintf(stderr,
                 "lattice: the last line of a file has no newline and does not decode (%s); it "
                 "is probably still being written, so it was left for the next run\n",
                 r.held_back_reason.c_str());
  }
  if (r.interrupted) {
    std::fprintf(stderr, "lattice: interrupted; everything read so far is committed, run the "
                         "same command again to continue\n");
    return 130;
  }
  return 0;
}

}  // namespace

void AddReplayCommand(CLI::App& app) {
  auto args = std::make_shared<ReplayArgs>();
  CLI::App* cmd = app.add_subcommand(
      "replay",
      "Merge NDJSON recordings into a state directory. Resumable: a second run of the same "
      "files applies nothing new.");
  cmd->add_option("files", args->files, "Recordings (.ndjson, .ndjson.zst, or - for stdin)")
      ->required();
  cmd->add_option("--state", args->state, "State directory (created if missing)")->required();
  cmd->add_option("--dead-letter", args->dead_letter,
                  "File receiving rejected lines with reasons [default: STATE/dead-letter.ndjson]");
  cmd->add_option("--allowed-lateness", args->allowed_lateness,
                  "How far behind the watermark a shard may arrive and still merge exactly")
      ->capture_default_str();
  cmd->add_option("--batch", args->batch, "Shards per committed batch")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  cmd->add_flag("--strict", args->strict, "Stop with a non-zero exit at the first rejected line");
  cmd->add_flag("--json", args->json, "Print the summary as one JSON object");
  cmd->add_flag("--sync", args->sync, "fsync the write-ahead log on every commit");
  CLI::Option* until = cmd->add_option(
      "--until", args->until,
      "Merge only shards with ts <= TS (ms since the epoch, RFC 3339 like 2024-11-23T08:20:00Z, "
      "or +DURATION after the first shard); the rest is left for a later run");
  cmd->add_option("--until-seq", args->until_seq,
                  "Merge only the first N lines in replay order (counted from where this run "
                  "starts); the rest is left for a later run")
      ->excludes(until);
  cmd->add_option("--ttl", args->ttl,
                  "TTL rule PATTERN=DURATION (repeatable), e.g. 'intents.*=1h': a subtree "
                  "matching PATTERN (* = any one key) is evicted once nothing under it was "
                  "written for DURATION of event time (docs/configuration.md)");
  cmd->add_option("--config", args->config,
                  "YAML config file; its ttl: section (rules, clock, counter_slot_ttl, blade_ttl) "
                  "is applied (docs/configuration.md)");
  cmd->add_option("--counter-slot-ttl", args->counter_slot_ttl,
                  "Fold a counter's per-blade slot into its retired sum once the blade has not "
                  "touched it for this long (the total never changes)");
  cmd->add_option("--memory-budget", args->memory_budget,
                  "Keep the in-memory state under about this size (e.g. 512MiB, 2GiB): subtrees "
                  "below the page depth (2) that are written leave memory and are read back when "
                  "needed (docs/state-layout.md). Default: off, the whole state stays in memory");
  cmd->add_option("--progress", args->progress,
                  "Every N lines, print RocksDB live data size, RSS and node count on stderr")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 40));
  cmd->callback([args] { std::exit(RunReplay(*args)); });
}

}  // namespace lattice::cli
