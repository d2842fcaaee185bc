// The WebSocket protocol of /v1/stream (docs/observer-protocol.md): message encoders, the client
// message parser, the shared feed of recent changes, and the per-connection state machine
// (periodic / manual / live). No I/O here: the server moves the bytes.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lattice/crdt/types.h"
#include "lattice/observer/summary.h"

namespace lattice::observer {

/// One encoded text frame, shared by every client it goes to.
using Message = std::shared_ptr<const std::string>;

enum class Mode : std::uint8_t { kPeriodic, kManual, kLive };
std::string_view ModeName(Mode mode);

inline constexpr std::size_t kMaxClientMessageBytes = 65536;
inline constexpr std::int64_t kDefaultIntervalMs = 1000;
inline constexpr std::int64_t kMinIntervalMs = 100;
inline constexpr std::int64_t kMaxIntervalMs = 3'600'000;
inline constexpr std::size_t kMaxPrefixes = 64;
inline constexpr std::size_t kMaxBatchPaths = 10'000;
inline constexpr std::size_t kMaxBatchStatusChanges = 1'000;
inline constexpr int kMaxClientMessagesPerSecond = 100;

// Encoders: the exact wire form of each server message.
void AppendChange(std::string& out, const crdt::Change& change);
std::string EncodeChanges(std::uint64_t commit, std::int64_t observed_at,
                          const std::vector<const crdt::Change*>& changes);
std::string EncodeStatusChange(const StatusChange& change);
std::string EncodeSnapshot(std::string_view reason, std::uint64_t commit,
                           std::string_view summary_json);
std::string EncodeSummary(std::uint64_t commit, std::string_view summary_json);
std::string EncodeError(std::string_view reason, std::string_view message);
std::string EncodeHello(Mode mode, std::int64_t interval_ms, bool change_log);
std::string EncodeMode(Mode mode, std::int64_t interval_ms,
                       const std::vector<std::string>& prefixes);
std::string EncodePong(std::string_view t_json, std::int64_t server_time);
std::string EncodeBatch(std::string_view update_type, std::uint64_t commit,
                        const std::vector<std::string_view>& messages);

/// A client message that parsed and validated.
struct ClientMessage {
  enum class Type : std::uint8_t { kUpdateRequest, kSetMode, kSubscribe, kPing };
  Type type = Type::kPing;
  std::string update_type;                  // kUpdateRequest: "periodic" or "manual"
  Mode mode = Mode::kPeriodic;              // kSetMode
  std::optional<std::int64_t> interval_ms;  // kSetMode
  std::vector<std::string> prefixes;        // kSubscribe: canonical dotted paths
  std::string t_json = "null";              // kPing: the raw `t`
};

/// Why a client message was refused: the `error` reason code and a message for people.
struct ProtocolError {
  std::string reason;
  std::string message;
};

/// Parses one text frame. Exactly one of the two is set.
struct ParsedClientMessage {
  std::optional<ClientMessage> message;
  std::optional<ProtocolError> error;
};
ParsedClientMessage ParseClientMessage(std::string_view text);

/// What one catch-up of the follower produced, shared by every client.
struct Tick {
  std::uint64_t seq = 0;  // 1, 2, 3, ... in publish order
  std::uint64_t commit = 0;
  std::int64_t observed_at = 0;  // wall ms when the changes were read
  bool resync = false;           // the follower lost track: clients get a snapshot
  std::vector<crdt::Change> changes;
  std::vector<StatusChange> status_changes;
  Message changes_message;               // `changes` with all of them (null if none)
  std::vector<Message> status_messages;  // one `worker_node_status_change` each
  Message summary_message;               // `summary` to push to live clients (null: none)
  /// `changes` narrowed to a subscription (a prefix list), encoded once per distinct list by the
  /// first live client that needs it and shared by the others (null: nothing matched).
  mutable std::mutex filtered_mu;
  mutable std::map<std::vector<std::string>, Message> filtered;
};

/// The shared log of recent ticks (bounded by the number of changes it holds) and the latest
/// summary. Thread safety: all methods may be called from any thread.
class Feed {
 public:
  explicit Feed(std::size_t max_changes = 200'000);

  /// Appends a tick (its seq must be last_seq() + 1) and drops the oldest past the bound.
  void Publish(std::shared_ptr<const Tick> tick);
  std::uint64_t last_seq() const;

  /// Appends the ticks with seq > `after` to `out`. Returns false if some of them were dropped.
  bool Since(std::uint64_t after, std::vector<std::shared_ptr<const Tick>>& out) const;

  /// The latest summary JSON and the commit it describes.
  void SetSummary(std::shared_ptr<const std::string> summary_json, std::uint64_t commit);
  std::pair<std::shared_ptr<const std::string>, std::uint64_t> summary() const;

 private:
  mutable std::mutex mu_;
  std::size_t max_changes_;
  std::size_t changes_ = 0;
  std::deque<std::shared_ptr<const Tick>> ticks_;
  std::uint64_t last_seq_ = 0;
  std::shared_ptr<const std::string> summary_;
  std::uint64_t summary_commit_ = 0;
};

/// Counters a connection reports (the server sums them into /metrics).
struct ProtocolCounts {
  std::uint64_t received = 0;
  std::uint64_t errors = 0;
};

/// One connection's protocol state: its mode, subscription and batch position.
///
/// Thread safety: none (the connection's strand owns it); reads the Feed.
class StreamProtocol {
 public:
  StreamProtocol(const Feed& feed, bool change_log);

  /// `hello` and the `snapshot` (reason connect); the batch starts here.
  std::vector<Message> OnConnect();

  /// The replies to one client text frame received at wall time `wall_ms`. `type_seen` gets the
  /// message type for metrics (`malformed`, `unknown` or the type), `error_reason` the reason of
  /// an `error` reply (empty if none).
  std::vector<Message> OnText(std::string_view text, std::int64_t wall_ms, std::string& type_seen,
                              std::string& error_reason);

  /// What to push for a new tick: live clients get its messages; others nothing (they pull).
  std::vector<Message> OnTick(const Tick& tick);

  /// A `snapshot` of the feed's latest summary (e.g. after a dropped queue).
  Message Snapshot(std::string_view reason) const;

  Mode mode() const { return mode_; }
  std::int64_t interval_ms() const { return interval_ms_; }
  const std::vector<std::string>& prefixes() const { return prefixes_; }

 private:
  Message BuildBatch(std::string_view update_type);
  bool Matches(const std::string& path) const;

  const Feed& feed_;
  bool change_log_;
  Mode mode_ = Mode::kPeriodic;
  std::int64_t interval_ms_ = kDefaultIntervalMs;
  std::vector<std::string> prefixes_;
  std::uint64_t after_seq_ = 0;  // the batch holds the ticks after this one
  std::int64_t window_start_ = 0;
  int window_count_ = 0;
};

}  // namespace lattice::observer
