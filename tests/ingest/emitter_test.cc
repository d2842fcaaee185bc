// Emitter and LineEmitter against a real librdkafka mock cluster (DevBroker, over TCP on
// 127.0.0.1). What was produced is read back with a plain librdkafka consumer, independent of the
// code under test.
#include "lattice/ingest/emitter.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include "lattice/core/shard.h"
#include "lattice/ingest/dev_broker.h"
#include "lattice/ingest/line_emitter.h"

namespace lattice::ingest {
namespace {

struct Message {
  int partition = 0;
  std::string key;
  std::string value;
  std::int64_t ts = -1;
  std::string seq;  // the lattice-seq header, "" when absent
  std::size_t headers = 0;  // how many headers the message has
};

// Reads every message of `topic` from the beginning to the current end.
std::vector<Message> ConsumeAll(const std::string& bootstrap, const std::string& topic,
                                int partitions) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", "emitter-test", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  EXPECT_NE(rk, nullptr) << err;
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  std::vector<Message> out;
  int eofs = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (eofs < partitions && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) {
      continue;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ++eofs;
    } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      Message msg;
      msg.partition = m->partition;
      msg.key.assign(static_cast<const char*>(m->key), m->key_len);
      msg.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_timestamp_type_t tstype;
      msg.ts = rd_kafka_message_timestamp(m, &tstype);
      rd_kafka_headers_t* hdrs = nullptr;
      const void* v = nullptr;
      size_t n = 0;
      if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        msg.headers = rd_kafka_header_cnt(hdrs);
        if (rd_kafka_header_get_last(hdrs, "lattice-seq", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          msg.seq.assign(static_cast<const char*>(v), n);
        }
      }
      out.push_back(std::move(msg));
    }
    rd_kafka_message_destroy(m);
  }
  EXPECT_EQ(eofs, partitions) << "timed out reading " << topic;
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return out;
}

// An envelope line of `blade` with seq `seq`, ts 7 and the body {"n":seq}.
std::string EnvelopeLine(const std::string& blade, int seq) {
  return R"({"blade":")" + blade + R"(","seq":)" + std::to_string(seq) +
         R"(,"ts":7,"shard":{"n":)" + std::to_string(seq) + "}}";
}

class EmitterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DevBrokerOptions o;
    // "one": a single partition, whose order is the order of sending.
    o.topics = {{"lattice.shards", 4}, {"one", 1}};
    auto b = DevBroker::Start(o);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    broker_ = std::move(b).value();
    dir_ = std::filesystem::temp_directory_path() /
           ("lattice-emitter-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  EmitterOptions Options(const std::string& blade) {
    EmitterOptions o;
    o.kafka.brokers = broker_->bootstraps();
    o.blade = blade;
    o.seq_file = (dir_ / (blade + ".seq")).string();
    return o;
  }

  // An emitter to the one-partition topic "one" (its order is the send order); bare bodies take
  // blade "w". Null (and a failure recorded) if it cannot open.
  std::unique_ptr<Emitter> OpenOnePartition() {
    EmitterOptions o = Options("w");
    o.topic = "one";
    auto e = Emitter::Open(o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : nullptr;
  }

  std::unique_ptr<DevBroker> broker_;
  std::filesystem::path dir_;
};

