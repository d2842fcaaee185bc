// Recorder (recorder.h): a manually assigned librdkafka consumer writing NDJSON envelopes.
#include "lattice/ingest/recorder.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <zstd.h>

#include "kafka_conf.h"
#include "kafka_message.h"
#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"
#include "lattice/ingest/message_identity.h"

namespace lattice::ingest {

namespace {

using internal::KafkaErrorText;

constexpr int kMetadataTimeoutMs = 10000;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
bool ValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n = 0;
    std::uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) {
      return false;
    }
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

void AppendBase64(std::string& out, std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out.push_back('"');
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) |
                            std::uint32_t{static_cast<unsigned char>(in[i + 2])};
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  if (i < in.size()) {
    std::uint32_t v = std::uint32_t{static_cast<unsigned char>(in[i])} << 16;
    if (i + 1 < in.size()) {
      v |= std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8;
    }
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  out.push_back('"');
}

// Appends "name":"<text>" when `text` is UTF-8, else "name_base64":"<base64>".
void AppendBytesField(std::string& out, std::string_view name, std::string_view text) {
  out.push_back('"');
  out.append(name);
  if (ValidUtf8(text)) {
    out.append("\":");
    core::AppendJsonString(out, text);
  } else {
    out.append("_base64\":");
    AppendBase64(out, text);
  }
}

void AppendUint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// Buffered output to a file or stdout, optionally zstd-compressed.
class RecordingWriter {
 public:
  static Result<std::unique_ptr<RecordingWriter>> Open(const std::string& path) {
    auto w = std::unique_ptr<RecordingWriter>(new RecordingWriter());
    w->path_ = path;
    if (path == "-") {
      w->f_ = stdout;
    } else {
      w->f_ = std::fopen(path.c_str(), "wb");
      if (w->f_ == nullptr) {
        return Status::Unavailable("cannot write '" + path + "': " + std::strerror(errno));
      }
      w->owns_ = true;
    }
    if (EndsWith(path, ".zst")) {
      w->zstd_ = ZSTD_createCCtx();
      ZSTD_CCtx_setParameter(w->zstd_, ZSTD_c_compressionLevel, 3);
      w->zout_.resize(ZSTD_CStreamOutSize());
    }
    w->buf_.reserve(kBufferBytes + (1 << 16));
    return w;
  }

  ~RecordingWriter() {
    if (zstd_ != nullptr) {
      ZSTD_freeCCtx(zstd_);
    }
    if (owns_ && f_ != nullptr) {
      std::fclose(f_);
    }
  }

  Status Append(std::string_view line) {
    buf_.append(line);
    buf_.push_back('\n');
    if (buf_.size() >= kBufferBytes) {
      return Drain(false);
    }
    return Status::Ok();
  }

  /// Writes out everything buffered (and ends the zstd frame when `last`).
  Status Drain(bool last) {
    if (zstd_ == nullptr) {
      if (!buf_.empty() && std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size()) {
        return WriteError();
      }
      buf_.clear();
    } else {
      ZSTD_inBuffer in{buf_.data(), buf_.size(), 0};
      const ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
      for (;;) {
        ZSTD_outBuffer out{zout_.data(), zout_.size(), 0};
        const size_t left = ZSTD_compressStream2(zstd_, &out, &in, mode);
        if (ZSTD_isError(left)) {
          return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(left));
        }
        if (out.pos > 0 && std::fwrite(zout_.data(), 1, out.pos, f_) != out.pos) {
          return WriteError();
        }
        if (last ? left == 0 : in.pos == in.size) {
          break;
        }
      }
      buf_.clear();
    }
    if (last || f_ == stdout) {
      if (std::fflush(f_) != 0) {
        return WriteError();
      }
    }
    return Status::Ok();
  }

  Status Close() {
    LATTICE_RETURN_IF_ERROR(Drain(true));
    if (owns_) {
      std::FILE* f = f_;
      f_ = nullptr;
      if (std::fclose(f) != 0) {
        return WriteError();
      }
    }
    return Status::Ok();
  }

 private:
  static constexpr std::size_t kBufferBytes = 1 << 20;
  RecordingWriter() = default;
  Status WriteError() const {
    return Status::Unavailable("writing '" + path_ + "' failed: " + std::strerror(errno));
  }
  std::string path_;
  std::FILE* f_ = nullptr;
  bool owns_ = false;
  ZSTD_CCtx* zstd_ = nullptr;
  std::vector<char> zout_;
  std::string buf_;
};

struct PartitionState {
  std::int64_t end = -1;  // until_end: stop before this offset
  bool done = false;
  bool skipping = false;  // timestamp fallback: before the first message at or after the ts
};

}  // namespace

Result<RecordStart> ParseRecordStart(std::string_view text) {
  RecordStart s;
  if (text == "beginning") {
    return s;
  }
  if (text == "end") {
    s.kind = RecordStart::Kind::kEnd;
    return s;
  }
  std::string_view digits = text;
  if (!digits.empty() && digits[0] == '@') {
    s.kind = RecordStart::Kind::kTimestamp;
    digits.remove_prefix(1);
  } else {
    s.kind = RecordStart::Kind::kOffset;
  }
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), s.value);
  if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || s.value < 0) {
    return Status::InvalidArgument("start '" + std::string(text) +
                                   "': expected beginning, end, an offset N, or @TIMESTAMP_MS");
  }
  return s;
}

