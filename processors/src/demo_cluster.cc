// The simulated demo cluster (see demo_cluster.h for what it models). Every actor keeps its own
// small state; one Tick() runs them all for one tick of event time, in a fixed order, so the
// output is deterministic. Where a real cluster's processes would read the merged state (the
// orchestrator noticing a dead worker, the checker evaluating expectations), the simulation reads
// its own ground truth: the shards it emits are what a real cluster would emit.
#include "lattice/processors/demo_cluster.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>
#include <set>

#include "json_body.h"

namespace lattice::processors {

using internal::Dbl;
using internal::Inc;
using internal::Int;
using internal::JsonBody;
using internal::Max;
using internal::Str;

namespace {

// splitmix64: small, fast, and the same on every platform.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::uint64_t Below(std::uint64_t n) { return n == 0 ? 0 : Next() % n; }
  std::int64_t Between(std::int64_t lo, std::int64_t hi) {  // inclusive
    return lo + static_cast<std::int64_t>(Below(static_cast<std::uint64_t>(hi - lo + 1)));
  }
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }

 private:
  std::uint64_t state_;
};

constexpr const char* kDomains[] = {"books.example",  "news.example",  "shop.example",
                                    "maps.example",   "wiki.example",  "music.example",
                                    "video.example",  "travel.example", "jobs.example",
                                    "recipes.example", "sports.example", "weather.example"};
constexpr std::size_t kDomainCount = sizeof(kDomains) / sizeof(kDomains[0]);
constexpr std::int64_t kHeartbeatEveryMs = 1000;
constexpr std::int64_t kCheckEveryMs = 2000;
constexpr std::int64_t kIntentEveryMs = 4000;
constexpr std::int64_t kModuleUpdateEveryMs = 30'000;
constexpr std::int64_t kUnresolvedAfterMs = 10'000;
constexpr std::size_t kErrorsKeptPerBlade = 20;

enum class WorkerStatus { kInitializing, kWaiting, kWorking, kPaused };

const char* Name(WorkerStatus s) {
  switch (s) {
    case WorkerStatus::kInitializing:
      return "initializing";
    case WorkerStatus::kWaiting:
      return "waiting";
    case WorkerStatus::kWorking:
      return "working";
    case WorkerStatus::kPaused:
      return "paused";
  }
  return "?";
}

struct Job {
  std::string status;  // queued / running / done / failed
  std::string node;
  std::int64_t submitted = 0;
  double progress = 0;
};

struct Worker {
  std::string id;
  std::uint32_t index = 0;  // 1-based
  bool alive = true;
  WorkerStatus status = WorkerStatus::kInitializing;
  std::int64_t until = 0;  // end of initializing / paused
  std::uint64_t job = 0;   // 0: none
  std::int64_t job_duration_ms = 0;
  std::int64_t job_elapsed_ms = 0;
  std::int64_t last_heartbeat = 0;
  std::int64_t next_heartbeat = 0;
  bool announced = false;
};

struct Intent {
  std::string id;
  std::string domain;
  std::string scraper;
  std::string spotter;
  int module_minor = 0;
  std::int64_t created = 0;
  std::int64_t scraper_at = 0;  // when the scraper answers (0: answered)
  std::int64_t spotter_at = 0;  // when the spotter answers (0: answered; -1: never)
  bool scraper_resolved = false;
  bool spotter_resolved = false;
};

struct Blade {  // scrapers, spotters, the orchestrator and the checker
  std::string id;
  std::string role;
  std::int64_t next_heartbeat = 0;
  std::uint64_t errors = 0;
  std::vector<std::string> error_ids;  // kept ones, oldest first
  bool announced = false;
};

struct Check {
  std::string status = "pending";
  std::int64_t since = 0;
};

}  // namespace

struct DemoCluster::Impl {
  DemoClusterOptions o;
  Rng rng;
  std::int64_t start = 0;
  std::int64_t now = 0;
  std::int64_t next_tick = 0;
  DemoClusterStats stats;
  std::map<std::string, std::uint64_t> seqs;
  const std::function<void(const DemoShard&)>* emit = nullptr;

  std::vector<Worker> workers;
  std::vector<Blade> scrapers, spotters;
  Blade orchestrator{"orchestrator", "orchestrator", 0, 0, {}, false};
  Blade checker{"checker", "checker", 0, 0, {}, false};
  std::map<std::uint64_t, Job> jobs;
  std::uint64_t next_job = 1;
  double job_credit = 0;
  std::vector<Intent> intents;
  std::uint64_t next_intent = 1;
  std::int64_t next_intent_at = 0;
  std::int64_t next_module_update_at = 0;
  std::int64_t next_check_at = 0;
  std::map<std::string, Check> checks;
  std::int64_t sent_total = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> sent_history;  // (ts, total)

