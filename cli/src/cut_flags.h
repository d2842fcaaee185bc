// The flags that name a point of a recording (--until / --until-seq, --from / --from-seq, --to /
// --to-seq) and the terminal colours of the time-travel commands. Private to cli/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lattice/core/path.h"
#include "lattice/core/status.h"
#include "lattice/ingest/time_travel.h"

namespace lattice::cli {

/// The cut named by a timestamp flag (`ts_text`, empty if not given) or a line-count flag
/// (`seq`); `fallback` when neither was given. Errors: InvalidArgument naming `ts_flag`.
Result<ingest::Cut> CutFromFlags(const std::string& ts_flag, const std::string& ts_text,
                                 const std::optional<std::uint64_t>& seq,
                                 const std::vector<std::string>& files, ingest::Cut fallback);

/// Checks that every file exists (a regular file or a FIFO) or is "-".
Status CheckFiles(const std::vector<std::string>& files);

/// The flags `lattice diff` and `lattice step` share: the recordings, a path prefix, a window from
/// --from / --from-seq (default: the empty state) to an end flag (--to or --until, and its -seq
/// twin; default: the end of the recordings), and --allowed-lateness.
struct WindowFlags {
  std::vector<std::string> files;
  std::string path;
  std::string from;
  std::optional<std::uint64_t> from_seq;
  std::string end;
  std::optional<std::uint64_t> end_seq;
  std::string allowed_lateness = "5m";
};

/// WindowFlags parsed.
struct Window {
  core::Path prefix;
  ingest::Cut from;
  ingest::Cut end;
  std::int64_t allowed_lateness_ms = 0;
};

/// Checks the files and parses the flags; an error names the flag it is about (`end_flag` is the
/// end flag's name, "--to" or "--until").
Result<Window> ParseWindow(const WindowFlags& flags, const std::string& end_flag);

/// Whether to colour stdout: `mode` is "always", "never" or "auto" (stdout is a terminal and the
/// NO_COLOR environment variable is unset or empty).
bool UseColor(const std::string& mode);

/// ANSI sequences, or empty strings when colour is off.
struct Palette {
  explicit Palette(bool on)
      : added(on ? "\x1b[32m" : ""),
        removed(on ? "\x1b[31m" : ""),
        changed(on ? "\x1b[33m" : ""),
        header(on ? "\x1b[1;36m" : ""),
        dim(on ? "\x1b[2m" : ""),
        reset(on ? "\x1b[0m" : "") {}
  const char* added;
  const char* removed;
  const char* changed;
  const char* header;
  const char* dim;
  const char* reset;
};

}  // namespace lattice::cli
