// The aggregator: a fetch thread polls the consumer and decodes messages into chunks (a decode
// helper thread takes half of each full chunk); the merge thread (the caller's) merges them in
// batches, dead-letters, and commits state and offsets in one WriteBatch (see aggregator.h and
// docs/architecture.md).
#include "lattice/ingest/aggregator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include "decode_stage.h"  // Arena
#include "kafka_conf.h"
#include "kafka_message.h"
#include "lattice/core/copy_small.h"
#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"
#include "lattice/ingest/message_identity.h"

namespace lattice::ingest {

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// A histogram of latencies in ms for the progress log: 1 ms buckets below 1 s, 100 ms buckets up
/// to ~100 s, then one overflow bucket. Constant memory at any message rate.
class LagHistogram {
 public:
  void Add(std::int64_t ms) {
    std::size_t i = 0;
    if (ms > 0) {
      const auto u = static_cast<std::uint64_t>(ms);
      i = u < 1000 ? u : std::min<std::size_t>(1000 + (u - 1000) / 100, kBuckets - 1);
    }
    ++counts_[i];
    ++total_;
  }
  /// "p50/p99" in ms (a bucket's lower bound), or "-" when empty; then empties the histogram.
  std::string TakePercentiles() {
    if (total_ == 0) {
      return "-";
    }
    std::string out = std::to_string(At(0.50));
    out += '/';
    out += std::to_string(At(0.99));
    counts_.fill(0);
    total_ = 0;
    return out;
  }

 private:
  static constexpr std::size_t kBuckets = 2000;
  std::uint64_t At(double q) const {
    const auto want = static_cast<std::uint64_t>(q * static_cast<double>(total_ - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= want) {
        return i < 1000 ? i : 1000 + (i - 1000) * 100;
      }
    }
    return 0;
  }
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
};

constexpr std::int64_t kNoTs = std::numeric_limits<std::int64_t>::min();
// A dead letter whose value the producer refuses as too large keeps this much of it.
constexpr std::size_t kTruncatedValueBytes = 64 * 1024;
// How long a stopping aggregator waits for undelivered dead letters before giving up the batch.
constexpr auto kStopDeliveryWait = std::chrono::seconds(30);
// Kafka's committed offsets (for lag tools) are refreshed at most this often.
constexpr auto kKafkaCommitInterval = std::chrono::seconds(2);

using internal::KafkaHandle;
using PartitionListPtr = internal::KafkaPartitionList;

/// Where one assigned partition stands.
struct PartitionState {
  std::int32_t partition = 0;
  std::string source;             // "topic/partition": the key of its position in the state
  std::int64_t next_offset = -1;  // the next offset to consume; -1: from the beginning
  std::int64_t max_ts = kNoTs;    // newest event time seen
  std::int64_t end_offset = -1;   // exit_at_end: the end to reach (-1: not captured yet)
  bool assigned = false;
  bool idle = true;  // at the end of the partition (excluded from the watermark)
  // Assigned but neither a message nor the end seen yet: its event time is unknown, so the
  // watermark must not advance past it.
  bool unknown = false;
  bool moved = false;  // consumed something since the last commit
};

/// One message (or a partition-end event) as the merge thread sees it.
struct FetchedMessage {
  // kPending: polled, not decoded yet (never seen by the merge thread).
  enum class Kind : std::uint8_t { kShard, kBad, kEnd, kPending };
  Kind kind = Kind::kEnd;
  std::int32_t partition = 0;
  std::int64_t offset = 0;                // kEnd: the partition's end offset
  std::int64_t ts = 0;                    // kShard: the event time
  rd_kafka_message_t* message = nullptr;  // kShard, kBad: in the chunk's `messages` (dead letters)
  // kShard, kBad: message->len, copied by the fetch thread (which reads that line anyway), so
  // that the merge thread does not read the message: librdkafka wrote it on either core, and its
  // line was ~60% of the merge loop's own samples (a cache miss per message).
  std::size_t bytes = 0;
  core::Shard shard;                      // kShard: views into the chunk's arena
  std::string_view error;                 // kBad: why (in the arena)
};

/// What the fetch thread hands to the merge thread: decoded messages in consume order.
/// Recycled: the vector keeps its capacity, the arena its blocks.
struct FetchedChunk {
  std::vector<FetchedMessage> items;
  std::size_t size = 0;
  // Owns the messages of items[0, size), in one array: releasing them does not read the items
  // (cold: the merge thread read them last).
  std::vector<rd_kafka_message_t*> messages;
  std::size_t decoded = 0;       // items[0, decoded) are decoded
  internal::Arena arena;         // of the fetch thread's decoding
  internal::Arena helper_arena;  // of the decode helper's
  bool drained = false;  // the consumer had nothing more after the last item (a short poll)
  bool barrier = false;  // a rebalance waits: commit and flush everything up to here, then stop
  Status failure;        // a fatal consumer error seen by the fetch thread
};

// Messages per chunk: big enough to make the hand-over cheap, small enough that the merge thread
// starts early; a chunk is handed over as soon as the consumer has nothing more.
constexpr std::size_t kChunkMessages = 2048;
// Chunks decoded ahead of the merge thread, at most.
constexpr std::size_t kChunksInFlight = 8;
// Fewer undecoded messages than this are decoded by the fetch thread alone (a live topic's few
// messages: a hand-off to the helper would only add latency).
constexpr std::size_t kSplitMessages = 256;
// Messages the fetch thread takes from the consumer's queue per call, at most.
constexpr std::size_t kPollBatch = 256;

// Bytes of message bodies (each with a newline) decoded over one run of simdjson's stage 1 at
// most (ShardDecoder::ExpectBodies; the decoder's pieces are up to 8 KiB).
constexpr std::size_t kGroupBytes = 8192;

/// What one decoding thread has of its own.
struct DecodeLane {
  explicit DecodeLane(const std::string& default_blade)
      : identity(default_blade),
        text(std::make_unique<char[]>(kGroupBytes + core::ShardDecoder::kPadding)) {}
  core::ShardDecoder decoder;
  MessageIdentity identity;
  // A group of messages' bodies, one after another, each followed by a newline, then kPadding
  // newlines: the decoder runs stage 1 once over them instead of once per body (its fixed cost
  // per call was most of it for a ~70-byte body).
  std::unique_ptr<char[]> text;
  std::vector<std::string_view> bodies;  // per item of the group: its body in `text`, or none
};

/// Copies a decoded shard into `arena` (the decoder's views are valid only until it decodes
/// again); the twin of DecodeStage::Fill for Kafka messages. One arena allocation for all the
/// shard's strings and one bulk copy of the entries (an entry at a time, with an Arena::Copy call
/// per string, was ~4% of the aggregator's samples).
void CopyShard(const core::Shard& in, internal::Arena& arena, core::Shard& s) {
  std::size_t bytes = in.blade.size() + in.topic.size();
  for (const core::BodyEntry& e : in.entries) {
    bytes += e.key.size() + (e.kind == core::OpKind::kSet ? e.value.size() : 0);
  }
  char* next = bytes == 0 ? nullptr : arena.Allocate(bytes);
  // Keys and values are mostly a few bytes: copied inline rather than by a memcpy call each.
  const auto put = [&next](std::string_view v) -> std::string_view {
    const std::size_t n = v.size();
    if (n == 0) {
      return {};
    }
    char* p = next;
    core::CopySmall(p, v.data(), n);
    next += n;
    return {p, n};
  };
  s.blade = put(in.blade);
  s.seq = in.seq;
  s.ts = in.ts;
  s.hash = in.hash;
  s.has_int_inc = in.has_int_inc;
  s.has_float_inc = in.has_float_inc;
  s.max_abs_inc = in.max_abs_inc;
  s.topic = put(in.topic);
  s.partition = in.partition;
  s.offset = in.offset;
  // assign() grows a recycled item's vector to exactly the size needed, so a slot that gets ever
  // larger shards reallocated again and again (17% of messages in the 2M benchmark): grow with
  // room to spare instead.
  if (const std::size_t n = in.entries.size(); s.entries.capacity() < n) [[unlikely]] {
    s.entries.clear();
    s.entries.reserve(std::max<std::size_t>(n + n / 2, 8));
  }
  s.entries.assign(in.entries.begin(), in.entries.end());
  // The views are re-pointed from the source entries: reading back the copies right after the
  // bulk copy's wide stores waited for them (a failed store-to-load forward: half of
  // DecodeItem's samples).
  core::BodyEntry* out = s.entries.data();
  for (const core::BodyEntry& e : in.entries) {
    out->key = put(e.key);
    if (e.kind == core::OpKind::kSet) {
      out->value = put(e.value);
    }
    ++out;
  }
}

void LogFromKafka(const rd_kafka_t* /*rk*/, int level, const char* fac, const char* buf) {
  // syslog levels: 0..3 error, 4 warning, 5..7 info and debug.
  if (level <= 3) {
    spdlog::error("kafka {}: {}", fac, buf);
  } else if (level == 4) {
    spdlog::warn("kafka {}: {}", fac, buf);
  } else {
    // Debug lines (level 7) only come when asked for with -X debug=...: show them.
    spdlog::info("kafka {}: {}", fac, buf);
  }
}

// Marks the producer's messages, so delivery reports tell dead letters from change events.
int kDeadLetterTag = 0;
int kChangeTag = 0;

/// The wire JSON of a change (crdt/types.h).
void AppendChangeJson(std::string& out, const crdt::Change& c) {
  out += "{\"path\":";
  core::AppendJsonString(out, c.path);
  out += ",\"old\":";
  out += c.old_json ? std::string_view(*c.old_json) : std::string_view("null");
  out += ",\"new\":";
  out += c.new_json ? std::string_view(*c.new_json) : std::string_view("null");
  out += ",\"stamp\":{\"blade\":";
  core::AppendJsonString(out, c.blade);
  out += ",\"seq\":";
  out += std::to_string(c.seq);
  out += ",\"ts\":";
  out += std::to_string(c.ts);
  out += "},\"cause\":\"";
  out += crdt::ChangeCauseName(c.cause);
  out += "\"}";
}

}  // namespace

