// Test helpers: `action()` must throw gptj::Error whose one-line message names every needle
// (a file, field, tensor or value), any other outcome being a test failure; and, for fuzz tests,
// clean_outcome(): success or gptj::Error, nothing else.
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

// Runs `action`; returns true on success, false on gptj::Error; anything else is a test failure
// that names the mutation.
template <typename F>
bool clean_outcome(F&& action, const std::string& mutation) {
  try {
    action();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << mutation << ": threw a non-gptj::Error: " << e.what();
  } catch (...) {
    ADD_FAILURE() << mutation << ": threw something that is not a std::exception";
  }
  return false;
}

}  // namespace gptj::testing
