// The /v1/stream protocol: encoders, the client message parser, the feed and the per-connection
// state machine (docs/observer-protocol.md).
#include "lattice/observer/protocol.h"

#include <map>

#include <boost/json.hpp>

#include "lattice/core/json_text.h"
#include "lattice/core/path.h"

namespace lattice::observer {

std::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kPeriodic:
      return "periodic";
    case Mode::kManual:
      return "manual";
    case Mode::kLive:
      return "live";
  }
  return "periodic";
}

namespace {

void AppendOptJson(std::string& out, const std::optional<std::string>& json) {
  out.append(json ? *json : std::string("null"));
}

void AppendOptString(std::string& out, const std::optional<std::string>& s) {
  if (s) {
    core::AppendJsonString(out, *s);
  } else {
    out.append("null");
  }
}

}  // namespace

void AppendChange(std::string& out, const crdt::Change& c) {
  out.append("{\"path\":");
  core::AppendJsonString(out, c.path);
  out.append(",\"old\":");
  AppendOptJson(out, c.old_json);
  out.append(",\"new\":");
  AppendOptJson(out, c.new_json);
  out.append(",\"stamp\":{\"blade\":");
  core::AppendJsonString(out, c.blade);
  out.append(",\"seq\":");
  out.append(std::to_string(c.seq));
  out.append(",\"ts\":");
  core::AppendJsonInt(out, c.ts);
  out.append("},\"cause\":\"");
  out.append(crdt::ChangeCauseName(c.cause));
  out.append("\"}");
}

std::string EncodeChanges(std::uint64_t commit, std::int64_t observed_at,
                          const std::vector<const crdt::Change*>& changes) {
  std::string out;
  out.reserve(64 + changes.size() * 128);
  out.append(R"({"type":"changes","payload":{"commit":)");
  out.append(std::to_string(commit));
  out.append(",\"observed_at\":");
  core::AppendJsonInt(out, observed_at);
  out.append(",\"changes\":[");
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    AppendChange(out, *changes[i]);
  }
  out.append("]}}");
  return out;
}

std::string EncodeStatusChange(const StatusChange& c) {
  std::string out(R"({"type":"worker_node_status_change","payload":{"workerNodeId":)");
  core::AppendJsonString(out, c.node);
  out.append(",\"oldStatus\":");
  AppendOptString(out, c.old_status);
  out.append(",\"newStatus\":");
  AppendOptString(out, c.new_status);
  out.append(",\"updatedAt\":");
  core::AppendJsonInt(out, c.updated_at);
  out.append("}}");
  return out;
}

std::string EncodeSnapshot(std::string_view reason, std::uint64_t commit,
                           std::string_view summary_json) {
  std::string out(R"({"type":"snapshot","payload":{"reason":)");
  core::AppendJsonString(out, reason);
  out.append(",\"commit\":");
  out.append(std::to_string(commit));
  out.append(",\"summary\":");
  out.append(summary_json);
  out.append("}}");
  return out;
}

std::string EncodeSummary(std::uint64_t commit, std::string_view summary_json) {
  std::string out(R"({"type":"summary","payload":{"commit":)");
  out.append(std::to_string(commit));
  out.append(",\"summary\":");
  out.append(summary_json);
  out.append("}}");
  return out;
}

std::string EncodeError(std::string_view reason, std::string_view message) {
  std::string out(R"({"type":"error","payload":{"reason":)");
  core::AppendJsonString(out, reason);
  out.append(",\"message\":");
  core::AppendJsonString(out, message);
  out.append("}}");
  return out;
}

std::string EncodeHello(Mode mode, std::int64_t interval_ms, bool change_log) {
  std::string out(R"({"type":"hello","payload":{"server":"lattice-observe","protocol":1,"mode":")");
  out.append(ModeName(mode));
  out.append("\",\"interval_ms\":");
  core::AppendJsonInt(out, interval_ms);
  out.append(",\"max_message_bytes\":");
  out.append(std::to_string(kMaxClientMessageBytes));
  out.append(change_log ? ",\"change_log\":true}}" : ",\"change_log\":false}}");
  return out;
}

