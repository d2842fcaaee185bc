// Test helper shared by the unit tests: one NDJSON envelope line (DESIGN §2.2).
#pragma once

#include <cstdint>
#include <string>

namespace lattice {

/// The envelope line {"blade":…,"seq":…,"ts":…,"shard":BODY}; `body` is JSON text, put in as is.
inline std::string Env(const std::string& blade, std::uint64_t seq, std::int64_t ts,
                       const std::string& body) {
  return R"({"blade":")" + blade + R"(","seq":)" + std::to_string(seq) + R"(,"ts":)" +
         std::to_string(ts) + R"(,"shard":)" + body + "}";
}

}  // namespace lattice
