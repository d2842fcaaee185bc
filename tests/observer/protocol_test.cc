// Tests of the /v1/stream protocol against the golden messages shared with the JS tests
// (tests/data/observer/golden/, docs/observer-protocol.md): the parser, the encoders and the
// per-connection state machine (periodic / manual / live, batching, overflow, resync).
#include "lattice/observer/protocol.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lattice/core/path.h"

namespace lattice::observer {
namespace {

using nlohmann::json;

std::string ReadFile(const std::string& name) {
  std::ifstream in(std::string(LATTICE_TEST_DATA) + "/observer/golden/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json Golden(const std::string& name) { return json::parse(ReadFile(name)); }

// Builds strings with append (g++ 12's -Wrestrict misfires on chained operator+).
std::string Cat(std::string_view a, std::string_view b, std::string_view c = "") {
  std::string s(a);
  s.append(b);
  s.append(c);
  return s;
}

crdt::Change MakeChange(const std::string& path, std::optional<std::string> old_json,
                        std::optional<std::string> new_json, const std::string& blade,
                        std::uint64_t seq, std::int64_t ts, crdt::ChangeCause cause) {
  crdt::Change c;
  c.path = path;
  c.old_json = std::move(old_json);
  c.new_json = std::move(new_json);
  c.blade = blade;
  c.seq = seq;
  c.ts = ts;
  c.cause = cause;
  return c;
}

std::vector<crdt::Change> GoldenChanges() {
  return {MakeChange("nodes.w1.status", "\"waiting\"", "\"working\"", "w1", 42, 1732350000123,
                     crdt::ChangeCause::kSet),
          MakeChange("scrape.a.item_collected", "5119", "5120", "scraper-1", 7, 1732350000200,
                     crdt::ChangeCause::kCounter),
          MakeChange("jobs.3", R"({"status":"done"})", std::nullopt, "cleaner", 1, 1732350000300,
                     crdt::ChangeCause::kErase)};
}

TEST(ProtocolGolden, ClientMessagesParse) {
  auto p = ParseClientMessage(ReadFile("update_request_periodic.json"));
  ASSERT_TRUE(p.message) << p.error->message;
  EXPECT_EQ(p.message->type, ClientMessage::Type::kUpdateRequest);
  EXPECT_EQ(p.message->update_type, "periodic");
  p = ParseClientMessage(ReadFile("update_request_manual.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->update_type, "manual");
  p = ParseClientMessage(ReadFile("set_mode_periodic.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->mode, Mode::kPeriodic);
  EXPECT_EQ(p.message->interval_ms, std::optional<std::int64_t>(2000));
  p = ParseClientMessage(ReadFile("set_mode_live.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->mode, Mode::kLive);
  EXPECT_EQ(p.message->interval_ms, std::nullopt);
  p = ParseClientMessage(ReadFile("set_mode_manual.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->mode, Mode::kManual);
  p = ParseClientMessage(ReadFile("subscribe.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->prefixes, (std::vector<std::string>{"nodes", "jobs"}));
  p = ParseClientMessage(ReadFile("ping.json"));
  ASSERT_TRUE(p.message);
  EXPECT_EQ(p.message->t_json, "12345");
}

TEST(ProtocolGolden, BadClientMessagesGetTheirReason) {
  for (const char* name :
       {"bad_not_json.txt", "bad_array.txt", "bad_no_type.txt", "bad_type_not_string.txt",
        "bad_payload_not_object.txt", "bad_unknown_type.txt", "bad_update_type.txt", "bad_mode.txt",
        "bad_interval.txt", "bad_prefixes.txt", "bad_prefix_path.txt"}) {
    const std::string text = ReadFile(name);
    const std::size_t nl = text.find('\n');
    const std::string reason = text.substr(0, nl);
    std::string frame = text.substr(nl + 1);
    while (!frame.empty() && frame.back() == '\n') {
      frame.pop_back();
    }
    auto p = ParseClientMessage(frame);
    ASSERT_TRUE(p.error) << name;
    EXPECT_EQ(p.error->reason, reason) << name << ": " << p.error->message;
    EXPECT_FALSE(p.error->message.empty());
  }
}

TEST(ProtocolGolden, ServerMessagesEncodeExactly) {
  EXPECT_EQ(json::parse(EncodeHello(Mode::kPeriodic, 1000, true)), Golden("hello.json"));
  EXPECT_EQ(json::parse(EncodeMode(Mode::kLive, 1000, {})), Golden("mode_live.json"));
  EXPECT_EQ(json::parse(EncodePong("12345", 1732350000456)), Golden("pong.json"));
  StatusChange sc{"w3", "working", "dead", 1732350000000};
  EXPECT_EQ(json::parse(EncodeStatusChange(sc)), Golden("worker_node_status_change.json"));
  auto changes = GoldenChanges();
  std::vector<const crdt::Change*> ptrs;
  for (auto& c : changes) {
    ptrs.push_back(&c);
  }
  const std::string changes_msg = EncodeChanges(1240, 1732350000456, ptrs);
  EXPECT_EQ(json::parse(changes_msg), Golden("changes.json"));
  const json summary = Golden("summary.json")["payload"]["summary"];
  const std::string summary_text = summary.dump();
  EXPECT_EQ(json::parse(EncodeSummary(1, summary_text)), Golden("summary.json"));
  EXPECT_EQ(json::parse(EncodeSnapshot("connect", 1, summary_text)), Golden("snapshot.json"));
  const std::string status_msg = EncodeStatusChange(sc);
  const std::string summary_msg = EncodeSummary(1, summary_text);
  EXPECT_EQ(json::parse(EncodeBatch("periodic", 1, {status_msg, changes_msg, summary_msg})),
            Golden("batched_update_response.json"));
  for (const char* name : {"error_unknown_type.json", "error_malformed.json",
                           "error_not_in_live_mode.json", "error_bad_payload.json"}) {
    const json g = Golden(name);
    EXPECT_EQ(json::parse(EncodeError(g["payload"]["reason"].get<std::string>(),
                                      g["payload"]["message"].get<std::string>())),
              g);
  }
}

TEST(ProtocolGolden, TheServersErrorsAreTheGoldenOnes) {
  Feed feed;
  StreamProtocol proto(feed, true);
  proto.OnConnect();
  std::string type, reason;
  auto send = [&](const std::string& text) {
    auto out = proto.OnText(text, 1000, type, reason);
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? json() : json::parse(*out[0]);
  };
  EXPECT_EQ(send(R"({"type":"fly","payload":{}})"), Golden("error_unknown_type.json"));
  EXPECT_EQ(type, "unknown");
  EXPECT_EQ(send("{\"type\":"), Golden("error_malformed.json"));
  EXPECT_EQ(type, "malformed");
  EXPECT_EQ(send(R"({"type":"update_request","payload":{"update_type":"sometimes"}})"),
            Golden("error_bad_payload.json"));
  EXPECT_EQ(proto.OnText(ReadFile("set_mode_live.json"), 1000, type, reason).size(), 2u)
      << "the pending batch, then the mode";
  EXPECT_EQ(send(ReadFile("update_request_periodic.json")), Golden("error_not_in_live_mode.json"));
  EXPECT_EQ(reason, "not_in_live_mode");
}

class StreamProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override { feed_.SetSummary(std::make_shared<const std::string>(R"({"s":1})"), 1); }

  void Publish(std::vector<crdt::Change> changes, std::vector<StatusChange> status = {},
               bool resync = false) {
    auto t = std::make_shared<Tick>();
    t->seq = ++seq_;
    t->commit = 100 + seq_;
    t->observed_at = 5000 + static_cast<std::int64_t>(seq_);
    t->resync = resync;
    t->changes = std::move(changes);
    t->status_changes = std::move(status);
    std::vector<const crdt::Change*> ptrs;
    for (auto& c : t->changes) {
      ptrs.push_back(&c);
    }
    if (!ptrs.empty()) {
      t->changes_message =
          std::make_shared<const std::string>(EncodeChanges(t->commit, t->observed_at, ptrs));
    }
    for (auto& sc : t->status_changes) {
      t->status_messages.push_back(std::make_shared<const std::string>(EncodeStatusChange(sc)));
    }
    t->summary_message = std::make_shared<const std::string>(EncodeSummary(t->commit, "{}"));
    feed_.SetSummary(
        std::make_shared<const std::string>(Cat(R"({"s":)", std::to_string(seq_ + 1), "}")),
        t->commit);
    last_ = t;
    feed_.Publish(t);
  }

  std::vector<json> Send(StreamProtocol& p, const std::string& text) {
    std::string type, reason;
    std::vector<json> out;
    for (auto& m : p.OnText(text, now_, type, reason)) {
      out.push_back(json::parse(*m));
    }
    return out;
  }

  Feed feed_{1000};
  std::uint64_t seq_ = 0;
  std::int64_t now_ = 1'000'000;
  std::shared_ptr<Tick> last_;
};

TEST_F(StreamProtocolTest, ConnectSendsHelloThenASnapshot) {
  StreamProtocol p(feed_, true);
  auto out = p.OnConnect();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(json::parse(*out[0])["type"], "hello");
  const json snap = json::parse(*out[1]);
  EXPECT_EQ(snap["type"], "snapshot");
  EXPECT_EQ(snap["payload"]["reason"], "connect");
  EXPECT_EQ(snap["payload"]["summary"], json::parse(R"({"s":1})"));
  EXPECT_EQ(p.mode(), Mode::kPeriodic);
}

TEST_F(StreamProtocolTest, PeriodicBatchesEverythingSinceTheLastResponseCoalescedPerPath) {
  Publish({MakeChange("a", std::nullopt, "1", "b", 1, 10, crdt::ChangeCause::kSet)});  // before
  StreamProtocol p(feed_, true);
  p.OnConnect();
  Publish({MakeChange("x", "0", "1", "b", 2, 20, crdt::ChangeCause::kSet),
           MakeChange("y", std::nullopt, "5", "b", 3, 21, crdt::ChangeCause::kCounter)},
          {StatusChange{"w1", "waiting", "working", 20}});
  EXPECT_TRUE(p.OnTick(*last_).empty()) << "periodic clients pull; nothing is pushed";
  Publish({MakeChange("x", "1", "2", "c", 9, 30, crdt::ChangeCause::kSet)},
          {StatusChange{"w1", "working", "dead", 31}});
  auto out = Send(p, R"({"type":"update_request","payload":{"update_type":"periodic"}})");
  ASSERT_EQ(out.size(), 1u);
  const json& b = out[0];
  EXPECT_EQ(b["type"], "batched_update_response");
  EXPECT_EQ(b["payload"]["update_type"], "periodic");
  const json& msgs = b["payload"]["messages"];
  ASSERT_EQ(msgs.size(), 4u);  // two status changes, one changes, one summary
  EXPECT_EQ(msgs[0]["payload"]["newStatus"], "working");
  EXPECT_EQ(msgs[1]["payload"]["newStatus"], "dead");
  EXPECT_EQ(msgs[2]["type"], "changes");
  const json& ch = msgs[2]["payload"]["changes"];
  ASSERT_EQ(ch.size(), 2u) << "a (before connect) is not included; x is coalesced";
  EXPECT_EQ(ch[0]["path"], "x");
  EXPECT_EQ(ch[0]["old"], 0) << "first old";
  EXPECT_EQ(ch[0]["new"], 2) << "last new";
  EXPECT_EQ(ch[0]["stamp"]["blade"], "c");
  EXPECT_EQ(ch[0]["stamp"]["ts"], 30);
  EXPECT_EQ(ch[1]["path"], "y");
  EXPECT_EQ(msgs[3]["type"], "summary");
  EXPECT_EQ(msgs[3]["payload"]["summary"], json::parse(R"({"s":4})")) << "the latest summary";

  // Nothing new: the next response holds only the summary; a manual request is answered alike.
  out = Send(p, R"({"type":"update_request","payload":{"update_type":"manual"}})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["payload"]["update_type"], "manual");
  ASSERT_EQ(out[0]["payload"]["messages"].size(), 1u);
  EXPECT_EQ(out[0]["payload"]["messages"][0]["type"], "summary");
}

TEST_F(StreamProtocolTest, LivePushesAndRefusesUpdateRequestsAndFlushesOnSwitch) {
  StreamProtocol p(feed_, true);
  p.OnConnect();
  Publish({MakeChange("x", std::nullopt, "1", "b", 1, 10, crdt::ChangeCause::kSet)});
  auto out = Send(p, R"({"type":"set_mode","payload":{"mode":"live"}})");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["type"], "batched_update_response");
  EXPECT_EQ(out[0]["payload"]["update_type"], "mode_change");
  EXPECT_EQ(out[0]["payload"]["messages"][0]["payload"]["changes"][0]["path"], "x");
  EXPECT_EQ(out[1]["type"], "mode");
  EXPECT_EQ(out[1]["payload"]["mode"], "live");
  Publish({MakeChange("z", std::nullopt, "3", "b", 2, 20, crdt::ChangeCause::kSet)},
          {StatusChange{"w2", std::nullopt, "waiting", 20}});
  auto pushed = p.OnTick(*last_);
  ASSERT_EQ(pushed.size(), 3u);
  EXPECT_EQ(json::parse(*pushed[0])["type"], "worker_node_status_change");
  EXPECT_EQ(pushed[1], last_->changes_message) << "unfiltered clients share the encoded buffer";
  EXPECT_EQ(json::parse(*pushed[2])["type"], "summary");
  out = Send(p, R"({"type":"update_request","payload":{"update_type":"manual"}})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["payload"]["reason"], "not_in_live_mode");
  // Back to periodic: the batch starts now, nothing pushed in live is repeated.
  Send(p, R"({"type":"set_mode","payload":{"mode":"periodic","interval_ms":500}})");
  EXPECT_EQ(p.interval_ms(), 500);
  out = Send(p, R"({"type":"update_request","payload":{"update_type":"periodic"}})");
  ASSERT_EQ(out[0]["payload"]["messages"].size(), 1u);
}

TEST_F(StreamProtocolTest, SubscriptionFiltersChanges) {
  StreamProtocol p(feed_, true);
  p.OnConnect();
  auto out = Send(p, R"({"type":"subscribe","payload":{"prefixes":["nodes","a\\.b"]}})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["payload"]["prefixes"], json::parse(R"(["nodes","a\\.b"])"));
  Send(p, R"({"type":"set_mode","payload":{"mode":"live"}})");
  Publish({MakeChange("nodes.w1.status", std::nullopt, "1", "b", 1, 10, crdt::ChangeCause::kSet),
           MakeChange("nodesx", std::nullopt, "1", "b", 2, 10, crdt::ChangeCause::kSet),
           MakeChange("a\\.b.c", std::nullopt, "1", "b", 3, 10, crdt::ChangeCause::kSet),
           MakeChange("a.b.c", std::nullopt, "1", "b", 4, 10, crdt::ChangeCause::kSet)});
  auto pushed = p.OnTick(*last_);
  ASSERT_EQ(pushed.size(), 2u);
  const json ch = json::parse(*pushed[0])["payload"]["changes"];
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0]["path"], "nodes.w1.status");
  EXPECT_EQ(ch[1]["path"], "a\\.b.c");
}

TEST_F(StreamProtocolTest, SubscriptionToTheTopLevelEmptyKeyGetsItsSubtree) {
  StreamProtocol p(feed_, true);
  p.OnConnect();
  Send(p, R"({"type":"subscribe","payload":{"prefixes":["\\e"]}})");
  Send(p, R"({"type":"set_mode","payload":{"mode":"live"}})");
  // core::Path writes [""] as `\e` and ["", "x"] as `.x`.
  ASSERT_EQ(core::Path({""}).ToString(), "\\e");
  ASSERT_EQ(core::Path({"", "x"}).ToString(), ".x");
  Publish({MakeChange("\\e", std::nullopt, "1", "b", 1, 10, crdt::ChangeCause::kSet),
           MakeChange(".x", std::nullopt, "1", "b", 2, 10, crdt::ChangeCause::kSet),
           MakeChange("e", std::nullopt, "1", "b", 3, 10, crdt::ChangeCause::kSet),
           MakeChange("x..y", std::nullopt, "1", "b", 4, 10, crdt::ChangeCause::kSet)});
  auto pushed = p.OnTick(*last_);
  ASSERT_EQ(pushed.size(), 2u);
  const json ch = json::parse(*pushed[0])["payload"]["changes"];
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0]["path"], "\\e");
  EXPECT_EQ(ch[1]["path"], ".x");
}

TEST_F(StreamProtocolTest, ClientsWithTheSameSubscriptionShareOneEncoding) {
  StreamProtocol a(feed_, true), b(feed_, true), c(feed_, true);
  for (StreamProtocol* p : {&a, &b, &c}) {
    p->OnConnect();
    Send(*p, R"({"type":"set_mode","payload":{"mode":"live"}})");
  }
  Send(a, R"({"type":"subscribe","payload":{"prefixes":["nodes"]}})");
  Send(b, R"({"type":"subscribe","payload":{"prefixes":["nodes"]}})");
  Send(c, R"({"type":"subscribe","payload":{"prefixes":["jobs"]}})");
  Publish({MakeChange("nodes.w1.status", std::nullopt, "1", "b", 1, 10, crdt::ChangeCause::kSet),
           MakeChange("jobs.7.status", std::nullopt, "2", "b", 2, 10, crdt::ChangeCause::kSet),
           MakeChange("other", std::nullopt, "3", "b", 3, 10, crdt::ChangeCause::kSet)});
  auto pa = a.OnTick(*last_), pb = b.OnTick(*last_), pc = c.OnTick(*last_);
  ASSERT_EQ(pa.size(), 2u);
  ASSERT_EQ(pb.size(), 2u);
  ASSERT_EQ(pc.size(), 2u);
  EXPECT_EQ(pa[0], pb[0]) << "the same subscription gets the same buffer";
  EXPECT_NE(pa[0], pc[0]);
  const json na = json::parse(*pa[0])["payload"]["changes"];
  ASSERT_EQ(na.size(), 1u);
  EXPECT_EQ(na[0]["path"], "nodes.w1.status");
  const json nc = json::parse(*pc[0])["payload"]["changes"];
  ASSERT_EQ(nc.size(), 1u);
  EXPECT_EQ(nc[0]["path"], "jobs.7.status");
  // A subscription nothing matched gets no `changes` message at all, only the summary.
  StreamProtocol d(feed_, true);
  d.OnConnect();
  Send(d, R"({"type":"set_mode","payload":{"mode":"live"}})");
  Send(d, R"({"type":"subscribe","payload":{"prefixes":["checks"]}})");
  auto pd = d.OnTick(*last_);
  ASSERT_EQ(pd.size(), 1u);
  EXPECT_EQ(json::parse(*pd[0])["type"], "summary");
}

TEST_F(StreamProtocolTest, AClientBehindTheFeedGetsASnapshotAndAResyncIsASnapshot) {
  StreamProtocol p(feed_, true);
  p.OnConnect();
  for (int i = 0; i < 30; ++i) {  // 30 x 50 changes > the feed's 1000
    std::vector<crdt::Change> cs;
    for (int j = 0; j < 50; ++j) {
      cs.push_back(MakeChange(Cat("k", std::to_string(j)), std::nullopt, "1", "b", 1, 1,
                              crdt::ChangeCause::kSet));
    }
    Publish(std::move(cs));
  }
  auto out = Send(p, R"({"type":"update_request","payload":{"update_type":"periodic"}})");
  ASSERT_EQ(out[0]["payload"]["messages"].size(), 1u);
  EXPECT_EQ(out[0]["payload"]["messages"][0]["type"], "snapshot");
  EXPECT_EQ(out[0]["payload"]["messages"][0]["payload"]["reason"], "overflow");
  Publish({}, {}, /*resync=*/true);
  out = Send(p, R"({"type":"update_request","payload":{"update_type":"periodic"}})");
  EXPECT_EQ(out[0]["payload"]["messages"][0]["payload"]["reason"], "resync");
  Send(p, R"({"type":"set_mode","payload":{"mode":"live"}})");
  Publish({}, {}, /*resync=*/true);
  auto pushed = p.OnTick(*last_);
  ASSERT_EQ(pushed.size(), 1u);
  EXPECT_EQ(json::parse(*pushed[0])["payload"]["reason"], "resync");
}

TEST_F(StreamProtocolTest, TooManyPathsInOneBatchIsAnOverflow) {
  Feed big(1'000'000);
  big.SetSummary(std::make_shared<const std::string>("{}"), 1);
  StreamProtocol p(big, true);
  p.OnConnect();
  auto t = std::make_shared<Tick>();
  t->seq = 1;
  for (std::size_t i = 0; i <= kMaxBatchPaths; ++i) {
    t->changes.push_back(MakeChange(Cat("k", std::to_string(i)), std::nullopt, "1", "b", 1, 1,
                                    crdt::ChangeCause::kSet));
  }
  big.Publish(t);
  std::string type, reason;
  auto out = p.OnText(R"({"type":"update_request","payload":{"update_type":"periodic"}})", 0, type,
                      reason);
  const json b = json::parse(*out[0]);
  EXPECT_EQ(b["payload"]["messages"][0]["payload"]["reason"], "overflow");
}

TEST_F(StreamProtocolTest, MoreThanAHundredMessagesASecondAreDropped) {
  StreamProtocol p(feed_, true);
  p.OnConnect();
  int answered = 0, limited = 0;
  for (int i = 0; i < 150; ++i) {
    std::string type, reason;
    auto out = p.OnText(R"({"type":"ping","payload":{}})", now_, type, reason);
    if (reason == "rate_limited") {
      ++limited;
    } else {
      answered += static_cast<int>(out.size());
    }
  }
  EXPECT_EQ(answered, kMaxClientMessagesPerSecond);
  EXPECT_EQ(limited, 1) << "one error, then silence";
  now_ += 1000;
  std::string type, reason;
  EXPECT_EQ(p.OnText(R"({"type":"ping","payload":{}})", now_, type, reason).size(), 1u);
}

}  // namespace
}  // namespace lattice::observer
