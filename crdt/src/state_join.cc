// The join of several state directories, computed from their stored records (see state_join.h).
//
// Walks the `state` column families of all directories together in key order (a subtree is a key
// prefix, parents come before children). For each path it takes the record with the newest `last`
// stamp as the decider, the newest `reset` as the path's kill stamp for everything below, and
// shows the path only if its decider is newer than every ancestor's kill stamp. Registers whose run
// spans several states are re-folded from their slot and history records (engine.h describes what
// they hold).
#include "lattice/crdt/state_join.h"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include <rocksdb/db.h>

#include "engine.h"
#include "layout.h"
#include "records.h"

namespace lattice::crdt {

namespace {

using core::Number;
using internal::FromRocks;
using internal::Kind;
using internal::RecordReader;

/// A stamp with its blade by name, comparable across states.
struct JoinStamp {
  std::int64_t ts = std::numeric_limits<std::int64_t>::min();
  const std::string* blade = nullptr;  // nullptr sorts first, as in the engine
  std::uint64_t seq = 0;
};

bool operator<(const JoinStamp& a, const JoinStamp& b) {
  if (a.ts != b.ts) {
    return a.ts < b.ts;
  }
  if (a.blade != b.blade) {
    if (a.blade == nullptr || b.blade == nullptr) {
      return a.blade == nullptr && b.blade != nullptr;
    }
    if (*a.blade != *b.blade) {
      return *a.blade < *b.blade;
    }
  }
  return a.seq < b.seq;
}
const JoinStamp& Newer(const JoinStamp& a, const JoinStamp& b) { return a < b ? b : a; }

Number AddNumbers(const Number& a, const Number& b) {
  if (a.is_int && b.is_int) {
    std::int64_t r;
    if (!__builtin_add_overflow(a.i, b.i, &r)) {
      return Number::Int(r);
    }
  }
  return Number::Double(a.AsDouble() + b.AsDouble());
}

/// max/min: is `v` (stamped `vs`) better than `best`? Ties go to the older stamp, as in the engine.
bool Better(Kind kind, const Number& v, const JoinStamp& vs, const Number& best,
            const JoinStamp& best_s) {
  const int c = core::CompareNumbers(v, best);
  if (c == 0) {
    return vs < best_s;
  }
  return kind == Kind::kMax ? c > 0 : c < 0;
}

/// One state directory, opened read-only.
struct Source {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* state_cf = nullptr;
  rocksdb::ColumnFamilyHandle* counters_cf = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;
  rocksdb::ColumnFamilyHandle* history_cf = nullptr;
  std::vector<std::unique_ptr<std::string>> blades;  // by id; names are interned in `names`
  std::vector<std::uint64_t> last_seq;               // by id
  std::vector<bool> has_seq;                         // by id
  std::unique_ptr<rocksdb::Iterator> it;
  std::string dir;

  ~Source() {
    it.reset();
    for (auto* h : handles) {
      (void)db->DestroyColumnFamilyHandle(h);
    }
  }

