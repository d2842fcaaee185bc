// The merge engine's internals: the path trie with per-node stamps, registers with per-blade
// slots, the blade table, and the hooks the StateStore uses to persist and restore them.
//
// The rules it implements (DESIGN.md §3), per path p, with every event at p or at an ancestor:
//  * p's own events are SET (scalar), ERASE (null), ENSURE (an object value, explicit `{}` or
//    implied by any write below p) and OP ($inc/$max/$min). A SET, ERASE or OP at an ancestor
//    kills p like an erase would.
//  * p's visible state is decided by its newest event: SET -> that scalar; ERASE or an ancestor
//    kill -> absent; ENSURE -> an object; OP -> a register folded over the trailing run of
//    same-kind OPs (the run ends at the newest other event at p or kill from above).
// Each node keeps `last` (its newest own event, which is also the newest stamp in its subtree,
// since every write below implies an ENSURE here) and `reset` (its newest SET/ERASE/OP, which
// kills everything below that is older). A write is dominated when it is older than the `reset`
// of any ancestor. A register keeps its run as per-blade slots with the entries since `boundary`,
// so a late event inside the run cuts it exactly; entries older than the GC horizon are folded into
// a base, and tombstones older than it are dropped (DESIGN.md §3.1).
#pragma once

#include <absl/container/flat_hash_map.h>
// Inlined: keys are short, and a call into the shared library costs as much as the hash.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "lattice/core/json_text.h"
#include "lattice/core/path.h"
#include "lattice/core/shard.h"
#include "lattice/crdt/types.h"

namespace lattice::crdt::internal {

/// One emitting blade: its name, its id in the store, and what was applied of it.
struct Blade {
  static constexpr int kRing = 64;
  std::string name;
  std::uint32_t id = 0;
  bool has_seq = false;
  std::uint64_t last_seq = 0;
  /// The most recently applied (seq, body hash) pairs, to tell a redelivery from a conflict.
  std::array<std::pair<std::uint64_t, std::uint64_t>, kRing> ring{};
  int ring_count = 0;  // entries used (<= kRing)
  int ring_next = 0;   // where the next entry goes
  /// The largest seq that left the ring: every applied seq above it is in the ring.
  bool has_evicted = false;
  std::uint64_t evicted_max = 0;
  bool dirty = false;
  std::int64_t last_ts = std::numeric_limits<std::int64_t>::min();  // newest ts applied (blade_ttl)
};

/// The stamp (ts, blade, seq) that orders shards; ordered lexicographically, blade by bytes.
struct Stamp {
  std::int64_t ts = std::numeric_limits<std::int64_t>::min();
  const Blade* blade = nullptr;
  std::uint64_t seq = 0;
};

inline bool operator<(const Stamp& a, const Stamp& b) {
  if (a.ts != b.ts) {
    return a.ts < b.ts;
  }
  if (a.blade != b.blade) {
    if (a.blade == nullptr) {
      return true;
    }
    if (b.blade == nullptr) {
      return false;
    }
    return a.blade->name < b.blade->name;
  }
  return a.seq < b.seq;
}
inline bool operator>(const Stamp& a, const Stamp& b) { return b < a; }
inline const Stamp& MaxStamp(const Stamp& a, const Stamp& b) { return a < b ? b : a; }

enum class Kind : std::uint8_t { kAbsent = 0, kObject, kScalar, kCounter, kMax, kMin };

inline bool IsRegister(Kind k) { return k == Kind::kCounter || k == Kind::kMax || k == Kind::kMin; }

/// Where the write that set a node's `last` came from: an interned source (id + 1; 0 = unknown)
/// and the position in it.
struct Origin {
  std::uint32_t source = 0;
  std::uint64_t offset = 0;
  std::uint64_t line = 0;
};

/// A node that a TTL rule matches (DESIGN.md §4): when its subtree was written, in event time.
///
/// The pending writes (newer than final_ts, ascending) are `older` followed by `newest`. Only
/// gaps longer than `duration` between consecutive writes decide anything (§4), so a write whose
/// two neighbours are at most `duration` apart can never start or end such a gap, whatever
/// arrives later (a later write only splits a gap): it is dropped. Writes in ts order therefore
/// only move `newest` while they are within `duration` of the last entry of `older`; `older`
/// grows by one entry per gap longer than the duration (plus late writes), not per write.
struct TtlState {
  static constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::min();
  std::int64_t duration = 0;  // the rule's (the shortest of the rules that match)
  /// The newest write ts whose gap to its predecessor has been decided (final), or kNone.
  std::int64_t final_ts = kNone;
  std::int64_t newest = 0;      // the newest pending write, if has_newest
  std::int64_t older_back = 0;  // a copy of older.back() when older is not empty (no cache miss)
  bool has_newest = false;      // false: nothing is pending (and `older` is empty)
  std::int64_t queued = kNone;  // the key of this node's current entry in Engine::ttl_queue_
  /// The due time of this node's entry in the store's `expiry` column family (kNone: no entry).
  /// CollectChanges() keeps it equal to NextTtlKey() of the committed state.
  std::int64_t indexed = kNone;
  std::vector<std::int64_t> older;  // pending writes before `newest`, ascending, distinct

