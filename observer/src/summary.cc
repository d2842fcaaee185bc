// The summary model (docs/observer-protocol.md, "Summary rules").
#include "lattice/observer/summary.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <set>

#include "json_util.h"
#include "lattice/core/json_text.h"
#include "lattice/core/path.h"

namespace lattice::observer {

namespace {

using Members = std::vector<std::pair<std::string, std::string_view>>;

constexpr std::int64_t kNoTime = std::numeric_limits<std::int64_t>::min();
constexpr std::size_t kMaxCurrentJobs = 100;
constexpr std::size_t kMaxCounters = 500;
constexpr std::size_t kMaxErrors = 50;
constexpr std::int64_t kRateWindowMs = 5000;

const char* const kStatuses[] = {"initializing", "waiting", "working", "paused", "dead"};

/// One entity (`nodes.<id>`, `jobs.<id>`, ...): its JSON and its members' raw values.
struct Entity {
  std::string json;                           // canonical JSON of the whole value
  std::map<std::string, std::string> fields;  // member -> raw JSON (objects only)

  void Set(std::string value) {
    json = std::move(value);
    fields.clear();
    Members members;
    if (internal::SplitObject(json, members)) {
      for (auto& [k, v] : members) {
        fields.emplace(k, std::string(v));
      }
    }
  }
  const std::string* Field(const std::string& name) const {
    auto it = fields.find(name);
    return it == fields.end() ? nullptr : &it->second;
  }
  std::optional<std::string> String(const std::string& name) const {
    const std::string* f = Field(name);
    return f ? internal::AsString(*f) : std::nullopt;
  }
  std::optional<double> Number(const std::string& name) const {
    const std::string* f = Field(name);
    return f ? internal::AsNumber(*f) : std::nullopt;
  }
};

struct Counter {
  std::string json;
  double value = 0;
  std::deque<std::pair<std::int64_t, double>> samples;  // (wall ms, value), the last 5 s
};

void AppendRawOrNull(std::string& out, const std::string* raw) {
  out.append(raw != nullptr ? *raw : std::string("null"));
}

void AppendOptString(std::string& out, const std::optional<std::string>& s) {
  if (s) {
    core::AppendJsonString(out, *s);
  } else {
    out.append("null");
  }
}

void AppendOptInt(std::string& out, const std::optional<std::int64_t>& v) {
  if (v) {
    core::AppendJsonInt(out, *v);
  } else {
    out.append("null");
  }
}

bool IsReportedStatus(const std::string& s) {
  return s == "initializing" || s == "waiting" || s == "working" || s == "paused";
}

/// Job ids in the summary's order: decimal ids numerically, then the rest by bytes.
struct JobIdLess {
  bool operator()(const std::string& a, const std::string& b) const {
    const auto na = internal::DecimalId(a);
    const auto nb = internal::DecimalId(b);
    if (na && nb) {
      return *na < *nb;
    }
    if (na || nb) {
      return na.has_value();
    }
    return a < b;
  }
};

}  // namespace

struct Summary::Impl {
  SummaryOptions options;
  std::map<std::string, Entity> nodes;
  std::map<std::string, Entity, JobIdLess> jobs;
  std::map<std::string, Entity> checks;
  std::map<std::string, std::map<std::string, Entity>> errors;  // blade -> id -> error
  std::map<std::string, Counter> counters;                      // dotted path -> counter
  std::map<std::string, std::int64_t> status_ts;  // node -> ts of its last status change seen
  std::map<std::string, std::string> derived;     // node -> last derived status reported
  bool derived_once = false;
  std::int64_t watermark = kNoTime;
  std::int64_t newest_change_ts = kNoTime;

  explicit Impl(SummaryOptions o) : options(o) {}

  std::int64_t Now(std::int64_t wall_ms) const {
    if (options.wall_clock) {
      return wall_ms;
    }
    std::int64_t now = std::max(watermark, newest_change_ts);
    for (const auto& [id, node] : nodes) {
      if (auto hb = node.Number("heartbeat")) {
        now = std::max(now, static_cast<std::int64_t>(*hb));
      }
    }
    return now == kNoTime ? 0 : now;
  }

