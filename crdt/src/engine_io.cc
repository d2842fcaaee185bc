// The merge engine's persistence hooks (collecting changes, restoring records) and its readers
// (canonical dump and point reads of the in-memory state).
#include <algorithm>
#include <cstring>

#include "change_set.h"
#include "engine.h"
#include "records.h"

namespace lattice::crdt::internal {

namespace {

constexpr std::size_t kMaxStamp = 3 * kMaxVarint;

char* PutStampTo(char* p, const Stamp& s) {
  p = PutVarintTo(p, ZigZag(s.ts));
  p = PutVarintTo(p, s.blade == nullptr ? 0 : std::uint64_t{s.blade->id} + 1);
  return PutVarintTo(p, s.seq);
}

// One room check per stamp, not one per varint (a commit writes a stamp per history entry).
void PutStamp(RecordWriter& w, const Stamp& s) { w.Advance(PutStampTo(w.Reserve(kMaxStamp), s)); }

}  // namespace

namespace {

// Engine::AppendKey, for a node under `root` (also used by WriteChanges() on the writer thread).
void AppendNodeKey(const Node* node, const Node* root, std::string& out) {
  // Collect the chain root-ward, then encode root-first.
  const Node* chain[128];
  std::vector<const Node*> deep;
  int depth = 0;
  for (const Node* n = node; n != nullptr && n != root; n = n->parent) {
    if (depth < 128) {
      chain[depth++] = n;
    } else {
      deep.push_back(n);
    }
  }
  if (deep.empty()) {
    // Keys without 00 bytes (nearly all) need no escaping: size the key once and copy each
    // segment with its 00 01 end. A commit encodes a key per record it writes.
    std::size_t total = 0;
    for (int i = 0; i < depth; ++i) {
      total += chain[i]->key.size() + 2;
    }
    const std::size_t start = out.size();
    out.resize(start + total);
    char* p = out.data() + start;
    for (int i = depth - 1; i >= 0; --i) {
      const std::string& key = chain[i]->key;
      if (std::memchr(key.data(), '\0', key.size()) != nullptr) {
        out.resize(static_cast<std::size_t>(p - out.data()));
        for (; i >= 0; --i) {
          core::AppendEncodedSegment(out, chain[i]->key);
        }
        return;
      }
      std::memcpy(p, key.data(), key.size());
      p += key.size();
      *p++ = '\0';
      *p++ = '\x01';
    }
    return;
  }
  for (auto it = deep.rbegin(); it != deep.rend(); ++it) {
    core::AppendEncodedSegment(out, (*it)->key);
  }
  for (int i = depth - 1; i >= 0; --i) {
    core::AppendEncodedSegment(out, chain[i]->key);
  }
}

}  // namespace

void Engine::AppendKey(const Node* node, std::string& out) const {
  AppendNodeKey(node, root_, out);
}

void Engine::EncodeNode(const Node* node, std::string& out) const {
  RecordWriter w(out);
  w.Byte(kNodeFormat);
  w.Byte(static_cast<std::uint8_t>(node->kind));
  PutStamp(w, node->last);
  PutStamp(w, node->reset);
  w.Varint(node->origin.source);
  w.Varint(node->origin.offset);
  w.Varint(node->origin.line);
  w.Byte(node->has_ttl ? 1 : 0);
  if (node->has_ttl) {
    w.Varint(ZigZag(node->ttl->final_ts));
    w.Varint(node->ttl->pending_size());
    node->ttl->ForEachPending([&](std::int64_t ts) { w.Varint(ZigZag(ts)); });
  }
  if (node->kind == Kind::kScalar) {
    w.Bytes(node->scalar);
  } else if (IsRegister(node->kind)) {
    PutStamp(w, node->reg->boundary);
    w.Number(node->reg->total);
    w.Byte(node->reg->has_retired ? 1 : 0);
    if (node->reg->has_retired) {
      w.Number(node->reg->retired);
    }
  }
}

void Engine::EncodeSlot(const Slot& slot, std::string& out) const {
  RecordWriter w(out);
  w.Byte(slot.has_base ? 1 : 0);
  if (slot.has_base) {
    w.Number(slot.base);
    PutStamp(w, slot.base_stamp);
  }
  w.Varint(slot.front_skip);
  w.Number(slot.value);
  PutStamp(w, slot.blade != nullptr ? slot.last : slot.value_stamp);
}

namespace {

void AppendChunkNo(std::string& key, std::uint64_t no) {
  char be[8];
  for (int i = 0; i < 8; ++i) {
    be[i] = static_cast<char>((no >> (56 - 8 * i)) & 0xff);
  }
  key.append(be, 8);
}

ChangeSet::Record& AddRecord(ChangeSet& out, ChangeSet::Op op, const Node* node,
                             const Blade* blade = nullptr, std::uint64_t n = 0) {
  ChangeSet::Record& r = out.records.emplace_back();
  r.op = op;
  r.node = node;
  r.blade = blade;
  r.n = n;
  return r;
}

// The value written into out.values since `start` becomes the record's.
void TakeValue(ChangeSet& out, ChangeSet::Record& r, std::size_t start) {
  r.value = start;
  r.value_size = out.values.size() - start;
}

}  // namespace

void Engine::CollectSlot(ChangeSet& out, const Node* node, Slot& slot) {
  using Op = ChangeSet::Op;
  for (std::uint64_t no : slot.deleted_chunks) {
    AddRecord(out, Op::kDeleteHistory, node, slot.blade, no);
  }
  slot.deleted_chunks.clear();
  if (slot.rewrite) {
    for (const auto& [no, count] : slot.chunks) {
      AddRecord(out, Op::kDeleteHistory, node, slot.blade, no);
    }
    slot.chunks.clear();
    slot.front_skip = 0;
    slot.unpersisted = static_cast<std::uint32_t>(slot.history.size());
    slot.rewrite = false;
  }
  if (slot.unpersisted > 0) {
    // The entries are copied, not encoded: the writer encodes them (the next batch may append
    // to this history or fold its front meanwhile).
    ChangeSet::Record& r = AddRecord(out, Op::kPutHistory, node, slot.blade, commits_);
    r.value = out.entries.size();
    r.value_size = slot.unpersisted;
    out.entries.insert(out.entries.end(), slot.history.end() - slot.unpersisted,
                       slot.history.end());
    slot.chunks.emplace_back(commits_, slot.unpersisted);
    slot.unpersisted = 0;
  }
  const std::size_t start = out.values.size();
  EncodeSlot(slot, out.values);
  TakeValue(out, AddRecord(out, Op::kPutSlot, node, slot.blade), start);
  slot.dirty = false;
  slot.persisted = true;
}

void Engine::EncodeBlade(const Blade& blade, std::string& out) const {
  RecordWriter w(out);
  w.Varint(blade.name.size());
  w.Bytes(blade.name);
  w.Byte(static_cast<std::uint8_t>((blade.has_seq ? 1 : 0) | (blade.has_evicted ? 2 : 0)));
  w.Varint(blade.last_seq);
  w.Varint(blade.evicted_max);
  w.Varint(static_cast<std::uint64_t>(blade.ring_count));
  w.Varint(static_cast<std::uint64_t>(blade.ring_next));
  for (int i = 0; i < blade.ring_count; ++i) {
    w.Varint(blade.ring[static_cast<std::size_t>(i)].first);
    w.Varint(blade.ring[static_cast<std::size_t>(i)].second);
  }
  w.Varint(ZigZag(blade.last_ts));
}

void Engine::CollectChanges(ChangeSet& out) {
  using Op = ChangeSet::Op;
  LATTICE_DCHECK(out.records.empty() && out.dead.empty());
  BuryDoomed();      // dead nodes are skipped below, and their records deleted
  MaterializeAll();  // pending increments go to their slots' records
  if (pager_ != nullptr) {
    // The pages this commit writes records under may not leave memory before it is written.
    for (Node* node : dirty_) {
      if (!node->dead) {
        NotePageWrite(node);
      }
    }
    for (Node* node : graveyard_) {
      NotePageWrite(node);
    }
    for (Node* node : covered_) {
      NotePageWrite(node);
    }
  }
  out.root = root_;
  auto delete_dropped = [&](Node* node) {
    if (!node->has_dropped) {
      return;  // without reading line 3
    }
    node->has_dropped = false;
    for (const DroppedSlot& d : node->dropped_slots) {
      AddRecord(out, Op::kDeleteSlot, node, d.blade);
      for (std::uint64_t no : d.chunks) {
        AddRecord(out, Op::kDeleteHistory, node, d.blade, no);
      }
    }
    node->dropped_slots.clear();
  };
  // Dead and dirty nodes are spread over the heap: touch them a few ahead of use. Only the lines
  // read without a flag of line 0 saying so: a dead node's lines 0-1 (flags, key, register), a
  // dirty node's lines 0-2 (and origin, scalar); line 3 (TTL state, dropped slots) is read only
  // behind `has_ttl` / `has_dropped`.
  constexpr std::size_t kAhead = 6;
  const auto prefetch = [](const Node* node, std::size_t lines) {
    const char* p = reinterpret_cast<const char*>(node);
    for (std::size_t line = 0; line < lines * 64; line += 64) {
      __builtin_prefetch(p + line);
    }
  };
  auto delete_expiry = [&](Node* node) {
    if (node->has_ttl && node->ttl->indexed != TtlState::kNone) {
      AddRecord(out, Op::kDeleteExpiry, node, nullptr,
                static_cast<std::uint64_t>(node->ttl->indexed));
      node->ttl->indexed = TtlState::kNone;
    }
  };
  // Deletes first: a path can die and be born again within one batch.
  out.subtrees.swap(subtree_deletes_);  // subtree_deletes_ gets the released set's (empty) list
  subtree_deletes_.clear();
  for (std::size_t i = 0; i < out.subtrees.size(); ++i) {
    AddRecord(out, Op::kDeleteSubtree, nullptr, nullptr, i);
  }
  for (Node* node : covered_) {
    delete_expiry(node);  // its records are in a deleted range; its index entry is not
    if (node->reg) {
      dead_regs_.push_back(node);
    }
  }
  for (Node* node : plain_dead_) {
    AddRecord(out, Op::kDeleteNode, node);  // only its record (BuryDoomed looked)
  }
  for (std::size_t i = 0; i < graveyard_.size(); ++i) {
    if (i + kAhead < graveyard_.size()) {
      prefetch(graveyard_[i + kAhead], 2);
    }
    Node* node = graveyard_[i];
    delete_dropped(node);
    if (node->reg) {
      dead_regs_.push_back(node);  // freed by ReleaseChanges
    }
    if (!node->persisted) {
      continue;
    }
    delete_expiry(node);
    AddRecord(out, Op::kDeleteNode, node);
    if (node->reg) {
      for (const Slot& slot : node->reg->slots) {
        if (slot.persisted || !slot.chunks.empty() || !slot.deleted_chunks.empty()) {
          AddRecord(out, Op::kDeleteSlot, node, slot.blade);
          for (std::uint64_t no : slot.deleted_chunks) {
            AddRecord(out, Op::kDeleteHistory, node, slot.blade, no);
          }
          for (const auto& [no, count] : slot.chunks) {
            AddRecord(out, Op::kDeleteHistory, node, slot.blade, no);
          }
        }
      }
    }
  }
  for (; persisted_sources_ < source_names_.size(); ++persisted_sources_) {
    const std::size_t start = out.values.size();
    out.values.append(source_names_[persisted_sources_]);
    TakeValue(out, AddRecord(out, Op::kPutSource, nullptr, nullptr, persisted_sources_), start);
  }
  for (Blade* blade : dirty_blades_) {
    const std::size_t start = out.values.size();
    EncodeBlade(*blade, out.values);
    TakeValue(out, AddRecord(out, Op::kPutBlade, nullptr, nullptr, blade->id), start);
    blade->dirty = false;
  }
  dirty_blades_.clear();
  // One pass over the dirty nodes: each node's dropped slots are deleted just before its own
  // records are put (a dropped slot's keys are under the node's path, and no other live node has
  // that path; dead nodes' keys were deleted above).
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    if (i + kAhead < dirty_.size()) {
      prefetch(dirty_[i + kAhead], 3);
    }
    Node* node = dirty_[i];
    if (!node->dirty) {
      continue;  // listed twice: a node that died unwritten was reused and written (BuryDoomed)
    }
    node->dirty = false;
    if (node->dead) {
      continue;
    }
    delete_dropped(node);
    const std::size_t start = out.values.size();
    EncodeNode(node, out.values);
    TakeValue(out, AddRecord(out, Op::kPutNode, node), start);
    node->persisted = true;
    if (node->has_ttl) {
      const std::int64_t due = NextTtlKey(*node->ttl);
      if (due != node->ttl->indexed) {
        if (node->ttl->indexed != TtlState::kNone) {
          AddRecord(out, Op::kDeleteExpiry, node, nullptr,
                    static_cast<std::uint64_t>(node->ttl->indexed));
        }
        if (due != TtlState::kNone) {
          AddRecord(out, Op::kPutExpiry, node, nullptr, static_cast<std::uint64_t>(due));
        }
        node->ttl->indexed = due;
      }
    }
    if (node->reg) {
      for (Slot& slot : node->reg->slots) {
        if (slot.dirty) {
          CollectSlot(out, node, slot);
        }
      }
    }
  }
  dirty_.clear();
  ++commits_;
  // The dead nodes' keys are read until the records are written: ReleaseChanges() frees them.
  out.dead.insert(out.dead.end(), graveyard_.begin(), graveyard_.end());
  out.dead.insert(out.dead.end(), covered_.begin(), covered_.end());
  out.dead.insert(out.dead.end(), plain_dead_.begin(), plain_dead_.end());
  graveyard_.clear();
  covered_.clear();
  plain_dead_.clear();
}

