// StateReader: canonical JSON straight from the ordered node records of a state directory.
#include "lattice/crdt/state_reader.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include <rocksdb/db.h>

#include "engine.h"
#include "layout.h"
#include "records.h"

namespace lattice::crdt {

using internal::FromRocks;
using internal::Kind;

namespace {

/// The newest stamp of a node record: (ts, blade id + 1 or 0, seq).
struct RecordStamp {
  std::int64_t ts = 0;
  std::uint64_t blade = 0;
  std::uint64_t seq = 0;
};

}  // namespace

struct StateReader::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* state_cf = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;
  rocksdb::ColumnFamilyHandle* counters_cf = nullptr;
  rocksdb::ColumnFamilyHandle* changes_cf = nullptr;  // secondary with a change log only
  bool secondary = false;
  // Secondary only: the counters column family is not followed by `db` (replaying its share of
  // every commit's WAL into memtables cost a follower ~1/3 of its catch-up time), but by a second
  // secondary instance opened by the first Blame() that needs counter slots and caught up at each
  // such call.
  std::string dir, secondary_dir;
  mutable std::mutex counters_mu;
  mutable std::unique_ptr<rocksdb::DB> counters_db;
  mutable std::vector<rocksdb::ColumnFamilyHandle*> counters_handles;
  std::atomic<std::uint64_t> commit{0};
  std::atomic<std::int64_t> watermark{0};

  // Blade names by id, read from meta on first use (blades are never renamed or removed).
  mutable std::mutex blades_mu;
  mutable std::vector<std::string> blade_names;  // index = id; "" = not read yet

  // CatchUp() only: the commit last reported, and the values last reported by encoded key
  // (kAbsentMark for an erased path).
  std::uint64_t followed_commit = 0;
  std::map<std::string, std::string, std::less<>> reported;
  static constexpr std::string_view kAbsentMark{"\0", 1};

  ~Impl() {
    for (auto* h : counters_handles) {
      (void)counters_db->DestroyColumnFamilyHandle(h);
    }
    for (auto* h : handles) {
      (void)db->DestroyColumnFamilyHandle(h);
    }
  }

  /// The counters column family to read slots from, caught up now on a secondary (REQUIRES:
  /// counters_mu held on a secondary).
  Result<std::pair<rocksdb::DB*, rocksdb::ColumnFamilyHandle*>> CountersForRead() const {
    if (!secondary) {
      return std::make_pair(db.get(), counters_cf);
    }
    if (counters_db == nullptr) {
      const std::string own = secondary_dir + "/counters";
      std::error_code ec;
      std::filesystem::create_directories(own, ec);
      if (ec) {
        return Status::Unavailable("cannot create '" + own + "': " + ec.message());
      }
      rocksdb::Options options;
      options.max_open_files = -1;
      options.max_file_opening_threads = 1;
      std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
          {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
          {std::string(internal::kCountersCf), rocksdb::ColumnFamilyOptions()},
      };
      rocksdb::DB* raw = nullptr;
      LATTICE_RETURN_IF_ERROR(
          FromRocks(rocksdb::DB::OpenAsSecondary(options, dir, own, cfs, &counters_handles, &raw),
                    "opening the counters of '" + dir + "' as a secondary"));
      counters_db.reset(raw);
    } else {
      LATTICE_RETURN_IF_ERROR(FromRocks(counters_db->TryCatchUpWithPrimary(),
                                        "catching up with the writer's counters"));
    }
    return std::make_pair(counters_db.get(), counters_handles[1]);
  }

  /// The blade name of a stamp's blade field (id + 1; 0 = none), or "" if unknown.
  std::string BladeName(std::uint64_t blade) const {
    if (blade == 0 || blade > 0xffffffffULL + 1) {
      return std::string();
    }
    const auto id = static_cast<std::uint32_t>(blade - 1);
    std::lock_guard lock(blades_mu);
    if (id < blade_names.size() && !blade_names[id].empty()) {
      return blade_names[id];
    }
    std::string value;
    if (!db->Get(rocksdb::ReadOptions(), meta_cf, internal::BladeKey(id), &value).ok()) {
      return std::string();
    }
    internal::RecordReader r(value);
    std::uint64_t len;
    std::string_view name;
    if (!r.Varint(len) || !r.Bytes(len, name)) {
      return std::string();
    }
    if (blade_names.size() <= id) {
      blade_names.resize(std::size_t{id} + 1);
    }
    blade_names[id] = std::string(name);
    return blade_names[id];
  }

