// Private: SeqFile, the block-reserving sequence-number store behind Emitter (emitter.h explains
// the scheme and its cost).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "lattice/core/status.h"

namespace lattice::ingest::internal {

/// Hands out increasing seqs, persisting a high-water mark ahead of them.
///
/// The file holds one zero-padded 20-digit decimal and a newline, rewritten in place (one 21-byte
/// pwrite + fdatasync per block), and is locked with flock() while open so two emitters cannot
/// share it. Thread safety: none.
class SeqFile {
 public:
  /// Opens (creating) `path`. The first seq is `first` if given, else the stored mark, else 1.
  /// Errors: Unavailable (cannot open/lock/write), Corruption (not a number).
  static Result<std::unique_ptr<SeqFile>> Open(const std::string& path, std::uint64_t block,
                                               std::optional<std::uint64_t> first);
  ~SeqFile();
  SeqFile(const SeqFile&) = delete;
  SeqFile& operator=(const SeqFile&) = delete;

  /// The next seq; reserves (writes and syncs) a new block when the current one is used up.
  Result<std::uint64_t> Next();
  std::uint64_t peek() const { return next_; }

 private:
  SeqFile() = default;
  Status Reserve();
  std::string path_;
  int fd_ = -1;
  std::uint64_t block_ = 1;
  std::uint64_t next_ = 1;
  std::uint64_t mark_ = 0;  // seqs below this are covered by the file
};

}  // namespace lattice::ingest::internal