TEST_F(EmitterTest, CallsBecomeKeyedTimestampedSequencedMessages) {
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto e = Emitter::Open(Options("blade-7"));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  Emitter& em = **e;
  EXPECT_EQ(em.next_seq(), 1u);
  ASSERT_TRUE(em.Set("nodes.n1.status", "\"up\"").ok());
  ASSERT_TRUE(em.Inc("scrape.tries", std::int64_t{3}).ok());
  ASSERT_TRUE(em.Inc("load", 0.5).ok());
  ASSERT_TRUE(em.Max("peak", 9).ok());
  ASSERT_TRUE(em.Min("low", -2.5).ok());
  ASSERT_TRUE(em.Erase("intents.i1").ok());
  ASSERT_TRUE(em.Set("hosts.a\\.b.$op", "[1,2]").ok());  // escaped dot, '$' key
  ASSERT_TRUE(em.Raw("{\"x\":{}}").ok());
  ASSERT_TRUE(em.Close(std::chrono::seconds(20)).ok());
  EXPECT_EQ(em.stats().delivered, 8u);
  EXPECT_EQ(em.stats().failed, 0u);

  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 8u);
  std::map<std::string, std::string> by_seq;
  for (const auto& m : msgs) {
    EXPECT_EQ(m.key, "blade-7");
    EXPECT_EQ(m.partition, msgs[0].partition) << "one blade, one partition";
    EXPECT_GE(m.ts, before);
    EXPECT_LE(m.ts, before + 60000);
    by_seq[m.seq] = m.value;
  }
  EXPECT_EQ(by_seq["1"], R"({"nodes":{"n1":{"status":"up"}}})");
  EXPECT_EQ(by_seq["2"], R"({"scrape":{"tries":{"$inc":3}}})");
  EXPECT_EQ(by_seq["3"], R"({"load":{"$inc":0.5}})");
  EXPECT_EQ(by_seq["4"], R"({"peak":{"$max":9}})");
  EXPECT_EQ(by_seq["5"], R"({"low":{"$min":-2.5}})");
  EXPECT_EQ(by_seq["6"], R"({"intents":{"i1":null}})");
  EXPECT_EQ(by_seq["7"], R"({"hosts":{"a.b":{"$$op":[1,2]}}})");
  EXPECT_EQ(by_seq["8"], R"({"x":{}})");
}

TEST_F(EmitterTest, SeqKeepsIncreasingAcrossRestarts) {
  EmitterOptions o = Options("b");
  o.seq_block = 3;
  std::uint64_t last = 0;
  for (int run = 0; run < 4; ++run) {
    auto e = Emitter::Open(o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_GT((*e)->next_seq(), last) << "run " << run;
    for (int i = 0; i < run + 2; ++i) {
      last = (*e)->next_seq();
      ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
    }
    if (run % 2 == 0) {
      ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
    }
    // Odd runs end in the destructor (which flushes briefly); crashes are covered by the
    // kill -9 case of tests/integration/emit_record_test.sh.
  }
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 2u + 3u + 4u + 5u);
  std::vector<std::uint64_t> seqs;
  for (const auto& m : msgs) {
    seqs.push_back(std::stoull(m.seq));
  }
  for (std::size_t i = 1; i < seqs.size(); ++i) {
    EXPECT_LT(seqs[i - 1], seqs[i]) << "one blade's shards are in one partition, in order";
  }
  EXPECT_EQ(seqs.back(), last);
}

TEST_F(EmitterTest, WithoutSeqFileSeqsStartAtTheClock) {
  EmitterOptions o = Options("c");
  o.seq_file.clear();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok());
  EXPECT_GE((*e)->next_seq(), static_cast<std::uint64_t>(micros));
}

TEST_F(EmitterTest, SeqFileIsLockedAndValidated) {
  auto a = Emitter::Open(Options("d"));
  ASSERT_TRUE(a.ok());
  auto b = Emitter::Open(Options("d"));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(b.status().message().find("locked"), std::string::npos);

  const std::string junk = (dir_ / "junk.seq").string();
  std::FILE* f = std::fopen(junk.c_str(), "w");
  std::fputs("twelve\n", f);
  std::fclose(f);
  EmitterOptions o = Options("e");
  o.seq_file = junk;
  EXPECT_EQ(Emitter::Open(o).status().code(), StatusCode::kCorruption);
}