void Engine::ReleaseChanges(ChangeSet& changes) {
  // Only the registers are freed here (the nodes that hold one were listed by CollectChanges);
  // the nodes go back to the free list without being read: AllocNode() resets what a reused
  // one still holds, on lines it writes anyway (freeing each here was a cache miss per node).
  constexpr std::size_t kAhead = 6;
  for (std::size_t i = 0; i < dead_regs_.size(); ++i) {
    if (i + kAhead < dead_regs_.size()) {
      __builtin_prefetch(dead_regs_[i + kAhead]->reg.get());
    }
    dead_regs_[i]->reg.reset();
  }
  dead_regs_.clear();
  const std::size_t from = free_nodes_.size();
  free_nodes_.insert(free_nodes_.end(), changes.dead.begin(), changes.dead.end());
  SortFree(from);  // reused in address order (see SortFree)
  changes.dead.clear();
  changes.records.clear();
  changes.values.clear();
  changes.entries.clear();
  changes.subtrees.clear();
}

void WriteChanges(const ChangeSet& changes, RecordSink& sink, std::string& key,
                  std::string& value) {
  using Op = ChangeSet::Op;
  // Consecutive records of one node (its record, its slots, their chunks) share its key.
  const Node* key_node = nullptr;
  std::size_t node_key_len = 0;
  // The nodes were last touched by the merge thread, on the other core, and are spread over its
  // slabs: nearly all of AppendNodeKey's time was the first load of each node's line 0 (key and
  // parent). Fetch a node's line 0 kAhead records ahead and its parent's half as far ahead.
  constexpr std::size_t kAhead = 16;
  const std::vector<ChangeSet::Record>& records = changes.records;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const ChangeSet::Record& r = records[i];
    if (i + kAhead < records.size() && records[i + kAhead].node != nullptr) {
      __builtin_prefetch(records[i + kAhead].node);
    }
    if (i + kAhead / 2 < records.size() && records[i + kAhead / 2].node != nullptr) {
      __builtin_prefetch(records[i + kAhead / 2].node->parent);
    }
    const auto v = [&] { return std::string_view(changes.values).substr(r.value, r.value_size); };
    switch (r.op) {
      case Op::kDeleteSubtree:
        sink.DeleteSubtree(changes.subtrees[r.n]);
        continue;
      case Op::kPutSource:
        sink.PutSource(static_cast<std::uint32_t>(r.n), v());
        continue;
      case Op::kPutBlade:
        sink.PutBlade(static_cast<std::uint32_t>(r.n), v());
        continue;
      default:
        break;
    }
    if (r.node != key_node) {
      key.clear();
      AppendNodeKey(r.node, changes.root, key);
      key_node = r.node;
      node_key_len = key.size();
    } else {
      key.resize(node_key_len);
    }
    switch (r.op) {
      case Op::kDeleteExpiry:
        sink.DeleteExpiry(static_cast<std::int64_t>(r.n), key);
        continue;
      case Op::kPutExpiry:
        sink.PutExpiry(static_cast<std::int64_t>(r.n), key);
        continue;
      case Op::kDeleteNode:
        sink.DeleteNode(key);
        continue;
      case Op::kPutNode:
        sink.PutNode(key, v());
        continue;
      default:
        break;
    }
    key.append(core::kKeySuffixMarker);
    if (r.blade != nullptr) {
      key.append(r.blade->name);
    }
    switch (r.op) {
      case Op::kDeleteSlot:
        sink.DeleteSlot(key);
        break;
      case Op::kPutSlot:
        sink.PutSlot(key, v());
        break;
      case Op::kDeleteHistory:
        AppendChunkNo(key, r.n);
        sink.DeleteHistory(key);
        break;
      case Op::kPutHistory: {
        AppendChunkNo(key, r.n);
        value.clear();
        {
          RecordWriter w(value);  // flushed into `value` when it goes
          w.Varint(r.value_size);
          for (std::size_t e_i = r.value; e_i < r.value + r.value_size; ++e_i) {
            const RunEntry& e = changes.entries[e_i];
            char* p = w.Reserve(kMaxStamp + kMaxNumber);
            p = PutStampTo(p, e.stamp());
            w.Advance(PutNumberTo(p, e.amount()));
          }
        }
        sink.PutHistory(key, value);
        break;
      }
      default:
        break;
    }
  }
}

