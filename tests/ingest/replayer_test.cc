// Tests of ingest::Replay through its public API: the k-way merge of several recordings by ts,
// resumption from committed positions, strict mode, and the dead-letter file's records.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../envelope.h"
#include "lattice/crdt/state_store.h"
#include "lattice/ingest/replayer.h"
#include "lattice/ingest/synthetic.h"

namespace lattice::ingest {
namespace {

std::vector<std::string> Synthetic(std::uint64_t shards, std::uint32_t blades, std::uint64_t seed) {
  SyntheticOptions options;
  options.shards = shards;
  options.blades = blades;
  options.seed = seed;
  std::vector<std::string> lines;
  GenerateSynthetic(options, [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

std::string BladeOf(const std::string& line) {
  const nlohmann::json j = nlohmann::json::parse(line);
  return j.at("blade").get<std::string>();
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

class ReplayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "lattice_replayer_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string PathOf(const std::string& name) const { return (dir_ / name).string(); }

  std::string Write(const std::string& name, const std::vector<std::string>& lines,
                    bool append = false) {
    const std::string path = PathOf(name);
    std::ofstream out(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
    for (const std::string& line : lines) {
      out << line << '\n';
    }
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::unique_ptr<crdt::StateStore> Open(const std::string& name,
                                         std::int64_t allowed_lateness_ms = 5 * 60 * 1000) {
    crdt::StoreOptions options;
    options.engine.allowed_lateness_ms = allowed_lateness_ms;
    auto store = crdt::StateStore::Open(PathOf(name), options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  ReplayOptions Options(std::vector<std::string> files, std::size_t batch = 1 << 16) const {
    ReplayOptions options;
    options.files = std::move(files);
    options.dead_letter_path = PathOf("dead-letter.ndjson");
    options.batch_shards = batch;
    return options;
  }

  // Replays `files` into a fresh store and returns its dump.
  std::string ReplayFresh(const std::string& name, const std::vector<std::string>& files) {
    auto store = Open(name);
    if (store == nullptr) {
      return "";
    }
    auto report = Replay(*store, Options(files));
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return store->Dump();
  }

  std::filesystem::path dir_;
};

TEST_F(ReplayerTest, SeveralFilesMergeLikeOneFile) {
  const std::vector<std::string> lines = Synthetic(20000, 8, 3);
  // One recording per blade, as `lattice record` would write per partition.
  std::map<std::string, std::vector<std::string>> by_blade;
  for (const std::string& line : lines) {
    by_blade[BladeOf(line)].push_back(line);
  }
  ASSERT_EQ(by_blade.size(), 8u);
  std::vector<std::string> files;
  for (const auto& [blade, blade_lines] : by_blade) {
    files.push_back(Write(blade + ".ndjson", blade_lines));
  }
  const std::string one = Write("all.ndjson", lines);

  // No allowed lateness and a commit (watermark advance) every 100 shards: reading the files one
  // after the other would make most shards late; a k-way merge by ts makes none late.
  auto store = Open("multi", /*allowed_lateness_ms=*/0);
  ASSERT_NE(store, nullptr);
  auto report = Replay(*store, Options(files, /*batch=*/100));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->lines, lines.size());
  EXPECT_EQ(report->applied, lines.size());
  EXPECT_EQ(report->late, 0u);
  EXPECT_EQ(report->rejected(), 0u);

  auto single = Open("single", /*allowed_lateness_ms=*/0);
  ASSERT_NE(single, nullptr);
  auto single_report = Replay(*single, Options({one}, /*batch=*/100));
  ASSERT_TRUE(single_report.ok()) << single_report.status().ToString();
  EXPECT_EQ(single_report->applied, lines.size());
  EXPECT_EQ(store->Dump(), single->Dump());
}

TEST_F(ReplayerTest, SeveralFilesInterleaveByTs) {
  // Dead letters are written in processing order: the conflict at ts 30 (file b) must come
  // before the one at ts 40 (file a) although file a is listed first.
  const std::string a = Write("a.ndjson", {Env("a", 1, 10, R"({"x":1})"),
                                           Env("a", 1, 40, R"({"x":2})")});
  const std::string b = Write("b.ndjson", {Env("b", 1, 20, R"({"y":1})"),
                                           Env("b", 1, 30, R"({"y":2})")});
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  auto report = Replay(*store, Options({a, b}));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->applied, 2u);
  EXPECT_EQ(report->conflicts, 2u);
  const std::vector<std::string> letters = ReadLines(PathOf("dead-letter.ndjson"));
  ASSERT_EQ(letters.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(letters[0]).at("source"), SourceId(b));
  EXPECT_EQ(nlohmann::json::parse(letters[1]).at("source"), SourceId(a));
  EXPECT_EQ(store->Dump(), "{\"x\":1,\"y\":1}\n");
}

TEST_F(ReplayerTest, SecondReplayReadsNothing) {
  const std::string file = Write("rec.ndjson", Synthetic(3000, 4, 5));
  {
    auto store = Open("state");
    ASSERT_NE(store, nullptr);
    auto first = Replay(*store, Options({file}, /*batch=*/700));
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_EQ(first->lines, 3000u);
    EXPECT_EQ(first->applied, 3000u);
    auto pos = store->Position(SourceId(file));
    ASSERT_TRUE(pos.has_value());
    EXPECT_EQ(pos->line, 3000u);
    EXPECT_EQ(pos->offset, std::filesystem::file_size(file));

    auto second = Replay(*store, Options({file}));
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    EXPECT_EQ(second->lines, 0u);
    EXPECT_EQ(second->applied, 0u);
  }
  // And after reopening the directory.
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  auto third = Replay(*store, Options({file}));
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->lines, 0u);
  EXPECT_EQ(third->duplicates, 0u);
}

TEST_F(ReplayerTest, AppendedLinesAreTheOnlyOnesRead) {
  const std::vector<std::string> lines = Synthetic(2000, 4, 6);
  const std::vector<std::string> head(lines.begin(), lines.begin() + 1200);
  const std::vector<std::string> tail(lines.begin() + 1200, lines.end());
  const std::string file = Write("rec.ndjson", head);
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  auto first = Replay(*store, Options({file}));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->lines, 1200u);
  Write("rec.ndjson", tail, /*append=*/true);
  auto second = Replay(*store, Options({file}));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->lines, 800u);
  EXPECT_EQ(second->applied, 800u);
  EXPECT_EQ(second->duplicates, 0u);
  EXPECT_EQ(store->Dump(), ReplayFresh("whole", {Write("whole.ndjson", lines)}));
}

TEST_F(ReplayerTest, FileShorterThanItsPositionIsAnError) {
  const std::vector<std::string> lines = Synthetic(100, 2, 7);
  const std::string file = Write("rec.ndjson", lines);
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(Replay(*store, Options({file})).ok());
  Write("rec.ndjson", std::vector<std::string>(lines.begin(), lines.begin() + 10));
  auto again = Replay(*store, Options({file}));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument) << again.status().ToString();

  auto missing = Replay(*store, Options({PathOf("no-such-file.ndjson")}));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
}

TEST_F(ReplayerTest, StrictStopsAtTheFirstBadLineAndCommitsWhatCameBefore) {
  std::vector<std::string> lines = Synthetic(60, 3, 8);
  std::vector<std::string> good(lines.begin(), lines.begin() + 50);
  lines.insert(lines.begin() + 50, R"({"blade":"z","seq":1,"ts":1732350000049,"shard":[]})");
  const std::string file = Write("rec.ndjson", lines);
  {
    auto store = Open("state");
    ASSERT_NE(store, nullptr);
    ReplayOptions options = Options({file}, /*batch=*/7);
    options.strict = true;
    auto report = Replay(*store, options);
    ASSERT_FALSE(report.ok());
    EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(report.status().message().find(":51:"), std::string::npos)
        << report.status().message();
    auto pos = store->Position(SourceId(file));
    ASSERT_TRUE(pos.has_value());
    EXPECT_EQ(pos->line, 50u);
  }
  // Everything before the bad line is durable: a reopened store holds exactly the 50 good lines.
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Dump(), ReplayFresh("good", {Write("good.ndjson", good)}));
  // A lenient rerun resumes at the bad line.
  auto rest = Replay(*store, Options({file}));
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  EXPECT_EQ(rest->lines, 11u);
  EXPECT_EQ(rest->bad, 1u);
  EXPECT_EQ(rest->applied, 10u);
}

TEST_F(ReplayerTest, StrictStopsAtAConflict) {
  const std::string file = Write("rec.ndjson", {Env("a", 1, 10, R"({"x":1})"),
                                                Env("a", 2, 11, R"({"x":2})"),
                                                Env("a", 2, 12, R"({"x":3})"),
                                                Env("a", 3, 13, R"({"x":4})")});
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  ReplayOptions options = Options({file});
  options.strict = true;
  auto report = Replay(*store, options);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(report.status().message().find(":3:"), std::string::npos)
      << report.status().message();
  EXPECT_EQ(store->Dump(), "{\"x\":2}\n");
  EXPECT_EQ(store->Position(SourceId(file)).value().line, 2u);
}

TEST_F(ReplayerTest, DeadLettersAreJsonWithTheirFields) {
  const std::string too_long = Env("a", 9, 19, R"({"big":")" + std::string(1200 * 1024, 'x') + "\"}");
  const std::vector<std::string> lines = {
      Env("a", 1, 10, R"({"x":1})"),
      "not json at all",
      Env("a", 2, 11, R"({"x":{"$inc":1,"y":2}})"),  // an operator beside another key
      Env("a", 1, 12, R"({"x":5})"),                 // a conflict with line 1
      "{\"blade\":\"a\",\"seq\":3,\"ts\":13,\"shard\":{\"bad\xff\xfe\":1}}",  // invalid UTF-8
      too_long,
      Env("a", 4, 14, R"({"y":true})"),
  };
  const std::string file = Write("rec.ndjson", lines);
  std::vector<std::uint64_t> offsets;
  std::uint64_t offset = 0;
  for (const std::string& line : lines) {
    offsets.push_back(offset);
    offset += line.size() + 1;
  }
  auto store = Open("state");
  ASSERT_NE(store, nullptr);
  auto report = Replay(*store, Options({file}));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->applied, 2u);
  EXPECT_EQ(report->bad, 4u);
  EXPECT_EQ(report->conflicts, 1u);

