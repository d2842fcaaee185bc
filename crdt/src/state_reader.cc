// StateReader: canonical JSON straight from the ordered node records of a state directory.
#include "lattice/crdt/state_reader.h"

#include <rocksdb/db.h>

#include "engine.h"
#include "layout.h"
#include "records.h"

namespace lattice::crdt {

using internal::FromRocks;
using internal::Kind;

struct StateReader::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* state_cf = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;
  ~Impl() {
    for (auto* h : handles) {
      (void)db->DestroyColumnFamilyHandle(h);
    }
  }

  /// A node record's kind and visible JSON (empty for objects and tombstones).
  static Status DecodeVisible(std::string_view value, Kind& kind, std::string& json) {
    internal::RecordReader r(value);
    std::uint8_t format, k;
    std::uint64_t skip;
    if (!r.Byte(format) || format != 1 || !r.Byte(k) || k > static_cast<std::uint8_t>(Kind::kMin)) {
      return Status::Corruption("malformed node record");
    }
    for (int i = 0; i < 6; ++i) {  // two stamps
      if (!r.Varint(skip)) {
        return Status::Corruption("malformed node record");
      }
    }
    kind = static_cast<Kind>(k);
    json.clear();
    if (kind == Kind::kScalar) {
      json = std::string(r.Rest());
    } else if (internal::IsRegister(kind)) {
      core::Number n;
      for (int i = 0; i < 3; ++i) {  // boundary stamp
        if (!r.Varint(skip)) {
          return Status::Corruption("malformed register record");
        }
      }
      if (!r.Number(n)) {
        return Status::Corruption("malformed register record");
      }
      core::AppendJsonNumber(json, n);
    }
    return Status::Ok();
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
      LATTICE_RETURN_IF_ERROR(DecodeVisible(std::string_view(it->value().data(), it->value().size()), kind, json));
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
  im.meta_cf = im.handles[3];
  std::string format;
  s = im.db->Get(rocksdb::ReadOptions(), im.meta_cf, internal::kFormatKey, &format);
  if (!s.ok() || format != internal::kFormatValue) {
    return Status::Corruption("'" + dir + "' is not a Lattice state directory");
  }
  return reader;
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
