// Tests of RFC 3339 / millisecond timestamps (core/timestamp.h).
#include "lattice/core/timestamp.h"

#include <gtest/gtest.h>

namespace lattice::core {
namespace {

TEST(TimestampTest, ParsesMillisecondsAndRfc3339) {
  EXPECT_EQ(*ParseTimestampMs("0"), 0);
  EXPECT_EQ(*ParseTimestampMs("-5"), -5);
  EXPECT_EQ(*ParseTimestampMs("1732350000123"), 1732350000123);
  EXPECT_EQ(*ParseTimestampMs("2024-11-23T08:20:00Z"), 1732350000000);
  EXPECT_EQ(*ParseTimestampMs("2024-11-23T08:20:00.123Z"), 1732350000123);
  EXPECT_EQ(*ParseTimestampMs("2024-11-23t08:20:00.1239z"), 1732350000123);  // cut, not rounded
  EXPECT_EQ(*ParseTimestampMs("2024-11-23 08:20:00.5"), 1732350000500);      // no offset: UTC
  EXPECT_EQ(*ParseTimestampMs("2024-11-23T09:20:00+01:00"), 1732350000000);
  EXPECT_EQ(*ParseTimestampMs("2024-11-23T03:50:00-04:30"), 1732350000000);
  EXPECT_EQ(*ParseTimestampMs("2024-11-23"), 1732320000000);
  EXPECT_EQ(*ParseTimestampMs("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(*ParseTimestampMs("1969-12-31T23:59:59.999Z"), -1);
  EXPECT_EQ(*ParseTimestampMs("2000-02-29T00:00:00Z"), 951782400000);
}

TEST(TimestampTest, RejectsMalformedTextWithItsReason) {
  for (const char* bad : {"", "abc", "12x", "2024-13-01", "2023-02-29", "2024-11-23T25:00:00Z",
                          "2024-11-23T08:20", "2024-11-23T08:20:00.Z", "2024-11-23T08:20:00+1",
                          "2024-11-23T08:20:00Zjunk", "2024-11-23X08:20:00"}) {
    auto r = ParseTimestampMs(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
  }
}

TEST(TimestampTest, FormatsUtcWithMillisecondsAndRoundTrips) {
  EXPECT_EQ(FormatTimestampMs(1732350000123), "2024-11-23T08:20:00.123Z");
  EXPECT_EQ(FormatTimestampMs(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatTimestampMs(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatTimestampMs(253402300800000), "253402300800000");  // year 10000
  for (std::int64_t ms : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{951782400000},
                          std::int64_t{1732350000123}, std::int64_t{-62135596800000}}) {
    EXPECT_EQ(*ParseTimestampMs(FormatTimestampMs(ms)), ms) << ms;
  }
}

}  // namespace
}  // namespace lattice::core
