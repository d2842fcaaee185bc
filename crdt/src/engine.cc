// The merge engine: applying shards to the trie (see engine.h for the rules it keeps).
#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include "records.h"

namespace lattice::crdt::internal {

namespace {

using core::Number;
using core::OpKind;

constexpr std::int64_t kBigInt = std::int64_t{1} << 61;
constexpr double kBigDouble = 1e290;

// value ⊕ amount with the counter rule: integers stay exact, anything with a double is a double.
Number AddNumbers(const Number& a, const Number& b) {
  if (a.is_int && b.is_int) {
    std::int64_t r;
    if (!__builtin_add_overflow(a.i, b.i, &r)) {
      return Number::Int(r);
    }
  }
  return Number::Double(a.AsDouble() + b.AsDouble());
}

bool Better(Kind kind, const Number& v, const Stamp& vs, const Number& best, const Stamp& best_s) {
  const int c = core::CompareNumbers(v, best);
  if (c == 0) {
    return vs < best_s;
  }
  return kind == Kind::kMax ? c > 0 : c < 0;
}

Kind KindOf(OpKind op) {
  switch (op) {
    case OpKind::kInc:
      return Kind::kCounter;
    case OpKind::kMax:
      return Kind::kMax;
    default:
      return Kind::kMin;
  }
}

// s = v, without std::string::assign's general replace (aliasing checks): ~100 instructions
// per call, once per created node and per scalar written. REQUIRES: v does not point into s.
void AssignBytes(std::string& s, std::string_view v) {
  s.clear();
  s.append(v.data(), v.size());
}

bool SameStamp(const Stamp& a, const Stamp& b) {
  return a.ts == b.ts && a.blade == b.blade && a.seq == b.seq;
}

}  // namespace

Engine::Engine(EngineOptions options, bool persistent)
    : options_(options), persistent_(persistent) {
  root_ = AllocNode();
  root_->kind = Kind::kObject;
  frames_.resize(72);  // depth 64 (DecodeLimits::max_depth) and more grow it
  BuildPatterns();
}

Engine::~Engine() = default;

Node* Engine::AllocNode() {
  Node* n;
  if (!free_nodes_.empty()) {
    n = free_nodes_.back();
    free_nodes_.pop_back();
    // A node freed by ReleaseChanges() comes back as it died (its register is gone).
    LATTICE_DCHECK(!n->reg);
    if (n->has_ttl) [[unlikely]] {
      free_ttl_.push_back(std::move(n->ttl));  // for the next TTL node (NewTtlState resets it)
      n->has_ttl = false;
    }
    if (n->has_dropped) [[unlikely]] {
      n->dropped_slots.clear();
      n->has_dropped = false;
    }
    // A freed node was last touched by the kill or the commit that freed it, long ago: creating
    // it writes lines 0-2, each a miss. Fetch the one handed out kFreeAhead allocations later.
    constexpr std::size_t kFreeAhead = 4;
    if (free_nodes_.size() >= kFreeAhead) {
      const char* p = reinterpret_cast<const char*>(free_nodes_[free_nodes_.size() - kFreeAhead]);
      __builtin_prefetch(p, 1);
      __builtin_prefetch(p + 64, 1);
      __builtin_prefetch(p + 128, 1);
    }
  } else {
    if (slab_used_ == kNodeSlab) {
      node_slabs_.push_back(std::make_unique<Node[]>(kNodeSlab));
      slab_used_ = 0;
    }
    n = &node_slabs_.back()[slab_used_++];
  }
  n->uid = next_uid_++;
  ++live_nodes_;
  return n;
}

std::unique_ptr<TtlState> Engine::NewTtlState() {
  if (free_ttl_.empty()) {
    return std::make_unique<TtlState>();
  }
  std::unique_ptr<TtlState> t = std::move(free_ttl_.back());
  free_ttl_.pop_back();
  std::vector<std::int64_t> older = std::move(t->older);  // keeps its capacity
  older.clear();
  *t = TtlState{};
  t->older = std::move(older);
  return t;
}

std::size_t Engine::BladeCacheSlot(std::string_view name) {
  // Two overlapping loads of the name's ends (blade names differ in their last bytes), mixed by
  // one multiplication; the top bits pick the slot.
  const char* p = name.data();
  const std::size_t n = name.size();
  std::uint64_t x = n;
  if (n >= 8) {
    std::uint64_t a, b;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + n - 8, 8);
    x ^= a ^ (b * 0x9E3779B97F4A7C15ull);
  } else if (n >= 4) {
    std::uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    x ^= (std::uint64_t{a} << 8) ^ (std::uint64_t{b} << 32);
  } else if (n > 0) {
    x ^= (std::uint64_t{static_cast<unsigned char>(p[0])} << 8) ^
         (std::uint64_t{static_cast<unsigned char>(p[n / 2])} << 16) ^
         (std::uint64_t{static_cast<unsigned char>(p[n - 1])} << 24);
  }
  return static_cast<std::size_t>((x * 0x9E3779B97F4A7C15ull) >> (64 - kBladeCacheBits));
}

inline Blade* Engine::InternBlade(std::string_view name) {
  // Most shards' blades are in the direct-mapped cache (blades are never freed); the name map's
  // hash and probe cost ~90 instructions a shard. The miss path is out of line, so that the hit
  // saves no registers.
  Blade*& cached = blade_cache_[BladeCacheSlot(name)];
  if (cached != nullptr && cached->name.size() == name.size() &&
      SameBytes(cached->name.data(), name.data(), name.size())) [[likely]] {
    return cached;
  }
  return InternBladeSlow(name, cached);
}

Blade* Engine::InternBladeSlow(std::string_view name, Blade*& cached) {
  auto it = blades_by_name_.find(name);
  if (it != blades_by_name_.end()) {
    cached = it->second.get();
    return cached;
  }
  auto blade = std::make_unique<Blade>();
  blade->name = std::string(name);
  blade->id = static_cast<std::uint32_t>(blades_by_id_.size());
  Blade* raw = blade.get();
  blades_by_id_.push_back(raw);
  blades_by_name_.emplace(raw->name, std::move(blade));
  cached = raw;
  return raw;
}

Engine::SeqCheck Engine::CheckSeq(const Blade& blade, std::uint64_t seq, std::uint64_t hash) const {
  if (!blade.has_seq || seq > blade.last_seq) {
    return SeqCheck::kNew;
  }
  for (int i = 0; i < blade.ring_count; ++i) {
    const auto& [rs, rh] = blade.ring[static_cast<std::size_t>(i)];
    if (rs == seq) {
      return rh == hash ? SeqCheck::kDuplicate : SeqCheck::kConflict;
    }
  }
  // Not among the recent ones: a gap being filled if the ring still covers it (every applied seq
  // above the largest evicted one is in the ring), else an old redelivery we cannot verify.
  if (!blade.has_evicted || seq > blade.evicted_max) {
    return SeqCheck::kNew;
  }
  return SeqCheck::kDuplicate;
}

void Engine::RecordSeq(Blade& blade, std::uint64_t seq, std::uint64_t hash, std::int64_t ts) {
  static_assert((Blade::kRing & (Blade::kRing - 1)) == 0);
  if (blade.last_ts < ts) {
    blade.last_ts = ts;
  }
  auto& entry = blade.ring[static_cast<std::size_t>(blade.ring_next)];
  if (blade.ring_count == Blade::kRing) {
    const std::uint64_t evicted = entry.first;
    if (!blade.has_evicted || evicted > blade.evicted_max) {
      blade.evicted_max = evicted;
      blade.has_evicted = true;
    }
  } else {
    ++blade.ring_count;
  }
  entry = {seq, hash};
  blade.ring_next = (blade.ring_next + 1) & (Blade::kRing - 1);
  if (!blade.has_seq || seq > blade.last_seq) {
    blade.last_seq = seq;
    blade.has_seq = true;
  }
  if (!blade.dirty && persistent_) {
    blade.dirty = true;
    dirty_blades_.push_back(&blade);
  }
}

void Engine::SetOrigin(const ShardSource* source) {
  if (source == nullptr) {
    origin_ = Origin{};
    return;
  }
  // Consecutive shards mostly come from one source: compare with the previous one first.
  if (last_source_ == 0 || source_names_[last_source_ - 1] != source->source) {
    auto it = source_ids_.find(source->source);
    if (it == source_ids_.end()) {
      const auto id = static_cast<std::uint32_t>(source_names_.size());
      source_names_.emplace_back(source->source);
      it = source_ids_.emplace(source_names_.back(), id).first;
    }
    last_source_ = it->second + 1;
  }
  origin_.source = last_source_;
  origin_.offset = source->offset;
  origin_.line = source->line;
}

