// GPU tests skip, with the reason, where no CUDA device is visible (they must pass where one is).
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "runtime/backend/cuda_backend.h"

#define SKIP_WITHOUT_GPU()                                       \
  do {                                                           \
    std::string why;                                             \
    if (!::gptj::cuda_device_available(&why)) GTEST_SKIP() << why; \
  } while (0)
