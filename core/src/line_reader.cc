// LineReader: buffered, bounded-memory line splitting over plain files, stdin and zstd streams.
#include "lattice/core/line_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace lattice::core {

namespace {
constexpr std::size_t kPadding = 64;
// Bytes read (or decompressed) per Fill. The buffer has room for a maximal line plus 4 MiB, but
// reading a little at a time keeps the pages in use few: every page touched for the first time
// is a page fault (tens of microseconds on a VM), and a buffer filled whole at once touched all
// ~1,300 of them at startup.
constexpr std::size_t kReadChunk = 256 * 1024;
constexpr std::size_t kPrefixBytes = 1024;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

struct LineReader::Zstd {
  ZSTD_DCtx* ctx = nullptr;
  std::unique_ptr<char[]> in;
  std::size_t in_cap = 0;
  ZSTD_inBuffer input{nullptr, 0, 0};
  bool input_eof = false;
  std::size_t last_rc = 0;  // 0 when the last frame is complete
  ~Zstd() {
    if (ctx != nullptr) {
      ZSTD_freeDCtx(ctx);
    }
  }
};

LineReader::~LineReader() {
  if (owns_fd_ && fd_ >= 0) {
    ::close(fd_);
  }
}

Result<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path, Options options) {
  std::unique_ptr<LineReader> r(new LineReader());
  r->path_ = path;
  r->options_ = options;
  if (path == "-") {
    r->fd_ = 0;
    if (options.start_offset != 0) {
      return Status::InvalidArgument("stdin cannot resume from an offset");
    }
  } else {
    r->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (r->fd_ < 0) {
      const int err = errno;
      return Status(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                    "cannot open '" + path + "': " + std::strerror(err));
    }
    r->owns_fd_ = true;
    ::posix_fadvise(r->fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  if (EndsWith(path, ".zst")) {
    r->zstd_ = std::make_unique<Zstd>();
    r->zstd_->ctx = ZSTD_createDCtx();
    r->zstd_->in_cap = ZSTD_DStreamInSize();
    r->zstd_->in = std::make_unique<char[]>(r->zstd_->in_cap);
  }
  // The buffer holds at least one maximal line plus a read chunk and the padding.
  r->cap_ = options.max_line_bytes + (4 << 20) + kPadding;
  // Not zeroed (see kReadChunk): only [begin_, end_ + kPadding) is ever read, and Fill writes
  // the padding.
  r->buf_.reset(new char[r->cap_]);
  r->line_no_ = options.start_line;
  if (options.start_offset > 0) {
    if (!r->zstd_) {
      const off_t pos = ::lseek(r->fd_, static_cast<off_t>(options.start_offset), SEEK_SET);
      if (pos < 0) {
        return Status::InvalidArgument("cannot seek '" + path + "': " + std::strerror(errno));
      }
      struct stat st {};
      if (::fstat(r->fd_, &st) == 0 && static_cast<std::uint64_t>(st.st_size) < options.start_offset) {
        return Status::InvalidArgument("'" + path + "' is shorter (" + std::to_string(st.st_size) +
                                       " bytes) than its stored position " +
                                       std::to_string(options.start_offset) +
                                       "; was the file rewritten?");
      }
      r->offset_ = options.start_offset;
    } else {
      // Decompress and discard up to the resume offset.
      std::uint64_t to_skip = options.start_offset;
      while (to_skip > 0) {
        LATTICE_RETURN_IF_ERROR(r->Fill());
        const std::size_t avail = r->end_ - r->begin_;
        if (avail == 0 && r->eof_) {
          return Status::InvalidArgument("'" + path + "' ends before its stored position " +
                                         std::to_string(options.start_offset) +
                                         "; was the file rewritten?");
        }
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, to_skip));
        r->begin_ += n;
        r->offset_ += n;
        to_skip -= n;
      }
    }
  }
  return r;
}

Result<std::size_t> LineReader::ReadRaw(char* out, std::size_t n) {
  while (true) {
    const ssize_t got = ::read(fd_, out, n);
    if (got >= 0) {
      return static_cast<std::size_t>(got);
    }
    if (errno != EINTR) {
      return Status::Unavailable("read '" + path_ + "': " + std::strerror(errno));
    }
  }
}

