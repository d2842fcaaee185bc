// SeqFile (seq_file.h).
#include "seq_file.h"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace lattice::ingest::internal {

namespace {
constexpr std::size_t kRecordBytes = 21;  // 20 digits + '\n'
std::string Errno() { return std::strerror(errno); }
}  // namespace

Result<std::unique_ptr<SeqFile>> SeqFile::Open(const std::string& path, std::uint64_t block,
                                               std::optional<std::uint64_t> first) {
  std::unique_ptr<SeqFile> f(new SeqFile());
  f->path_ = path;
  f->block_ = block == 0 ? 1 : block;
  f->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (f->fd_ < 0) {
    return Status::Unavailable("seq file '" + path + "': " + Errno());
  }
  if (flock(f->fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::Unavailable("seq file '" + path +
                               "' is locked by another emitter (one seq file per blade "
                               "process): " +
                               Errno());
  }
  char buf[64];
  const ssize_t n = pread(f->fd_, buf, sizeof(buf), 0);
  if (n < 0) {
    return Status::Unavailable("seq file '" + path + "': " + Errno());
  }
  std::uint64_t stored = 0;
  bool have_stored = false;
  if (n > 0) {
    std::size_t len = static_cast<std::size_t>(n);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) {
      --len;
    }
    auto [p, ec] = std::from_chars(buf, buf + len, stored);
    if (ec != std::errc() || p != buf + len || len == 0) {
      return Status::Corruption("seq file '" + path +
                                "' does not hold a decimal number (was it written by Lattice?)");
    }
    have_stored = true;
  }
  f->next_ = first ? *first : (have_stored ? stored : 1);
  f->mark_ = 0;  // nothing reserved by this process yet
  return f;
}

SeqFile::~SeqFile() {
  if (fd_ >= 0) {
    ::close(fd_);  // also releases the flock
  }
}

Status SeqFile::Reserve() {
  const std::uint64_t mark = next_ + block_;
  if (mark < next_) {
    return Status::InvalidArgument("seq overflow in '" + path_ + "'");
  }
  char rec[kRecordBytes + 1];
  std::snprintf(rec, sizeof(rec), "%020llu\n", static_cast<unsigned long long>(mark));
  // The first write also drops any longer text a person may have put there.
  if (pwrite(fd_, rec, kRecordBytes, 0) != static_cast<ssize_t>(kRecordBytes) ||
      (mark_ == 0 && ftruncate(fd_, kRecordBytes) != 0) || fdatasync(fd_) != 0) {
    return Status::Unavailable("cannot write the seq file '" + path_ + "': " + Errno());
  }
  mark_ = mark;
  return Status::Ok();
}

Result<std::uint64_t> SeqFile::Next() {
  if (next_ >= mark_) {
    LATTICE_RETURN_IF_ERROR(Reserve());
  }
  return next_++;
}

}  // namespace lattice::ingest::internal