  bool ReadStamp(RecordReader& r, const std::map<std::string, std::string*>& names,
                 JoinStamp& s) const {
    std::uint64_t ts, blade, seq;
    if (!r.Varint(ts) || !r.Varint(blade) || !r.Varint(seq)) {
      return false;
    }
    s.ts = internal::UnZigZag(ts);
    s.seq = seq;
    s.blade = nullptr;
    if (blade == 0) {
      return true;
    }
    if (blade - 1 >= blades.size() || !blades[blade - 1]) {
      return false;
    }
    s.blade = names.at(*blades[blade - 1]);
    return true;
  }
};

/// A decoded node record.
struct NodeRecord {
  std::size_t source = 0;
  Kind kind = Kind::kAbsent;
  JoinStamp last;
  JoinStamp reset;
  JoinStamp boundary;       // registers
  Number total;             // registers
  bool has_retired = false;  // counters: slots folded after counter_slot_ttl
  Number retired;
  std::string_view scalar;  // scalars: canonical JSON
};

/// One entry of a register's run.
struct Entry {
  JoinStamp stamp;
  Number amount;
};

/// A slot as stored: its base and its history entries.
struct SlotRecord {
  bool has_base = false;
  Number base;
  JoinStamp base_stamp;
  std::vector<Entry> entries;
};

class Joiner {
 public:
  Status Open(const std::vector<std::string>& dirs) {
    for (const std::string& dir : dirs) {
      auto src = std::make_unique<Source>();
      src->dir = dir;
      rocksdb::Options options;
      options.max_open_files = 256;
      std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
          {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
          {std::string(internal::kStateCf), rocksdb::ColumnFamilyOptions()},
          {std::string(internal::kCountersCf), rocksdb::ColumnFamilyOptions()},
          {std::string(internal::kMetaCf), rocksdb::ColumnFamilyOptions()},
          {std::string(internal::kHistoryCf), rocksdb::ColumnFamilyOptions()},
      };
      rocksdb::DB* raw = nullptr;
      rocksdb::Status s = rocksdb::DB::OpenForReadOnly(options, dir, cfs, &src->handles, &raw);
      if (!s.ok()) {
        if (s.IsIOError() || s.IsPathNotFound() || s.IsNotFound()) {
          return Status::NotFound("no Lattice state in '" + dir + "': " + s.ToString());
        }
        return FromRocks(s, "opening '" + dir + "'");
      }
      src->db.reset(raw);
      src->state_cf = src->handles[1];
      src->counters_cf = src->handles[2];
      src->meta_cf = src->handles[3];
      src->history_cf = src->handles[4];
      std::string format;
      s = src->db->Get(rocksdb::ReadOptions(), src->meta_cf, internal::kFormatKey, &format);
      if (!s.ok() || format != internal::kFormatValue) {
        return Status::Corruption("'" + dir + "' is not a Lattice state directory");
      }
      LATTICE_RETURN_IF_ERROR(LoadBlades(*src, sources_.size()));
      sources_.push_back(std::move(src));
    }
    return Status::Ok();
  }

  Status Dump(const std::function<void(std::string_view)>& write) {
    std::string out = "{";
    struct Frame {
      std::size_t depth;
      JoinStamp kill;  // the newest reset of this object and its ancestors
      bool has_member = false;
    };
    std::vector<Frame> open = {{0, JoinStamp{}, false}};
    for (auto& src : sources_) {
      src->it.reset(src->db->NewIterator(rocksdb::ReadOptions(), src->state_cf));
      src->it->SeekToFirst();
    }
    std::vector<NodeRecord> records;
    std::string key;
    while (true) {
      // The smallest key among the sources, and every record at it.
      std::optional<std::string_view> smallest;
      for (auto& src : sources_) {
        if (src->it->Valid()) {
          const std::string_view k(src->it->key().data(), src->it->key().size());
          if (!smallest || k < *smallest) {
            smallest = k;
          }
        }
      }
      if (!smallest) {
        break;
      }
      key.assign(*smallest);
      records.clear();
      for (std::size_t i = 0; i < sources_.size(); ++i) {
        Source& src = *sources_[i];
        if (!src.it->Valid() ||
            std::string_view(src.it->key().data(), src.it->key().size()) != key) {
          continue;
        }
        NodeRecord rec;
        rec.source = i;
        LATTICE_RETURN_IF_ERROR(
            DecodeNode(src, std::string_view(src.it->value().data(), src.it->value().size()), rec));
        records.push_back(rec);
      }
      LATTICE_RETURN_IF_ERROR(Visit(key, records, open, out));
      // Scalars point into the iterators' values: advance only after the record was written.
      for (auto& src : sources_) {
        if (src->it->Valid() &&
            std::string_view(src->it->key().data(), src->it->key().size()) == key) {
          src->it->Next();
        }
      }
      if (out.size() > (1 << 16)) {
        write(out);
        out.clear();
      }
    }
    for (auto& src : sources_) {
      LATTICE_RETURN_IF_ERROR(FromRocks(src->it->status(), "reading '" + src->dir + "'"));
    }
    while (!open.empty()) {
      out.push_back('}');
      open.pop_back();
    }
    out.push_back('\n');
    write(out);
    return Status::Ok();
  }