struct Aggregator::Impl {
  crdt::StateStore& store;
  AggregatorOptions options;
  KafkaHandle consumer;
  KafkaHandle producer;
  // The consumer's queue (what rd_kafka_consumer_poll serves), to wake the fetch thread when it
  // is to stop. Declared after `consumer`: released before it.
  internal::KafkaQueue consumer_queue;
  // The consumer's handle of the shards topic, made before any assignment so that the
  // partitions' leader is known when they are assigned (see Run()).
  rd_kafka_topic_t* shards_topic = nullptr;
  // The producer's handles of the topics it writes to (dead letters, change events), made at
  // start so that their partitions are known before the first message (see Run()).
  std::vector<rd_kafka_topic_t*> producer_topics;
  // Indexed by partition number; entries stay when unassigned (assigned = false).
  std::vector<std::unique_ptr<PartitionState>> partitions;
  std::vector<std::int64_t> end_at_start;  // exit_at_end: high watermarks captured at start
  // Standalone or exit_at_end: each partition's first offset at start (-1: unknown), where a
  // partition without a position in the state starts.
  std::vector<std::int64_t> start_at_start;
  int topic_partitions = 0;                // of the shards topic, seen at start
  AggregatorReport report;
  Status failure;            // a fatal error seen in a callback; stops the loop
  bool batch_dirty = false;  // merged something since the last commit
  std::uint64_t dead_in_flight = 0;
  std::uint64_t dead_delivered = 0;
  std::string delivery_error;
  bool kafka_commit_due = false;
  Clock::time_point last_kafka_commit = Clock::now();
  std::size_t batch_limit = 0;
  std::size_t max_batch = 0;  // options.max_batch, or its default for this run (Run)
  std::string scratch;
  std::optional<Clock::time_point> first_assignment;
  // The change feed: collected while merging, published once the batch is durable.
  std::vector<std::pair<std::string, Subscriber>> subscribers;
  bool collect_changes = false;
  std::vector<crdt::Change> merging_changes;  // of the batch being merged
  // Committed batches not yet known durable: (the store's commit number, their changes).
  std::deque<std::pair<std::uint64_t, std::vector<crdt::Change>>> unpublished;
  std::uint64_t commit_no = 0;  // the store's commits_made() after our last Commit()
  std::uint64_t changes_undelivered = 0;
  std::string change_json;
  // Latency figures for the progress log (merge thread): event-time lag (wall clock - shard ts)
  // of the messages when merged and of the changes when published, and where the batches' time
  // goes.
  LagHistogram lag_merged;
  LagHistogram lag_published;
  double wait_s = 0, fill_s = 0, commit_s = 0;

  // --- The fetch thread's own (it polls the consumer, so the rebalance callback runs on it) ---
  DecodeLane lane;
  std::thread fetcher;
  FetchedChunk* filling = nullptr;  // the chunk the fetch thread is filling
  // Messages of recycled chunks, to destroy: handed to the decode helper with its next job.
  std::vector<rd_kafka_message_t*> to_release;
  Status fetch_failure;             // a fatal consumer error (error callback, unknown topic)
  std::uint64_t rebalances = 0;
  // The consumer's queued.min.messages: librdkafka stops fetching while its queue holds this
  // many messages (see WakeFetcherIfDrained()).
  std::size_t prefetch_limit = 0;
  bool prefetch_stopped = false;  // the queue came near the limit: the fetcher may have stopped
  std::uint64_t fetcher_wakeups = 0;
  // The leader of each partition of the shards topic at start (-1: none), read-only once the
  // fetch thread runs: a wake-up asks one partition per leader.
  std::vector<std::int32_t> leader_of;

  // --- Shared between the two threads, under `mu` ---
  std::mutex mu;
  std::condition_variable cv;
  std::deque<FetchedChunk*> ready;   // decoded, in order, for the merge thread
  std::vector<FetchedChunk*> spare;  // merged, for the fetch thread to refill
  std::vector<std::unique_ptr<FetchedChunk>> chunks;
  std::atomic<bool> fetch_stop{false};  // the merge thread is done: stop polling
  bool merging = false;     // the merge loop runs (a rebalance must wait for it at a barrier)
  bool at_barrier = false;  // the merge thread committed up to a barrier and waits for release

  // --- The decode helper: decodes items [helper_begin, helper_end) of helper_chunk while the
  // fetch thread decodes the front of the same chunk (fork-join per chunk, so the order of
  // items never changes). Under helper_mu. ---
  DecodeLane helper_lane;
  std::thread helper;
  std::mutex helper_mu;
  std::condition_variable helper_cv;
  FetchedChunk* helper_chunk = nullptr;
  std::size_t helper_begin = 0;
  std::size_t helper_end = 0;
  bool helper_job = false;  // posted, not finished
  std::vector<rd_kafka_message_t*> helper_release;  // destroyed by the helper after its job
  bool helper_stop = false;

