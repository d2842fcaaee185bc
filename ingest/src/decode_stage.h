// DecodeStage: reads and decodes recordings on a thread of its own, merging several files by ts,
// and hands batches of decoded shards to the merge thread. Private to ingest/.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lattice/core/line_reader.h"
#include "lattice/core/shard.h"
#include "lattice/core/status.h"

namespace lattice::ingest::internal {

/// Prefetches the cache line of `p` to be written: in exclusive state, so that a store to a line
/// the other core read last does not wait for it. GCC's __builtin_prefetch(p, 1) emits a plain
/// read prefetch unless the target has PRFCHW; the instruction is a no-op hint where unsupported.
inline void PrefetchForWrite(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

/// Prefetches every cache line of `object` (the merge loops' prefetch ahead: items decoded on
/// another thread).
template <typename T>
void PrefetchObject(const T& object) {
  const char* p = reinterpret_cast<const char*>(&object);
  for (std::size_t off = 0; off < sizeof(T); off += 64) {
    __builtin_prefetch(p + off);
  }
}

/// Prefetches what merging a decoded `shard` reads first: its entries (up to 256 bytes) and its
/// blade, with the keys copied into the arena right after it (CopyShard, DecodeStage::Fill).
inline void PrefetchShardData(const core::Shard& shard) {
  const char* p = reinterpret_cast<const char*>(shard.entries.data());
  const std::size_t size = shard.entries.size() * sizeof(core::BodyEntry);
  const std::size_t bytes = size < 256 ? size : 256;
  for (std::size_t off = 0; off < bytes; off += 64) {
    __builtin_prefetch(p + off);
  }
  __builtin_prefetch(shard.blade.data());
  __builtin_prefetch(shard.blade.data() + 64);
}

/// Bump allocator whose blocks never move, so views into it stay valid until Reset().
class Arena {
 public:
  /// Room for `n` > 0 bytes, for the caller to fill; valid until Reset().
  char* Allocate(std::size_t n) {
    if (n <= room_) [[likely]] {
      char* p = next_;
      next_ += n;
      room_ -= n;
      return p;
    }
    return AllocateInNextBlock(n);
  }
  std::string_view Copy(std::string_view s);
  void Reset();
  /// Prefetches, to be written, the line `ahead` bytes past the next allocation's start.
  void PrefetchAhead(std::size_t ahead) const {
    if (ahead < room_) {
      PrefetchForWrite(next_ + ahead);
    }
  }

 private:
  char* AllocateInNextBlock(std::size_t n);

  std::vector<std::unique_ptr<char[]>> blocks_;
  std::vector<std::size_t> sizes_;
  std::size_t block_ = 0;  // the block `next_` points into (none while `next_` is null)
  char* next_ = nullptr;
  std::size_t room_ = 0;  // bytes left in that block
};

/// One line as the merge thread sees it: where it came from and what it decoded to.
struct DecodedLine {
  std::uint32_t source = 0;
  std::uint64_t number = 0;
  std::uint64_t offset = 0;
  std::uint64_t end_offset = 0;
  std::uint64_t length = 0;
  bool ok = false;
  core::Shard shard;             // valid when ok; views point into the batch's arena
  std::string_view error;        // when !ok: the reason
  std::string_view text;         // the line (its first 1 KiB), for dead letters
  bool source_done = false;      // this source has no line after this one
  bool unterminated = false;     // the source's last line, without a newline
};

/// A batch of decoded lines. Recycled: vectors keep their capacity, the arena its blocks.
struct DecodedBatch {
  std::vector<DecodedLine> lines;
  std::size_t size = 0;  // lines in use
  Arena arena;
};

/// The decode thread. Start() opens every file and starts reading; Next() returns the next batch
/// (nullptr at the end) and Recycle() gives a batch back.
class DecodeStage {
 public:
  struct Input {
    std::string file;
    core::LineReader::Options resume;
  };
  DecodeStage() = default;
  ~DecodeStage();
  DecodeStage(const DecodeStage&) = delete;
  DecodeStage& operator=(const DecodeStage&) = delete;

  /// Errors: those of LineReader::Open for any file.
  Status Start(const std::vector<Input>& inputs, std::size_t batch_lines);

  /// Blocks for the next batch; nullptr after the last one. Errors: a read failure.
  Result<DecodedBatch*> Next();
  void Recycle(DecodedBatch* batch);

  /// Asks the thread to stop early (Next() then returns nullptr soon).
  void Stop();

 private:
  struct Source {
    std::unique_ptr<core::LineReader> reader;
    core::ShardDecoder decoder;
    std::optional<core::Line> line;
    Result<const core::Shard*> shard = Status::NotFound("no line");
    bool done = false;
    Status Advance();
    std::int64_t HeadTs() const;
  };
  void Run();
  void Fill(DecodedBatch& batch, Source& src, std::uint32_t index, DecodedLine& out);

  std::vector<std::unique_ptr<Source>> sources_;
  std::size_t batch_lines_ = 4096;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<DecodedBatch*> ready_;
  std::vector<DecodedBatch*> free_;
  std::vector<std::unique_ptr<DecodedBatch>> all_;
  bool finished_ = false;
  Status error_;
  std::atomic<bool> stop_{false};
};

}  // namespace lattice::ingest::internal