TEST_F(EmitterTest, BadInputIsRefusedBeforeSending) {
  auto e = Emitter::Open(Options("f"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ((*e)->Set("a", "{bad").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->Set("a", "{\"$inc\":\"x\"}").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->Set("a\\q", "1").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->Raw("[1]").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*e)->next_seq(), 1u) << "a refused shard uses no seq";
  EXPECT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  EXPECT_EQ((*e)->stats().queued, 0u);

  EmitterOptions bad = Options("g");
  bad.kafka.properties = {{"linger.ms", "banana"}};
  auto r = Emitter::Open(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("linger.ms=banana"), std::string::npos);
  EmitterOptions nobrokers = Options("h");
  nobrokers.kafka.brokers.clear();
  EXPECT_EQ(Emitter::Open(nobrokers).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(EmitterTest, DeliveryFailuresAreReportedNotSwallowed) {
  EmitterOptions o = Options("i");
  o.kafka.properties = {{"message.timeout.ms", "3000"}};
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok());
  // A permanent error for every produce request: librdkafka gives up and reports it.
  ASSERT_EQ(broker_->Execute("errors Produce 100 TOPIC_AUTHORIZATION_FAILED"), "ok");
  ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
  ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
  Status s = (*e)->Flush(std::chrono::seconds(20));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("not delivered"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("blade 'i'"), std::string::npos) << s.ToString();
  EXPECT_EQ((*e)->stats().failed, 2u);
}

TEST_F(EmitterTest, RetriableErrorsAndBrokerDownUpLoseNothingAndDuplicateNothing) {
  auto e = Emitter::Open(Options("j"));
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(broker_->Execute("errors Produce 5 NOT_LEADER_FOR_PARTITION"), "ok");
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
  }
  ASSERT_EQ(broker_->Execute("errors Produce 3 REQUEST_TIMED_OUT"), "ok");
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
  }
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(30)).ok());
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 1000u) << "idempotent producing: retries are written once";
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_EQ(msgs[i].seq, std::to_string(i + 1));
  }
}

// Every message carries exactly one lattice-seq header, its own, for seqs of every length.
TEST_F(EmitterTest, EveryMessageCarriesOneHeaderWithItsOwnSeq) {
  auto e = Emitter::Open(Options("r"));
  ASSERT_TRUE(e.ok());
  const std::vector<std::uint64_t> seqs = {7, 12345678901234,        42, 9,   100000,
                                           3, 18446744073709551615u, 1,  555, 20};
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_TRUE((*e)->Send("r", seqs[i], 1000 + static_cast<std::int64_t>(i),
                           "{\"i\":" + std::to_string(i) + "}")
                    .ok());
    // Wait for the delivery report before the next Send.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((*e)->stats().delivered < i + 1 && std::chrono::steady_clock::now() < deadline) {
      (*e)->Poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ((*e)->stats().delivered, i + 1);
  }
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), seqs.size());
  for (const auto& m : msgs) {
    EXPECT_EQ(m.headers, 1u) << m.value;
    const std::size_t i = std::stoul(m.value.substr(5));
    ASSERT_LT(i, seqs.size());
    EXPECT_EQ(m.seq, std::to_string(seqs[i])) << m.value;
    EXPECT_EQ(m.ts, 1000 + static_cast<std::int64_t>(i));
  }
}

// The local queue is bounded (queue.buffering.max.messages, librdkafka's 100,000 by default): a
// Send into a full queue waits for deliveries instead of failing, and nothing is lost or reordered.
TEST_F(EmitterTest, SendIntoAFullLocalQueueWaitsForDeliveries) {
  EmitterOptions o = Options("q");
  o.kafka.properties = {{"queue.buffering.max.messages", "100"}};
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  constexpr int kMessages = 2000;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*e)->Send("q", static_cast<std::uint64_t>(i), 1000 + i,
                           "{\"i\":" + std::to_string(i) + "}")
                    .ok())
        << i;
  }
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  EXPECT_EQ((*e)->stats().delivered, static_cast<std::uint64_t>(kMessages));
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), static_cast<std::size_t>(kMessages));
  for (std::size_t i = 0; i < msgs.size(); ++i) {  // one key: one partition, in order
    EXPECT_EQ(msgs[i].seq, std::to_string(i));
    EXPECT_EQ(msgs[i].value, "{\"i\":" + std::to_string(i) + "}");
  }
}

