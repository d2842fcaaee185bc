// ChangeSet: one commit's changes as the merge thread takes them out of the engine
// (Engine::CollectChanges), turned into records later by WriteChanges(), which the state store
// runs on its writer thread while the merge thread goes on merging the next batch. Collecting
// copies only what the next batch may change (node and slot values, history entries, TTL index
// moves); keys are built by the writer from the nodes, whose key and parent do not change while
// they are allocated: a ChangeSet keeps the nodes that died in its batch allocated until
// Engine::ReleaseChanges().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"

namespace lattice::crdt::internal {

struct ChangeSet {
  enum class Op : std::uint8_t {
    kDeleteSubtree,  // n: index in `subtrees`
    kDeleteExpiry,   // node; n: the due time
    kPutExpiry,      // node; n: the due time
    kDeleteNode,     // node
    kPutNode,        // node; the encoded value
    kDeleteSlot,     // node, blade
    kPutSlot,        // node, blade; the encoded value
    kDeleteHistory,  // node, blade; n: the chunk number
    kPutHistory,     // node, blade; n: the chunk number; `value_size` entries at `entries[value]`
    kPutSource,      // n: the source id; the name
    kPutBlade,       // n: the blade id; the encoded value
  };
  /// One record in commit order. Slot and history keys: the node's key, the slot marker, then
  /// the blade's name (none for the single slot of a max/min register, blade == nullptr).
  struct Record {
    const Node* node = nullptr;
    const Blade* blade = nullptr;
    std::uint64_t n = 0;
    std::size_t value = 0;  // offset in `values` (kPutHistory: index in `entries`)
    std::size_t value_size = 0;
    Op op = Op::kDeleteNode;
  };

  const Node* root = nullptr;  // the engine's root (keys stop there)
  std::vector<Record> records;
  std::string values;             // encoded values
  std::vector<RunEntry> entries;  // history entries (kPutHistory), encoded by WriteChanges()
  std::vector<std::string> subtrees;
  std::vector<Node*> dead;  // died in this batch: freed by Engine::ReleaseChanges()
};

/// Writes the records of `changes` to `sink` in order. Reads the nodes it names (key and parent
/// only) and their blades (name and id): run it on any thread, but before
/// Engine::ReleaseChanges() of `changes`. `key` and `value` are scratch buffers.
void WriteChanges(const ChangeSet& changes, RecordSink& sink, std::string& key, std::string& value);

}  // namespace lattice::crdt::internal
