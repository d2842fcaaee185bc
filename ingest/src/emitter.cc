// Emitter (emitter.h): an idempotent librdkafka producer with Lattice's message layout.
#include "lattice/ingest/emitter.h"

#include <charconv>
#include <chrono>
#include <vector>

#include "kafka_conf.h"
#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "seq_file.h"

namespace lattice::ingest {

namespace {

using internal::KafkaErrorText;

// Producer defaults: Lattice's choices, before the environment and -X. Batching as librdkafka
// 2.0's defaults (linger.ms=5, batch.num.messages=10000), no compression. The local queue is
// librdkafka's (queue.buffering.max.messages=100000). Sessions 7-9 set 20,000, for 15-30% less
// CPU when each partition's messages were scattered over the queue; since `lattice emit` groups
// a file's lines by blade, the larger queue costs no more CPU and keeps the producer from
// stalling on a full queue: `lattice emit` of 2,000,000 lines, 16 of 18 interleaved rounds
// faster, wall median -5% and -12%, the machine's idle share ~15% -> ~9% (docs/benchmarks.md
// "Session 9 emit: the local queue").
const internal::KafkaProperties& ProducerDefaults() {
  static const internal::KafkaProperties kDefaults = {
      {"enable.idempotence", "true"},
      {"linger.ms", "5"},
      {"batch.num.messages", "10000"},
      {"compression.type", "none"},
  };
  return kDefaults;
}

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t NowMicros() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Appends `{"a":{"b":` for path a.b (keys starting with '$' written "$$..."), returning the
// number of braces to close.
Result<std::size_t> OpenPath(std::string& out, std::string_view dotted) {
  LATTICE_ASSIGN_OR_RETURN(core::Path path, core::Path::Parse(dotted));
  if (path.empty()) {
    return Status::InvalidArgument("a path is needed (the root can only be set with Raw())");
  }
  std::string key;
  for (const auto& seg : path.segments()) {
    out.push_back('{');
    key.clear();
    if (!seg.empty() && seg[0] == '$') {
      key.push_back('$');
    }
    key.append(seg);
    core::AppendJsonString(out, key);
    out.push_back(':');
  }
  return path.size();
}

}  // namespace

struct Emitter::Impl {
  EmitterOptions options;
  internal::KafkaHandle rk;
  rd_kafka_topic_t* rkt = nullptr;
  std::unique_ptr<internal::SeqFile> seq_file;
  std::uint64_t clock_seq = 0;  // next seq without a seq file
  core::ShardDecoder decoder;
  EmitterStats stats;
  std::uint32_t since_poll = 0;
  bool closed = false;
  ~Impl() {
    if (rkt != nullptr) {
      rd_kafka_topic_destroy(rkt);
    }
  }

  // A new header list holding only `lattice-seq` = `seq_text`, sized for one (producev's
  // RD_KAFKA_V_HEADER allocates room for 8). Session 6 reused delivered messages' lists
  // (rd_kafka_message_detach_headers) to spare glibc malloc three allocations per message; with
  // jemalloc linked in, fresh lists come from its thread cache in allocation order and cost less
  // CPU than reused ones, whose first touch is a cache miss (docs/benchmarks.md "Session 7 emit").
  static rd_kafka_headers_t* SeqHeaders(const char* seq_text, ssize_t seq_len) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(1);
    rd_kafka_header_add(headers, kSeqHeader.data(), static_cast<ssize_t>(kSeqHeader.size()),
                        seq_text, seq_len);
    return headers;
  }