TEST_F(EmitterTest, FlushTimesOutWhileTheBrokerIsDown) {
  auto e = Emitter::Open(Options("k"));
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(broker_->Execute("down 1"), "ok");
  ASSERT_TRUE((*e)->Inc("n", std::int64_t{1}).ok());
  Status s = (*e)->Flush(std::chrono::milliseconds(1500));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("still in flight"), std::string::npos) << s.ToString();
  ASSERT_EQ(broker_->Execute("up 1"), "ok");
  EXPECT_TRUE((*e)->Close(std::chrono::seconds(30)).ok());
  EXPECT_EQ(ConsumeAll(broker_->bootstraps(), "lattice.shards", 4).size(), 1u);
}

TEST_F(EmitterTest, LineEmitterKeepsEnvelopesAndSequencesBareBodies) {
  EmitterOptions o = Options("bare");
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok());
  LineEmitterOptions lo;
  lo.ts = 1234;
  LineEmitter lines(**e, lo);
  // Strings with quotes, braces and backslashes inside the shard; provenance fields ignored.
  const std::string env1 =
      R"({"blade":"b-1","seq":42,"ts":1732350000123,"shard":{"m":"a \"}\" {[\\","n":[{"x":1}]},"topic":"t","partition":3,"offset":9})";
  const std::string env2 = R"( { "ts" : 5 , "shard" : {"k":true} , "seq" : 0, "blade" : "b-2" } )";
  EXPECT_TRUE(lines.Add(env1, 1).ok());
  EXPECT_TRUE(lines.Add(env2, 2).ok());
  EXPECT_TRUE(lines.Add(R"({"plain":1})", 3).ok());
  Status bad = lines.Add(R"({"blade":"b-3","seq":1,"ts":1,"shard":[1]})", 4);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message().substr(0, 7), "line 4:") << bad.message();
  EXPECT_EQ(lines.Add("not json", 5).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(lines.Add(R"({"blade":"b-9","shard":{}})", 6).code() == StatusCode::kInvalidArgument)
      << "an envelope without seq and ts";
  EXPECT_EQ(lines.report().lines, 6u);
  EXPECT_EQ(lines.report().envelopes, 2u);
  EXPECT_EQ(lines.report().bodies, 1u);
  EXPECT_EQ(lines.report().invalid, 3u);
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());

  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 3u);
  std::map<std::string, Message> by_key;
  for (const auto& m : msgs) {
    by_key[m.key] = m;
  }
  EXPECT_EQ(by_key["b-1"].seq, "42");
  EXPECT_EQ(by_key["b-1"].ts, 1732350000123);
  EXPECT_EQ(by_key["b-1"].value, R"({"m":"a \"}\" {[\\","n":[{"x":1}]})");
  EXPECT_EQ(by_key["b-2"].seq, "0");
  EXPECT_EQ(by_key["b-2"].ts, 5);
  EXPECT_EQ(by_key["b-2"].value, R"({"k":true})");
  EXPECT_EQ(by_key["bare"].seq, "1");
  EXPECT_EQ(by_key["bare"].ts, 1234);
  EXPECT_EQ(by_key["bare"].value, R"({"plain":1})");
}

