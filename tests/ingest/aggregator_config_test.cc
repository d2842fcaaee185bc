// The aggregator's settings resolution (flag > environment > file > default, ranges, the YAML
// file) and the message -> envelope rule it shares with the recorder.
#include "lattice/ingest/aggregator_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "lattice/ingest/message_identity.h"

namespace lattice::ingest {
namespace {

TEST(AggregatorConfigTest, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  const SettingMap flags = {{"state", "from-flag"}};
  const SettingMap env = {{"state", "from-env"}, {"group", "env-group"}};
  const SettingMap file = {{"state", "from-file"}, {"group", "file-group"}, {"topic", "file.topic"},
                           {"kafka.client.id", "x"}};
  auto c = ResolveAggregateConfig({flags, env, file});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->state, "from-flag");
  EXPECT_EQ(c->options.group, "env-group");
  EXPECT_EQ(c->options.topic, "file.topic");
  EXPECT_EQ(c->options.dead_topic, "lattice.dead");  // default
  EXPECT_EQ(c->options.max_batch, std::nullopt);     // by whether change events are on (Run)
  EXPECT_EQ(c->options.max_batch_ms, 1000);
  ASSERT_EQ(c->file_kafka_properties.size(), 1u);
  EXPECT_EQ(c->file_kafka_properties[0].first, "client.id");
}

TEST(AggregatorConfigTest, ValuesAreParsedAndRangeChecked) {
  auto ok = ResolveAggregateConfig({{{"state", "s"},
                                     {"min_batch", "10"},
                                     {"max_batch", "20"},
                                     {"max_batch_time", "2s"},
                                     {"allowed_lateness", "1m"},
                                     {"exit_at_end", "yes"},
                                     {"changes_topic", ""}}});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->options.min_batch, 10u);
  EXPECT_EQ(ok->options.max_batch, std::optional<std::size_t>(20));
  EXPECT_EQ(ok->options.max_batch_ms, 2000);
  EXPECT_EQ(ok->allowed_lateness_ms, 60000);
  EXPECT_TRUE(ok->options.exit_at_end);
  EXPECT_EQ(ok->options.changes_topic, "");  // empty: no change topic
  EXPECT_EQ(ok->memory_budget, std::nullopt);  // default: the state stays in memory
  auto budget = ResolveAggregateConfig({{{"state", "s"}, {"memory_budget", "512MiB"}}});
  ASSERT_TRUE(budget.ok()) << budget.status().ToString();
  EXPECT_EQ(budget->memory_budget, std::optional<std::uint64_t>(512u << 20));
  EXPECT_EQ(ok->max_wal_bytes, std::nullopt);  // default: the store's (256 MiB)
  auto wal = ResolveAggregateConfig({{{"state", "s"}, {"max_wal_size", "64MiB"}}});
  ASSERT_TRUE(wal.ok()) << wal.status().ToString();
  EXPECT_EQ(wal->max_wal_bytes, std::optional<std::uint64_t>(64u << 20));
  auto small = ResolveAggregateConfig({{{"state", "s"}, {"max_wal_size", "512KiB"}}});
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("below the minimum of 1MiB"), std::string::npos)
      << small.status().message();
  for (const SettingMap& bad : std::vector<SettingMap>{
           {{"state", "s"}, {"max_batch", "0"}},
           {{"state", "s"}, {"min_batch", "100"}, {"max_batch", "10"}},
           {{"state", "s"}, {"max_batch_time", "soon"}},
           {{"state", "s"}, {"sync", "maybe"}},
           {{"state", "s"}, {"memory_budget", "lots"}},
           {{"state", "s"}, {"max_wal_size", "off"}},
           {{"state", "s"}, {"max_wal_size", "big"}},
           {{"state", "s"}, {"topic", ""}},
           {{"group", "g"}}}) {  // no state
    auto r = ResolveAggregateConfig({bad});
    EXPECT_FALSE(r.ok()) << "accepted " << bad.begin()->first << "=" << bad.begin()->second;
  }
}

