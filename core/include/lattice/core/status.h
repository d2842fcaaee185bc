// Status and Result<T>: how every fallible operation in Lattice reports failure.
//
// A closed set of codes (callers branch on the code, never on the message), no exceptions across
// library boundaries, and macros in the style of Arrow/Abseil for early returns.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace lattice {

/// The closed set of failure kinds.
///
/// kInvalidArgument: bad input from outside (a shard, a flag, a config file, a recording).
/// kNotFound: a path, file or key that does not exist.
/// kCorruption: data Lattice wrote itself failed validation; stop, never repair silently.
/// kUnavailable: a resource is temporarily unusable (a broker, a locked database, a full disk).
/// kInternal: a bug or an unexpected library failure.
enum class StatusCode : std::uint8_t {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kCorruption,
  kUnavailable,
  kInternal,
};

/// Returns a stable lower-case name for `code`, e.g. "invalid argument".
std::string_view StatusCodeName(StatusCode code);

/// The outcome of an operation: Ok, or a code with a human-readable message.
///
/// An ok Status is one null pointer: creating, moving, checking and destroying it costs next to
/// nothing, which matters on the per-shard path. Thread safety: a value type.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : state_(code == StatusCode::kOk ? nullptr
                                       : std::make_unique<State>(State{code, std::move(message)})) {}
  Status(const Status& other)
      : state_(other.state_ ? std::make_unique<State>(*other.state_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) {
      state_ = other.state_ ? std::make_unique<State>(*other.state_) : nullptr;
    }
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  const std::string& message() const;

  /// "ok", or "<code name>: <message>".
  std::string ToString() const;

  /// Returns a copy with `context + ": "` prepended to the message (code unchanged).
  Status WithContext(std::string_view context) const;

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<State> state_;
};

/// Either a value of type T or a non-ok Status.
///
/// Access the value only after checking ok(); doing otherwise is a bug (checked in debug builds).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      v_ = Status::Internal("Result constructed from an ok Status");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
[[noreturn]] void DcheckFailed(const char* expr, const char* file, int line);
}  // namespace internal

}  // namespace lattice

#define LATTICE_CONCAT_INNER_(a, b) a##b
#define LATTICE_CONCAT_(a, b) LATTICE_CONCAT_INNER_(a, b)

/// Returns the Status of `expr` from the enclosing function if it is not ok.
#define LATTICE_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::lattice::Status lattice_status_ = (expr);        \
    if (!lattice_status_.ok()) return lattice_status_; \
  } while (false)

#define LATTICE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

/// Evaluates `rexpr` (a Result<T>); returns its Status if not ok, else moves the value into `lhs`.
#define LATTICE_ASSIGN_OR_RETURN(lhs, rexpr) \
  LATTICE_ASSIGN_OR_RETURN_IMPL_(LATTICE_CONCAT_(lattice_result_, __LINE__), lhs, rexpr)

/// Checks an internal invariant in debug builds; compiles to nothing in release builds.
#ifdef NDEBUG
#define LATTICE_DCHECK(cond) \
  do {                       \
  } while (false && (cond))
#else
#define LATTICE_DCHECK(cond) \
  ((cond) ? (void)0 : ::lattice::internal::DcheckFailed(#cond, __FILE__, __LINE__))
#endif
