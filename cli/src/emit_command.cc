// `lattice emit`: send shards (NDJSON envelopes or bare bodies) to Kafka.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "kafka_options.h"
#include "lattice/core/duration.h"
#include "lattice/core/line_reader.h"
#include "lattice/ingest/emitter.h"
#include "lattice/ingest/line_emitter.h"

namespace lattice::cli {

namespace {

std::atomic<bool> g_emit_stop{false};
// The first SIGINT/SIGTERM stops reading at the next line and delivers what was queued; a second
// one (e.g. while waiting for a line on an interactive stdin) ends the process at once.
extern "C" void OnEmitStopSignal(int signal) {
  if (g_emit_stop.exchange(true)) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

constexpr std::uint64_t kMaxShownErrors = 20;
constexpr std::string_view kTooLong = "line longer than 1 MiB + 64 KiB";

// Lines read and checked on a helper thread, sent on the calling thread: the shard decoder and
// librdkafka's produce path then run on different cores. Batches of checked lines pass through a
// bounded queue in input order (so each blade's shards keep their order; within a batch,
// they may be grouped by blade: CheckedLines) and are reused.
class CheckPipe {
 public:
  // `group`: the batches group their lines by blade.
  explicit CheckPipe(bool group) : group_(group) {}

  // Batches are the window the lines are grouped in: the longer a partition's runs, the less
  // librdkafka's threads pay per message. Two batches queued keep what the sender reads recent.
  // 8,192 lines / 2 MiB with 2 queued: ~15-20% less CPU than 1,024 / 256 KiB with 4
  // (docs/benchmarks.md "Session 8 emit").
  static constexpr std::size_t kBatchLines = 8192;
  static constexpr std::size_t kBatchBytes = 2 * 1024 * 1024;
  static constexpr std::size_t kMaxReady = 2;

  // Reader side: an empty batch to fill.
  std::unique_ptr<ingest::CheckedLines> Empty() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) {
      return std::make_unique<ingest::CheckedLines>(group_);
    }
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  // Reader side: hands a batch on, waiting while kMaxReady are queued. False once the sender
  // stopped (the batch is dropped).
  bool Push(std::unique_ptr<ingest::CheckedLines> batch) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return ready_.size() < kMaxReady || cancelled_; });
    if (cancelled_) {
      return false;
    }
    ready_.push_back(std::move(batch));
    filled_.notify_one();
    return true;
  }
  // Reader side: no more batches; `status` says why reading stopped early, if it did.
  void Finish(Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    read_status_ = std::move(status);
    finished_ = true;
    filled_.notify_one();
  }
  // Sender side: the next batch in order, or null after the last one.
  std::unique_ptr<ingest::CheckedLines> Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    filled_.wait(lock, [&] { return !ready_.empty() || finished_; });
    if (ready_.empty()) {
      return nullptr;
    }
    auto b = std::move(ready_.front());
    ready_.pop_front();
    space_.notify_one();
    return b;
  }
  // Sender side: gives a sent batch back for reuse.
  void Recycle(std::unique_ptr<ingest::CheckedLines> batch) {
    batch->Clear();
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(batch));
  }
  // Sender side: stop the reader (it drops what it has).
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    space_.notify_one();
  }
  // After the reader thread ended.
  const Status& read_status() const { return read_status_; }

 private:
  const bool group_;
  std::mutex mu_;
  std::condition_variable filled_, space_;
  std::deque<std::unique_ptr<ingest::CheckedLines>> ready_;
  std::vector<std::unique_ptr<ingest::CheckedLines>> free_;
  bool finished_ = false;
  bool cancelled_ = false;
  Status read_status_;
};