TEST_F(EmitterTest, LineEmitterRefusesBadEnvelopesWithTheDecodersReasonsAndSendsNothing) {
  auto e = Emitter::Open(Options("v"));
  ASSERT_TRUE(e.ok());
  LineEmitter lines(**e, {});
  core::ShardDecoder reference;
  const std::vector<std::string> bad = {
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":1,"a":2}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":{"$pow":2}}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":{"$inc":1,"b":2}}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"$inc":1}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":[1]})",
      R"({"blade":"b","seq":-1,"ts":2,"shard":{}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{"a":"\u00zz"}})",
      R"({"blade":"b","seq":1,"ts":2,"shard":{}} trailing)",
      "{\"blade\":\"b\",\"seq\":1,\"ts\":2,\"shard\":{\"a\":\"\xff\"}}",
  };
  std::uint64_t number = 0;
  for (const std::string& line : bad) {
    SCOPED_TRACE(line);
    auto expected = reference.DecodeEnvelope(line);
    ASSERT_FALSE(expected.ok());
    Status s = lines.Add(line, ++number);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "line " + std::to_string(number) + ": " + expected.status().message());
  }
  // Good envelopes around them, one in a shape the decoder's fastest walk hands on (escapes).
  const std::string escaped =
      R"({"blade":"b\u002d2","seq":7,"ts":8,"shard":{"k":"x\"y","f":1.5},"topic":"t"})";
  EXPECT_TRUE(lines.Add(escaped, ++number).ok());
  EXPECT_TRUE(
      lines.Add(R"({"blade":"b-3","seq":9,"ts":10,"shard":{"n":{"$inc":2}}})", ++number).ok());
  // Lines are classified alike whatever came before (LineEmitter checks envelopes first after
  // an envelope, scans first after a bare body): escaped "blade"/"shard" keys make a bare body.
  const std::string escaped_keys = R"({"bl\u0061de":"b-4","seq":1,"ts":2,"shard":{}})";
  EXPECT_TRUE(lines.Add(escaped_keys, ++number).ok());  // after an envelope
  EXPECT_TRUE(lines.Add(escaped_keys, ++number).ok());  // after a bare body
  for (const std::string& line : bad) {                 // after a bare body
    ++number;
    EXPECT_EQ(lines.Add(line, number).message(),
              "line " + std::to_string(number) + ": " +
                  reference.DecodeEnvelope(line).status().message());
  }
  EXPECT_TRUE(lines.Add(R"({"blade":"b-5","seq":3,"ts":4,"shard":{"q":1}})", ++number).ok());
  EXPECT_EQ(lines.report().invalid, 2 * bad.size());
  EXPECT_EQ(lines.report().envelopes, 3u);
  EXPECT_EQ(lines.report().bodies, 2u);
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  EXPECT_EQ((*e)->stats().queued, 5u);
  EXPECT_EQ((*e)->stats().delivered, 5u);
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 5u) << "nothing is sent for an invalid line";
  std::map<std::string, Message> by_key;
  for (const auto& m : msgs) {
    by_key[m.key] = m;
  }
  EXPECT_EQ(by_key["v"].value, escaped_keys);
  EXPECT_EQ(by_key["b-5"].value, R"({"q":1})");
  EXPECT_EQ(by_key["b-2"].value, R"({"k":"x\"y","f":1.5})");
  EXPECT_EQ(by_key["b-2"].seq, "7");
  EXPECT_EQ(by_key["b-2"].ts, 8);
  EXPECT_EQ(by_key["b-3"].value, R"({"n":{"$inc":2}})");
}

// The decoder measures the body of a line over 1 MiB without whitespace (docs/shard-format.md);
// the aggregator measures a message body as it is. So such a body is sent without whitespace, and
// a line whose body is still over 1 MiB that way (escapes the decoder measured unescaped) is
// refused with a reason, not sent for the aggregator to refuse.
TEST_F(EmitterTest, LineEmitterSendsLongBodiesWithoutWhitespaceOrRefusesThem) {
  EmitterOptions o = Options("long");
  o.kafka.properties = {{"message.max.bytes", "2000000"}};  // the producer would take 1.1 MB
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok());
  LineEmitter lines(**e, {});
  core::ShardDecoder reference;
  const std::size_t limit = reference.limits().max_body_bytes;
  const std::string spaced = R"({"blade":"b-1","seq":1,"ts":2,"shard":{ "a" : "k  \" z" ,)" +
                             std::string(limit + 20000, ' ') + " \t\"b\":[1, 2]}}";
  ASSERT_GT(spaced.size(), limit + 20000);
  ASSERT_TRUE(reference.DecodeEnvelope(spaced).ok());
  std::string escapes = R"({"blade":"b-2","seq":1,"ts":2,"shard":{"a":")";
  for (std::size_t i = 0; i < limit / 6 + 1000; ++i) {
    escapes.append("\\u0041");
  }
  escapes.append("\"}}");
  ASSERT_TRUE(reference.DecodeEnvelope(escapes).ok()) << "the decoder measures 'AAA...'";
  EXPECT_TRUE(lines.Add(spaced, 1).ok());
  Status refused = lines.Add(escapes, 2);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "line 2: shard body of " +
                                   std::to_string(6 * (limit / 6 + 1000) + 8) +
                                   " bytes without whitespace exceeds the limit of " +
                                   std::to_string(limit) + " bytes for a Kafka message body");
  EXPECT_TRUE(lines.Add(R"({"blade":"b-3","seq":1,"ts":2,"shard":{"c":3}})", 3).ok());
  EXPECT_EQ(lines.report().envelopes, 2u);
  EXPECT_EQ(lines.report().invalid, 1u);
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 2u);
  std::map<std::string, Message> by_key;
  for (const auto& m : msgs) {
    by_key[m.key] = m;
  }
  EXPECT_EQ(by_key["b-1"].value, R"({"a":"k  \" z","b":[1,2]})");
  EXPECT_TRUE(reference.DecodeBody(by_key["b-1"].value, "b-1", 1, 2).ok())
      << "what the aggregator decodes";
  EXPECT_EQ(by_key["b-3"].value, R"({"c":3})");
}