  Impl(crdt::StateStore& s, AggregatorOptions o)
      : store(s),
        options(std::move(o)),
        lane(options.default_blade),
        helper_lane(options.default_blade) {}
  ~Impl() {
    if (fetcher.joinable()) {
      StopFetcher();
    }
    if (shards_topic != nullptr) {
      rd_kafka_topic_destroy(shards_topic);
    }
    for (rd_kafka_topic_t* t : producer_topics) {
      rd_kafka_topic_destroy(t);
    }
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  const std::string& Brokers() const { return options.kafka.brokers; }

  bool Stopping() const {
    return options.stop != nullptr && options.stop->load(std::memory_order_relaxed);
  }

  PartitionState& Partition(std::int32_t p) {
    const auto i = static_cast<std::size_t>(p);
    if (i < partitions.size() && partitions[i]) [[likely]] {
      return *partitions[i];  // inline: the merge loop asks once per message
    }
    return NewPartition(p);
  }
  [[gnu::noinline]] PartitionState& NewPartition(std::int32_t p) {
    const auto i = static_cast<std::size_t>(p);
    if (partitions.size() <= i) {
      partitions.resize(i + 1);
    }
    if (!partitions[i]) {
      partitions[i] = std::make_unique<PartitionState>();
      partitions[i]->partition = p;
      partitions[i]->source = options.topic + "/" + std::to_string(p);
    }
    return *partitions[i];
  }

  // --- Kafka clients --------------------------------------------------------------------------

  Status CreateClients() {
    const internal::KafkaProperties consumer_defaults = {
        {"group.id", options.group},
        {"client.id", "lattice-aggregate"},
        // Offsets live in the state (one WriteBatch with the data); Kafka's are for lag tools.
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "true"},
        // Large fetches: the aggregator drains backlogs in big batches.
        {"fetch.max.bytes", "67108864"},
        {"max.partition.fetch.bytes", "8388608"},
        // Prefetch at most ~50,000 messages (all partitions together): enough for ~0.1 s of
        // merging, and the fetcher is woken as soon as half of it is merged
        // (WakeFetcherIfDrained). 200,000 held ~50 MB more (500,000-shard catch-up: 230 -> 180
        // MB RSS, 61,700 -> 48,000 page faults) for no speed.
        {"queued.min.messages", "50000"},
        {"queued.max.messages.kbytes", "262144"},
        // How long a broker may hold a fetch that finds no new data. A real broker answers as
        // soon as data arrives, but the dev broker (librdkafka's mock) always holds an empty
        // fetch this long, even if data arrives meanwhile: this bounds the live latency it adds
        // (docs/operations.md). 3 ms: produced -> merged p50 8-10 / p99 14-21 ms at 50,000
        // shards/s on the dev broker (10 ms: 12-16 / 22-41 ms); costs up to ~330 empty
        // fetches/s per broker on an idle topic (against a real cluster, raise it).
        {"fetch.wait.max.ms", "3"},
    };
    LATTICE_ASSIGN_OR_RETURN(internal::KafkaConf conf,
                             internal::BuildKafkaConf(options.kafka, consumer_defaults));
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_rebalance_cb(conf.get(), &Impl::OnRebalance);
    rd_kafka_conf_set_error_cb(conf.get(), &Impl::OnError);
    rd_kafka_conf_set_log_cb(conf.get(), &LogFromKafka);
    LATTICE_ASSIGN_OR_RETURN(consumer,
                             internal::NewKafkaHandle(RD_KAFKA_CONSUMER, std::move(conf)));
    rd_kafka_poll_set_consumer(consumer.get());
    consumer_queue.reset(rd_kafka_queue_get_consumer(consumer.get()));
    char value[32];
    std::size_t value_size = sizeof value;
    if (rd_kafka_conf_get(rd_kafka_conf(consumer.get()), "queued.min.messages", value,
                          &value_size) == RD_KAFKA_CONF_OK) {
      prefetch_limit = static_cast<std::size_t>(std::strtoull(value, nullptr, 10));
    }

    const internal::KafkaProperties producer_defaults = {
        {"client.id", "lattice-aggregate"},
        {"enable.idempotence", "true"},
        // Dead letters are delivered before the offsets that pass them are committed: while a
        // broker is away they wait (forever), they are never dropped.
        {"message.timeout.ms", "0"},
        // Change events leave in one burst per durable batch: a short linger sends the burst
        // at once (dead letters are waited for before each commit anyway).
        {"linger.ms", "1"},
    };
    LATTICE_ASSIGN_OR_RETURN(conf, internal::BuildKafkaConf(options.kafka, producer_defaults));
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &Impl::OnDelivery);
    rd_kafka_conf_set_error_cb(conf.get(), &Impl::OnError);
    rd_kafka_conf_set_log_cb(conf.get(), &LogFromKafka);
    LATTICE_ASSIGN_OR_RETURN(producer,
                             internal::NewKafkaHandle(RD_KAFKA_PRODUCER, std::move(conf)));
    return Status::Ok();
  }

  static void OnError(rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    const auto code = static_cast<rd_kafka_resp_err_t>(err);
    if (code == RD_KAFKA_RESP_ERR__FATAL) {
      char buf[512];
      const rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, buf, sizeof buf);
      // The consumer's callbacks run on the fetch thread, the producer's on the merge thread.
      Status& target = rk == self->consumer.get() ? self->fetch_failure : self->failure;
      target = Status::Unavailable(std::string("fatal Kafka error: ") + rd_kafka_err2str(orig) +
                                   ": " + buf);
      return;
    }
    // Brokers down, connection refused and the like: librdkafka retries; we keep waiting.
    spdlog::warn("kafka: {} ({})", reason, rd_kafka_err2name(code));
  }

  static void OnDelivery(rd_kafka_t* /*rk*/, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (m->_private == &kChangeTag) {
      // Change events are derived data: a lost one is logged and counted, never fatal.
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++self->changes_undelivered;
        spdlog::warn("a change event was not delivered to '{}': {}", self->options.changes_topic,
                     rd_kafka_err2str(m->err));
      }
      return;
    }
    --self->dead_in_flight;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->delivery_error = std::string("delivering a dead letter to '") +
                             self->options.dead_topic + "': " + rd_kafka_err2str(m->err);
    } else {
      ++self->dead_delivered;
    }
  }

  // --- Rebalances ---------------------------------------------------------------------------

  static void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                          rd_kafka_topic_partition_list_t* list, void* opaque) {
    static_cast<Impl*>(opaque)->Rebalance(rk, err, list);
  }

  /// Sets each partition of `list` to start where the state says (never where Kafka's committed
  /// offsets say) and marks it assigned.
  void PrepareAssignment(rd_kafka_topic_partition_list_t* list) {
    if (!first_assignment) {
      first_assignment = Clock::now();
    }
    std::string names;
    for (int i = 0; i < list->cnt; ++i) {
      rd_kafka_topic_partition_t& tp = list->elems[i];
      PartitionState& p = Partition(tp.partition);
      // Start where the state says, never where Kafka's committed offsets say.
      std::optional<crdt::SourcePosition> pos = store.Position(p.source);
      p.next_offset = pos ? static_cast<std::int64_t>(pos->offset) : -1;
      tp.offset = pos ? static_cast<std::int64_t>(pos->offset) : RD_KAFKA_OFFSET_BEGINNING;
      if (const auto i_p = static_cast<std::size_t>(tp.partition);
          !pos && i_p < start_at_start.size() && start_at_start[i_p] >= 0) {
        // The first offset as asked at start, not the logical BEGINNING: librdkafka would ask
        // for it again, partition by partition, and the first fetch then often came ~45 ms
        // later instead of ~3 ms. Should retention have moved past it meanwhile, the fetch is
        // out of range and auto.offset.reset=earliest starts at the new first offset: the same.
        tp.offset = start_at_start[i_p];
      }
      p.assigned = true;
      p.idle = false;
      p.unknown = true;
      p.moved = false;
      if (options.exit_at_end && p.end_offset < 0) {
        const auto i_p = static_cast<std::size_t>(tp.partition);
        p.end_offset = i_p < end_at_start.size() ? end_at_start[i_p] : -1;
      }
      names += ' ';
      names += std::to_string(tp.partition);
      names += '@';
      names += pos ? std::to_string(pos->offset) : std::string("start");
    }
    spdlog::info("assigned {} partition(s) of {}:{}", list->cnt, options.topic, names);
  }

  // Runs on the fetch thread (inside rd_kafka_consumer_poll), or on the merge thread once the
  // fetch thread is gone (inside rd_kafka_consumer_close). Partition states and the store belong
  // to the merge thread: they are touched only while it waits at a barrier, or has stopped.
  void Rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* list) {
    const bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    ++rebalances;
    // On revocation this is "finish the batch in hand, make it durable, then let go": the merge
    // thread merges what was fetched so far, commits and flushes it.
    EnterBarrier();
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      PrepareAssignment(list);
      rd_kafka_error_t* e = nullptr;
      rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;
      if (cooperative) {
        e = rd_kafka_incremental_assign(rk, list);
      } else {
        r = rd_kafka_assign(rk, list);
      }
      if (e != nullptr) {
        fetch_failure =
            Status::Unavailable(std::string("assigning partitions: ") + rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
      } else if (r != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fetch_failure =
            Status::Unavailable(std::string("assigning partitions: ") + rd_kafka_err2str(r));
      }
      ReleaseBarrier();
      return;
    }
    for (int i = 0; i < list->cnt; ++i) {
      PartitionState& p = Partition(list->elems[i].partition);
      p.assigned = false;
      p.idle = true;
    }
    spdlog::info("{} {} partition(s) of {}",
                 err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "revoked" : "lost", list->cnt,
                 options.topic);
    if (cooperative) {
      rd_kafka_error_t* e = rd_kafka_incremental_unassign(rk, list);
      if (e != nullptr) {
        rd_kafka_error_destroy(e);
      }
    } else {
      (void)rd_kafka_assign(rk, nullptr);
    }
    ReleaseBarrier();
  }

  // --- The hand-over between the fetch and the merge thread ---------------------------------

  /// Fetch thread, inside a rebalance: hands over what was fetched so far marked as a barrier and
  /// waits until the merge thread has merged, committed and flushed it and waits in turn. Returns
  /// at once when the merge loop is not running (before it starts or after it stopped).
  void EnterBarrier() {
    {
      std::lock_guard lock(mu);
      if (!merging) {
        return;
      }
    }
    // A second rebalance event in one poll finds the chunk handed over at the first.
    if (filling == nullptr && !AcquireChunk()) {
      return;  // stopping: the merge thread waits for this thread to end
    }
    DecodePending();
    std::unique_lock lock(mu);
    if (!merging) {
      return;
    }
    filling->barrier = true;
    filling->failure = fetch_failure;
    ready.push_back(filling);
    filling = nullptr;
    cv.notify_all();
    cv.wait(lock, [&] { return at_barrier || !merging; });
  }

  void ReleaseBarrier() {
    std::lock_guard lock(mu);
    at_barrier = false;
    cv.notify_all();
  }

  /// Merge thread, at a barrier chunk: waits until the fetch thread has handled the rebalance.
  void WaitAtBarrier() {
    std::unique_lock lock(mu);
    at_barrier = true;
    cv.notify_all();
    cv.wait(lock, [&] { return !at_barrier; });
  }

  /// Fetch thread: takes a spare chunk to fill; false when stopping.
  bool AcquireChunk() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return fetch_stop.load() || !spare.empty(); });
    if (fetch_stop.load()) {
      return false;
    }
    filling = spare.back();
    spare.pop_back();
    lock.unlock();
    // The last round's messages are destroyed off the merge thread: by the decode helper with its
    // next job (DecodePending), or here when there is none.
    if (to_release.empty()) {
      to_release.swap(filling->messages);
    } else {
      to_release.insert(to_release.end(), filling->messages.begin(), filling->messages.end());
      filling->messages.clear();
    }
    if (to_release.size() > 2 * kChunkMessages) {
      DestroyMessages(to_release);  // small chunks for a while: the helper had no job
    }
    filling->size = 0;
    filling->decoded = 0;
    filling->arena.Reset();
    filling->helper_arena.Reset();
    filling->drained = false;
    filling->barrier = false;
    filling->failure = Status::Ok();
    return true;
  }

  /// Fetch thread: wakes librdkafka's fetcher once its queue has drained after reaching
  /// queued.min.messages. librdkafka 2.0.2 then takes the partitions off the fetch list, and
  /// nothing wakes its broker thread when the application drains the queue: it fetches again
  /// only at its next wake-up, up to 1 s later, while the queue runs dry (a catch-up larger than
  /// the limit sat idle for 0.3-0.8 s per refill). Any request to the leader wakes that broker's
  /// thread, which then re-checks its partitions: one ListOffsets per leader does it.
  void WakeFetcherIfDrained() {
    if (prefetch_limit == 0 || !consumer_queue) {
      return;
    }
    const std::size_t queued = rd_kafka_queue_length(consumer_queue.get());
    const std::size_t low = prefetch_limit / 2;
    if (queued > low) {
      // Near the limit, librdkafka may stop fetching (we look only every chunk, and a fetch
      // response can add thousands at once).
      if (queued + std::min(kChunkMessages, low) >= prefetch_limit) {
        prefetch_stopped = true;
      }
      return;
    }
    if (!prefetch_stopped) {
      return;
    }
    prefetch_stopped = false;
    rd_kafka_topic_partition_list_t* assigned = nullptr;
    if (rd_kafka_assignment(consumer.get(), &assigned) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return;
    }
    PartitionListPtr owned(assigned);
    PartitionListPtr ask(rd_kafka_topic_partition_list_new(4));
    std::vector<std::int32_t> leaders;
    for (int i = 0; i < assigned->cnt; ++i) {
      const std::int32_t p = assigned->elems[i].partition;
      const std::int32_t leader =
          p >= 0 && static_cast<std::size_t>(p) < leader_of.size() ? leader_of[p] : -1;
      if (std::find(leaders.begin(), leaders.end(), leader) != leaders.end()) {
        continue;
      }
      leaders.push_back(leader);
      rd_kafka_topic_partition_list_add(ask.get(), assigned->elems[i].topic, p)->offset =
          RD_KAFKA_OFFSET_END;
    }
    if (ask->cnt > 0) {
      // The request wakes the broker thread as it is queued; the answer is not needed, so a
      // short timeout (a broker that is away only delays this thread by it, once).
      (void)rd_kafka_offsets_for_times(consumer.get(), ask.get(), 100);
      ++fetcher_wakeups;
    }
  }

  /// Fetch thread: hands the chunk being filled to the merge thread.
  void HandOver(bool drained) {
    WakeFetcherIfDrained();
    DecodePending();
    filling->drained = drained;
    filling->failure = fetch_failure;
    std::lock_guard lock(mu);
    ready.push_back(filling);
    filling = nullptr;
    cv.notify_all();
  }

  /// Merge thread: the next chunk, waiting up to `timeout`; nullptr if none came.
  FetchedChunk* NextChunk(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, timeout, [&] { return !ready.empty(); })) {
      return nullptr;
    }
    FetchedChunk* c = ready.front();
    ready.pop_front();
    return c;
  }

  void Recycle(FetchedChunk* c) {
    std::lock_guard lock(mu);
    spare.push_back(c);
    cv.notify_all();
  }

  static void DestroyMessages(std::vector<rd_kafka_message_t*>& messages) {
    // The messages are cold by now (a chunk or more ago, some decoded on the other core):
    // rd_kafka_message_destroy reads `_private` (librdkafka's op) and then the op, so both are
    // prefetched a few messages ahead.
    constexpr std::size_t kAhead = 4;
    const std::size_t n = messages.size();
    for (std::size_t i = 0; i < n; ++i) {
      if (i + 2 * kAhead < n) {
        __builtin_prefetch(&messages[i + 2 * kAhead]->_private);
      }
      if (i + kAhead < n) {
        if (const char* op = static_cast<const char*>(messages[i + kAhead]->_private)) {
          for (std::size_t off = 0; off < 256; off += 64) {
            __builtin_prefetch(op + off);
          }
        }
      }
      rd_kafka_message_destroy(messages[i]);
    }
    messages.clear();
  }

  static void ReleaseMessages(FetchedChunk& c) {
    DestroyMessages(c.messages);
    for (std::size_t i = 0; i < c.size; ++i) {
      c.items[i].message = nullptr;
    }
  }

  /// The fetch thread: polls the consumer (serving rebalances), decodes, hands over chunks.
  void FetchLoop() {
    std::array<rd_kafka_message_t*, kPollBatch> polled{};
    while (!fetch_stop.load(std::memory_order_relaxed)) {
      if (filling == nullptr && !AcquireChunk()) {
        break;
      }
      // An empty chunk waits for its first message in rd_kafka_consumer_poll (which returns as
      // soon as one is there); the rest is taken without waiting, up to kPollBatch per call
      // (rd_kafka_consume_batch_queue on the consumer's queue serves rebalances, errors and
      // partition ends like rd_kafka_consumer_poll, but without its per-message clock reads,
      // partition lock and poll bookkeeping).
      std::size_t n = 0;
      if (filling->size == 0 || !consumer_queue) {
        const int timeout_ms = filling->size == 0 ? 100 : 0;
        polled[0] = rd_kafka_consumer_poll(consumer.get(), timeout_ms);
        n = polled[0] != nullptr ? 1 : 0;
      } else {
        const std::size_t room = std::min(kPollBatch, kChunkMessages - filling->size);
        const ssize_t got =
            rd_kafka_consume_batch_queue(consumer_queue.get(), 0, polled.data(), room);
        n = got > 0 ? static_cast<std::size_t>(got) : 0;
      }
      if (n == 0) {
        if (!fetch_failure.ok()) {
          // The merge thread must learn of it (it may come from a callback after a barrier
          // took the chunk).
          if (filling != nullptr || AcquireChunk()) {
            HandOver(/*drained=*/true);
          }
          break;
        }
        if (filling != nullptr && filling->size > 0) {
          HandOver(/*drained=*/true);
        } else {
          WakeFetcherIfDrained();
        }
        continue;
      }
      std::size_t taken = 0;
      bool stop = false;
      while (taken < n) {
        if (filling == nullptr && !AcquireChunk()) {  // a rebalance handed the chunk over
          stop = true;
          break;
        }
        if (constexpr std::size_t kAhead = 4; taken + kAhead < n) {
          // Fetch reads the message's err, partition and offset (written by librdkafka's broker
          // thread, on either core).
          const char* next = reinterpret_cast<const char*>(polled[taken + kAhead]);
          __builtin_prefetch(next);
          __builtin_prefetch(next + sizeof(rd_kafka_message_t) - 1);
        }
        Fetch(polled[taken++]);
        if (!fetch_failure.ok()) {
          HandOver(/*drained=*/false);
          stop = true;
          break;
        }
        if (filling->size >= kChunkMessages) {
          HandOver(/*drained=*/false);
        }
      }
      for (; taken < n; ++taken) {
        rd_kafka_message_destroy(polled[taken]);
      }
      if (stop) {
        break;
      }
    }
    if (filling != nullptr) {
      Recycle(filling);
      filling = nullptr;
    }
  }

  void StartFetcher() {
    for (std::size_t i = 0; i < kChunksInFlight; ++i) {
      chunks.push_back(std::make_unique<FetchedChunk>());
      spare.push_back(chunks.back().get());
    }
    {
      std::lock_guard lock(mu);
      merging = true;
    }
    helper = std::thread([this] {
      pthread_setname_np(pthread_self(), "lattice-decode");  // for top -H, perf, /proc/*/task
      HelperLoop();
    });
    fetcher = std::thread([this] {
      pthread_setname_np(pthread_self(), "lattice-fetch");
      FetchLoop();
    });
  }

  /// Merge thread: stops the fetch thread and destroys every message it fetched.
  void StopFetcher() {
    {
      std::lock_guard lock(mu);
      merging = false;
      fetch_stop.store(true);
      cv.notify_all();
    }
    // The fetch thread may wait in rd_kafka_consumer_poll (up to 100 ms with an empty chunk):
    // make that poll return now. At the end of an --exit-at-end run this was most of the time
    // from the last merge to the exit.
    if (consumer_queue) {
      rd_kafka_queue_yield(consumer_queue.get());
    }
    if (fetcher.joinable()) {
      fetcher.join();
    }
    if (helper.joinable()) {
      {
        std::lock_guard lock(helper_mu);
        helper_stop = true;
        helper_cv.notify_all();
      }
      helper.join();
    }
    DestroyMessages(to_release);
    DestroyMessages(helper_release);
    for (const auto& c : chunks) {
      ReleaseMessages(*c);
      c->size = 0;
    }
    ready.clear();
  }

  // --- Startup ------------------------------------------------------------------------------

  /// Waits for the brokers and checks that both topics exist; captures the end offsets for
  /// exit_at_end.
  Status CheckTopics() {
    const Clock::time_point start = Clock::now();
    while (true) {
      const rd_kafka_metadata_t* md = nullptr;
      rd_kafka_resp_err_t err = rd_kafka_metadata(consumer.get(), 1, nullptr, &md, 5000);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int partitions_of_topic = -1;
        bool dead_exists = false;
        bool changes_exists = options.changes_topic.empty();
        for (int i = 0; i < md->topic_cnt; ++i) {
          const rd_kafka_metadata_topic_t& t = md->topics[i];
          if (t.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            continue;
          }
          if (options.topic == t.topic) {
            partitions_of_topic = t.partition_cnt;
            leader_of.assign(static_cast<std::size_t>(t.partition_cnt), -1);
            for (int j = 0; j < t.partition_cnt; ++j) {
              if (t.partitions[j].id >= 0 && t.partitions[j].id < t.partition_cnt) {
                leader_of[static_cast<std::size_t>(t.partitions[j].id)] = t.partitions[j].leader;
              }
            }
          }
          if (options.dead_topic == t.topic) {
            dead_exists = true;
          }
          if (options.changes_topic == t.topic) {
            changes_exists = true;
          }
        }
        rd_kafka_metadata_destroy(md);
        if (partitions_of_topic < 0) {
          return Status::NotFound("topic '" + options.topic + "' does not exist on " + Brokers());
        }
        topic_partitions = partitions_of_topic;
        for (const std::int32_t p : options.partitions) {
          if (p >= partitions_of_topic) {
            return Status::InvalidArgument("partition " + std::to_string(p) + " of '" +
                                           options.topic + "' does not exist (it has " +
                                           std::to_string(partitions_of_topic) + ")");
          }
        }
        if (!dead_exists) {
          return Status::NotFound("dead-letter topic '" + options.dead_topic +
                                  "' does not exist on " + Brokers());
        }
        if (!changes_exists) {
          return Status::NotFound("changes topic '" + options.changes_topic +
                                  "' does not exist on " + Brokers() +
                                  " (create it, or give an empty changes topic to publish "
                                  "changes in-process only)");
        }
        if (options.standalone || options.exit_at_end) {
          start_at_start = QueryOffsets(partitions_of_topic, RD_KAFKA_OFFSET_BEGINNING);
        }
        if (!options.exit_at_end) {
          return Status::Ok();
        }
        err = CaptureEndOffsets(partitions_of_topic);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          return Status::Ok();
        }
      }
      if (Stopping()) {
        return Status::Unavailable("stopped while waiting for the brokers at " + Brokers());
      }
      const auto waited =
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count();
      spdlog::warn("waiting for the brokers at {} ({} s so far): {}", Brokers(), waited,
                   rd_kafka_err2str(err));
    }
  }

  /// The first (`which` = RD_KAFKA_OFFSET_BEGINNING) or end (RD_KAFKA_OFFSET_END) offset of
  /// every partition of the topic, -1 where the answer failed. One ListOffsets request per leader
  /// for all partitions (a query per partition is one round trip each: 6-70 ms for 64 partitions
  /// on the dev broker).
  std::vector<std::int64_t> QueryOffsets(int partition_count, std::int64_t which) {
    std::vector<std::int64_t> offsets(static_cast<std::size_t>(partition_count), -1);
    PartitionListPtr list(rd_kafka_topic_partition_list_new(partition_count));
    for (std::int32_t p = 0; p < partition_count; ++p) {
      // As a ListOffsets timestamp, -2 and -1 mean "the first" and "the end".
      rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), p)->offset = which;
    }
    if (rd_kafka_offsets_for_times(consumer.get(), list.get(), 5000) ==
        RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int i = 0; i < list->cnt; ++i) {
        const rd_kafka_topic_partition_t& tp = list->elems[i];
        if (tp.err == RD_KAFKA_RESP_ERR_NO_ERROR && tp.offset >= 0 && tp.partition >= 0 &&
            tp.partition < partition_count) {
          offsets[static_cast<std::size_t>(tp.partition)] = tp.offset;
        }
      }
    }
    return offsets;
  }

  /// exit_at_end: fills `end_at_start` with each partition's end offset (QueryOffsets); a
  /// partition the batch could not answer is asked alone.
  rd_kafka_resp_err_t CaptureEndOffsets(int partition_count) {
    end_at_start = QueryOffsets(partition_count, RD_KAFKA_OFFSET_END);
    for (std::int32_t p = 0; p < partition_count; ++p) {
      std::int64_t& end = end_at_start[static_cast<std::size_t>(p)];
      if (end >= 0) {
        continue;
      }
      std::int64_t lo = 0;
      const rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
          consumer.get(), options.topic.c_str(), p, &lo, &end, 5000);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        end = -1;
        return err;
      }
    }
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  }

  // --- Per message --------------------------------------------------------------------------

  void DeadLetter(const rd_kafka_message_t* m, std::string_view outcome, std::string_view reason) {
    rd_kafka_headers_t* original = nullptr;
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(m, &original) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      headers = rd_kafka_headers_copy(original);
    } else {
      headers = rd_kafka_headers_new(3);
    }
    scratch.assign(options.topic);
    scratch.push_back('/');
    scratch.append(std::to_string(m->partition));
    scratch.push_back('/');
    scratch.append(std::to_string(m->offset));
    rd_kafka_header_add(headers, "lattice-outcome", -1, outcome.data(),
                        static_cast<ssize_t>(outcome.size()));
    rd_kafka_header_add(headers, "lattice-reason", -1, reason.data(),
                        static_cast<ssize_t>(reason.size()));
    rd_kafka_header_add(headers, "lattice-source", -1, scratch.data(),
                        static_cast<ssize_t>(scratch.size()));
    rd_kafka_timestamp_type_t ts_type;
    const std::int64_t ts = rd_kafka_message_timestamp(m, &ts_type);
    std::size_t value_len = m->len;
    while (true) {
      const rd_kafka_resp_err_t err = rd_kafka_producev(
          producer.get(), RD_KAFKA_V_TOPIC(options.dead_topic.c_str()),
          RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, value_len),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_TIMESTAMP(ts_type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? 0 : ts),
          RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(&kDeadLetterTag), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++dead_in_flight;
        return;  // the producer owns the headers now
      }
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(producer.get(), 100);
        continue;
      }
      if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && value_len > kTruncatedValueBytes) {
        // Keep the start of the value and say how long it was.
        const std::string original_len = std::to_string(m->len);
        rd_kafka_header_add(headers, "lattice-truncated", -1, original_len.data(),
                            static_cast<ssize_t>(original_len.size()));
        value_len = kTruncatedValueBytes;
        continue;
      }
      rd_kafka_headers_destroy(headers);
      failure = Status::Unavailable("producing a dead letter to '" + options.dead_topic +
                                    "': " + rd_kafka_err2str(err));
      return;
    }
  }

  /// Fetch thread: identifies and decodes one message into the chunk being filled (or notes a
  /// partition end); takes ownership of `m`.
  void Fetch(rd_kafka_message_t* m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (m->rkt != nullptr && options.topic == rd_kafka_topic_name(m->rkt)) {
        FetchedMessage& it = NextItem();
        it.kind = FetchedMessage::Kind::kEnd;
        it.partition = m->partition;
        it.offset = m->offset;
      }
      rd_kafka_message_destroy(m);
      return;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
          m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
        fetch_failure = Status::Unavailable(std::string("consuming '") + options.topic +
                                            "': " + rd_kafka_message_errstr(m));
      } else {
        spdlog::warn("consuming {}: {}", options.topic, rd_kafka_message_errstr(m));
      }
      rd_kafka_message_destroy(m);
      return;
    }
    FetchedMessage& it = NextItem();
    it.kind = FetchedMessage::Kind::kPending;  // decoded before the chunk is handed over
    it.partition = m->partition;
    it.offset = m->offset;
    it.message = m;
    it.bytes = m->len;
    filling->messages.push_back(m);
  }

  /// Identifies and decodes one polled message with `l`'s decoder, copying what it keeps into
  /// `arena`; `copy` is its body's copy in the lane's group text, if it has one (the same bytes).
  /// Runs on the fetch thread or the decode helper: touches only `it`, `l` and `arena`.
  void DecodeItem(FetchedMessage& it, DecodeLane& l, internal::Arena& arena,
                  std::string_view copy) const {
    if (it.kind != FetchedMessage::Kind::kPending) {
      return;
    }
    rd_kafka_message_t* m = it.message;
    Result<MessageEnvelope> env = MessageEnvelope();
    {
      internal::DetachedHeaders headers;  // freed here, on the thread that parsed them
      env = l.identity.Identify(internal::MessageFieldsOf(m, headers.Detach(m)));
    }
    if (!env.ok()) {
      it.kind = FetchedMessage::Kind::kBad;
      it.error = arena.Copy(env.status().message());
      return;
    }
    if (m->payload == nullptr) {
      it.kind = FetchedMessage::Kind::kBad;
      it.error = "the message has no value (a shard body is a JSON object)";
      return;
    }
    const std::string_view body =
        copy.data() != nullptr ? copy
                               : std::string_view(static_cast<const char*>(m->payload), m->len);
    Result<const core::Shard*> shard = l.decoder.DecodeBody(body, env->blade, env->seq, env->ts);
    if (!shard.ok()) {
      it.kind = FetchedMessage::Kind::kBad;
      it.error = arena.Copy(shard.status().message());
      return;
    }
    it.kind = FetchedMessage::Kind::kShard;
    it.ts = env->ts;
    CopyShard(**shard, arena, it.shard);
  }

  /// Fetch thread: decodes the chunk's items not decoded yet; a big range is split with the
  /// decode helper (the fetch thread takes the front half, the helper the back half).
  void DecodePending() {
    FetchedChunk& c = *filling;
    const std::size_t begin = c.decoded;
    const std::size_t end = c.size;
    if (begin >= end) {
      return;
    }
    std::size_t mid = end;
    if (end - begin >= kSplitMessages && helper.joinable()) {
      mid = begin + (end - begin) / 2;
      std::lock_guard lock(helper_mu);
      helper_chunk = &c;
      helper_begin = mid;
      helper_end = end;
      helper_release.swap(to_release);  // it was emptied by the helper's last job
      helper_job = true;
      helper_cv.notify_all();
    }
    DecodeRange(c, begin, mid, lane, c.arena);
    if (mid != end) {
      std::unique_lock lock(helper_mu);
      helper_cv.wait(lock, [&] { return !helper_job; });
    }
    c.decoded = end;
  }

  /// Fetch thread or decode helper: decodes items [begin, end) of `c` with `l`, a group at a
  /// time: the group's bodies are copied into the lane's text (which the decoder's own padded
  /// copy made anyway), then decoded over it (ShardDecoder::ExpectBodies).
  void DecodeRange(FetchedChunk& c, std::size_t begin, std::size_t end, DecodeLane& l,
                   internal::Arena& arena) const {
    char* const text = l.text.get();
    std::size_t i = begin;
    while (i < end) {
      std::size_t j = i;
      std::size_t used = 0;
      l.bodies.clear();
      for (; j < end; ++j) {
        PrefetchForCopy(c, j, end);
        const FetchedMessage& it = c.items[j];
        std::string_view copy;
        if (it.kind == FetchedMessage::Kind::kPending && it.message->payload != nullptr &&
            it.message->len < kGroupBytes) {  // a larger body is decoded where it is
          const std::size_t n = it.message->len;
          if (used + n + 1 > kGroupBytes) {
            break;
          }
          std::memcpy(text + used, it.message->payload, n);
          text[used + n] = '\n';
          copy = std::string_view(text + used, n);
          used += n + 1;
        }
        l.bodies.push_back(copy);
      }
      std::memset(text + used, '\n', core::ShardDecoder::kPadding);
      l.decoder.ExpectBodies(std::string_view(text, used + core::ShardDecoder::kPadding));
      for (std::size_t k = i; k < j; ++k) {
        PrefetchForDecode(c, k, j);
        arena.PrefetchAhead(256);
        DecodeItem(c.items[k], l, arena, l.bodies[k - i]);
      }
      i = j;
    }
    l.decoder.ExpectBodies({});
  }

  /// DecodeRange, before copying the body of c.items[i] of [.., end): prefetches the item a few
  /// places ahead (read here, written when decoded; for the helper, the fetch thread wrote it on
  /// the other core), its message (librdkafka's broker thread wrote it, on either core), and the
  /// value of a nearer one.
  static void PrefetchForCopy(const FetchedChunk& c, std::size_t i, std::size_t end) {
    constexpr std::size_t kAhead = 4;
    if (i + 3 * kAhead < end) {
      const char* p = reinterpret_cast<const char*>(&c.items[i + 3 * kAhead]);
      for (std::size_t off = 0; off < sizeof(FetchedMessage); off += 64) {
        internal::PrefetchForWrite(p + off);
      }
    }
    if (i + 2 * kAhead < end) {
      const FetchedMessage& it = c.items[i + 2 * kAhead];
      if (it.message != nullptr) {
        const char* m = reinterpret_cast<const char*>(it.message);
        // The public rd_kafka_message_t, and librdkafka's own fields after it that its header
        // parse reads when the message is decoded (136 bytes in all in 2.0.2; only a prefetch
        // distance).
        for (std::size_t off = 0; off < 136; off += 64) {
          __builtin_prefetch(m + off);
        }
      }
    }
    if (i + kAhead < end) {
      const FetchedMessage& it = c.items[i + kAhead];
      if (it.message != nullptr && it.message->payload != nullptr) {
        const char* v = static_cast<const char*>(it.message->payload);
        const std::size_t bytes = std::min<std::size_t>(it.message->len + 64, 512);
        for (std::size_t off = 0; off < bytes; off += 64) {
          __builtin_prefetch(v + off);
        }
      }
    }
  }

  /// DecodeRange, before decoding c.items[i] of [.., end): prefetches what decoding the items a
  /// few places ahead writes first: the item and its entry storage (the merge thread read them
  /// last, on the other core). DecodeItem otherwise waits for each of these misses in turn.
  static void PrefetchForDecode(const FetchedChunk& c, std::size_t i, std::size_t end) {
    constexpr std::size_t kAhead = 4;
    if (i + 2 * kAhead < end) {
      const char* p = reinterpret_cast<const char*>(&c.items[i + 2 * kAhead]);
      for (std::size_t off = 0; off < sizeof(FetchedMessage); off += 64) {
        internal::PrefetchForWrite(p + off);
      }
    }
    if (i + kAhead < end) {
      const FetchedMessage& it = c.items[i + kAhead];
      const char* e = reinterpret_cast<const char*>(it.shard.entries.data());
      const std::size_t bytes =
          std::min<std::size_t>(it.shard.entries.capacity() * sizeof(core::BodyEntry), 384);
      for (std::size_t off = 0; off < bytes; off += 64) {
        internal::PrefetchForWrite(e + off);
      }
    }
  }

  /// The decode helper thread: decodes the ranges DecodePending() posts.
  void HelperLoop() {
    std::unique_lock lock(helper_mu);
    while (true) {
      helper_cv.wait(lock, [&] { return helper_stop || helper_job; });
      if (helper_stop) {
        return;
      }
      FetchedChunk& c = *helper_chunk;
      const std::size_t begin = helper_begin;
      const std::size_t end = helper_end;
      lock.unlock();
      DecodeRange(c, begin, end, helper_lane, c.helper_arena);
      // Destroying a message frees librdkafka's op and its share of the fetch buffer, taken off
      // the fetch thread (its header list was freed when it was decoded: DetachedHeaders).
      DestroyMessages(helper_release);
      lock.lock();
      helper_job = false;
      helper_cv.notify_all();
    }
  }

  FetchedMessage& NextItem() {
    FetchedChunk& c = *filling;
    if (c.items.size() <= c.size) {
      c.items.emplace_back();
    }
    // The items ahead are written next, and the merge thread read them last, on the other core.
    if (constexpr std::size_t kAhead = 8; c.size + kAhead < c.items.size()) {
      internal::PrefetchForWrite(&c.items[c.size + kAhead]);
    }
    FetchedMessage& it = c.items[c.size++];
    it.message = nullptr;
    return it;
  }

  /// Merge thread, before merging c.items[i]: the messages were decoded on the fetch and helper
  /// threads, so their shards are in another core's cache or in memory, and so are the child
  /// index slots their paths look up. Prefetches, in stages, the message 3 * kAhead ahead, the
  /// shard of the one 2 * kAhead ahead (entries, blade, keys), its lookups in the state kAhead
  /// ahead (the child index's control bytes) and 3 ahead the child node those name (its key is
  /// the lookup's last miss, and the merge reads the node right after).
  void PrefetchAhead(const FetchedChunk& c, std::size_t i) const {
    constexpr std::size_t kAhead = 4;
    if (i + 3 * kAhead < c.size) {
      internal::PrefetchObject(c.items[i + 3 * kAhead]);
    }
    if (i + 2 * kAhead < c.size && c.items[i + 2 * kAhead].kind == FetchedMessage::Kind::kShard) {
      internal::PrefetchShardData(c.items[i + 2 * kAhead].shard);
    }
    if (i + kAhead < c.size && c.items[i + kAhead].kind == FetchedMessage::Kind::kShard) {
      store.Prefetch(c.items[i + kAhead].shard);
    }
    if (constexpr std::size_t kChild = 3;
        i + kChild < c.size && c.items[i + kChild].kind == FetchedMessage::Kind::kShard) {
      store.PrefetchChild(c.items[i + kChild].shard);
    }
  }

  /// Merge thread: merges one fetched message (dead-lettering what is rejected) or notes a
  /// partition end. Returns 1 for a message of an assigned partition, 0 otherwise.
  std::size_t Merge(const FetchedMessage& it) {
    PartitionState& p = Partition(it.partition);
    if (it.kind == FetchedMessage::Kind::kEnd) {
      p.idle = true;
      p.unknown = false;
      if (p.next_offset < it.offset) {
        p.next_offset = it.offset;  // an empty or compacted-away range: nothing to merge
      }
      return 0;
    }
    if (!p.assigned || (p.next_offset >= 0 && it.offset < p.next_offset)) {
      return 0;  // from before a revocation or a seek: not ours, or already merged
    }
    if (p.next_offset >= 0 && it.offset > p.next_offset) {
      spdlog::warn("{}: offsets {}..{} are gone from the broker (retention?) and were skipped",
                   p.source, p.next_offset, it.offset - 1);
    }
    const rd_kafka_message_t* m = it.message;  // read only to dead-letter it
    ++report.messages;
    report.bytes += it.bytes;
    if (it.kind == FetchedMessage::Kind::kBad) {
      ++report.bad;
      DeadLetter(m, "bad", it.error);
    } else {
      p.max_ts = std::max(p.max_ts, it.ts);
      crdt::ApplyResult r = store.Apply(it.shard);
      switch (r.outcome) {
        case crdt::Outcome::kApplied:
          ++report.applied;
          break;
        case crdt::Outcome::kDuplicate:
          ++report.duplicates;
          break;
        case crdt::Outcome::kConflict:
          ++report.conflicts;
          DeadLetter(m, "conflict", r.reason);
          break;
        case crdt::Outcome::kLate:
          ++report.late;
          DeadLetter(m, "late", r.reason);
          break;
        case crdt::Outcome::kInvalid:
          ++report.bad;
          DeadLetter(m, "bad", r.reason);
          break;
      }
    }
    p.next_offset = it.offset + 1;
    p.moved = true;
    p.idle = false;
    p.unknown = false;
    batch_dirty = true;
    return 1;
  }

  // --- Commits ------------------------------------------------------------------------------

  /// Waits until every dead letter produced so far is delivered.
  Status DeliverDeadLetters() {
    const Clock::time_point start = Clock::now();
    Clock::time_point next_log = start + std::chrono::seconds(5);
    while (dead_in_flight > 0) {
      // Serve delivery reports until the dead letters are through (change events may still be
      // queued behind them; they need not be waited for).
      rd_kafka_poll(producer.get(), 100);
      if (!delivery_error.empty()) {
        return Status::Unavailable(delivery_error);
      }
      if (dead_in_flight == 0) {
        break;
      }
      const Clock::time_point now = Clock::now();
      if (Stopping() && now - start > kStopDeliveryWait) {
        return Status::Unavailable(std::to_string(dead_in_flight) +
                                   " dead letter(s) could not be delivered to '" +
                                   options.dead_topic +
                                   "'; their batch was not committed and "
                                   "will be read again");
      }
      if (now >= next_log) {
        spdlog::warn("waiting for {} dead letter(s) to be delivered to '{}' before committing",
                     dead_in_flight, options.dead_topic);
        next_log = now + std::chrono::seconds(5);
      }
    }
    report.dead_letters = dead_delivered;
    return Status::Ok();
  }

  std::int64_t Watermark() const {
    // The slowest partition that is still delivering; when all are idle, the newest of all.
    std::int64_t slowest = std::numeric_limits<std::int64_t>::max();
    std::int64_t newest = kNoTs;
    bool any_active = false;
    for (const auto& p : partitions) {
      if (p && p->assigned && p->unknown) {
        return kNoTs;  // a partition that has not started yet may hold the oldest shards
      }
    }
    for (const auto& p : partitions) {
      if (!p || p->max_ts == kNoTs) {
        continue;
      }
      newest = std::max(newest, p->max_ts);
      if (p->assigned && !p->idle) {
        slowest = std::min(slowest, p->max_ts);
        any_active = true;
      }
    }
    return any_active ? slowest : newest;
  }

  /// Commits what was merged since the last commit with the offsets that produced it.
  Status CommitBatch(bool flush) {
    LATTICE_RETURN_IF_ERROR(failure);
    if (batch_dirty) {
      LATTICE_RETURN_IF_ERROR(DeliverDeadLetters());
      for (const auto& p : partitions) {
        if (p && p->moved) {
          const auto offset = static_cast<std::uint64_t>(p->next_offset);
          store.StagePosition({p->source, offset, offset});
          p->moved = false;
        }
      }
      const std::int64_t wm = Watermark();
      if (wm != kNoTs) {
        store.AdvanceWatermark(wm);
      }
      LATTICE_RETURN_IF_ERROR(store.Commit());
      commit_no = store.commits_made();
      if (collect_changes && !merging_changes.empty()) {
        unpublished.emplace_back(commit_no, std::move(merging_changes));
        merging_changes.clear();
      }
      batch_dirty = false;
      kafka_commit_due = true;
      ++report.batches;
    }
    if (flush) {
      LATTICE_RETURN_IF_ERROR(store.Flush());
      PublishChanges(commit_no);
    } else {
      // The store's writer reports each batch once it is written: publish those, never more.
      PublishChanges(store.commits_durable());
    }
    return Status::Ok();
  }

  /// Publishes the changes of every committed batch up to `durable` (a commit number).
  void PublishChanges(std::uint64_t durable) {
    const std::int64_t wall = WallMs();
    while (!unpublished.empty() && unpublished.front().first <= durable) {
      for (const crdt::Change& c : unpublished.front().second) {
        lag_published.Add(wall - c.ts);
        for (const auto& [prefix, callback] : subscribers) {
          if (c.path.starts_with(prefix)) {
            callback(c);
          }
        }
        if (!options.changes_topic.empty()) {
          change_json.clear();
          AppendChangeJson(change_json, c);
          while (true) {
            const rd_kafka_resp_err_t err = rd_kafka_producev(
                producer.get(), RD_KAFKA_V_TOPIC(options.changes_topic.c_str()),
                RD_KAFKA_V_KEY(c.path.data(), c.path.size()),
                RD_KAFKA_V_VALUE(change_json.data(), change_json.size()),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(c.ts),
                RD_KAFKA_V_OPAQUE(&kChangeTag), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
              rd_kafka_poll(producer.get(), 100);
              continue;
            }
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
              ++changes_undelivered;
              spdlog::warn("a change event was not produced to '{}': {}", options.changes_topic,
                           rd_kafka_err2str(err));
            }
            break;
          }
        }
        ++report.changes;
      }
      unpublished.pop_front();
    }
  }

  /// Commits the durable offsets to Kafka too (asynchronously), for lag tools. REQUIRES: Flush().
  void CommitToKafka(bool async) {
    if (!kafka_commit_due) {
      return;
    }
    PartitionListPtr list(rd_kafka_topic_partition_list_new(16));
    for (const auto& p : partitions) {
      if (!p || !p->assigned) {
        continue;
      }
      if (std::optional<crdt::SourcePosition> pos = store.Position(p->source)) {
        rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), p->partition)->offset =
            static_cast<std::int64_t>(pos->offset);
      }
    }
    if (list->cnt > 0) {
      const rd_kafka_resp_err_t err = rd_kafka_commit(consumer.get(), list.get(), async ? 1 : 0);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        spdlog::debug("committing offsets to Kafka (for lag tools): {}", rd_kafka_err2str(err));
      }
    }
    kafka_commit_due = false;
    last_kafka_commit = Clock::now();
  }

  /// Messages the broker holds beyond what was merged, over the assigned partitions: from the
  /// high watermarks librdkafka cached from its last fetch responses (no request is sent) or, with
  /// exit_at_end, the ends captured at start.
  std::int64_t Backlog() const {
    std::int64_t total = 0;
    for (const auto& p : partitions) {
      if (!p || !p->assigned) {
        continue;
      }
      std::int64_t lo = -1, hi = -1;
      if (rd_kafka_get_watermark_offsets(consumer.get(), options.topic.c_str(), p->partition, &lo,
                                         &hi) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        lo = hi = -1;
      }
      hi = std::max(hi, p->end_offset);
      if (hi < 0) {
        continue;
      }
      std::int64_t from = p->next_offset;
      if (from < 0) {
        const auto i_p = static_cast<std::size_t>(p->partition);
        from =
            std::max<std::int64_t>({lo, i_p < start_at_start.size() ? start_at_start[i_p] : 0, 0});
      }
      total += std::max<std::int64_t>(0, hi - from);
    }
    return total;
  }

  bool ReachedEnd() const {
    bool any = false;
    for (const auto& p : partitions) {
      if (!p || !p->assigned) {
        continue;
      }
      any = true;
      if (p->end_offset < 0) {
        return false;
      }
      if (p->end_offset > 0 && p->next_offset < p->end_offset) {
        return false;
      }
    }
    return any;
  }

  // --- Progress -----------------------------------------------------------------------------

  void LogProgress(double interval_s, std::uint64_t messages, std::uint64_t batches) {
    std::int64_t total_lag = 0;
    std::string lags;
    int assigned = 0;
    for (const auto& p : partitions) {
      if (!p || !p->assigned) {
        continue;
      }
      ++assigned;
      std::int64_t lo = 0, hi = 0;
      if (rd_kafka_get_watermark_offsets(consumer.get(), options.topic.c_str(), p->partition, &lo,
                                         &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
          hi < 0) {
        continue;
      }
      const std::int64_t lag = std::max<std::int64_t>(0, hi - std::max(lo, p->next_offset));
      total_lag += lag;
      if (lag > 0) {
        lags += ' ';
        lags += std::to_string(p->partition);
        lags += '=';
        lags += std::to_string(lag);
      }
    }
    const double per_batch = batches > 0 ? 1000.0 / static_cast<double>(batches) : 0.0;
    spdlog::info(
        "{:.0f} msg/s, {} batches ({:.0f} msg avg, limit {}), {} partitions, lag {}{}{}; "
        "lag_ms p50/p99: merged {}, published {}; batch ms avg: wait {:.1f}, fill {:.1f}, "
        "commit {:.1f}; totals: {} applied, {} duplicate, {} rejected",
        interval_s > 0 ? static_cast<double>(messages) / interval_s : 0.0, batches,
        batches > 0 ? static_cast<double>(messages) / static_cast<double>(batches) : 0.0,
        batch_limit, assigned, total_lag,
        lags.empty() ? "" : " (partition=lag:", lags.empty() ? "" : lags + ")",
        lag_merged.TakePercentiles(), lag_published.TakePercentiles(), wait_s * per_batch,
        fill_s * per_batch, commit_s * per_batch, report.applied, report.duplicates,
        report.rejected());
    wait_s = fill_s = commit_s = 0;
  }

  // --- The loop -----------------------------------------------------------------------------

  Result<AggregatorReport> Run() {
    const Clock::time_point start = Clock::now();
    LATTICE_RETURN_IF_ERROR(CheckTopics());
    collect_changes = !subscribers.empty() || !options.changes_topic.empty();
    if (collect_changes) {
      store.SetChangeSink([this](const crdt::Change& c) { merging_changes.push_back(c); });
    }
    // The client learns the partitions' leader before they are assigned (the topic exists:
    // CheckTopics). Otherwise the assignment creates the topic, each partition's first offset
    // query races the leader lookup, finds none and retries after librdkafka's fixed 500 ms
    // backoff: half a second of nothing after every assignment, in a group or standalone. Best
    // effort: without it the assignment still works, later.
    shards_topic = rd_kafka_topic_new(consumer.get(), options.topic.c_str(), nullptr);
    if (const rd_kafka_metadata_t* md = nullptr;
        shards_topic != nullptr && rd_kafka_metadata(consumer.get(), 0, shards_topic, &md, 5000) ==
                                       RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(md);
    }
    // The same for the producer: a topic it has not looked up when the first message for it is
    // produced waits for librdkafka's 1 s metadata timer, so the first change events (and dead
    // letters) of a run went out about a second late, and a short run waited for them at exit.
    for (const std::string* name : {&options.changes_topic, &options.dead_topic}) {
      if (name->empty()) {
        continue;
      }
      rd_kafka_topic_t* t = rd_kafka_topic_new(producer.get(), name->c_str(), nullptr);
      if (t == nullptr) {
        continue;
      }
      producer_topics.push_back(t);
      if (const rd_kafka_metadata_t* md = nullptr;
          rd_kafka_metadata(producer.get(), 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_metadata_destroy(md);
      }
    }
    if (options.standalone) {
      // Manual assignment, no group: nothing to wait for, and no rebalance ever.
      PartitionListPtr list(rd_kafka_topic_partition_list_new(topic_partitions));
      if (options.partitions.empty()) {
        for (std::int32_t p = 0; p < topic_partitions; ++p) {
          rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), p);
        }
      } else {
        for (const std::int32_t p : options.partitions) {
          rd_kafka_topic_partition_list_add(list.get(), options.topic.c_str(), p);
        }
      }
      PrepareAssignment(list.get());
      if (rd_kafka_resp_err_t err = rd_kafka_assign(consumer.get(), list.get()); err) {
        return Status::Unavailable(std::string("assigning partitions of '") + options.topic +
                                   "': " + rd_kafka_err2str(err));
      }
      spdlog::info("consuming {} at {} standalone (no consumer group)", options.topic, Brokers());
    } else {
      PartitionListPtr topics(rd_kafka_topic_partition_list_new(1));
      rd_kafka_topic_partition_list_add(topics.get(), options.topic.c_str(), RD_KAFKA_PARTITION_UA);
      if (rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer.get(), topics.get()); err) {
        return Status::Unavailable(std::string("subscribing to '") + options.topic +
                                   "': " + rd_kafka_err2str(err));
      }
      spdlog::info("consuming {} at {} as a member of group '{}'", options.topic, Brokers(),
                   options.group);
    }
    max_batch =
        std::max(options.max_batch.value_or(collect_changes ? AggregatorOptions::kMaxBatchPublishing
                                                            : AggregatorOptions::kMaxBatch),
                 options.min_batch);
    batch_limit = std::clamp(options.min_batch, std::size_t{1}, max_batch);
    report.max_batch = max_batch;
    StartFetcher();
    Clock::time_point last_log = Clock::now();
    std::uint64_t log_messages = report.messages;
    std::uint64_t log_batches = report.batches;
    Status status;
    while (status.ok()) {
      if (Stopping()) {
        break;
      }
      // One batch: block for its first message, then take what is there until the limit or
      // the batch's time budget.
      std::size_t n = 0;
      const Clock::time_point batch_start = Clock::now();
      // A catch-up: the broker already holds this batch. Take the largest batch at once instead
      // of doubling up to it, and do not end the batch when the consumer's queue runs empty
      // (the fetcher is a round trip behind, more is on its way). Every commit writes each
      // record changed since the previous one, so a backlog merged in 13 commits instead of 8
      // writes ~2x the records (WAL bytes) for the same shards. The time budget still bounds
      // the batch.
      const std::int64_t backlog = Backlog();
      if (backlog >= static_cast<std::int64_t>(max_batch)) {
        batch_limit = max_batch;
      }
      const bool catching_up = backlog >= static_cast<std::int64_t>(batch_limit);
      std::optional<Clock::time_point> first_chunk_at;
      bool short_poll = false;
      while (n < batch_limit) {
        auto timeout = std::chrono::milliseconds(100);
        if (n > 0) {
          const auto spent =
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - batch_start);
          if (spent.count() >= options.max_batch_ms) {
            break;
          }
          timeout = std::chrono::milliseconds(options.max_batch_ms) - spent;
        }
        FetchedChunk* c = NextChunk(timeout);
        if (c == nullptr) {
          short_poll = true;
          break;
        }
        const std::int64_t wall = WallMs();
        if (!first_chunk_at) {
          first_chunk_at = Clock::now();
        }
        for (std::size_t i = 0; i < c->size; ++i) {
          PrefetchAhead(*c, i);
          if (c->items[i].kind == FetchedMessage::Kind::kShard) {
            lag_merged.Add(wall - c->items[i].ts);
          }
          n += Merge(c->items[i]);
        }
        if (!c->failure.ok() && failure.ok()) {
          failure = c->failure;
        }
        const bool drained = c->drained;
        if (c->barrier) {
          // A rebalance waits on the fetch thread: make everything merged durable first.
          if (failure.ok()) {
            if (Status s = CommitBatch(/*flush=*/true); !s.ok()) {
              failure = s;
            }
          }
          Recycle(c);
          WaitAtBarrier();
        } else {
          Recycle(c);
        }
        if (!failure.ok() || Stopping()) {
          short_poll = short_poll || drained;
          break;
        }
        // A chunk that emptied the consumer's queue ends the batch: the topic is quiet (unless
        // catching up, above). So does the end of an exit_at_end run.
        if ((drained && !catching_up) || (options.exit_at_end && ReachedEnd())) {
          short_poll = short_poll || drained;
          break;
        }
      }
      status = failure;
      if (!status.ok()) {
        break;
      }
      const Clock::time_point filled = Clock::now();
      if (n > 0 && first_chunk_at) {
        wait_s += std::chrono::duration<double>(*first_chunk_at - batch_start).count();
        fill_s += std::chrono::duration<double>(filled - *first_chunk_at).count();
      }
      status = CommitBatch(/*flush=*/false);
      if (!status.ok()) {
        break;
      }
      if ((n == 0 || short_poll) && !unpublished.empty()) {
        // Below capacity (the consumer's queue ran dry): wait for the write now and publish at
        // once instead of two batches later; the merge thread has nothing else to do. At
        // capacity batches end full and stay pipelined.
        status = store.Flush();
        if (!status.ok()) {
          break;
        }
        PublishChanges(commit_no);
      }
      if (n > 0) {
        commit_s += std::chrono::duration<double>(Clock::now() - filled).count();
      }
      rd_kafka_poll(producer.get(), 0);
      // Adapt: grow while batches fill up, shrink while the topic is quiet.
      if (n >= batch_limit) {
        batch_limit = std::min(batch_limit * 2, max_batch);
      } else if (short_poll && n < batch_limit / 4) {
        batch_limit = std::max(batch_limit / 2, std::max<std::size_t>(options.min_batch, 1));
      }
      const Clock::time_point now = Clock::now();
      if (kafka_commit_due && now - last_kafka_commit >= kKafkaCommitInterval) {
        status = store.Flush();
        if (!status.ok()) {
          break;
        }
        CommitToKafka(/*async=*/true);
      }
      if (options.log_interval_s > 0 &&
          std::chrono::duration<double>(now - last_log).count() >= options.log_interval_s) {
        LogProgress(std::chrono::duration<double>(now - last_log).count(),
                    report.messages - log_messages, report.batches - log_batches);
        last_log = now;
        log_messages = report.messages;
        log_batches = report.batches;
      }
      if (options.exit_at_end && ReachedEnd()) {
        report.reached_end = true;
        break;
      }
    }
    // What the fetch thread decoded beyond the last merged message is dropped: it is read again
    // next time, since its offsets are not committed.
    StopFetcher();
    if (status.ok()) {
      status = CommitBatch(/*flush=*/true);
    }
    if (status.ok()) {
      CommitToKafka(/*async=*/false);
    } else {
      failure = status;
    }
    // Leave the group cleanly (the revocation callback runs here, on this thread, and only lets
    // the partitions go: everything merged is committed above).
    rd_kafka_consumer_close(consumer.get());
    if (status.ok()) {
      status = failure;
    }
    if (collect_changes) {
      store.SetChangeSink({});
    }
    // Change events and dead letters still queued get a last chance to go out.
    if (rd_kafka_flush(producer.get(), 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      spdlog::warn("{} message(s) to Kafka were still undelivered at exit",
                   rd_kafka_outq_len(producer.get()));
    }
    report.dead_letters = dead_delivered;
    report.rebalances = rebalances;
    report.fetcher_wakeups = fetcher_wakeups;
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (first_assignment) {
      report.assigned_seconds =
          std::chrono::duration<double>(Clock::now() - *first_assignment).count();
    }
    if (!status.ok()) {
      return status;
    }
    return report;
  }
};

Aggregator::Aggregator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Aggregator::~Aggregator() = default;

Result<std::unique_ptr<Aggregator>> Aggregator::Create(crdt::StateStore& store,
                                                       AggregatorOptions options) {
  if (options.topic.empty() || options.group.empty() || options.dead_topic.empty()) {
    return Status::InvalidArgument("topic, group and dead-letter topic must not be empty");
  }
  LATTICE_RETURN_IF_ERROR(RequireBrokers(options.kafka).status());
  if (options.min_batch == 0 || (options.max_batch && *options.max_batch < options.min_batch)) {
    return Status::InvalidArgument("batch limits: need 1 <= min_batch <= max_batch");
  }
  auto impl = std::make_unique<Impl>(store, std::move(options));
  LATTICE_RETURN_IF_ERROR(impl->CreateClients());
  return std::unique_ptr<Aggregator>(new Aggregator(std::move(impl)));
}

Result<AggregatorReport> Aggregator::Run() { return impl_->Run(); }

void Aggregator::Subscribe(std::string prefix, Subscriber callback) {
  impl_->subscribers.emplace_back(std::move(prefix), std::move(callback));
}

}  // namespace lattice::ingest