  Impl(const DemoClusterOptions& options, std::int64_t start_ms)
      : o(options), rng(options.seed), start(start_ms), now(start_ms), next_tick(start_ms) {
    o.tick_ms = std::max<std::int64_t>(o.tick_ms, 10);
    o.domains = std::clamp<std::uint32_t>(o.domains, 1, kDomainCount);
    for (std::uint32_t i = 1; i <= o.workers; ++i) {
      Worker w;
      w.id = fmt::format("worker-{}", i);
      w.index = i;
      w.until = start + rng.Between(1000, 3000);
      w.last_heartbeat = start;
      w.next_heartbeat = start;
      workers.push_back(w);
    }
    for (std::uint32_t i = 1; i <= o.scrapers; ++i) {
      scrapers.push_back(Blade{fmt::format("scraper-{}", i), "scraper", start, 0, {}, false});
    }
    for (std::uint32_t i = 1; i <= o.spotters; ++i) {
      spotters.push_back(Blade{fmt::format("spotter-{}", i), "spotter", start, 0, {}, false});
    }
    next_intent_at = start + 500;
    next_module_update_at = start + kModuleUpdateEveryMs;
    next_check_at = start + kCheckEveryMs;
    for (const char* id : {"heartbeats", "intents-resolve", "items-sent-grow", "queue-depth"}) {
      checks[id] = Check{"pending", start};
    }
  }

  void Emit(const std::string& blade, const JsonBody& body) {
    if (body.empty()) {
      return;
    }
    DemoShard shard;
    shard.blade = blade;
    shard.seq = ++seqs[blade];
    shard.ts = now;
    shard.body = body.Json();
    ++stats.shards;
    (*emit)(shard);
  }

  // Blades that are not processor nodes (scrapers, spotters, the orchestrator, the checker)
  // report under `blades.<id>`, so the observer's node count and job-queue sections are the
  // workers' alone.
  void Announce(Blade& b, JsonBody& body) {
    if (!b.announced) {
      b.announced = true;
      body.Put({"blades", b.id, "role"}, Str(b.role));
      body.Put({"blades", b.id, "host"}, Str(b.id + ".demo.lattice"));
      body.Put({"blades", b.id, "version"}, Str("1.4.2"));
      body.Put({"blades", b.id, "msg"}, Str("Hello World"));
    }
    if (now >= b.next_heartbeat) {
      b.next_heartbeat = now + kHeartbeatEveryMs;
      body.Put({"blades", b.id, "heartbeat"}, Max(now));
    }
  }

  void ReportError(Blade& b, JsonBody& body, const std::string& msg, const std::string& level,
                   const std::string& details) {
    std::string id = fmt::format("e-{}", ++b.errors);
    body.Put({"errors", b.id, id},
             "{\"msg\":" + Str(msg) + ",\"level\":" + Str(level) + ",\"ts\":" + Int(now) +
                 ",\"details\":" + details + "}");
    b.error_ids.push_back(id);
    if (b.error_ids.size() > kErrorsKeptPerBlade) {
      body.Put({"errors", b.id, b.error_ids.front()}, "null");
      b.error_ids.erase(b.error_ids.begin());
    }
    ++stats.errors;
  }

  // --- the job-queue assignment every worker computes (docs/observer-protocol.md) ----------

  bool SeenAlive(const Worker& w) const {
    return w.last_heartbeat >= now - o.heartbeat_timeout_ms;
  }

