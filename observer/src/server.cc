// The observer server: a follower thread (secondary catch-up -> summary -> feed) and a
// Boost.Beast HTTP/WebSocket server on one io_context with a few threads.
#include "lattice/observer/server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/crdt/state_reader.h"
#include "lattice/observer/protocol.h"
#include "lattice/observer/summary.h"

namespace lattice::observer {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* const kClientTypes[] = {"update_request", "set_mode",  "subscribe",    "ping",
                                    "unknown",        "malformed", "rate_limited", "binary"};
const char* const kErrorReasons[] = {"malformed",        "unknown_type", "bad_payload",
                                     "not_in_live_mode", "binary_frame", "too_big",
                                     "rate_limited"};

template <std::size_t N>
std::size_t IndexOf(const char* const (&names)[N], std::string_view name) {
  for (std::size_t i = 0; i < N; ++i) {
    if (name == names[i]) {
      return i;
    }
  }
  return N;
}

struct Metrics {
  std::atomic<std::uint64_t> catch_ups{0}, catch_up_errors{0}, changes{0}, resyncs{0};
  std::atomic<std::uint64_t> clients{0}, slow_drops{0}, sent{0};
  std::atomic<std::uint64_t> slow_drop_reasons[2] = {};  // lag, bytes
  std::atomic<std::int64_t> queued_bytes{0};             // all clients' outgoing queues
  std::atomic<std::uint64_t> client_types[std::size(kClientTypes)] = {};
  std::atomic<std::uint64_t> errors[std::size(kErrorReasons)] = {};
  std::mutex http_mu;
  std::map<int, std::uint64_t> http_codes;

  void CountHttp(int code) {
    std::lock_guard lock(http_mu);
    ++http_codes[code];
  }
};

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Decodes %XX escapes (and '+' as a space when `plus_is_space`). Sets `ok` false on a bad escape.
std::string PercentDecode(std::string_view s, bool plus_is_space, bool& ok) {
  std::string out;
  ok = true;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) {
        ok = false;
        return out;
      }
      const int h = HexDigit(s[i + 1]);
      const int l = HexDigit(s[i + 2]);
      if (h < 0 || l < 0) {
        ok = false;
        return out;
      }
      out.push_back(static_cast<char>(h * 16 + l));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

/// Splits a request target into its decoded path and query parameters.
struct Target {
  std::string path;
  std::map<std::string, std::string> query;
  bool ok = true;
};

Target ParseTarget(std::string_view target) {
  Target t;
  const std::size_t q = target.find('?');
  bool ok = true;
  t.path = PercentDecode(target.substr(0, q), /*plus_is_space=*/false, ok);
  if (!ok) {
    t.ok = false;
    return t;
  }
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      const std::size_t amp = rest.find('&');
      const std::string_view kv = rest.substr(0, amp);
      const std::size_t eq = kv.find('=');
      bool ok1 = true, ok2 = true;
      std::string k = PercentDecode(kv.substr(0, eq), true, ok1);
      std::string v =
          eq == std::string_view::npos ? "" : PercentDecode(kv.substr(eq + 1), true, ok2);
      if (!ok1 || !ok2) {
        t.ok = false;
        return t;
      }
      t.query[k] = v;
      if (amp == std::string_view::npos) {
        break;
      }
      rest = rest.substr(amp + 1);
    }
  }
  return t;
}

bool TokenMatches(std::string_view given, std::string_view want) {
  if (given.size() != want.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i] ^ want[i]);
  }
  return diff == 0;
}