 private:
  template <typename Frame>
  Status Visit(const std::string& key, const std::vector<NodeRecord>& records,
               std::vector<Frame>& open, std::string& out) {
    LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
    if (!decoded.rest.empty() || decoded.path.size() == 0) {
      return Status::Corruption("a node record with a malformed key");
    }
    const std::size_t depth = decoded.path.size();
    while (!open.empty() && open.back().depth >= depth) {
      out.push_back('}');
      open.pop_back();
    }
    if (open.empty() || open.back().depth != depth - 1) {
      return Status::Ok();  // under a value that is not a visible object
    }
    const NodeRecord* decider = &records.front();
    JoinStamp reset;
    for (const NodeRecord& r : records) {
      if (decider->last < r.last) {
        decider = &r;
      }
      reset = Newer(reset, r.reset);
    }
    const JoinStamp kill = open.back().kill;
    if (decider->kind == Kind::kAbsent || !(kill < decider->last)) {
      return Status::Ok();  // erased, or killed by a newer reset above it in some state
    }
    std::string value;
    if (internal::IsRegister(decider->kind)) {
      LATTICE_ASSIGN_OR_RETURN(std::optional<Number> n,
                               RegisterValue(key, records, *decider, kill));
      if (!n) {
        return Status::Ok();
      }
      core::AppendJsonNumber(value, *n);
    }
    if (open.back().has_member) {
      out.push_back(',');
    }
    open.back().has_member = true;
    core::AppendJsonString(out, decoded.path.segments().back());
    out.push_back(':');
    switch (decider->kind) {
      case Kind::kObject:
        out.push_back('{');
        open.push_back({depth, Newer(kill, reset), false});
        break;
      case Kind::kScalar:
        out.append(decider->scalar);
        break;
      default:
        out.append(value);
        break;
    }
    return Status::Ok();
  }

  /// The value of a register at `key` over the union of the states' runs.
  Result<std::optional<Number>> RegisterValue(const std::string& key,
                                              const std::vector<NodeRecord>& records,
                                              const NodeRecord& decider, const JoinStamp& kill) {
    const Kind kind = decider.kind;
    // The run starts after the newest event that is not an operation of this kind: each state's
    // boundary, anything else newest at the path in another state, and kills from above.
    JoinStamp boundary = kill;
    std::size_t same_kind = 0;
    for (const NodeRecord& r : records) {
      if (r.kind == kind) {
        boundary = Newer(boundary, r.boundary);
        ++same_kind;
      } else {
        boundary = Newer(boundary, r.last);
      }
    }
    if (same_kind == 1 && !(decider.boundary < boundary)) {
      return std::optional<Number>(decider.total);  // one state holds the whole run
    }
    if (kind == Kind::kCounter) {
      // Per blade, the slot of the state holding the blade's newest seq; summed in blade order.
      std::map<std::string, Number> slots;
      for (const NodeRecord& r : records) {
        if (r.kind != kind) {
          continue;
        }
        Source& src = *sources_[r.source];
        const bool cut = r.boundary < boundary;
        LATTICE_RETURN_IF_ERROR(
            ForEachSlot(src, key, [&](std::string_view blade, const SlotRecord& slot) -> Status {
              auto owner = owners_.find(std::string(blade));
              if (owner == owners_.end() || owner->second != r.source) {
                return Status::Ok();
              }
              __extension__ __int128 wide = 0;
              Number v = Number::Int(0);
              bool is_int = true;
              auto add = [&](const Number& n) {
                if (is_int && n.is_int) {
                  wide += n.i;
                  return;
                }
                if (is_int) {
                  v = Number::Double(static_cast<double>(wide));
                  is_int = false;
                }
                v = Number::Double(v.d + n.AsDouble());
              };
              if (slot.has_base && (!cut || boundary < slot.base_stamp)) {
                add(slot.base);
              }
              for (const Entry& e : slot.entries) {
                if (!cut || boundary < e.stamp) {
                  add(e.amount);
                }
              }
              if (is_int) {
                v = wide >= std::numeric_limits<std::int64_t>::min() &&
                            wide <= std::numeric_limits<std::int64_t>::max()
                        ? Number::Int(static_cast<std::int64_t>(wide))
                        : Number::Double(static_cast<double>(wide));
              }
              slots[std::string(blade)] = v;
              return Status::Ok();
            }));
      }
      // Folded slots (counter_slot_ttl): each state's retired sum, unless its run is cut. The
      // states own disjoint shards, so their retired sums add up.
      Number total = Number::Int(0);
      for (const NodeRecord& r : records) {
        if (r.kind == kind && r.has_retired && !(r.boundary < boundary)) {
          total = AddNumbers(total, r.retired);
        }
      }
      for (const auto& [blade, v] : slots) {
        total = AddNumbers(total, v);
      }
      return std::optional<Number>(total);
    }
    // max / min: the best entry of the union of the runs.
    bool have = false;
    Number best;
    JoinStamp best_s;
    for (const NodeRecord& r : records) {
      if (r.kind != kind) {
        continue;
      }
      Source& src = *sources_[r.source];
      const bool cut = r.boundary < boundary;
      LATTICE_RETURN_IF_ERROR(
          ForEachSlot(src, key, [&](std::string_view /*blade*/, const SlotRecord& slot) -> Status {
            if (slot.has_base && (!cut || boundary < slot.base_stamp) &&
                (!have || Better(kind, slot.base, slot.base_stamp, best, best_s))) {
              best = slot.base;
              best_s = slot.base_stamp;
              have = true;
            }
            for (const Entry& e : slot.entries) {
              if (cut && !(boundary < e.stamp)) {
                continue;
              }
              // An entry of a blade another state holds more of is taken from that state.
              if (e.stamp.blade != nullptr) {
                auto owner = owners_.find(*e.stamp.blade);
                if (owner != owners_.end() && owner->second != r.source) {
                  continue;
                }
              }
              if (!have || Better(kind, e.amount, e.stamp, best, best_s)) {
                best = e.amount;
                best_s = e.stamp;
                have = true;
              }
            }
            return Status::Ok();
          }));
    }
    if (!have) {
      return std::optional<Number>();
    }
    return std::optional<Number>(best);
  }