  /// Reads the clock record (watermark, commit counter) into `commit` / `watermark`.
  Status ReadClock() {
    std::string value;
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), meta_cf, internal::kClockKey, &value);
    if (s.IsNotFound()) {
      commit = 0;
      return Status::Ok();
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(s, "reading the clock record"));
    internal::RecordReader r(value);
    std::uint64_t wm, horizon, commits;
    if (!r.Varint(wm) || !r.Varint(horizon) || !r.Varint(commits)) {
      return Status::Corruption("malformed clock record");
    }
    watermark = internal::UnZigZag(wm);
    commit = commits;
    return Status::Ok();
  }

  /// A node record's kind and visible JSON (empty for objects and tombstones).
  static Status DecodeVisible(std::string_view value, Kind& kind, std::string& json) {
    RecordStamp stamp;
    return DecodeNode(value, kind, json, stamp);
  }

  /// A node record's kind, visible JSON (empty for objects and tombstones) and newest stamp.
  static Status DecodeNode(std::string_view value, Kind& kind, std::string& json,
                           RecordStamp& stamp) {
    internal::NodeRecord rec;
    if (!internal::DecodeNodeRecord(value, rec)) {
      return Status::Corruption("malformed node record");
    }
    stamp.ts = rec.last.ts;
    stamp.blade = rec.last.blade;
    stamp.seq = rec.last.seq;
    kind = static_cast<Kind>(rec.kind);
    json.clear();
    if (kind == Kind::kScalar) {
      json = std::string(rec.scalar);
    } else if (internal::IsRegister(kind)) {
      core::AppendJsonNumber(json, rec.total);
    }
    return Status::Ok();
  }

  /// A source name by id (provenance), or "" if unknown.
  std::string SourceName(std::uint64_t id) const {
    std::string value;
    if (id > 0xffffffffULL ||
        !db->Get(rocksdb::ReadOptions(), meta_cf,
                 internal::IdKey(internal::kSourcePrefix, static_cast<std::uint32_t>(id)), &value)
             .ok()) {
      return std::string();
    }
    return value;
  }

  /// Writes the JSON of the subtree whose encoded path is `prefix` (the root for "").
  /// Returns false in `found` if nothing visible is there.
  Status WriteSubtree(const std::string& prefix, std::size_t prefix_depth,
                      const std::function<void(std::string_view)>& write, bool& found) const {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), state_cf));
    std::string out;
    // depth of each open object, relative to the whole state; the root is depth 0.
    std::vector<std::size_t> open;
    std::vector<bool> has_member;
    found = false;
    if (prefix.empty()) {
      out.push_back('{');
      open.push_back(0);
      has_member.push_back(false);
      found = true;
    }
    std::string json;
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      if (key.substr(0, prefix.size()) != prefix) {
        break;
      }
      LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
      const std::size_t depth = decoded.path.size();
      Kind kind;
      LATTICE_RETURN_IF_ERROR(
          DecodeVisible(std::string_view(it->value().data(), it->value().size()), kind, json));
      if (kind == Kind::kAbsent) {
        continue;
      }
      while (!open.empty() && open.back() >= depth) {
        out.push_back('}');
        open.pop_back();
        has_member.pop_back();
      }
      if (depth == prefix_depth) {
        if (found) {
          return Status::Corruption("two records for one path");
        }
        found = true;
      } else {
        if (open.empty() || open.back() != depth - 1) {
          continue;  // below a value that is not an object: not visible
        }
        if (has_member.back()) {
          out.push_back(',');
        }
        has_member.back() = true;
        core::AppendJsonString(out, decoded.path.segments().back());
        out.push_back(':');
      }
      if (kind == Kind::kObject) {
        out.push_back('{');
        open.push_back(depth);
        has_member.push_back(false);
      } else {
        out.append(json);
      }
      if (out.size() > (1 << 16)) {
        write(out);
        out.clear();
      }
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "reading the state"));
    while (!open.empty()) {
      out.push_back('}');
      open.pop_back();
    }
    write(out);
    return Status::Ok();
  }
};