ApplyResult Engine::Apply(const core::Shard& shard, const ShardSource* source) {
  Blade* blade = InternBlade(shard.blade);
  switch (CheckSeq(*blade, shard.seq, shard.hash)) {
    case SeqCheck::kNew:
      break;
    case SeqCheck::kDuplicate:
      counts_.Add(Outcome::kDuplicate);
      return {Outcome::kDuplicate, {}};
    case SeqCheck::kConflict:
      counts_.Add(Outcome::kConflict);
      return {Outcome::kConflict, "blade '" + std::string(shard.blade) + "' seq " +
                                      std::to_string(shard.seq) +
                                      " was already applied with a different body or ts"};
  }
  const Stamp s{shard.ts, blade, shard.seq};
  if (s.ts < gc_horizon_) {
    // Older than history we may have folded or dropped: merge only what the kept stamps decide.
    if (!AllDominated(shard, s)) {
      counts_.Add(Outcome::kLate);
      return {Outcome::kLate, "ts " + std::to_string(shard.ts) + " is older than the horizon " +
                                  std::to_string(gc_horizon_) +
                                  " (watermark - allowed lateness) and the kept stamps cannot "
                                  "decide it exactly"};
    }
    RecordSeq(*blade, shard.seq, shard.hash, shard.ts);
    counts_.Add(Outcome::kApplied);
    return {};
  }
  if (shard.has_int_inc || shard.has_float_inc) {
    bool check = big_numbers_seen_ || shard.max_abs_inc >= static_cast<std::uint64_t>(kBigInt);
    if (!check && shard.has_float_inc) {
      for (const auto& e : shard.entries) {
        if (e.kind == OpKind::kInc && !e.number.is_int && std::fabs(e.number.d) >= kBigDouble) {
          check = true;
          break;
        }
      }
    }
    if (check) {
      Status st = CheckOverflow(shard, s);
      if (!st.ok()) {
        counts_.Add(Outcome::kInvalid);
        return {Outcome::kInvalid, st.message()};
      }
    }
  }
  in_order_ = !blade->has_seq || shard.seq > blade->last_seq;
  RecordSeq(*blade, shard.seq, shard.hash, shard.ts);
  if (source != nullptr) {
    SetOrigin(source);
  } else {
    origin_ = Origin{};
  }
  if (s.ts > max_ts_) {
    max_ts_ = s.ts;
  }
  if (feed_) [[unlikely]] {
    if (has_ttl_) {
      ApplyEntries<true, true>(shard, s);
    } else {
      ApplyEntries<true, false>(shard, s);
    }
  } else if (has_ttl_) {
    ApplyEntries<false, true>(shard, s);
  } else {
    ApplyEntries<false, false>(shard, s);
  }
  counts_.Add(Outcome::kApplied);
  return {};
}

namespace {

ChangeCause CauseOf(OpKind kind) {
  switch (kind) {
    case OpKind::kErase:
      return ChangeCause::kErase;
    case OpKind::kInc:
    case OpKind::kMax:
    case OpKind::kMin:
      return ChangeCause::kCounter;
    default:
      return ChangeCause::kSet;
  }
}

}  // namespace

// The walk over a shard's entries. With kEmit, each entry's visible effect is reported to the
// change feed (docs/merge-rules.md, "Change events"): a node that becomes an object in this shard
// is reported once, with its whole new subtree, after the entries below it; any other entry is
// reported at its own node when that node's visible value changed.
template <bool kEmit, bool kTtl>
void Engine::ApplyEntries(const core::Shard& shard, const Stamp& s) {
  // frames[d - 1] is the object the entries at depth d go into (frames[0] the root), with the
  // newest reset above it; indexed by depth instead of resized per entry.
  Frame* frames = frames_.data();
  frames[0] = {root_, Stamp{}};
  const auto& entries = shard.entries;
  const auto n = static_cast<std::uint32_t>(entries.size());
  [[maybe_unused]] Node* pending = nullptr;  // became an object in this shard: reported at its end
  [[maybe_unused]] std::uint32_t pending_end = 0;
  [[maybe_unused]] std::optional<std::string> pending_old;
  for (std::uint32_t i = 0; i < n;) {
    if constexpr (kEmit) {
      if (pending != nullptr && i >= pending_end) {
        Emit(pending, std::move(pending_old), VisibleJson(pending), s, ChangeCause::kSet);
        pending = nullptr;
      }
    }
    const core::BodyEntry& e = entries[i];
    const Frame& f = frames[e.depth - 1];  // written by the entry's parent (checked there)
    Node* parent = f.node;
    const Stamp kill = MaxStamp(f.kill, parent->reset);
    if (s < kill) {
      i = e.end;  // the whole subtree of this entry is older than a replacement above it
      continue;
    }
    Node* child = FindChild(parent, e.key);
    [[maybe_unused]] bool watch = false;
    [[maybe_unused]] Kind before = Kind::kAbsent;
    [[maybe_unused]] std::optional<std::string> old_json;
    if constexpr (kEmit) {
      before = child != nullptr ? child->kind : Kind::kAbsent;
      // Ensuring an existing object never changes what is visible at it.
      watch = pending == nullptr && (e.kind != OpKind::kObject || before != Kind::kObject);
      if (watch) {
        old_json = VisibleJson(child);
      }
    }
    switch (e.kind) {
      case OpKind::kObject:
        child = EnsureObject(parent, child, e.key, s);
        if (e.depth >= frames_.size()) [[unlikely]] {
          frames_.resize(std::size_t{e.depth} + 1);
          frames = frames_.data();
        }
        frames[e.depth] = {child, kill};
        break;
      case OpKind::kSet:
        child = SetScalar(parent, child, e.key, s, e.value);
        break;
      case OpKind::kErase:
        child = Erase(parent, child, e.key, s);
        break;
      case OpKind::kInc:
      case OpKind::kMax:
      case OpKind::kMin:
        child = RegisterOp(parent, child, e.key, s, KindOf(e.kind), e.number);
        break;
    }
    if constexpr (kTtl) {
      if (child->has_ttl) {
        NoteTtlWrite(child, s.ts);
      }
    }
    if constexpr (kEmit) {
      if (watch) {
        if (e.kind == OpKind::kObject && child->kind == Kind::kObject) {
          pending = child;
          pending_end = e.end;
          pending_old = std::move(old_json);
        } else {
          std::optional<std::string> new_json = VisibleJson(child);
          if (new_json != old_json) {
            Emit(child, std::move(old_json), std::move(new_json), s, CauseOf(e.kind));
          }
        }
      }
    }
    ++i;
  }
  if constexpr (kEmit) {
    if (pending != nullptr) {
      Emit(pending, std::move(pending_old), VisibleJson(pending), s, ChangeCause::kSet);
    }
  }
}

template void Engine::ApplyEntries<true, true>(const core::Shard&, const Stamp&);
template void Engine::ApplyEntries<true, false>(const core::Shard&, const Stamp&);
template void Engine::ApplyEntries<false, true>(const core::Shard&, const Stamp&);
template void Engine::ApplyEntries<false, false>(const core::Shard&, const Stamp&);

std::optional<std::string> Engine::VisibleJson(const Node* node) const {
  if (node == nullptr || node->kind == Kind::kAbsent) {
    return std::nullopt;
  }
  std::string out;
  WriteJson(node, out);
  return out;
}

std::string Engine::PathText(const Node* node) const {
  std::vector<std::string> keys;
  for (const Node* p = node; p != nullptr && p != root_; p = p->parent) {
    keys.push_back(p->key);
  }
  std::reverse(keys.begin(), keys.end());
  return core::Path(std::move(keys)).ToString();
}

void Engine::Emit(const Node* node, std::optional<std::string> old_json,
                  std::optional<std::string> new_json, const Stamp& s, ChangeCause cause) {
  if (old_json == new_json) {
    return;
  }
  Change c;
  c.path = PathText(node);
  c.old_json = std::move(old_json);
  c.new_json = std::move(new_json);
  if (s.blade != nullptr) {
    c.blade = s.blade->name;
  }
  c.seq = s.seq;
  c.ts = s.ts;
  c.cause = cause;
  feed_(c);
}

