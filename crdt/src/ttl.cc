// TTL rules from flags (`intents.*=1h`) and from the `ttl:` section of a YAML config file.
#include "lattice/crdt/ttl.h"

#include <yaml-cpp/yaml.h>

#include <fstream>

#include "lattice/core/duration.h"
#include "lattice/core/path.h"

namespace lattice::crdt {

namespace {

Result<TtlRule> MakeRule(std::string_view pattern, std::string_view duration,
                         const std::string& where) {
  if (pattern.empty()) {
    return Status::InvalidArgument(where + ": the pattern is empty");
  }
  auto path = core::Path::Parse(pattern);
  if (!path.ok()) {
    return Status::InvalidArgument(where + ": " + path.status().message());
  }
  auto ms = core::ParseDurationMs(duration);
  if (!ms.ok()) {
    return Status::InvalidArgument(where + ": " + ms.status().message());
  }
  if (*ms <= 0) {
    return Status::InvalidArgument(where + ": the duration must be positive");
  }
  TtlRule rule;
  rule.pattern = path->segments();
  rule.duration_ms = *ms;
  return rule;
}

}  // namespace

Result<TtlRule> ParseTtlRule(std::string_view text) {
  const std::size_t eq = text.rfind('=');
  if (eq == std::string_view::npos) {
    return Status::InvalidArgument("TTL rule '" + std::string(text) +
                                   "': expected PATTERN=DURATION, e.g. intents.*=1h");
  }
  return MakeRule(text.substr(0, eq), text.substr(eq + 1),
                  "TTL rule '" + std::string(text) + "'");
}

std::string FormatTtlRule(const TtlRule& rule) {
  std::string out = core::Path(rule.pattern).ToString();
  out.push_back('=');
  out.append(core::FormatDurationMs(rule.duration_ms));
  return out;
}

Status LoadTtlConfig(const std::string& file, EngineOptions& options) {
  std::ifstream in(file);
  if (!in) {
    return Status::NotFound("cannot read config file '" + file + "'");
  }
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("config file '" + file + "': " + e.what());
  }
  if (!root || root.IsNull()) {
    return Status::Ok();
  }
  if (!root.IsMap()) {
    return Status::InvalidArgument("config file '" + file + "': the top level must be a mapping");
  }
  const YAML::Node ttl = root["ttl"];
  if (!ttl || ttl.IsNull()) {
    return Status::Ok();
  }
  const std::string where = "config file '" + file + "', ttl";
  if (!ttl.IsMap()) {
    return Status::InvalidArgument(where + ": must be a mapping");
  }
  try {
    for (const auto& kv : ttl) {
      const std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "clock") {
        const std::string clock = v.as<std::string>();
        if (clock == "event") {
          options.ttl_clock = TtlClock::kEventTime;
        } else if (clock == "wall") {
          options.ttl_clock = TtlClock::kWallClock;
        } else {
          return Status::InvalidArgument(where + ".clock: '" + clock +
                                         "' is not 'event' or 'wall'");
        }
      } else if (key == "counter_slot_ttl" || key == "blade_ttl") {
        auto ms = core::ParseDurationMs(v.as<std::string>());
        if (!ms.ok() || *ms < 0) {
          return Status::InvalidArgument(where + "." + key + ": " +
                                         (ms.ok() ? "must not be negative" : ms.status().message()));
        }
        (key == "blade_ttl" ? options.blade_ttl_ms : options.counter_slot_ttl_ms) = *ms;
      } else if (key == "rules") {
        if (!v.IsMap()) {
          return Status::InvalidArgument(where + ".rules: must map patterns to durations");
        }
        for (const auto& rule : v) {
          const std::string pattern = rule.first.as<std::string>();
          LATTICE_ASSIGN_OR_RETURN(
              TtlRule r, MakeRule(pattern, rule.second.as<std::string>(),
                                  where + ".rules '" + pattern + "'"));
          options.ttl.push_back(std::move(r));
        }
      } else {
        return Status::InvalidArgument(where + ": unknown key '" + key +
                                       "' (expected clock, counter_slot_ttl, blade_ttl, rules)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(where + ": " + e.what());
  }
  return Status::Ok();
}

}  // namespace lattice::crdt