std::string EncodeMode(Mode mode, std::int64_t interval_ms,
                       const std::vector<std::string>& prefixes) {
  std::string out(R"({"type":"mode","payload":{"mode":")");
  out.append(ModeName(mode));
  out.append("\",\"interval_ms\":");
  core::AppendJsonInt(out, interval_ms);
  out.append(",\"prefixes\":[");
  for (std::size_t i = 0; i < prefixes.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    core::AppendJsonString(out, prefixes[i]);
  }
  out.append("]}}");
  return out;
}

std::string EncodePong(std::string_view t_json, std::int64_t server_time) {
  std::string out(R"({"type":"pong","payload":{"t":)");
  out.append(t_json);
  out.append(",\"server_time\":");
  core::AppendJsonInt(out, server_time);
  out.append("}}");
  return out;
}

std::string EncodeBatch(std::string_view update_type, std::uint64_t commit,
                        const std::vector<std::string_view>& messages) {
  std::size_t size = 128;
  for (std::string_view m : messages) {
    size += m.size() + 1;
  }
  std::string out;
  out.reserve(size);
  out.append(R"({"type":"batched_update_response","payload":{"update_type":)");
  core::AppendJsonString(out, update_type);
  out.append(",\"commit\":");
  out.append(std::to_string(commit));
  out.append(",\"messages\":[");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    out.append(messages[i]);
  }
  out.append("]}}");
  return out;
}

namespace {

ParsedClientMessage Refuse(std::string reason, std::string message) {
  ParsedClientMessage p;
  p.error = ProtocolError{std::move(reason), std::move(message)};
  return p;
}

}  // namespace

