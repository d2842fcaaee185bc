// Replay of recordings: read lines, decode, merge, dead-letter, commit with positions.
#include "lattice/ingest/replayer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>

#include "lattice/core/json_text.h"
#include "lattice/core/line_reader.h"

#include "decode_stage.h"
#include "source_clocks.h"

namespace lattice::ingest {

namespace {

/// Appends rejected lines to the dead-letter file; Sync() makes them durable.
class DeadLetterFile {
 public:
  static Result<std::unique_ptr<DeadLetterFile>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      return Status::InvalidArgument("cannot open dead-letter file '" + path +
                                     "': " + std::strerror(errno));
    }
    return std::unique_ptr<DeadLetterFile>(new DeadLetterFile(fd, path));
  }
  ~DeadLetterFile() { ::close(fd_); }

  void Add(const std::string& source, std::uint64_t number, std::uint64_t offset,
           std::uint64_t length, std::string_view text, std::string_view outcome,
           std::string_view reason) {
    buf_ += "{\"source\":";
    core::AppendJsonString(buf_, source);
    buf_ += ",\"line\":";
    buf_ += std::to_string(number);
    buf_ += ",\"offset\":";
    buf_ += std::to_string(offset);
    buf_ += ",\"length\":";
    buf_ += std::to_string(length);
    buf_ += ",\"outcome\":\"";
    buf_ += outcome;
    buf_ += "\",\"reason\":";
    core::AppendJsonString(buf_, reason);
    buf_ += ",\"text\":";
    // The text may be invalid UTF-8 or cut mid-character; keep it readable and valid JSON.
    AppendLossy(buf_, text.substr(0, std::min<std::size_t>(text.size(), 1024)));
    buf_ += "}\n";
  }