namespace {

bool ToStamp(const RawStamp& raw, const std::vector<Blade*>& blades, Stamp& s) {
  s.ts = raw.ts;
  s.seq = raw.seq;
  if (raw.blade == 0) {
    s.blade = nullptr;
    return true;
  }
  if (raw.blade - 1 >= blades.size() || blades[raw.blade - 1] == nullptr) {
    return false;
  }
  s.blade = blades[raw.blade - 1];
  return true;
}

bool ReadStamp(RecordReader& r, const std::vector<Blade*>& blades, Stamp& s) {
  std::uint64_t ts, blade, seq;
  if (!r.Varint(ts) || !r.Varint(blade) || !r.Varint(seq)) {
    return false;
  }
  s.ts = UnZigZag(ts);
  s.seq = seq;
  if (blade == 0) {
    s.blade = nullptr;
    return true;
  }
  if (blade - 1 >= blades.size() || blades[blade - 1] == nullptr) {
    return false;
  }
  s.blade = blades[blade - 1];
  return true;
}

}  // namespace

Status Engine::LoadBlade(std::uint32_t id, std::string_view value) {
  RecordReader r(value);
  std::uint64_t len, last_seq, evicted_max, count, next;
  std::string_view name;
  std::uint8_t flags;
  if (!r.Varint(len) || !r.Bytes(len, name) || !r.Byte(flags) || !r.Varint(last_seq) ||
      !r.Varint(evicted_max) || !r.Varint(count) || !r.Varint(next) || count > Blade::kRing ||
      next >= Blade::kRing) {
    return Status::Corruption("malformed blade record " + std::to_string(id));
  }
  auto blade = std::make_unique<Blade>();
  blade->name = std::string(name);
  blade->id = id;
  blade->has_seq = (flags & 1) != 0;
  blade->has_evicted = (flags & 2) != 0;
  blade->evicted_max = evicted_max;
  blade->last_seq = last_seq;
  blade->ring_count = static_cast<int>(count);
  blade->ring_next = static_cast<int>(next);
  for (std::uint64_t i = 0; i < count; ++i) {
    if (!r.Varint(blade->ring[i].first) || !r.Varint(blade->ring[i].second)) {
      return Status::Corruption("malformed blade record " + std::to_string(id));
    }
  }
  std::uint64_t last_ts;
  if (!r.Varint(last_ts)) {
    return Status::Corruption("malformed blade record " + std::to_string(id));
  }
  blade->last_ts = UnZigZag(last_ts);
  if (blades_by_id_.size() <= id) {
    blades_by_id_.resize(id + 1, nullptr);
  }
  if (blades_by_id_[id] != nullptr || blades_by_name_.contains(blade->name)) {
    return Status::Corruption("blade record " + std::to_string(id) + " is a duplicate");
  }
  blades_by_id_[id] = blade.get();
  blades_by_name_.emplace(blade->name, std::move(blade));
  return Status::Ok();
}