StateReader::StateReader() : impl_(std::make_unique<Impl>()) {}
StateReader::~StateReader() = default;

Result<std::unique_ptr<StateReader>> StateReader::Open(const std::string& dir) {
  std::unique_ptr<StateReader> reader(new StateReader());
  Impl& im = *reader->impl_;
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
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(options, dir, cfs, &im.handles, &raw);
  if (!s.ok()) {
    if (s.IsIOError() || s.IsPathNotFound() || s.IsNotFound()) {
      return Status::NotFound("no Lattice state in '" + dir + "': " + s.ToString());
    }
    return FromRocks(s, "opening '" + dir + "'");
  }
  im.db.reset(raw);
  im.state_cf = im.handles[1];
  im.counters_cf = im.handles[2];
  im.meta_cf = im.handles[3];
  std::string format;
  s = im.db->Get(rocksdb::ReadOptions(), im.meta_cf, internal::kFormatKey, &format);
  if (!s.ok()) {
    return Status::Corruption("'" + dir + "' is not a Lattice state directory");
  }
  if (format != internal::kFormatValue) {
    return internal::WrongFormat(dir, format);
  }
  LATTICE_RETURN_IF_ERROR(im.ReadClock());
  return reader;
}

Result<std::unique_ptr<StateReader>> StateReader::OpenSecondary(const std::string& dir,
                                                                const std::string& secondary_dir) {
  std::unique_ptr<StateReader> reader(new StateReader());
  Impl& im = *reader->impl_;
  im.secondary = true;
  rocksdb::Options options;
  options.max_open_files = -1;  // required by secondary instances
  // Catch-ups that see new table files open them on this many threads, created per catch-up.
  options.max_file_opening_threads = 1;
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, dir, &names);
  if (!s.ok()) {
    return Status::NotFound("no Lattice state in '" + dir + "': " + s.ToString());
  }
  std::error_code ec;
  std::filesystem::create_directories(secondary_dir, ec);
  if (ec) {
    return Status::InvalidArgument("cannot create '" + secondary_dir + "': " + ec.message());
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {std::string(internal::kStateCf), rocksdb::ColumnFamilyOptions()},
      {std::string(internal::kMetaCf), rocksdb::ColumnFamilyOptions()},
  };
  const bool has_log = std::find(names.begin(), names.end(), internal::kChangesCf) != names.end();
  if (has_log) {
    cfs.push_back({std::string(internal::kChangesCf), rocksdb::ColumnFamilyOptions()});
  }
  std::vector<std::string> needed;
  for (const auto& cf : cfs) {
    needed.push_back(cf.name);
  }
  needed.emplace_back(internal::kCountersCf);  // followed on demand (Blame)
  for (const auto& name : needed) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      return Status::Corruption(
          "'" + dir + "' is not a Lattice state directory (no column family '" + name + "')");
    }
  }
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenAsSecondary(options, dir, secondary_dir, cfs, &im.handles, &raw);
  if (!s.ok()) {
    if (s.IsIOError() || s.IsPathNotFound() || s.IsNotFound()) {
      return Status::NotFound("no Lattice state in '" + dir + "': " + s.ToString());
    }
    return FromRocks(s, "opening '" + dir + "' as a secondary");
  }
  im.db.reset(raw);
  im.state_cf = im.handles[1];
  im.meta_cf = im.handles[2];
  im.changes_cf = has_log ? im.handles[3] : nullptr;
  im.dir = dir;
  im.secondary_dir = secondary_dir;
  std::string format;
  s = im.db->Get(rocksdb::ReadOptions(), im.meta_cf, internal::kFormatKey, &format);
  if (!s.ok()) {
    return Status::Corruption("'" + dir + "' is not a Lattice state directory");
  }
  if (format != internal::kFormatValue) {
    return internal::WrongFormat(dir, format);
  }
  LATTICE_RETURN_IF_ERROR(im.ReadClock());
  im.followed_commit = im.commit;
  return reader;
}

bool StateReader::has_change_log() const { return impl_->changes_cf != nullptr; }
std::uint64_t StateReader::commit() const { return impl_->commit; }
std::int64_t StateReader::watermark() const { return impl_->watermark; }

