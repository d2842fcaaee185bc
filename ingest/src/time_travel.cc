// Time travel over recordings: cuts, in-memory states at cuts, and leaf diffs of canonical dumps.
#include "lattice/ingest/time_travel.h"

#include <functional>
#include <limits>
#include <memory>

#include "canonical_json.h"
#include "decode_stage.h"
#include "lattice/core/duration.h"
#include "lattice/core/line_reader.h"
#include "lattice/core/shard.h"
#include "lattice/core/timestamp.h"
#include "lattice/crdt/merge_engine.h"
#include "source_clocks.h"

namespace lattice::ingest {

bool CutFilter::Admit(bool decoded, std::string_view blade, std::int64_t ts) {
  switch (cut_.kind) {
    case Cut::Kind::kAll:
      return true;
    case Cut::Kind::kLines:
      if (admitted_ >= cut_.lines) {
        return false;
      }
      ++admitted_;
      return true;
    case Cut::Kind::kTs:
      if (!decoded) {
        return true;
      }
      if (auto it = past_.find(blade); it != past_.end()) {
        return false;
      }
      if (ts > cut_.ts) {
        past_.emplace(blade);
        return false;
      }
      return true;
  }
  return false;
}

Result<std::int64_t> FirstShardTs(const std::vector<std::string>& files) {
  std::optional<std::int64_t> first;
  core::ShardDecoder decoder;
  for (const std::string& file : files) {
    if (file == "-") {
      return Status::InvalidArgument(
          "a time relative to the first shard (+D) cannot be used with stdin ('-')");
    }
    std::unique_ptr<core::LineReader> reader;
    LATTICE_ASSIGN_OR_RETURN(reader, core::LineReader::Open(file));
    while (true) {
      LATTICE_ASSIGN_OR_RETURN(std::optional<core::Line> line, reader->Next());
      if (!line) {
        break;
      }
      if (line->too_long) {
        continue;
      }
      auto shard = decoder.DecodeEnvelope(line->text, /*padded=*/true);
      if (shard.ok()) {
        first = first ? std::min(*first, (*shard)->ts) : (*shard)->ts;
        break;
      }
    }
  }
  if (!first) {
    return Status::NotFound("no line of the recording decodes, so it has no first shard");
  }
  return *first;
}

Result<std::int64_t> ResolveTimestamp(std::string_view text,
                                      const std::vector<std::string>& files) {
  if (!text.empty() && text.front() == '+') {
    LATTICE_ASSIGN_OR_RETURN(std::int64_t offset, core::ParseDurationMs(text.substr(1)));
    LATTICE_ASSIGN_OR_RETURN(std::int64_t first, FirstShardTs(files));
    std::int64_t out = 0;
    if (__builtin_add_overflow(first, offset, &out)) {
      std::string msg("'");
      msg.append(text).append("' is out of range");
      return Status::InvalidArgument(std::move(msg));
    }
    return out;
  }
  return core::ParseTimestampMs(text);
}

namespace {

// Reads `files` in replay order and calls `fn` for every line with its ordinal (unterminated last
// lines that do not decode get ordinal 0: they are held back, not part of the recording yet).
// `fn` returns false to stop reading.
Status ForEachLine(
    const std::vector<std::string>& files,
    const std::function<bool(const internal::DecodedLine&, std::uint64_t ordinal)>& fn) {
  std::vector<internal::DecodeStage::Input> inputs;
  for (const std::string& file : files) {
    inputs.push_back({file, {}});
  }
  internal::DecodeStage stage;
  LATTICE_RETURN_IF_ERROR(stage.Start(inputs, 4096));
  std::uint64_t ordinal = 0;
  while (true) {
    LATTICE_ASSIGN_OR_RETURN(internal::DecodedBatch * decoded, stage.Next());
    if (decoded == nullptr) {
      break;
    }
    bool go_on = true;
    for (std::size_t i = 0; i < decoded->size && go_on; ++i) {
      const internal::DecodedLine& line = decoded->lines[i];
      const bool held_back = !line.ok && line.unterminated;
      go_on = fn(line, held_back ? 0 : ++ordinal);
    }
    stage.Recycle(decoded);
    if (!go_on) {
      break;
    }
  }
  stage.Stop();
  return Status::Ok();
}

// One merge engine fed like a replay: the watermark advances every `batch` merged lines.
struct Merger {
  Merger(const TimeTravelOptions& o, std::size_t sources)
      : engine(o.engine), clocks(sources), batch(std::max<std::size_t>(o.batch_shards, 1)) {}