ParsedClientMessage ParseClientMessage(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value v;
  try {
    boost::json::parse_options opts;
    opts.max_depth = 32;
    v = boost::json::parse(text, ec, {}, opts);
  } catch (const std::exception&) {
    return Refuse("malformed", "message is not valid JSON");
  }
  if (ec) {
    return Refuse("malformed", "message is not valid JSON");
  }
  if (!v.is_object()) {
    return Refuse("malformed", "message must be a JSON object {\"type\": ..., \"payload\": {...}}");
  }
  const boost::json::object& obj = v.as_object();
  const boost::json::value* type = obj.if_contains("type");
  if (type == nullptr || !type->is_string()) {
    return Refuse("malformed", "message has no string field 'type'");
  }
  const boost::json::value* payload_v = obj.if_contains("payload");
  static const boost::json::object kEmpty;
  const boost::json::object* payload = &kEmpty;
  if (payload_v != nullptr && !payload_v->is_null()) {
    if (!payload_v->is_object()) {
      return Refuse("malformed", "field 'payload' must be an object");
    }
    payload = &payload_v->as_object();
  }
  const std::string_view t(type->as_string().data(), type->as_string().size());
  ClientMessage m;
  if (t == "update_request") {
    m.type = ClientMessage::Type::kUpdateRequest;
    const boost::json::value* u = payload->if_contains("update_type");
    if (u == nullptr || !u->is_string() ||
        (u->as_string() != "periodic" && u->as_string() != "manual")) {
      return Refuse("bad_payload",
                    "update_request: payload.update_type must be \"periodic\" or \"manual\"");
    }
    m.update_type = std::string(u->as_string().data(), u->as_string().size());
  } else if (t == "set_mode") {
    m.type = ClientMessage::Type::kSetMode;
    const boost::json::value* mode = payload->if_contains("mode");
    if (mode == nullptr || !mode->is_string()) {
      return Refuse("bad_payload",
                    "set_mode: payload.mode must be \"periodic\", \"manual\" or \"live\"");
    }
    if (mode->as_string() == "periodic") {
      m.mode = Mode::kPeriodic;
    } else if (mode->as_string() == "manual") {
      m.mode = Mode::kManual;
    } else if (mode->as_string() == "live") {
      m.mode = Mode::kLive;
    } else {
      return Refuse("bad_payload",
                    "set_mode: payload.mode must be \"periodic\", \"manual\" or \"live\"");
    }
    if (const boost::json::value* iv = payload->if_contains("interval_ms");
        iv != nullptr && !iv->is_null()) {
      std::int64_t ms = 0;
      if (iv->is_int64()) {
        ms = iv->as_int64();
      } else if (iv->is_uint64()) {
        ms = kMaxIntervalMs + 1;
      } else if (iv->is_double() &&
                 iv->as_double() ==
                     static_cast<double>(static_cast<std::int64_t>(iv->as_double()))) {
        ms = static_cast<std::int64_t>(iv->as_double());
      } else {
        return Refuse("bad_payload", "set_mode: payload.interval_ms must be an integer");
      }
      if (ms < kMinIntervalMs || ms > kMaxIntervalMs) {
        return Refuse("bad_payload",
                      "set_mode: payload.interval_ms must be in " + std::to_string(kMinIntervalMs) +
                          " .. " + std::to_string(kMaxIntervalMs) + ", got " + std::to_string(ms));
      }
      m.interval_ms = ms;
    }
  } else if (t == "subscribe") {
    m.type = ClientMessage::Type::kSubscribe;
    const boost::json::value* p = payload->if_contains("prefixes");
    if (p == nullptr || !p->is_array()) {
      return Refuse("bad_payload", "subscribe: payload.prefixes must be a list of dotted paths");
    }
    if (p->as_array().size() > kMaxPrefixes) {
      return Refuse("bad_payload",
                    "subscribe: at most " + std::to_string(kMaxPrefixes) + " prefixes");
    }
    for (const boost::json::value& e : p->as_array()) {
      if (!e.is_string()) {
        return Refuse("bad_payload", "subscribe: payload.prefixes must be a list of dotted paths");
      }
      const std::string_view s(e.as_string().data(), e.as_string().size());
      auto path = core::Path::Parse(s);
      if (!path.ok()) {
        return Refuse("bad_payload",
                      "subscribe: bad prefix '" + std::string(s) + "': " + path.status().message());
      }
      if (path->empty()) {
        m.prefixes.clear();  // "" = everything
        break;
      }
      m.prefixes.push_back(path->ToString());
    }
  } else if (t == "ping") {
    m.type = ClientMessage::Type::kPing;
    if (const boost::json::value* tv = payload->if_contains("t")) {
      m.t_json = boost::json::serialize(*tv);
    }
  } else {
    std::string shown(t.substr(0, 64));
    return Refuse("unknown_type", "unknown message type '" + shown +
                                      "'; expected update_request, set_mode, subscribe or ping");
  }
  ParsedClientMessage out;
  out.message = std::move(m);
  return out;
}

Feed::Feed(std::size_t max_changes) : max_changes_(max_changes) {}