bool Engine::AllDominated(const core::Shard& shard, const Stamp& s) const {
  struct CFrame {
    const Node* node;
    Stamp kill;
  };
  std::vector<CFrame> frames;
  frames.push_back({root_, Stamp{}});
  const auto& entries = shard.entries;
  for (std::uint32_t i = 0; i < entries.size();) {
    const core::BodyEntry& e = entries[i];
    frames.resize(e.depth);
    const CFrame& f = frames.back();
    Stamp kill = f.kill;
    if (f.node != nullptr) {
      kill = MaxStamp(kill, f.node->reset);
    }
    if (s < kill) {
      i = e.end;
      continue;
    }
    const Node* child = f.node != nullptr ? FindChild(f.node, e.key) : nullptr;
    if (child == nullptr || !(s < child->last)) {
      return false;
    }
    if (child->has_ttl) {
      return false;  // a write under a TTL subtree behind the horizon may change a decided gap
    }
    const bool in_run = IsRegister(child->kind) && child->reg->boundary < s;
    if (e.kind == OpKind::kObject) {
      if (in_run) {
        return false;
      }
      frames.push_back({child, kill});
    } else if (in_run || !(s < child->reset)) {
      return false;
    }
    ++i;
  }
  return true;
}

Status Engine::CheckOverflow(const core::Shard& shard, const Stamp& s) {
  // A read-only walk to each $inc target: the slot and the total it would produce must stay in
  // range. Only run when numbers are big enough for that to be in doubt.
  std::vector<std::pair<const Node*, Stamp>> frames;
  std::vector<std::string> keys;
  frames.emplace_back(root_, Stamp{});
  const auto& entries = shard.entries;
  for (std::uint32_t i = 0; i < entries.size();) {
    const core::BodyEntry& e = entries[i];
    frames.resize(e.depth);
    keys.resize(e.depth - 1);
    keys.emplace_back(e.key);
    const auto& [parent, inherited] = frames.back();
    Stamp kill = inherited;
    if (parent != nullptr) {
      kill = MaxStamp(kill, parent->reset);
    }
    if (s < kill) {
      i = e.end;
      continue;
    }
    const Node* child = parent != nullptr ? FindChild(parent, e.key) : nullptr;
    if (e.kind == OpKind::kObject) {
      frames.emplace_back(child != nullptr && child->kind == Kind::kObject ? child : nullptr, kill);
    } else if (e.kind == OpKind::kInc) {
      Number slot = Number::Int(0);
      Number total = Number::Int(0);
      if (child != nullptr && child->kind == Kind::kCounter && child->reg->boundary < s) {
        Materialize(const_cast<Node*>(child));  // the slots are read below
        total = child->reg->total;
        for (const Slot& sl : child->reg->slots) {
          if (sl.blade == s.blade) {
            slot = sl.value;
          }
        }
      }
      for (const Number* v : {&slot, &total}) {
        if (v->is_int && e.number.is_int) {
          std::int64_t r;
          if (__builtin_add_overflow(v->i, e.number.i, &r)) {
            return Status::InvalidArgument("$inc at " + core::Path(keys).ToString() +
                                           " would overflow a 64-bit integer counter");
          }
        } else if (!std::isfinite(v->AsDouble() + e.number.AsDouble())) {
          return Status::InvalidArgument("$inc at " + core::Path(keys).ToString() +
                                         " would overflow a floating-point counter");
        }
      }
    }
    ++i;
  }
  return Status::Ok();
}

inline const Node* Engine::IndexedTop(const core::Shard& shard) const {
  const std::vector<core::BodyEntry>& e = shard.entries;
  if (e.size() < 2 || e[1].depth != 2) {
    return nullptr;
  }
  // The top level has few keys, in cache: find the first one without faulting anything in.
  const Node* top = nullptr;
  if (root_->has_index) {
    auto it = root_->index->find(e[0].key);
    top = it == root_->index->end() ? nullptr : it->second;
  } else {
    for (const Node* c = root_->first_child; c != nullptr; c = c->next) {
      if (c->key.size() == e[0].key.size() &&
          SameBytes(c->key.data(), e[0].key.data(), e[0].key.size())) {
        top = c;
        break;
      }
    }
  }
  return top != nullptr && top->has_index ? top : nullptr;
}

void Engine::Prefetch(const core::Shard& shard) const {
  if (const Node* top = IndexedTop(shard)) {
    top->index->prefetch(shard.entries[1].key);  // the control bytes and slots of the first probe
  }
}

void Engine::PrefetchChild(const core::Shard& shard) const {
  if (const Node* top = IndexedTop(shard)) {
    top->index->find(PrefetchProbe{shard.entries[1].key});  // finds nothing (NameEq)
  }
}

Node* Engine::FindIndexed(const Node* parent, std::string_view key) const {
  auto it = parent->index->find(key);
  return it == parent->index->end() ? nullptr : it->second;
}

Node* Engine::FindPaged(const Node* parent, std::string_view key) const {
  EnsureLoaded(parent);  // the children are on disk only: read them, then look again
  return FindChild(parent, key);
}

Node* Engine::CreateChild(Node* parent, std::string_view key) {
  LATTICE_DCHECK(!IsPaged(parent));  // every caller looked the key up first (FindChild)
  Node* n = AllocNode();
  if (pager_ != nullptr) [[unlikely]] {
    n->page_commit = 0;
    n->in_clock = false;
    n->page_touched = false;
  }
  n->parent = parent;
  AssignBytes(n->key, key);
  n->last = Stamp{};
  n->reset = Stamp{};
  n->kind = Kind::kAbsent;
  n->dirty = false;
  n->persisted = false;
  n->dead = false;
  n->first_child = nullptr;
  n->child_count = 0;
  // `origin` is left as it was: the write that follows every creation sets it with `last`.
  // Without TTL rules every pstate is null, and line 3 is not touched (a cache miss per node).
  if (has_ttl_) [[unlikely]] {
    n->pstate = nullptr;
    if (parent->pstate != nullptr) {
      auto it = parent->pstate->by_key.find(key);
      n->pstate = it != parent->pstate->by_key.end() ? it->second : parent->pstate->other;
      if (n->pstate != nullptr && n->pstate->duration > 0) {
        n->ttl = NewTtlState();
        n->ttl->duration = n->pstate->duration;
        n->has_ttl = true;
      }
    }
  }
  n->prev = nullptr;
  n->next = parent->first_child;
  if (parent->first_child != nullptr) {
    parent->first_child->prev = n;
  }
  parent->first_child = n;
  ++parent->child_count;
  if (parent->has_index) {
    parent->index->emplace(n->key, n);
  } else if (parent->child_count > Node::kIndexFrom) {
    parent->index = std::make_unique<absl::flat_hash_map<std::string_view, Node*, NameHash, NameEq>>();
    parent->has_index = true;
    for (Node* c = parent->first_child; c != nullptr; c = c->next) {
      parent->index->emplace(c->key, c);
    }
  }
  return n;
}

void Engine::Unlink(Node* node) {
  Node* parent = node->parent;
  if (node->prev != nullptr) {
    node->prev->next = node->next;
  } else {
    parent->first_child = node->next;
  }
  if (node->next != nullptr) {
    node->next->prev = node->prev;
  }
  node->prev = node->next = nullptr;
  --parent->child_count;
  if (parent->has_index) {
    parent->index->erase(std::string_view(node->key));
    if (parent->child_count <= Node::kIndexFrom / 2) {
      parent->DropIndex();
    }
  }
}

inline void Engine::MarkDead(Node* node) {
  node->first_child = nullptr;
  node->child_count = 0;
  node->DropIndex();
  if (node->reg) {
    UntrackRegister(node);
  }
  node->dead = true;
  --live_nodes_;
}

void Engine::KillSubtree(Node* node) {
  bool range = covering_;
  if (IsPaged(node)) [[unlikely]] {
    // Its subtree is on disk only: one range delete per column family, without reading it.
    if (!covering_) {
      std::string key;
      AppendKey(node, key);
      subtree_deletes_.push_back(std::move(key));
    }
    range = true;
  }
  for (Node* c = node->first_child; c != nullptr;) {
    Node* next = c->next;
    KillSubtree(c);
    c = next;
  }
  MarkDead(node);
  if (persistent_) {
    // Freed after the next commit, which needs its key.
    (range ? covered_ : graveyard_).push_back(node);
  } else {
    FreeNode(node);
  }
}

void Engine::FreeNode(Node* node) {
  // Only what the first two cache lines hold: CreateChild sets the rest (`scalar` is read only
  // for a kScalar node, and every write that makes one assigns it).
  node->reg.reset();
  if (node->has_ttl) {
    // Kept for the next TTL node without touching it (NewTtlState resets it): freeing it read
    // its cold memory.
    free_ttl_.push_back(std::move(node->ttl));
    node->has_ttl = false;
  }
  if (node->has_dropped) {
    // (never filled without persistence; the bit keeps line 3 untouched for the rest)
    node->dropped_slots.clear();
    node->has_dropped = false;
  }
  node->first_child = node->next = nullptr;
  free_nodes_.push_back(node);
}