std::string_view MimeType(const std::string& path) {
  const auto dot = path.rfind('.');
  const std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  if (ext == ".html" || ext == ".htm") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

std::string ErrorJson(std::string_view message) {
  std::string out("{\"error\":");
  core::AppendJsonString(out, message);
  out.push_back('}');
  return out;
}

void AppendLabel(std::string& out, std::string_view value) {
  // Prometheus label values escape backslash, quote and newline.
  out.push_back('"');
  for (char c : value) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void AppendMetricNumber(std::string& out, double v) {
  if (v != v) {
    out.append("NaN");
  } else {
    core::AppendJsonDouble(out, v);
  }
}

class WsSession;

/// Wakes the follower when the writer appends to its write-ahead log or replaces its manifest
/// (inotify on the state directory), so a commit is read as soon as it is written instead of at
/// the next --poll; the poll interval stays as the fallback (and for clock-driven work).
/// Thread safety: Wait() from the follower thread only; Wake() from any thread.
class WriterWatch {
 public:
  WriterWatch() = default;
  WriterWatch(const WriterWatch&) = delete;
  WriterWatch& operator=(const WriterWatch&) = delete;
  ~WriterWatch() {
    if (inotify_fd_ >= 0) {
      ::close(inotify_fd_);
    }
    if (wake_fd_ >= 0) {
      ::close(wake_fd_);
    }
  }

  /// Starts watching `dir`. Returns false (the follower then only polls) if inotify is not
  /// available, e.g. too many watches.
  bool Open(const std::string& dir) {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (wake_fd_ < 0 || inotify_fd_ < 0 ||
        ::inotify_add_watch(inotify_fd_, dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0) {
      if (inotify_fd_ >= 0) {
        ::close(inotify_fd_);
        inotify_fd_ = -1;
      }
      return false;
    }
    return true;
  }

  bool active() const { return inotify_fd_ >= 0; }

  /// Blocks until the writer wrote something, Wake() was called, or `deadline`.
  void Wait(std::chrono::steady_clock::time_point deadline) {
    while (true) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
              .count();
      if (left <= 0) {
        return;
      }
      pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      const int n = ::poll(fds, 2, static_cast<int>(std::min<std::int64_t>(left, 60'000)));
      if (n < 0 && errno != EINTR) {
        return;
      }
      if (n > 0 && (fds[1].revents & POLLIN) != 0) {
        return;
      }
      if (n > 0 && (fds[0].revents & POLLIN) != 0 && DrainWriterEvents()) {
        return;
      }
    }
  }

  void Wake() {
    if (wake_fd_ >= 0) {
      const std::uint64_t one = 1;
      (void)!::write(wake_fd_, &one, sizeof one);
    }
  }

 private:
  /// Reads every pending event; true if one was about the WAL (*.log) or the manifest (the
  /// RocksDB info log "LOG" and other files do not count).
  bool DrainWriterEvents() {
    alignas(inotify_event) char buf[8192];
    bool relevant = false;
    while (true) {
      const ssize_t got = ::read(inotify_fd_, buf, sizeof buf);
      if (got <= 0) {
        return relevant;
      }
      for (ssize_t at = 0; at < got;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
        const std::string_view name(ev->len > 0 ? ev->name : "");
        const std::string_view file = name.substr(0, name.find('\0'));
        if (file.ends_with(".log") || file.starts_with("MANIFEST") || file == "CURRENT" ||
            (ev->mask & IN_Q_OVERFLOW) != 0) {
          relevant = true;
        }
        at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
    }
  }

  int inotify_fd_ = -1;
  int wake_fd_ = -1;
};

}  // namespace

struct Observer::Impl {
  ObserverOptions options;
  bool own_secondary_dir = false;
  std::unique_ptr<crdt::StateReader> reader;
  Feed feed;
  std::mutex summary_mu;  // guards `summary` (the follower writes it, /metrics reads it)
  Summary summary;
  Metrics metrics;
  std::atomic<std::uint64_t> commit{0};
  std::atomic<std::int64_t> caught_up_at{0};
  std::int64_t started_at = WallMs();

  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::thread follower;
  std::atomic<bool> stopping{false};
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopped = false;
  WriterWatch writer_watch;

  std::mutex sessions_mu;
  std::set<std::shared_ptr<WsSession>> sessions;

  explicit Impl(const ObserverOptions& o)
      : options(o), summary(SummaryOptions{o.dead_after_ms, o.wall_clock}) {}

  void Accept();
  void FollowLoop();
  /// Builds the summary JSON for `tick.commit`; when it differs from the feed's (or `force`),
  /// stores it in the feed and sets `tick.summary_message`. The caller holds summary_mu.
  void BuildSummary(Tick& tick, std::int64_t wall, bool force);
  void Broadcast(const std::shared_ptr<const Tick>& tick);
  http::response<http::string_body> Handle(const http::request<http::string_body>& req);
  std::string MetricsText();
  std::string HealthJson();
  bool Authorized(const http::request<http::string_body>& req, const Target& t) const;
};

namespace {

/// One WebSocket connection: a strand-serialized reader, a bounded write queue, the protocol.
class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(tcp::socket&& socket, Observer::Impl& server)
      : ws_(std::move(socket)),
        server_(server),
        protocol_(server.feed, server.reader->has_change_log()) {}

  void Run(http::request<http::string_body> req) {
    websocket::stream_base::timeout t;
    t.handshake_timeout = std::chrono::seconds(30);
    t.idle_timeout = std::chrono::seconds(30);
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(kMaxClientMessageBytes);
    // One frame per message, written with one gathered write: Beast's default splits a message
    // into 4 KiB frames, one socket write each (a 15 KB live message cost four writes per client).
    ws_.auto_fragment(false);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "lattice-observe"); }));
    req_ = std::move(req);
    ws_.async_accept(req_, beast::bind_front_handler(&WsSession::OnAccept, shared_from_this()));
  }

  /// Called (through the strand) for every tick of the feed.
  void OnTick(std::shared_ptr<const Tick> tick) {
    asio::dispatch(ws_.get_executor(), [self = shared_from_this(), tick = std::move(tick)] {
      if (!self->open_) {
        return;
      }
      for (Message& m : self->protocol_.OnTick(*tick)) {
        self->Enqueue(std::move(m), /*from_tick=*/true);
      }
    });
  }

  void Close() {
    asio::dispatch(ws_.get_executor(), [self = shared_from_this()] {
      if (self->open_) {
        beast::get_lowest_layer(self->ws_).cancel();
      }
    });
  }

 private:
  void OnAccept(beast::error_code ec) {
    if (ec) {
      Finish();
      return;
    }
    open_ = true;
    for (Message& m : protocol_.OnConnect()) {
      Enqueue(std::move(m));
    }
    DoRead();
  }

  void DoRead() {
    buffer_.clear();
    ws_.async_read(buffer_, beast::bind_front_handler(&WsSession::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec == websocket::error::message_too_big) {
      ++server_.metrics.errors[IndexOf(kErrorReasons, "too_big")];
      Finish();  // Beast has already failed the connection with close code 1009
      return;
    }
    if (ec) {
      Finish();
      return;
    }
    std::string type_seen, reason;
    std::vector<Message> replies;
    if (!ws_.got_text()) {
      type_seen = "binary";
      reason = "binary_frame";
      replies.push_back(std::make_shared<const std::string>(
          EncodeError("binary_frame", "binary frames are not accepted; send JSON text frames")));
    } else {
      const auto data = buffer_.cdata();
      replies =
          protocol_.OnText(std::string_view(static_cast<const char*>(data.data()), data.size()),
                           WallMs(), type_seen, reason);
    }
    const std::size_t ti = IndexOf(kClientTypes, type_seen);
    if (ti < std::size(kClientTypes)) {
      ++server_.metrics.client_types[ti];
    }
    if (!reason.empty()) {
      const std::size_t ri = IndexOf(kErrorReasons, reason);
      if (ri < std::size(kErrorReasons)) {
        ++server_.metrics.errors[ri];
      }
    }
    for (Message& m : replies) {
      Enqueue(std::move(m));
    }
    DoRead();
  }

  /// Queues one outgoing message. `from_tick` marks live pushes (a snapshot can replace them);
  /// the others are replies to the client's own messages.
  void Enqueue(Message m, bool from_tick = false) {
    if (!open_ || m == nullptr) {
      return;
    }
    if (snapshot_pending_ && from_tick) {
      return;  // the pending snapshot, built when it is written, covers this tick
    }
    const auto now = std::chrono::steady_clock::now();
    // The message being written does not count; one message always fits an empty queue.
    const std::size_t first_waiting = writing_ ? 1 : 0;
    if (queue_.size() > first_waiting) {
      const char* reason = nullptr;
      if (queued_bytes_ - InFlightBytes() + m->size() > server_.options.client_queue_bytes) {
        reason = "bytes";
      } else if (now - queue_[first_waiting].at >
                 std::chrono::milliseconds(server_.options.client_max_lag_ms)) {
        reason = "lag";
      }
      if (reason != nullptr) {
        DropToSnapshot(reason, now);
        if (from_tick || m->size() > server_.options.client_queue_bytes) {
          return;
        }
      }
    }
    queued_bytes_ += m->size();
    server_.metrics.queued_bytes += m->size();
    queue_.push_back({std::move(m), now});
    if (!writing_) {
      DoWrite();
    }
  }

  std::size_t InFlightBytes() const {
    return writing_ && queue_.front().message ? queue_.front().message->size() : 0;
  }

  /// Too slow: everything not yet being written is dropped and replaced by one `snapshot`
  /// (reason overflow), built when its turn to be written comes, so it is current then; until
  /// then live ticks are not queued for this client (the snapshot covers them).
  void DropToSnapshot(const char* reason, std::chrono::steady_clock::time_point now) {
    if (!snapshot_pending_) {
      ++server_.metrics.slow_drops;
      ++server_.metrics.slow_drop_reasons[reason[0] == 'l' ? 0 : 1];
    }
    const std::size_t keep = writing_ ? 1 : 0;
    while (queue_.size() > keep) {
      if (queue_.back().message) {
        queued_bytes_ -= queue_.back().message->size();
        server_.metrics.queued_bytes -= queue_.back().message->size();
      }
      queue_.pop_back();
    }
    queue_.push_back({nullptr, now});
    snapshot_pending_ = true;
  }

  void DoWrite() {
    writing_ = true;
    Queued& q = queue_.front();
    if (q.message == nullptr) {  // the pending snapshot: built now, from the latest summary
      q.message = protocol_.Snapshot("overflow");
      queued_bytes_ += q.message->size();
      server_.metrics.queued_bytes += q.message->size();
      snapshot_pending_ = false;
    }
    ws_.text(true);
    ws_.async_write(asio::buffer(*q.message),
                    beast::bind_front_handler(&WsSession::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    writing_ = false;
    if (ec || finished_) {
      Finish();
      queue_.clear();  // the message that was being written, kept alive until now
      return;
    }
    ++server_.metrics.sent;
    queued_bytes_ -= queue_.front().message->size();
    server_.metrics.queued_bytes -= queue_.front().message->size();
    queue_.pop_front();
    if (!queue_.empty() && open_) {
      DoWrite();
    }
  }

  void Finish() {
    if (finished_) {
      return;
    }
    finished_ = true;
    open_ = false;
    server_.metrics.queued_bytes -= queued_bytes_;
    // A write in progress still reads the front message's buffer: it stays until OnWrite.
    queue_.erase(writing_ ? queue_.begin() + 1 : queue_.begin(), queue_.end());
    queued_bytes_ = 0;
    std::lock_guard lock(server_.sessions_mu);
    if (server_.sessions.erase(shared_from_this()) > 0) {
      --server_.metrics.clients;
    }
  }

  websocket::stream<beast::tcp_stream> ws_;
  Observer::Impl& server_;
  StreamProtocol protocol_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  struct Queued {
    Message message;                           // null: the pending overflow snapshot
    std::chrono::steady_clock::time_point at;  // when it was queued
  };
  std::deque<Queued> queue_;
  std::size_t queued_bytes_ = 0;  // of the messages in queue_ (a pending snapshot counts 0)
  bool snapshot_pending_ = false;
  bool writing_ = false;
  bool open_ = false;
  bool finished_ = false;
};

/// One HTTP connection: requests in sequence (keep-alive), or an upgrade to a WsSession.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket&& socket, Observer::Impl& server)
      : stream_(std::move(socket)), server_(server) {}

  void Run() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&HttpSession::DoRead, shared_from_this()));
  }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->header_limit(16 * 1024);
    parser_->body_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpSession::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return;
    }
    if (ec) {
      if (ec != beast::error::timeout && ec != asio::error::operation_aborted &&
          ec != asio::error::connection_reset && ec != asio::error::eof) {
        // A malformed request: answer 400 and close.
        auto res =
            std::make_shared<http::response<http::string_body>>(http::status::bad_request, 11);
        res->set(http::field::content_type, "application/json; charset=utf-8");
        res->body() = ErrorJson("bad HTTP request: " + ec.message());
        res->keep_alive(false);
        res->prepare_payload();
        server_.metrics.CountHttp(400);
        http::async_write(stream_, *res,
                          [self = shared_from_this(), res](beast::error_code, std::size_t) {
                            beast::error_code ignored;
                            self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          });
      }
      return;
    }
    http::request<http::string_body> req = parser_->release();
    if (websocket::is_upgrade(req)) {
      const Target t = ParseTarget(std::string_view(req.target().data(), req.target().size()));
      int refuse = 0;
      std::string why;
      if (!t.ok || t.path != "/v1/stream") {
        refuse = 404;
        why = "WebSocket upgrades are served at /v1/stream only";
      } else if (!server_.Authorized(req, t)) {
        refuse = 401;
        why = "missing or wrong bearer token";
      } else if (server_.metrics.clients.load() >= server_.options.max_clients ||
                 server_.stopping) {
        refuse = 503;
        why =
            "too many clients (--max-clients " + std::to_string(server_.options.max_clients) + ")";
      }
      if (refuse != 0) {
        auto res = std::make_shared<http::response<http::string_body>>(
            static_cast<http::status>(refuse), req.version());
        res->set(http::field::content_type, "application/json; charset=utf-8");
        if (refuse == 401) {
          res->set(http::field::www_authenticate, "Bearer");
        }
        res->body() = ErrorJson(why);
        res->keep_alive(false);
        res->prepare_payload();
        server_.metrics.CountHttp(refuse);
        http::async_write(stream_, *res,
                          [self = shared_from_this(), res](beast::error_code, std::size_t) {
                            beast::error_code ignored;
                            self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          });
        return;
      }
      server_.metrics.CountHttp(101);
      stream_.expires_never();
      // A fixed kernel send buffer per WebSocket (no autotuning to megabytes): what a slow client
      // costs is this plus its --client-queue-bytes, and back-pressure reaches the queue early.
      beast::error_code opt_ec;
      stream_.socket().set_option(asio::socket_base::send_buffer_size(256 * 1024), opt_ec);
      // Live messages are small and must leave at once: without TCP_NODELAY, Nagle holds a
      // message while the previous one is unacknowledged, and the client's delayed ACK (40 ms on
      // Linux) makes that a 40 ms stall per message.
      stream_.socket().set_option(tcp::no_delay(true), opt_ec);
      auto ws = std::make_shared<WsSession>(stream_.release_socket(), server_);
      {
        std::lock_guard lock(server_.sessions_mu);
        server_.sessions.insert(ws);
        ++server_.metrics.clients;
      }
      ws->Run(std::move(req));
      return;
    }
    auto res = std::make_shared<http::response<http::string_body>>(server_.Handle(req));
    server_.metrics.CountHttp(res->result_int());
    const bool keep = res->keep_alive();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep](beast::error_code wec, std::size_t) {
                        if (wec || !keep) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->DoRead();
                      });
  }

  beast::tcp_stream stream_;
  Observer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