  static void OnDelivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ++self->stats.delivered;
      return;
    }
    ++self->stats.failed;
    if (self->stats.first_error.empty()) {
      std::string& e = self->stats.first_error;
      e.append("shard of blade '");
      e.append(static_cast<const char*>(m->key), m->key_len);
      e.append("' seq ");
      e.append(std::to_string(reinterpret_cast<std::uintptr_t>(m->_private)));
      e.append(": ");
      e.append(KafkaErrorText(m->err));
    }
  }

  Status FatalStatus() {
    char buf[512];
    const rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk.get(), buf, sizeof(buf));
    return Status::Unavailable(std::string("the Kafka producer failed fatally: ") +
                               rd_kafka_err2name(err) + ": " + buf);
  }

  Status Produce(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                 std::string_view body) {
    if (closed) {
      return Status::InvalidArgument("the emitter is closed");
    }
    if (blade.empty()) {
      return Status::InvalidArgument("a shard needs a blade id (the message key)");
    }
    if (ts < 0) {
      return Status::InvalidArgument("a shard's ts must be >= 0 (ms since the epoch)");
    }
    char seq_text[24];
    const auto r = std::to_chars(seq_text, seq_text + sizeof(seq_text), seq);
    *r.ptr = '\0';
    const ssize_t seq_len = r.ptr - seq_text;
    rd_kafka_headers_t* headers = SeqHeaders(seq_text, seq_len);
    for (;;) {
      const rd_kafka_resp_err_t err = rd_kafka_producev(
          rk.get(), RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(const_cast<char*>(blade.data()), blade.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(body.data()), body.size()), RD_KAFKA_V_TIMESTAMP(ts),
          RD_KAFKA_V_HEADERS(headers),
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(seq))),
          RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        break;  // the message owns `headers` now
      }
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk.get(), 10);  // serve delivery reports while the queue drains
        continue;
      }
      rd_kafka_headers_destroy(headers);  // still ours
      if (err == RD_KAFKA_RESP_ERR__FATAL) {
        return FatalStatus();
      }
      if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        return Status::InvalidArgument("shard of " + std::to_string(body.size()) +
                                       " bytes is larger than the producer's message.max.bytes");
      }
      return Status::Unavailable("cannot queue a shard: " + KafkaErrorText(err));
    }
    ++stats.queued;
    stats.bytes += body.size();
    if (++since_poll >= 1024) {
      since_poll = 0;
      rd_kafka_poll(rk.get(), 0);
    }
    return Status::Ok();
  }

  Result<std::uint64_t> NextSeq() {
    if (seq_file) {
      return seq_file->Next();
    }
    return clock_seq++;
  }
};

Emitter::Emitter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Emitter::~Emitter() {
  if (impl_ && !impl_->closed) {
    (void)Close(std::chrono::seconds(5));
  }
}

Result<std::unique_ptr<Emitter>> Emitter::Open(EmitterOptions options) {
  if (options.topic.empty()) {
    return Status::InvalidArgument("the topic name is empty");
  }
  if (options.seq_block == 0 || options.seq_block > (std::uint64_t{1} << 32)) {
    return Status::InvalidArgument("the seq block must be 1 .. 2^32");
  }
  if (options.blade.size() > core::DecodeLimits().max_blade_bytes) {
    return Status::InvalidArgument("blade id '" + options.blade + "' is longer than " +
                                   std::to_string(core::DecodeLimits().max_blade_bytes) + " bytes");
  }
  auto impl = std::make_unique<Impl>();
  LATTICE_ASSIGN_OR_RETURN(internal::KafkaConf conf,
                           internal::BuildKafkaConf(options.kafka, ProducerDefaults()));
  rd_kafka_conf_set_dr_msg_cb(conf.get(), &Impl::OnDelivery);
  rd_kafka_conf_set_opaque(conf.get(), impl.get());
  if (!options.seq_file.empty()) {
    LATTICE_ASSIGN_OR_RETURN(
        impl->seq_file,
        internal::SeqFile::Open(options.seq_file, options.seq_block, options.first_seq));
  } else {
    impl->clock_seq = options.first_seq ? *options.first_seq : NowMicros();
  }
  LATTICE_ASSIGN_OR_RETURN(impl->rk, internal::NewKafkaHandle(RD_KAFKA_PRODUCER, std::move(conf)));
  impl->rkt = rd_kafka_topic_new(impl->rk.get(), options.topic.c_str(), nullptr);
  if (impl->rkt == nullptr) {
    return Status::InvalidArgument("topic '" + options.topic +
                                   "': " + KafkaErrorText(rd_kafka_last_error()));
  }
  impl->options = std::move(options);
  return std::unique_ptr<Emitter>(new Emitter(std::move(impl)));
}