Status Engine::LoadNode(std::string_view key, std::string_view value) {
  LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
  const auto& segments = decoded.path.segments();
  if (segments.empty() || !decoded.rest.empty()) {
    return Status::Corruption("node record with a malformed key");
  }
  Node* parent = root_;
  for (std::size_t i = 0; i + 1 < segments.size(); ++i) {
    parent = FindChild(parent, segments[i]);
    if (parent == nullptr) {
      return Status::Corruption("node record '" + decoded.path.ToString() + "' has no parent");
    }
  }
  if (FindChild(parent, segments.back()) != nullptr) {
    return Status::Corruption("node record '" + decoded.path.ToString() + "' appears twice");
  }
  Node* node = CreateChild(parent, segments.back());
  last_loaded_ = node;
  NodeRecord rec;
  if (!DecodeNodeRecord(value, rec) || !ToStamp(rec.last, blades_by_id_, node->last) ||
      !ToStamp(rec.reset, blades_by_id_, node->reset) || rec.source > source_names_.size()) {
    return Status::Corruption("malformed node record '" + decoded.path.ToString() + "'");
  }
  node->kind = static_cast<Kind>(rec.kind);
  node->persisted = true;
  node->origin.source = static_cast<std::uint32_t>(rec.source);
  node->origin.offset = rec.offset;
  node->origin.line = rec.line;
  if (node->ttl) {  // a TTL rule matches (CreateChild): its state, or the newest write as pending
    if (rec.has_ttl) {
      node->ttl->final_ts = rec.ttl_final;
      node->ttl->SetPending(std::move(rec.ttl_pending));
    } else if (node->last.ts != TtlState::kNone) {
      node->ttl->SetPending({node->last.ts});
      node->dirty = false;
      MarkDirty(node);
    }
    loaded_ttl_.push_back({node, node->uid});
    if (NextTtlKey(*node->ttl) != TtlState::kNone) {
      ++loaded_ttl_due_;
    }
  } else if (rec.has_ttl) {
    MarkDirty(node);  // no rule matches any more: rewrite the record without TTL state
  }
  if (node->kind == Kind::kScalar) {
    node->scalar = std::string(rec.scalar);
  } else if (IsRegister(node->kind)) {
    node->reg = std::make_unique<Register>();
    if (!ToStamp(rec.boundary, blades_by_id_, node->reg->boundary)) {
      return Status::Corruption("malformed register record '" + decoded.path.ToString() + "'");
    }
    node->reg->total = rec.total;
    node->reg->has_retired = rec.has_retired;
    node->reg->retired = rec.has_retired ? rec.retired : core::Number::Int(0);
  } else if (node->kind == Kind::kAbsent) {
    tombstones_.push_back({node->last.ts, {node, node->uid}});
  }
  return Status::Ok();
}

