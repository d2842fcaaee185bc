// `lattice blame`: which shard decided the visible value at a path.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "cut_flags.h"
#include "lattice/core/duration.h"
#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/core/timestamp.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::cli {

namespace {

struct BlameArgs {
  std::string path;
  std::string state;
  std::vector<std::string> files;
  std::string until;
  std::optional<std::uint64_t> until_seq;
  std::string allowed_lateness = "5m";
  std::string color = "auto";
  bool json = false;
};

// Where a shard came from, as the engine keeps it: a file (absolute path, as `replay` names it,
// or the name given to an in-memory blame; "stdin") with a line, or "topic/partition" with the
// Kafka offset (line 0).
struct Origin {
  bool known = false;
  bool kafka = false;
  std::string file;
  std::string topic;
  std::string partition;
};

Origin OriginOf(const crdt::Provenance::Writer& w) {
  Origin o;
  if (w.source.empty()) {
    return o;
  }
  o.known = true;
  const std::size_t slash = w.source.rfind('/');
  if (w.line == 0 && slash != std::string::npos && slash > 0 && w.source.front() != '/' &&
      w.source.find_first_not_of("0123456789", slash + 1) == std::string::npos &&
      slash + 1 < w.source.size()) {
    o.kafka = true;
    o.topic = w.source.substr(0, slash);
    o.partition = w.source.substr(slash + 1);
  } else {
    o.file = w.source;
  }
  return o;
}

std::string WhereText(const crdt::Provenance::Writer& w) {
  const Origin o = OriginOf(w);
  if (!o.known) {
    return "(source not recorded)";
  }
  if (o.kafka) {
    return fmt::format("{} partition {} offset {}", o.topic, o.partition, w.offset);
  }
  return fmt::format("{}:{} (byte {})", o.file, w.line, w.offset);
}

void AppendWriterJson(std::string& out, const crdt::Provenance::Writer& w) {
  out += "{\"blade\":";
  core::AppendJsonString(out, w.blade);
  out += ",\"seq\":";
  out += std::to_string(w.seq);
  out += ",\"ts\":";
  out += std::to_string(w.ts);
  out += ",\"source\":";
  const Origin o = OriginOf(w);
  if (!o.known) {
    out += "null";
  } else if (o.kafka) {
    out += "{\"topic\":";
    core::AppendJsonString(out, o.topic);
    out += ",\"partition\":";
    out += o.partition;
    out += ",\"offset\":";
    out += std::to_string(w.offset);
    out += "}";
  } else {
    out += "{\"file\":";
    core::AppendJsonString(out, o.file);
    out += ",\"line\":";
    out += std::to_string(w.line);
    out += ",\"offset\":";
    out += std::to_string(w.offset);
    out += "}";
  }
  out += "}";
}

std::string BlameJson(const std::string& path, const crdt::Provenance& p) {
  std::string out = "{\"path\":";
  core::AppendJsonString(out, path);
  out += ",\"kind\":";
  core::AppendJsonString(out, p.kind);
  out += ",\"value\":";
  out += p.value_json;
  out += ",\"writer\":";
  AppendWriterJson(out, p.writer);
  out += ",\"shares\":[";
  for (std::size_t i = 0; i < p.shares.size(); ++i) {
    const crdt::Provenance::Share& s = p.shares[i];
    out += i == 0 ? "{\"blade\":" : ",{\"blade\":";
    core::AppendJsonString(out, s.blade);
    out += ",\"value\":";
    out += s.value_json;
    out += ",\"seq\":";
    out += std::to_string(s.seq);
    out += ",\"ts\":";
    out += std::to_string(s.ts);
    out += "}";
  }
  out += "],\"retired\":";
  out += p.retired_json ? *p.retired_json : "null";
  out += "}\n";
  return out;
}

std::string BlameText(const std::string& path, const crdt::Provenance& p, const Palette& c) {
  std::string out =
      fmt::format("{}{} = {}{}  ({})\n", c.header, path, p.value_json, c.reset, p.kind);
  const crdt::Provenance::Writer& w = p.writer;
  std::string_view role = "set by";
  if (p.kind == "object") {
    role = "newest write under it by";
  } else if (p.kind == "counter" || p.kind == "max" || p.kind == "min") {
    role = "newest operation by";
  }
  out += fmt::format("  {} {} seq {} at {}\n", role, w.blade, w.seq, core::FormatTimestampMs(w.ts));
  out += fmt::format("  from {}\n", WhereText(w));
  if (p.kind == "counter") {
    std::size_t width = 7;  // "retired"
    for (const crdt::Provenance::Share& s : p.shares) {
      width = std::max(width, s.blade.size());
    }
    std::size_t vwidth = p.retired_json ? p.retired_json->size() : 0;
    for (const crdt::Provenance::Share& s : p.shares) {
      vwidth = std::max(vwidth, s.value_json.size());
    }
    out += fmt::format("  {} blade slot(s):\n", p.shares.size());
    for (const crdt::Provenance::Share& s : p.shares) {
      out +=
          fmt::format("    {:<{}}  {:>{}}  {}(newest increment: seq {} at {}){}\n", s.blade, width,
                      s.value_json, vwidth, c.dim, s.seq, core::FormatTimestampMs(s.ts), c.reset);
    }
    if (p.retired_json) {
      out += fmt::format("    {:<{}}  {:>{}}  {}(slots folded after counter_slot_ttl){}\n",
                         "retired", width, *p.retired_json, vwidth, c.dim, c.reset);
    }
  } else if (!p.shares.empty()) {
    const crdt::Provenance::Share& s = p.shares.front();
    out += fmt::format("  winner: {} {} (seq {} at {})\n", s.blade, s.value_json, s.seq,
                       core::FormatTimestampMs(s.ts));
  }
  return out;
}

int RunBlame(const BlameArgs& args) {
  auto path = core::Path::Parse(args.path);
  if (!path.ok()) {
    return Fail(path.status().message());
  }
  if (args.state.empty() == args.files.empty()) {
    return Fail("give either --state DIR or recordings (FILE...), not both");
  }
  std::optional<crdt::Provenance> found;
  if (!args.state.empty()) {
    if (!args.until.empty() || args.until_seq) {
      return Fail("--until/--until-seq need recordings; a state directory is blamed as it is");
    }
    auto reader = crdt::StateReader::Open(args.state);
    if (!reader.ok()) {
      return Fail(reader.status().ToString());
    }
    auto blame = (*reader)->Blame(*path);
    if (!blame.ok()) {
      return Fail(blame.status().ToString());
    }
    found = std::move(*blame);
  } else {
    if (Status st = CheckFiles(args.files); !st.ok()) {
      return Fail(st.message());
    }
    auto lateness = core::ParseDurationMs(args.allowed_lateness);
    if (!lateness.ok()) {
      return Fail("--allowed-lateness: " + lateness.status().message());
    }
    auto until =
        CutFromFlags("--until", args.until, args.until_seq, args.files, ingest::Cut::All());
    if (!until.ok()) {
      return Fail(until.status().message());
    }
    ingest::TimeTravelOptions options;
    options.engine.allowed_lateness_ms = *lateness;
    auto blame = ingest::BlameAt(args.files, *until, *path, options);
    if (!blame.ok()) {
      return Fail(blame.status().ToString());
    }
    found = std::move(*blame);
  }
  if (!found) {
    std::fprintf(stderr, "lattice: nothing at '%s'\n", args.path.c_str());
    return 1;
  }
  const std::string out = args.json
                              ? BlameJson(path->ToString(), *found)
                              : BlameText(path->ToString(), *found, Palette(UseColor(args.color)));
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

void AddBlameCommand(CLI::App& app) {
  auto args = std::make_shared<BlameArgs>();
  CLI::App* cmd = app.add_subcommand(
      "blame",
      "Show which shard decided the visible value at PATH: its blade, seq, ts and source position "
      "(file:line or topic/partition/offset); for a counter, each blade slot's contribution. "
      "Reads a state directory (--state), or merges recordings in memory (FILE..., optionally "
      "--until).");
  cmd->add_option("path", args->path, "Dotted path, e.g. intents.42.host")->required();
  cmd->add_option("files", args->files,
                  "Recordings to merge in memory instead of a state directory");
  cmd->add_option("--state", args->state, "State directory (read-only)");
  CLI::Option* until = cmd->add_option(
      "--until", args->until, "With recordings: the state at TS (ms, RFC 3339, or +DURATION)");
  cmd->add_option("--until-seq", args->until_seq,
                  "With recordings: the state after the first N lines in replay order")
      ->excludes(until);
  cmd->add_flag("--json", args->json, "Print one JSON object (schema in docs/cli.md)");
  cmd->add_option("--color", args->color, "Colour the text output: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--allowed-lateness", args->allowed_lateness, "With recordings, as for replay")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunBlame(*args)); });
}

}  // namespace lattice::cli