// Reads `reader` to its end into `pipe`, checking every line with `lines`.
void ReadAndCheck(core::LineReader& reader, ingest::LineEmitter& lines, CheckPipe& pipe,
                  const std::string& path) {
  pthread_setname_np(pthread_self(), "lattice-check");  // for top -H, perf, /proc/*/task
  auto batch = pipe.Empty();
  Status status;
  while (!g_emit_stop.load(std::memory_order_relaxed)) {
    auto line = reader.Next();
    if (!line.ok()) {
      status = line.status().WithContext(path);
      break;
    }
    if (!line->has_value()) {
      break;
    }
    const core::Line& l = **line;
    if (l.too_long) {
      lines.CheckRefused(l.number, kTooLong, *batch);
    } else {
      lines.Check(l.text, l.number, /*padded=*/true, *batch);
    }
    if (batch->size() >= CheckPipe::kBatchLines || batch->bytes() >= CheckPipe::kBatchBytes) {
      if (!pipe.Push(std::move(batch))) {
        break;  // the sender stopped; `batch` is gone
      }
      batch = pipe.Empty();
    }
  }
  if (batch != nullptr && batch->size() > 0) {
    (void)pipe.Push(std::move(batch));
  }
  pipe.Finish(std::move(status));
}

// A regular file mapped whole, read-only. Its lines are checked where they are, and a batch in
// line order refers to them (LineEmitter::Check's `stable`); a grouped batch copies each line to
// its group as it is checked: each byte is copied at most once on its way to librdkafka
// (LineReader's read() and the batch used to copy every line twice before that; docs/
// benchmarks.md "Session 9 emit"). The file must not shrink while it is mapped: reading a page
// past its new end raises SIGBUS (docs/cli.md).
class MappedFile {
 public:
  // Null if `path` is not mapped (the caller reads it with core::LineReader instead): stdin, a
  // .zst file, not a regular file, empty, or mmap failed.
  static std::unique_ptr<MappedFile> Open(const std::string& path) {
    struct stat st;
    // stat first: opening a FIFO again could wait for a writer.
    if (path == "-" || path.ends_with(".zst") || ::stat(path.c_str(), &st) != 0 ||
        !S_ISREG(st.st_mode)) {
      return nullptr;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return nullptr;
    }
    void* data = MAP_FAILED;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
      data = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    }
    ::close(fd);
    if (data == MAP_FAILED) {
      return nullptr;
    }
    (void)::madvise(data, static_cast<std::size_t>(st.st_size), MADV_SEQUENTIAL);
    return std::unique_ptr<MappedFile>(
        new MappedFile(static_cast<const char*>(data), static_cast<std::size_t>(st.st_size)));
  }
  ~MappedFile() { ::munmap(const_cast<char*>(data_), size_); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view text() const { return {data_, size_}; }

 private:
  MappedFile(const char* data, std::size_t size) : data_(data), size_(size) {}
  const char* data_;
  std::size_t size_;
};

// The lines of a mapped file, as core::LineReader gives them (numbered from 1, without the
// newline and one '\r' before it, blank lines skipped but counted, a line longer than
// LineReader's limit refused), checked where they are into batches.
class MappedLines {
 public:
  explicit MappedLines(const MappedFile& file)
      : p_(file.text().data()), end_(file.text().data() + file.text().size()) {}

  // Checks lines into `batch` until it is full (CheckPipe's limits) or the file ends; false if
  // it ended before any line was added.
  bool Fill(ingest::LineEmitter& lines, ingest::CheckedLines& batch) {
    const std::size_t max_line = core::LineReader::Options().max_line_bytes;
    while (p_ < end_) {
      const auto* nl =
          static_cast<const char*>(std::memchr(p_, '\n', static_cast<std::size_t>(end_ - p_)));
      const char* line = p_;
      std::size_t len = static_cast<std::size_t>((nl != nullptr ? nl : end_) - p_);
      p_ = nl != nullptr ? nl + 1 : end_;
      ++number_;
      if (len > max_line) {
        lines.CheckRefused(number_, kTooLong, batch);
      } else {
        if (len > 0 && line[len - 1] == '\r') {
          --len;
        }
        std::size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t')) {
          ++i;
        }
        if (i == len) {
          continue;  // blank
        }
        // Padded: 64 bytes of the file follow (the line's newline first); the last lines are
        // not (the decoder then checks a copy).
        const bool padded = end_ - (line + len) >= 64;
        lines.Check(std::string_view(line, len), number_, padded, batch, /*stable=*/true);
      }
      if (batch.size() >= CheckPipe::kBatchLines || batch.bytes() >= CheckPipe::kBatchBytes) {
        return true;
      }
    }
    return batch.size() > 0;
  }

 private:
  const char* p_;
  const char* end_;
  std::uint64_t number_ = 0;
};

