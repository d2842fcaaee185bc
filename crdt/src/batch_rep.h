// BatchRep: builds the serialized form of a rocksdb::WriteBatch (its `rep`, the same bytes the
// WAL holds) directly in a reused buffer, for StateStore::Commit. WriteBatch::Put costs ~550
// instructions a record (a save point, length checks, one std::string append per field); a
// commit writes tens of thousands of records on the merge thread, so this writes them with a
// bounds check and two memcpy each, and the writer thread wraps the bytes in a WriteBatch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <rocksdb/write_batch.h>

#include "lattice/core/status.h"
#include "records.h"

namespace lattice::crdt::internal {

/// The leading bytes of a Put, Delete and DeleteRange record on one column family (the record
/// type and the family id), as RocksDB itself writes them: taken from a probe WriteBatch, so
/// they follow the installed RocksDB's format rather than a copy of its internal constants.
struct BatchTags {
  struct Tag {
    char bytes[8] = {};
    std::uint8_t size = 0;
  };
  Tag put, del, range;

  /// Probes `cf`. Errors: Internal if the probe batch does not have the layout this writer
  /// assumes (12-byte header, then tag, key and value each with a varint length).
  static Result<BatchTags> Probe(rocksdb::ColumnFamilyHandle* cf) {
    BatchTags t;
    rocksdb::WriteBatch b;
    const auto take = [&](Tag& tag, std::size_t trailer) -> bool {
      const std::string& rep = b.Data();
      if (rep.size() < kHeader + trailer + 1 ||
          rep.size() - kHeader - trailer > sizeof(tag.bytes) || b.Count() != 1) {
        return false;
      }
      tag.size = static_cast<std::uint8_t>(rep.size() - kHeader - trailer);
      std::memcpy(tag.bytes, rep.data() + kHeader, tag.size);
      b.Clear();
      return b.Data().size() == kHeader;
    };
    // An empty key and value are each one varint byte 0.
    if (!b.Put(cf, rocksdb::Slice(), rocksdb::Slice()).ok() || !take(t.put, 2) ||
        !b.Delete(cf, rocksdb::Slice()).ok() || !take(t.del, 1) ||
        !b.DeleteRange(cf, rocksdb::Slice(), rocksdb::Slice()).ok() || !take(t.range, 2)) {
      return Status::Internal("unexpected rocksdb::WriteBatch layout");
    }
    return t;
  }

  static constexpr std::size_t kHeader = 12;  // fixed64 sequence, fixed32 count
};

/// A WriteBatch's bytes under construction. The buffer is a std::string kept at its full size
/// (the room), so appending is a bounds check and a memcpy; Finish() cuts it to the bytes
/// written and hands it over (for rocksdb::WriteBatch(std::string&&)). Thread safety: none.
class BatchRep {
 public:
  /// Readies a finished batch's buffer for reuse (its pages stay touched): sets its size to its
  /// capacity (a memset), so that Start() need not. Call it off the hot thread.
  static void Recycle(std::string& buffer) { buffer.resize(buffer.capacity()); }

  /// Starts an empty batch in `buffer` (best a recycled one; its contents do not matter).
  void Start(std::string buffer) {
    buf_ = std::move(buffer);
    if (buf_.size() < buf_.capacity()) {
      buf_.resize(buf_.capacity());
    }
    if (buf_.size() < kMinRoom) {
      buf_.resize(kMinRoom);
    }
    std::memset(buf_.data(), 0, BatchTags::kHeader);
    n_ = BatchTags::kHeader;
    count_ = 0;
  }

  void Put(const BatchTags& t, std::string_view key, std::string_view value) {
    TwoFields(t.put, key, value);
  }
  void Delete(const BatchTags& t, std::string_view key) {
    char* p = Room(kTagRoom + kMaxVarint + key.size());
    p = Tag(p, t.del);
    p = Field(p, key);
    Done(p);
  }
  void DeleteRange(const BatchTags& t, std::string_view begin, std::string_view end) {
    TwoFields(t.range, begin, end);
  }

  /// Bytes written so far (header included).
  std::size_t size() const { return n_; }
  std::uint32_t count() const { return count_; }

  /// Sets the record count and returns the batch's bytes (the buffer keeps its capacity).
  std::string Finish() {
    for (int i = 0; i < 4; ++i) {  // fixed32, little-endian, after the sequence number
      buf_[8 + static_cast<std::size_t>(i)] = static_cast<char>((count_ >> (8 * i)) & 0xff);
    }
    buf_.resize(n_);
    return std::move(buf_);
  }

 private:
  static constexpr std::size_t kMinRoom = 64 << 10;
  static constexpr std::size_t kTagRoom = sizeof(BatchTags::Tag::bytes);

  // A record of two length-prefixed fields (Put: key, value; DeleteRange: begin, end).
  void TwoFields(const BatchTags::Tag& tag, std::string_view a, std::string_view b) {
    char* p = Room(kTagRoom + 2 * kMaxVarint + a.size() + b.size());
    p = Tag(p, tag);
    p = Field(p, a);
    p = Field(p, b);
    Done(p);
  }
  char* Room(std::size_t n) {
    if (buf_.size() - n_ < n) {
      buf_.resize(std::max(2 * buf_.size(), n_ + n));
    }
    return buf_.data() + n_;
  }
  static char* Tag(char* p, const BatchTags::Tag& tag) {
    std::memcpy(p, tag.bytes, sizeof(tag.bytes));  // fixed size: one store; the room covers it
    return p + tag.size;
  }
  static char* Field(char* p, std::string_view s) {
    p = PutVarintTo(p, s.size());
    if (!s.empty()) {  // an empty view may have a null data(): not for memcpy
      std::memcpy(p, s.data(), s.size());
    }
    return p + s.size();
  }
  void Done(char* p) {
    n_ = static_cast<std::size_t>(p - buf_.data());
    ++count_;
  }

  std::string buf_;
  std::size_t n_ = 0;
  std::uint32_t count_ = 0;
};

}  // namespace lattice::crdt::internal
