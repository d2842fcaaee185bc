// The SSE4.2 CRC32C that replaces Debian RocksDB's table-based one for the WAL
// (crdt/src/rocksdb_crc32c.cc, linked with --wrap): it must give RocksDB's own checksums, or a
// state directory written by one build would not open in another (or in RocksDB's tools).
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace rocksdb::crc32c {
// RocksDB's util/crc32c.h (not installed by Debian): CRC32C of data, continuing from init_crc.
std::uint32_t Extend(std::uint32_t init_crc, const char* data, std::size_t n);
}  // namespace rocksdb::crc32c

// RocksDB's own implementation, which --wrap leaves reachable under this name.
std::uint32_t OriginalExtend(std::uint32_t crc, const char* data,
                             std::size_t n) asm("__real__ZN7rocksdb6crc32c6ExtendEjPKcm");

namespace {

TEST(RocksCrc32cTest, RocksDbCallsAreWrapped) {
  // Under --wrap a reference to Extend from this file is bound to the replacement, so its
  // address differs from RocksDB's original.
  EXPECT_NE(reinterpret_cast<const void*>(&rocksdb::crc32c::Extend),
            reinterpret_cast<const void*>(&OriginalExtend));
}

TEST(RocksCrc32cTest, KnownVectors) {
  // RFC 3720 B.4 and the common check value of CRC-32C.
  EXPECT_EQ(rocksdb::crc32c::Extend(0, "123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(rocksdb::crc32c::Extend(0, zeros.data(), zeros.size()), 0x8A9136AAu);
  const std::string ones(32, '\xff');
  EXPECT_EQ(rocksdb::crc32c::Extend(0, ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(rocksdb::crc32c::Extend(0, "", 0), 0u);
}

TEST(RocksCrc32cTest, MatchesRocksDbOriginalAtEveryLengthAndAlignment) {
  std::mt19937_64 rng(8);
  std::string buf(4096 + 16, '\0');
  for (char& c : buf) {
    c = static_cast<char>(rng());
  }
  for (std::size_t offset = 0; offset < 16; ++offset) {
    for (std::size_t n = 0; n <= 300; ++n) {
      const std::uint32_t seed = static_cast<std::uint32_t>(rng());
      ASSERT_EQ(rocksdb::crc32c::Extend(seed, buf.data() + offset, n),
                OriginalExtend(seed, buf.data() + offset, n))
          << "offset " << offset << " length " << n;
    }
  }
  // Long runs, and a chain of extends as the WAL writer does (type byte, then payload).
  for (std::size_t n : {4096u, 4095u, 1000u}) {
    EXPECT_EQ(rocksdb::crc32c::Extend(0, buf.data() + 3, n), OriginalExtend(0, buf.data() + 3, n));
    const std::uint32_t head = rocksdb::crc32c::Extend(0, buf.data(), 1);
    EXPECT_EQ(rocksdb::crc32c::Extend(head, buf.data() + 1, n),
              OriginalExtend(0, buf.data(), n + 1));
  }
}

}  // namespace