void Feed::Publish(std::shared_ptr<const Tick> tick) {
  std::lock_guard lock(mu_);
  last_seq_ = tick->seq;
  changes_ += tick->changes.size() + tick->status_changes.size();
  ticks_.push_back(std::move(tick));
  while (ticks_.size() > 1 && (changes_ > max_changes_ || ticks_.size() > 100'000)) {
    changes_ -= ticks_.front()->changes.size() + ticks_.front()->status_changes.size();
    ticks_.pop_front();
  }
}

std::uint64_t Feed::last_seq() const {
  std::lock_guard lock(mu_);
  return last_seq_;
}

bool Feed::Since(std::uint64_t after, std::vector<std::shared_ptr<const Tick>>& out) const {
  std::lock_guard lock(mu_);
  if (after >= last_seq_) {
    return true;
  }
  if (ticks_.empty() || ticks_.front()->seq > after + 1) {
    return false;
  }
  const std::size_t start = static_cast<std::size_t>(after + 1 - ticks_.front()->seq);
  for (std::size_t i = start; i < ticks_.size(); ++i) {
    out.push_back(ticks_[i]);
  }
  return true;
}

void Feed::SetSummary(std::shared_ptr<const std::string> summary_json, std::uint64_t commit) {
  std::lock_guard lock(mu_);
  summary_ = std::move(summary_json);
  summary_commit_ = commit;
}

std::pair<std::shared_ptr<const std::string>, std::uint64_t> Feed::summary() const {
  std::lock_guard lock(mu_);
  return {summary_, summary_commit_};
}

StreamProtocol::StreamProtocol(const Feed& feed, bool change_log)
    : feed_(feed), change_log_(change_log) {}

Message StreamProtocol::Snapshot(std::string_view reason) const {
  auto [summary, commit] = feed_.summary();
  return std::make_shared<const std::string>(
      EncodeSnapshot(reason, commit, summary ? std::string_view(*summary) : "null"));
}

std::vector<Message> StreamProtocol::OnConnect() {
  after_seq_ = feed_.last_seq();
  return {std::make_shared<const std::string>(EncodeHello(mode_, interval_ms_, change_log_)),
          Snapshot("connect")};
}

bool StreamProtocol::Matches(const std::string& path) const {
  if (prefixes_.empty()) {
    return true;
  }
  for (const std::string& p : prefixes_) {
    if (path.size() >= p.size() && path.compare(0, p.size(), p) == 0 &&
        (path.size() == p.size() || path[p.size()] == '.')) {
      return true;
    }
    // The top-level key "" is `\e`, but the paths under it are written `.x` (core::Path): a
    // leading dot is always a separator, so those are exactly the paths that start with one.
    if (p == "\\e" && !path.empty() && path[0] == '.') {
      return true;
    }
  }
  return false;
}

Message StreamProtocol::BuildBatch(std::string_view update_type) {
  std::vector<std::shared_ptr<const Tick>> ticks;
  const bool complete = feed_.Since(after_seq_, ticks);
  auto [summary, commit] = feed_.summary();
  const std::string_view summary_json = summary ? std::string_view(*summary) : "null";
  if (!ticks.empty()) {
    after_seq_ = ticks.back()->seq;
  } else if (!complete) {
    after_seq_ = feed_.last_seq();
  }
  auto single = [&](std::string_view reason) {
    const std::string snap = EncodeSnapshot(reason, commit, summary_json);
    return std::make_shared<const std::string>(EncodeBatch(update_type, commit, {snap}));
  };
  if (!complete) {
    return single("overflow");
  }
  // Coalesce per path: first old, last new / stamp / cause, in order of first change.
  std::vector<crdt::Change> merged;
  std::map<std::string_view, std::size_t> index;
  std::vector<std::string_view> status;
  std::size_t status_count = 0;
  bool resync = false;
  for (const auto& tick : ticks) {
    if (tick->resync) {
      resync = true;
    }
    status_count += tick->status_messages.size();
    for (const Message& m : tick->status_messages) {
      status.push_back(*m);
    }
    for (const crdt::Change& c : tick->changes) {
      if (!Matches(c.path)) {
        continue;
      }
      auto [it, inserted] = index.emplace(c.path, merged.size());
      if (inserted) {
        merged.push_back(c);
      } else {
        crdt::Change& m = merged[it->second];
        m.new_json = c.new_json;
        m.blade = c.blade;
        m.seq = c.seq;
        m.ts = c.ts;
        m.cause = c.cause;
      }
      if (merged.size() > kMaxBatchPaths) {
        return single("overflow");
      }
    }
  }
  if (resync) {
    return single("resync");
  }
  if (status_count > kMaxBatchStatusChanges) {
    return single("overflow");
  }
  std::vector<std::string_view> parts = status;
  std::string changes_msg;
  if (!merged.empty()) {
    std::vector<const crdt::Change*> ptrs;
    ptrs.reserve(merged.size());
    for (const crdt::Change& c : merged) {
      ptrs.push_back(&c);
    }
    changes_msg = EncodeChanges(ticks.back()->commit, ticks.back()->observed_at, ptrs);
    parts.push_back(changes_msg);
  }
  const std::string summary_msg = EncodeSummary(commit, summary_json);
  parts.push_back(summary_msg);
  return std::make_shared<const std::string>(EncodeBatch(update_type, commit, parts));
}

std::vector<Message> StreamProtocol::OnText(std::string_view text, std::int64_t wall_ms,
                                            std::string& type_seen, std::string& error_reason) {
  error_reason.clear();
  auto error = [&](const std::string& reason, const std::string& message) {
    error_reason = reason;
    return std::vector<Message>{std::make_shared<const std::string>(EncodeError(reason, message))};
  };
  if (wall_ms - window_start_ >= 1000) {
    window_start_ = wall_ms;
    window_count_ = 0;
  }
  if (++window_count_ > kMaxClientMessagesPerSecond) {
    type_seen = "rate_limited";
    if (window_count_ == kMaxClientMessagesPerSecond + 1) {
      return error("rate_limited", "more than " + std::to_string(kMaxClientMessagesPerSecond) +
                                       " messages in one second; the excess is dropped");
    }
    return {};
  }
  ParsedClientMessage parsed = ParseClientMessage(text);
  if (parsed.error) {
    type_seen = parsed.error->reason == "unknown_type" ? "unknown" : "malformed";
    return error(parsed.error->reason, parsed.error->message);
  }
  const ClientMessage& m = *parsed.message;
  switch (m.type) {
    case ClientMessage::Type::kUpdateRequest:
      type_seen = "update_request";
      if (mode_ == Mode::kLive) {
        return error("not_in_live_mode",
                     "update_request is not available in live mode; send set_mode periodic or "
                     "manual first");
      }
      return {BuildBatch(m.update_type)};
    case ClientMessage::Type::kSetMode: {
      type_seen = "set_mode";
      std::vector<Message> out;
      if (m.mode == Mode::kLive && mode_ != Mode::kLive) {
        out.push_back(BuildBatch("mode_change"));  // nothing pending is lost
      } else if (m.mode != Mode::kLive && mode_ == Mode::kLive) {
        after_seq_ = feed_.last_seq();  // a new batch starts now
      }
      mode_ = m.mode;
      if (m.interval_ms) {
        interval_ms_ = *m.interval_ms;
      }
      out.push_back(
          std::make_shared<const std::string>(EncodeMode(mode_, interval_ms_, prefixes_)));
      return out;
    }
    case ClientMessage::Type::kSubscribe:
      type_seen = "subscribe";
      prefixes_ = m.prefixes;
      return {std::make_shared<const std::string>(EncodeMode(mode_, interval_ms_, prefixes_))};
    case ClientMessage::Type::kPing:
      type_seen = "ping";
      return {std::make_shared<const std::string>(EncodePong(m.t_json, wall_ms))};
  }
  return {};
}

std::vector<Message> StreamProtocol::OnTick(const Tick& tick) {
  if (mode_ != Mode::kLive) {
    return {};
  }
  after_seq_ = tick.seq;
  if (tick.resync) {
    return {Snapshot("resync")};
  }
  std::vector<Message> out = tick.status_messages;
  if (!tick.changes.empty()) {
    if (prefixes_.empty()) {
      out.push_back(tick.changes_message);
    } else {
      // Clients with the same subscription share one encoding (the io threads serve clients in
      // parallel, hence the lock).
      std::lock_guard lock(tick.filtered_mu);
      auto [it, inserted] = tick.filtered.try_emplace(prefixes_);
      if (inserted) {
        std::vector<const crdt::Change*> mine;
        for (const crdt::Change& c : tick.changes) {
          if (Matches(c.path)) {
            mine.push_back(&c);
          }
        }
        if (!mine.empty()) {
          it->second = std::make_shared<const std::string>(
              EncodeChanges(tick.commit, tick.observed_at, mine));
        }
      }
      if (it->second != nullptr) {
        out.push_back(it->second);
      }
    }
  }
  if (tick.summary_message) {
    out.push_back(tick.summary_message);
  }
  return out;
}

}  // namespace lattice::observer