void Engine::KillChildren(Node* node) {
  if (IsPaged(node)) [[unlikely]] {
    KillPagedChildren(node);
    return;
  }
  if (node->first_child == nullptr) {
    return;
  }
  LATTICE_DCHECK(!covering_);
  if (pager_ == nullptr) {
    // Detached now, killed later with others (BuryDoomed). With paging, a subtree below may be
    // paged out (its kill needs a range delete): killed at once.
    doomed_.push_back(node->first_child);
    node->first_child = nullptr;
    node->child_count = 0;
    node->DropIndex();
    if (doomed_.size() >= kDoomedMax) [[unlikely]] {
      BuryDoomedSlow();
    }
    return;
  }
  for (Node* c = node->first_child; c != nullptr;) {
    Node* next = c->next;
    KillSubtree(c);
    c = next;
  }
  node->first_child = nullptr;
  node->child_count = 0;
  node->DropIndex();
}

void Engine::SortFree(std::size_t from) {
  // Descending, so that AllocNode (which pops the back) hands them out in ascending address
  // order: the nodes created together (an intent's subtree, created by one shard) then share
  // pages and lines instead of being scattered over the slabs in the order they died, and so do
  // their later lookups and kills.
  Node** const first = free_nodes_.data() + from;
  const std::size_t n = free_nodes_.size() - from;
  if (n < 1024) {
    std::sort(first, first + n, std::greater<>());
    return;
  }
  // A commit frees ~100k nodes: an LSD radix sort of the addresses (never dereferenced), in up
  // to three 11-bit digits of (highest - address) / 128 (nodes are 256 bytes apart), instead of
  // std::sort's ~n log n compares (~80 perf samples a 2M aggregate).
  std::uintptr_t lo = std::numeric_limits<std::uintptr_t>::max();
  std::uintptr_t hi = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto a = reinterpret_cast<std::uintptr_t>(first[i]);
    lo = std::min(lo, a);
    hi = std::max(hi, a);
  }
  constexpr int kShift = 7;
  constexpr int kDigit = 11;
  const std::uintptr_t span = (hi - lo) >> kShift;
  const int bits = span == 0 ? 0 : 64 - __builtin_clzll(span);
  const int passes = (bits + kDigit - 1) / kDigit;
  if (passes > 3) {
    std::sort(first, first + n, std::greater<>());  // slabs spread over more than 1 TiB
    return;
  }
  sort_scratch_.resize(n);
  Node** src = first;
  Node** dst = sort_scratch_.data();
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = kShift + pass * kDigit;
    std::array<std::uint32_t, std::size_t{1} << kDigit> start{};
    const auto digit = [&](const Node* node) {
      return ((hi - reinterpret_cast<std::uintptr_t>(node)) >> shift) &
             ((std::uintptr_t{1} << kDigit) - 1);
    };
    for (std::size_t i = 0; i < n; ++i) {
      ++start[digit(src[i])];
    }
    std::uint32_t sum = 0;
    for (std::uint32_t& c : start) {
      const std::uint32_t count = c;
      c = sum;
      sum += count;
    }
    for (std::size_t i = 0; i < n; ++i) {
      dst[start[digit(src[i])]++] = src[i];
    }
    std::swap(src, dst);
  }
  if (src != first) {
    std::copy(src, src + n, first);
  }
  LATTICE_DCHECK(std::adjacent_find(first, first + n, std::less_equal<>()) == first + n);
}

void Engine::BuryDoomedSlow() {
  // Breadth-first over the chains: a node's next sibling and first child join the end of the
  // queue, and the node kAhead places on is fetched, so several subtrees' misses are in flight.
  // What KillSubtree() does per node, without paging (never deferred with it) or covering.
  constexpr std::size_t kAhead = 8;
  const std::size_t freed_from = free_nodes_.size();
  for (std::size_t i = 0; i < doomed_.size(); ++i) {
    if (i + kAhead < doomed_.size()) {
      const char* p = reinterpret_cast<const char*>(doomed_[i + kAhead]);
      __builtin_prefetch(p, 1);
      __builtin_prefetch(p + 64, 1);
    }
    Node* n = doomed_[i];
    if (n->next != nullptr) {
      doomed_.push_back(n->next);
    }
    if (n->first_child != nullptr) {
      doomed_.push_back(n->first_child);
    }
    MarkDead(n);
    if (!persistent_) {
      FreeNode(n);
    } else if (n->reg || n->has_ttl || n->has_dropped) {
      graveyard_.push_back(n);  // freed after the next commit, which needs its key
    } else if (n->persisted) {
      plain_dead_.push_back(n);  // lines 0-1 are in cache now
    } else {
      // Never written: no commit names it, nor any node below it (created after it, so never
      // written either), and the commit being written was collected before it was created. So
      // it goes back to the free list now, not after the next commit: the batch's later
      // creations reuse it (warm) instead of new slab memory (a page fault per 16 nodes). It
      // may still be listed in dirty_: CollectChanges() skips it there (dead, or not dirty if
      // it was reused and listed again).
      free_nodes_.push_back(n);
    }
  }
  doomed_.clear();
  SortFree(freed_from);
}

void Engine::KillPagedChildren(Node* node) {
  // The children are on disk only: a range delete of the node's subtree (its own record is
  // written again after it, since the caller changes the node).
  std::string key;
  AppendKey(node, key);
  subtree_deletes_.push_back(std::move(key));
  node->child_count = 0;
  MarkDirty(node);
}

void Engine::KillOlder(Node* node, const Stamp& s) {
  EnsureLoaded(node);
  for (Node* c = node->first_child; c != nullptr;) {
    Node* next = c->next;
    if (c->last < s) {
      Unlink(c);
      KillSubtree(c);
    } else if (IsRegister(c->kind)) {
      if (c->reg->boundary < s) {
        CutRun(c, s);
      }
    } else if (c->kind == Kind::kObject) {
      KillOlder(c, s);
    }
    c = next;
  }
}

void Engine::DropValue(Node* node) {
  // `scalar` is left as it is: it is read only while the node is a scalar, and SetScalar assigns
  // it (clearing it here cost a cache miss per erased or replaced node).
  if (node->reg) {
    DropRegister(node);
  }
}

void Engine::DropRegister(Node* node) {
  for (Slot& slot : node->reg->slots) {
    DropSlot(node, slot);
  }
  UntrackRegister(node);
  node->reg.reset();
}

Node* Engine::EnsureObject(Node* parent, Node* child, std::string_view key, const Stamp& s) {
  if (child == nullptr) {
    child = CreateChild(parent, key);
  }
  if (child->last < s) {
    if (child->kind != Kind::kObject) {
      DropValue(child);
      child->kind = Kind::kObject;
    }
    child->last = s;
    child->origin = origin_;
    MarkDirty(child);
  } else if (IsRegister(child->kind) && child->reg->boundary < s) {
    CutRun(child, s);
  }
  return child;
}

Node* Engine::SetScalar(Node* parent, Node* child, std::string_view key, const Stamp& s,
                        std::string_view value) {
  if (child == nullptr) {
    child = CreateChild(parent, key);
  }
  if (child->last < s) {
    KillChildren(child);
    DropValue(child);
    child->kind = Kind::kScalar;
    AssignBytes(child->scalar, value);
    child->last = s;
    child->origin = origin_;
    child->reset = s;
    MarkDirty(child);
  } else {
    LateReset(child, s);
  }
  return child;
}

Node* Engine::Erase(Node* parent, Node* child, std::string_view key, const Stamp& s) {
  if (child == nullptr) {
    child = CreateChild(parent, key);
  }
  if (child->last < s) {
    KillChildren(child);
    DropValue(child);
    child->kind = Kind::kAbsent;
    child->last = s;
    child->origin = origin_;
    child->reset = s;
    MarkDirty(child);
    tombstones_.push_back({s.ts, {child, child->uid}});
  } else {
    LateReset(child, s);
  }
  return child;
}

Node* Engine::RegisterOp(Node* parent, Node* child, std::string_view key, const Stamp& s,
                         Kind kind, const Number& n) {
  if (child == nullptr) {
    child = CreateChild(parent, key);
  }
  if (child->last < s) {
    if (child->kind != kind) {
      KillChildren(child);
      const Stamp boundary = child->last;
      DropValue(child);
      child->kind = kind;
      child->reg = std::make_unique<Register>();
      child->reg->boundary = boundary;
    }
    child->last = s;
    child->origin = origin_;
    child->reset = s;
    AddToRun(child, s, n);
    MarkDirty(child);
  } else if (child->kind == kind && child->reg->boundary < s) {
    if (child->reset < s) {
      child->reset = s;
    }
    AddToRun(child, s, n);
    MarkDirty(child);
  } else {
    LateReset(child, s);
  }
  return child;
}

