// `lattice aggregate`: the consumer-group member that merges the shards topic into a state
// directory (the logic is ingest::Aggregator; this file only wires settings and signals).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kafka_options.h"
#include "lattice/core/duration.h"
#include "lattice/crdt/state_store.h"
#include "lattice/crdt/ttl.h"
#include "lattice/ingest/aggregator.h"
#include "lattice/ingest/aggregator_config.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnAggregateStopSignal(int /*signal*/) { g_stop.store(true); }

struct AggregateArgs {
  std::map<std::string, std::string> flags;  // setting name -> value, only the ones given
  KafkaFlags kafka;                          // -b, -X
  std::string config;
  bool json = false;
  bool exit_at_end = false;
  bool sync = false;
  std::vector<std::string> ttl;   // --ttl PATTERN=DURATION, repeatable
  std::string counter_slot_ttl;  // --counter-slot-ttl
};

int RunAggregate(AggregateArgs& args) {
  // The log goes to stderr; stdout carries only the final summary.
  spdlog::set_default_logger(spdlog::stderr_color_mt("aggregate"));
  if (args.exit_at_end) {
    args.flags["exit_at_end"] = "true";
  }
  if (args.sync) {
    args.flags["sync"] = "true";
  }
  ingest::SettingMap file;
  std::string config_path = args.config;
  if (config_path.empty()) {
    if (const char* env = std::getenv("LATTICE_CONFIG"); env != nullptr) {
      config_path = env;
    }
  }
  if (!config_path.empty()) {
    auto read = ingest::ReadAggregateConfigFile(config_path);
    if (!read.ok()) {
      return Fail(read.status().message());
    }
    file = std::move(*read);
  }
  auto config =
      ingest::ResolveAggregateConfig({args.flags, ingest::ReadAggregateEnvironment(), file});
  if (!config.ok()) {
    return Fail(config.status().message());
  }
  ingest::AggregatorOptions options = config->options;
  // Kafka: -b/-X > LATTICE_BROKERS/LATTICE_KAFKA_* > the config file's brokers and kafka: map.
  auto kafka = ResolveKafkaFlags(args.kafka);
  if (!kafka.ok()) {
    return Fail(kafka.status().message());
  }
  options.kafka = std::move(*kafka);
  if (options.kafka.brokers.empty()) {
    options.kafka.brokers = config->options.kafka.brokers;
  }
  options.kafka.properties.insert(options.kafka.properties.begin(),
                                  config->file_kafka_properties.begin(),
                                  config->file_kafka_properties.end());
  crdt::StoreOptions store_options;
  store_options.engine.allowed_lateness_ms = config->allowed_lateness_ms;
  store_options.sync = config->sync;
  store_options.memory_budget = config->memory_budget;
  if (config->max_wal_bytes) {
    store_options.max_wal_bytes = *config->max_wal_bytes;
  }
  // TTL (DESIGN §4): the config file's ttl: section, then --ttl rules added to it. Live, an
  // eviction is carried out once the lateness horizon passes it (docs/configuration.md).
  if (!config_path.empty()) {
    if (Status st = crdt::LoadTtlConfig(config_path, store_options.engine); !st.ok()) {
      return Fail(st.message());
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
    if (!ms.ok() || *ms <= 0) {
      return Fail("--counter-slot-ttl: '" + args.counter_slot_ttl +
                  "' is not a positive duration (e.g. 10m, 1h)");
    }
    store_options.engine.counter_slot_ttl_ms = *ms;
  }
  auto store = crdt::StateStore::Open(config->state, store_options);
  if (!store.ok()) {
    return Fail(store.status().ToString());
  }
  options.stop = &g_stop;
  std::signal(SIGINT, OnAggregateStopSignal);
  std::signal(SIGTERM, OnAggregateStopSignal);
  auto aggregator = ingest::Aggregator::Create(**store, options);
  if (!aggregator.ok()) {
    return Fail(aggregator.status().message());
  }
  auto report = (*aggregator)->Run();
  if (!report.ok()) {
    return Fail(report.status().ToString());
  }
  const ingest::AggregatorReport& r = *report;
  const double rate = r.seconds > 0 ? static_cast<double>(r.messages) / r.seconds : 0.0;
  if (args.json) {
    fmt::print(
        "{{\"messages\":{},\"applied\":{},\"duplicates\":{},\"conflicts\":{},\"late\":{},"
        "\"bad\":{},\"dead_letters\":{},\"batches\":{},\"max_batch\":{},\"rebalances\":{},"
        "\"bytes\":{},"
        "\"changes\":{},\"fetcher_wakeups\":{},\"assigned_seconds\":{:.6f},\"seconds\":{:.6f},"
        "\"shards_per_s\":{:.0f},\"reached_end\":{}}}\n",
        r.messages, r.applied, r.duplicates, r.conflicts, r.late, r.bad, r.dead_letters, r.batches,
        r.max_batch, r.rebalances, r.bytes, r.changes, r.fetcher_wakeups, r.assigned_seconds,
        r.seconds, rate, r.reached_end);
  } else {
    fmt::print("aggregated {} messages in {:.2f} s: {:.0f} shards/s in {} batches\n", r.messages,
               r.seconds, rate, r.batches);
    fmt::print(
        "  applied       {}\n  duplicates    {}\n  conflicts     {}\n  late          {}\n"
        "  bad           {}\n  dead letters  {} (to {})\n",
        r.applied, r.duplicates, r.conflicts, r.late, r.bad, r.dead_letters, options.dead_topic);
  }
  std::fflush(stdout);
  // Everything is durable and reported. The Kafka handles (their threads are joined) and the
  // state store (RocksDB closes, the engine's memory is freed) no longer depend on each other:
  // release them at the same time.
  std::thread release_kafka([&aggregator] { aggregator->reset(); });
  store->reset();
  release_kafka.join();
  return 0;
}

}  // namespace