void Observer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping) {
      return;
    }
    if (!ec) {
      std::make_shared<HttpSession>(std::move(socket), *this)->Run();
    }
    Accept();
  });
}

bool Observer::Impl::Authorized(const http::request<http::string_body>& req,
                                const Target& t) const {
  if (options.token.empty()) {
    return true;
  }
  auto it = req.find(http::field::authorization);
  if (it != req.end()) {
    const std::string_view v(it->value().data(), it->value().size());
    constexpr std::string_view kBearer = "Bearer ";
    if (v.size() > kBearer.size() && v.substr(0, kBearer.size()) == kBearer &&
        TokenMatches(v.substr(kBearer.size()), options.token)) {
      return true;
    }
  }
  if (t.path == "/v1/stream") {
    auto q = t.query.find("token");
    if (q != t.query.end() && TokenMatches(q->second, options.token)) {
      return true;
    }
  }
  return false;
}

std::string Observer::Impl::HealthJson() {
  const std::int64_t now = WallMs();
  const std::int64_t at = caught_up_at.load();
  std::string out("{\"status\":");
  out.append(now - at > 5000 ? "\"stale\"" : "\"ok\"");
  out.append(",\"state\":");
  core::AppendJsonString(out, options.state_dir);
  out.append(",\"commit\":");
  out.append(std::to_string(commit.load()));
  out.append(",\"caught_up_at\":");
  core::AppendJsonInt(out, at);
  out.append(",\"catch_up_lag_ms\":");
  core::AppendJsonInt(out, now - at);
  out.append(",\"follows\":\"secondary\",\"change_log\":");
  out.append(reader->has_change_log() ? "true" : "false");
  out.append(",\"clients\":");
  out.append(std::to_string(metrics.clients.load()));
  out.append(",\"uptime_s\":");
  core::AppendJsonDouble(out, static_cast<double>(now - started_at) / 1000.0);
  out.push_back('}');
  return out;
}