void Engine::LateReset(Node* node, const Stamp& s) {
  if (IsRegister(node->kind)) {
    if (node->reg->boundary < s) {
      CutRun(node, s);
    }
  } else if (node->kind == Kind::kObject) {
    KillOlder(node, s);
  }
  if (node->reset < s) {
    node->reset = s;
    MarkDirty(node);
  }
}

void Engine::AddToRun(Node* node, const Stamp& s, const Number& n) {
  Register& reg = *node->reg;
  const Kind kind = node->kind;
  // The common case: an integer increment that comes after every other entry of its blade's slot
  // (in_order_), on a counter whose slots are all integers. Its slot would append it and add it;
  // that can wait (Register, Materialize), only the visible total must move now. With
  // counter_slot_ttl a new slot must be scheduled as it appears, so that takes the full path.
  if (kind == Kind::kCounter && n.is_int && reg.all_int && in_order_ &&
      options_.counter_slot_ttl_ms == 0) {
    if (reg.pending.empty()) {
      reg.pending_ts0 = s.ts;
      reg.pending_seq0 = s.seq;
    }
    std::int64_t total;
    std::int64_t dts;
    const std::uint64_t dseq = s.seq - reg.pending_seq0;  // wrapping; fits if in int32 range
    if (reg.total.is_int && !__builtin_add_overflow(reg.total.i, n.i, &total) &&
        n.i >= std::numeric_limits<std::int16_t>::min() &&
        n.i <= std::numeric_limits<std::int16_t>::max() &&
        !__builtin_sub_overflow(s.ts, reg.pending_ts0, &dts) &&
        dts >= std::numeric_limits<std::int32_t>::min() &&
        dts <= std::numeric_limits<std::int32_t>::max() &&
        dseq + (std::uint64_t{1} << 31) < (std::uint64_t{1} << 32) &&
        s.blade->id <= std::numeric_limits<std::uint16_t>::max()) {
      reg.pending.push_back({static_cast<std::int32_t>(dts),
                             static_cast<std::int32_t>(static_cast<std::int64_t>(dseq)),
                             static_cast<std::uint16_t>(s.blade->id),
                             static_cast<std::int16_t>(n.i)});
      reg.total = Number::Int(total);
      const std::uint64_t mag = n.i < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(n.i)
                                        : static_cast<std::uint64_t>(n.i);
      if (__builtin_add_overflow(reg.abs_bound, mag, &reg.abs_bound)) {
        reg.abs_bound = std::numeric_limits<std::uint64_t>::max();
      }
      if (reg.abs_bound >= static_cast<std::uint64_t>(kBigInt)) {
        big_numbers_seen_ = true;  // some slot may be big: check overflows from now on
      }
      NoteMagnitude(reg.total);
      TrackRegister(node);
      return;
    }
  }
  Materialize(node);
  Slot* slot = nullptr;
  if (kind == Kind::kCounter) {
    slot = &SlotFor(reg, s.blade);
    if (options_.counter_slot_ttl_ms > 0 && slot->history.empty() && !slot->has_base) {
      ScheduleSlot(node, s.blade, s.ts);  // a new slot
    }
  } else {
    if (reg.slots.empty()) {
      reg.slots.emplace_back();
      reg.slots.back().value = n;
      reg.slots.back().value_stamp = s;
    }
    slot = &reg.slots.front();
  }
  // Keep the history ordered (seq for counters, stamp for max/min); appends are the common case.
  auto& h = slot->history;
  const bool append =
      h.empty() || (kind == Kind::kCounter ? h.back().seq() < s.seq : h.back().stamp() < s);
  if (append) {
    h.push_back({s, n});
    ++slot->unpersisted;
  } else {
    slot->rewrite = true;
    auto pos =
        kind == Kind::kCounter
            ? std::upper_bound(h.begin(), h.end(), s.seq,
                               [](std::uint64_t q, const RunEntry& e) { return q < e.seq(); })
            : std::upper_bound(h.begin(), h.end(), s,
                               [](const Stamp& q, const RunEntry& e) { return q < e.stamp(); });
    h.insert(pos, {s, n});
  }
  slot->dirty = true;
  if (kind == Kind::kCounter) {
    if (slot->last < s) {
      slot->last = s;
    }
    if (append) {
      slot->value = AddNumbers(slot->value, n);
    } else {
      RecomputeSlot(kind, *slot);
    }
    if (reg.all_int && n.is_int && slot->value.is_int) {
      reg.total = AddNumbers(reg.total, n);
      if (!reg.total.is_int) {
        RecomputeTotal(node);
      }
    } else {
      RecomputeTotal(node);
    }
    NoteMagnitude(slot->value);
    NoteMagnitude(reg.total);
  } else {
    if (Better(kind, n, s, slot->value, slot->value_stamp) || SameStamp(s, slot->value_stamp)) {
      slot->value = n;
      slot->value_stamp = s;
    }
    reg.total = slot->value;
  }
  TrackRegister(node);
}

void Engine::Materialize(Node* node) {
  Register& reg = *node->reg;
  if (reg.pending.empty()) {
    return;
  }
  // What AddToRun's full path does per increment, in the same order; the total already has them.
  // A register with many slots (one per blade writing to it) finds them by blade id in a table
  // filled for this call, instead of a probe of its index per increment (SlotFor). Only when
  // there are enough increments to pay for filling and clearing it.
  const std::size_t wide = reg.slots.size();
  const bool direct = wide > Register::kIndexFrom && reg.pending.size() * 4 >= wide;
  if (direct) {
    if (slot_by_blade_.size() < blades_by_id_.size()) {
      slot_by_blade_.resize(blades_by_id_.size(), 0);
    }
    for (std::size_t i = 0; i < wide; ++i) {
      slot_by_blade_[reg.slots[i].blade->id] = static_cast<std::uint32_t>(i + 1);
    }
  }
  for (std::size_t i = 0; i < reg.pending.size(); ++i) {
    const PendingInc& p = reg.pending[i];
    const Stamp stamp = PendingStamp(reg, p);
    Slot* at;
    if (direct) {
      std::uint32_t& pos = slot_by_blade_[p.blade];
      if (pos == 0) {
        SlotFor(reg, stamp.blade);  // a new slot, appended
        pos = static_cast<std::uint32_t>(reg.slots.size());
      }
      at = &reg.slots[pos - 1];
    } else {
      at = &SlotFor(reg, stamp.blade);
    }
    Slot& slot = *at;
    slot.history.push_back({stamp, Number::Int(p.amount)});
    ++slot.unpersisted;
    slot.dirty = true;
    if (slot.last < stamp) {
      slot.last = stamp;
    }
    slot.value = AddNumbers(slot.value, Number::Int(p.amount));
    NoteMagnitude(slot.value);
  }
  if (direct) {
    for (const Slot& sl : reg.slots) {
      slot_by_blade_[sl.blade->id] = 0;
    }
  }
  reg.pending.clear();
  std::uint64_t bound = 0;
  bool all_int = true;
  for (const Slot& sl : reg.slots) {
    if (sl.value.is_int) {
      const std::uint64_t mag = sl.value.i < 0
                                    ? std::uint64_t{0} - static_cast<std::uint64_t>(sl.value.i)
                                    : static_cast<std::uint64_t>(sl.value.i);
      bound = std::max(bound, mag);
    } else {
      all_int = false;
    }
  }
  reg.abs_bound = bound;
  if (!all_int) {
    RecomputeTotal(node);  // a slot left the integers (cannot happen while overflows are checked)
  }
}

void Engine::MaterializeAll() {
  for (Node* node : regs_with_history_) {
    Materialize(node);
  }
}

void Engine::NoteMagnitude(const Number& n) {
  if (n.is_int ? (n.i >= kBigInt || n.i <= -kBigInt) : std::fabs(n.d) >= kBigDouble) {
    big_numbers_seen_ = true;
  }
}

void Engine::RecomputeSlot(Kind kind, Slot& slot) {
  if (kind == Kind::kCounter) {
    // Integers accumulate in 128 bits: a gap filled late re-sums in seq order, and an
    // intermediate sum may leave the 64-bit range although the slot itself does not.
    Number v = slot.has_base ? slot.base : Number::Int(0);
    __extension__ __int128 wide = v.is_int ? v.i : 0;
    bool is_int = v.is_int;
    for (const RunEntry& e : slot.history) {
      const Number amount = e.amount();
      if (is_int && amount.is_int) {
        wide += amount.i;
        continue;
      }
      if (is_int) {
        v = Number::Double(static_cast<double>(wide));
        is_int = false;
      }
      v = Number::Double(v.d + amount.AsDouble());
    }
    if (is_int) {
      v = (wide >= std::numeric_limits<std::int64_t>::min() &&
           wide <= std::numeric_limits<std::int64_t>::max())
              ? Number::Int(static_cast<std::int64_t>(wide))
              : Number::Double(static_cast<double>(wide));
    }
    slot.value = v;
    return;
  }
  bool have = slot.has_base;
  Number best = slot.base;
  Stamp best_s = slot.base_stamp;
  for (const RunEntry& e : slot.history) {
    const Number amount = e.amount();
    const Stamp stamp = e.stamp();
    if (!have || Better(kind, amount, stamp, best, best_s)) {
      best = amount;
      best_s = stamp;
      have = true;
    }
  }
  slot.value = best;
  slot.value_stamp = best_s;
}