  std::size_t pending_size() const { return older.size() + (has_newest ? 1 : 0); }
  template <typename F>
  void ForEachPending(F f) const {
    for (std::int64_t ts : older) {
      f(ts);
    }
    if (has_newest) {
      f(newest);
    }
  }
  /// Replaces the pending writes by `all` (ascending, distinct).
  void SetPending(std::vector<std::int64_t> all) {
    has_newest = !all.empty();
    if (has_newest) {
      newest = all.back();
      all.pop_back();
    }
    older = std::move(all);
    if (!older.empty()) {
      older_back = older.back();
    }
  }
};

/// When the node's TTL state must next be looked at (kNone: never): the oldest pending write,
/// whose gap is decided once the lateness horizon reaches it, or else the time the whole subtree
/// is due (the horizon past newest + duration).
inline std::int64_t NextTtlKey(const TtlState& t) {
  if (t.has_newest) {
    return t.older.empty() ? t.newest : t.older.front();
  }
  if (t.final_ts == TtlState::kNone) {
    return TtlState::kNone;
  }
  return t.final_ts > std::numeric_limits<std::int64_t>::max() - t.duration - 1
             ? std::numeric_limits<std::int64_t>::max()
             : t.final_ts + t.duration + 1;
}

/// One operator application inside a register's run: its stamp and amount, in 32 bytes (a
/// Stamp and a core::Number took 48). Histories hold every entry of the lateness window, and
/// each entry is copied again into the commit that writes it: their memory was the merge
/// thread's largest source of page faults after the node slabs. The amount's kind is the low
/// bit of the blade pointer (blades are aligned).
class RunEntry {
 public:
  RunEntry() = default;
  RunEntry(const Stamp& s, const core::Number& n)
      : ts_(s.ts),
        seq_(s.seq),
        blade_(reinterpret_cast<std::uintptr_t>(s.blade) | (n.is_int ? 1 : 0)) {
    if (n.is_int) {
      bits_ = static_cast<std::uint64_t>(n.i);
    } else {
      std::memcpy(&bits_, &n.d, sizeof bits_);
    }
  }
  Stamp stamp() const { return {ts_, blade(), seq_}; }
  std::int64_t ts() const { return ts_; }
  std::uint64_t seq() const { return seq_; }
  core::Number amount() const {
    if ((blade_ & 1) != 0) {
      return core::Number::Int(static_cast<std::int64_t>(bits_));
    }
    double d;
    std::memcpy(&d, &bits_, sizeof d);
    return core::Number::Double(d);
  }

 private:
  const Blade* blade() const { return reinterpret_cast<const Blade*>(blade_ & ~std::uintptr_t{1}); }
  std::int64_t ts_ = 0;
  std::uint64_t seq_ = 0;
  std::uintptr_t blade_ = 1;  // the stamp's blade | (amount is an integer)
  std::uint64_t bits_ = 0;    // the integer, or the double's bits
};
static_assert(sizeof(RunEntry) == 32);
static_assert(alignof(Blade) >= 2);

/// A vector whose front can be dropped in O(1): a slot's run entries, a counter's queued
/// increments. Folding drops a prefix at each horizon step; erasing it from a plain vector moved
/// (read and wrote) the whole rest. The dropped prefix is reclaimed when the vector would
/// otherwise grow.
template <typename T>
class HeadVector {
 public:
  std::size_t size() const { return v_.size() - head_; }
  bool empty() const { return v_.size() == head_; }
  T& operator[](std::size_t i) { return v_[head_ + i]; }
  const T& operator[](std::size_t i) const { return v_[head_ + i]; }
  T* begin() { return v_.data() + head_; }
  T* end() { return v_.data() + v_.size(); }
  const T* begin() const { return v_.data() + head_; }
  const T* end() const { return v_.data() + v_.size(); }
  T& back() { return v_.back(); }
  const T& back() const { return v_.back(); }
  void push_back(const T& e) {
    if (head_ > 0 && v_.size() == v_.capacity()) {
      MakeRoom();
    }
    v_.push_back(e);
  }
  void insert(const T* pos, const T& e) { v_.insert(v_.begin() + (pos - v_.data()), e); }
  /// Removes [first, last); a prefix costs O(1).
  void erase(const T* first, const T* last) {
    if (first == begin()) {
      head_ += static_cast<std::size_t>(last - first);
      if (head_ == v_.size()) {
        clear();
      }
      return;
    }
    v_.erase(v_.begin() + (first - v_.data()), v_.begin() + (last - v_.data()));
  }
  template <typename Pred>
  std::size_t EraseIf(Pred pred) {
    Compact();
    return std::erase_if(v_, pred);
  }
  void clear() {
    v_.clear();
    head_ = 0;
  }