std::string Observer::Impl::MetricsText() {
  std::string out;
  auto family = [&](std::string_view name, std::string_view type, std::string_view help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  };
  auto sample = [&](std::string_view name, double v) {
    out.append(name).append(" ");
    AppendMetricNumber(out, v);
    out.append("\n");
  };
  auto labeled = [&](std::string_view name, std::string_view label, std::string_view value,
                     double v) {
    out.append(name).append("{").append(label).append("=");
    AppendLabel(out, value);
    out.append("} ");
    AppendMetricNumber(out, v);
    out.append("\n");
  };
  auto u = [](const std::atomic<std::uint64_t>& a) { return static_cast<double>(a.load()); };
  family("lattice_observer_commit", "gauge", "Commit number of the state caught up to.");
  sample("lattice_observer_commit", static_cast<double>(commit.load()));
  family("lattice_observer_catch_ups_total", "counter", "Successful catch-ups with the writer.");
  sample("lattice_observer_catch_ups_total", u(metrics.catch_ups));
  family("lattice_observer_catch_up_errors_total", "counter", "Failed catch-ups.");
  sample("lattice_observer_catch_up_errors_total", u(metrics.catch_up_errors));
  family("lattice_observer_changes_total", "counter", "Change events read from the change log.");
  sample("lattice_observer_changes_total", u(metrics.changes));
  family("lattice_observer_resyncs_total", "counter",
         "Times the change log had a gap and clients got a snapshot.");
  sample("lattice_observer_resyncs_total", u(metrics.resyncs));
  family("lattice_observer_clients", "gauge", "Open WebSocket connections.");
  sample("lattice_observer_clients", u(metrics.clients));
  family("lattice_observer_client_messages_total", "counter",
         "Messages received from WebSocket clients, by type.");
  for (std::size_t i = 0; i < std::size(kClientTypes); ++i) {
    labeled("lattice_observer_client_messages_total", "type", kClientTypes[i],
            u(metrics.client_types[i]));
  }
  family("lattice_observer_client_errors_total", "counter", "Error messages sent, by reason.");
  for (std::size_t i = 0; i < std::size(kErrorReasons); ++i) {
    labeled("lattice_observer_client_errors_total", "reason", kErrorReasons[i],
            u(metrics.errors[i]));
  }
  family("lattice_observer_slow_client_drops_total", "counter",
         "Outgoing queues dropped for a slow client.");
  sample("lattice_observer_slow_client_drops_total", u(metrics.slow_drops));
  family("lattice_observer_slow_client_drop_reasons_total", "counter",
         "Slow-client drops by the bound that was passed: lag (the oldest unsent message was "
         "older than --client-max-lag) or bytes (--client-queue-bytes).");
  labeled("lattice_observer_slow_client_drop_reasons_total", "reason", "lag",
          u(metrics.slow_drop_reasons[0]));
  labeled("lattice_observer_slow_client_drop_reasons_total", "reason", "bytes",
          u(metrics.slow_drop_reasons[1]));
  family("lattice_observer_client_queued_bytes", "gauge",
         "Bytes waiting in the outgoing queues of all WebSocket clients (shared messages counted "
         "once per client).");
  sample("lattice_observer_client_queued_bytes", static_cast<double>(metrics.queued_bytes.load()));
  family("lattice_observer_messages_sent_total", "counter", "WebSocket messages written.");
  sample("lattice_observer_messages_sent_total", u(metrics.sent));
  family("lattice_observer_http_requests_total", "counter", "HTTP responses by status code.");
  {
    std::lock_guard lock(metrics.http_mu);
    for (const auto& [code, n] : metrics.http_codes) {
      labeled("lattice_observer_http_requests_total", "code", std::to_string(code),
              static_cast<double>(n));
    }
  }
  // The summary's figures are read from the last published summary JSON's model under the
  // follower's lock.
  std::map<std::string, std::uint64_t> nodes, jobs;
  std::vector<Summary::CounterView> counters;
  {
    std::lock_guard lock(summary_mu);
    nodes = summary.NodesByStatus(WallMs());
    jobs = summary.JobsByStatus();
    counters = summary.Counters();
  }
  family("lattice_observer_nodes", "gauge", "Processor nodes by derived status.");
  for (const auto& [s, n] : nodes) {
    labeled("lattice_observer_nodes", "status", s, static_cast<double>(n));
  }
  family("lattice_observer_jobs", "gauge", "Jobs by status.");
  for (const auto& [s, n] : jobs) {
    labeled("lattice_observer_jobs", "status", s, static_cast<double>(n));
  }
  family("lattice_observer_inc_value", "gauge", "Value of each counter ($inc) in the state.");
  for (const auto& c : counters) {
    labeled("lattice_observer_inc_value", "path", c.path, c.value);
  }
  family("lattice_observer_inc_per_second", "gauge",
         "Per-second rate of each counter over the last 5 s.");
  for (const auto& c : counters) {
    if (c.rate) {
      labeled("lattice_observer_inc_per_second", "path", c.path, *c.rate);
    }
  }
  return out;
}