  std::string Derive(const Entity& node, std::int64_t now) const {
    if (auto hb = node.Number("heartbeat")) {
      if (static_cast<double>(now) - *hb > static_cast<double>(options.dead_after_ms)) {
        return "dead";
      }
    }
    auto reported = node.String("status");
    return reported && IsReportedStatus(*reported) ? *reported : "initializing";
  }

  /// Reloads one section (`nodes`, `jobs`, `checks`) or one entity of it (`id` non-empty).
  template <typename Map>
  Status Reload(const crdt::StateReader& reader, const std::string& section, const std::string* id,
                Map& map) {
    core::Path path(std::vector<std::string>{section});
    if (id != nullptr) {
      path = core::Path(std::vector<std::string>{section, *id});
    }
    LATTICE_ASSIGN_OR_RETURN(std::optional<std::string> json, reader.Get(path));
    if (id != nullptr) {
      if (json) {
        map[*id].Set(std::move(*json));
      } else {
        map.erase(*id);
      }
      return Status::Ok();
    }
    map.clear();
    Members members;
    if (json && internal::SplitObject(*json, members)) {
      for (auto& [k, v] : members) {
        map[k].Set(std::string(v));
      }
    }
    return Status::Ok();
  }

  Status ReloadErrors(const crdt::StateReader& reader, const std::string* blade,
                      const std::string* id) {
    std::vector<std::string> segs{"errors"};
    if (blade != nullptr) {
      segs.push_back(*blade);
    }
    if (id != nullptr) {
      segs.push_back(*id);
    }
    LATTICE_ASSIGN_OR_RETURN(std::optional<std::string> json, reader.Get(core::Path(segs)));
    if (blade != nullptr && id != nullptr) {
      if (json) {
        errors[*blade][*id].Set(std::move(*json));
      } else {
        errors[*blade].erase(*id);
      }
      return Status::Ok();
    }
    auto load_blade = [&](const std::string& b, std::string_view blade_json) {
      auto& m = errors[b];
      m.clear();
      Members members;
      if (internal::SplitObject(blade_json, members)) {
        for (auto& [k, v] : members) {
          m[k].Set(std::string(v));
        }
      }
    };
    if (blade != nullptr) {
      errors.erase(*blade);
      if (json) {
        load_blade(*blade, *json);
      }
      return Status::Ok();
    }
    errors.clear();
    Members members;
    if (json && internal::SplitObject(*json, members)) {
      for (auto& [k, v] : members) {
        load_blade(k, v);
      }
    }
    return Status::Ok();
  }

  void DropCountersUnder(const std::string& dotted) {
    if (dotted.empty()) {
      counters.clear();
      return;
    }
    counters.erase(dotted);
    const std::string prefix = dotted + ".";
    for (auto it = counters.lower_bound(prefix);
         it != counters.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      it = counters.erase(it);
    }
  }

