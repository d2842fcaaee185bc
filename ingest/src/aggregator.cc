// The aggregator loop: poll a batch from the consumer group, decode, merge, dead-letter, commit
// state and offsets in one WriteBatch (see aggregator.h and docs/architecture.md).
#include "lattice/ingest/aggregator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include "kafka_conf.h"
#include "lattice/core/json_text.h"
#include "lattice/core/shard.h"
#include "lattice/ingest/message_identity.h"

namespace lattice::ingest {

namespace {

using Clock = std::chrono::steady_clock;

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
  core::ShardDecoder decoder;
  MessageIdentity identity;
  // Indexed by partition number; entries stay when unassigned (assigned = false).
  std::vector<std::unique_ptr<PartitionState>> partitions;
  std::vector<std::int64_t> end_at_start;  // exit_at_end: high watermarks captured at start
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
  std::string scratch;
  std::optional<Clock::time_point> first_assignment;
  // The change feed: collected while merging, published once the batch is durable.
  std::vector<std::pair<std::string, Subscriber>> subscribers;
  bool collect_changes = false;
  std::vector<crdt::Change> merging_changes;  // of the batch being merged
  // Committed batches not yet known durable: (commit number, their changes).
  std::deque<std::pair<std::uint64_t, std::vector<crdt::Change>>> unpublished;
  std::uint64_t commit_no = 0;
  std::uint64_t changes_undelivered = 0;
  std::string change_json;

  Impl(crdt::StateStore& s, AggregatorOptions o)
      : store(s), options(std::move(o)), identity(options.default_blade) {}

  const std::string& Brokers() const { return options.kafka.brokers; }

  bool Stopping() const {
    return options.stop != nullptr && options.stop->load(std::memory_order_relaxed);
  }

  PartitionState& Partition(std::int32_t p) {
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
        {"queued.min.messages", "200000"},
        {"queued.max.messages.kbytes", "262144"},
        {"fetch.wait.max.ms", "100"},
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

    const internal::KafkaProperties producer_defaults = {
        {"client.id", "lattice-aggregate"},
        {"enable.idempotence", "true"},
        // Dead letters are delivered before the offsets that pass them are committed: while a
        // broker is away they wait (forever), they are never dropped.
        {"message.timeout.ms", "0"},
        {"linger.ms", "5"},
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
      self->failure = Status::Unavailable(std::string("fatal Kafka error: ") +
                                          rd_kafka_err2str(orig) + ": " + buf);
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

  void Rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* list) {
    const bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    ++report.rebalances;
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
        failure =
            Status::Unavailable(std::string("assigning partitions: ") + rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
      } else if (r != RD_KAFKA_RESP_ERR_NO_ERROR) {
        failure = Status::Unavailable(std::string("assigning partitions: ") + rd_kafka_err2str(r));
      }
      return;
    }
    // Revoked (or lost): finish the batch in hand, make it durable, then let the partitions go.
    if (failure.ok()) {
      Status s = CommitBatch(/*flush=*/true);
      if (!s.ok()) {
        failure = s;
      }
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
        if (options.exit_at_end) {
          end_at_start.assign(static_cast<std::size_t>(partitions_of_topic), -1);
          for (int p = 0; p < partitions_of_topic; ++p) {
            std::int64_t lo = 0, hi = 0;
            err = rd_kafka_query_watermark_offsets(consumer.get(), options.topic.c_str(), p, &lo,
                                                   &hi, 5000);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
              break;
            }
            end_at_start[static_cast<std::size_t>(p)] = hi;
          }
          if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            return Status::Ok();
          }
        } else {
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

  void Process(rd_kafka_message_t* m) {
    PartitionState& p = Partition(m->partition);
    if (!p.assigned || (p.next_offset >= 0 && m->offset < p.next_offset)) {
      return;  // from before a revocation or a seek: not ours, or already merged
    }
    if (p.next_offset >= 0 && m->offset > p.next_offset) {
      spdlog::warn("{}: offsets {}..{} are gone from the broker (retention?) and were skipped",
                   p.source, p.next_offset, m->offset - 1);
    }
    ++report.messages;
    report.bytes += m->len;
    MessageFields fields;
    if (m->key != nullptr) {
      fields.key = std::string_view(static_cast<const char*>(m->key), m->key_len);
    }
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const void* value = nullptr;
      std::size_t size = 0;
      if (rd_kafka_header_get_last(headers, kSeqHeader.data(), &value, &size) ==
          RD_KAFKA_RESP_ERR_NO_ERROR) {
        fields.seq_header = value == nullptr
                                ? std::string_view()
                                : std::string_view(static_cast<const char*>(value), size);
      }
    }
    rd_kafka_timestamp_type_t ts_type;
    const std::int64_t ts = rd_kafka_message_timestamp(m, &ts_type);
    if (ts_type != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE) {
      fields.timestamp_ms = ts;
    }
    fields.partition = m->partition;
    fields.offset = m->offset;

    Result<MessageEnvelope> env = identity.Identify(fields);
    if (!env.ok()) {
      ++report.bad;
      DeadLetter(m, "bad", env.status().message());
    } else if (m->payload == nullptr) {
      ++report.bad;
      DeadLetter(m, "bad", "the message has no value (a shard body is a JSON object)");
    } else {
      Result<const core::Shard*> shard =
          decoder.DecodeBody(std::string_view(static_cast<const char*>(m->payload), m->len),
                             env->blade, env->seq, env->ts);
      if (!shard.ok()) {
        ++report.bad;
        DeadLetter(m, "bad", shard.status().message());
      } else {
        p.max_ts = std::max(p.max_ts, env->ts);
        crdt::ApplyResult r = store.Apply(**shard);
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
    }
    p.next_offset = m->offset + 1;
    p.moved = true;
    p.idle = false;
    p.unknown = false;
    batch_dirty = true;
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
      ++commit_no;
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
    } else if (commit_no >= 2) {
      // A pipelined Commit() returns once the writer took the previous batch: the one before it
      // is durable.
      PublishChanges(commit_no - 2);
    }
    return Status::Ok();
  }