http::response<http::string_body> Observer::Impl::Handle(
    const http::request<http::string_body>& req) {
  http::response<http::string_body> res{http::status::ok, req.version()};
  res.keep_alive(req.keep_alive());
  res.set(http::field::server, "lattice-observe");
  res.set(http::field::cache_control, "no-store");
  auto json = [&](http::status code, std::string body) {
    res.result(code);
    res.set(http::field::content_type, "application/json; charset=utf-8");
    res.body() = std::move(body);
    res.prepare_payload();
    if (req.method() == http::verb::head) {
      res.body().clear();  // Content-Length stays that of the GET
    }
    return res;
  };
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    res.set(http::field::allow, "GET, HEAD");
    return json(http::status::method_not_allowed,
                ErrorJson("method not allowed: the observer is read-only (GET and HEAD only)"));
  }
  const Target t = ParseTarget(std::string_view(req.target().data(), req.target().size()));
  if (!t.ok) {
    return json(http::status::bad_request, ErrorJson("bad percent-escape in the request target"));
  }
  const bool api = t.path.rfind("/v1/", 0) == 0 || t.path == "/v1" || t.path == "/metrics";
  if (api && !Authorized(req, t)) {
    res.set(http::field::www_authenticate, "Bearer");
    return json(http::status::unauthorized, ErrorJson("missing or wrong bearer token"));
  }
  try {
    if (t.path == "/v1/health") {
      return json(http::status::ok, HealthJson());
    }
    if (t.path == "/metrics") {
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = MetricsText();
      res.prepare_payload();
      if (req.method() == http::verb::head) {
        res.body().clear();
      }
      return res;
    }
    if (t.path == "/v1/summary") {
      auto [summary_json, c] = feed.summary();
      return json(http::status::ok, summary_json ? *summary_json : std::string("null"));
    }
    if (t.path == "/v1/state") {
      auto prefix_it = t.query.find("prefix");
      const std::string prefix_text = prefix_it == t.query.end() ? "" : prefix_it->second;
      auto prefix = core::Path::Parse(prefix_text);
      if (!prefix.ok()) {
        return json(http::status::bad_request,
                    ErrorJson("bad prefix '" + prefix_text + "': " + prefix.status().message()));
      }
      std::int64_t limit = 10000;
      if (auto l = t.query.find("limit"); l != t.query.end()) {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(l->second.c_str(), &end, 10);
        if (l->second.empty() || *end != '\0' || errno != 0 || v < 1 || v > 100000) {
          return json(http::status::bad_request,
                      ErrorJson("bad limit '" + l->second + "': expected 1 .. 100000"));
        }
        limit = v;
      }
      std::string out("{\"prefix\":");
      core::AppendJsonString(out, prefix->ToString());
      out.append(",\"leaves\":[");
      std::int64_t n = 0;
      bool truncated = false;
      Status st = reader->ScanLeaves(*prefix, [&](const crdt::Leaf& leaf) {
        if (n >= limit) {
          truncated = true;
          return;
        }
        if (n++ > 0) {
          out.push_back(',');
        }
        out.append("{\"path\":");
        core::AppendJsonString(out, leaf.path.ToString());
        out.append(",\"value\":");
        out.append(leaf.json);
        out.append(",\"kind\":\"");
        out.append(leaf.kind == crdt::LeafKind::kScalar    ? "scalar"
                   : leaf.kind == crdt::LeafKind::kCounter ? "counter"
                   : leaf.kind == crdt::LeafKind::kMax     ? "max"
                                                           : "min");
        out.append("\",\"stamp\":{\"blade\":");
        core::AppendJsonString(out, leaf.blade);
        out.append(",\"seq\":");
        out.append(std::to_string(leaf.seq));
        out.append(",\"ts\":");
        core::AppendJsonInt(out, leaf.ts);
        out.append("}}");
      });
      if (!st.ok()) {
        return json(http::status::internal_server_error, ErrorJson(st.ToString()));
      }
      out.append("],\"truncated\":");
      out.append(truncated ? "true" : "false");
      out.push_back('}');
      return json(http::status::ok, std::move(out));
    }
    if (t.path.rfind("/v1/state/", 0) == 0) {
      const std::string dotted = t.path.substr(std::string_view("/v1/state/").size());
      auto path = core::Path::Parse(dotted);
      if (!path.ok()) {
        return json(http::status::bad_request,
                    ErrorJson("bad path '" + dotted + "': " + path.status().message()));
      }
      auto value = reader->Get(*path);
      if (!value.ok()) {
        return json(http::status::internal_server_error, ErrorJson(value.status().ToString()));
      }
      if (!value->has_value()) {
        return json(http::status::not_found, ErrorJson("no value at '" + dotted + "'"));
      }
      return json(http::status::ok, std::move(**value));
    }
    if (t.path.rfind("/v1/blame/", 0) == 0) {
      const std::string dotted = t.path.substr(std::string_view("/v1/blame/").size());
      auto path = core::Path::Parse(dotted);
      if (!path.ok()) {
        return json(http::status::bad_request,
                    ErrorJson("bad path '" + dotted + "': " + path.status().message()));
      }
      auto blame = reader->Blame(*path);
      if (!blame.ok()) {
        return json(http::status::internal_server_error, ErrorJson(blame.status().ToString()));
      }
      if (!blame->has_value()) {
        return json(http::status::not_found, ErrorJson("no value at '" + dotted + "'"));
      }
      const crdt::Provenance& p = **blame;
      auto writer = [](std::string& out, const crdt::Provenance::Writer& w) {
        out.append("{\"blade\":");
        core::AppendJsonString(out, w.blade);
        out.append(",\"seq\":");
        out.append(std::to_string(w.seq));
        out.append(",\"ts\":");
        core::AppendJsonInt(out, w.ts);
        out.append(",\"source\":");
        if (w.source.empty()) {
          out.append("null");
        } else {
          core::AppendJsonString(out, w.source);
        }
        out.append(",\"offset\":");
        out.append(std::to_string(w.offset));
        out.append(",\"line\":");
        out.append(std::to_string(w.line));
        out.push_back('}');
      };
      std::string out("{\"path\":");
      core::AppendJsonString(out, path->ToString());
      out.append(",\"kind\":");
      core::AppendJsonString(out, p.kind);
      out.append(",\"value\":");
      out.append(p.value_json);
      out.append(",\"writer\":");
      writer(out, p.writer);
      out.append(",\"shares\":[");
      for (std::size_t i = 0; i < p.shares.size(); ++i) {
        if (i > 0) {
          out.push_back(',');
        }
        const auto& sh = p.shares[i];
        out.append("{\"blade\":");
        core::AppendJsonString(out, sh.blade);
        out.append(",\"value\":");
        out.append(sh.value_json);
        out.append(",\"seq\":");
        out.append(std::to_string(sh.seq));
        out.append(",\"ts\":");
        core::AppendJsonInt(out, sh.ts);
        out.push_back('}');
      }
      out.append("],\"retired\":");
      out.append(p.retired_json ? *p.retired_json : std::string("null"));
      out.push_back('}');
      return json(http::status::ok, std::move(out));
    }
    if (api) {
      return json(http::status::not_found, ErrorJson("no such route: " + t.path));
    }
  } catch (const std::exception& e) {
    return json(http::status::internal_server_error, ErrorJson(e.what()));
  }

  // Static files.
  auto not_found = [&] { return json(http::status::not_found, ErrorJson("not found: " + t.path)); };
  if (options.web_dir.empty() || t.path.empty() || t.path[0] != '/' ||
      t.path.find('\0') != std::string::npos || t.path.find('\\') != std::string::npos) {
    return not_found();
  }
  std::string rel = t.path.substr(1);
  if (rel.empty() || rel.back() == '/') {
    rel += "index.html";
  }
  for (std::string_view seg : {std::string_view("..")}) {
    std::size_t pos = 0;
    while ((pos = rel.find(seg, pos)) != std::string::npos) {
      const bool starts = pos == 0 || rel[pos - 1] == '/';
      const bool ends = pos + 2 == rel.size() || rel[pos + 2] == '/';
      if (starts && ends) {
        return not_found();
      }
      pos += 2;
    }
  }
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::canonical(options.web_dir, ec);
  if (ec) {
    return not_found();
  }
  const std::filesystem::path file = std::filesystem::weakly_canonical(root / rel, ec);
  const std::string root_s = root.string() + "/";
  if (ec || file.string().rfind(root_s, 0) != 0 || !std::filesystem::is_regular_file(file, ec)) {
    return not_found();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return not_found();
  }
  std::ostringstream body;
  body << in.rdbuf();
  res.result(http::status::ok);
  res.set(http::field::content_type, MimeType(file.string()));
  res.set(http::field::cache_control, "no-cache");
  res.body() = body.str();
  res.prepare_payload();
  if (req.method() == http::verb::head) {
    res.body().clear();
  }
  return res;
}