  Status ScanCounters(const crdt::StateReader& reader, const core::Path& under) {
    return reader.ScanLeaves(under, [&](const crdt::Leaf& leaf) {
      if (leaf.kind != crdt::LeafKind::kCounter) {
        return;
      }
      Counter& c = counters[leaf.path.ToString()];
      c.json = std::string(leaf.json);
      c.value = internal::AsNumber(c.json).value_or(0);
    });
  }
};

Summary::Summary(SummaryOptions options) : impl_(std::make_unique<Impl>(options)) {}
Summary::~Summary() = default;

Status Summary::Rebuild(const crdt::StateReader& reader, std::int64_t watermark) {
  Impl& im = *impl_;
  im.watermark = watermark;
  LATTICE_RETURN_IF_ERROR(im.Reload(reader, "nodes", nullptr, im.nodes));
  LATTICE_RETURN_IF_ERROR(im.Reload(reader, "jobs", nullptr, im.jobs));
  LATTICE_RETURN_IF_ERROR(im.Reload(reader, "checks", nullptr, im.checks));
  LATTICE_RETURN_IF_ERROR(im.ReloadErrors(reader, nullptr, nullptr));
  // Keep the rate samples of counters that survive.
  std::map<std::string, Counter> old = std::move(im.counters);
  im.counters.clear();
  LATTICE_RETURN_IF_ERROR(im.ScanCounters(reader, core::Path()));
  for (auto& [path, c] : im.counters) {
    auto it = old.find(path);
    if (it != old.end()) {
      c.samples = std::move(it->second.samples);
    }
  }
  return Status::Ok();
}

Result<bool> Summary::Apply(const crdt::StateReader& reader,
                            const std::vector<crdt::Change>& changes, std::int64_t watermark) {
  Impl& im = *impl_;
  bool changed = watermark != im.watermark && !im.options.wall_clock;
  im.watermark = watermark;
  std::set<std::string> nodes, jobs, checks;
  std::set<std::pair<std::string, std::string>> errors;
  bool all_nodes = false, all_jobs = false, all_checks = false;
  std::set<std::string> error_blades;
  bool all_errors = false;
  for (const crdt::Change& c : changes) {
    if (c.ts > im.newest_change_ts) {
      im.newest_change_ts = c.ts;
      changed = changed || !im.options.wall_clock;
    }
    LATTICE_ASSIGN_OR_RETURN(core::Path path, core::Path::Parse(c.path));
    const auto& segs = path.segments();
    auto mark = [&](const char* section, std::set<std::string>& ids, bool& all) {
      if (segs.empty() || (segs.size() == 1 && segs[0] == section)) {
        all = true;
        changed = true;
      } else if (segs[0] == section) {
        ids.insert(segs[1]);
        changed = true;
      }
    };
    mark("nodes", nodes, all_nodes);
    mark("jobs", jobs, all_jobs);
    mark("checks", checks, all_checks);
    if (segs.empty() || (segs.size() == 1 && segs[0] == "errors")) {
      all_errors = true;
      changed = true;
    } else if (segs[0] == "errors") {
      if (segs.size() == 2) {
        error_blades.insert(segs[1]);
      } else {
        errors.emplace(segs[1], segs[2]);
      }
      changed = true;
    }
    if (segs.size() >= 3 && segs[0] == "nodes" && segs[2] == "status") {
      im.status_ts[segs[1]] = c.ts;
    }
    // Counters.
    if (c.cause == crdt::ChangeCause::kCounter) {
      LATTICE_RETURN_IF_ERROR(im.ScanCounters(reader, path));
      changed = true;
    } else if (im.counters.count(c.path) != 0 || c.cause == crdt::ChangeCause::kErase ||
               c.cause == crdt::ChangeCause::kEvict ||
               (c.new_json && !c.new_json->empty() && c.new_json->front() == '{')) {
      const std::size_t before = im.counters.size();
      im.DropCountersUnder(c.path);
      if (c.new_json && !c.new_json->empty() && c.new_json->front() == '{') {
        LATTICE_RETURN_IF_ERROR(im.ScanCounters(reader, path));
      }
      changed = changed || before != im.counters.size();
    }
  }
  auto reload = [&](const char* section, bool all, const std::set<std::string>& ids,
                    auto& map) -> Status {
    if (all) {
      return im.Reload(reader, section, nullptr, map);
    }
    for (const std::string& id : ids) {
      LATTICE_RETURN_IF_ERROR(im.Reload(reader, section, &id, map));
    }
    return Status::Ok();
  };
  LATTICE_RETURN_IF_ERROR(reload("nodes", all_nodes, nodes, im.nodes));
  LATTICE_RETURN_IF_ERROR(reload("jobs", all_jobs, jobs, im.jobs));
  LATTICE_RETURN_IF_ERROR(reload("checks", all_checks, checks, im.checks));
  if (all_errors) {
    LATTICE_RETURN_IF_ERROR(im.ReloadErrors(reader, nullptr, nullptr));
  } else {
    for (const std::string& b : error_blades) {
      LATTICE_RETURN_IF_ERROR(im.ReloadErrors(reader, &b, nullptr));
    }
    for (const auto& [b, id] : errors) {
      if (error_blades.count(b) == 0) {
        LATTICE_RETURN_IF_ERROR(im.ReloadErrors(reader, &b, &id));
      }
    }
  }
  return changed;
}

std::vector<StatusChange> Summary::DeriveStatuses(std::int64_t wall_ms) {
  Impl& im = *impl_;
  std::vector<StatusChange> out;
  const std::int64_t now = im.Now(wall_ms);
  std::map<std::string, std::string> next;
  for (const auto& [id, node] : im.nodes) {
    std::string status = im.Derive(node, now);
    auto old = im.derived.find(id);
    if (old == im.derived.end() || old->second != status) {
      StatusChange sc;
      sc.node = id;
      if (old != im.derived.end()) {
        sc.old_status = old->second;
      }
      sc.new_status = status;
      auto ts = im.status_ts.find(id);
      sc.updated_at = status != "dead" && ts != im.status_ts.end() ? ts->second : now;
      out.push_back(std::move(sc));
    }
    next.emplace(id, std::move(status));
  }
  for (const auto& [id, status] : im.derived) {
    if (next.count(id) == 0) {
      out.push_back(StatusChange{id, status, std::nullopt, now});
      im.status_ts.erase(id);
    }
  }
  im.derived = std::move(next);
  im.derived_once = true;
  return out;
}

void Summary::SampleCounters(std::int64_t wall_ms) {
  for (auto& [path, c] : impl_->counters) {
    c.samples.emplace_back(wall_ms, c.value);
    while (c.samples.size() > 2 && c.samples.front().first < wall_ms - kRateWindowMs) {
      c.samples.pop_front();
    }
  }
}

std::vector<Summary::CounterView> Summary::Counters() const {
  std::vector<CounterView> out;
  for (const auto& [path, c] : impl_->counters) {
    if (out.size() >= kMaxCounters) {
      break;
    }
    CounterView v;
    v.path = path;
    v.value = c.value;
    if (c.samples.size() >= 2 && c.samples.back().first > c.samples.front().first) {
      v.rate = (c.samples.back().second - c.samples.front().second) /
               (static_cast<double>(c.samples.back().first - c.samples.front().first) / 1000.0);
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::map<std::string, std::uint64_t> Summary::NodesByStatus(std::int64_t wall_ms) const {
  std::map<std::string, std::uint64_t> out;
  for (const char* s : kStatuses) {
    out[s] = 0;
  }
  const std::int64_t now = impl_->Now(wall_ms);
  for (const auto& [id, node] : impl_->nodes) {
    ++out[impl_->Derive(node, now)];
  }
  return out;
}

std::map<std::string, std::uint64_t> Summary::JobsByStatus() const {
  std::map<std::string, std::uint64_t> out{
      {"queued", 0}, {"running", 0}, {"done", 0}, {"failed", 0}, {"other", 0}};
  for (const auto& [id, job] : impl_->jobs) {
    auto s = job.String("status");
    if (s && (*s == "queued" || *s == "running" || *s == "done" || *s == "failed")) {
      ++out[*s];
    } else {
      ++out["other"];
    }
  }
  return out;
}

std::string Summary::ToJson(std::uint64_t commit, std::int64_t wall_ms) const {
  const Impl& im = *impl_;
  const std::int64_t now = im.Now(wall_ms);
  std::string out;
  out.reserve(4096);
  out.append("{\"commit\":");
  core::AppendJsonInt(out, static_cast<std::int64_t>(commit));
  out.append(",\"time\":");
  core::AppendJsonInt(out, now);
  out.append(im.options.wall_clock ? ",\"clock\":\"wall\"" : ",\"clock\":\"event\"");
  out.append(",\"dead_after_ms\":");
  core::AppendJsonInt(out, im.options.dead_after_ms);

  // Derived statuses and the live nodes, sorted by id (std::map order = byte order).
  std::map<std::string, std::string> status;
  std::vector<std::string> live;
  std::map<std::string, std::uint64_t> by_status;
  for (const char* s : kStatuses) {
    by_status[s] = 0;
  }
  for (const auto& [id, node] : im.nodes) {
    std::string s = im.Derive(node, now);
    ++by_status[s];
    if (s != "dead") {
      live.push_back(id);
    }
    status.emplace(id, std::move(s));
  }

  // Jobs.
  std::map<std::string, std::uint64_t> jobs_by{
      {"queued", 0}, {"running", 0}, {"done", 0}, {"failed", 0}, {"other", 0}};
  std::optional<std::uint64_t> lowest_unfinished, highest;
  for (const auto& [id, job] : im.jobs) {
    auto s = job.String("status");
    const bool known = s && (*s == "queued" || *s == "running" || *s == "done" || *s == "failed");
    ++jobs_by[known ? *s : "other"];
    if (auto n = internal::DecimalId(id)) {
      highest = std::max(highest.value_or(0), *n);
      if (!(s && (*s == "done" || *s == "failed"))) {
        lowest_unfinished = std::min(lowest_unfinished.value_or(*n), *n);
      }
    }
  }

  // Queue sections: contiguous cuts of [lowest_unfinished, highest] over the live nodes.
  struct Section {
    std::string node;
    std::uint64_t from = 0, to = 0;
    std::uint64_t queued = 0, running = 0;
  };
  std::vector<Section> sections;
  std::map<std::string, std::size_t> section_of;
  const bool have_range =
      lowest_unfinished && highest && *lowest_unfinished <= *highest && !live.empty();
  std::uint64_t base = 0, extra = 0;
  if (have_range) {
    const std::uint64_t ids = *highest - *lowest_unfinished + 1;
    const std::uint64_t k = live.size();
    base = ids / k;
    extra = ids % k;
    std::uint64_t next = *lowest_unfinished;
    for (std::uint64_t i = 0; i < k; ++i) {
      const std::uint64_t share = base + (i < extra ? 1 : 0);
      if (share == 0) {
        continue;
      }
      section_of[live[i]] = sections.size();
      sections.push_back(Section{live[i], next, next + share - 1, 0, 0});
      next += share;
    }
    for (const auto& [id, job] : im.jobs) {
      auto n = internal::DecimalId(id);
      if (!n || *n < *lowest_unfinished || *n > *highest) {
        continue;
      }
      auto s = job.String("status");
      if (!s || (*s != "queued" && *s != "running")) {
        continue;
      }
      for (Section& sec : sections) {  // few sections: a scan is fine
        if (*n >= sec.from && *n <= sec.to) {
          ++(*s == "queued" ? sec.queued : sec.running);
          break;
        }
      }
    }
  }

  out.append(",\"nodes\":{\"count\":");
  core::AppendJsonInt(out, static_cast<std::int64_t>(im.nodes.size()));
  out.append(",\"live\":");
  core::AppendJsonInt(out, static_cast<std::int64_t>(live.size()));
  out.append(",\"by_status\":{");
  bool first = true;
  for (const char* s : kStatuses) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    core::AppendJsonString(out, s);
    out.push_back(':');
    core::AppendJsonInt(out, static_cast<std::int64_t>(by_status[s]));
  }
  out.append("},\"list\":[");
  first = true;
  for (const auto& [id, node] : im.nodes) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    out.append("{\"id\":");
    core::AppendJsonString(out, id);
    out.append(",\"status\":");
    core::AppendJsonString(out, status[id]);
    out.append(",\"reported_status\":");
    AppendOptString(out, node.String("status"));
    out.append(",\"heartbeat\":");
    const std::string* hb = node.Field("heartbeat");
    AppendRawOrNull(out, hb != nullptr && internal::AsNumber(*hb) ? hb : nullptr);
    for (const char* f : {"role", "host", "version", "job", "msg"}) {
      out.append(",\"");
      out.append(f);
      out.append("\":");
      AppendRawOrNull(out, node.Field(f));
    }
    out.append(",\"section\":");
    auto sec = section_of.find(id);
    if (sec == section_of.end()) {
      out.append("null");
    } else {
      out.append("{\"from\":");
      core::AppendJsonInt(out, static_cast<std::int64_t>(sections[sec->second].from));
      out.append(",\"to\":");
      core::AppendJsonInt(out, static_cast<std::int64_t>(sections[sec->second].to));
      out.push_back('}');
    }
    out.push_back('}');
  }
  out.append("]}");

  out.append(",\"jobs\":{\"count\":");
  core::AppendJsonInt(out, static_cast<std::int64_t>(im.jobs.size()));
  for (const char* s : {"queued", "running", "done", "failed", "other"}) {
    out.append(",\"");
    out.append(s);
    out.append("\":");
    core::AppendJsonInt(out, static_cast<std::int64_t>(jobs_by[s]));
  }
  auto opt_u = [](const std::optional<std::uint64_t>& v) {
    return v ? std::optional<std::int64_t>(static_cast<std::int64_t>(*v)) : std::nullopt;
  };
  out.append(",\"lowest_unfinished\":");
  AppendOptInt(out, opt_u(lowest_unfinished));
  out.append(",\"highest\":");
  AppendOptInt(out, opt_u(highest));
  out.append(",\"current\":[");
  std::size_t current = 0;
  for (const auto& [id, job] : im.jobs) {
    auto s = job.String("status");
    if (!s || *s != "running") {
      continue;
    }
    if (current++ >= kMaxCurrentJobs) {
      break;
    }
    if (current > 1) {
      out.push_back(',');
    }
    out.append("{\"id\":");
    core::AppendJsonString(out, id);
    out.append(",\"status\":\"running\",\"node\":");
    AppendRawOrNull(out, job.Field("node"));
    out.append(",\"progress\":");
    if (auto p = job.Number("progress")) {
      core::AppendJsonDouble(out, std::clamp(*p, 0.0, 1.0));
    } else {
      out.append("null");
    }
    out.append(",\"submitted\":");
    AppendRawOrNull(out, job.Field("submitted"));
    out.append(",\"started\":");
    AppendRawOrNull(out, job.Field("started"));
    out.push_back('}');
  }
  out.append("]}");

  out.append(",\"queue\":{\"rule\":\"contiguous\",\"from\":");
  AppendOptInt(out, have_range ? opt_u(lowest_unfinished) : std::nullopt);
  out.append(",\"to\":");
  AppendOptInt(out, have_range ? opt_u(highest) : std::nullopt);
  out.append(",\"sections\":[");
  first = true;
  for (const Section& sec : sections) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    out.append("{\"node\":");
    core::AppendJsonString(out, sec.node);
    out.append(",\"from\":");
    core::AppendJsonInt(out, static_cast<std::int64_t>(sec.from));
    out.append(",\"to\":");
    core::AppendJsonInt(out, static_cast<std::int64_t>(sec.to));
    out.append(",\"queued\":");
    core::AppendJsonInt(out, static_cast<std::int64_t>(sec.queued));
    out.append(",\"running\":");
    core::AppendJsonInt(out, static_cast<std::int64_t>(sec.running));
    out.push_back('}');
  }
  out.append("]}");

  out.append(",\"counters\":[");
  first = true;
  for (const CounterView& c : Counters()) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    out.append("{\"path\":");
    core::AppendJsonString(out, c.path);
    out.append(",\"value\":");
    out.append(im.counters.at(c.path).json);
    out.append(",\"rate\":");
    if (c.rate) {
      core::AppendJsonDouble(out, *c.rate);
    } else {
      out.append("null");
    }
    out.push_back('}');
  }
  out.append("]");

