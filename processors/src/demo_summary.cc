// SummarizeState: what a merged state says about a cluster that follows the well-known paths
// (DESIGN.md §13). It reads leaves through StateReader::Scan, so it needs no JSON parser: a leaf
// is a canonical JSON scalar (a string, a number, a bool) or an array.
#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <set>

#include "lattice/crdt/state_reader.h"
#include "lattice/processors/demo_cluster.h"

namespace lattice::processors {

namespace {

// The text of a canonical JSON string leaf (escapes undone for the characters canonical JSON
// escapes), or nullopt if the leaf is not a string.
std::optional<std::string> StringLeaf(std::string_view json) {
  if (json.size() < 2 || json.front() != '"' || json.back() != '"') {
    return std::nullopt;
  }
  std::string out;
  for (std::size_t i = 1; i + 1 < json.size(); ++i) {
    if (json[i] == '\\' && i + 2 < json.size()) {
      ++i;
      switch (json[i]) {
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u':
          out.push_back('?');  // a control character; not needed here
          i += 4;
          break;
        default:
          out.push_back(json[i]);
      }
    } else {
      out.push_back(json[i]);
    }
  }
  return out;
}

std::optional<double> NumberLeaf(std::string_view json) {
  if (json.empty() || !(json.front() == '-' || (json.front() >= '0' && json.front() <= '9'))) {
    return std::nullopt;
  }
  std::string text(json);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) {
    return std::nullopt;
  }
  return v;
}

}  // namespace

Result<DemoSummary> SummarizeState(const crdt::StateReader& reader, std::int64_t now_ms,
                                   std::int64_t heartbeat_timeout_ms) {
  DemoSummary s;
  // nodes.<id>.{status,heartbeat}
  std::map<std::string, std::string> status;
  std::map<std::string, double> heartbeat;
  std::set<std::string> nodes;
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"nodes"}), [&](const core::Path& p,
                                                                 std::string_view json) {
    const auto& seg = p.segments();
    if (seg.size() < 2) {
      return;
    }
    nodes.insert(seg[1]);
    if (seg.size() == 3 && seg[2] == "status") {
      status[seg[1]] = StringLeaf(json).value_or("unknown");
    } else if (seg.size() == 3 && seg[2] == "heartbeat") {
      heartbeat[seg[1]] = NumberLeaf(json).value_or(0);
    }
  }));
  for (const std::string& id : nodes) {
    auto hb = heartbeat.find(id);
    const bool dead = hb != heartbeat.end() &&
                      hb->second < static_cast<double>(now_ms - heartbeat_timeout_ms);
    auto st = status.find(id);
    ++s.nodes_by_status[dead ? "dead" : (st == status.end() ? "unknown" : st->second)];
  }
  s.nodes = nodes.size();
  // jobs.<id>.status
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"jobs"}), [&](const core::Path& p,
                                                                std::string_view json) {
    const auto& seg = p.segments();
    if (seg.size() == 3 && seg[2] == "status") {
      ++s.jobs_by_status[StringLeaf(json).value_or("unknown")];
    }
  }));
  // scrape.** counters
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"scrape"}), [&](const core::Path& p,
                                                                  std::string_view json) {
    if (auto v = NumberLeaf(json)) {
      s.counters[p.ToString()] = *v;
    }
  }));
  // intents.<id>.{host, resolution.<host>...}
  std::map<std::string, std::set<std::string>> resolved_by;
  std::set<std::string> intents;
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"intents"}), [&](const core::Path& p,
                                                                   std::string_view) {
    const auto& seg = p.segments();
    if (seg.size() < 2) {
      return;
    }
    intents.insert(seg[1]);
    if (seg.size() >= 4 && seg[2] == "resolution") {
      resolved_by[seg[1]].insert(seg[3]);
    }
  }));
  s.intents = intents.size();
  for (const auto& [id, hosts] : resolved_by) {
    s.intents_resolved += hosts.size() >= 2 ? 1 : 0;
  }
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"checks"}), [&](const core::Path& p,
                                                                  std::string_view json) {
    const auto& seg = p.segments();
    if (seg.size() == 3 && seg[2] == "status") {
      s.checks[seg[1]] = StringLeaf(json).value_or("unknown");
    }
  }));
  std::set<std::pair<std::string, std::string>> errors;
  LATTICE_RETURN_IF_ERROR(reader.Scan(core::Path({"errors"}), [&](const core::Path& p,
                                                                  std::string_view) {
    const auto& seg = p.segments();
    if (seg.size() >= 3) {
      errors.emplace(seg[1], seg[2]);
    }
  }));
  s.errors = errors.size();
  return s;
}

std::string FormatSummary(const DemoSummary& s) {
  std::string out;
  auto by = [](const std::map<std::string, std::uint64_t>& m) {
    std::string line;
    for (const auto& [k, v] : m) {
      line += fmt::format("{}{} {}", line.empty() ? "" : ", ", v, k);
    }
    return line.empty() ? std::string("none") : line;
  };
  out += fmt::format("nodes: {} ({})\n", s.nodes, by(s.nodes_by_status));
  std::uint64_t jobs = 0;
  for (const auto& [k, v] : s.jobs_by_status) {
    jobs += v;
  }
  out += fmt::format("jobs: {} kept ({})\n", jobs, by(s.jobs_by_status));
  std::map<std::string, double> totals;
  for (const auto& [path, v] : s.counters) {
    totals[path.substr(path.rfind('.') + 1)] += v;
  }
  std::string counters;
  for (const auto& [k, v] : totals) {
    counters += fmt::format("{}{} {}", counters.empty() ? "" : ", ", k, v);
  }
  out += fmt::format("counters (all domains): {}\n", counters.empty() ? "none" : counters);
  out += fmt::format("intents: {} live, {} resolved by their scraper and spotter\n", s.intents,
                     s.intents_resolved);
  std::string checks;
  for (const auto& [k, v] : s.checks) {
    checks += fmt::format("{}{} {}", checks.empty() ? "" : ", ", k, v);
  }
  out += fmt::format("checks: {}\n", checks.empty() ? "none" : checks);
  out += fmt::format("errors: {}\n", s.errors);
  return out;
}

}  // namespace lattice::processors
