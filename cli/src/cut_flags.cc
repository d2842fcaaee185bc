// Parsing of the time-travel flags (see cut_flags.h).
#include "cut_flags.h"

#include <cstdlib>
#include <filesystem>

#include <unistd.h>

#include "lattice/core/duration.h"

namespace lattice::cli {

Result<ingest::Cut> CutFromFlags(const std::string& ts_flag, const std::string& ts_text,
                                 const std::optional<std::uint64_t>& seq,
                                 const std::vector<std::string>& files, ingest::Cut fallback) {
  if (!ts_text.empty()) {
    auto ts = ingest::ResolveTimestamp(ts_text, files);
    if (!ts.ok()) {
      return ts.status().WithContext(ts_flag);
    }
    return ingest::Cut::UntilTs(*ts);
  }
  if (seq) {
    return ingest::Cut::FirstLines(*seq);
  }
  return fallback;
}

Status CheckFiles(const std::vector<std::string>& files) {
  for (const std::string& file : files) {
    std::error_code ec;
    if (file != "-" && !std::filesystem::is_regular_file(file, ec) &&
        !std::filesystem::is_fifo(file, ec)) {
      return Status::NotFound("cannot read '" + file + "': no such file");
    }
  }
  return Status::Ok();
}

Result<Window> ParseWindow(const WindowFlags& flags, const std::string& end_flag) {
  if (Status st = CheckFiles(flags.files); !st.ok()) {
    return st;
  }
  Window window;
  auto lateness = core::ParseDurationMs(flags.allowed_lateness);
  if (!lateness.ok()) {
    return lateness.status().WithContext("--allowed-lateness");
  }
  window.allowed_lateness_ms = *lateness;
  auto prefix = core::Path::Parse(flags.path);
  if (!prefix.ok()) {
    return prefix.status();
  }
  window.prefix = *std::move(prefix);
  auto from =
      CutFromFlags("--from", flags.from, flags.from_seq, flags.files, ingest::Cut::FirstLines(0));
  if (!from.ok()) {
    return from.status();
  }
  window.from = *from;
  auto end = CutFromFlags(end_flag, flags.end, flags.end_seq, flags.files, ingest::Cut::All());
  if (!end.ok()) {
    return end.status();
  }
  window.end = *end;
  return window;
}

bool UseColor(const std::string& mode) {
  if (mode == "always") {
    return true;
  }
  if (mode == "never") {
    return false;
  }
  const char* no_color = std::getenv("NO_COLOR");
  return ::isatty(STDOUT_FILENO) == 1 && (no_color == nullptr || *no_color == '\0');
}

}  // namespace lattice::cli