Status Engine::LoadSource(std::uint32_t id, std::string_view name) {
  if (id != source_names_.size() || source_ids_.contains(name)) {
    return Status::Corruption("source record " + std::to_string(id) + " is out of order or a duplicate");
  }
  source_names_.emplace_back(name);
  source_ids_.emplace(source_names_.back(), id);
  persisted_sources_ = source_names_.size();
  return Status::Ok();
}

Result<std::pair<Node*, Slot*>> Engine::FindSlot(std::string_view key) {
  LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
  if (decoded.rest.size() < core::kKeySuffixMarker.size()) {
    return Status::Corruption("slot record with a malformed key");
  }
  const std::string_view blade_name = decoded.rest.substr(core::kKeySuffixMarker.size());
  Node* node = root_;
  for (const auto& seg : decoded.path.segments()) {
    node = FindChild(node, seg);
    if (node == nullptr) {
      return Status::Corruption("slot record for missing node '" + decoded.path.ToString() + "'");
    }
  }
  if (!IsRegister(node->kind)) {
    return Status::Corruption("slot record for non-register '" + decoded.path.ToString() + "'");
  }
  const Blade* blade = nullptr;
  if (!blade_name.empty()) {
    auto it = blades_by_name_.find(blade_name);
    if (it == blades_by_name_.end()) {
      return Status::Corruption("slot record for unknown blade");
    }
    blade = it->second.get();
  }
  for (Slot& slot : node->reg->slots) {
    if (slot.blade == blade) {
      return std::pair<Node*, Slot*>(node, &slot);
    }
  }
  return std::pair<Node*, Slot*>(node, nullptr);
}

Status Engine::LoadSlot(std::string_view key, std::string_view value) {
  LATTICE_ASSIGN_OR_RETURN(auto found, FindSlot(key));
  auto [node, existing] = found;
  if (existing != nullptr) {
    return Status::Corruption("slot record appears twice");
  }
  Register& reg = *node->reg;
  if (reg.slots.empty()) {
    loaded_registers_.push_back(node);
  }
  LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
  const std::string_view blade_name = decoded.rest.substr(core::kKeySuffixMarker.size());
  Slot& slot = blade_name.empty() ? reg.slots.emplace_back()
                                  : SlotFor(reg, blades_by_name_.find(blade_name)->second.get());
  SlotRecord rec;
  if (!DecodeSlotRecord(value, rec)) {
    return Status::Corruption("malformed slot record");
  }
  slot.has_base = rec.has_base;
  if (slot.has_base) {
    slot.base = rec.base;
    if (!ToStamp(rec.base_stamp, blades_by_id_, slot.base_stamp)) {
      return Status::Corruption("malformed slot record");
    }
  }
  Stamp mark;
  if (!ToStamp(rec.mark, blades_by_id_, mark)) {
    return Status::Corruption("malformed slot record");
  }
  if (slot.blade != nullptr) {
    slot.last = mark;
  }
  slot.front_skip = static_cast<std::uint32_t>(rec.front_skip);
  slot.persisted = true;
  return Status::Ok();
}