  /// Publishes the changes of every committed batch up to `durable` (a commit number).
  void PublishChanges(std::uint64_t durable) {
    while (!unpublished.empty() && unpublished.front().first <= durable) {
      for (const crdt::Change& c : unpublished.front().second) {
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
    spdlog::info(
        "{:.0f} msg/s, {} batches ({:.0f} msg avg, limit {}), {} partitions, lag {}{}{}; "
        "totals: {} applied, {} duplicate, {} rejected",
        interval_s > 0 ? static_cast<double>(messages) / interval_s : 0.0, batches,
        batches > 0 ? static_cast<double>(messages) / static_cast<double>(batches) : 0.0,
        batch_limit, assigned, total_lag,
        lags.empty() ? "" : " (partition=lag:", lags.empty() ? "" : lags + ")", report.applied,
        report.duplicates, report.rejected());
  }

  // --- The loop -----------------------------------------------------------------------------

  Result<AggregatorReport> Run() {
    const Clock::time_point start = Clock::now();
    LATTICE_RETURN_IF_ERROR(CheckTopics());
    collect_changes = !subscribers.empty() || !options.changes_topic.empty();
    if (collect_changes) {
      store.SetChangeSink([this](const crdt::Change& c) { merging_changes.push_back(c); });
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
    batch_limit = std::clamp(options.min_batch, std::size_t{1}, options.max_batch);
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
      bool short_poll = false;
      while (n < batch_limit) {
        int timeout_ms = 100;
        if (n > 0) {
          const auto spent =
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - batch_start)
                  .count();
          if (spent >= options.max_batch_ms) {
            break;
          }
          timeout_ms = 0;
        }
        rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer.get(), timeout_ms);
        if (!failure.ok()) {
          if (m != nullptr) {
            rd_kafka_message_destroy(m);
          }
          break;
        }
        if (m == nullptr) {
          short_poll = true;
          break;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
          if (m->rkt != nullptr && options.topic == rd_kafka_topic_name(m->rkt)) {
            PartitionState& p = Partition(m->partition);
            p.idle = true;
            p.unknown = false;
            if (p.next_offset < m->offset) {
              p.next_offset = m->offset;  // an empty or compacted-away range: nothing to merge
            }
          }
          rd_kafka_message_destroy(m);
          continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
          if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
              m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
            failure = Status::Unavailable(std::string("consuming '") + options.topic +
                                          "': " + rd_kafka_message_errstr(m));
          } else {
            spdlog::warn("consuming {}: {}", options.topic, rd_kafka_message_errstr(m));
          }
          rd_kafka_message_destroy(m);
          continue;
        }
        Process(m);
        rd_kafka_message_destroy(m);
        ++n;
      }
      status = failure;
      if (!status.ok()) {
        break;
      }
      status = CommitBatch(/*flush=*/false);
      if (!status.ok()) {
        break;
      }
      rd_kafka_poll(producer.get(), 0);
      if (n == 0 && !unpublished.empty()) {
        // Quiet: make the last batches durable now, so their changes go out without delay.
        status = store.Flush();
        if (!status.ok()) {
          break;
        }
        PublishChanges(commit_no);
      }
      // Adapt: grow while batches fill up, shrink while the topic is quiet.
      if (n >= batch_limit) {
        batch_limit = std::min(batch_limit * 2, options.max_batch);
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
    if (status.ok()) {
      status = CommitBatch(/*flush=*/true);
    }
    if (status.ok()) {
      CommitToKafka(/*async=*/false);
    } else {
      failure = status;  // the revocation during close must not commit anything
    }
    // Leave the group cleanly (the revocation callback runs here).
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
  if (options.min_batch == 0 || options.max_batch < options.min_batch) {
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
