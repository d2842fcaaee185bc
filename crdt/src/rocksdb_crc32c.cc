// A hardware CRC32C for RocksDB's write-ahead log. Debian's RocksDB 7.8 is a portable build
// (no SSE4.2 at compile time), so `rocksdb::crc32c::Extend` runs a table-based CRC (Slow_CRC32)
// on every WAL record the store's writer emits: ~2.4% of `lattice aggregate`'s CPU, ~1 GB/s.
// crdt/CMakeLists.txt links every executable that uses crdt with `--wrap` of that symbol, so
// RocksDB's calls (the WAL writer and reader, table blocks) come here; this computes the same
// CRC32C (Castagnoli, RFC 3720) with the SSE4.2 `crc32` instruction where the CPU has it, and
// calls RocksDB's own code otherwise. Only the statically linked librocksdb.a is affected
// (references inside a shared librocksdb.so are not wrapped; then this is unused).
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lattice::crdt::internal {

// The names the linker gives the wrapped symbol (rocksdb::crc32c::Extend(uint32_t, const char*,
// size_t)) and RocksDB's original under `--wrap`. Keep in step with crdt/CMakeLists.txt.
std::uint32_t RocksCrc32cExtend(std::uint32_t crc, const char* data,
                                std::size_t n) asm("__wrap__ZN7rocksdb6crc32c6ExtendEjPKcm");
std::uint32_t RocksCrc32cExtendOriginal(std::uint32_t crc, const char* data, std::size_t n) asm(
    "__real__ZN7rocksdb6crc32c6ExtendEjPKcm");

namespace {

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t Sse42Extend(std::uint32_t crc, const char* p,
                                                            std::size_t n) {
  std::uint64_t l = ~crc;
  // Align to 8 bytes, then 8 bytes an instruction (its latency, 3 cycles, bounds this loop at
  // ~8 GB/s on this host's cores: plenty against the WAL's rate).
  while (n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7) != 0) {
    l = __builtin_ia32_crc32qi(static_cast<std::uint32_t>(l), static_cast<unsigned char>(*p));
    ++p;
    --n;
  }
  while (n >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    l = __builtin_ia32_crc32di(l, word);
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    l = __builtin_ia32_crc32qi(static_cast<std::uint32_t>(l), static_cast<unsigned char>(*p));
    ++p;
    --n;
  }
  return ~static_cast<std::uint32_t>(l);
}

using ExtendFn = std::uint32_t (*)(std::uint32_t, const char*, std::size_t);

ExtendFn Choose() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") ? &Sse42Extend : &RocksCrc32cExtendOriginal;
}
#else
using ExtendFn = std::uint32_t (*)(std::uint32_t, const char*, std::size_t);
ExtendFn Choose() { return &RocksCrc32cExtendOriginal; }
#endif

}  // namespace

std::uint32_t RocksCrc32cExtend(std::uint32_t crc, const char* data, std::size_t n) {
  // A function-local static: RocksDB may checksum during another object's static initialisation.
  static const ExtendFn extend = Choose();
  return extend(crc, data, n);
}

}  // namespace lattice::crdt::internal
