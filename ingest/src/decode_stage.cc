// The decode thread of a replay (see decode_stage.h).
#include "decode_stage.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <pthread.h>

namespace lattice::ingest::internal {

namespace {
constexpr std::size_t kBlockSize = 1 << 20;
// Decoded batches ahead of the merge thread (of batch_lines each; replay: 4096, ~4 MB each).
// The decoder shares the second core with the store's writer and RocksDB's threads: with 4
// (~13 ms of merging) the merge thread ran dry whenever the decoder was descheduled longer.
constexpr std::size_t kMaxBatchesInFlight = 8;
constexpr std::size_t kDeadLetterTextBytes = 1024;
}  // namespace

std::string_view Arena::Copy(std::string_view s) {
  if (s.empty()) {
    return {};
  }
  char* p = Allocate(s.size());
  std::memcpy(p, s.data(), s.size());
  return {p, s.size()};
}

char* Arena::AllocateInNextBlock(std::size_t n) {
  // The current block is too full: the next one that fits (blocks are kept across Reset()).
  std::size_t next = next_ == nullptr ? 0 : block_ + 1;
  while (next < blocks_.size() && sizes_[next] < n) {
    ++next;
  }
  if (next == blocks_.size()) {
    const std::size_t size = std::max(kBlockSize, n);
    // Not zeroed: a fresh page costs only when first written (the aggregator keeps 8 arenas of
    // which each fills only a few hundred KiB of its 1 MiB block).
    blocks_.push_back(std::make_unique_for_overwrite<char[]>(size));
    sizes_.push_back(size);
  }
  block_ = next;
  next_ = blocks_[block_].get() + n;
  room_ = sizes_[block_] - n;
  return blocks_[block_].get();
}

void Arena::Reset() {
  block_ = 0;
  next_ = nullptr;
  room_ = 0;
}

Status DecodeStage::Source::Advance() {
  LATTICE_ASSIGN_OR_RETURN(line, reader->Next());
  if (!line) {
    done = true;
    return Status::Ok();
  }
  if (line->too_long) {
    shard = Status::InvalidArgument("line of " + std::to_string(line->length) +
                                    " bytes exceeds the limit of " +
                                    std::to_string(decoder.limits().max_body_bytes) +
                                    " bytes for a body");
  } else {
    shard = decoder.DecodeEnvelope(line->text, /*padded=*/true);
  }
  return Status::Ok();
}

std::int64_t DecodeStage::Source::HeadTs() const {
  // Bad lines go first: they are dead-lettered whatever their position.
  return shard.ok() ? (*shard)->ts : std::numeric_limits<std::int64_t>::min();
}

DecodeStage::~DecodeStage() {
  Stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

Status DecodeStage::Start(const std::vector<Input>& inputs, std::size_t batch_lines) {
  batch_lines_ = std::max<std::size_t>(batch_lines, 1);
  for (const Input& in : inputs) {
    auto src = std::make_unique<Source>();
    LATTICE_ASSIGN_OR_RETURN(src->reader, core::LineReader::Open(in.file, in.resume));
    LATTICE_RETURN_IF_ERROR(src->Advance());
    sources_.push_back(std::move(src));
  }
  for (std::size_t i = 0; i < kMaxBatchesInFlight; ++i) {
    all_.push_back(std::make_unique<DecodedBatch>());
    free_.push_back(all_.back().get());
  }
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "lattice-decode");  // for top -H, perf, /proc/*/task
    Run();
  });
  return Status::Ok();
}

void DecodeStage::Fill(DecodedBatch& batch, Source& src, std::uint32_t index, DecodedLine& out) {
  const core::Line& line = *src.line;
  out.source = index;
  out.number = line.number;
  out.offset = line.offset;
  out.end_offset = line.end_offset;
  out.length = line.length;
  out.source_done = false;
  out.unterminated = line.unterminated;
  out.text = batch.arena.Copy(line.text.substr(0, std::min(line.text.size(), kDeadLetterTextBytes)));
  out.ok = src.shard.ok();
  if (!out.ok) {
    out.error = batch.arena.Copy(src.shard.status().message());
    return;
  }
  const core::Shard& in = **src.shard;
  core::Shard& s = out.shard;
  s.blade = batch.arena.Copy(in.blade);
  s.seq = in.seq;
  s.ts = in.ts;
  s.hash = in.hash;
  s.has_int_inc = in.has_int_inc;
  s.has_float_inc = in.has_float_inc;
  s.max_abs_inc = in.max_abs_inc;
  s.topic = batch.arena.Copy(in.topic);
  s.partition = in.partition;
  s.offset = in.offset;
  s.entries.resize(in.entries.size());
  for (std::size_t i = 0; i < in.entries.size(); ++i) {
    s.entries[i] = in.entries[i];
    s.entries[i].key = batch.arena.Copy(in.entries[i].key);
    if (in.entries[i].kind == core::OpKind::kSet) {
      s.entries[i].value = batch.arena.Copy(in.entries[i].value);
    }
  }
}

void DecodeStage::Run() {
  while (!stop_.load(std::memory_order_relaxed)) {
    DecodedBatch* batch = nullptr;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !free_.empty() || stop_.load(); });
      if (stop_.load()) {
        break;
      }
      batch = free_.back();
      free_.pop_back();
    }
    batch->arena.Reset();
    batch->size = 0;
    Status status;
    bool all_done = false;
    while (batch->size < batch_lines_) {
      // The k-way merge: the source whose head comes first by ts (recordings are few).
      Source* src = nullptr;
      std::uint32_t index = 0;
      for (std::uint32_t i = 0; i < sources_.size(); ++i) {
        Source* s = sources_[i].get();
        if (!s->done && (src == nullptr || s->HeadTs() < src->HeadTs())) {
          src = s;
          index = i;
        }
      }
      if (src == nullptr) {
        all_done = true;
        break;
      }
      if (batch->lines.size() <= batch->size) {
        batch->lines.emplace_back();
      }
      DecodedLine& out = batch->lines[batch->size++];
      Fill(*batch, *src, index, out);
      status = src->Advance();
      if (!status.ok()) {
        break;
      }
      out.source_done = src->done;
    }
    std::lock_guard lock(mu_);
    if (!status.ok()) {
      error_ = status;
    }
    if (batch->size > 0) {
      ready_.push_back(batch);
    } else {
      free_.push_back(batch);
    }
    if (all_done || !status.ok()) {
      finished_ = true;
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
  }
  std::lock_guard lock(mu_);
  finished_ = true;
  cv_.notify_all();
}

Result<DecodedBatch*> DecodeStage::Next() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || finished_; });
  if (!ready_.empty()) {
    DecodedBatch* b = ready_.front();
    ready_.pop_front();
    return b;
  }
  if (!error_.ok()) {
    return error_;
  }
  return static_cast<DecodedBatch*>(nullptr);
}

void DecodeStage::Recycle(DecodedBatch* batch) {
  std::lock_guard lock(mu_);
  free_.push_back(batch);
  cv_.notify_all();
}

void DecodeStage::Stop() {
  stop_.store(true);
  std::lock_guard lock(mu_);
  cv_.notify_all();
}

}  // namespace lattice::ingest::internal
