// memcpy for the short keys and values of a shard, without a library call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lattice::core {

/// Copies `n` bytes from `src` to `dst`: two overlapping loads and stores cover 4..16 bytes, and
/// no byte outside [src, src + n) is read. For the few-byte strings of shards (the decoder's
/// canonical copies, the aggregator's chunk arenas), where a memcpy call's size dispatch was
/// ~20 instructions a string.
__attribute__((always_inline)) inline void CopySmall(char* dst, const char* src, std::size_t n) {
  if (n >= 8) {
    if (n > 16) {
      std::memcpy(dst, src, n);
      return;
    }
    std::uint64_t a, b;
    std::memcpy(&a, src, 8);
    std::memcpy(&b, src + n - 8, 8);
    std::memcpy(dst, &a, 8);
    std::memcpy(dst + n - 8, &b, 8);
  } else if (n >= 4) {
    std::uint32_t a, b;
    std::memcpy(&a, src, 4);
    std::memcpy(&b, src + n - 4, 4);
    std::memcpy(dst, &a, 4);
    std::memcpy(dst + n - 4, &b, 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = src[i];
    }
  }
}

}  // namespace lattice::core