  // The section [from, to] of the job id space `w` is liable for, the rule of the observer's
  // summary: the ids from the lowest unfinished to the highest, cut into contiguous sections,
  // one per live node in byte order of ids, the first (n mod k) one id longer. Every worker
  // computes the same from the same state, so no job is taken twice or lost.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> SectionOf(const Worker& w) const {
    std::uint64_t lo = 0;
    for (const auto& [id, job] : jobs) {
      if (job.status != "done" && job.status != "failed") {
        lo = id;
        break;
      }
    }
    if (lo == 0 || jobs.empty()) {
      return std::nullopt;
    }
    const std::uint64_t hi = jobs.rbegin()->first;
    std::vector<std::string> live;
    for (const Worker& x : workers) {
      if (SeenAlive(x)) {
        live.push_back(x.id);
      }
    }
    std::sort(live.begin(), live.end());
    const std::uint64_t n = hi - lo + 1;
    const std::uint64_t k = live.size();
    std::uint64_t from = lo;
    for (std::uint64_t i = 0; i < k; ++i) {
      const std::uint64_t size = n / k + (i < n % k ? 1 : 0);
      if (live[i] == w.id) {
        if (size == 0) {
          return std::nullopt;
        }
        return std::make_pair(from, from + size - 1);
      }
      from += size;
    }
    return std::nullopt;
  }

  const Worker* FindWorker(const std::string& id) const {
    for (const Worker& w : workers) {
      if (w.id == id) {
        return &w;
      }
    }
    return nullptr;
  }

  // --- the orchestrator: jobs and intents -------------------------------------------------------

  void TickOrchestrator() {
    JsonBody body;
    Announce(orchestrator, body);
    body.Put({"blades", orchestrator.id, "status"}, Str("working"));
    // Jobs arrive at a rate that swings around the workers' capacity, so the queue grows and
    // drains in waves of two minutes.
    const double t = static_cast<double>(now - start) / 1000.0;
    const double rate = 0.8 + 0.7 * std::sin(2 * std::numbers::pi * t / 120.0);
    job_credit += rate * static_cast<double>(o.tick_ms) / 1000.0;
    while (job_credit >= 1.0) {
      job_credit -= 1.0;
      const std::uint64_t id = next_job++;
      const char* domain = kDomains[rng.Below(o.domains)];
      jobs[id] = Job{"queued", "", now, 0};
      body.Put({"jobs", std::to_string(id)},
               "{\"status\":\"queued\",\"submitted\":" + Int(now) +
                   ",\"progress\":0,\"payload\":{\"domain\":" + Str(domain) +
                   ",\"pages\":" + Int(rng.Between(10, 500)) + "}}");
      ++stats.jobs_submitted;
    }
    // Finished jobs far behind the newest are erased.
    while (!jobs.empty() && jobs.begin()->first + o.jobs_kept < next_job &&
           (jobs.begin()->second.status == "done" || jobs.begin()->second.status == "failed")) {
      body.Put({"jobs", std::to_string(jobs.begin()->first)}, "null");
      jobs.erase(jobs.begin());
    }
    // Intents: a new one every few seconds, a module update now and then, old ones erased.
    if (now >= next_intent_at && !scrapers.empty()) {
      next_intent_at = now + kIntentEveryMs;
      Intent in;
      in.id = fmt::format("i-{:04}", next_intent++);
      in.domain = kDomains[rng.Below(o.domains)];
      in.scraper = scrapers[rng.Below(scrapers.size())].id;
      in.spotter = spotters.empty() ? "" : spotters[rng.Below(spotters.size())].id;
      in.created = now;
      in.scraper_at = now + rng.Between(300, 2000);
      // One intent in eight never hears back from its spotter: the check shows it failing.
      in.spotter_at = in.spotter.empty() || rng.Chance(0.125) ? -1 : 0;
      body.Put({"intents", in.id},
               "{\"host\":" + Str(in.scraper) + ",\"module\":" +
                   Str(fmt::format("scrape-{}@1.0", in.domain)) + ",\"domain\":" + Str(in.domain) +
                   ",\"created\":" + Int(now) + "}");
      intents.push_back(in);
      ++stats.intents;
    }
    if (now >= next_module_update_at && !intents.empty()) {
      next_module_update_at = now + kModuleUpdateEveryMs;
      Intent& in = intents[rng.Below(intents.size())];
      ++in.module_minor;
      in.scraper_at = now + rng.Between(500, 3000);
      body.Put({"intents", in.id, "module"},
               Str(fmt::format("scrape-{}@1.{}", in.domain, in.module_minor)));
    }
    while (!intents.empty() && intents.front().created + o.intent_lifetime_ms <= now) {
      body.Put({"intents", intents.front().id}, "null");
      intents.erase(intents.begin());
    }
    Emit(orchestrator.id, body);
  }

  // --- workers --------------------------------------------------------------------------------

  void SetStatus(Worker& w, WorkerStatus s, JsonBody& body, const std::string& msg) {
    w.status = s;
    body.Put({"nodes", w.id, "status"}, Str(Name(s)));
    body.Put({"nodes", w.id, "msg"}, Str(msg));
  }

  void TickWorker(Worker& w) {
    // Death and return, on a fixed schedule for the dying worker.
    if (w.index == o.dying_worker && o.death_period_ms > 0) {
      const std::int64_t phase = (now - start - o.die_after_ms) % o.death_period_ms;
      const bool dead_now = now - start >= o.die_after_ms && phase < o.dead_for_ms;
      if (dead_now && w.alive) {
        w.alive = false;  // the process is gone: no more shards, its job stays "running"
        w.job = 0;
        ++stats.deaths;
      } else if (!dead_now && !w.alive) {
        w.alive = true;
        w.announced = false;
        w.status = WorkerStatus::kInitializing;
        w.until = now + rng.Between(2000, 4000);
        ++stats.restarts;
      }
    }
    if (!w.alive) {
      return;
    }
    JsonBody body;
    if (!w.announced) {
      w.announced = true;
      body.Put({"nodes", w.id, "role"}, Str("worker"));
      body.Put({"nodes", w.id, "host"}, Str(fmt::format("10.0.1.{}", 10 + w.index)));
      body.Put({"nodes", w.id, "version"}, Str("2.3.0"));
      body.Put({"nodes", w.id, "job"}, "null");
      SetStatus(w, WorkerStatus::kInitializing, body,
                stats.restarts > 0 && w.index == o.dying_worker ? "restarted after a crash"
                                                                : "Hello World");
    }
    if (now >= w.next_heartbeat) {
      w.next_heartbeat = now + kHeartbeatEveryMs;
      w.last_heartbeat = now;
      body.Put({"nodes", w.id, "heartbeat"}, Max(now));
    }
    switch (w.status) {
      case WorkerStatus::kInitializing:
      case WorkerStatus::kPaused:
        if (now >= w.until) {
          SetStatus(w, WorkerStatus::kWaiting, body, "waiting for a job");
        }
        break;
      case WorkerStatus::kWaiting: {
        if (rng.Chance(0.004)) {
          w.until = now + rng.Between(3000, 6000);
          SetStatus(w, WorkerStatus::kPaused, body, "paused by the operator");
          break;
        }
        const auto section = SectionOf(w);
        if (!section) {
          break;
        }
        // The lowest queued job of the section, or one a dead node was running.
        for (auto j = jobs.lower_bound(section->first);
             j != jobs.end() && j->first <= section->second; ++j) {
          Job& job = j->second;
          const Worker* holder = job.status == "running" ? FindWorker(job.node) : nullptr;
          const bool orphan = holder != nullptr && holder != &w && !SeenAlive(*holder);
          if (job.status != "queued" && !orphan) {
            continue;
          }
          const std::uint64_t id = j->first;
          const std::string sid = std::to_string(id);
          std::string taken;
          if (orphan) {
            taken = ",\"taken_over_from\":" + Str(job.node);
            ++stats.jobs_taken_over;
          }
          job.status = "running";
          job.node = w.id;
          job.progress = 0;
          w.job = id;
          w.job_duration_ms = rng.Between(3000, 9000);
          w.job_elapsed_ms = 0;
          SetStatus(w, WorkerStatus::kWorking, body, fmt::format("running job {}", id));
          body.Put({"nodes", w.id, "job"}, Str(sid));
          body.Put({"jobs", sid}, "{\"status\":\"running\",\"node\":" + Str(w.id) +
                                      ",\"started\":" + Int(now) + ",\"progress\":0" + taken +
                                      "}");
          break;
        }
        break;
      }
      case WorkerStatus::kWorking: {
        auto j = jobs.find(w.job);
        if (j == jobs.end() || j->second.node != w.id) {  // taken away meanwhile
          w.job = 0;
          body.Put({"nodes", w.id, "job"}, "null");
          SetStatus(w, WorkerStatus::kWaiting, body, "waiting for a job");
          break;
        }
        w.job_elapsed_ms += o.tick_ms;
        const std::string sid = std::to_string(w.job);
        if (w.job_elapsed_ms >= w.job_duration_ms) {
          if (rng.Chance(0.05)) {
            j->second.status = "failed";
            ++stats.jobs_failed;
            body.Put({"jobs", sid},
                     "{\"status\":\"failed\",\"finished\":" + Int(now) +
                         ",\"error\":\"upstream returned HTTP 503 three times\"}");
            // One error per failed job, named after the job.
            body.Put({"errors", w.id, "job-" + sid},
                     "{\"msg\":\"job " + sid +
                         " failed: upstream returned HTTP 503 three times\",\"level\":\"error\","
                         "\"ts\":" +
                         Int(now) + ",\"details\":{\"job\":" +
                         Int(static_cast<std::int64_t>(w.job)) + "}}");
            ++stats.errors;
          } else {
            j->second.status = "done";
            j->second.progress = 1;
            ++stats.jobs_done;
            body.Put({"jobs", sid}, "{\"status\":\"done\",\"progress\":1,\"finished\":" +
                                        Int(now) + ",\"result\":{\"items\":" +
                                        Int(rng.Between(5, 400)) + "}}");
          }
          w.job = 0;
          body.Put({"nodes", w.id, "job"}, "null");
          SetStatus(w, WorkerStatus::kWaiting, body, "waiting for a job");
        } else {
          const double p = std::floor(100.0 * static_cast<double>(w.job_elapsed_ms) /
                                      static_cast<double>(w.job_duration_ms)) /
                           100.0;
          j->second.progress = p;
          body.Put({"jobs", sid, "progress"}, Dbl(p));
        }
        break;
      }
    }
    Emit(w.id, body);
  }

  // --- scrapers and spotters ------------------------------------------------------------------

  void TickScraper(Blade& b) {
    JsonBody body;
    Announce(b, body);
    std::set<std::string> domains;
    for (Intent& in : intents) {
      if (in.scraper != b.id) {
        continue;
      }
      if (in.scraper_at != 0 && now >= in.scraper_at) {
        in.scraper_at = 0;
        in.scraper_resolved = true;
        body.Put({"intents", in.id, "resolution", b.id},
                 "{\"status\":\"scraping\",\"module\":" +
                     Str(fmt::format("scrape-{}@1.{}", in.domain, in.module_minor)) +
                     ",\"since\":" + Int(now) + "}");
        if (in.spotter_at == 0 && !in.spotter_resolved) {
          in.spotter_at = now + rng.Between(500, 2500);
        }
      }
      if (in.scraper_resolved) {
        domains.insert(in.domain);
      }
    }
    body.Put({"blades", b.id, "status"}, Str(domains.empty() ? "waiting" : "working"));
    for (const std::string& d : domains) {
      const std::int64_t tries = rng.Between(1, 6);
      const std::int64_t collected = rng.Between(0, tries);
      const std::int64_t sent = rng.Between(0, collected);
      body.Put({"scrape", d, "tries"}, Inc(tries));
      body.Put({"scrape", d, "item_collected"}, Inc(collected));
      body.Put({"scrape", d, "item_sent"}, Inc(sent));
      auto& c = stats.counters[d];
      c["tries"] += tries;
      c["item_collected"] += collected;
      c["item_sent"] += sent;
      sent_total += sent;
      if (tries > collected && rng.Chance(0.01)) {
        ReportError(b, body, fmt::format("timeout fetching https://{}/page/{}", d, rng.Below(9999)),
                    "warning",
                    "{\"domain\":" + Str(d) + ",\"attempt\":" + Int(rng.Between(1, 3)) + "}");
      }
    }
    Emit(b.id, body);
  }

  void TickSpotter(Blade& b) {
    JsonBody body;
    Announce(b, body);
    bool busy = false;
    for (Intent& in : intents) {
      if (in.spotter != b.id) {
        continue;
      }
      if (in.spotter_at > 0 && now >= in.spotter_at) {
        in.spotter_at = 0;
        in.spotter_resolved = true;
        body.Put({"intents", in.id, "resolution", b.id},
                 "{\"status\":\"receiving\",\"since\":" + Int(now) + "}");
      }
      if (in.spotter_at == -1 && in.scraper_resolved && now - in.created == 8000) {
        ReportError(b, body, fmt::format("no items from {} for intent {}", in.scraper, in.id),
                    "error", "{\"intent\":" + Str(in.id) + "}");
      }
      busy = busy || in.spotter_resolved;
    }
    body.Put({"blades", b.id, "status"}, Str(busy ? "working" : "waiting"));
    Emit(b.id, body);
  }

  // --- the checker ------------------------------------------------------------------------------

  void SetCheck(JsonBody& body, const std::string& id, const std::string& description,
                const std::string& status, const std::string& evidence) {
    Check& c = checks[id];
    if (c.status != status) {
      c.status = status;
      c.since = now;
    }
    body.Put({"checks", id},
             "{\"status\":" + Str(status) + ",\"since\":" + Int(c.since) +
                 ",\"description\":" + Str(description) + ",\"evidence\":{\"expect\":" +
                 Str(description) + "," + evidence.substr(1) + "}");
  }

  void TickChecker() {
    JsonBody body;
    Announce(checker, body);
    body.Put({"blades", checker.id, "status"}, Str("working"));
    if (now >= next_check_at) {
      next_check_at = now + kCheckEveryMs;
      // Every worker wrote within the heartbeat timeout.
      std::string stale;
      for (const Worker& w : workers) {
        if (!SeenAlive(w)) {
          stale += (stale.empty() ? "" : ",") + Str(w.id) + ":" + Int(w.last_heartbeat);
        }
      }
      SetCheck(body, "heartbeats",
               fmt::format("every node's heartbeat is younger than {} s",
                           o.heartbeat_timeout_ms / 1000),
               stale.empty() ? "passing" : "failing",
               "{\"stale\":{" + stale + "},\"timeout_ms\":" + Int(o.heartbeat_timeout_ms) + "}");
      // Every intent resolves on its scraper and its spotter within 10 s.
      std::string late;
      bool young_open = false;
      for (const Intent& in : intents) {
        if (in.scraper_resolved && (in.spotter_resolved || in.spotter.empty())) {
          continue;
        }
        if (now - in.created < kUnresolvedAfterMs) {
          young_open = true;
          continue;
        }
        std::string missing;
        if (!in.scraper_resolved) {
          missing += Str(in.scraper);
        }
        if (!in.spotter_resolved && !in.spotter.empty()) {
          missing += (missing.empty() ? "" : ",") + Str(in.spotter);
        }
        late += (late.empty() ? "" : ",") + Str(in.id) + ":[" + missing + "]";
      }
      SetCheck(body, "intents-resolve",
               "every intent resolves on its scraper and its spotter within 10 s",
               !late.empty() ? "failing" : (young_open ? "pending" : "passing"),
               "{\"missing\":{" + late + "}}");
      // scrape.*.item_sent grows.
      sent_history.emplace_back(now, sent_total);
      while (sent_history.size() > 1 && sent_history.front().first < now - 10'000) {
        sent_history.erase(sent_history.begin());
      }
      const std::int64_t grew = sent_total - sent_history.front().second;
      SetCheck(body, "items-sent-grow", "scrape.*.item_sent grows over 10 s",
               now - start < 10'000 ? "pending" : (grew > 0 ? "passing" : "failing"),
               "{\"item_sent\":" + Int(sent_total) + ",\"grew_by\":" + Int(grew) + "}");
      std::int64_t queued = 0;
      for (const auto& [id, job] : jobs) {
        queued += job.status == "queued" ? 1 : 0;
      }
      SetCheck(body, "queue-depth", "fewer than 40 jobs queued",
               queued < 40 ? "passing" : "failing", "{\"queued\":" + Int(queued) + "}");
    }
    Emit(checker.id, body);
  }

  void Tick() {
    TickOrchestrator();
    for (Worker& w : workers) {
      TickWorker(w);
    }
    for (Blade& b : scrapers) {
      TickScraper(b);
    }
    for (Blade& b : spotters) {
      TickSpotter(b);
    }
    TickChecker();
  }
};

DemoCluster::DemoCluster(const DemoClusterOptions& options, std::int64_t start_ms)
    : impl_(std::make_unique<Impl>(options, start_ms)) {}

DemoCluster::~DemoCluster() = default;

void DemoCluster::Advance(std::int64_t now_ms,
                          const std::function<void(const DemoShard&)>& emit) {
  Impl& s = *impl_;
  s.emit = &emit;
  while (s.next_tick <= now_ms) {
    s.now = s.next_tick;
    s.Tick();
    s.next_tick += s.o.tick_ms;
  }
  s.emit = nullptr;
}

const DemoClusterStats& DemoCluster::stats() const { return impl_->stats; }

std::vector<std::string> DemoCluster::NodeIds() const {
  std::vector<std::string> ids;
  for (const Worker& w : impl_->workers) {
    ids.push_back(w.id);
  }
  for (const Blade& b : impl_->scrapers) {
    ids.push_back(b.id);
  }
  for (const Blade& b : impl_->spotters) {
    ids.push_back(b.id);
  }
  ids.push_back(impl_->orchestrator.id);
  ids.push_back(impl_->checker.id);
  return ids;
}

}  // namespace lattice::processors