Result<CatchUpResult> StateReader::CatchUp(std::size_t max_changes) {
  Impl& im = *impl_;
  if (!im.secondary) {
    return Status::InvalidArgument("CatchUp needs a reader opened with OpenSecondary");
  }
  LATTICE_RETURN_IF_ERROR(FromRocks(im.db->TryCatchUpWithPrimary(), "catching up with the writer"));
  LATTICE_RETURN_IF_ERROR(im.ReadClock());
  CatchUpResult out;
  out.commit = im.commit;
  out.watermark = im.watermark;
  const std::uint64_t from = im.followed_commit;
  if (out.commit == from) {
    return out;
  }
  auto gap = [&]() {
    out.gap = true;
    im.followed_commit = out.commit;
    im.reported.clear();
    return out;
  };
  if (out.commit < from || im.changes_cf == nullptr) {
    return gap();
  }
  // The keys written by commits from+1 .. commit, each once, in order of first appearance.
  std::vector<std::string> keys;
  std::unordered_set<std::string_view> seen;
  std::vector<std::string> records;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        im.db->NewIterator(rocksdb::ReadOptions(), im.changes_cf));
    std::uint64_t expect = from + 1;
    for (it->Seek(internal::CommitKey(expect)); it->Valid() && expect <= out.commit;
         it->Next(), ++expect) {
      if (it->key().ToString() != internal::CommitKey(expect)) {
        return gap();  // trimmed (or a commit without an entry)
      }
      records.push_back(it->value().ToString());
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "reading the change log"));
    if (expect <= out.commit) {
      // The clock is written in the same batch as the entry: a missing entry means no log.
      return gap();
    }
  }
  std::size_t total = 0;
  for (const std::string& rec : records) {
    internal::RecordReader r(rec);
    std::uint8_t format;
    if (!r.Byte(format) || format != internal::kChangeLogKeys) {
      return Status::Corruption("change log record of an unknown format");
    }
    std::uint8_t op;
    while (r.Byte(op)) {
      std::uint64_t len;
      std::string_view key;
      if (!r.Varint(len) || !r.Bytes(len, key) || (op != 'P' && op != 'D')) {
        return Status::Corruption("malformed change log record");
      }
      if (op == 'P' && ++total <= max_changes) {
        keys.emplace_back(key);
      }
    }
  }
  if (total > max_changes) {
    return gap();
  }
  // Deduplicate (a path written by several commits is reported once, with its current value).
  {
    // `seen` views the strings in `unique` (reserved: never moved): a view of a key about to be
    // moved from would change under the set for short (inline-stored) keys.
    std::vector<std::string> unique;
    unique.reserve(keys.size());
    for (std::string& k : keys) {
      if (!seen.contains(k)) {
        unique.push_back(std::move(k));
        seen.insert(unique.back());
      }
    }
    seen.clear();
    keys = std::move(unique);
  }
  // Read every key's current record; remember which ones are erased, to report an erased subtree
  // once, at its root.
  struct Read {
    std::string key;
    Kind kind;
    std::string json;
    RecordStamp stamp;
  };
  std::vector<Read> reads;
  reads.reserve(keys.size());
  std::unordered_set<std::string> erased;
  {
    std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
    std::vector<rocksdb::PinnableSlice> values(keys.size());
    std::vector<rocksdb::Status> statuses(keys.size());
    im.db->MultiGet(rocksdb::ReadOptions(), im.state_cf, slices.size(), slices.data(),
                    values.data(), statuses.data());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (statuses[i].IsNotFound()) {
        continue;  // deleted since (garbage-collected tombstone or part of an erased subtree)
      }
      LATTICE_RETURN_IF_ERROR(FromRocks(statuses[i], "reading the state"));
      Read rd;
      rd.key = std::move(keys[i]);
      LATTICE_RETURN_IF_ERROR(Impl::DecodeNode(std::string_view(values[i].data(), values[i].size()),
                                               rd.kind, rd.json, rd.stamp));
      if (rd.kind == Kind::kAbsent) {
        erased.insert(rd.key);
      }
      reads.push_back(std::move(rd));
    }
  }
  auto under_erased = [&](const std::string& key) {
    // Every proper ancestor's key ends where a segment terminator 00 01 ends.
    for (std::size_t i = 0; i + 1 < key.size(); ++i) {
      if (key[i] == '\0' && key[i + 1] == '\x01' && i + 2 < key.size() &&
          erased.count(key.substr(0, i + 2)) != 0) {
        return true;
      }
    }
    return false;
  };
  auto forget_below = [&](const std::string& key) {
    for (auto it = im.reported.upper_bound(key);
         it != im.reported.end() && it->first.starts_with(key);) {
      it = im.reported.erase(it);
    }
  };
  for (Read& rd : reads) {
    if (rd.kind == Kind::kAbsent && under_erased(rd.key)) {
      continue;
    }
    auto known = im.reported.find(rd.key);
    LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(rd.key));
    Change c;
    if (rd.kind == Kind::kObject) {
      // An object is reported only where it replaced a value this reader reported; changes
      // below it are reported at their own paths.
      if (known == im.reported.end() || known->second == Impl::kAbsentMark) {
        continue;
      }
      bool found = false;
      std::string json;
      LATTICE_RETURN_IF_ERROR(im.WriteSubtree(
          rd.key, decoded.path.size(), [&](std::string_view chunk) { json.append(chunk); }, found));
      c.new_json = std::move(json);
      c.cause = ChangeCause::kSet;
    } else if (rd.kind == Kind::kAbsent) {
      if (known != im.reported.end() && known->second == Impl::kAbsentMark) {
        continue;  // already reported erased (a tombstone rewritten)
      }
      c.cause = ChangeCause::kErase;
    } else {
      c.new_json = rd.json;
      c.cause = rd.kind == Kind::kScalar ? ChangeCause::kSet : ChangeCause::kCounter;
    }
    if (known != im.reported.end() && known->second != Impl::kAbsentMark) {
      c.old_json = known->second;
    }
    c.path = decoded.path.ToString();
    c.blade = im.BladeName(rd.stamp.blade);
    c.seq = rd.stamp.seq;
    c.ts = rd.stamp.ts;
    forget_below(rd.key);
    if (im.reported.size() >= kOldValues) {
      im.reported.clear();
    }
    if (rd.kind == Kind::kObject) {
      im.reported.erase(rd.key);
    } else {
      im.reported[rd.key] = c.new_json ? *c.new_json : std::string(Impl::kAbsentMark);
    }
    out.changes.push_back(std::move(c));
  }
  im.followed_commit = out.commit;
  return out;
}