  // A line that is not merged still tells whether its source is done.
  void See(const internal::DecodedLine& line) {
    clocks.SetDone(line.source, (!line.ok && line.unterminated) || line.source_done);
  }

  // Merges an admitted line; returns the outcome (kInvalid for a line that did not decode).
  crdt::ApplyResult Merge(const internal::DecodedLine& line,
                          const crdt::ShardSource* source = nullptr) {
    ++summary.lines;
    crdt::ApplyResult r;
    if (!line.ok) {
      r.outcome = crdt::Outcome::kInvalid;
      r.reason = std::string(line.error);
      ++summary.rejected;
    } else {
      clocks.Observe(line.source, line.shard.ts);
      r = engine.Apply(line.shard, source);
      switch (r.outcome) {
        case crdt::Outcome::kApplied:
          ++summary.applied;
          summary.max_ts = std::max(
              summary.max_ts.value_or(std::numeric_limits<std::int64_t>::min()), line.shard.ts);
          break;
        case crdt::Outcome::kDuplicate:
          ++summary.duplicates;
          break;
        default:
          ++summary.rejected;
          break;
      }
    }
    return r;
  }

  // Counts a merged line towards the batch; true when the watermark should advance.
  bool BatchDone() {
    if (++in_batch < batch) {
      return false;
    }
    in_batch = 0;
    return true;
  }

  void Advance() { engine.AdvanceWatermark(clocks.Watermark()); }

  // The end of a replay: every source is done (a cut that stopped reading is the same).
  void Finish(std::size_t sources) {
    for (std::size_t s = 0; s < sources; ++s) {
      clocks.SetDone(s, true);
    }
    Advance();
  }

  crdt::MergeEngine engine;
  internal::SourceClocks clocks;
  std::size_t batch;
  std::size_t in_batch = 0;
  CutSummary summary;
};

}  // namespace

Result<std::vector<CutState>> StatesAt(const std::vector<std::string>& files,
                                       const std::vector<Cut>& cuts,
                                       const TimeTravelOptions& options) {
  // One engine, filter and watermark per cut; one read of the files feeds them all.
  struct Run {
    Run(const Cut& cut, const TimeTravelOptions& o, std::size_t sources)
        : filter(cut), merger(o, sources) {}
    CutFilter filter;
    Merger merger;
  };
  std::vector<std::unique_ptr<Run>> runs;
  for (const Cut& cut : cuts) {
    runs.push_back(std::make_unique<Run>(cut, options, files.size()));
  }
  if (!runs.empty()) {
    LATTICE_RETURN_IF_ERROR(
        ForEachLine(files, [&](const internal::DecodedLine& line, std::uint64_t ordinal) {
          bool all_full = true;
          for (auto& run : runs) {
            run->merger.See(line);
            if (ordinal != 0 && run->filter.Admit(line.ok, line.shard.blade, line.shard.ts)) {
              run->merger.Merge(line);
              if (run->merger.BatchDone()) {
                run->merger.Advance();
              }
            }
            all_full = all_full && run->filter.Full();
          }
          return !all_full;
        }));
  }
  std::vector<CutState> out;
  for (auto& run : runs) {
    run->merger.Finish(files.size());
    out.push_back({run->merger.engine.Dump(), run->merger.summary});
  }
  return out;
}

namespace {

bool IsLeaf(std::string_view value, bool root) {
  // The root is always walked as an object, even empty: it is never removed.
  return !internal::IsObject(value) || (!root && value == "{}");
}

class LeafDiffer {
 public:
  explicit LeafDiffer(std::vector<LeafChange>& out) : out_(out) {}

