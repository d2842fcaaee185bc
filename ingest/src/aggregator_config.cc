// Resolving `lattice aggregate` settings from flags, environment and a YAML file.
#include "lattice/ingest/aggregator_config.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>

#include <yaml-cpp/yaml.h>

#include "lattice/core/duration.h"
#include "lattice/crdt/state_store.h"

namespace lattice::ingest {

const std::vector<SettingInfo>& AggregateSettings() {
  static const std::vector<SettingInfo> kSettings = {
      {"brokers", "LATTICE_BROKERS", "Kafka bootstrap list host:port[,host:port...]"},
      {"topic", "LATTICE_TOPIC", "topic of shards [lattice.shards]"},
      {"group", "LATTICE_GROUP", "consumer group [lattice-aggregator]"},
      {"assign", "LATTICE_ASSIGN",
       "standalone mode: 'all' or partitions like 0-31,40 read without a consumer group; "
       "empty for group mode []"},
      {"state", "LATTICE_STATE", "state directory (required)"},
      {"default_blade", "LATTICE_DEFAULT_BLADE",
       "blade of messages without a key, followed by /<partition> [unkeyed]"},
      {"dead_topic", "LATTICE_DEAD_TOPIC", "topic of rejected shards [lattice.dead]"},
      {"changes_topic", "LATTICE_CHANGES_TOPIC",
       "topic of change events, empty for none [lattice.changes]"},
      {"min_batch", "LATTICE_MIN_BATCH", "smallest batch limit, messages [1024]"},
      {"max_batch", "LATTICE_MAX_BATCH",
       "largest batch limit, messages [1048576; 262144 with change events]"},
      {"max_batch_time", "LATTICE_MAX_BATCH_TIME",
       "a batch is committed at the latest this long after its first message [1s]"},
      {"allowed_lateness", "LATTICE_ALLOWED_LATENESS",
       "how far behind the watermark a shard still merges exactly [5m]"},
      {"sync", "LATTICE_SYNC", "fsync the write-ahead log on every commit [false]"},
      {"exit_at_end", "LATTICE_EXIT_AT_END",
       "stop once every assigned partition reached its end offset at start [false]"},
      {"log_interval", "LATTICE_LOG_INTERVAL", "progress log period, 0 for none [5s]"},
      {"memory_budget", "LATTICE_MEMORY_BUDGET",
       "keep the in-memory state under about this size, e.g. 512MiB, 2GiB; written subtrees "
       "leave memory and are read back when needed [off]"},
      {"max_wal_size", "LATTICE_MAX_WAL_SIZE",
       "bound on the state's write-ahead log, at least 1MiB; past it the column families holding "
       "the oldest log file are written out and the file deleted [256MiB]"},
  };
  return kSettings;
}

namespace {

bool Known(std::string_view name) {
  for (const SettingInfo& s : AggregateSettings()) {
    if (s.name == name) {
      return true;
    }
  }
  return false;
}

Result<std::uint64_t> ParseCount(std::string_view name, const std::string& text, std::uint64_t lo,
                                 std::uint64_t hi) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || v < lo || v > hi) {
    return Status::InvalidArgument("setting " + std::string(name) + ": '" + text +
                                   "' is not an integer in " + std::to_string(lo) + ".." +
                                   std::to_string(hi));
  }
  return v;
}

Result<bool> ParseBool(std::string_view name, const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") {
    return true;
  }
  if (text == "false" || text == "0" || text == "no" || text == "off" || text.empty()) {
    return false;
  }
  return Status::InvalidArgument("setting " + std::string(name) + ": '" + text +
                                 "' is not a boolean (true/false)");
}

Result<std::int64_t> ParseDuration(std::string_view name, const std::string& text) {
  auto ms = core::ParseDurationMs(text);
  if (!ms.ok()) {
    return Status::InvalidArgument("setting " + std::string(name) + ": " + ms.status().message());
  }
  if (*ms < 0) {
    return Status::InvalidArgument("setting " + std::string(name) + ": must not be negative");
  }
  return *ms;
}

}  // namespace