void Engine::RecomputeTotal(Node* node) {
  Register& reg = *node->reg;
  if (node->kind != Kind::kCounter) {
    reg.total = reg.slots.empty() ? Number::Int(0) : reg.slots.front().value;
    return;
  }
  bool all_int = true;
  for (const Slot& sl : reg.slots) {
    all_int = all_int && sl.value.is_int;
  }
  // Folded slots (counter_slot_ttl) are integers only; their sum comes first.
  Number t = reg.has_retired ? reg.retired : Number::Int(0);
  if (all_int) {
    for (const Slot& sl : reg.slots) {
      t = AddNumbers(t, sl.value);
    }
  } else {
    // Floating-point sums depend on order: slots are summed in blade byte order.
    std::vector<const Slot*> order;
    order.reserve(reg.slots.size());
    for (const Slot& sl : reg.slots) {
      order.push_back(&sl);
    }
    std::sort(order.begin(), order.end(),
              [](const Slot* a, const Slot* b) { return a->blade->name < b->blade->name; });
    for (const Slot* sl : order) {
      t = AddNumbers(t, sl->value);
    }
  }
  reg.total = t;
  reg.all_int = all_int;
}

Slot& Engine::SlotFor(Register& reg, const Blade* blade) {
  if (reg.slots.size() > Register::kIndexFrom) {
    auto it = reg.index.find(blade);
    if (it != reg.index.end()) {
      return reg.slots[it->second];
    }
  } else {
    for (Slot& sl : reg.slots) {
      if (sl.blade == blade) {
        return sl;
      }
    }
  }
  reg.slots.emplace_back();
  Slot& sl = reg.slots.back();
  sl.blade = blade;
  sl.value = Number::Int(0);
  if (reg.slots.size() > Register::kIndexFrom) {
    if (reg.index.empty()) {
      ReindexSlots(reg);
    } else {
      reg.index.emplace(blade, static_cast<std::uint32_t>(reg.slots.size() - 1));
    }
  }
  return sl;
}

void Engine::ReindexSlots(Register& reg) {
  reg.index.clear();
  if (reg.slots.size() > Register::kIndexFrom) {
    for (std::size_t i = 0; i < reg.slots.size(); ++i) {
      reg.index.emplace(reg.slots[i].blade, static_cast<std::uint32_t>(i));
    }
  }
}

void Engine::DropSlot(Node* node, Slot& slot) {
  if (!persistent_ || (!slot.persisted && slot.chunks.empty() && slot.deleted_chunks.empty())) {
    return;
  }
  DroppedSlot dropped;
  dropped.blade = slot.blade;
  for (const auto& [no, count] : slot.chunks) {
    dropped.chunks.push_back(no);
  }
  dropped.chunks.insert(dropped.chunks.end(), slot.deleted_chunks.begin(),
                        slot.deleted_chunks.end());
  node->dropped_slots.push_back(std::move(dropped));
  node->has_dropped = true;
  MarkDirty(node);
}

void Engine::DropFront(Slot& slot, std::size_t k) {
  if (slot.rewrite || !persistent_) {
    return;  // the whole history is rewritten at the next commit anyway
  }
  while (k > 0 && !slot.chunks.empty()) {
    auto& [no, count] = slot.chunks.front();
    const std::uint32_t avail = count - slot.front_skip;
    if (k >= avail) {
      k -= avail;
      slot.deleted_chunks.push_back(no);
      slot.chunks.erase(slot.chunks.begin());
      slot.front_skip = 0;
    } else {
      slot.front_skip += static_cast<std::uint32_t>(k);
      k = 0;
    }
  }
  LATTICE_DCHECK(k <= slot.unpersisted);
  slot.unpersisted -= static_cast<std::uint32_t>(k);
}

void Engine::CutRun(Node* node, const Stamp& s) {
  Materialize(node);
  Register& reg = *node->reg;
  reg.boundary = s;
  for (auto it = reg.slots.begin(); it != reg.slots.end();) {
    Slot& slot = *it;
    slot.has_base = false;
    if (slot.history.EraseIf([&](const RunEntry& e) { return e.stamp() < s; }) > 0) {
      slot.rewrite = true;
    }
    if (slot.history.empty()) {
      DropSlot(node, slot);
      it = reg.slots.erase(it);
      continue;
    }
    RecomputeSlot(node->kind, slot);
    if (node->kind == Kind::kCounter) {
      slot.last = Stamp{};
      for (const RunEntry& e : slot.history) {
        slot.last = MaxStamp(slot.last, e.stamp());
      }
    }
    slot.dirty = true;
    ++it;
  }
  reg.has_retired = false;  // folded slots are older than any reset inside the run
  reg.retired = Number::Int(0);
  ReindexSlots(reg);
  RecomputeTotal(node);
  MarkDirty(node);
}

void Engine::TrackRegister(Node* node) {
  if (node->reg->gc_index < 0) {
    node->reg->gc_index = static_cast<std::int32_t>(regs_with_history_.size());
    regs_with_history_.push_back(node);
  }
}

void Engine::UntrackRegister(Node* node) {
  const std::int32_t idx = node->reg->gc_index;
  if (idx < 0) {
    return;
  }
  Node* last = regs_with_history_.back();
  regs_with_history_[static_cast<std::size_t>(idx)] = last;
  last->reg->gc_index = idx;
  regs_with_history_.pop_back();
  node->reg->gc_index = -1;
}

void Engine::FoldRegister(Node* node, std::int64_t horizon) {
  Register& reg = *node->reg;
  bool pending_first = !reg.pending.empty();
  if (pending_first) {
    // The queued increments of a blade follow its slot's history: they can be folded straight
    // from the queue when no slot has history left (the common case), else they join it first.
    for (const Slot& slot : reg.slots) {
      if (!slot.history.empty()) {
        Materialize(node);
        pending_first = false;
        break;
      }
    }
  }
  bool any_history = false;
  if (pending_first) {
    FoldPending(node, horizon);
    any_history = !reg.pending.empty();
  } else {
    for (Slot& slot : reg.slots) {
      auto& h = slot.history;
      std::size_t k = 0;
      if (node->kind == Kind::kCounter) {
        // Fold the seq-ordered prefix that is final; the sum order stays the seq order.
        Number base = slot.has_base ? slot.base : Number::Int(0);
        while (k < h.size() && h[k].ts() < horizon) {
          base = AddNumbers(base, h[k].amount());
          ++k;
        }
        if (k > 0) {
          slot.base = base;
          slot.has_base = true;
        }
      } else {
        while (k < h.size() && h[k].ts() < horizon) {
          if (!slot.has_base ||
              Better(node->kind, h[k].amount(), h[k].stamp(), slot.base, slot.base_stamp)) {
            slot.base = h[k].amount();
            slot.base_stamp = h[k].stamp();
            slot.has_base = true;
          }
          ++k;
        }
      }
      if (k > 0) {
        h.erase(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(k));
        DropFront(slot, k);
        slot.dirty = true;
        MarkDirty(node);
      }
      any_history = any_history || !h.empty();
    }
  }
  if (!any_history) {
    UntrackRegister(node);
  }
}