  /// Calls `visit` with each slot of the register at `key` in `src` (blade "" for max/min).
  Status ForEachSlot(Source& src, const std::string& key,
                     const std::function<Status(std::string_view, const SlotRecord&)>& visit) {
    std::string prefix = key;
    prefix.append(core::kKeySuffixMarker);
    std::unique_ptr<rocksdb::Iterator> it(
        src.db->NewIterator(rocksdb::ReadOptions(), src.counters_cf));
    std::unique_ptr<rocksdb::Iterator> hist(
        src.db->NewIterator(rocksdb::ReadOptions(), src.history_cf));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const std::string_view k(it->key().data(), it->key().size());
      if (k.substr(0, prefix.size()) != prefix) {
        break;
      }
      SlotRecord slot;
      RecordReader r(std::string_view(it->value().data(), it->value().size()));
      std::uint8_t has_base;
      std::uint64_t front_skip;
      if (!r.Byte(has_base)) {
        return Status::Corruption("malformed slot record in '" + src.dir + "'");
      }
      slot.has_base = has_base != 0;
      if (slot.has_base && (!r.Number(slot.base) || !src.ReadStamp(r, names_, slot.base_stamp))) {
        return Status::Corruption("malformed slot record in '" + src.dir + "'");
      }
      if (!r.Varint(front_skip)) {
        return Status::Corruption("malformed slot record in '" + src.dir + "'");
      }
      // History chunks: the slot key and an 8-byte commit number, oldest first.
      bool first = true;
      for (hist->Seek(k); hist->Valid(); hist->Next()) {
        const std::string_view hk(hist->key().data(), hist->key().size());
        if (hk.substr(0, k.size()) != k) {
          break;
        }
        if (hk.size() != k.size() + 8) {
          continue;  // another blade's slot whose name starts with this one's
        }
        RecordReader h(std::string_view(hist->value().data(), hist->value().size()));
        std::uint64_t count;
        if (!h.Varint(count)) {
          return Status::Corruption("malformed history record in '" + src.dir + "'");
        }
        const std::uint64_t skip = first ? front_skip : 0;
        first = false;
        for (std::uint64_t i = 0; i < count; ++i) {
          Entry e;
          if (!src.ReadStamp(h, names_, e.stamp) || !h.Number(e.amount)) {
            return Status::Corruption("malformed history record in '" + src.dir + "'");
          }
          if (i >= skip) {
            slot.entries.push_back(e);
          }
        }
      }
      LATTICE_RETURN_IF_ERROR(FromRocks(hist->status(), "reading '" + src.dir + "'"));
      LATTICE_RETURN_IF_ERROR(visit(k.substr(prefix.size()), slot));
    }
    return FromRocks(it->status(), "reading '" + src.dir + "'");
  }