 private:
  void Compact() {
    v_.erase(v_.begin(), v_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  // Full, with a dropped prefix: moves the live entries to the front if the prefix is at least
  // half their number, else into twice the capacity. Either way an append costs at most two
  // moves amortized (compacting whenever any prefix was dropped cost a move of every live entry
  // per dropped one).
  void MakeRoom() {
    if (head_ * 2 >= size()) {
      Compact();
      return;
    }
    std::vector<T> bigger;
    bigger.reserve(v_.capacity() * 2);
    bigger.insert(bigger.end(), v_.begin() + static_cast<std::ptrdiff_t>(head_), v_.end());
    v_.swap(bigger);
    head_ = 0;
  }
  std::vector<T> v_;
  std::size_t head_ = 0;  // entries before it were dropped
};
using History = HeadVector<RunEntry>;

/// A counter's per-blade slot, or the single slot of a max/min register (blade == nullptr).
///
/// Persistence: the slot record holds the base; the history is stored append-only in chunks (one
/// per commit that added entries), so a commit writes only what is new, never the whole history.
struct Slot {
  // Hot fields first (one cache line): every $inc reads and writes these.
  const Blade* blade = nullptr;
  History history;        // counters: in seq order; max/min: in stamp order
  core::Number value;     // counters: base then history summed in seq order; max/min: the best
  std::uint32_t unpersisted = 0;  // entries at the end of `history` in no chunk yet
  bool dirty = false;
  bool rewrite = false;           // history changed in the middle: rewrite it as one chunk
  bool persisted = false;
  bool has_base = false;
  // Cold fields.
  core::Number base;      // counters: the folded sum; max/min: the folded best
  Stamp base_stamp;       // max/min: stamp of the folded best
  Stamp value_stamp;      // max/min: stamp of the best
  Stamp last;             // counters: the newest entry applied to this slot (provenance)
  // The persisted chunks (commit number, entries) covering `history` in order; the first
  // `front_skip` entries of the first chunk were folded since.
  std::vector<std::pair<std::uint64_t, std::uint32_t>> chunks;  // few: commits in the window
  std::uint32_t front_skip = 0;
  std::vector<std::uint64_t> deleted_chunks;  // fully folded chunks to delete
};

/// A slot that was removed while persisted: its records must be deleted at the next commit.
struct DroppedSlot {
  const Blade* blade = nullptr;
  std::vector<std::uint64_t> chunks;
};

/// An integer $inc not yet appended to its blade's slot (see Engine::AddToRun): its ts and seq as
/// signed offsets from its queue's base (Register::pending_ts0 / pending_seq0: the stamp of the
/// increment that went into the empty queue), its blade as its id (Blade::id), its amount. 12
/// bytes (24 in session 5, 32 before): a counter's queue holds the whole lateness window of its
/// increments, far more than the cache, so every line of it is a miss when written and when
/// folded. An increment whose offsets, blade id or amount do not fit takes the full path (which
/// empties the queue, so the next one starts a new base).
struct PendingInc {
  std::int32_t dts;
  std::int32_t dseq;
  std::uint16_t blade;  // Blade::id
  std::int16_t amount;
};
static_assert(sizeof(PendingInc) == 12);

/// A FIFO queue in a ring of power-of-two capacity: appends and dropping a prefix move nothing
/// (a counter's queue holds minutes of increments and drops the oldest at every horizon step).
template <typename T>
class Ring {
  static_assert(std::is_trivially_default_constructible_v<T>);

 public:
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return buf_[(head_ + i) & (capacity_ - 1)]; }
  const T& operator[](std::size_t i) const { return buf_[(head_ + i) & (capacity_ - 1)]; }
  void push_back(const T& e) {
    if (size_ == capacity_) {
      Grow();
    }
    buf_[(head_ + size_) & (capacity_ - 1)] = e;
    ++size_;
  }
  /// Drops the first k entries (k <= size()).
  void pop_front(std::size_t k) {
    size_ -= k;
    head_ = size_ == 0 ? 0 : (head_ + k) & (capacity_ - 1);
  }
  void clear() {
    size_ = 0;
    head_ = 0;
  }

 private:
  // The new buffer is not initialized: only the entries moved into it are written (zeroing it
  // first wrote every line of it, cold by the time the queue reaches its far half).
  [[gnu::noinline]] void Grow() {
    const std::size_t capacity = capacity_ == 0 ? 16 : capacity_ * 2;
    auto bigger = std::make_unique_for_overwrite<T[]>(capacity);
    for (std::size_t i = 0; i < size_; ++i) {
      bigger[i] = (*this)[i];
    }
    buf_ = std::move(bigger);
    capacity_ = capacity;
    head_ = 0;
  }
  std::unique_ptr<T[]> buf_;
  std::size_t capacity_ = 0;  // a power of two (or 0)
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

/// The run of a counter or max/min register.
///
/// Integer increments that arrive in their blade's seq order (the common case) only update
/// `total` and are queued in `pending`, one queue per counter in arrival order: it is the history
/// of those increments. Folding at a horizon step moves its final prefix straight into the slots'
/// bases (Engine::FoldPending); Engine::Materialize() appends it to the slots' histories before
/// anything else reads the slots (a cut, a commit, blame, an overflow check, an increment out of
/// its blade's order). A slot lives in a different cache line per blade and its history in
/// another: touching both per $inc cost two cache misses, and appending to 64 histories per
/// counter and reading them back at the fold two more per increment; the queue is appended and
/// read sequentially.
struct Register {
  core::Number total;        // the visible value (pending increments included)
  bool all_int = true;       // counters: every slot is an integer
  bool has_retired = false;  // counters: slots folded after counter_slot_ttl (DESIGN.md §4)
  std::int32_t gc_index = -1;  // position in Engine::regs_with_history_, or -1
  /// Counters: in arrival order (each blade's in seq order), newer in its blade's seq than every
  /// entry of the blade's slot history.
  Ring<PendingInc> pending;
  std::int64_t pending_ts0 = 0;    // the base of the entries' ts (see PendingInc)
  std::uint64_t pending_seq0 = 0;  // the base of their seq (wrapping)
  /// Counters: an upper bound of |value| of every slot with the pending increments applied
  /// (saturating), so that big numbers are noticed without materializing (NoteMagnitude).
  std::uint64_t abs_bound = 0;
  Stamp boundary;           // the newest non-run event before the run
  std::vector<Slot> slots;  // in arrival order; `index` finds a blade's slot when there are many
  absl::flat_hash_map<const Blade*, std::uint32_t> index;  // built when slots > kIndexFrom
  core::Number retired;  // counters: the sum of the slots folded after counter_slot_ttl
  static constexpr std::size_t kIndexFrom = 8;
};

/// Whether the `n` bytes at `a` and `b` are equal. Keys are short: up to 16 bytes this is two
/// overlapping loads per side and no call (memcmp was ~5% of the merge's instructions).
[[gnu::always_inline]] inline bool SameBytes(const char* a, const char* b, std::size_t n) {
  if (n >= 8) {
    if (n > 16) {
      return std::memcmp(a, b, n) == 0;
    }
    std::uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 8);
    std::memcpy(&b0, b, 8);
    std::memcpy(&a1, a + n - 8, 8);
    std::memcpy(&b1, b + n - 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  if (n >= 4) {
    std::uint32_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 4);
    std::memcpy(&b0, b, 4);
    std::memcpy(&a1, a + n - 4, 4);
    std::memcpy(&b1, b + n - 4, 4);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  // 0 to 3 bytes: the first, middle and last byte are all of them.
  return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

// Heterogeneous lookup by std::string_view (Debian's Abseil does not alias std::string_view).
//
// Keys of up to 16 bytes (almost all) are hashed like wyhash's short input: two overlapping
// loads, one 64x64->128-bit multiply, the halves xored. ~12 instructions where the XXH3 call cost
// ~30; Abseil takes its control bits from the low 7 bits and the probe start from the rest, which
// the multiply mixes. No hash of these maps is stored or iterated in hash order. (The product is
// 0 only if the first word equals the constant, whose bytes are not valid UTF-8, which every key
// is; so no key collapses the hash.)
/// A lookup of `key` in a child index that compares no key: each slot whose control byte
/// matches has its child's first two lines prefetched, and the lookup finds nothing
/// (Engine::PrefetchChild). The slot's key points into its node (keys of up to 15 bytes).
struct PrefetchProbe {
  std::string_view key;
};
struct NameHash {
  using is_transparent = void;
  [[gnu::always_inline]] std::size_t operator()(const PrefetchProbe& p) const {
    return (*this)(p.key);
  }
  [[gnu::always_inline]] std::size_t operator()(std::string_view s) const {
    const char* p = s.data();
    const std::size_t n = s.size();
    std::uint64_t a, b;
    if (n >= 8) {
      if (n > 16) {
        return XXH3_64bits(p, n);
      }
      std::memcpy(&a, p, 8);
      std::memcpy(&b, p + n - 8, 8);
    } else if (n >= 4) {
      std::uint32_t a0, b0;
      std::memcpy(&a0, p, 4);
      std::memcpy(&b0, p + n - 4, 4);
      a = a0;
      b = b0;
    } else {
      a = n == 0 ? 0
                 : (std::uint64_t{static_cast<unsigned char>(p[0])} << 16) |
                       (std::uint64_t{static_cast<unsigned char>(p[n / 2])} << 8) |
                       std::uint64_t{static_cast<unsigned char>(p[n - 1])};
      b = 0;
    }
    __extension__ using U128 = unsigned __int128;
    const U128 m = U128{a ^ 0xa0761d6478bd642full} * U128{b ^ 0xe7037ed1a0b428dbull ^ n};
    return static_cast<std::size_t>(static_cast<std::uint64_t>(m) ^
                                    static_cast<std::uint64_t>(m >> 64));
  }
};
struct NameEq {
  using is_transparent = void;
  [[gnu::always_inline]] bool operator()(std::string_view a, std::string_view b) const {
    return a.size() == b.size() && SameBytes(a.data(), b.data(), a.size());
  }
  [[gnu::always_inline]] bool operator()(std::string_view b, const PrefetchProbe&) const {
    __builtin_prefetch(b.data());
    __builtin_prefetch(b.data() + 64);
    return false;
  }
};

/// A state of the automaton that matches paths against the TTL rules' patterns: the rule
/// positions a path can be at. A node keeps the state its path reached (nullptr: no rule can match
/// it or anything under it).
struct PatternState {
  std::int64_t duration = 0;  // > 0: paths in this state match a rule (the shortest duration)
  absl::flat_hash_map<std::string, PatternState*, NameHash, NameEq> by_key;  // keys some pattern names
  PatternState* other = nullptr;                           // any other key ("*" only)
};

// Laid out for the path walk and for churn (nodes created, killed and reused from the free
// list). A child scan reads `key` and `next` (line 0); a step into a node reads its kind, stamps
// and register (lines 0 and 1), and so does killing a subtree, so a killed node comes back from
// the free list with lines 0 and 1 in cache. Creating a node and its first write touch lines 0-2
// only (line 2: uid, origin, scalar); line 3 holds what only indexed parents, TTL rules,
// persistence and paging use, behind the `has_index` / `has_ttl` bits of line 0. Aligned so that
// lines 0 and 1 are one 128-byte pair (adjacent-line prefetch).
struct alignas(128) Node {
  // Cache line 0: what a lookup by key reads.
  std::string key;
  Node* next = nullptr;
  Node* first_child = nullptr;
  std::uint32_t child_count = 0;
  Kind kind = Kind::kAbsent;
  bool dirty : 1 = false;
  bool persisted : 1 = false;
  bool dead : 1 = false;
  bool has_index : 1 = false;  // `index` is set
  bool has_ttl : 1 = false;    // `ttl` is set
  bool has_dropped : 1 = false;  // `dropped_slots` is not empty
  Node* parent = nullptr;
  // Cache line 1: what a write at the node reads and updates.
  Stamp last;
  Stamp reset;
  std::unique_ptr<Register> reg;
  Node* prev = nullptr;
  // Cache line 2: written by every creation and by every write (origin), read by queue checks.
  std::uint64_t uid = 0;  // changes on every reuse of this memory
  Origin origin;          // where the write that set `last` came from
  std::string scalar;     // kScalar: canonical JSON (stale, and never read, for other kinds)
  // Cache line 3: cold.
  std::unique_ptr<TtlState> ttl;  // set on nodes a TTL rule matches (has_ttl)
  /// Children by key, kept only while there are more than kIndexFrom (else a scan is faster).
  std::unique_ptr<absl::flat_hash_map<std::string_view, Node*, NameHash, NameEq>> index;
  static constexpr std::uint32_t kIndexFrom = 8;
  const PatternState* pstate = nullptr;  // TTL rules: where this path stands in the patterns
  /// Persisted slots of a dropped or cut register, to delete at the next commit.
  std::vector<DroppedSlot> dropped_slots;
  // Paging (Engine::EnablePaging; only page roots, the nodes at the page depth, use these).
  std::uint64_t page_commit = 0;  // the last commit that wrote a record under this page root
  bool in_clock = false;          // has an entry in Engine::pages_
  bool page_touched = false;      // written or faulted in since the clock last passed it

  /// Drops the child index, without reading line 3 when there is none.
  void DropIndex() {
    if (has_index) {
      index.reset();
      has_index = false;
    }
  }
};
static_assert(sizeof(Node) == 256);

/// A page root whose subtree is not in memory ("paged out", a stub): it keeps its own fields and
/// its child count, but no children (see Engine::EnablePaging).
inline bool IsPaged(const Node* n) { return n->first_child == nullptr && n->child_count != 0; }

class Engine;

/// Reads the records under a paged-out node back from the store (Engine::EnablePaging).
class PageSource {
 public:
  virtual ~PageSource() = default;
  /// Feeds every record strictly under the encoded path `prefix` to the engine: nodes in key
  /// order (Engine::LoadNode), then slots (LoadSlot), then history chunks (LoadHistory).
  virtual Status LoadPage(std::string_view prefix, Engine& engine) = 0;
};

struct ChangeSet;

/// Receives the records of one commit. Keys are encoded paths (core::Path::Encode()).
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void PutNode(std::string_view key, std::string_view value) = 0;
  virtual void DeleteNode(std::string_view key) = 0;
  virtual void PutSlot(std::string_view key, std::string_view value) = 0;
  virtual void DeleteSlot(std::string_view key) = 0;
  virtual void PutHistory(std::string_view key, std::string_view value) = 0;
  virtual void DeleteHistory(std::string_view key) = 0;
  virtual void PutBlade(std::uint32_t id, std::string_view value) = 0;
  virtual void PutSource(std::uint32_t id, std::string_view name) = 0;
  /// Removes every node, slot and history record under (and at) the encoded path `key`: one
  /// range per column family (a whole subtree evicted by TTL).
  virtual void DeleteSubtree(std::string_view key) = 0;
  /// The TTL index (the `expiry` column family): the node at `key` may become due at `due`.
  virtual void PutExpiry(std::int64_t due, std::string_view key) = 0;
  virtual void DeleteExpiry(std::int64_t due, std::string_view key) = 0;
};

class Engine {
 public:
  /// `persistent`: track changes for CollectChanges(). A non-persistent engine (persistence off)
  /// frees dead nodes at once and keeps no change lists.
  Engine(EngineOptions options, bool persistent);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  ApplyResult Apply(const core::Shard& shard, const ShardSource* source = nullptr);
  /// A hint that `shard` is applied soon: prefetches the child index slots of its first path's
  /// second key (the lookup that misses: one key among many children, e.g. intents.<id>). Reads
  /// the root's children and `shard`'s first two entries; changes nothing.
  void Prefetch(const core::Shard& shard) const;
  /// A second hint, closer to the Apply than Prefetch() (whose lines it reads): prefetches the
  /// node that the first path's second key names, found without comparing keys. Changes nothing.
  void PrefetchChild(const core::Shard& shard) const;
  void AdvanceWatermark(std::int64_t watermark_ms);
  /// The input is complete: the watermark becomes the largest ts merged and the lateness horizon
  /// moves up to it (TTL evictions due by then happen; older shards are late from now on).
  void Close();
  std::int64_t max_ts() const { return max_ts_; }

  /// Who decided the visible value at `path`; nullopt if nothing is visible there.
  /// Not const: it materializes the pending increments of the register it reads.
  std::optional<Provenance> Blame(const core::Path& path);

  /// The change feed (DESIGN.md §6); empty = off. See docs/merge-rules.md for the emission rules.
  void SetChangeFeed(crdt::ChangeSink feed) { feed_ = std::move(feed); }

  std::string Dump() const;
  std::optional<std::string> Get(const core::Path& path) const;
  const ApplyCounts& counts() const { return counts_; }
  /// Nodes in memory. Not const: it first finishes the deferred kills (BuryDoomed).
  std::size_t node_count() {
    BuryDoomed();
    return live_nodes_;
  }
  std::int64_t watermark() const { return watermark_; }
  std::int64_t gc_horizon() const { return gc_horizon_; }
  bool has_changes() const {
    return !dirty_.empty() || !graveyard_.empty() || !covered_.empty() || !doomed_.empty() ||
           !plain_dead_.empty() || !dirty_blades_.empty() ||
           persisted_sources_ < source_names_.size();
  }

  /// Takes every change since the last call into `out` (deletes before puts; see change_set.h)
  /// and forgets it. The nodes `out` names stay allocated until ReleaseChanges(out), so that
  /// WriteChanges() may run on another thread meanwhile. REQUIRES: `out` is empty (new or
  /// released).
  void CollectChanges(ChangeSet& out);
  /// Frees the nodes that died in `changes`' batch and empties it for reuse. REQUIRES: no
  /// WriteChanges() of it is running.
  void ReleaseChanges(ChangeSet& changes);

  // Restoring from a store: blades first, then nodes in key order, then slots.
  Status LoadBlade(std::uint32_t id, std::string_view value);
  Status LoadSource(std::uint32_t id, std::string_view name);
  Status LoadNode(std::string_view key, std::string_view value);
  Status LoadSlot(std::string_view key, std::string_view value);
  Status LoadHistory(std::string_view key, std::string_view value);
  /// An entry of the stored TTL index (after every node is loaded): schedules that node.
  /// Corruption if it does not name a loaded TTL node due at `due`.
  Status LoadExpiry(std::int64_t due, std::string_view key);
  /// `index_loaded`: the TTL index was read with LoadExpiry() (the rules are those it was built
  /// for); it must then cover every TTL node. Otherwise the TTL nodes are scheduled from their
  /// records and their index entries are (re)written by the next commit.
  Status FinishLoad(bool index_loaded);
  void LoadClocks(std::int64_t watermark, std::int64_t gc_horizon, std::uint64_t commits,
                  std::int64_t max_ts);
  std::uint64_t commits() const { return commits_; }

  // Bounded memory (docs/state-layout.md, "Bounded memory"). Off unless enabled: then subtrees
  // under object nodes at `page_depth` (pages) whose records are all written can leave memory
  // (PageOut), and are read back from `source` when a walk needs what is below them (FaultIn).
  /// `opening`: called before the records are loaded (lazy open): LoadPagedStub() may then leave
  /// a page on disk, and FinishOpen() ends the open.
  void EnablePaging(PageSource* source, std::uint64_t budget_bytes, std::uint32_t page_depth,
                    bool opening = false);
  /// Lazy open: the node LoadNode() just loaded (an object at the page depth) has records below
  /// it that stay on disk until a walk needs them. Corruption if it is not an object.
  Status LoadPagedStub(std::string_view prefix);
  void FinishOpen();
  std::uint32_t page_depth() const { return page_depth_; }
  bool paging() const { return pager_ != nullptr; }
  /// After a commit: while the estimate of the engine's memory is over the budget, pages out
  /// clean pages (a clock with a second chance) until it is under 90% of it. Only pages whose
  /// last written commit is below `durable_below` (a commit number) may go.
  void SweepPages(std::uint64_t durable_below);
  /// The first failure to read a page back (sticky; the store then refuses to commit).
  const Status& page_error() const { return page_error_; }
  std::uint64_t pages_out() const { return pages_out_; }
  std::uint64_t pages_in() const { return pages_in_; }
  /// The estimate the budget is compared with: nodes in memory x kNodeBytes.
  std::uint64_t memory_estimate() const { return live_nodes_ * kNodeBytes; }
  static constexpr std::uint64_t kNodeBytes = 300;  // RSS per trie node (bench/ttl_memory.sh)

 private:
  struct Frame {
    Node* node;
    Stamp kill;
  };

  /// The blade named `name`: from the direct-mapped cache inline, else InternBladeSlow().
  inline Blade* InternBlade(std::string_view name);
  Blade* InternBladeSlow(std::string_view name, Blade*& cached);
  static constexpr int kBladeCacheBits = 8;
  [[gnu::always_inline]] static inline std::size_t BladeCacheSlot(std::string_view name);
  void SetOrigin(const ShardSource* source);
  enum class SeqCheck { kNew, kDuplicate, kConflict };
  SeqCheck CheckSeq(const Blade& blade, std::uint64_t seq, std::uint64_t hash) const;
  [[gnu::always_inline]] inline void RecordSeq(Blade& blade, std::uint64_t seq, std::uint64_t hash,
                                               std::int64_t ts);

  /// The top-level node named by `shard`'s first key if its second entry is at depth 2 and
  /// that node has a child index (Prefetch, PrefetchChild), else nullptr.
  [[gnu::always_inline]] inline const Node* IndexedTop(const core::Shard& shard) const;
  bool AllDominated(const core::Shard& shard, const Stamp& s) const;
  Status CheckOverflow(const core::Shard& shard, const Stamp& s);

  /// The child of `parent` named `key`, or nullptr. Inline: most lookups scan a short child
  /// list; the wide index and paged-out parents take out-of-line paths.
  [[gnu::always_inline]] inline Node* FindChild(const Node* parent, std::string_view key) const;
  [[gnu::noinline]] Node* FindIndexed(const Node* parent, std::string_view key) const;
  [[gnu::cold]] Node* FindPaged(const Node* parent, std::string_view key) const;
  Node* CreateChild(Node* parent, std::string_view key);
  void Unlink(Node* node);
  void KillSubtree(Node* node);
  /// What every kill does to the node itself: drops its child links and index, stops tracking
  /// its register and counts it dead. Where it goes next (free list, graveyard) is the caller's.
  [[gnu::always_inline]] inline void MarkDead(Node* node);
  /// Kills what KillChildren() deferred: every node of doomed_'s chains and their subtrees.
  void BuryDoomed() {
    if (!doomed_.empty()) {
      BuryDoomedSlow();
    }
  }
  void BuryDoomedSlow();
  /// Sorts free_nodes_[from, end) (nodes just freed) by address, highest first.
  void SortFree(std::size_t from);
  [[gnu::always_inline]] inline void KillChildren(Node* node);
  [[gnu::noinline, gnu::cold]] void KillPagedChildren(Node* node);
  void KillOlder(Node* node, const Stamp& s);
  [[gnu::always_inline]] inline void DropValue(Node* node);
  void DropRegister(Node* node);
  [[gnu::always_inline]] inline void MarkDirty(Node* node);
  Node* AllocNode();
  std::unique_ptr<TtlState> NewTtlState();

  template <bool kEmit, bool kTtl>
  void ApplyEntries(const core::Shard& shard, const Stamp& s);

  // TTL (DESIGN.md §4).
  void BuildPatterns();
  void NoteTtlWrite(Node* node, std::int64_t ts);
  void ScheduleTtl(Node* node);
  void ProcessTtl(std::int64_t horizon);
  void DecideTtl(Node* node, std::int64_t horizon);
  void EvictOlder(Node* node, std::int64_t cut_ts);
  void EvictWhole(Node* node, std::int64_t due_ts);
  void ScheduleSlot(Node* node, const Blade* blade, std::int64_t key);
  void ProcessSlots(std::int64_t horizon);
  void ProcessBlades(std::int64_t horizon);
  void AdvanceHorizon(std::int64_t horizon);
  [[gnu::always_inline]] inline Node* EnsureObject(Node* parent, Node* child, std::string_view key,
                                                   const Stamp& s);
  [[gnu::always_inline]] inline Node* SetScalar(Node* parent, Node* child, std::string_view key,
                                                const Stamp& s, std::string_view value);
  Node* Erase(Node* parent, Node* child, std::string_view key, const Stamp& s);
  [[gnu::always_inline]] inline Node* RegisterOp(Node* parent, Node* child, std::string_view key,
                                                 const Stamp& s, Kind kind, const core::Number& n);
  std::optional<std::string> VisibleJson(const Node* node) const;
  std::string PathText(const Node* node) const;
  void Emit(const Node* node, std::optional<std::string> old_json,
            std::optional<std::string> new_json, const Stamp& s, ChangeCause cause);
  void LateReset(Node* node, const Stamp& s);
  void AddToRun(Node* node, const Stamp& s, const core::Number& n);
  /// Appends the register's pending increments to their slots (see Register).
  void Materialize(Node* node);
  /// Materialize() of every register with pending increments.
  void MaterializeAll();
  Slot& SlotFor(Register& reg, const Blade* blade);
  static std::int64_t PendingTs(const Register& reg, const PendingInc& p) {
    return reg.pending_ts0 + p.dts;  // exact: the offset was computed from this ts
  }
  static std::uint64_t PendingSeq(const Register& reg, const PendingInc& p) {
    return reg.pending_seq0 + static_cast<std::uint64_t>(static_cast<std::int64_t>(p.dseq));
  }
  Stamp PendingStamp(const Register& reg, const PendingInc& p) const {
    return {PendingTs(reg, p), blades_by_id_[p.blade], PendingSeq(reg, p)};
  }
  void ReindexSlots(Register& reg);
  void DropSlot(Node* node, Slot& slot);
  void DropFront(Slot& slot, std::size_t k);
  Result<std::pair<Node*, Slot*>> FindSlot(std::string_view key);
  void CutRun(Node* node, const Stamp& s);
  void RecomputeSlot(Kind kind, Slot& slot);
  void RecomputeTotal(Node* node);
  void TrackRegister(Node* node);
  void UntrackRegister(Node* node);
  void FoldRegister(Node* node, std::int64_t horizon);
  void FoldPending(Node* node, std::int64_t horizon);
  void NoteMagnitude(const core::Number& n);

  void AppendKey(const Node* node, std::string& out) const;
  void EncodeNode(const Node* node, std::string& out) const;
  void EncodeSlot(const Slot& slot, std::string& out) const;
  void CollectSlot(ChangeSet& out, const Node* node, Slot& slot);
  void EncodeBlade(const Blade& blade, std::string& out) const;
  void WriteJson(const Node* node, std::string& out) const;

  void FreeNode(Node* node);

  // Paging.
  /// Reads `node`'s subtree back if it is paged out (the choke point of every walk below it).
  void EnsureLoaded(const Node* node) const {
    if (IsPaged(node)) [[unlikely]] {
      const_cast<Engine*>(this)->FaultIn(const_cast<Node*>(node));
    }
  }
  void FaultIn(Node* node);
  /// Frees `root`'s subtree if every node in it is clean and written; false if not.
  bool PageOut(Node* root);
  Node* PageRootOf(Node* node) const;
  void NotePageWrite(Node* node);
  void RegisterPages(Node* node, std::uint32_t depth);
  /// The register part of FinishLoad() for loaded_registers_ (totals, fold list, slot queue).
  void FinishRegisters();

  EngineOptions options_;
  bool persistent_;
  crdt::ChangeSink feed_;
  // TTL: the pattern automaton, and time-ordered queues of what may become due (lazy: entries
  // are checked against the node's current state when they come up).
  struct QueueEntry {
    std::int64_t key;
    Node* node;
    std::uint64_t uid;
    const Blade* blade;  // slot queue only
    bool operator>(const QueueEntry& o) const { return key > o.key; }
  };
  using Queue = std::priority_queue<QueueEntry, std::vector<QueueEntry>, std::greater<>>;
  bool has_ttl_ = false;
  std::vector<std::unique_ptr<PatternState>> patterns_;
  Queue ttl_queue_;
  Queue slot_queue_;
  std::int64_t max_ts_ = std::numeric_limits<std::int64_t>::min();
  // Provenance: interned source names (id = index) and the origin of the shard being applied.
  std::vector<std::string> source_names_;
  absl::flat_hash_map<std::string, std::uint32_t, NameHash, NameEq> source_ids_;
  std::size_t persisted_sources_ = 0;  // source_names_[0, this) are in the store
  std::uint32_t last_source_ = 0;      // id + 1 of the previous shard's source, 0 = none
  Origin origin_;
  Node* root_;
  absl::flat_hash_map<std::string, std::unique_ptr<Blade>, NameHash, NameEq> blades_by_name_;
  std::vector<Blade*> blades_by_id_;
  // Materialize's map of a wide register's slots by Blade::id: position + 1, 0 = none. All zero
  // between calls.
  std::vector<std::uint32_t> slot_by_blade_;
  // InternBlade's direct-mapped cache of blades_by_name_ (a slot may hold another blade).
  std::array<Blade*, std::size_t{1} << kBladeCacheBits> blade_cache_{};
  std::vector<Frame> frames_;
  std::vector<Node*> dirty_;
  std::vector<Blade*> dirty_blades_;
  std::vector<Node*> graveyard_;
  // Children detached by KillChildren() and not yet killed: each entry is the head of a sibling
  // chain that dies whole, with every subtree below it. Unreachable from the root, so nothing but
  // the lists below can meet them: BuryDoomed() runs before anything walks those (the horizon's
  // tombstones, TTL and slot queues and registers; a commit's dirty list), before node_count(),
  // and once kDoomedMax chains are waiting. Killing them together overlaps their cache misses:
  // killed one by one, each node of a cold subtree (an erased intent's 5) was a dependent miss.
  std::vector<Node*> doomed_;
  static constexpr std::size_t kDoomedMax = 4096;
  // Nodes BuryDoomed() killed that hold nothing but their record (no register, TTL state or
  // dropped slots) and were written: the commit deletes their record without reading them again.
  // Those never written go straight back to free_nodes_ (BuryDoomedSlow).
  std::vector<Node*> plain_dead_;
  // Dead nodes whose register ReleaseChanges() frees; every other dead node goes back to the free
  // list untouched (AllocNode() resets what a reused node still holds).
  std::vector<Node*> dead_regs_;
  std::vector<Node*> free_nodes_;
  std::vector<Node*> sort_scratch_;                  // SortFree's
  std::vector<std::unique_ptr<TtlState>> free_ttl_;  // of freed nodes, for reuse
  // Nodes are allocated in slabs of kNodeSlab: one aligned allocation per slab instead of one
  // per node (an over-aligned `new` takes glibc's slow memalign path). Freed nodes are reused
  // through free_nodes_; slabs live as long as the engine.
  static constexpr std::size_t kNodeSlab = 256;
  std::vector<std::unique_ptr<Node[]>> node_slabs_;
  std::size_t slab_used_ = kNodeSlab;  // nodes handed out of node_slabs_.back()
  std::deque<std::pair<std::int64_t, std::pair<Node*, std::uint64_t>>> tombstones_;
  std::vector<Node*> regs_with_history_;
  // FoldPending's per-blade sums, indexed by Blade::id (all unused between calls).
  struct FoldSum {
    std::uint64_t sum = 0;  // of the amounts, wrapping
    std::uint64_t abs = 0;  // of |amount|
    std::int64_t ts = 0;    // the newest (ts, seq) summed
    std::uint64_t seq = 0;
    std::uint32_t slot = 0;  // the blade's slot in reg.slots
    bool used = false;
  };
  std::vector<FoldSum> fold_sums_;
  std::vector<std::uint32_t> fold_touched_;
  std::vector<Node*> loaded_registers_;
  std::vector<std::pair<Node*, std::uint64_t>> loaded_ttl_;  // (node, uid) with TTL state
  std::size_t loaded_ttl_due_ = 0;  // loaded TTL nodes that must have an index entry
  std::size_t loaded_expiry_ = 0;   // index entries loaded
  // Whole subtrees evicted since the last commit: their encoded paths (one range delete each),
  // and their dead nodes, whose records the range covers (only their index entries are deleted
  // one by one).
  std::vector<std::string> subtree_deletes_;
  std::vector<Node*> covered_;
  bool covering_ = false;      // KillSubtree() is inside an EvictWhole()
  std::uint64_t commits_ = 0;  // numbers the history chunks
  std::uint64_t next_uid_ = 1;
  std::size_t live_nodes_ = 0;
  std::int64_t watermark_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t gc_horizon_ = std::numeric_limits<std::int64_t>::min();
  bool big_numbers_seen_ = false;
  bool in_order_ = false;  // the shard being applied is newer than every seq of its blade
  ApplyCounts counts_;
  // Paging (EnablePaging): the clock over page roots, (node, uid).
  PageSource* pager_ = nullptr;
  std::uint64_t budget_ = 0;
  std::uint32_t page_depth_ = 2;
  std::vector<std::pair<Node*, std::uint64_t>> pages_;
  std::size_t clock_hand_ = 0;
  Status page_error_;
  std::uint64_t pages_out_ = 0;
  std::uint64_t pages_in_ = 0;
  bool faulting_ = false;        // inside FaultIn (LoadNode's walks must not fault in again)
  bool opening_ = false;         // lazy open in progress (EnablePaging(..., true) .. FinishOpen())
  Node* last_loaded_ = nullptr;  // the node of the last LoadNode()
  mutable std::string key_scratch_;
  std::string record_scratch_;
};

inline Node* Engine::FindChild(const Node* parent, std::string_view key) const {
  if (parent->has_index) {
    return FindIndexed(parent, key);
  }
  // Sizes first: most keys differ in length.
  const std::size_t size = key.size();
  for (Node* c = parent->first_child; c != nullptr; c = c->next) {
    if (c->key.size() == size && SameBytes(c->key.data(), key.data(), size)) {
      return c;
    }
  }
  if (IsPaged(parent)) [[unlikely]] {
    return FindPaged(parent, key);
  }
  return nullptr;
}

inline void Engine::MarkDirty(Node* node) {
  if (persistent_ && !node->dirty) {
    node->dirty = true;
    dirty_.push_back(node);
  }
}

}  // namespace lattice::crdt::internal
