// `lattice diff`: what changed in a recording's state between two points, leaf by leaf.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "cut_flags.h"
#include "lattice/core/duration.h"
#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::cli {

namespace {

struct DiffArgs {
  std::vector<std::string> files;
  std::string from;
  std::optional<std::uint64_t> from_seq;
  std::string to;
  std::optional<std::uint64_t> to_seq;
  std::string path;
  std::string allowed_lateness = "5m";
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
  if (Status st = CheckFiles(args.files); !st.ok()) {
    return Fail(st.message());
  }
  auto lateness = core::ParseDurationMs(args.allowed_lateness);
  if (!lateness.ok()) {
    return Fail("--allowed-lateness: " + lateness.status().message());
  }
  auto prefix = core::Path::Parse(args.path);
  if (!prefix.ok()) {
    return Fail(prefix.status().message());
  }
  // Default: from the empty state to the end of the recording.
  auto from =
      CutFromFlags("--from", args.from, args.from_seq, args.files, ingest::Cut::FirstLines(0));
  if (!from.ok()) {
    return Fail(from.status().message());
  }
  auto to = CutFromFlags("--to", args.to, args.to_seq, args.files, ingest::Cut::All());
  if (!to.ok()) {
    return Fail(to.status().message());
  }
  ingest::TimeTravelOptions options;
  options.engine.allowed_lateness_ms = *lateness;
  auto report = ingest::Diff(args.files, *from, *to, *prefix, options);
  if (!report.ok()) {
    return Fail(report.status().ToString());
  }
  const ingest::DiffReport& r = *report;
  std::string out;
  if (args.json) {
    out += "{\"from\":";
    AppendCutJson(out, *from, r.from);
    out += ",\"to\":";
    AppendCutJson(out, *to, r.to);
    out += ",\"path\":";
    core::AppendJsonString(out, prefix->ToString());
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
  cmd->add_option("files", args->files, "Recordings (.ndjson, .ndjson.zst, or - for stdin)")
      ->required();
  CLI::Option* from = cmd->add_option(
      "--from", args->from,
      "Old state: shards with ts <= TS (ms, RFC 3339, or +DURATION after the first shard) "
      "[default: the empty state]");
  cmd->add_option("--from-seq", args->from_seq, "Old state: the first N lines in replay order")
      ->excludes(from);
  CLI::Option* to = cmd->add_option(
      "--to", args->to, "New state: shards with ts <= TS [default: the whole recording]");
  cmd->add_option("--to-seq", args->to_seq, "New state: the first N lines in replay order")
      ->excludes(to);
  cmd->add_option("--path", args->path, "Show only leaves under this dotted path prefix");
  cmd->add_flag("--json", args->json, "Print one JSON object (schema in docs/cli.md)");
  cmd->add_option("--color", args->color, "Colour the text output: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--allowed-lateness", args->allowed_lateness,
                  "As for replay: how far behind the watermark a shard may arrive")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunDiff(*args)); });
}

}  // namespace lattice::cli