TEST_F(EmitterTest, LinesCheckedOnOneThreadAreSentInOrderOnAnother) {
  auto e = Emitter::Open(Options("w"));
  ASSERT_TRUE(e.ok());
  LineEmitter lines(**e, {});
  // Checked on a helper thread into a batch (copies: the lines may be gone when it is sent).
  CheckedLines batch;
  std::thread checker([&] {
    for (int i = 1; i <= 300; ++i) {
      const std::string line = i % 100 == 0 ? std::string("not json")
                               : i % 3 == 0
                                   ? R"({"body":)" + std::to_string(i) + "}"
                                   : R"({"blade":"b-)" + std::to_string(i % 2) + R"(","seq":)" +
                                         std::to_string(i) + R"(,"ts":7,"shard":{"i":)" +
                                         std::to_string(i) + "}}";
      lines.Check(line, static_cast<std::uint64_t>(i), /*padded=*/false, batch);
    }
    lines.CheckRefused(301, "line longer than 1 MiB + 64 KiB", batch);
  });
  checker.join();
  ASSERT_EQ(batch.size(), 301u);
  EXPECT_EQ(lines.report().lines, 0u) << "checking counts nothing";
  std::vector<std::string> errors;
  for (CheckedLines::Cursor at; !batch.Done(at);) {
    Status s = lines.SendChecked(batch, at);
    if (!s.ok()) {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
      errors.push_back(s.message().substr(0, s.message().find(':')));
    }
  }
  EXPECT_EQ(errors, (std::vector<std::string>{"line 100", "line 200", "line 300", "line 301"}));
  EXPECT_EQ(lines.report().lines, 301u);
  EXPECT_EQ(lines.report().invalid, 4u);
  EXPECT_EQ(lines.report().envelopes, 198u);
  EXPECT_EQ(lines.report().bodies, 99u);
  ASSERT_TRUE((*e)->Close(std::chrono::seconds(20)).ok());
  auto msgs = ConsumeAll(broker_->bootstraps(), "lattice.shards", 4);
  ASSERT_EQ(msgs.size(), 297u);
  std::map<std::string, std::vector<std::string>> values;  // per key, in partition order
  for (const auto& m : msgs) {
    values[m.key].push_back(m.value);
  }
  ASSERT_EQ(values["b-1"].size(), 100u);
  for (std::size_t k = 1; k < values["b-1"].size(); ++k) {
    EXPECT_LT(std::stoi(values["b-1"][k - 1].substr(5)), std::stoi(values["b-1"][k].substr(5)))
        << "a blade's shards keep their order";
  }
  EXPECT_EQ(values["w"].front(), R"({"body":3})");
}