Result<std::optional<std::vector<std::int32_t>>> ParseAssign(std::string_view text) {
  if (text.empty() || text == "group") {
    return std::optional<std::vector<std::int32_t>>();
  }
  std::vector<std::int32_t> partitions;
  if (text == "all") {
    return std::optional<std::vector<std::int32_t>>(std::move(partitions));
  }
  const auto bad = [&](std::string_view why) {
    std::string msg = "setting assign: '";
    msg.append(text).append("' ").append(why);
    msg.append(" (give 'all', or partitions and ranges like 0-31,40)");
    return Status::InvalidArgument(std::move(msg));
  };
  constexpr std::int32_t kMaxPartition = 1 << 20;
  const auto number = [&](std::string_view s, std::int32_t& out) {
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return !s.empty() && ec == std::errc() && ptr == s.data() + s.size() && out >= 0 &&
           out < kMaxPartition;
  };
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = text.size();
    }
    const std::string_view item = text.substr(pos, comma - pos);
    const std::size_t dash = item.find('-');
    std::int32_t lo = 0;
    std::int32_t hi = 0;
    if (dash == std::string_view::npos) {
      if (!number(item, lo)) {
        return bad("has a bad partition number");
      }
      hi = lo;
    } else if (!number(item.substr(0, dash), lo) || !number(item.substr(dash + 1), hi) || hi < lo) {
      return bad("has a bad partition range");
    }
    for (std::int32_t p = lo; p <= hi; ++p) {
      partitions.push_back(p);
    }
    pos = comma + 1;
  }
  std::sort(partitions.begin(), partitions.end());
  if (std::adjacent_find(partitions.begin(), partitions.end()) != partitions.end()) {
    return bad("names a partition twice");
  }
  return std::optional<std::vector<std::int32_t>>(std::move(partitions));
}

Result<SettingMap> ReadAggregateConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status::NotFound("cannot read config file '" + path + "'");
  }
  SettingMap out;
  try {
    const YAML::Node root = YAML::Load(in);
    if (root.IsNull()) {
      return out;
    }
    if (!root.IsMap()) {
      return Status::InvalidArgument(path + ": the config file must be a map of settings");
    }
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      const auto where = [&] {
        return path + ":" + std::to_string(kv.first.Mark().line + 1) + ": ";
      };
      if (key == "kafka") {
        if (!kv.second.IsMap()) {
          return Status::InvalidArgument(where() +
                                         "'kafka' must be a map of librdkafka properties");
        }
        for (const auto& p : kv.second) {
          if (!p.second.IsScalar()) {
            return Status::InvalidArgument(where() + "kafka." + p.first.as<std::string>() +
                                           " must be a scalar");
          }
          out["kafka." + p.first.as<std::string>()] = p.second.as<std::string>();
        }
        continue;
      }
      if (key == "ttl") {
        continue;  // the state's TTL section, read by crdt::LoadTtlConfig (docs/configuration.md)
      }
      if (!Known(key)) {
        return Status::InvalidArgument(where() + "unknown setting '" + key + "'");
      }
      if (!kv.second.IsScalar()) {
        return Status::InvalidArgument(where() + "setting '" + key + "' must be a scalar");
      }
      out[key] = kv.second.as<std::string>();
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(path + ": " + e.what());
  }
  return out;
}

SettingMap ReadAggregateEnvironment() {
  SettingMap out;
  for (const SettingInfo& s : AggregateSettings()) {
    if (const char* v = std::getenv(std::string(s.env).c_str()); v != nullptr) {
      out[std::string(s.name)] = v;
    }
  }
  return out;
}