// ReadAndCheck for a mapped file.
void CheckMapped(const MappedFile& file, ingest::LineEmitter& lines, CheckPipe& pipe) {
  pthread_setname_np(pthread_self(), "lattice-check");
  MappedLines reader(file);
  lines.ExpectLines(file.text());
  while (!g_emit_stop.load(std::memory_order_relaxed)) {
    auto batch = pipe.Empty();
    if (!reader.Fill(lines, *batch)) {
      break;
    }
    if (!pipe.Push(std::move(batch))) {
      break;
    }
  }
  lines.ExpectLines({});  // the mapping goes away after this
  pipe.Finish(Status::Ok());
}

// True if `path` ("-" for stdin) is a regular file: reading it never waits for a writer.
bool IsRegularFile(const std::string& path) {
  struct stat st;
  const int r = path == "-" ? ::fstat(STDIN_FILENO, &st) : ::stat(path.c_str(), &st);
  return r == 0 && S_ISREG(st.st_mode);
}

// Sends every line of a regular file: read and checked on a helper thread (CheckPipe), sent
// here. `handle` says whether to go on after a sent line's status; `stop_status` gets a read
// error. With `group` (neither --strict nor --in-order) each batch is sent grouped by blade
// (CheckedLines), and a stop signal takes effect between batches, so that what was
// sent is still the file up to some line (without, lines go in line order, and a stop signal
// stops at the next line).
// `mapped`: the file (a `stable` line's bytes stay valid while it exists), else read from
// `reader`.
template <typename Handle>
void SendFromFile(core::LineReader* reader, const MappedFile* mapped, ingest::LineEmitter& lines,
                  const std::string& path, bool group, Handle& handle, Status& stop_status) {
  CheckPipe pipe(group);
  std::thread checker =
      mapped != nullptr
          ? std::thread(CheckMapped, std::cref(*mapped), std::ref(lines), std::ref(pipe))
          : std::thread(ReadAndCheck, std::ref(*reader), std::ref(lines), std::ref(pipe),
                        std::cref(path));
  bool go_on = true;
  while (go_on && !g_emit_stop.load(std::memory_order_relaxed)) {
    auto batch = pipe.Pop();
    if (batch == nullptr) {
      break;
    }
    for (ingest::CheckedLines::Cursor at; !batch->Done(at);) {
      if ((!group && g_emit_stop.load(std::memory_order_relaxed)) ||
          !handle(lines.SendChecked(*batch, at))) {
        go_on = false;
        break;
      }
    }
    pipe.Recycle(std::move(batch));
  }
  pipe.Cancel();
  checker.join();
  if (stop_status.ok() && !pipe.read_status().ok()) {
    stop_status = pipe.read_status();
  }
}

struct EmitArgs {
  KafkaFlags kafka;
  std::vector<std::string> bodies;
  std::string file;
  std::string topic = std::string(ingest::kShardsTopic);
  std::string blade;
  std::string seq_file;
  std::uint64_t seq_block = 4096;
  std::optional<std::uint64_t> first_seq;
  std::optional<std::int64_t> ts;
  bool bodies_only = false;
  bool no_validate = false;
  bool strict = false;
  bool in_order = false;
  bool json = false;
  std::string timeout = "60s";
};