TEST_F(EmitterTest, GroupedBatchesKeepEachBladesOrderAndOtherLinesInPlace) {
  // One partition: the topic's order is the order SendChecked sent in.
  auto e = OpenOnePartition();
  ASSERT_NE(e, nullptr);
  LineEmitter lines(*e, {});
  const auto env = EnvelopeLine;
  const std::vector<std::string> input = {
      env("a", 1), env("bb", 2),    env("a", 3),  env("c", 4),  env("bb", 5),
      env("a", 6), R"({"body":7})", env("bb", 8), env("a", 9),  env("bb", 10),
      "not json",  env("c", 12),    env("c", 13), env("a", 14), env("a", 15)};
  CheckedLines batch(/*group_by_blade=*/true);
  for (std::size_t i = 0; i < input.size(); ++i) {
    lines.Check(input[i], i + 1, /*padded=*/false, batch);
  }
  EXPECT_EQ(batch.size(), input.size());
  std::vector<std::string> errors;
  for (CheckedLines::Cursor at; !batch.Done(at);) {
    Status s = lines.SendChecked(batch, at);
    if (!s.ok()) {
      errors.push_back(s.message().substr(0, s.message().find(':')));
    }
  }
  EXPECT_EQ(errors, (std::vector<std::string>{"line 11"}));
  EXPECT_EQ(lines.report().envelopes, 13u);
  EXPECT_EQ(lines.report().bodies, 1u);
  ASSERT_TRUE(e->Close(std::chrono::seconds(20)).ok());
  std::vector<std::string> sent;  // key:seq, the body as key:body
  for (const auto& m : ConsumeAll(broker_->bootstraps(), "one", 1)) {
    sent.push_back(m.key + ":" + (m.key == "w" ? m.value : m.seq));
  }
  // Each run of envelopes between the body and the bad line goes blade by blade, in the order
  // each blade first appears; each blade's envelopes in line order.
  EXPECT_EQ(sent,
            (std::vector<std::string>{"a:1", "a:3", "a:6", "bb:2", "bb:5", "c:4", R"(w:{"body":7})",
                                      "bb:8", "bb:10", "a:9", "c:12", "c:13", "a:14", "a:15"}));
}

TEST_F(EmitterTest, StableLinesAreSentFromWhereTheyAreOrFromGroupingsCopy) {
  // `lattice emit -f` checks a mapped file's lines where they are (Check's `stable`): a batch
  // refers to them in line order; grouped, it copies them as they are checked. One partition: the
  // topic's order is the send order.
  auto e = OpenOnePartition();
  ASSERT_NE(e, nullptr);
  LineEmitter lines(*e, {});
  const auto env = EnvelopeLine;
  const std::vector<std::string> input = {
      env("a", 1), env("b", 2),
      env("a", 3), R"({"blade":"\u0061","seq":4,"ts":7,"shard":{"n":4}})",
      env("b", 5), R"({"body":6})",
      "not json",  env("b", 8),
      env("a", 9)};
  // The lines in one buffer, each followed by its newline (as in a file).
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> at;
  for (const auto& line : input) {
    at.emplace_back(text.size(), line.size());
    text.append(line).push_back('\n');
  }
  auto check = [&](CheckedLines& batch) {
    for (std::size_t i = 0; i < input.size(); ++i) {
      const bool padded = text.size() - (at[i].first + at[i].second) >= 64;
      lines.Check(std::string_view(text).substr(at[i].first, at[i].second), i + 1, padded, batch,
                  /*stable=*/true);
    }
  };
  // In line order: sent from the buffer.
  CheckedLines in_order;
  check(in_order);
  // Blades and bodies (7 x 8 bytes), the bare body (10) and the reason: also what is referred to.
  EXPECT_GT(in_order.bytes(), 7u * 8u + 10u);
  for (CheckedLines::Cursor c; !in_order.Done(c);) {
    (void)lines.SendChecked(in_order, c);
  }
  // Grouped: the lines are copied as they are checked, so the buffer may change before they are
  // sent.
  CheckedLines grouped(/*group_by_blade=*/true);
  check(grouped);
  std::fill(text.begin(), text.end(), 'x');
  std::vector<std::string> errors;
  for (CheckedLines::Cursor c; !grouped.Done(c);) {
    Status s = lines.SendChecked(grouped, c);
    if (!s.ok()) {
      errors.push_back(s.message().substr(0, s.message().find(':')));
    }
  }
  EXPECT_EQ(errors, (std::vector<std::string>{"line 7"}));
  EXPECT_EQ(lines.report().envelopes, 14u);
  EXPECT_EQ(lines.report().bodies, 2u);
  ASSERT_TRUE(e->Close(std::chrono::seconds(20)).ok());
  std::vector<std::string> sent;  // key:seq:value
  for (const auto& m : ConsumeAll(broker_->bootstraps(), "one", 1)) {
    sent.push_back(m.key + ":" + (m.key == "w" ? "" : m.seq) + ":" + m.value);
  }
  const std::vector<std::string> first = {"a:1:{\"n\":1}", "b:2:{\"n\":2}", "a:3:{\"n\":3}",
                                          "a:4:{\"n\":4}", "b:5:{\"n\":5}", "w::{\"body\":6}",
                                          "b:8:{\"n\":8}", "a:9:{\"n\":9}"};
  const std::vector<std::string> second = {"a:1:{\"n\":1}", "a:3:{\"n\":3}", "a:4:{\"n\":4}",
                                           "b:2:{\"n\":2}", "b:5:{\"n\":5}", "w::{\"body\":6}",
                                           "b:8:{\"n\":8}", "a:9:{\"n\":9}"};
  std::vector<std::string> want = first;
  want.insert(want.end(), second.begin(), second.end());
  EXPECT_EQ(sent, want);
}