Result<AggregateConfig> ResolveAggregateConfig(const std::vector<SettingMap>& layers) {
  AggregateConfig config;
  const auto get = [&](std::string_view name) -> const std::string* {
    for (const SettingMap& layer : layers) {
      if (auto it = layer.find(std::string(name)); it != layer.end()) {
        return &it->second;
      }
    }
    return nullptr;
  };
  AggregatorOptions& o = config.options;
  if (const std::string* v = get("brokers")) {
    o.kafka.brokers = *v;
  }
  const auto text = [&](std::string_view name, std::string& field) -> Status {
    if (const std::string* v = get(name)) {
      if (v->empty()) {
        return Status::InvalidArgument("setting " + std::string(name) + " must not be empty");
      }
      field = *v;
    }
    return Status::Ok();
  };
  LATTICE_RETURN_IF_ERROR(text("topic", o.topic));
  LATTICE_RETURN_IF_ERROR(text("group", o.group));
  LATTICE_RETURN_IF_ERROR(text("state", config.state));
  LATTICE_RETURN_IF_ERROR(text("default_blade", o.default_blade));
  LATTICE_RETURN_IF_ERROR(text("dead_topic", o.dead_topic));
  if (const std::string* v = get("assign")) {
    LATTICE_ASSIGN_OR_RETURN(auto assign, ParseAssign(*v));
    o.standalone = assign.has_value();
    o.partitions = assign.value_or(std::vector<std::int32_t>());
  }
  if (const std::string* v = get("changes_topic")) {
    o.changes_topic = *v;  // may be empty: no topic, in-process subscribers only
  }
  if (config.state.empty()) {
    return Status::InvalidArgument(
        "no state directory: give --state DIR, LATTICE_STATE or "
        "'state:' in the config file");
  }
  if (const std::string* v = get("min_batch")) {
    LATTICE_ASSIGN_OR_RETURN(auto n, ParseCount("min_batch", *v, 1, 1 << 24));
    o.min_batch = n;
  }
  if (const std::string* v = get("max_batch")) {
    LATTICE_ASSIGN_OR_RETURN(auto n, ParseCount("max_batch", *v, 1, 1 << 24));
    o.max_batch = n;
  }
  if (o.max_batch && *o.max_batch < o.min_batch) {
    return Status::InvalidArgument("setting max_batch (" + std::to_string(*o.max_batch) +
                                   ") is below min_batch (" + std::to_string(o.min_batch) + ")");
  }
  if (const std::string* v = get("max_batch_time")) {
    LATTICE_ASSIGN_OR_RETURN(o.max_batch_ms, ParseDuration("max_batch_time", *v));
  }
  if (const std::string* v = get("allowed_lateness")) {
    LATTICE_ASSIGN_OR_RETURN(config.allowed_lateness_ms, ParseDuration("allowed_lateness", *v));
  }
  if (const std::string* v = get("sync")) {
    LATTICE_ASSIGN_OR_RETURN(config.sync, ParseBool("sync", *v));
  }
  if (const std::string* v = get("memory_budget")) {
    auto budget = crdt::ParseMemoryBudget(*v);
    if (!budget.ok()) {
      return Status::InvalidArgument("setting memory_budget: " + budget.status().message());
    }
    config.memory_budget = *budget;
  }
  if (const std::string* v = get("max_wal_size")) {
    // No "off": an unbounded log is what the bound is for (docs/operations.md, "Disk use and
    // restart time"). Below 1 MiB every commit would flush.
    auto size = crdt::ParseByteSize(*v);
    if (!size.ok()) {
      return Status::InvalidArgument("setting max_wal_size: " + size.status().message());
    }
    if (*size < (std::uint64_t{1} << 20)) {
      return Status::InvalidArgument("setting max_wal_size: '" + *v +
                                     "' is below the minimum of 1MiB");
    }
    config.max_wal_bytes = *size;
  }
  if (const std::string* v = get("exit_at_end")) {
    LATTICE_ASSIGN_OR_RETURN(o.exit_at_end, ParseBool("exit_at_end", *v));
  }
  if (const std::string* v = get("log_interval")) {
    LATTICE_ASSIGN_OR_RETURN(auto ms, ParseDuration("log_interval", *v));
    o.log_interval_s = static_cast<double>(ms) / 1000.0;
  }
  // The file's librdkafka properties (the only layer with a map of them).
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    for (const auto& [key, value] : *it) {
      if (key.starts_with("kafka.")) {
        config.file_kafka_properties.emplace_back(key.substr(6), value);
      }
    }
  }
  return config;
}

}  // namespace lattice::ingest