  Status Walk(std::vector<std::string>& path, std::optional<std::string_view> a,
              std::optional<std::string_view> b) {
    if (a == b) {
      return Status::Ok();
    }
    const bool root = path.empty();
    const bool a_tree = a && !IsLeaf(*a, root);
    const bool b_tree = b && !IsLeaf(*b, root);
    if (a_tree && b_tree) {
      LATTICE_ASSIGN_OR_RETURN(std::vector<internal::Member> am, internal::Members(*a));
      LATTICE_ASSIGN_OR_RETURN(std::vector<internal::Member> bm, internal::Members(*b));
      std::size_t i = 0;
      std::size_t j = 0;
      while (i < am.size() || j < bm.size()) {
        std::optional<std::string_view> av;
        std::optional<std::string_view> bv;
        if (j == bm.size() || (i < am.size() && am[i].key < bm[j].key)) {
          path.push_back(am[i].key);
          av = am[i++].value;
        } else if (i == am.size() || bm[j].key < am[i].key) {
          path.push_back(bm[j].key);
          bv = bm[j++].value;
        } else {
          path.push_back(am[i].key);
          av = am[i++].value;
          bv = bm[j++].value;
        }
        Status st = Walk(path, av, bv);
        path.pop_back();
        LATTICE_RETURN_IF_ERROR(st);
      }
      return Status::Ok();
    }
    if (!a_tree && !b_tree && a && b) {
      Emit(path, a, b);
      return Status::Ok();
    }
    // Absent, a leaf, or a tree on either side: the old leaves go first, then the new ones.
    if (a) {
      LATTICE_RETURN_IF_ERROR(Leaves(path, *a, /*removed=*/true));
    }
    if (b) {
      LATTICE_RETURN_IF_ERROR(Leaves(path, *b, /*removed=*/false));
    }
    return Status::Ok();
  }

 private:
  Status Leaves(std::vector<std::string>& path, std::string_view value, bool removed) {
    if (IsLeaf(value, path.empty())) {
      if (removed) {
        Emit(path, value, std::nullopt);
      } else {
        Emit(path, std::nullopt, value);
      }
      return Status::Ok();
    }
    LATTICE_ASSIGN_OR_RETURN(std::vector<internal::Member> members, internal::Members(value));
    for (const internal::Member& m : members) {
      path.push_back(m.key);
      Status st = Leaves(path, m.value, removed);
      path.pop_back();
      LATTICE_RETURN_IF_ERROR(st);
    }
    return Status::Ok();
  }

  void Emit(const std::vector<std::string>& path, std::optional<std::string_view> a,
            std::optional<std::string_view> b) {
    LeafChange c;
    c.path = core::Path(path).ToString();
    if (a) {
      c.old_json = std::string(*a);
    }
    if (b) {
      c.new_json = std::string(*b);
    }
    out_.push_back(std::move(c));
  }

