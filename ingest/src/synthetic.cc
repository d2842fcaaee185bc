// The synthetic recording generator (see synthetic.h for the shape of the data).
#include "lattice/ingest/synthetic.h"

#include <fmt/format.h>

#include <deque>
#include <vector>

namespace lattice::ingest {

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
  std::uint64_t Below(std::uint64_t n) { return Next() % n; }

 private:
  std::uint64_t state_;
};

constexpr const char* kStatuses[] = {"initializing", "waiting", "working", "paused"};

}  // namespace

void GenerateSynthetic(const SyntheticOptions& o,
                       const std::function<void(std::string_view line)>& emit) {
  Rng rng(o.seed);
  const std::uint32_t blades = std::max<std::uint32_t>(o.blades, 1);
  const std::uint32_t domains = std::max<std::uint32_t>(o.domains, 1);
  std::vector<std::uint64_t> seqs(blades, 0);
  std::vector<std::string> blade_names(blades);
  for (std::uint32_t b = 0; b < blades; ++b) {
    blade_names[b] = o.churn ? fmt::format("b-{:06}", b) : fmt::format("b-{:03}", b);
  }
  // Churn: the active blades are blade_base .. blade_base + blades - 1 (indices into the growing
  // name and seq tables); every churn_every shards the window moves by one.
  std::uint64_t blade_base = 0;
  const std::uint64_t churn_every = std::max<std::uint64_t>(o.churn_every, 1);
  std::vector<std::uint64_t> tries(domains, 0), items(domains, 0);
  std::vector<std::uint64_t> jobs(blades, 0);
  std::deque<std::uint64_t> live_intents;
  std::uint64_t next_intent = 1;
  fmt::memory_buffer line;
  fmt::memory_buffer body;

  for (std::uint64_t i = 0; i < o.shards; ++i) {
    if (o.churn && i > 0 && i % churn_every == 0) {
      ++blade_base;
      while (blade_names.size() < blade_base + blades) {
        blade_names.push_back(fmt::format("b-{:06}", blade_names.size()));
        seqs.push_back(0);
        jobs.push_back(0);
      }
    }
    const auto b = static_cast<std::size_t>(blade_base + rng.Below(blades));
    const std::string& blade = blade_names[b];
    const std::int64_t ts = o.start_ts + static_cast<std::int64_t>(i) * o.step_ms;
    body.clear();
    std::uint64_t kind = rng.Below(10);
    if (kind == 9 && (o.plain || o.churn || live_intents.empty())) {
      kind = 7;  // no erasures in plain mode (and nothing to erase yet): resolve instead
    }
    if (kind <= 3) {
      const auto d = static_cast<std::uint32_t>(rng.Below(domains));
      const std::uint64_t collected = rng.Below(5);
      tries[d] += 1;
      items[d] += collected;
      if (o.plain) {
        fmt::format_to(std::back_inserter(body),
                       R"({{"scrape":{{"d{}.example.com":{{"tries":{},"item_collected":{}}}}}}})",
                       d, tries[d], items[d]);
      } else {
        fmt::format_to(
            std::back_inserter(body),
            R"({{"scrape":{{"d{}.example.com":{{"tries":{{"$inc":1}},"item_collected":{{"$inc":{}}}}}}}}})",
            d, collected);
      }
    } else if (kind <= 6) {
      const char* status = kStatuses[rng.Below(4)];
      if (status[0] == 'w' && status[1] == 'o') {
        ++jobs[b];
      }
      fmt::format_to(std::back_inserter(body),
                     R"({{"nodes":{{"{}":{{"status":"{}","job":{},"msg":"{} job {}"}}}}}})", blade,
                     status, jobs[b], status, jobs[b]);
    } else if (kind <= 8) {
      const bool fresh = live_intents.empty() || live_intents.size() < o.intent_window / 2 ||
                         rng.Below(4) == 0;
      std::uint64_t id;
      if (fresh) {
        id = next_intent++;
        live_intents.push_back(id);
        if ((o.plain || o.churn) && live_intents.size() > o.intent_window) {
          live_intents.pop_front();  // forgotten, not erased
        }
        fmt::format_to(
            std::back_inserter(body),
            R"({{"intents":{{"i{}":{{"host":"{}","resolution":{{"{}":{{"ok":true,"ms":{}}}}}}}}}}})",
            id, blade, blade, rng.Below(500));
      } else {
        id = live_intents[rng.Below(live_intents.size())];
        fmt::format_to(std::back_inserter(body),
                       R"({{"intents":{{"i{}":{{"resolution":{{"{}":{{"ok":{},"ms":{}}}}}}}}}}})", id,
                       blade, rng.Below(8) != 0 ? "true" : "false", rng.Below(500));
      }
    } else {
      const std::uint64_t id = live_intents.front();
      live_intents.pop_front();
      fmt::format_to(std::back_inserter(body), R"({{"intents":{{"i{}":null}}}})", id);
    }
    line.clear();
    fmt::format_to(std::back_inserter(line), R"({{"blade":"{}","seq":{},"ts":{},"shard":)", blade,
                   ++seqs[b], ts);
    line.append(body.data(), body.data() + body.size());
    line.push_back('}');
    emit(std::string_view(line.data(), line.size()));
  }
}

}  // namespace lattice::ingest