  out.append(",\"checks\":[");
  first = true;
  for (const auto& [id, check] : im.checks) {
    if (!first) {
      out.push_back(',');
    }
    first = false;
    out.append("{\"id\":");
    core::AppendJsonString(out, id);
    out.append(",\"status\":");
    AppendOptString(out, check.String("status"));
    out.append(",\"since\":");
    AppendRawOrNull(out, check.Field("since"));
    out.append(",\"evidence\":");
    AppendRawOrNull(out, check.Field("evidence"));
    out.push_back('}');
  }
  out.append("]");

  // Errors: newest ts first, missing ts last; ties by (blade, id).
  struct ErrorRef {
    std::optional<double> ts;
    const std::string* blade;
    const std::string* id;
    const Entity* e;
  };
  std::vector<ErrorRef> errs;
  for (const auto& [blade, m] : im.errors) {
    for (const auto& [id, e] : m) {
      errs.push_back(ErrorRef{e.Number("ts"), &blade, &id, &e});
    }
  }
  std::stable_sort(errs.begin(), errs.end(), [](const ErrorRef& a, const ErrorRef& b) {
    if (a.ts.has_value() != b.ts.has_value()) {
      return a.ts.has_value();
    }
    return a.ts && *a.ts > *b.ts;
  });
  out.append(",\"errors\":[");
  for (std::size_t i = 0; i < errs.size() && i < kMaxErrors; ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    const Entity& e = *errs[i].e;
    out.append("{\"blade\":");
    core::AppendJsonString(out, *errs[i].blade);
    out.append(",\"id\":");
    core::AppendJsonString(out, *errs[i].id);
    for (const char* f : {"msg", "level", "ts", "details"}) {
      out.append(",\"");
      out.append(f);
      out.append("\":");
      AppendRawOrNull(out, e.Field(f));
    }
    out.push_back('}');
  }
  out.append("]}");
  return out;
}

}  // namespace lattice::observer