TEST_F(EmitterTest, GroupingManyBladesKeepsEachBladesOrder) {
  auto e = OpenOnePartition();
  ASSERT_NE(e, nullptr);
  LineEmitter lines(*e, {});
  // Two batches (the second reuses the first's memory) of 700 lines over 250 blades of
  // different lengths, some sharing a prefix.
  std::uint64_t x = 12345;
  CheckedLines batch(/*group_by_blade=*/true);
  int seq = 0;
  std::vector<std::string> expected_order;
  for (int b = 0; b < 2; ++b) {
    batch.Clear();
    std::vector<std::string> seen;
    std::map<std::string, std::vector<int>> per;
    for (int i = 0; i < 700; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const std::string blade =
          "blade-" + std::string((x >> 60) % 3, 'x') + std::to_string((x >> 33) % 250);
      ++seq;
      if (per[blade].empty()) {
        seen.push_back(blade);
      }
      per[blade].push_back(seq);
      lines.Check(R"({"blade":")" + blade + R"(","seq":)" + std::to_string(seq) +
                      R"(,"ts":7,"shard":{"n":1}})",
                  static_cast<std::uint64_t>(seq), /*padded=*/false, batch);
    }
    ASSERT_EQ(batch.size(), 700u);
    for (CheckedLines::Cursor at; !batch.Done(at);) {
      ASSERT_TRUE(lines.SendChecked(batch, at).ok());
    }
    for (const auto& blade : seen) {
      for (int s : per[blade]) {
        expected_order.push_back(blade + ":" + std::to_string(s));
      }
    }
  }
  ASSERT_TRUE(e->Close(std::chrono::seconds(20)).ok());
  std::vector<std::string> sent;
  for (const auto& m : ConsumeAll(broker_->bootstraps(), "one", 1)) {
    sent.push_back(m.key + ":" + m.seq);
  }
  EXPECT_EQ(sent, expected_order);
}

TEST_F(EmitterTest, LineEmitterWithoutBladeExplainsBareBodies) {
  EmitterOptions o = Options("x");
  o.blade.clear();
  o.seq_file.clear();
  auto e = Emitter::Open(o);
  ASSERT_TRUE(e.ok());
  LineEmitter lines(**e, {});
  Status s = lines.Add(R"({"a":1})", 7);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("line 7"), std::string::npos);
  EXPECT_NE(s.message().find("--blade"), std::string::npos) << s.message();
  LineEmitterOptions bodies;
  bodies.bodies_only = true;
  LineEmitter as_bodies(**e, bodies);
  EXPECT_EQ(as_bodies.Add(R"({"blade":"b","seq":1,"ts":1,"shard":{}})", 1).code(),
            StatusCode::kInvalidArgument)
      << "--bodies: an envelope-looking line is a body, and needs --blade";
}

}  // namespace
}  // namespace lattice::ingest