  const std::vector<std::string> letters = ReadLines(PathOf("dead-letter.ndjson"));
  ASSERT_EQ(letters.size(), 5u);
  const std::vector<std::uint64_t> want_lines = {2, 3, 4, 5, 6};
  const std::vector<std::string> want_outcomes = {"bad", "bad", "conflict", "bad", "bad"};
  for (std::size_t i = 0; i < letters.size(); ++i) {
    SCOPED_TRACE("dead letter " + std::to_string(i));
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(letters[i])) << letters[i].substr(0, 300);
    ASSERT_TRUE(j.is_object());
    for (const char* field : {"source", "line", "offset", "length", "outcome", "reason", "text"}) {
      EXPECT_TRUE(j.contains(field)) << field;
    }
    const std::size_t n = want_lines[i] - 1;
    EXPECT_EQ(j.value("source", ""), SourceId(file));
    EXPECT_EQ(j.value("line", std::uint64_t{0}), want_lines[i]);
    EXPECT_EQ(j.value("offset", std::uint64_t{0}), offsets[n]);
    EXPECT_EQ(j.value("length", std::uint64_t{0}), lines[n].size());
    EXPECT_EQ(j.value("outcome", ""), want_outcomes[i]);
    EXPECT_FALSE(j.value("reason", "").empty());
    ASSERT_TRUE(j["text"].is_string());
    const std::string text = j["text"].get<std::string>();
    EXPECT_LE(text.size(), 1024u + 2);  // at most 1 KiB of the line (+ a replacement character)
    if (n != 4) {  // the invalid UTF-8 line is kept with replacement characters
      EXPECT_EQ(text, lines[n].substr(0, text.size()));
    }
  }
  // Dead letters are appended: a second file's rejects follow the first's.
  const std::string second = Write("second.ndjson", {"[]"});
  auto again = Replay(*store, Options({second}));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(ReadLines(PathOf("dead-letter.ndjson")).size(), 6u);
}

}  // namespace
}  // namespace lattice::ingest
