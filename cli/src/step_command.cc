// `lattice step`: walk a recording shard by shard, showing the changes under a path.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "cut_flags.h"
#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/core/timestamp.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::cli {

namespace {

struct StepArgs {
  WindowFlags window;  // end = --until / --until-seq
  std::string color = "auto";
  bool json = false;
};

std::string_view OutcomeName(crdt::Outcome outcome) {
  switch (outcome) {
    case crdt::Outcome::kApplied:
      return "applied";
    case crdt::Outcome::kDuplicate:
      return "duplicate";
    case crdt::Outcome::kConflict:
      return "conflict";
    case crdt::Outcome::kLate:
      return "late";
    case crdt::Outcome::kInvalid:
      return "bad";
  }
  return "bad";
}

// The change's wire form (crdt/types.h) plus where it came from.
void AppendChangeJson(std::string& out, const crdt::Change& c, const ingest::StepEvent& e,
                      const std::string& file) {
  out += "{\"path\":";
  core::AppendJsonString(out, c.path);
  out += ",\"old\":";
  out += c.old_json ? *c.old_json : "null";
  out += ",\"new\":";
  out += c.new_json ? *c.new_json : "null";
  out += ",\"stamp\":{\"blade\":";
  core::AppendJsonString(out, c.blade);
  out += ",\"seq\":";
  out += std::to_string(c.seq);
  out += ",\"ts\":";
  out += std::to_string(c.ts);
  out += "},\"cause\":\"";
  out += crdt::ChangeCauseName(c.cause);
  out += "\",\"position\":";
  if (e.watermark) {
    out += "{\"after_step\":";
    out += std::to_string(e.ordinal);
    out += ",\"watermark\":";
    out += std::to_string(e.ts);
    out += "}";
  } else {
    out += "{\"step\":";
    out += std::to_string(e.ordinal);
    out += ",\"file\":";
    core::AppendJsonString(out, file);
    out += ",\"line\":";
    out += std::to_string(e.line);
    out += ",\"offset\":";
    out += std::to_string(e.offset);
    if (!e.topic.empty()) {
      out += ",\"kafka\":{\"topic\":";
      core::AppendJsonString(out, e.topic);
      out += ",\"partition\":";
      out += std::to_string(e.partition);
      out += ",\"offset\":";
      out += std::to_string(e.kafka_offset);
      out += "}";
    }
    out += "}";
  }
  out += "}\n";
}

void AppendChangeText(std::string& out, const crdt::Change& c, const Palette& p) {
  const std::string_view evicted = c.cause == crdt::ChangeCause::kEvict ? " [evicted]" : "";
  if (!c.old_json && c.new_json) {
    out += fmt::format("  {}+ {} = {}{}{}\n", p.added, c.path, *c.new_json, evicted, p.reset);
  } else if (c.old_json && !c.new_json) {
    out += fmt::format("  {}- {} (was {}){}{}\n", p.removed, c.path, *c.old_json, evicted, p.reset);
  } else {
    out += fmt::format("  {}~ {}: {} -> {}{}{}\n", p.changed, c.path, c.old_json.value_or("null"),
                       c.new_json.value_or("null"), evicted, p.reset);
  }
}

void AppendStepText(std::string& out, const ingest::StepEvent& e, const std::string& file,
                    const core::Path& prefix, const Palette& p) {
  if (e.watermark) {
    out += fmt::format("{}after #{}: watermark {}{}\n", p.header, e.ordinal,
                       core::FormatTimestampMs(e.ts), p.reset);
  } else {
    out += fmt::format("{}#{} {}:{}  {} seq {}  {}{}", p.header, e.ordinal, file, e.line, e.blade,
                       e.seq, core::FormatTimestampMs(e.ts), p.reset);
    if (!e.topic.empty()) {
      out += fmt::format("  {}({}/{}@{}){}", p.dim, e.topic, e.partition, e.kafka_offset, p.reset);
    }
    out += '\n';
  }
  for (const crdt::Change& c : e.changes) {
    AppendChangeText(out, c, p);
  }
  if (e.changes.empty()) {
    const std::string where = prefix.empty() ? std::string() : " under " + prefix.ToString();
    switch (e.outcome) {
      case crdt::Outcome::kApplied:
        out += fmt::format(
            "  {}(merged, but changes nothing visible{}: older than what is there, or the same "
            "value){}\n",
            p.dim, where, p.reset);
        break;
      case crdt::Outcome::kDuplicate:
        out += fmt::format("  {}(a duplicate of an applied shard; changes nothing){}\n", p.dim,
                           p.reset);
        break;
      default:
        out += fmt::format("  {}(rejected as {}: {}){}\n", p.removed, OutcomeName(e.outcome),
                           e.reason, p.reset);
        break;
    }
  }
}

int RunStep(const StepArgs& args) {
  auto window = ParseWindow(args.window, "--until");
  if (!window.ok()) {
    return Fail(window.status().message());
  }
  ingest::StepOptions options;
  options.from = window->from;
  options.until = window->end;
  options.prefix = window->prefix;
  options.merge.engine.allowed_lateness_ms = window->allowed_lateness_ms;
  const Palette palette(!args.json && UseColor(args.color));
  std::string out;
  auto summary = ingest::Step(args.window.files, options, [&](const ingest::StepEvent& e) {
    const std::string& file = e.watermark ? args.window.files[0] : args.window.files[e.file_index];
    if (args.json) {
      for (const crdt::Change& c : e.changes) {
        AppendChangeJson(out, c, e, file);
      }
    } else {
      AppendStepText(out, e, file, window->prefix, palette);
    }
    // Stream: a long walk shows as it goes (and can be piped into less or head).
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  });
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  if (!summary.ok()) {
    return Fail(summary.status().ToString());
  }
  return 0;
}

}  // namespace

void AddStepCommand(CLI::App& app) {
  auto args = std::make_shared<StepArgs>();
  CLI::App* cmd = app.add_subcommand(
      "step",
      "Walk recordings shard by shard (merging in memory) and show, for every shard that wrote "
      "under PATH, where it is (#step file:line), its blade, seq and ts, and the visible changes "
      "it made there (old -> new).");
  cmd->add_option("files", args->window.files, "Recordings (.ndjson, .ndjson.zst, or - for stdin)")
      ->required();
  cmd->add_option("--path", args->window.path,
                  "Show only changes at, under or above this dotted path [default: everything]");
  CLI::Option* from = cmd->add_option(
      "--from", args->window.from,
      "Start from the state at TS (ms, RFC 3339, or +DURATION after the first shard), merged "
      "silently [default: the empty state]");
  cmd->add_option("--from-seq", args->window.from_seq,
                  "Start from the state after the first N lines in replay order")
      ->excludes(from);
  CLI::Option* until =
      cmd->add_option("--until", args->window.end, "Stop at TS: walk only shards with ts <= TS");
  cmd->add_option("--until-seq", args->window.end_seq,
                  "Walk only the first N lines in replay order")
      ->excludes(until);
  cmd->add_flag("--json", args->json,
                "One JSON object per change: the change event's wire form plus its position");
  cmd->add_option("--color", args->color, "Colour the text output: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--allowed-lateness", args->window.allowed_lateness,
                  "As for replay: how far behind the watermark a shard may arrive")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunStep(*args)); });
}

}  // namespace lattice::cli
