// hla::Error: the one exception type for errors a user can cause, and the check macros for
// internal invariants.
//
// A user error names the op, what was expected, what was found, and a hint:
//   throw hla::Error("gla", "gk must be [B,T,H,K]=[2,64,4,32]", "[2,64,4]",
//                    "did you pass a per-head gate? use simple_gla");
// prints
//   gla: gk must be [B,T,H,K]=[2,64,4,32], got [2,64,4] (hint: did you pass a per-head gate? ...)
//
// Internal failures (a broken invariant, a failed library call) go through HLA_CHECK, which
// throws hla::Error carrying file:line. Nothing in hla aborts on bad input.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace hla {

class Error : public std::runtime_error {
 public:
  // A plain message (already formatted).
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // op: the operation or command; expected / actual: the contract and what was passed;
  // hint: how to fix it (may be empty).
  Error(const std::string& op, const std::string& expected, const std::string& actual,
        const std::string& hint = "")
      : std::runtime_error(format(op, expected, actual, hint)) {}

  static std::string format(const std::string& op, const std::string& expected,
                            const std::string& actual, const std::string& hint) {
    std::string m = op + ": " + expected;
    if (!actual.empty()) m += ", got " + actual;
    if (!hint.empty()) m += " (hint: " + hint + ")";
    return m;
  }
};

namespace detail {
// Builds "file:line: check `cond` failed: message".
[[noreturn]] inline void check_failed(const char* file, int line, const char* cond,
                                      const std::string& message) {
  std::ostringstream os;
  os << file << ":" << line << ": internal check `" << cond << "` failed";
  if (!message.empty()) os << ": " << message;
  throw Error(os.str());
}
}  // namespace detail

}  // namespace hla

// Internal invariant: throws hla::Error with file:line. The message is streamed:
//   HLA_CHECK(n > 0, "n=" << n);
#define HLA_CHECK(cond, msg)                                                         \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::ostringstream hla_check_os_;                                              \
      hla_check_os_ << msg;                                                          \
      ::hla::detail::check_failed(__FILE__, __LINE__, #cond, hla_check_os_.str());   \
    }                                                                                \
  } while (0)