int RunEmit(const EmitArgs& args) {
  auto timeout_ms = core::ParseDurationMs(args.timeout);
  if (!timeout_ms.ok()) {
    return Fail("--timeout: " + timeout_ms.status().message());
  }
  if (!args.bodies.empty() && !args.file.empty()) {
    return Fail("give shards either as arguments or with --file, not both");
  }
  auto settings = ResolveKafkaFlags(args.kafka);
  if (!settings.ok()) {
    return Fail(settings.status().ToString());
  }
  ingest::EmitterOptions options;
  options.kafka = std::move(settings).value();
  options.topic = args.topic;
  options.blade = args.blade;
  options.seq_file = args.seq_file;
  options.seq_block = args.seq_block;
  options.first_seq = args.first_seq;
  options.validate = !args.no_validate;
  auto opened = ingest::Emitter::Open(std::move(options));
  if (!opened.ok()) {
    return Fail(opened.status().ToString());
  }
  ingest::Emitter& emitter = **opened;
  ingest::LineEmitterOptions line_options;
  line_options.bodies_only = args.bodies_only;
  line_options.ts = args.ts;
  line_options.validate = !args.no_validate;
  ingest::LineEmitter lines(emitter, line_options);

  std::signal(SIGINT, OnEmitStopSignal);
  std::signal(SIGTERM, OnEmitStopSignal);
  const auto start = std::chrono::steady_clock::now();
  Status stop_status;  // why sending stopped early, if it did
  // What a sent line's status means: true to go on, false to stop (stop_status says why).
  auto handle = [&](Status s) {
    if (s.ok()) {
      return true;
    }
    if (s.code() != StatusCode::kInvalidArgument || args.strict) {
      stop_status = std::move(s);
      return false;
    }
    if (lines.report().invalid <= kMaxShownErrors) {
      std::fprintf(stderr, "lattice emit: %s\n", s.message().c_str());
      if (lines.report().invalid == kMaxShownErrors) {
        std::fprintf(stderr, "lattice emit: (further invalid lines are counted, not shown)\n");
      }
    }
    return true;
  };
  if (!args.bodies.empty()) {
    std::uint64_t n = 0;
    for (const auto& b : args.bodies) {
      if (g_emit_stop.load() || !handle(lines.Add(b, ++n))) {
        break;
      }
    }
  } else {
    const std::string path = args.file.empty() ? "-" : args.file;
    const bool group = !args.strict && !args.in_order;
    auto reader = core::LineReader::Open(path);
    if (!reader.ok()) {
      return Fail(reader.status().ToString());
    }
    if (auto mapped = MappedFile::Open(path); mapped != nullptr) {
      SendFromFile(nullptr, mapped.get(), lines, path, group, handle, stop_status);
    } else if (!IsRegularFile(path)) {
      // A pipe or terminal may pause between lines: each line is sent as soon as it is read.
      while (!g_emit_stop.load()) {
        auto line = (*reader)->Next();
        if (!line.ok()) {
          stop_status = line.status().WithContext(path);
          break;
        }
        if (!line->has_value()) {
          break;
        }
        const core::Line& l = **line;
        if (!handle(l.too_long ? lines.Reject(l.number, kTooLong)
                               : lines.Add(l.text, l.number, /*padded=*/true))) {
          break;
        }
      }
    } else {
      SendFromFile(reader->get(), nullptr, lines, path, group, handle, stop_status);
    }
  }
  Status flushed = emitter.Close(std::chrono::milliseconds(*timeout_ms));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const ingest::EmitterStats stats = emitter.stats();
  const ingest::LineEmitterReport& r = lines.report();
  const double rate = seconds > 0 ? static_cast<double>(stats.delivered) / seconds : 0;
  if (args.json) {
    std::printf(
        "{\"lines\":%llu,\"sent\":%llu,\"envelopes\":%llu,\"bodies\":%llu,\"invalid\":%llu,"
        "\"delivered\":%llu,\"failed\":%llu,\"bytes\":%llu,\"seconds\":%.3f,"
        "\"shards_per_second\":%.0f}\n",
        static_cast<unsigned long long>(r.lines), static_cast<unsigned long long>(stats.queued),
        static_cast<unsigned long long>(r.envelopes), static_cast<unsigned long long>(r.bodies),
        static_cast<unsigned long long>(r.invalid),
        static_cast<unsigned long long>(stats.delivered),
        static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(stats.bytes),
        seconds, rate);
  } else {
    std::printf(
        "sent %llu shards (%llu envelopes, %llu bare bodies) in %.3f s: %.0f shards/s, "
        "%.1f MB/s; delivered %llu, failed %llu, invalid lines %llu\n",
        static_cast<unsigned long long>(stats.queued), static_cast<unsigned long long>(r.envelopes),
        static_cast<unsigned long long>(r.bodies), seconds, rate,
        seconds > 0 ? static_cast<double>(stats.bytes) / seconds / 1e6 : 0.0,
        static_cast<unsigned long long>(stats.delivered),
        static_cast<unsigned long long>(stats.failed), static_cast<unsigned long long>(r.invalid));
  }
  std::fflush(stdout);
  if (!stop_status.ok()) {
    return Fail(stop_status.ToString());
  }
  if (!flushed.ok()) {
    return Fail(flushed.ToString());
  }
  if (g_emit_stop.load()) {
    std::fprintf(stderr, "lattice emit: interrupted; everything queued was delivered\n");
    return 130;
  }
  return 0;
}

}  // namespace

