// MergeEngine: the public face of the in-memory engine.
#include "lattice/crdt/merge_engine.h"

#include "engine.h"

namespace lattice::crdt {

MergeEngine::MergeEngine(EngineOptions options)
    : engine_(std::make_unique<internal::Engine>(options, /*persistent=*/false)) {}
MergeEngine::~MergeEngine() = default;

ApplyResult MergeEngine::Apply(const core::Shard& shard, const ShardSource* source) {
  return engine_->Apply(shard, source);
}
std::optional<Provenance> MergeEngine::Blame(const core::Path& path) const {
  return engine_->Blame(path);
}
void MergeEngine::AdvanceWatermark(std::int64_t watermark_ms) {
  engine_->AdvanceWatermark(watermark_ms);
}
void MergeEngine::Close() { engine_->Close(); }
void MergeEngine::SetChangeSink(ChangeSink sink) { engine_->SetChangeFeed(std::move(sink)); }
std::string MergeEngine::Dump() const { return engine_->Dump(); }
std::optional<std::string> MergeEngine::Get(const core::Path& path) const {
  return engine_->Get(path);
}
const ApplyCounts& MergeEngine::counts() const { return engine_->counts(); }
std::size_t MergeEngine::node_count() const { return engine_->node_count(); }

}  // namespace lattice::crdt
