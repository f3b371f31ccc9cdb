// Error type and checks used everywhere. An Error's message is one line that names what is wrong
// (file, field, tensor, rank); main() prints it prefixed with the rank and host and exits non-zero.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace gptj {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws gptj::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace gptj

// GPTJ_CHECK(cond, "fmt", args...): throws gptj::Error with the message when cond is false.
#define GPTJ_CHECK(cond, ...)        \
  do {                               \
    if (!(cond)) ::gptj::fail(__VA_ARGS__); \
  } while (0)