Status Emitter::SendOwn(std::string_view body, std::int64_t ts) {
  Impl& d = *impl_;
  if (d.options.blade.empty()) {
    return Status::InvalidArgument("this emitter has no blade id (EmitterOptions::blade)");
  }
  if (d.options.validate) {
    auto decoded = d.decoder.DecodeBody(body, d.options.blade, 0, ts);
    if (!decoded.ok()) {
      return decoded.status().WithContext("bad shard");
    }
  }
  LATTICE_ASSIGN_OR_RETURN(std::uint64_t seq, d.NextSeq());
  return d.Produce(d.options.blade, seq, ts, body);
}

Status Emitter::Set(std::string_view path, std::string_view json) {
  std::string body;
  LATTICE_ASSIGN_OR_RETURN(std::size_t depth, OpenPath(body, path));
  body.append(json);
  body.append(depth, '}');
  return SendOwn(body, NowMs());
}

Status Emitter::Erase(std::string_view path) { return Set(path, "null"); }

Status Emitter::Inc(std::string_view path, std::int64_t n) {
  std::string op = "{\"$inc\":";
  core::AppendJsonInt(op, n);
  op.push_back('}');
  return Set(path, op);
}

Status Emitter::Inc(std::string_view path, double n) {
  std::string op = "{\"$inc\":";
  core::AppendJsonDouble(op, n);
  op.push_back('}');
  return Set(path, op);
}

Status Emitter::Max(std::string_view path, double n) {
  std::string op = "{\"$max\":";
  core::AppendJsonDouble(op, n);
  op.push_back('}');
  return Set(path, op);
}

Status Emitter::Min(std::string_view path, double n) {
  std::string op = "{\"$min\":";
  core::AppendJsonDouble(op, n);
  op.push_back('}');
  return Set(path, op);
}

Status Emitter::Raw(std::string_view body) { return SendOwn(body, NowMs()); }

Status Emitter::RawAt(std::string_view body, std::int64_t ts) { return SendOwn(body, ts); }

Status Emitter::Send(std::string_view blade, std::uint64_t seq, std::int64_t ts,
                     std::string_view body) {
  return impl_->Produce(blade, seq, ts, body);
}

std::uint64_t Emitter::next_seq() const {
  return impl_->seq_file ? impl_->seq_file->peek() : impl_->clock_seq;
}

void Emitter::Poll() {
  if (!impl_->closed) {
    rd_kafka_poll(impl_->rk.get(), 0);
  }
}

Status Emitter::Flush(std::chrono::milliseconds timeout) {
  Impl& d = *impl_;
  if (d.closed) {
    return Status::InvalidArgument("the emitter is closed");
  }
  rd_kafka_flush(d.rk.get(), static_cast<int>(timeout.count()));
  rd_kafka_poll(d.rk.get(), 0);
  if (rd_kafka_fatal_error(d.rk.get(), nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return d.FatalStatus();
  }
  if (d.stats.failed > 0) {
    return Status::Unavailable(std::to_string(d.stats.failed) +
                               " shard(s) not delivered; the first: " + d.stats.first_error);
  }
  const int in_flight = rd_kafka_outq_len(d.rk.get());
  if (in_flight > 0) {
    return Status::Unavailable(std::to_string(in_flight) + " shard(s) still in flight after " +
                               std::to_string(timeout.count()) + " ms (is the broker reachable?)");
  }
  return Status::Ok();
}

Status Emitter::Close(std::chrono::milliseconds timeout) {
  Impl& d = *impl_;
  if (d.closed) {
    return Status::Ok();
  }
  Status s = Flush(timeout);
  rd_kafka_topic_destroy(d.rkt);
  d.rkt = nullptr;
  d.rk.reset();
  d.seq_file.reset();
  d.closed = true;
  return s;
}

EmitterStats Emitter::stats() const { return impl_->stats; }

}  // namespace lattice::ingest