void Engine::FoldPending(Node* node, std::int64_t horizon) {
  // The queue's prefix older than the horizon is final. Each blade's part of it is a prefix of
  // the blade's increments in seq order (and its slot has no history before them), so adding it
  // to the slot's base folds in seq order, as FoldRegister does with a history. Increments older
  // than the horizon behind a newer one stay queued until a later step: kept history is exact.
  Register& reg = *node->reg;
  auto& q = reg.pending;
  std::size_t k = 0;
  while (k < q.size() && PendingTs(reg, q[k]) < horizon) {
    ++k;
  }
  if (k == 0) {
    return;
  }
  // Each blade's amounts are summed first and its slot is touched once per fold instead of once
  // per increment, when that gives the same integers: no partial sum of the per-increment order
  // can overflow (|base| and |value| plus the sum of |amounts| fit in 63 bits). Slots are created
  // in the order their blades first appear in the queue, as the per-increment loop does.
  if (fold_sums_.size() < blades_by_id_.size()) {
    fold_sums_.resize(blades_by_id_.size());
  }
  fold_touched_.clear();
  for (std::size_t i = 0; i < k; ++i) {
    const PendingInc& p = q[i];
    FoldSum& f = fold_sums_[p.blade];
    const std::int64_t ts = PendingTs(reg, p);
    const std::uint64_t seq = PendingSeq(reg, p);
    if (!f.used) {
      f = FoldSum{};
      f.used = true;
      f.ts = ts;
      f.seq = seq;
      fold_touched_.push_back(p.blade);
    } else if (f.ts < ts || (f.ts == ts && f.seq < seq)) {
      f.ts = ts;  // one blade: stamps order by (ts, seq)
      f.seq = seq;
    }
    // Wrapping; exact when used (abs < 2^63 below).
    f.sum += static_cast<std::uint64_t>(static_cast<std::int64_t>(p.amount));
    f.abs += static_cast<std::uint64_t>(p.amount < 0 ? -std::int64_t{p.amount} : p.amount);
  }
  bool summed = true;
  for (std::uint32_t id : fold_touched_) {
    FoldSum& f = fold_sums_[id];
    Slot& slot = SlotFor(reg, blades_by_id_[id]);
    f.slot = static_cast<std::uint32_t>(&slot - reg.slots.data());
    constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (f.abs > kMax) {
      summed = false;
      continue;
    }
    for (const Number* x : {&slot.base, &slot.value}) {
      if (x == &slot.base && !slot.has_base) {
        continue;
      }
      const std::uint64_t mag = !x->is_int ? std::numeric_limits<std::uint64_t>::max()
                                : x->i < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(x->i)
                                           : static_cast<std::uint64_t>(x->i);
      if (mag > kMax - f.abs) {
        summed = false;
      }
    }
  }
  if (summed) {
    for (std::uint32_t id : fold_touched_) {
      FoldSum& f = fold_sums_[id];
      Slot& slot = reg.slots[f.slot];
      const Number amount = Number::Int(static_cast<std::int64_t>(f.sum));
      slot.base = AddNumbers(slot.has_base ? slot.base : Number::Int(0), amount);
      slot.has_base = true;
      slot.value = AddNumbers(slot.value, amount);
      const Stamp last{f.ts, slot.blade, f.seq};
      if (slot.last < last) {
        slot.last = last;
      }
      slot.dirty = true;
      NoteMagnitude(slot.value);
    }
  } else {
    for (std::size_t i = 0; i < k; ++i) {
      const Stamp stamp = PendingStamp(reg, q[i]);
      Slot& slot = SlotFor(reg, stamp.blade);
      const Number amount = Number::Int(q[i].amount);
      slot.base = AddNumbers(slot.has_base ? slot.base : Number::Int(0), amount);
      slot.has_base = true;
      slot.value = AddNumbers(slot.value, amount);
      if (slot.last < stamp) {
        slot.last = stamp;
      }
      slot.dirty = true;
      NoteMagnitude(slot.value);
    }
  }
  for (std::uint32_t id : fold_touched_) {
    fold_sums_[id].used = false;
  }
  q.pop_front(k);
  MarkDirty(node);
}

void Engine::AdvanceWatermark(std::int64_t watermark_ms) {
  if (options_.ttl_clock == TtlClock::kWallClock && has_ttl_) {
    ProcessTtl(std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count());
  }
  if (watermark_ms <= watermark_) {
    return;
  }
  watermark_ = watermark_ms;
  const std::int64_t horizon =
      watermark_ms < std::numeric_limits<std::int64_t>::min() + options_.allowed_lateness_ms
          ? std::numeric_limits<std::int64_t>::min()
          : watermark_ms - options_.allowed_lateness_ms;
  AdvanceHorizon(horizon);
}

void Engine::Close() {
  const std::int64_t w = std::max(watermark_, max_ts_);
  watermark_ = w;
  AdvanceHorizon(w);
}

void Engine::AdvanceHorizon(std::int64_t horizon) {
  if (horizon <= gc_horizon_) {
    return;
  }
  BuryDoomed();  // the tombstones, queues and registers below must not meet a doomed node
  gc_horizon_ = horizon;
  // TTL first: a cut keeps run entries newer than it, which must not be folded into a base yet.
  if (has_ttl_ && options_.ttl_clock == TtlClock::kEventTime) {
    ProcessTtl(horizon);
  }
  // Tombstones behind the horizon leave. Each is a miss on the node, on its list neighbours and
  // on its parent's index slot (thousands per commit, in the wide `intents`): fetched in two
  // stages, the node kNodeAhead tombstones ahead, then what unlinking it touches kLinksAhead
  // ahead (only for a live node: a reused or dead one's parent index may be gone).
  constexpr std::size_t kNodeAhead = 8;
  constexpr std::size_t kLinksAhead = 4;
  std::size_t due = 0;
  while (due < tombstones_.size() && tombstones_[due].first < horizon) {
    ++due;
  }
  for (std::size_t i = 0; i < due; ++i) {
    if (i + kNodeAhead < due) {
      const char* p = reinterpret_cast<const char*>(tombstones_[i + kNodeAhead].second.first);
      __builtin_prefetch(p);
      __builtin_prefetch(p + 64);
      __builtin_prefetch(p + 128);  // uid
    }
    if (i + kLinksAhead < due) {
      const auto [ahead, ahead_uid] = tombstones_[i + kLinksAhead].second;
      if (ahead->uid == ahead_uid && !ahead->dead && ahead->first_child == nullptr) {
        if (ahead->prev != nullptr) {
          __builtin_prefetch(ahead->prev, 1);
        }
        if (ahead->next != nullptr) {
          __builtin_prefetch(ahead->next, 1);
        }
        if (ahead->parent->has_index) {
          ahead->parent->index->prefetch(std::string_view(ahead->key));
        }
      }
    }
    auto [node, uid] = tombstones_[i].second;
    if (node->uid == uid && !node->dead && node->kind == Kind::kAbsent &&
        node->last.ts < horizon && node->first_child == nullptr) {
      Unlink(node);
      KillSubtree(node);
    }
  }
  tombstones_.erase(tombstones_.begin(), tombstones_.begin() + static_cast<std::ptrdiff_t>(due));
  for (std::size_t i = 0; i < regs_with_history_.size();) {
    Node* node = regs_with_history_[i];
    FoldRegister(node, horizon);
    if (i < regs_with_history_.size() && regs_with_history_[i] == node) {
      ++i;
    }
  }
  if (options_.counter_slot_ttl_ms > 0) {
    ProcessSlots(horizon);
  }
  if (options_.blade_ttl_ms > 0) {
    ProcessBlades(horizon);
  }
}

// ---------------------------------------------------------------------------------------------
// TTL (DESIGN.md §4; docs/merge-rules.md, "TTL eviction")

void Engine::BuildPatterns() {
  has_ttl_ = !options_.ttl.empty();
  if (!has_ttl_) {
    return;
  }
  // A deterministic automaton over rule positions (rule, depth), built eagerly: patterns are few
  // and short. States are interned by their position set.
  using Positions = std::vector<std::pair<std::uint32_t, std::uint32_t>>;
  std::map<Positions, PatternState*> index;
  const auto& rules = options_.ttl;
  std::function<PatternState*(Positions)> state_for = [&](Positions pos) -> PatternState* {
    std::sort(pos.begin(), pos.end());
    pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
    if (pos.empty()) {
      return nullptr;
    }
    if (auto it = index.find(pos); it != index.end()) {
      return it->second;
    }
    patterns_.push_back(std::make_unique<PatternState>());
    PatternState* st = patterns_.back().get();
    index.emplace(pos, st);
    std::vector<std::string> keys;
    Positions other;
    for (const auto& [r, d] : pos) {
      const TtlRule& rule = rules[r];
      if (d == rule.pattern.size()) {
        if (st->duration == 0 || rule.duration_ms < st->duration) {
          st->duration = rule.duration_ms;
        }
        continue;
      }
      if (rule.pattern[d] == "*") {
        other.emplace_back(r, d + 1);
      } else {
        keys.push_back(rule.pattern[d]);
      }
    }
    for (const std::string& key : keys) {
      Positions next = other;
      for (const auto& [r, d] : pos) {
        if (d < rules[r].pattern.size() && rules[r].pattern[d] == key) {
          next.emplace_back(r, d + 1);
        }
      }
      PatternState* to = state_for(std::move(next));
      st->by_key.emplace(key, to);
    }
    st->other = state_for(std::move(other));
    return st;
  };
  Positions start;
  for (std::uint32_t r = 0; r < rules.size(); ++r) {
    start.emplace_back(r, 0);
  }
  root_->pstate = state_for(std::move(start));
}