Status Engine::LoadHistory(std::string_view key, std::string_view value) {
  if (key.size() < 8) {
    return Status::Corruption("history record with a malformed key");
  }
  std::uint64_t no = 0;
  for (std::size_t i = key.size() - 8; i < key.size(); ++i) {
    no = (no << 8) | static_cast<std::uint8_t>(key[i]);
  }
  LATTICE_ASSIGN_OR_RETURN(auto found, FindSlot(key.substr(0, key.size() - 8)));
  Slot* slot = found.second;
  if (slot == nullptr) {
    return Status::Corruption("history record without its slot");
  }
  RecordReader r(value);
  std::uint64_t count;
  if (!r.Varint(count) || count > value.size()) {
    return Status::Corruption("malformed history record");
  }
  const std::uint64_t skip = slot->chunks.empty() ? slot->front_skip : 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    Stamp stamp;
    core::Number amount;
    if (!ReadStamp(r, blades_by_id_, stamp) || !r.Number(amount)) {
      return Status::Corruption("malformed history record");
    }
    if (i >= skip) {
      slot->history.push_back({stamp, amount});
    }
  }
  if (!slot->chunks.empty() && slot->chunks.back().first >= no) {
    return Status::Corruption("history records out of order");
  }
  slot->chunks.emplace_back(no, static_cast<std::uint32_t>(count));
  return Status::Ok();
}

Status Engine::LoadExpiry(std::int64_t due, std::string_view key) {
  LATTICE_ASSIGN_OR_RETURN(core::Path::Decoded decoded, core::Path::Decode(key));
  Node* node = root_;
  for (const auto& seg : decoded.path.segments()) {
    node = FindChild(node, seg);
    if (node == nullptr) {
      break;
    }
  }
  if (node == nullptr || node == root_ || !decoded.rest.empty() || !node->ttl ||
      node->ttl->indexed != TtlState::kNone || NextTtlKey(*node->ttl) != due) {
    return Status::Corruption("expiry index entry at " + std::to_string(due) + " for '" +
                              decoded.path.ToString() + "' does not match the state");
  }
  node->ttl->indexed = due;
  ++loaded_expiry_;
  ScheduleTtl(node);
  return Status::Ok();
}

void Engine::FinishRegisters() {
  for (Node* node : loaded_registers_) {
    Register& reg = *node->reg;
    bool has_history = false;
    for (Slot& slot : reg.slots) {
      RecomputeSlot(node->kind, slot);
      has_history = has_history || !slot.history.empty();
    }
    RecomputeTotal(node);
    NoteMagnitude(reg.total);
    for (const Slot& slot : reg.slots) {
      if (slot.value.is_int) {
        const std::uint64_t mag = slot.value.i < 0
                                      ? std::uint64_t{0} - static_cast<std::uint64_t>(slot.value.i)
                                      : static_cast<std::uint64_t>(slot.value.i);
        reg.abs_bound = std::max(reg.abs_bound, mag);
      }
    }
    if (has_history) {
      TrackRegister(node);
    }
    if (node->kind == Kind::kCounter && options_.counter_slot_ttl_ms > 0) {
      for (const Slot& slot : reg.slots) {
        ScheduleSlot(node, slot.blade, slot.last.ts);
      }
    }
  }
  loaded_registers_.clear();
}