void AddEmitCommand(CLI::App& app) {
  auto args = std::make_shared<EmitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "emit",
      "Send shards to Kafka: NDJSON lines from stdin or --file, or shards given as arguments. "
      "Envelope lines ({\"blade\",\"seq\",\"ts\",\"shard\"}) keep their own blade, seq and ts "
      "(a recording is re-emitted faithfully); bare bodies are shards of --blade.");
  cmd->footer(
      "Each shard becomes one message: key = blade, value = body, timestamp = ts, header "
      "lattice-seq = seq; the producer is idempotent. Bare bodies take the seq from --seq-file "
      "(block-reserved, survives restarts) or, without one, from the clock in microseconds. "
      "See docs/operations.md for the environment variables.");
  AddKafkaFlags(cmd, args->kafka);
  cmd->add_option("shards", args->bodies, "Shards (envelopes or bare bodies) to send");
  cmd->add_option("-f,--file", args->file,
                  "NDJSON file to send (- for stdin, the default; .zst is decompressed)");
  cmd->add_option("-t,--topic", args->topic, "Topic")->capture_default_str();
  cmd->add_option("--blade", args->blade, "Blade id (message key) of bare bodies");
  cmd->add_option("--seq-file", args->seq_file,
                  "File keeping the blade's seq high-water mark across runs (bare bodies)");
  cmd->add_option("--seq-block", args->seq_block, "Seqs reserved per fsync of the seq file")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--seq", args->first_seq, "First seq of the bare bodies")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1} << 62));
  cmd->add_option("--ts", args->ts, "Event time (ms) of the bare bodies (default: now)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 50));
  cmd->add_flag("--bodies", args->bodies_only,
                "Every line is a bare body, even one with \"blade\" and \"shard\" keys");
  cmd->add_flag("--no-validate", args->no_validate,
                "Send shards without checking them against the shard rules (e.g. to test the "
                "dead-letter path)");
  cmd->add_flag("--strict", args->strict,
                "Stop at the first invalid line (exit code 1); implies --in-order");
  cmd->add_flag("--in-order", args->in_order,
                "Send a file's lines in line order (by default each batch of up to 8,192 lines "
                "goes out grouped by blade, each blade's lines in their order)");
  cmd->add_flag("--json", args->json, "Print the summary as one JSON object");
  cmd->add_option("--timeout", args->timeout,
                  "How long to wait at the end for every shard to be delivered")
      ->capture_default_str();
  cmd->callback([args] { std::exit(RunEmit(*args)); });
}

}  // namespace lattice::cli