  Status Sync() {
    if (buf_.empty()) {
      return Status::Ok();
    }
    std::size_t done = 0;
    while (done < buf_.size()) {
      const ssize_t n = ::write(fd_, buf_.data() + done, buf_.size() - done);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        return Status::Unavailable("writing dead letters to '" + path_ +
                                   "': " + std::strerror(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    buf_.clear();
    if (::fdatasync(fd_) != 0) {
      return Status::Unavailable("syncing '" + path_ + "': " + std::strerror(errno));
    }
    return Status::Ok();
  }

 private:
  DeadLetterFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  // Escapes as JSON, replacing bytes that are not valid UTF-8 with U+FFFD.
  static void AppendLossy(std::string& out, std::string_view s) {
    std::string clean;
    clean.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      bool ok = len > 0 && i + len <= s.size();
      for (std::size_t k = 1; ok && k < len; ++k) {
        ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
      }
      if (ok) {
        clean.append(s.substr(i, len));
        i += len;
      } else {
        clean += "\xEF\xBF\xBD";
        ++i;
      }
    }
    core::AppendJsonString(out, clean);
  }

  int fd_;
  std::string path_;
  std::string buf_;
};

/// Where one recording stands in the merge thread.
struct SourceState {
  std::string file;
  std::string id;
  std::uint64_t consumed_offset = 0;  // end of the last line consumed
  std::uint64_t consumed_line = 0;
  bool moved = false;   // consumed something since the last commit
  bool frozen = false;  // a line was left out (past --until): the position stays before it
};

/// Before merging batch.lines[i]: the lines were decoded on the decode thread, so their shards
/// are in another core's cache or in memory, and so are the child index slots their paths look
/// up. Prefetches, in stages, the line 3 * kAhead ahead, the shard of the one 2 * kAhead ahead
/// (entries, blade, keys) and its lookups in the state kAhead ahead.
void PrefetchAhead(const crdt::StateStore& store, const internal::DecodedBatch& batch,
                   std::size_t i) {
  constexpr std::size_t kAhead = 4;
  if (i + 3 * kAhead < batch.size) {
    internal::PrefetchObject(batch.lines[i + 3 * kAhead]);
  }
  if (i + 2 * kAhead < batch.size && batch.lines[i + 2 * kAhead].ok) {
    internal::PrefetchShardData(batch.lines[i + 2 * kAhead].shard);
  }
  if (i + kAhead < batch.size && batch.lines[i + kAhead].ok) {
    store.Prefetch(batch.lines[i + kAhead].shard);
  }
}

}  // namespace

std::string SourceId(const std::string& file) {
  if (file == "-") {
    return "stdin";
  }
  std::error_code ec;
  auto canonical = std::filesystem::canonical(file, ec);
  return ec ? file : canonical.string();
}

Result<ReplayReport> Replay(crdt::StateStore& store, const ReplayOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ReplayReport report;
  std::unique_ptr<DeadLetterFile> dead;
  LATTICE_ASSIGN_OR_RETURN(dead, DeadLetterFile::Open(options.dead_letter_path));

  if (options.until.kind == Cut::Kind::kTs && store.watermark() > options.until.ts) {
    return Status::InvalidArgument(
        "the state is already past --until: it holds shards up to ts " +
        std::to_string(store.watermark()) + ", later than " + std::to_string(options.until.ts) +
        "; replay into a new state directory");
  }
  CutFilter until(options.until);
  // Without a cut every line is admitted: skip the filter's call per line (the merge thread is
  // the replay's critical path).
  const bool cut = options.until.kind != Cut::Kind::kAll;

  std::vector<SourceState> sources;
  std::vector<internal::DecodeStage::Input> inputs;
  for (const std::string& file : options.files) {
    SourceState src;
    src.file = file;
    src.id = SourceId(file);
    core::LineReader::Options ro;
    if (auto pos = store.Position(src.id); pos && file != "-") {
      ro.start_offset = pos->offset;
      ro.start_line = pos->line;
    }
    src.consumed_offset = ro.start_offset;
    src.consumed_line = ro.start_line;
    sources.push_back(std::move(src));
    inputs.push_back({file, ro});
  }
  // Reading and decoding run on their own thread; this thread merges and commits.
  internal::DecodeStage stage;
  LATTICE_RETURN_IF_ERROR(stage.Start(inputs, 4096));
  // The watermark follows the slowest source that is still delivering; only merged shards move
  // it (a line past --until must not make later lines late).
  internal::SourceClocks clocks(sources.size());

  auto commit = [&]() -> Status {
    LATTICE_RETURN_IF_ERROR(dead->Sync());
    for (SourceState& src : sources) {
      if (src.moved) {
        store.StagePosition({src.id, src.consumed_offset, src.consumed_line});
        src.moved = false;
      }
    }
    store.AdvanceWatermark(clocks.Watermark());
    return store.Commit();
  };

  std::size_t in_batch = 0;
  while (!until.Full()) {
    if (options.stop != nullptr && options.stop->load(std::memory_order_relaxed)) {
      report.interrupted = true;
      break;
    }
    LATTICE_ASSIGN_OR_RETURN(internal::DecodedBatch * batch, stage.Next());
    if (batch == nullptr) {
      break;
    }
    for (std::size_t i = 0; i < batch->size && !until.Full(); ++i) {
      PrefetchAhead(store, *batch, i);
      const internal::DecodedLine& line = batch->lines[i];
      SourceState& src = sources[line.source];
      if (!line.ok && line.unterminated) {
        // A partly written last line: leave it (and its position) for the next run.
        ++report.held_back;
        report.held_back_reason = std::string(line.error);
        clocks.SetDone(line.source, true);
        continue;
      }
      if ((cut && !until.Admit(line.ok, line.shard.blade, line.shard.ts)) ||
          (src.frozen && !line.ok)) {
        // Past --until: left for a later run, and so is everything after it in this file as far
        // as the position goes (a bad line after it is dead-lettered by the run that passes it).
        ++report.past_until;
        src.frozen = true;
        clocks.SetDone(line.source, line.source_done);
        continue;
      }
      ++report.lines;
      report.bytes += line.length + 1;
      std::string_view outcome;
      std::string reason;
      if (!line.ok) {
        ++report.bad;
        outcome = "bad";
        reason = std::string(line.error);
      } else {
        clocks.Observe(line.source, line.shard.ts);
        const crdt::ShardSource where{src.id, line.offset, line.number};  // for `lattice blame`
        crdt::ApplyResult r = store.Apply(line.shard, &where);
        switch (r.outcome) {
          case crdt::Outcome::kApplied:
            ++report.applied;
            break;
          case crdt::Outcome::kDuplicate:
            ++report.duplicates;
            break;
          case crdt::Outcome::kConflict:
            ++report.conflicts;
            outcome = "conflict";
            break;
          case crdt::Outcome::kLate:
            ++report.late;
            outcome = "late";
            break;
          case crdt::Outcome::kInvalid:
            ++report.bad;
            outcome = "bad";
            break;
        }
        if (r.outcome != crdt::Outcome::kApplied) {
          reason = std::move(r.reason);
        }
      }
      if (!outcome.empty()) {
        if (options.strict) {
          stage.Stop();
          LATTICE_RETURN_IF_ERROR(commit());
          LATTICE_RETURN_IF_ERROR(store.Flush());
          return Status::InvalidArgument(src.file + ":" + std::to_string(line.number) + ": " +
                                         std::string(outcome) + " shard: " + reason);
        }
        // After a line left out, the position stays before it, so a later run reads this line
        // again and dead-letters it then (once).
        if (!src.frozen) {
          dead->Add(src.id, line.number, line.offset, line.length, line.text, outcome, reason);
        }
      }
      if (!src.frozen) {
        src.consumed_offset = line.end_offset;
        src.consumed_line = line.number;
        src.moved = true;
      }
      clocks.SetDone(line.source, line.source_done);
      const bool report_progress = options.progress_every > 0 && options.progress &&
                                   report.lines % options.progress_every == 0;
      if (++in_batch >= options.batch_shards || report_progress) {
        LATTICE_RETURN_IF_ERROR(commit());
        in_batch = 0;
      }
      if (report_progress) {
        options.progress(report);
      }
    }
    stage.Recycle(batch);
  }
  stage.Stop();
  if (options.close_at_end && !report.interrupted) {
    store.Close();
  }
  LATTICE_RETURN_IF_ERROR(commit());
  LATTICE_RETURN_IF_ERROR(store.Flush());
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lattice::ingest