void Observer::Impl::Broadcast(const std::shared_ptr<const Tick>& tick) {
  std::vector<std::shared_ptr<WsSession>> all;
  {
    std::lock_guard lock(sessions_mu);
    all.assign(sessions.begin(), sessions.end());
  }
  for (auto& s : all) {
    s->OnTick(tick);
  }
}

void Observer::Impl::BuildSummary(Tick& tick, std::int64_t wall, bool force) {
  auto json = std::make_shared<const std::string>(summary.ToJson(tick.commit, wall));
  auto [previous, previous_commit] = feed.summary();
  if (previous == nullptr || *previous != *json || force) {
    feed.SetSummary(json, tick.commit);
    tick.summary_message = std::make_shared<const std::string>(EncodeSummary(tick.commit, *json));
  }
}

void Observer::Impl::FollowLoop() {
  std::uint64_t seq = 0;
  std::int64_t last_sample = 0, last_summary = 0, last_error_log = 0;
  bool summary_dirty = false;
  constexpr std::int64_t kSampleMs = 500, kSummaryMs = 250;
  constexpr auto kMinGap = std::chrono::milliseconds(2);
  while (!stopping) {
    const auto started = std::chrono::steady_clock::now();
    auto r = reader->CatchUp();
    const std::int64_t wall = WallMs();
    auto tick = std::make_shared<Tick>();
    bool publish = false;
    bool summary_due = false;  // build and publish the summary after this tick
    if (!r.ok()) {
      ++metrics.catch_up_errors;
      if (wall - last_error_log >= 10'000) {  // one line per 10 s at most
        std::fprintf(stderr, "lattice observe: catching up failed (will retry): %s\n",
                     r.status().ToString().c_str());
        last_error_log = wall;
      }
    } else {
      ++metrics.catch_ups;
      caught_up_at = wall;
      metrics.changes += r->changes.size();
      std::lock_guard lock(summary_mu);
      if (r->gap) {
        ++metrics.resyncs;
        Status st = summary.Rebuild(*reader, r->watermark);
        if (!st.ok()) {
          ++metrics.catch_up_errors;
          std::fprintf(stderr, "lattice observe: reading the summary failed: %s\n",
                       st.ToString().c_str());
        }
        tick->resync = true;
        summary_dirty = true;
        publish = true;
      } else if (!r->changes.empty() || r->commit != commit.load()) {
        auto changed = summary.Apply(*reader, r->changes, r->watermark);
        if (!changed.ok()) {
          ++metrics.catch_up_errors;
          std::fprintf(stderr, "lattice observe: updating the summary failed: %s\n",
                       changed.status().ToString().c_str());
        } else if (*changed) {
          summary_dirty = true;
        }
      }
      commit = r->commit;
      if (wall - last_sample >= kSampleMs) {
        summary.SampleCounters(wall);
        last_sample = wall;
        summary_dirty = true;
      }
      tick->status_changes = summary.DeriveStatuses(wall);
      if (!tick->status_changes.empty()) {
        summary_dirty = true;
      }
      tick->commit = r->commit;
      tick->observed_at = wall;
      tick->changes = std::move(r->changes);
      summary_due = summary_dirty && (wall - last_summary >= kSummaryMs || tick->resync);
      if (summary_due && tick->resync) {
        // A resync sends snapshots, which carry the feed's summary: set it first.
        BuildSummary(*tick, wall, tick->resync);
        last_summary = wall;
        summary_dirty = false;
        summary_due = false;
      }
    }
    if (!tick->changes.empty()) {
      std::vector<const crdt::Change*> ptrs;
      ptrs.reserve(tick->changes.size());
      for (const crdt::Change& c : tick->changes) {
        ptrs.push_back(&c);
      }
      tick->changes_message =
          std::make_shared<const std::string>(EncodeChanges(tick->commit, tick->observed_at, ptrs));
      publish = true;
    }
    for (const StatusChange& sc : tick->status_changes) {
      tick->status_messages.push_back(std::make_shared<const std::string>(EncodeStatusChange(sc)));
      publish = true;
    }
    if (tick->summary_message) {
      publish = true;
    }
    if (publish) {
      tick->seq = ++seq;
      std::shared_ptr<const Tick> shared = std::move(tick);
      feed.Publish(shared);
      Broadcast(shared);
    }
    if (summary_due) {
      // The summary (every node, counter and rate) is built after this catch-up's changes left,
      // so it never delays them; it goes out as the next tick.
      auto summary_tick = std::make_shared<Tick>();
      summary_tick->commit = commit.load();
      summary_tick->observed_at = wall;
      {
        std::lock_guard lock(summary_mu);
        BuildSummary(*summary_tick, wall, false);
      }
      last_summary = wall;
      summary_dirty = false;
      if (summary_tick->summary_message) {
        summary_tick->seq = ++seq;
        std::shared_ptr<const Tick> shared = std::move(summary_tick);
        feed.Publish(shared);
        Broadcast(shared);
      }
    }
    const auto next = started + std::chrono::milliseconds(options.poll_ms);
    if (writer_watch.active()) {
      // Catch up again as soon as the writer writes, but not sooner than kMinGap after this
      // catch-up started: at a high commit rate one catch-up reads several commits.
      const auto earliest = started + kMinGap;
      writer_watch.Wait(next);
      if (!stopping && std::chrono::steady_clock::now() < earliest) {
        std::unique_lock lock(stop_mu);
        stop_cv.wait_until(lock, earliest, [&] { return stopped; });
      }
    } else {
      std::unique_lock lock(stop_mu);
      stop_cv.wait_until(lock, next, [&] { return stopped; });
    }
  }
}

