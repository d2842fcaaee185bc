// `lattice diff`: what changed in a recording's state between two points, leaf by leaf.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "cut_flags.h"
#include "lattice/core/json_text.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::cli {

namespace {

struct DiffArgs {
  WindowFlags window;  // end = --to / --to-seq
  std::string color = "auto";
  bool json = false;
};

void AppendCutJson(std::string& out, const ingest::Cut& cut, const ingest::CutSummary& s) {
  out += "{\"ts\":";
  out += cut.kind == ingest::Cut::Kind::kTs ? std::to_string(cut.ts) : "null";
  out += ",\"seq\":";
  out += cut.kind == ingest::Cut::Kind::kLines ? std::to_string(cut.lines) : "null";
  out += ",\"lines\":";
  out += std::to_string(s.lines);
  out += ",\"applied\":";
  out += std::to_string(s.applied);
  out += ",\"rejected\":";
  out += std::to_string(s.rejected);
  out += ",\"max_ts\":";
  out += s.max_ts ? std::to_string(*s.max_ts) : "null";
  out += "}";
}

int RunDiff(const DiffArgs& args) {
  auto window = ParseWindow(args.window, "--to");
  if (!window.ok()) {
    return Fail(window.status().message());
  }
  const ingest::Cut& from = window->from;
  const ingest::Cut& to = window->end;
  ingest::TimeTravelOptions options;
  options.engine.allowed_lateness_ms = window->allowed_lateness_ms;
  auto report = ingest::Diff(args.window.files, from, to, window->prefix, options);
  if (!report.ok()) {
    return Fail(report.status().ToString());
  }
  const ingest::DiffReport& r = *report;
  std::string out;
  if (args.json) {
    out += "{\"from\":";
    AppendCutJson(out, from, r.from);
    out += ",\"to\":";
    AppendCutJson(out, to, r.to);
    out += ",\"path\":";
    core::AppendJsonString(out, window->prefix.ToString());
    out += ",\"added\":";
    out += std::to_string(r.added);
    out += ",\"removed\":";
    out += std::to_string(r.removed);
    out += ",\"changed\":";
    out += std::to_string(r.changed);
    out += ",\"changes\":[";
    bool first = true;
    for (const ingest::LeafChange& c : r.changes) {
      out += first ? "{\"op\":\"" : ",{\"op\":\"";
      first = false;
      out += !c.old_json ? "add" : !c.new_json ? "remove" : "change";
      out += "\",\"path\":";
      core::AppendJsonString(out, c.path);
      if (c.old_json) {
        out += ",\"old\":";
        out += *c.old_json;
      }
      if (c.new_json) {
        out += ",\"new\":";
        out += *c.new_json;
      }
      out += "}";
    }
    out += "]}\n";
  } else {
    const Palette p(UseColor(args.color));
    for (const ingest::LeafChange& c : r.changes) {
      if (!c.old_json) {
        out += fmt::format("{}+ {} = {}{}\n", p.added, c.path, *c.new_json, p.reset);
      } else if (!c.new_json) {
        out += fmt::format("{}- {} (was {}){}\n", p.removed, c.path, *c.old_json, p.reset);
      } else {
        out += fmt::format("{}~ {}: {} -> {}{}\n", p.changed, c.path, *c.old_json, *c.new_json,
                           p.reset);
      }
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  const std::uint64_t rejected = std::max(r.from.rejected, r.to.rejected);
  if (rejected > 0) {
    std::fprintf(stderr,
                 "lattice: note: %llu line(s) were rejected (bad, conflicting or late) and are in "
                 "neither state; `lattice replay` writes them to its dead-letter file with "
                 "reasons\n",
                 static_cast<unsigned long long>(rejected));
  }
  return 0;
}

}  // namespace

void AddDiffCommand(CLI::App& app) {
  auto args = std::make_shared<DiffArgs>();
  CLI::App* cmd = app.add_subcommand(
      "diff",
      "Show what changed in the merged state of recordings between two points, one line per "
      "leaf: '+ path = value', '- path (was value)', '~ path: old -> new'. Merges in memory; "
      "no state directory.");
  cmd->add_option("files", args->window.files, "Recordings (.ndjson, .ndjson.zst, or - for stdin)")
      ->required();
  CLI::Option* from = cmd->add_option(
      "--from", args->window.from,
      "Old state: shards with ts <= TS (ms, RFC 3339, or +DURATION after the first shard) "
      "[default: the empty state]");
  cmd->add_option("--from-seq", args->window.from_seq,
                  "Old state: the first N lines in replay order")
      ->excludes(from);
  CLI::Option* to = cmd->add_option(
      "--to", args->window.end, "New state: shards with ts <= TS [default: the whole recording]");
  cmd->add_option("--to-seq", args->window.end_seq, "New state: the first N lines in replay order")
      ->excludes(to);
  cmd->add_option("--path", args->window.path, "Show only leaves under this dotted path prefix");
  cmd->add_flag("--json", args->json, "Print one JSON object (schema in docs/cli.md)");
  cmd->add_option("--color", args->color, "Colour the text output: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--allowed-lateness", args->window.allowed_lateness,
                  "As for replay: how far behind the watermark a shard may arrive")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunDiff(*args)); });
}

}  // namespace lattice::cli
