// LineReader: reads an NDJSON recording (a plain file, a .zst file, or stdin as "-") line by line,
// with the position of every line, without ever buffering more than one bounded line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "lattice/core/status.h"

namespace lattice::core {

/// One line of a recording.
struct Line {
  std::string_view text;         // the line without its newline (a prefix if too_long)
  std::uint64_t number = 0;      // 1-based line number
  std::uint64_t offset = 0;      // byte offset of the line in the (decompressed) stream
  std::uint64_t end_offset = 0;  // offset just past the line's newline: where to resume
  std::uint64_t length = 0;      // the line's full length in bytes
  bool too_long = false;         // longer than max_line_bytes: only a prefix is in `text`
  bool unterminated = false;     // the last line of the stream, without a newline (it may be
                                 // still being written)
};

/// Reads lines with bounded memory. A line longer than max_line_bytes is returned once with
/// too_long set and a prefix of up to 1 KiB, and the reader skips to the next newline.
///
/// `text` stays valid until the next call to Next(), and at least 64 readable bytes follow it
/// (simdjson's padding), so it can be parsed without a copy. Thread safety: none.
class LineReader {
 public:
  struct Options {
    std::size_t max_line_bytes = (1 << 20) + 64 * 1024;
    /// Resume position: the stream offset and the number of lines before it. For .zst files the
    /// stream is decompressed and skipped up to the offset; stdin cannot resume.
    std::uint64_t start_offset = 0;
    std::uint64_t start_line = 0;
  };

  /// Opens `path` ("-" for stdin; a name ending in .zst is decompressed).
  /// Errors: NotFound / InvalidArgument (cannot open, a resume offset past the end).
  static Result<std::unique_ptr<LineReader>> Open(const std::string& path, Options options);
  static Result<std::unique_ptr<LineReader>> Open(const std::string& path) {
    return Open(path, Options());
  }

  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  /// The next non-blank line, or nullopt at the end. Errors: Unavailable on a read or
  /// decompression failure (InvalidArgument for a corrupt .zst stream).
  Result<std::optional<Line>> Next();

  const std::string& path() const { return path_; }

 private:
  LineReader() = default;
  Status Fill();            // reads more bytes into the buffer
  Result<std::size_t> ReadRaw(char* out, std::size_t n);

  std::string path_;
  Options options_;
  int fd_ = -1;
  bool owns_fd_ = false;
  bool eof_ = false;
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
  std::unique_ptr<char[]> buf_;
  std::size_t cap_ = 0;
  std::size_t begin_ = 0;  // first unconsumed byte
  std::size_t end_ = 0;    // one past the last valid byte
  std::uint64_t offset_ = 0;  // stream offset of buf_[begin_]
  std::uint64_t line_no_ = 0;
  std::string long_prefix_;
};

}  // namespace lattice::core
