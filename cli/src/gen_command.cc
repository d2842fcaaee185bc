// `lattice gen`: write a deterministic synthetic recording.
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "lattice/ingest/synthetic.h"

namespace lattice::cli {

namespace {

struct GenArgs {
  ingest::SyntheticOptions options;
  std::string out = "-";
};

int RunGen(const GenArgs& args) {
  std::FILE* f = stdout;
  if (args.out != "-") {
    f = std::fopen(args.out.c_str(), "wb");
    if (f == nullptr) {
      return Fail("cannot write '" + args.out + "'");
    }
  }
  static char buffer[1 << 20];
  std::setvbuf(f, buffer, _IOFBF, sizeof(buffer));
  bool ok = true;
  ingest::GenerateSynthetic(args.options, [&](std::string_view line) {
    ok = ok && std::fwrite(line.data(), 1, line.size(), f) == line.size() && std::fputc('\n', f) != EOF;
  });
  ok = (std::fflush(f) == 0) && ok;
  if (f != stdout) {
    ok = (std::fclose(f) == 0) && ok;
  }
  return ok ? 0 : Fail("writing the recording failed (disk full?)");
}

}  // namespace

void AddGenCommand(CLI::App& app) {
  auto args = std::make_shared<GenArgs>();
  CLI::App* cmd = app.add_subcommand(
      "gen", "Write a deterministic synthetic recording (counters, node statuses, intents) for "
             "load tests");
  auto& o = args->options;
  cmd->add_option("--shards", o.shards, "Number of shards")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("--blades", o.blades, "Number of blades")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Random seed")->capture_default_str();
  cmd->add_flag("--plain", o.plain,
                "Plain numbers and no erasures (the merge equals jq's recursive merge)");
  cmd->add_option("--start-ts", o.start_ts, "Event time of the first shard (ms)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 50))
      ->capture_default_str();
  cmd->add_option("--step-ms", o.step_ms, "Event time between shards (ms)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--domains", o.domains, "Distinct scrape domains")
      ->check(CLI::Range(1u, 1u << 24))
      ->capture_default_str();
  cmd->add_option("--intent-window", o.intent_window, "Live intents before the oldest is erased")
      ->check(CLI::Range(2u, 1u << 24))
      ->capture_default_str();
  cmd->add_flag("--churn", o.churn,
                "Blades and intents keep coming and going: --blades are active at a time, every "
                "--churn-every shards the oldest falls silent and a new one appears; intents are "
                "never erased, old ones go idle (for TTL and memory tests)");
  cmd->add_option("--churn-every", o.churn_every, "Shards between blade replacements (--churn)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40))
      ->capture_default_str();
  cmd->add_option("-o,--out", args->out, "Output file (- for stdout)")->capture_default_str();
  cmd->callback([args] { std::exit(RunGen(*args)); });
}

}  // namespace lattice::cli