Result<RecordReport> Record(const RecordOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  RecordReport report;
  internal::KafkaProperties defaults = {
      {"group.id", "lattice-record"},  // required by librdkafka; never joined (manual assign)
      {"enable.auto.commit", "false"},   {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"}, {"enable.partition.eof", "true"},
      {"fetch.wait.max.ms", "100"},
  };
  LATTICE_ASSIGN_OR_RETURN(internal::KafkaConf conf,
                           internal::BuildKafkaConf(options.kafka, defaults));
  LATTICE_ASSIGN_OR_RETURN(internal::KafkaHandle rk,
                           internal::NewKafkaHandle(RD_KAFKA_CONSUMER, std::move(conf)));

  // Partitions of the topic.
  int partitions = 0;
  {
    // Ask for all topics: a request naming the topic would let the broker auto-create it.
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk.get(), 1, nullptr, &md, kMetadataTimeoutMs);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::Unavailable("cannot read the metadata of topic '" + options.topic +
                                 "': " + KafkaErrorText(err));
    }
    rd_kafka_resp_err_t terr = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    for (int t = 0; t < md->topic_cnt; ++t) {
      if (options.topic == md->topics[t].topic) {
        terr = md->topics[t].err;
        partitions = md->topics[t].partition_cnt;
      }
    }
    rd_kafka_metadata_destroy(md);
    if (terr != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::NotFound("topic '" + options.topic + "': " + KafkaErrorText(terr));
    }
  }
  report.partitions = partitions;

  // Start (and end) offsets, from the watermarks.
  std::vector<PartitionState> state(static_cast<std::size_t>(partitions));
  std::vector<std::int64_t> start(static_cast<std::size_t>(partitions));
  std::vector<std::int64_t> lows(static_cast<std::size_t>(partitions));
  std::vector<std::int64_t> highs(static_cast<std::size_t>(partitions));
  for (int p = 0; p < partitions; ++p) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk.get(), options.topic.c_str(), p,
                                                               &low, &high, kMetadataTimeoutMs);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::Unavailable("cannot read the offsets of " + options.topic + "/" +
                                 std::to_string(p) + ": " + KafkaErrorText(err));
    }
    const auto i = static_cast<std::size_t>(p);
    lows[i] = low;
    highs[i] = high;
    state[i].end = options.until_end ? high : -1;
    switch (options.from.kind) {
      case RecordStart::Kind::kBeginning:
      case RecordStart::Kind::kTimestamp:
        start[i] = low;
        break;
      case RecordStart::Kind::kEnd:
        start[i] = high;
        break;
      case RecordStart::Kind::kOffset:
        start[i] = std::clamp(options.from.value, low, high);
        break;
    }
  }
  if (options.from.kind == RecordStart::Kind::kTimestamp) {
    internal::KafkaPartitionList list(rd_kafka_topic_partition_list_new(partitions));
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), p)->offset =
          options.from.value;
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(rk.get(), list.get(), kMetadataTimeoutMs);
    bool per_partition_ok = err == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; per_partition_ok && i < list->cnt; ++i) {
      per_partition_ok = list->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    for (int p = 0; p < partitions; ++p) {
      const auto i = static_cast<std::size_t>(p);
      std::int64_t found = -1;
      if (per_partition_ok) {
        for (int e = 0; e < list->cnt; ++e) {
          if (list->elems[e].partition == p) {
            found = list->elems[e].offset;
          }
        }
      }
      if (found >= 0) {
        start[i] = found;
      } else if (lows[i] < highs[i]) {
        // No offset for the time: either no message is that recent, or the broker cannot look
        // offsets up by time (librdkafka's mock answers -1). Read the partition from the
        // beginning and skip up to the first message at or after the timestamp: right in both
        // cases, and only slower in the first.
        start[i] = lows[i];
        state[i].skipping = true;
        report.timestamp_fallback = true;
      } else {
        start[i] = highs[i];
      }
    }
  }
  int remaining = 0;
  internal::KafkaPartitionList assignment(rd_kafka_topic_partition_list_new(partitions));
  for (int p = 0; p < partitions; ++p) {
    const auto i = static_cast<std::size_t>(p);
    if (options.until_end && start[i] >= state[i].end) {
      state[i].done = true;
      continue;
    }
    ++remaining;
    rd_kafka_topic_partition_list_add(assignment.get(), options.topic.c_str(), p)->offset =
        start[i];
  }

  LATTICE_ASSIGN_OR_RETURN(auto writer, RecordingWriter::Open(options.output));
  if (options.until_end && remaining == 0) {
    LATTICE_RETURN_IF_ERROR(writer->Close());
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return report;
  }
  rd_kafka_resp_err_t aerr = rd_kafka_assign(rk.get(), assignment.get());
  if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return Status::Unavailable("cannot assign the partitions: " + KafkaErrorText(aerr));
  }
  internal::KafkaQueue queue(rd_kafka_queue_get_consumer(rk.get()));

  core::ShardDecoder decoder;
  MessageIdentity identity(options.default_blade);  // the aggregator's rule
  std::string line;
  std::string body_copy;
  std::string topic_json;
  core::AppendJsonString(topic_json, options.topic);
  std::vector<rd_kafka_message_t*> batch(1024);
  Status failure;
  while (!(options.until_end && remaining == 0)) {
    if (options.stop != nullptr && options.stop->load()) {
      report.interrupted = true;
      break;
    }
    const ssize_t n = rd_kafka_consume_batch_queue(queue.get(), 100, batch.data(), batch.size());
    if (n < 0) {
      failure = Status::Unavailable("consume failed: " + KafkaErrorText(rd_kafka_last_error()));
      break;
    }
    for (ssize_t k = 0; k < n; ++k) {
      internal::KafkaMessage m(batch[static_cast<std::size_t>(k)]);
      if (!failure.ok()) {
        continue;  // release the rest of the batch
      }
      if (m->partition < 0 || m->partition >= partitions) {
        continue;
      }
      PartitionState& ps = state[static_cast<std::size_t>(m->partition)];
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (options.until_end && !ps.done && m->offset >= ps.end) {
          ps.done = true;
          --remaining;
        }
        continue;
      }
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (rd_kafka_fatal_error(rk.get(), nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
          failure =
              Status::Unavailable("consuming " + options.topic + ": " + KafkaErrorText(m->err));
        }
        continue;  // transient (a broker down, a leader move): librdkafka recovers
      }
      if (ps.done || (options.until_end && m->offset >= ps.end)) {
        if (!ps.done) {
          ps.done = true;
          --remaining;
        }
        continue;
      }
      if (options.until_end && m->offset + 1 >= ps.end) {
        ps.done = true;
        --remaining;
      }
      rd_kafka_timestamp_type_t tstype;
      const std::int64_t mts = rd_kafka_message_timestamp(m.get(), &tstype);
      if (ps.skipping) {
        if (tstype != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && mts < options.from.value) {
          ++report.skipped;
          continue;
        }
        ps.skipping = false;
      }
      ++report.messages;
      report.bytes += m->len;
      const std::string_view value =
          m->payload == nullptr ? std::string_view()
                                : std::string_view(static_cast<const char*>(m->payload), m->len);
      line.clear();
      auto id = identity.Identify(internal::MessageFieldsOf(m.get()));
      Status bad;
      if (!id.ok()) {
        bad = id.status();
      } else if (!ValidUtf8(id->blade)) {
        bad = Status::InvalidArgument("the blade id (message key) is not valid UTF-8");
      } else {
        auto decoded = decoder.DecodeBody(value, id->blade, id->seq, id->ts);
        if (!decoded.ok()) {
          bad = decoded.status();
        }
      }
      if (bad.ok()) {
        line.append("{\"blade\":");
        core::AppendJsonString(line, id->blade);
        line.append(",\"seq\":");
        AppendUint(line, id->seq);
        line.append(",\"ts\":");
        AppendUint(line, static_cast<std::uint64_t>(id->ts));
        line.append(",\"shard\":");
        std::string_view body = value;
        if (std::memchr(body.data(), '\n', body.size()) != nullptr ||
            std::memchr(body.data(), '\r', body.size()) != nullptr) {
          body_copy.assign(body);
          for (char& c : body_copy) {
            if (c == '\n' || c == '\r') {
              c = ' ';  // whitespace only: raw newlines cannot be inside valid JSON strings
            }
          }
          body = body_copy;
        }
        line.append(body);
        ++report.shards;
      } else {
        line.push_back('{');
        if (id.ok() && ValidUtf8(id->blade)) {
          line.append("\"blade\":");
          core::AppendJsonString(line, id->blade);
          line.append(",\"seq\":");
          AppendUint(line, id->seq);
          line.append(",\"ts\":");
          AppendUint(line, static_cast<std::uint64_t>(id->ts));
          line.push_back(',');
        } else if (const auto key = internal::MessageKey(m.get()); key) {
          AppendBytesField(line, "key", *key);
          line.push_back(',');
        }
        AppendBytesField(line, "raw", value);
        line.append(",\"reason\":");
        std::string reason = bad.message();
        if (!ValidUtf8(reason)) {
          for (char& c : reason) {
            c = static_cast<unsigned char>(c) >= 0x80 ? '?' : c;
          }
        }
        core::AppendJsonString(line, reason);
        ++report.bad;
      }
      line.append(",\"topic\":").append(topic_json);
      line.append(",\"partition\":");
      AppendUint(line, static_cast<std::uint64_t>(m->partition));
      line.append(",\"offset\":");
      AppendUint(line, static_cast<std::uint64_t>(m->offset));
      line.push_back('}');
      failure = writer->Append(line);
    }
  }
  rd_kafka_consumer_close(rk.get());
  Status closed = writer->Close();
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  LATTICE_RETURN_IF_ERROR(failure);
  LATTICE_RETURN_IF_ERROR(closed);
  return report;
}

}  // namespace lattice::ingest