Observer::Observer() = default;

Observer::~Observer() {
  if (impl_) {
    Stop();
    for (auto& t : impl_->threads) {
      if (t.joinable()) {
        t.join();
      }
    }
    if (impl_->follower.joinable()) {
      impl_->follower.join();
    }
    impl_->reader.reset();
    if (impl_->own_secondary_dir) {
      std::error_code ec;
      std::filesystem::remove_all(impl_->options.secondary_dir, ec);
    }
  }
}

Result<std::unique_ptr<Observer>> Observer::Start(const ObserverOptions& options) {
  if (options.threads < 1 || options.threads > 64) {
    return Status::InvalidArgument("threads must be 1 .. 64");
  }
  if (options.poll_ms < 1 || options.poll_ms > 60'000) {
    return Status::InvalidArgument("poll interval must be 1 ms .. 60 s");
  }
  if (options.client_max_lag_ms < 1) {
    return Status::InvalidArgument("client_max_lag_ms must be positive");
  }
  if (!options.web_dir.empty() && !std::filesystem::is_directory(options.web_dir)) {
    return Status::InvalidArgument("web directory '" + options.web_dir + "' does not exist");
  }
  std::unique_ptr<Observer> obs(new Observer());
  obs->impl_ = std::make_unique<Impl>(options);
  Impl& im = *obs->impl_;
  std::error_code fec;
  im.options.state_dir = std::filesystem::absolute(options.state_dir, fec).string();
  if (im.options.secondary_dir.empty()) {
    std::string tmpl =
        (std::filesystem::temp_directory_path(fec) / "lattice-observe.XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      return Status::Unavailable("cannot create a temporary directory for the secondary instance");
    }
    im.options.secondary_dir = tmpl;
    im.own_secondary_dir = true;
  }
  LATTICE_ASSIGN_OR_RETURN(
      im.reader, crdt::StateReader::OpenSecondary(im.options.state_dir, im.options.secondary_dir));
  // The first catch-up and a full read of the summary.
  {
    LATTICE_ASSIGN_OR_RETURN(crdt::CatchUpResult first, im.reader->CatchUp());
    LATTICE_RETURN_IF_ERROR(im.summary.Rebuild(*im.reader, first.watermark));
    im.commit = first.commit;
    const std::int64_t wall = WallMs();
    im.caught_up_at = wall;
    im.summary.SampleCounters(wall);
    (void)im.summary.DeriveStatuses(wall);  // the baseline: no client has seen anything yet
    im.feed.SetSummary(std::make_shared<const std::string>(im.summary.ToJson(first.commit, wall)),
                       first.commit);
  }
  // Bind.
  beast::error_code ec;
  const auto address = asio::ip::make_address(options.host, ec);
  if (ec) {
    return Status::InvalidArgument("bad listen address '" + options.host + "': " + ec.message());
  }
  const tcp::endpoint endpoint(address, options.port);
  im.acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    im.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    im.acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    im.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return Status::Unavailable("cannot listen on " + options.host + ":" +
                               std::to_string(options.port) + ": " + ec.message());
  }
  im.Accept();
  for (int i = 0; i < options.threads; ++i) {
    im.threads.emplace_back([&im] {
      for (;;) {
        try {
          im.ioc.run();
          return;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "lattice observe: error in a connection: %s\n", e.what());
        }
      }
    });
  }
  if (!im.writer_watch.Open(im.options.state_dir)) {
    std::fprintf(stderr,
                 "lattice observe: cannot watch %s for writes (inotify); following by polling "
                 "every %lld ms only\n",
                 im.options.state_dir.c_str(), static_cast<long long>(options.poll_ms));
  }
  im.follower = std::thread([&im] { im.FollowLoop(); });
  return obs;
}

std::uint16_t Observer::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

std::string Observer::url() const {
  std::string host = impl_->options.host;
  if (host.find(':') != std::string::npos) {
    host = "[" + host + "]";
  }
  return "http://" + host + ":" + std::to_string(port()) + "/";
}

void Observer::Wait() {
  std::unique_lock lock(impl_->stop_mu);
  impl_->stop_cv.wait(lock, [&] { return impl_->stopped; });
}

void Observer::Stop() {
  Impl& im = *impl_;
  {
    std::lock_guard lock(im.stop_mu);
    if (im.stopped) {
      return;
    }
    im.stopped = true;
    im.stopping = true;
  }
  im.stop_cv.notify_all();
  im.writer_watch.Wake();
  asio::post(im.ioc, [&im] {
    beast::error_code ec;
    im.acceptor.close(ec);
  });
  {
    std::lock_guard lock(im.sessions_mu);
    for (auto& s : im.sessions) {
      s->Close();
    }
  }
  im.ioc.stop();
}

}  // namespace lattice::observer