  std::vector<LeafChange>& out_;
};

std::string_view TrimNewline(std::string_view s) {
  while (!s.empty() && s.back() == '\n') {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Result<std::optional<std::string_view>> CanonicalAt(std::string_view json, const core::Path& path) {
  std::string_view value = TrimNewline(json);
  for (const std::string& key : path.segments()) {
    if (!internal::IsObject(value)) {
      return std::optional<std::string_view>();
    }
    LATTICE_ASSIGN_OR_RETURN(std::vector<internal::Member> members, internal::Members(value));
    auto it =
        std::lower_bound(members.begin(), members.end(), key,
                         [](const internal::Member& m, const std::string& k) { return m.key < k; });
    if (it == members.end() || it->key != key) {
      return std::optional<std::string_view>();
    }
    value = it->value;
  }
  return std::optional<std::string_view>(value);
}

Result<std::vector<LeafChange>> DiffCanonical(std::string_view old_json, std::string_view new_json,
                                              const core::Path& prefix) {
  LATTICE_ASSIGN_OR_RETURN(std::optional<std::string_view> a, CanonicalAt(old_json, prefix));
  LATTICE_ASSIGN_OR_RETURN(std::optional<std::string_view> b, CanonicalAt(new_json, prefix));
  std::vector<LeafChange> out;
  std::vector<std::string> path = prefix.segments();
  LeafDiffer differ(out);
  LATTICE_RETURN_IF_ERROR(differ.Walk(path, a, b));
  return out;
}

Result<DiffReport> Diff(const std::vector<std::string>& files, const Cut& from, const Cut& to,
                        const core::Path& prefix, const TimeTravelOptions& options) {
  LATTICE_ASSIGN_OR_RETURN(std::vector<CutState> states, StatesAt(files, {from, to}, options));
  DiffReport report;
  report.from = states[0].summary;
  report.to = states[1].summary;
  LATTICE_ASSIGN_OR_RETURN(report.changes, DiffCanonical(states[0].dump, states[1].dump, prefix));
  for (const LeafChange& c : report.changes) {
    if (!c.old_json) {
      ++report.added;
    } else if (!c.new_json) {
      ++report.removed;
    } else {
      ++report.changed;
    }
  }
  return report;
}

Result<std::optional<crdt::Provenance>> BlameAt(const std::vector<std::string>& files,
                                                const Cut& cut, const core::Path& path,
                                                const TimeTravelOptions& options) {
  CutFilter filter(cut);
  Merger merger(options, files.size());
  LATTICE_RETURN_IF_ERROR(
      ForEachLine(files, [&](const internal::DecodedLine& line, std::uint64_t ordinal) {
        merger.See(line);
        if (ordinal != 0 && filter.Admit(line.ok, line.shard.blade, line.shard.ts)) {
          const crdt::ShardSource where{files[line.source], line.offset, line.number};
          merger.Merge(line, &where);
          if (merger.BatchDone()) {
            merger.Advance();
          }
        }
        return !filter.Full();
      }));
  merger.Finish(files.size());
  return merger.engine.Blame(path);
}

namespace {

// The change narrowed to `prefix`: as is when it is at or under the prefix; at the prefix, with
// the old and new values taken there, when it is above it; nullopt when it is beside it or
// changes nothing at the prefix.
Result<std::optional<crdt::Change>> NarrowToPrefix(const crdt::Change& c,
                                                   const core::Path& prefix) {
  std::vector<std::string> segments;
  if (c.path.empty()) {
    segments.emplace_back();  // an event is never at the root: "" is the top-level key ""
  } else {
    LATTICE_ASSIGN_OR_RETURN(core::Path parsed, core::Path::Parse(c.path));
    segments = parsed.segments();
  }
  const std::vector<std::string>& want = prefix.segments();
  const std::size_t common = std::min(segments.size(), want.size());
  if (!std::equal(want.begin(), want.begin() + static_cast<std::ptrdiff_t>(common),
                  segments.begin())) {
    return std::optional<crdt::Change>();
  }
  if (segments.size() >= want.size()) {
    return std::optional<crdt::Change>(c);
  }
  const core::Path rest(std::vector<std::string>(
      want.begin() + static_cast<std::ptrdiff_t>(segments.size()), want.end()));
  std::optional<std::string> old_json;
  std::optional<std::string> new_json;
  if (c.old_json) {
    LATTICE_ASSIGN_OR_RETURN(std::optional<std::string_view> v, CanonicalAt(*c.old_json, rest));
    if (v) {
      old_json = std::string(*v);
    }
  }
  if (c.new_json) {
    LATTICE_ASSIGN_OR_RETURN(std::optional<std::string_view> v, CanonicalAt(*c.new_json, rest));
    if (v) {
      new_json = std::string(*v);
    }
  }
  if (old_json == new_json) {
    return std::optional<crdt::Change>();
  }
  crdt::Change narrowed = c;
  narrowed.path = prefix.ToString();
  narrowed.old_json = std::move(old_json);
  narrowed.new_json = std::move(new_json);
  return std::optional<crdt::Change>(std::move(narrowed));
}

// Whether some entry of the shard writes at or under `prefix`, or above it (a value, an erase or
// an operator there replaces the prefix; an object entry above it only leads the way down).
bool Touches(const core::Shard& shard, const core::Path& prefix) {
  const std::vector<std::string>& want = prefix.segments();
  if (want.empty()) {
    return true;
  }
  std::vector<std::string_view> keys;
  for (const core::BodyEntry& e : shard.entries) {
    keys.resize(e.depth - 1);
    keys.push_back(e.key);
    const std::size_t common = std::min(keys.size(), want.size());
    bool same = true;
    for (std::size_t i = 0; i < common && same; ++i) {
      same = keys[i] == want[i];
    }
    if (same && (keys.size() >= want.size() || e.kind != core::OpKind::kObject)) {
      return true;
    }
  }
  return false;
}

}  // namespace

Result<StepSummary> Step(const std::vector<std::string>& files, const StepOptions& options,
                         const std::function<void(const StepEvent&)>& visit) {
  const bool from_empty = options.from.kind == Cut::Kind::kLines && options.from.lines == 0;
  if (!from_empty) {
    for (const std::string& file : files) {
      if (file == "-") {
        return Status::InvalidArgument(
            "a walk that starts after the beginning reads the recording twice; it cannot read "
            "stdin ('-')");
      }
    }
  }
  Merger merger(options.merge, files.size());
  std::vector<crdt::Change> pending;
  merger.engine.SetChangeSink([&pending](const crdt::Change& c) { pending.push_back(c); });
  // Pass 1: the state at `from`, merged silently.
  if (!from_empty) {
    CutFilter from(options.from);
    LATTICE_RETURN_IF_ERROR(
        ForEachLine(files, [&](const internal::DecodedLine& line, std::uint64_t ordinal) {
          merger.See(line);
          if (ordinal != 0 && from.Admit(line.ok, line.shard.blade, line.shard.ts)) {
            merger.Merge(line);
            if (merger.BatchDone()) {
              merger.Advance();
            }
          }
          return !from.Full();
        }));
    pending.clear();
  }
  // Pass 2: every later line within `until`, with its changes.
  StepSummary summary;
  Status failed;
  std::uint64_t last_ordinal = 0;
  auto narrow = [&](StepEvent& event) -> Status {
    for (const crdt::Change& c : pending) {
      LATTICE_ASSIGN_OR_RETURN(std::optional<crdt::Change> n, NarrowToPrefix(c, options.prefix));
      if (n) {
        event.changes.push_back(std::move(*n));
      }
    }
    pending.clear();
    summary.changes += event.changes.size();
    return Status::Ok();
  };
  auto advance = [&]() -> Status {
    merger.Advance();
    StepEvent event;
    event.watermark = true;
    event.ordinal = last_ordinal;
    event.ts = merger.clocks.Watermark();
    LATTICE_RETURN_IF_ERROR(narrow(event));
    if (!event.changes.empty()) {
      ++summary.steps;
      visit(event);
    }
    return Status::Ok();
  };
  CutFilter skip(options.from);
  CutFilter until(options.until);
  LATTICE_RETURN_IF_ERROR(
      ForEachLine(files, [&](const internal::DecodedLine& line, std::uint64_t ordinal) {
        merger.See(line);
        if (ordinal == 0) {
          return true;
        }
        const bool in_until = until.Admit(line.ok, line.shard.blade, line.shard.ts);
        const bool in_from = skip.Admit(line.ok, line.shard.blade, line.shard.ts);
        if (in_from || !in_until) {
          return !until.Full();
        }
        ++summary.lines;
        last_ordinal = ordinal;
        crdt::ApplyResult r = merger.Merge(line);
        if (line.ok) {
          StepEvent event;
          event.ordinal = ordinal;
          event.file_index = line.source;
          event.line = line.number;
          event.offset = line.offset;
          event.blade = std::string(line.shard.blade);
          event.seq = line.shard.seq;
          event.ts = line.shard.ts;
          event.topic = std::string(line.shard.topic);
          event.partition = line.shard.partition;
          event.kafka_offset = line.shard.offset;
          event.outcome = r.outcome;
          event.reason = std::move(r.reason);
          if (Status st = narrow(event); !st.ok()) {
            failed = st;
            return false;
          }
          if (!event.changes.empty() || Touches(line.shard, options.prefix)) {
            ++summary.steps;
            visit(event);
          }
        }
        if (merger.BatchDone()) {
          if (Status st = advance(); !st.ok()) {
            failed = st;
            return false;
          }
        }
        return !until.Full();
      }));
  LATTICE_RETURN_IF_ERROR(failed);
  // The end of the walk: the watermark of the last line (final TTL evictions show here).
  for (std::size_t s = 0; s < files.size(); ++s) {
    merger.clocks.SetDone(s, true);
  }
  LATTICE_RETURN_IF_ERROR(advance());
  return summary;
}

}  // namespace lattice::ingest