Status StateReader::ScanLeaves(const core::Path& prefix,
                               const std::function<void(const Leaf&)>& visit) const {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->state_cf));
  const std::string start = prefix.Encode();
  std::string json;
  std::string hidden;
  RecordStamp stamp;
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, start.size()) != start) {
      break;
    }
    if (!hidden.empty() && key.substr(0, hidden.size()) == hidden) {
      continue;
    }
    Kind kind;
    LATTICE_RETURN_IF_ERROR(Impl::DecodeNode(
        std::string_view(it->value().data(), it->value().size()), kind, json, stamp));
    if (kind == Kind::kObject) {
      continue;
    }
    hidden = std::string(key);
    if (kind == Kind::kAbsent) {
      continue;
    }
    LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
    const std::string blade = impl_->BladeName(stamp.blade);
    Leaf leaf;
    leaf.path = std::move(decoded.path);
    leaf.json = json;
    leaf.kind = kind == Kind::kScalar    ? LeafKind::kScalar
                : kind == Kind::kCounter ? LeafKind::kCounter
                : kind == Kind::kMax     ? LeafKind::kMax
                                         : LeafKind::kMin;
    leaf.blade = blade;
    leaf.seq = stamp.seq;
    leaf.ts = stamp.ts;
    visit(leaf);
  }
  return FromRocks(it->status(), "reading the state");
}

Result<std::optional<std::string>> StateReader::Get(const core::Path& path) const {
  std::string out;
  bool found = false;
  LATTICE_RETURN_IF_ERROR(impl_->WriteSubtree(
      path.Encode(), path.size(), [&](std::string_view chunk) { out.append(chunk); }, found));
  if (!found) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(std::move(out));
}

