// Replayer: merges NDJSON recordings into a state directory at full speed, resumably.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lattice/core/status.h"
#include "lattice/crdt/state_store.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::ingest {

struct ReplayReport;

struct ReplayOptions {
  /// Recordings to merge ("-" is stdin; .zst files are decompressed). Several files are merged
  /// by ts (a k-way merge of their heads), so one recording per blade replays as well as one file.
  std::vector<std::string> files;
  /// Where rejected lines go, one JSON object each (appended).
  std::string dead_letter_path;
  /// Stop at the first rejected line (bad, conflict or late) with an error.
  bool strict = false;
  /// Shards per committed batch.
  std::size_t batch_shards = 1 << 16;
  /// When set (e.g. by a SIGINT handler), the replay commits what it merged and returns early.
  const std::atomic<bool>* stop = nullptr;
  /// Merge only the lines of this cut (`lattice replay --until` / `--until-seq`). Lines past it
  /// are left for a later run: a file's stored position never passes its first line that was
  /// left out, so a later replay of the same state directory reads it (and recognises the lines
  /// after it that this run merged as duplicates). A kTs cut fails with InvalidArgument when the
  /// store's watermark is already past it. A kLines cut counts from where this run starts.
  Cut until = Cut::All();
  /// Close the input at the end (StateStore::Close: the watermark becomes the largest ts merged,
  /// TTL evictions due by then happen) before the last commit. Set when TTL rules are in use.
  bool close_at_end = false;
  /// Every this many lines (0 = never), after a commit, `progress` is called with the report so
  /// far (`lattice replay --progress`).
  std::uint64_t progress_every = 0;
  std::function<void(const ReplayReport&)> progress;
};

/// What a replay did.
struct ReplayReport {
  std::uint64_t lines = 0;  // lines read (after resuming)
  std::uint64_t applied = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t late = 0;
  std::uint64_t bad = 0;
  std::uint64_t bytes = 0;
  double seconds = 0;
  bool interrupted = false;  // stopped early by ReplayOptions::stop
  /// The last line of a file had no newline and did not decode: it is probably still being
  /// written, so it was neither applied nor dead-lettered, and the next run reads it again.
  std::uint64_t held_back = 0;
  std::string held_back_reason;
  /// Lines read but left for a later run because they are past ReplayOptions::until.
  std::uint64_t past_until = 0;
  std::uint64_t rejected() const { return conflicts + late + bad; }
};

/// Replays `options.files` into `store`, resuming each file from its committed position, and
/// committing state, positions and dead letters batch by batch (dead letters are flushed before
/// the positions that pass them are committed).
///
/// Errors: NotFound/InvalidArgument for unreadable files or a file shorter than its stored
/// position; Unavailable for I/O failures (a full disk); with `strict`, InvalidArgument for the
/// first rejected line (everything before it is committed).
Result<ReplayReport> Replay(crdt::StateStore& store, const ReplayOptions& options);

/// The source id under which a file's position is stored: its canonical absolute path ("stdin"
/// for "-").
std::string SourceId(const std::string& file);

}  // namespace lattice::ingest