  Status DecodeNode(const Source& src, std::string_view value, NodeRecord& rec) {
    RecordReader r(value);
    std::uint8_t format, kind;
    if (!r.Byte(format) || format != internal::kNodeFormat || !r.Byte(kind) ||
        kind > static_cast<std::uint8_t>(Kind::kMin) || !src.ReadStamp(r, names_, rec.last) ||
        !src.ReadStamp(r, names_, rec.reset)) {
      return Status::Corruption("malformed node record in '" + src.dir + "'");
    }
    // Provenance (origin) and TTL state (docs/state-layout.md): not needed for the join.
    std::uint64_t skip, count;
    std::uint8_t flags;
    if (!r.Varint(skip) || !r.Varint(skip) || !r.Varint(skip) || !r.Byte(flags)) {
      return Status::Corruption("malformed node record in '" + src.dir + "'");
    }
    if ((flags & 1) != 0) {
      if (!r.Varint(skip) || !r.Varint(count)) {
        return Status::Corruption("malformed node record in '" + src.dir + "'");
      }
      for (std::uint64_t i = 0; i < count; ++i) {
        if (!r.Varint(skip)) {
          return Status::Corruption("malformed node record in '" + src.dir + "'");
        }
      }
    }
    rec.kind = static_cast<Kind>(kind);
    if (rec.kind == Kind::kScalar) {
      rec.scalar = r.Rest();
    } else if (internal::IsRegister(rec.kind)) {
      std::uint8_t has_retired;
      if (!src.ReadStamp(r, names_, rec.boundary) || !r.Number(rec.total) ||
          !r.Byte(has_retired) || (has_retired != 0 && !r.Number(rec.retired))) {
        return Status::Corruption("malformed register record in '" + src.dir + "'");
      }
      rec.has_retired = has_retired != 0;
    }
    return Status::Ok();
  }

  /// Reads the blade table; the state with a blade's highest applied seq owns its counter slots.
  Status LoadBlades(Source& src, std::size_t index) {
    std::unique_ptr<rocksdb::Iterator> it(src.db->NewIterator(rocksdb::ReadOptions(), src.meta_cf));
    const std::string prefix(1, internal::kBladePrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const std::string_view k(it->key().data(), it->key().size());
      if (k.size() != 5) {
        continue;
      }
      std::uint32_t id = 0;
      for (std::size_t i = 1; i < 5; ++i) {
        id = (id << 8) | static_cast<std::uint8_t>(k[i]);
      }
      RecordReader r(std::string_view(it->value().data(), it->value().size()));
      std::uint64_t len, last_seq;
      std::string_view name;
      std::uint8_t flags;
      if (!r.Varint(len) || !r.Bytes(len, name) || !r.Byte(flags) || !r.Varint(last_seq)) {
        return Status::Corruption("malformed blade record in '" + src.dir + "'");
      }
      if (src.blades.size() <= id) {
        src.blades.resize(id + 1);
        src.last_seq.resize(id + 1, 0);
        src.has_seq.resize(id + 1, false);
      }
      src.blades[id] = std::make_unique<std::string>(name);
      src.last_seq[id] = last_seq;
      src.has_seq[id] = (flags & 1) != 0;
      auto [pos, inserted] = names_.try_emplace(std::string(name), nullptr);
      if (inserted) {
        interned_.push_back(std::make_unique<std::string>(name));
        pos->second = interned_.back().get();
      }
      auto owner = owners_.find(std::string(name));
      if (owner == owners_.end()) {
        owners_[std::string(name)] = index;
        owner_seq_[std::string(name)] = last_seq;
      } else if (last_seq > owner_seq_[std::string(name)]) {
        owner->second = index;
        owner_seq_[std::string(name)] = last_seq;
      }
    }
    return FromRocks(it->status(), "reading '" + src.dir + "'");
  }

  std::vector<std::unique_ptr<Source>> sources_;
  std::map<std::string, std::string*> names_;  // blade name -> interned name (one per name)
  std::vector<std::unique_ptr<std::string>> interned_;
  std::map<std::string, std::size_t> owners_;  // blade -> the source with its newest seq
  std::map<std::string, std::uint64_t> owner_seq_;
};

}  // namespace

Status DumpJoinedStates(const std::vector<std::string>& dirs,
                        const std::function<void(std::string_view chunk)>& write) {
  if (dirs.empty()) {
    return Status::InvalidArgument("no state directory to join");
  }
  Joiner joiner;
  LATTICE_RETURN_IF_ERROR(joiner.Open(dirs));
  return joiner.Dump(write);
}

}  // namespace lattice::crdt
