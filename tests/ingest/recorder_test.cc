// ParseRecordStart: where `lattice record` starts in each partition.
#include "lattice/ingest/recorder.h"

#include <gtest/gtest.h>

namespace lattice::ingest {
namespace {

TEST(RecordStartTest, ParsesBeginningEndOffsetAndTimestamp) {
  EXPECT_EQ(ParseRecordStart("beginning")->kind, RecordStart::Kind::kBeginning);
  EXPECT_EQ(ParseRecordStart("end")->kind, RecordStart::Kind::kEnd);
  auto off = ParseRecordStart("1200");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->kind, RecordStart::Kind::kOffset);
  EXPECT_EQ(off->value, 1200);
  auto ts = ParseRecordStart("@1732350000000");
  ASSERT_TRUE(ts.ok());
  EXPECT_EQ(ts->kind, RecordStart::Kind::kTimestamp);
  EXPECT_EQ(ts->value, 1732350000000);
  for (const char* bad : {"", "@", "-5", "@-5", "start", "12x", "1e3"}) {
    EXPECT_EQ(ParseRecordStart(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace lattice::ingest