Result<std::optional<Provenance>> StateReader::Blame(const core::Path& path) const {
  const Impl& im = *impl_;
  LATTICE_ASSIGN_OR_RETURN(std::optional<std::string> value, Get(path));
  if (!value) {
    return std::optional<Provenance>();
  }
  Provenance p;
  p.value_json = std::move(*value);
  p.kind = "object";
  if (path.empty()) {
    return std::optional<Provenance>(std::move(p));
  }
  const std::string key = path.Encode();
  std::string record;
  LATTICE_RETURN_IF_ERROR(
      FromRocks(im.db->Get(rocksdb::ReadOptions(), im.state_cf, key, &record), "reading a node"));
  internal::NodeRecord rec;
  if (!internal::DecodeNodeRecord(record, rec)) {
    return Status::Corruption("malformed node record '" + path.ToString() + "'");
  }
  const auto kind = static_cast<Kind>(rec.kind);
  p.kind = kind == Kind::kScalar    ? "value"
           : kind == Kind::kCounter ? "counter"
           : kind == Kind::kMax     ? "max"
           : kind == Kind::kMin     ? "min"
                                    : "object";
  p.writer.blade = im.BladeName(rec.last.blade);
  p.writer.seq = rec.last.seq;
  p.writer.ts = rec.last.ts;
  if (rec.source != 0) {
    p.writer.source = im.SourceName(rec.source - 1);
    p.writer.offset = rec.offset;
    p.writer.line = rec.line;
  }
  if (internal::IsRegister(kind)) {
    std::string prefix = key;
    prefix.append(core::kKeySuffixMarker);
    std::unique_lock<std::mutex> counters_lock(im.counters_mu, std::defer_lock);
    if (im.secondary) {
      counters_lock.lock();
    }
    LATTICE_ASSIGN_OR_RETURN(auto counters, im.CountersForRead());
    std::unique_ptr<rocksdb::Iterator> it(
        counters.first->NewIterator(rocksdb::ReadOptions(), counters.second));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const std::string_view k(it->key().data(), it->key().size());
      if (k.substr(0, prefix.size()) != prefix) {
        break;
      }
      internal::SlotRecord slot;
      if (!internal::DecodeSlotRecord(std::string_view(it->value().data(), it->value().size()),
                                      slot)) {
        return Status::Corruption("malformed slot record under '" + path.ToString() + "'");
      }
      Provenance::Share share;
      share.blade = kind == Kind::kCounter ? std::string(k.substr(prefix.size()))
                                           : im.BladeName(slot.mark.blade);
      core::AppendJsonNumber(share.value_json, slot.value);
      share.seq = slot.mark.seq;
      share.ts = slot.mark.ts;
      p.shares.push_back(std::move(share));
    }
    LATTICE_RETURN_IF_ERROR(FromRocks(it->status(), "reading counter slots"));
    if (rec.has_retired) {
      p.retired_json.emplace();
      core::AppendJsonNumber(*p.retired_json, rec.retired);
    }
  }
  return std::optional<Provenance>(std::move(p));
}

Status StateReader::Scan(
    const core::Path& prefix,
    const std::function<void(const core::Path&, std::string_view json)>& visit) const {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->state_cf));
  const std::string start = prefix.Encode();
  std::string json;
  // Paths whose value is not an object hide everything under them; track the nearest one.
  std::string hidden;
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, start.size()) != start) {
      break;
    }
    if (!hidden.empty() && key.substr(0, hidden.size()) == hidden) {
      continue;
    }
    Kind kind;
    LATTICE_RETURN_IF_ERROR(
        Impl::DecodeVisible(std::string_view(it->value().data(), it->value().size()), kind, json));
    if (kind == Kind::kObject) {
      continue;
    }
    hidden = std::string(key);
    if (kind == Kind::kAbsent) {
      continue;
    }
    LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
    visit(decoded.path, json);
  }
  return FromRocks(it->status(), "reading the state");
}

Status StateReader::Dump(const std::function<void(std::string_view chunk)>& write) const {
  bool found = false;
  LATTICE_RETURN_IF_ERROR(impl_->WriteSubtree("", 0, write, found));
  write("\n");
  return Status::Ok();
}

std::vector<SourcePosition> StateReader::Positions() const {
  std::vector<SourcePosition> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->meta_cf));
  const std::string prefix(1, internal::kPositionPrefix);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    internal::RecordReader r(std::string_view(it->value().data(), it->value().size()));
    SourcePosition p;
    p.source = it->key().ToString().substr(1);
    if (r.Varint(p.offset) && r.Varint(p.line)) {
      out.push_back(std::move(p));
    }
  }
  return out;
}

}  // namespace lattice::crdt