Status Engine::FinishLoad(bool index_loaded) {
  FinishRegisters();
  if (index_loaded) {
    // The index scheduled every TTL node that can become due; check that none is missing.
    if (loaded_expiry_ != loaded_ttl_due_) {
      return Status::Corruption("the expiry index has " + std::to_string(loaded_expiry_) +
                                " entries for " + std::to_string(loaded_ttl_due_) +
                                " TTL nodes that can become due");
    }
  } else {
    // Another set of rules (or none) built the stored index: the store deletes it, and the next
    // commit writes every TTL node's entry again.
    for (auto [node, uid] : loaded_ttl_) {
      if (node->uid == uid && !node->dead && node->ttl) {
        node->ttl->indexed = TtlState::kNone;
        MarkDirty(node);
        ScheduleTtl(node);
      }
    }
  }
  loaded_ttl_.clear();
  loaded_ttl_due_ = 0;
  loaded_expiry_ = 0;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Paging (docs/state-layout.md, "Bounded memory")

void Engine::EnablePaging(PageSource* source, std::uint64_t budget_bytes, std::uint32_t page_depth,
                          bool opening) {
  pager_ = source;
  budget_ = budget_bytes;
  page_depth_ = std::max<std::uint32_t>(1, page_depth);
  opening_ = opening;
  if (!opening) {
    RegisterPages(root_, 0);
  }
}

void Engine::FinishOpen() {
  opening_ = false;
  if (pager_ != nullptr) {
    RegisterPages(root_, 0);
  }
}

Status Engine::LoadPagedStub(std::string_view prefix) {
  Node* node = last_loaded_;
  std::string key;
  if (node != nullptr) {
    AppendKey(node, key);
  }
  if (key != prefix) {
    return Status::Corruption("records below a path without a node record");
  }
  if (node->kind != Kind::kObject) {
    return Status::Corruption("records under the non-object '" +
                              (node != nullptr ? PathText(node) : std::string()) + "'");
  }
  node->child_count = 1;  // paged out: FaultIn counts the children it reads
  return Status::Ok();
}

void Engine::RegisterPages(Node* node, std::uint32_t depth) {
  if (depth == page_depth_) {
    if (node->first_child != nullptr && !node->in_clock) {
      node->in_clock = true;
      pages_.emplace_back(node, node->uid);
    }
    return;
  }
  for (Node* c = node->first_child; c != nullptr; c = c->next) {
    RegisterPages(c, depth + 1);
  }
}

Node* Engine::PageRootOf(Node* node) const {
  std::uint32_t depth = 0;
  for (const Node* n = node; n != root_ && n != nullptr; n = n->parent) {
    ++depth;
  }
  if (depth <= page_depth_) {
    return nullptr;  // at or above the page depth: in no page
  }
  for (; depth > page_depth_; --depth) {
    node = node->parent;
  }
  return node;
}

void Engine::NotePageWrite(Node* node) {
  Node* page = PageRootOf(node);
  if (page == nullptr || page->dead) {
    return;
  }
  page->page_commit = commits_;
  page->page_touched = true;
  if (!page->in_clock) {
    page->in_clock = true;
    pages_.emplace_back(page, page->uid);
  }
}

void Engine::SweepPages(std::uint64_t durable_below) {
  if (pager_ == nullptr || !page_error_.ok() || memory_estimate() <= budget_) {
    return;
  }
  const std::uint64_t target = budget_ - budget_ / 10;
  // Two turns of the clock at most: a page touched since the last turn gets a second chance.
  std::size_t steps = 2 * pages_.size();
  while (memory_estimate() > target && steps > 0 && !pages_.empty()) {
    --steps;
    if (clock_hand_ >= pages_.size()) {
      clock_hand_ = 0;
    }
    auto [node, uid] = pages_[clock_hand_];
    const bool gone = node->uid != uid || node->dead;
    if (gone || node->first_child == nullptr) {
      // The page root is gone, or nothing is in memory below it: the clock holds only pages in
      // memory (a write below a root registers it again, NotePageWrite, and so does FaultIn).
      if (!gone) {
        node->in_clock = false;
      }
      pages_[clock_hand_] = pages_.back();
      pages_.pop_back();
      continue;
    }
    ++clock_hand_;
    if (node->page_commit >= durable_below) {
      continue;  // its last write is not on disk yet
    }
    if (node->page_touched) {
      node->page_touched = false;
      continue;
    }
    if (PageOut(node)) {
      --clock_hand_;
      node->in_clock = false;
      pages_[clock_hand_] = pages_.back();
      pages_.pop_back();
    }
  }
}

bool Engine::PageOut(Node* root) {
  std::vector<Node*> nodes;
  for (Node* c = root->first_child; c != nullptr; c = c->next) {
    nodes.push_back(c);
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i];
    // Clean: written, and nothing the records do not hold (TTL nodes below the page root stay:
    // their index entries are not under the page's key range).
    if (n->dirty || n->dead || !n->persisted || n->ttl || !n->dropped_slots.empty()) {
      return false;
    }
    if (n->reg) {
      if (!n->reg->pending.empty()) {
        return false;
      }
      for (const Slot& slot : n->reg->slots) {
        if (slot.dirty || slot.rewrite || slot.unpersisted > 0 || !slot.deleted_chunks.empty()) {
          return false;
        }
      }
    }
    for (Node* c = n->first_child; c != nullptr; c = c->next) {
      nodes.push_back(c);
    }
  }
  for (Node* n : nodes) {
    if (n->reg) {
      UntrackRegister(n);  // the fold list holds raw pointers; a fault-in tracks it again
    }
    n->DropIndex();
    // Queue entries (tombstones, TTL, slot folding) that name it are stale from now on.
    n->dead = true;
    std::string().swap(n->scalar);
    std::string().swap(n->key);
    FreeNode(n);
    --live_nodes_;
  }
  root->first_child = nullptr;
  root->DropIndex();
  LATTICE_DCHECK(root->child_count != 0);
  ++pages_out_;
  return true;
}