TEST(AggregatorConfigTest, AssignChoosesStandaloneModeAndItsPartitions) {
  auto group = ResolveAggregateConfig({{{"state", "s"}}});
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  EXPECT_FALSE(group->options.standalone);  // the default: a consumer-group member
  auto all = ResolveAggregateConfig({{{"state", "s"}, {"assign", "all"}}});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(all->options.standalone);
  EXPECT_TRUE(all->options.partitions.empty());  // every partition of the topic
  auto list = ResolveAggregateConfig({{{"state", "s"}, {"assign", "7,0-2,5-5"}}});
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_TRUE(list->options.standalone);
  EXPECT_EQ(list->options.partitions, (std::vector<std::int32_t>{0, 1, 2, 5, 7}));
  auto back = ResolveAggregateConfig({{{"state", "s"}, {"assign", "group"}}});
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->options.standalone);
  for (const char* bad : {"3-1", "1,1", "0-2,2", "x", "-1", "1-", ",", "1,,2", "2000000"}) {
    auto r = ResolveAggregateConfig({{{"state", "s"}, {"assign", bad}}});
    EXPECT_FALSE(r.ok()) << "accepted assign=" << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("assign"), std::string::npos) << r.status().message();
    }
  }
}

TEST(AggregatorConfigTest, ConfigFileIsYamlWithAKafkaMap) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lattice-agg-config-" + std::to_string(::getpid()) + ".yaml");
  {
    std::ofstream out(path);
    out << "brokers: k1:9092,k2:9092\nstate: /var/lib/x\nmax_batch: 4096\nkafka:\n"
           "  security.protocol: SASL_SSL\n";
  }
  auto file = ReadAggregateConfigFile(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->at("brokers"), "k1:9092,k2:9092");
  EXPECT_EQ(file->at("max_batch"), "4096");
  EXPECT_EQ(file->at("kafka.security.protocol"), "SASL_SSL");
  {
    std::ofstream out(path);
    out << "state: x\nno_such_setting: 1\n";
  }
  auto bad = ReadAggregateConfigFile(path.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":2: unknown setting 'no_such_setting'"), std::string::npos)
      << bad.status().message();
  std::filesystem::remove(path);
  EXPECT_EQ(ReadAggregateConfigFile(path.string()).status().code(), StatusCode::kNotFound);
}

TEST(MessageIdentityTest, KeyHeaderAndTimestampMakeTheEnvelope) {
  MessageIdentity id("unkeyed");
  MessageFields m;
  m.key = "b-7";
  m.seq_header = "42";
  m.timestamp_ms = 1732350000123;
  m.partition = 3;
  m.offset = 99;
  auto e = id.Identify(m);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->blade, "b-7");
  EXPECT_EQ(e->seq, 42u);
  EXPECT_EQ(e->ts, 1732350000123);
}

TEST(MessageIdentityTest, WithoutHeaderOrKeyTheOffsetAndPartitionStandIn) {
  MessageIdentity id("anon");
  MessageFields m;
  m.partition = 11;
  m.offset = 5;
  auto e = id.Identify(m);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->blade, "anon/11");
  EXPECT_EQ(e->seq, 5u);
  EXPECT_EQ(e->ts, 0);
  m.key = "";  // an empty key is no key
  EXPECT_EQ(id.Identify(m)->blade, "anon/11");
}

TEST(MessageIdentityTest, BadSeqHeaderIsInvalidArgument) {
  MessageIdentity id("unkeyed");
  for (const char* bad : {"", "abc", "-1", "12x", "18446744073709551616"}) {
    MessageFields m;
    m.key = "k";
    m.seq_header = std::string_view(bad);
    auto e = id.Identify(m);
    ASSERT_FALSE(e.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace lattice::ingest
