// `lattice record`: write what a Kafka topic carries into an NDJSON recording.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "kafka_options.h"
#include "lattice/ingest/recorder.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_record_stop{false};
extern "C" void OnRecordStopSignal(int /*signal*/) { g_record_stop.store(true); }

struct RecordArgs {
  KafkaFlags kafka;
  std::string topic = std::string(ingest::kShardsTopic);
  std::string from = "beginning";
  bool until_end = false;
  std::string default_blade = "unkeyed";
  std::string out = "-";
  bool json = false;
};

int RunRecord(const RecordArgs& args) {
  auto settings = ResolveKafkaFlags(args.kafka);
  if (!settings.ok()) {
    return Fail(settings.status().ToString());
  }
  auto from = ingest::ParseRecordStart(args.from);
  if (!from.ok()) {
    return Fail("--from: " + from.status().message());
  }
  ingest::RecordOptions options;
  options.kafka = std::move(settings).value();
  options.topic = args.topic;
  options.from = *from;
  options.until_end = args.until_end;
  options.default_blade = args.default_blade;
  options.output = args.out;
  options.stop = &g_record_stop;
  std::signal(SIGINT, OnRecordStopSignal);
  std::signal(SIGTERM, OnRecordStopSignal);
  auto report = ingest::Record(options);
  if (!report.ok()) {
    return Fail(report.status().ToString());
  }
  const ingest::RecordReport& r = *report;
  // The summary goes to stderr: stdout may be the recording.
  if (args.json) {
    std::fprintf(stderr,
                 "{\"messages\":%llu,\"shards\":%llu,\"bad\":%llu,\"skipped\":%llu,"
                 "\"partitions\":%d,\"bytes\":%llu,\"seconds\":%.3f,\"interrupted\":%s}\n",
                 static_cast<unsigned long long>(r.messages),
                 static_cast<unsigned long long>(r.shards), static_cast<unsigned long long>(r.bad),
                 static_cast<unsigned long long>(r.skipped), r.partitions,
                 static_cast<unsigned long long>(r.bytes), r.seconds,
                 r.interrupted ? "true" : "false");
  } else {
    std::string fallback;
    if (r.timestamp_fallback) {
      fallback = "; " + std::to_string(r.skipped) +
                 " earlier messages read and skipped (no offset for the time: none that recent, "
                 "or a broker that cannot look offsets up by time)";
    }
    std::fprintf(stderr,
                 "recorded %llu messages from %d partition(s) of %s in %.3f s: %llu shards, %llu "
                 "bad (kept as \"raw\" lines)%s\n",
                 static_cast<unsigned long long>(r.messages), r.partitions, args.topic.c_str(),
                 r.seconds, static_cast<unsigned long long>(r.shards),
                 static_cast<unsigned long long>(r.bad), fallback.c_str());
  }
  return r.interrupted ? 130 : 0;
}

}  // namespace

void AddRecordCommand(CLI::App& app) {
  auto args = std::make_shared<RecordArgs>();
  CLI::App* cmd = app.add_subcommand(
      "record",
      "Write what a Kafka topic carries (all partitions) into an NDJSON recording with "
      "provenance (topic, partition, offset), so `lattice replay` rebuilds the aggregator's state");
  cmd->footer(
      "Each message becomes an envelope {\"blade\",\"seq\",\"ts\",\"shard\",\"topic\","
      "\"partition\",\"offset\"}: blade = key (or --default-blade/<partition>), seq = the "
      "lattice-seq header "
      "(or the offset), ts = the message timestamp. A message that is not a valid shard is kept "
      "as {..., \"raw\": value, \"reason\": why} (no \"shard\"), which replay rejects like the "
      "aggregator does. See docs/shard-format.md.");
  AddKafkaFlags(cmd, args->kafka);
  cmd->add_option("-t,--topic", args->topic, "Topic")->capture_default_str();
  cmd->add_option("--from", args->from,
                  "Where to start in every partition: beginning, end, an offset N, or "
                  "@TIMESTAMP_MS (the first message at or after that event time)")
      ->capture_default_str();
  cmd->add_flag("-e,--until-end", args->until_end,
                "Stop at the end offsets captured at start (otherwise follow until SIGINT)");
  cmd->add_option("--default-blade", args->default_blade,
                  "Blade of messages without a key, followed by /<partition> (use the "
                  "aggregator's --default-blade)")
      ->capture_default_str();
  cmd->add_option("-o,--out", args->out, "Recording to write (- for stdout; .zst is compressed)")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "Print the summary (stderr) as one JSON object");
  cmd->callback([args] { std::exit(RunRecord(*args)); });
}

}  // namespace lattice::cli