void Engine::NoteTtlWrite(Node* node, std::int64_t ts) {
  TtlState& t = *node->ttl;
  MarkDirty(node);
  if (!t.has_newest) {
    t.newest = ts;
    t.has_newest = true;
    ScheduleTtl(node);
    return;
  }
  if (ts > t.newest) {
    // The common case, a write in ts order. The previous newest is dropped if it lies within the
    // duration of its predecessor (TtlState): ts - older_back <= duration, computed unsigned
    // because ts > older_back.
    if (!t.older.empty() &&
        static_cast<std::uint64_t>(ts) - static_cast<std::uint64_t>(t.older_back) <=
            static_cast<std::uint64_t>(t.duration)) {
      t.newest = ts;
    } else {
      t.older.push_back(t.newest);
      t.older_back = t.newest;
      t.newest = ts;
    }
    // The front, and so the node's next key (NextTtlKey), did not change: while the node has a
    // queue entry, its key is at most that (ScheduleTtl would do nothing).
    if (t.queued == TtlState::kNone) {
      ScheduleTtl(node);
    }
    return;
  }
  if (ts != t.newest) {
    auto it = std::lower_bound(t.older.begin(), t.older.end(), ts);
    if (it == t.older.end() || *it != ts) {
      t.older.insert(it, ts);
      t.older_back = t.older.back();
    }
  }
  ScheduleTtl(node);
}

void Engine::ScheduleTtl(Node* node) {
  TtlState& t = *node->ttl;
  const std::int64_t key = NextTtlKey(t);
  if (key == TtlState::kNone) {
    return;
  }
  if (!t.has_newest && node->kind == Kind::kAbsent && node->first_child == nullptr) {
    // An erased node with nothing pending: its whole eviction would only remove a tombstone,
    // which AdvanceHorizon's tombstone queue does when the horizon passes it (before `key`), and
    // any later write under it schedules it again. Queued, it stayed in the heap as a stale entry
    // for the whole duration (an hour of erased intents in the bench recording: a heap of 10 MB).
    return;
  }
  if (t.queued == TtlState::kNone || key < t.queued) {
    t.queued = key;
    ttl_queue_.push({key, node, node->uid, nullptr});
  }
}

void Engine::ProcessTtl(std::int64_t horizon) {
  while (!ttl_queue_.empty() && ttl_queue_.top().key <= horizon) {
    const QueueEntry e = ttl_queue_.top();
    ttl_queue_.pop();
    ++counts_.ttl_visits;
    Node* node = e.node;
    if (node->uid != e.uid || node->dead || !node->ttl || node->ttl->queued != e.key) {
      continue;  // stale: the node is gone or has a newer entry
    }
    node->ttl->queued = TtlState::kNone;
    DecideTtl(node, horizon);
    if (node->uid == e.uid && !node->dead && node->ttl) {
      ScheduleTtl(node);
    }
  }
}

void Engine::DecideTtl(Node* node, std::int64_t horizon) {
  TtlState& t = *node->ttl;
  const std::int64_t d = t.duration;
  // Gaps between consecutive writes that the horizon has passed are final: a gap longer than the
  // duration evicted the subtree just before the write that ends it (§4), which leaves exactly
  // what is at least as new as that write. Only the last such gap matters.
  std::int64_t prev = t.final_ts;
  std::int64_t cut = TtlState::kNone;
  const auto step = [&](std::int64_t b) {
    if (prev != TtlState::kNone && b - prev > d) {
      cut = b;
    }
    prev = b;
  };
  std::size_t k = 0;
  while (k < t.older.size() && t.older[k] <= horizon) {
    step(t.older[k]);
    ++k;
  }
  const bool took_newest = k == t.older.size() && t.has_newest && t.newest <= horizon;
  if (took_newest) {
    step(t.newest);
    t.has_newest = false;
  }
  if (k > 0) {
    t.older.erase(t.older.begin(), t.older.begin() + static_cast<std::ptrdiff_t>(k));
    if (!t.older.empty()) {
      t.older_back = t.older.back();
    }
  }
  if (k > 0 || took_newest) {
    t.final_ts = prev;
    MarkDirty(node);
  }
  if (cut != TtlState::kNone) {
    EvictOlder(node, cut);
  }
  const std::int64_t newest = t.has_newest ? t.newest : t.final_ts;
  if (newest != TtlState::kNone && newest <= std::numeric_limits<std::int64_t>::max() - d &&
      horizon > newest + d) {
    EvictWhole(node, newest + d + 1);
  }
}

void Engine::EvictOlder(Node* node, std::int64_t cut_ts) {
  std::optional<std::string> before;
  if (feed_) {
    before = VisibleJson(node);
  }
  const Stamp cut{cut_ts, nullptr, 0};
  if (IsRegister(node->kind)) {
    if (node->reg->boundary < cut) {
      CutRun(node, cut);
    }
  } else if (node->kind == Kind::kObject) {
    KillOlder(node, cut);
  }
  ++counts_.evicted;
  if (feed_) {
    Emit(node, std::move(before), VisibleJson(node), cut, ChangeCause::kEvict);
  }
}

void Engine::EvictWhole(Node* node, std::int64_t due_ts) {
  std::optional<std::string> before;
  if (feed_) {
    before = VisibleJson(node);
    if (before) {
      Emit(node, std::move(before), std::nullopt, Stamp{due_ts, nullptr, 0}, ChangeCause::kEvict);
    }
  }
  // A stored subtree goes with one range delete per column family (its path is a key prefix);
  // the dead nodes below are only freed, and their index entries deleted, by the next commit.
  // Nothing below a node that was never stored is stored either.
  const bool range = persistent_ && node->persisted;
  if (range) {
    std::string key;
    AppendKey(node, key);
    subtree_deletes_.push_back(std::move(key));
  }
  Unlink(node);
  covering_ = range;
  KillSubtree(node);
  covering_ = false;
  ++counts_.evicted;
}

void Engine::ScheduleSlot(Node* node, const Blade* blade, std::int64_t ts) {
  const std::int64_t ttl = options_.counter_slot_ttl_ms;
  const std::int64_t key =
      ts > std::numeric_limits<std::int64_t>::max() - ttl - 1 ? std::numeric_limits<std::int64_t>::max()
                                                              : ts + ttl + 1;
  slot_queue_.push({key, node, node->uid, blade});
}

void Engine::ProcessSlots(std::int64_t horizon) {
  const std::int64_t ttl = options_.counter_slot_ttl_ms;
  while (!slot_queue_.empty() && slot_queue_.top().key <= horizon) {
    const QueueEntry e = slot_queue_.top();
    slot_queue_.pop();
    Node* node = e.node;
    if (node->uid != e.uid || node->dead || node->kind != Kind::kCounter) {
      continue;
    }
    Materialize(node);
    Register& reg = *node->reg;
    auto it = std::find_if(reg.slots.begin(), reg.slots.end(),
                           [&](const Slot& sl) { return sl.blade == e.blade; });
    if (it == reg.slots.end()) {
      continue;  // cut away; a new slot schedules itself
    }
    Slot& slot = *it;
    if (!slot.value.is_int || !reg.all_int) {
      continue;  // floating-point slots are never folded (their sum order is part of the value)
    }
    if (!slot.history.empty() || slot.last.ts > horizon - ttl - 1) {
      ScheduleSlot(node, e.blade, slot.last.ts);  // touched since: look again later
      continue;
    }
    const Number retired = AddNumbers(reg.has_retired ? reg.retired : Number::Int(0), slot.value);
    if (!retired.is_int) {
      continue;
    }
    reg.retired = retired;
    reg.has_retired = true;
    DropSlot(node, slot);
    reg.slots.erase(it);
    ReindexSlots(reg);
    MarkDirty(node);
    ++counts_.folded_slots;
  }
}

void Engine::ProcessBlades(std::int64_t horizon) {
  const std::int64_t ttl = options_.blade_ttl_ms;
  if (horizon < std::numeric_limits<std::int64_t>::min() + ttl) {
    return;
  }
  for (Blade* blade : blades_by_id_) {
    if (blade != nullptr && blade->ring_count > 0 && blade->last_ts < horizon - ttl) {
      // Idle for blade_ttl: keep only the last seq; every seq up to it is a duplicate now.
      blade->has_evicted = true;
      blade->evicted_max = std::max(blade->evicted_max, blade->last_seq);
      blade->ring_count = 0;
      blade->ring_next = 0;
      if (!blade->dirty && persistent_) {
        blade->dirty = true;
        dirty_blades_.push_back(blade);
      }
    }
  }
}

}  // namespace lattice::crdt::internal
