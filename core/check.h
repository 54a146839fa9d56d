// Error type and check macros shared by every layer. Errors are exceptions that carry
// file:line and the failing call; callers add context (file name, tensor name) in the message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace cllm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `s` with every control byte but newline and tab written as \xNN. Names and keys read from a
// corrupted file can hold any byte: a NUL would cut the message where it is printed ("%s") before
// the reason, and other control bytes garble a terminal.
inline std::string printable(const std::string& s) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto b = static_cast<unsigned char>(ch);
    if ((b < 0x20 && b != '\n' && b != '\t') || b == 0x7f)
      out += std::string("\\x") + hex[b >> 4] + hex[b & 15];
    else
      out += ch;
  }
  return out;
}

namespace detail {
[[noreturn]] inline void throw_error(const char* file, int line, const std::string& msg) {
  std::ostringstream os;
  os << printable(msg) << " [" << file << ":" << line << "]";
  throw Error(os.str());
}
}  // namespace detail

}  // namespace cllm

// CLLM_CHECK(cond, "text " << value): throws cllm::Error with the streamed message.
#define CLLM_CHECK(cond, msg)                                        \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::ostringstream cllm_check_os_;                             \
      cllm_check_os_ << msg;                                         \
      ::cllm::detail::throw_error(__FILE__, __LINE__, cllm_check_os_.str()); \
    }                                                                \
  } while (0)

// Unconditional failure; [[noreturn]] all the way down, so it ends a switch case.
#define CLLM_FAIL(msg)                                                              \
  do {                                                                              \
    std::ostringstream cllm_fail_os_;                                               \
    cllm_fail_os_ << msg;                                                           \
    ::cllm::detail::throw_error(__FILE__, __LINE__, cllm_fail_os_.str());           \
  } while (0)
