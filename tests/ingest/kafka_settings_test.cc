// KafkaSettings: -X parsing, the LATTICE_* environment and its precedence.
#include "lattice/ingest/kafka_settings.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace lattice::ingest {
namespace {

TEST(KafkaSettingsTest, PropertyNeedsKeyAndEquals) {
  auto kv = ParseKafkaProperty("sasl.jaas.config=a=b");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->first, "sasl.jaas.config");
  EXPECT_EQ(kv->second, "a=b");  // only the first '=' splits
  EXPECT_EQ(ParseKafkaProperty("linger.ms").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseKafkaProperty("=5").status().code(), StatusCode::kInvalidArgument);
  auto empty_value = ParseKafkaProperty("client.id=");
  ASSERT_TRUE(empty_value.ok());
  EXPECT_EQ(empty_value->second, "");
}

TEST(KafkaSettingsTest, EnvironmentFillsBrokersAndPropertiesFlagsWin) {
  setenv("LATTICE_BROKERS", "env:1", 1);
  setenv("LATTICE_KAFKA_LINGER_MS", "7", 1);
  KafkaSettings s;
  s.properties = {{"linger.ms", "9"}};
  ASSERT_TRUE(ApplyKafkaEnvironment(s).ok());
  EXPECT_EQ(s.brokers, "env:1");
  ASSERT_EQ(s.properties.size(), 2u);
  // The environment goes first, so the explicit -X (applied later) wins.
  EXPECT_EQ(s.properties[0], (std::pair<std::string, std::string>("linger.ms", "7")));
  EXPECT_EQ(s.properties[1], (std::pair<std::string, std::string>("linger.ms", "9")));

  KafkaSettings flag;
  flag.brokers = "flag:1";
  ASSERT_TRUE(ApplyKafkaEnvironment(flag).ok());
  EXPECT_EQ(flag.brokers, "flag:1");

  setenv("LATTICE_KAFKA_", "x", 1);
  KafkaSettings bad;
  EXPECT_EQ(ApplyKafkaEnvironment(bad).code(), StatusCode::kInvalidArgument);
  unsetenv("LATTICE_KAFKA_");
  unsetenv("LATTICE_BROKERS");
  unsetenv("LATTICE_KAFKA_LINGER_MS");
}

TEST(KafkaSettingsTest, RequireBrokersAcceptsBootstrapProperty) {
  KafkaSettings none;
  auto missing = RequireBrokers(none);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("LATTICE_BROKERS"), std::string::npos);
  KafkaSettings via_x;
  via_x.properties = {{"bootstrap.servers", "h:9"}};
  ASSERT_TRUE(RequireBrokers(via_x).ok());
  EXPECT_EQ(*RequireBrokers(via_x), "h:9");
}

}  // namespace
}  // namespace lattice::ingest