void Engine::FaultIn(Node* node) {
  LATTICE_DCHECK(pager_ != nullptr && !faulting_);
  faulting_ = true;
  node->child_count = 0;  // CreateChild counts the children again
  std::string prefix;
  AppendKey(node, prefix);
  Status st = pager_->LoadPage(prefix, *this);
  if (st.ok() && node->child_count == 0) {
    st = Status::Corruption("no records under a paged-out node");
  }
  if (opening_) {
    // Read back while the store opens (LoadExpiry): FinishLoad() finishes its registers and
    // schedules its TTL nodes with everything else.
    faulting_ = false;
    ++pages_in_;
    if (!st.ok() && page_error_.ok()) {
      page_error_ = Status::Corruption("reading back the paged-out subtree '" + PathText(node) +
                                       "': " + st.ToString());
    }
    return;
  }
  if (st.ok()) {
    FinishRegisters();
    for (auto [n, uid] : loaded_ttl_) {
      if (n->uid == uid && !n->dead && n->ttl) {
        // A clean record's index entry is as it implies; a record rewritten (dirty) gets its
        // entry from the next commit.
        n->ttl->indexed = n->dirty ? TtlState::kNone : NextTtlKey(*n->ttl);
        ScheduleTtl(n);
      }
    }
  }
  loaded_ttl_.clear();
  loaded_ttl_due_ = 0;
  loaded_registers_.clear();
  faulting_ = false;
  ++pages_in_;
  node->page_touched = true;
  if (!node->in_clock) {
    node->in_clock = true;
    pages_.emplace_back(node, node->uid);
  }
  if (!st.ok() && page_error_.ok()) {
    page_error_ = Status::Corruption("reading back the paged-out subtree '" + PathText(node) +
                                     "': " + st.ToString());
  }
}

void Engine::LoadClocks(std::int64_t watermark, std::int64_t gc_horizon, std::uint64_t commits,
                        std::int64_t max_ts) {
  max_ts_ = max_ts;
  watermark_ = watermark;
  gc_horizon_ = gc_horizon;
  commits_ = commits;
}

void Engine::WriteJson(const Node* node, std::string& out) const {
  switch (node->kind) {
    case Kind::kAbsent:
      return;
    case Kind::kScalar:
      out.append(node->scalar);
      return;
    case Kind::kCounter:
    case Kind::kMax:
    case Kind::kMin:
      core::AppendJsonNumber(out, node->reg->total);
      return;
    case Kind::kObject:
      break;
  }
  EnsureLoaded(node);
  std::vector<const Node*> kids;
  for (const Node* c = node->first_child; c != nullptr; c = c->next) {
    if (c->kind != Kind::kAbsent) {
      kids.push_back(c);
    }
  }
  std::sort(kids.begin(), kids.end(), [](const Node* a, const Node* b) { return a->key < b->key; });
  out.push_back('{');
  for (std::size_t i = 0; i < kids.size(); ++i) {
    if (i > 0) {
      out.push_back(',');
    }
    core::AppendJsonString(out, kids[i]->key);
    out.push_back(':');
    WriteJson(kids[i], out);
  }
  out.push_back('}');
}

std::string Engine::Dump() const {
  std::string out;
  WriteJson(root_, out);
  out.push_back('\n');
  return out;
}

std::optional<std::string> Engine::Get(const core::Path& path) const {
  const Node* node = root_;
  for (const auto& seg : path.segments()) {
    node = node->kind == Kind::kObject ? FindChild(node, seg) : nullptr;
    if (node == nullptr) {
      return std::nullopt;
    }
  }
  if (node->kind == Kind::kAbsent) {
    return std::nullopt;
  }
  std::string out;
  WriteJson(node, out);
  return out;
}

std::optional<Provenance> Engine::Blame(const core::Path& path) {
  const Node* node = root_;
  for (const auto& seg : path.segments()) {
    node = node->kind == Kind::kObject ? FindChild(node, seg) : nullptr;
    if (node == nullptr) {
      return std::nullopt;
    }
  }
  if (node->kind == Kind::kAbsent) {
    return std::nullopt;
  }
  Provenance p;
  WriteJson(node, p.value_json);
  switch (node->kind) {
    case Kind::kObject:
      p.kind = "object";
      break;
    case Kind::kScalar:
      p.kind = "value";
      break;
    case Kind::kCounter:
      p.kind = "counter";
      break;
    case Kind::kMax:
      p.kind = "max";
      break;
    default:
      p.kind = "min";
      break;
  }
  if (node == root_) {
    return p;
  }
  const auto stamp_into = [](const Stamp& s, std::string& blade, std::uint64_t& seq,
                             std::int64_t& ts) {
    blade = s.blade != nullptr ? s.blade->name : std::string();
    seq = s.seq;
    ts = s.ts;
  };
  stamp_into(node->last, p.writer.blade, p.writer.seq, p.writer.ts);
  if (node->origin.source != 0) {
    p.writer.source = source_names_[node->origin.source - 1];
    p.writer.offset = node->origin.offset;
    p.writer.line = node->origin.line;
  }
  if (IsRegister(node->kind)) {
    Materialize(const_cast<Node*>(node));
    for (const Slot& slot : node->reg->slots) {
      Provenance::Share share;
      core::AppendJsonNumber(share.value_json, slot.value);
      stamp_into(node->kind == Kind::kCounter ? slot.last : slot.value_stamp, share.blade, share.seq,
                 share.ts);
      p.shares.push_back(std::move(share));
    }
    std::sort(p.shares.begin(), p.shares.end(),
              [](const Provenance::Share& a, const Provenance::Share& b) { return a.blade < b.blade; });
    if (node->reg->has_retired) {
      p.retired_json.emplace();
      core::AppendJsonNumber(*p.retired_json, node->reg->retired);
    }
  }
  return p;
}

}  // namespace lattice::crdt::internal
