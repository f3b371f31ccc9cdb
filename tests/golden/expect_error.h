// Test helper: `action()` must throw gptj::Error whose one-line message names every needle
// (a file, field, tensor or value); any other outcome is a test failure.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "runtime/core/error.h"

namespace gptj::testing {

template <typename F>
void expect_gptj_error(F&& action, std::initializer_list<std::string> needles) {
  try {
    action();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message '" << message << "' does not name '" << needle << "'";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-gptj::Error: " << e.what();
  }
}

}  // namespace gptj::testing
