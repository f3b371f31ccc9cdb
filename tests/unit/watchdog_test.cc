// StepWatchdog: the limit a step gets (base + allowance from the cost per token) and the two ways it
// ends a process: a step past its limit, and a health probe (the NCCL async-error query) reporting
// a failure. Death tests: the watchdog _Exit(3)s the process, as it must when a collective hangs.
#include "parallel/watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace gptj {
namespace {

TEST(StepWatchdog, LimitIsBasePlusAllowanceFromThePriorUntilAStepIsMeasured) {
  StepWatchdog dog(15.0, "rank 1 on test", 0.5);
  EXPECT_DOUBLE_EQ(dog.limit_for(1), 15.0 + StepWatchdog::kAllowanceFactor * 0.5);
  EXPECT_DOUBLE_EQ(dog.limit_for(4096), 15.0 + StepWatchdog::kAllowanceFactor * 0.5 * 4096);
}

TEST(StepWatchdog, AFastStepLowersTheCostOnlyByTheDecayFactor) {
  StepWatchdog dog(15.0, "rank 1 on test", 1.0);
  dog.begin_step(1, 10);
  dog.end_step();  // microseconds: far below the prior
  EXPECT_NEAR(dog.limit_for(100), 15.0 + StepWatchdog::kAllowanceFactor * StepWatchdog::kCostDecay * 100, 1e-9);
}

TEST(StepWatchdog, ASlowStepRaisesTheCostToWhatItMeasured) {
  StepWatchdog dog(15.0, "rank 1 on test", 0.0);
  dog.begin_step(1, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  dog.end_step();
  EXPECT_GE(dog.limit_for(1000), 15.0 + StepWatchdog::kAllowanceFactor * 0.05 * 1000);
}

TEST(StepWatchdogDeathTest, AStepPastItsLimitEndsTheProcessWithTheStepNamed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StepWatchdog dog(0.2, "rank 1 on test", 0.0);
        dog.begin_step(7, 3);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      ::testing::ExitedWithCode(3), "rank 1 on test: step 7 \\(3 tokens\\) did not complete within 0 s");
}

TEST(StepWatchdogDeathTest, AFailedHealthProbeEndsTheProcessBetweenSteps) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StepWatchdog dog(15.0, "rank 2 on test", 0.0);
        dog.set_health_probe([] { return std::string("NCCL communicator failed asynchronously: remote error"); });
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      ::testing::ExitedWithCode(3), "rank 2 on test: NCCL communicator failed asynchronously");
}

TEST(StepWatchdog, AHealthyProbeAndQuickStepsLeaveTheProcessAlone) {
  StepWatchdog dog(0.2, "rank 1 on test", 0.0);
  std::atomic<int> polls{0};
  dog.set_health_probe([&polls] { ++polls; return std::string(); });
  for (int step = 1; step <= 5; ++step) {
    dog.begin_step(step, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    dog.end_step();
  }
  EXPECT_GT(polls, 0);
}

}  // namespace
}  // namespace gptj