Status LineReader::Fill() {
  if (eof_) {
    return Status::Ok();
  }
  // Move the unconsumed tail to the front.
  if (begin_ > 0) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  const std::size_t room = std::min(cap_ - kPadding - end_, kReadChunk);
  if (room == 0) {
    return Status::Ok();
  }
  if (!zstd_) {
    LATTICE_ASSIGN_OR_RETURN(std::size_t got, ReadRaw(buf_.get() + end_, room));
    if (got == 0) {
      eof_ = true;
    }
    end_ += got;
  } else {
    Zstd& z = *zstd_;
    ZSTD_outBuffer output{buf_.get() + end_, room, 0};
    while (output.pos == 0) {
      if (z.input.pos == z.input.size) {
        if (z.input_eof) {
          if (z.last_rc != 0) {
            return Status::InvalidArgument("'" + path_ +
                                           "': the zstd stream is truncated (its last frame is "
                                           "incomplete)");
          }
          eof_ = true;
          break;
        }
        LATTICE_ASSIGN_OR_RETURN(std::size_t got, ReadRaw(z.in.get(), z.in_cap));
        if (got == 0) {
          z.input_eof = true;
          continue;
        }
        z.input = ZSTD_inBuffer{z.in.get(), got, 0};
      }
      const std::size_t rc = ZSTD_decompressStream(z.ctx, &output, &z.input);
      z.last_rc = rc;
      if (ZSTD_isError(rc)) {
        return Status::InvalidArgument("'" + path_ + "': corrupt zstd stream: " +
                                       ZSTD_getErrorName(rc));
      }
    }
    end_ += output.pos;
  }
  std::memset(buf_.get() + end_, 0, kPadding);
  return Status::Ok();
}

Result<std::optional<Line>> LineReader::Next() {
  while (true) {
    // Look for a newline in what is buffered.
    const char* start = buf_.get() + begin_;
    const std::size_t avail = end_ - begin_;
    const void* nl = std::memchr(start, '\n', avail);
    std::size_t len;
    bool have_line = false;
    if (nl != nullptr) {
      len = static_cast<std::size_t>(static_cast<const char*>(nl) - start);
      have_line = true;
    } else if (eof_) {
      if (avail == 0) {
        return std::optional<Line>();
      }
      len = avail;  // the last line has no newline
      have_line = true;
    } else if (avail > options_.max_line_bytes) {
      // An overlong line: keep a prefix, then skip to its newline without buffering it.
      long_prefix_.assign(start, std::min(kPrefixBytes, avail));
      Line line;
      line.number = ++line_no_;
      line.offset = offset_;
      line.too_long = true;
      std::uint64_t length = 0;
      while (true) {
        const char* s = buf_.get() + begin_;
        const std::size_t a = end_ - begin_;
        const void* p = std::memchr(s, '\n', a);
        if (p != nullptr) {
          const auto n = static_cast<std::size_t>(static_cast<const char*>(p) - s);
          length += n;
          begin_ += n + 1;
          offset_ += n + 1;
          break;
        }
        length += a;
        offset_ += a;
        begin_ = end_;
        if (eof_) {
          break;
        }
        LATTICE_RETURN_IF_ERROR(Fill());
        if (eof_ && begin_ == end_) {
          break;
        }
      }
      line.length = length;
      line.end_offset = offset_;
      const std::size_t prefix = std::min<std::uint64_t>(long_prefix_.size(), length);
      long_prefix_.resize(prefix);
      long_prefix_.append(kPadding, '\0');
      line.text = std::string_view(long_prefix_.data(), prefix);
      return std::optional<Line>(line);
    } else {
      LATTICE_RETURN_IF_ERROR(Fill());
      continue;
    }
    if (have_line) {
      Line line;
      line.number = ++line_no_;
      line.offset = offset_;
      line.length = len;
      const std::size_t consumed = (nl != nullptr) ? len + 1 : len;
      begin_ += consumed;
      offset_ += consumed;
      line.end_offset = offset_;
      line.unterminated = nl == nullptr;
      std::size_t text_len = len;
      if (text_len > 0 && start[text_len - 1] == '\r') {
        --text_len;
      }
      if (len > options_.max_line_bytes) {
        const std::size_t prefix = std::min(kPrefixBytes, len);
        long_prefix_.assign(start, prefix);
        long_prefix_.append(kPadding, '\0');
        line.too_long = true;
        line.text = std::string_view(long_prefix_.data(), prefix);
        return std::optional<Line>(line);
      }
      line.text = std::string_view(start, text_len);
      // Skip blank lines (but count them, so line numbers match an editor's).
      bool blank = true;
      for (char c : line.text) {
        if (c != ' ' && c != '\t') {
          blank = false;
          break;
        }
      }
      if (blank) {
        continue;
      }
      return std::optional<Line>(line);
    }
  }
}

}  // namespace lattice::core