void AddAggregateCommand(CLI::App& app) {
  auto args = std::make_shared<AggregateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "aggregate",
      "Consume the shards topic as a member of a consumer group and merge it into a state "
      "directory, committing state and offsets together (exactly-once effects). Settings: "
      "flag > LATTICE_* environment > config file > default (docs/operations.md).");
  // Each setting is a string flag; only the ones given land in the flags layer.
  const auto setting = [&](const std::string& flag, const std::string& name,
                           const std::string& help) {
    cmd->add_option_function<std::string>(
        flag, [args, name](const std::string& v) { args->flags[name] = v; }, help);
  };
  AddKafkaFlags(cmd, args->kafka);
  setting("--topic", "topic", "Topic of shards (LATTICE_TOPIC) [lattice.shards]");
  setting("--group", "group", "Consumer group (LATTICE_GROUP) [lattice-aggregator]");
  setting("--assign", "assign",
          "Standalone mode: read 'all' partitions, or a list like 0-31,40, by manual assignment "
          "without joining the consumer group (one aggregator per partition set; no group "
          "formation wait, no rebalances) (LATTICE_ASSIGN) [group mode]");
  setting("--state", "state", "State directory, created if missing (LATTICE_STATE)");
  setting("--default-blade", "default_blade",
          "Blade of messages without a key; the partition is appended as /N "
          "(LATTICE_DEFAULT_BLADE) [unkeyed]");
  setting("--dead-topic", "dead_topic",
          "Topic receiving rejected shards (LATTICE_DEAD_TOPIC) [lattice.dead]");
  setting("--changes-topic", "changes_topic",
          "Topic receiving change events after each durable batch; '' for none "
          "(LATTICE_CHANGES_TOPIC) [lattice.changes]");
  setting("--min-batch", "min_batch",
          "Smallest batch limit in messages (LATTICE_MIN_BATCH) [1024]");
  setting(
      "--max-batch", "max_batch",
      "Largest batch limit in messages (LATTICE_MAX_BATCH) [1048576; 262144 with change events]");
  setting("--max-batch-time", "max_batch_time",
          "Commit a batch at the latest this long after its first message "
          "(LATTICE_MAX_BATCH_TIME) [1s]");
  setting("--allowed-lateness", "allowed_lateness",
          "How far behind the watermark a shard still merges exactly (LATTICE_ALLOWED_LATENESS) "
          "[5m]");
  setting("--memory-budget", "memory_budget",
          "Keep the in-memory state under about this size (e.g. 512MiB, 2GiB): written subtrees "
          "below the page depth leave memory and are read back when needed "
          "(LATTICE_MEMORY_BUDGET) [off]");
  setting("--max-wal-size", "max_wal_size",
          "Bound on the state's write-ahead log (at least 1MiB): past it the column families "
          "holding the oldest log file are written out and the file deleted; what an open "
          "replays (LATTICE_MAX_WAL_SIZE) [256MiB]");
  setting("--log-interval", "log_interval",
          "Period of the progress log (lag, rates, batches); 0 for none (LATTICE_LOG_INTERVAL) "
          "[5s]");
  cmd->add_option("--ttl", args->ttl,
                  "TTL rule PATTERN=DURATION ('*' matches one key), repeatable, added to the "
                  "config file's ttl: rules; e.g. --ttl 'intents.*=1h' (docs/configuration.md)");
  cmd->add_option("--counter-slot-ttl", args->counter_slot_ttl,
                  "Fold a counter's blade slot untouched this long into its retired sum");
  cmd->add_option("-c,--config", args->config,
                  "YAML config file of the settings above (LATTICE_CONFIG)");
  cmd->add_flag("--exit-at-end", args->exit_at_end,
                "Stop once every assigned partition reached the end offset it had at start "
                "(LATTICE_EXIT_AT_END)");
  cmd->add_flag("--sync", args->sync, "fsync the write-ahead log on every commit (LATTICE_SYNC)");
  cmd->add_flag("--json", args->json, "Print the final summary as one JSON object");
  cmd->callback([args] { std::exit(RunAggregate(*args)); });
}

}  // namespace lattice::cli
