// Time travel over recordings: cuts, in-memory states at cuts, and leaf diffs of canonical dumps.
#include "lattice/ingest/time_travel.h"

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

Result<std::vector<CutState>> StatesAt(const std::vector<std::string>& files,
                                       const std::vector<Cut>& cuts,
                                       const TimeTravelOptions& options) {
  // One engine, filter and watermark per cut; one read of the files feeds them all.
  struct Run {
    explicit Run(const Cut& cut, const TimeTravelOptions& o, std::size_t sources)
        : filter(cut), engine(o.engine), clocks(sources) {}
    CutFilter filter;
    crdt::MergeEngine engine;
    internal::SourceClocks clocks;
    CutSummary summary;
    std::size_t in_batch = 0;
  };
  std::vector<std::unique_ptr<Run>> runs;
  for (const Cut& cut : cuts) {
    runs.push_back(std::make_unique<Run>(cut, options, files.size()));
  }
  std::vector<internal::DecodeStage::Input> inputs;
  for (const std::string& file : files) {
    inputs.push_back({file, {}});
  }
  internal::DecodeStage stage;
  LATTICE_RETURN_IF_ERROR(stage.Start(inputs, 4096));
  const std::size_t batch = std::max<std::size_t>(options.batch_shards, 1);
  bool all_full = runs.empty();
  while (!all_full) {
    LATTICE_ASSIGN_OR_RETURN(internal::DecodedBatch * decoded, stage.Next());
    if (decoded == nullptr) {
      break;
    }
    for (std::size_t i = 0; i < decoded->size; ++i) {
      const internal::DecodedLine& line = decoded->lines[i];
      if (!line.ok && line.unterminated) {
        // A partly written last line: `replay` leaves it for its next run; so does time travel.
        for (auto& run : runs) {
          run->clocks.SetDone(line.source, true);
        }
        continue;
      }
      all_full = true;
      for (auto& run : runs) {
        run->clocks.SetDone(line.source, line.source_done);
        if (run->filter.Admit(line.ok, line.shard.blade, line.shard.ts)) {
          ++run->summary.lines;
          if (!line.ok) {
            ++run->summary.rejected;
          } else {
            run->clocks.Observe(line.source, line.shard.ts);
            switch (run->engine.Apply(line.shard).outcome) {
              case crdt::Outcome::kApplied:
                ++run->summary.applied;
                run->summary.max_ts =
                    std::max(run->summary.max_ts.value_or(std::numeric_limits<std::int64_t>::min()),
                             line.shard.ts);
                break;
              case crdt::Outcome::kDuplicate:
                ++run->summary.duplicates;
                break;
              default:
                ++run->summary.rejected;
                break;
            }
          }
          if (++run->in_batch >= batch) {
            run->engine.AdvanceWatermark(run->clocks.Watermark());
            run->in_batch = 0;
          }
        }
        all_full = all_full && run->filter.Full();
      }
    }
    stage.Recycle(decoded);
  }
  stage.Stop();
  std::vector<CutState> out;
  for (auto& run : runs) {
    // The end of a replay: every source is done (a full cut stopped reading, which is the same).
    for (std::size_t s = 0; s < files.size(); ++s) {
      run->clocks.SetDone(s, true);
    }
    run->engine.AdvanceWatermark(run->clocks.Watermark());
    out.push_back({run->engine.Dump(), run->summary});
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

}  // namespace lattice::ingest
