// The observer server (`lattice observe`): follows a state directory as a RocksDB secondary and
// serves REST, the /v1/stream WebSocket, /metrics and the static page (docs/observer-protocol.md).
// Read-only by construction: it links no write path (no StateStore use, no Kafka client).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "lattice/core/status.h"

namespace lattice::observer {

struct ObserverOptions {
  std::string state_dir;
  /// Where the secondary instance keeps its own files; empty = a fresh temporary directory
  /// (removed on exit).
  std::string secondary_dir;
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0 = any free port
  /// Bearer token required for /v1/* and /metrics; empty = none.
  std::string token;
  /// The static page's directory; empty = no static files (404).
  std::string web_dir;
  /// Catch up with the writer at least this often; a write to its WAL (inotify) wakes it sooner.
  std::int64_t poll_ms = 10;
  int threads = 2;
  std::int64_t dead_after_ms = 10'000;
  bool wall_clock = false;
  std::size_t max_clients = 1024;
  /// A live client is dropped to a snapshot (docs/observer-protocol.md "Slow clients") when its
  /// unsent messages would exceed this many bytes, or when the oldest of them has waited longer
  /// than client_max_lag_ms.
  std::size_t client_queue_bytes = 1u << 20;
  std::int64_t client_max_lag_ms = 1000;
};

/// A running observer. Start() returns once it listens; Stop() (or the destructor) ends it.
/// Thread safety: port() / url() from any thread; Stop() from any thread, once.
class Observer {
 public:
  /// Opens the state as a secondary, reads the summary, binds and starts serving.
  /// Errors: NotFound if there is no state; InvalidArgument for bad options; Unavailable if the
  /// address cannot be bound.
  static Result<std::unique_ptr<Observer>> Start(const ObserverOptions& options);
  ~Observer();
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  std::uint16_t port() const;
  /// `http://host:port/`
  std::string url() const;

  /// Blocks until Stop() is called (from another thread or a signal handler thread).
  void Wait();
  void Stop();

  struct Impl;  // defined in server.cc only (public so the connection classes there can name it)

 private:
  Observer();
  std::unique_ptr<Impl> impl_;
};

}  // namespace lattice::observer
