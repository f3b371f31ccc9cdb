// StepWatchdog: the limit a step gets (base + allowance from the cost per token), the limits of the
// waits between steps (rank 0's silence, its start-up, a keepalive sent), and the ways it ends a
// process: a step or a wait past its limit, and a health probe (the NCCL async-error query)
// reporting a failure. Death tests: the watchdog _Exit(3)s the process, as it must when a collective hangs.
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

TEST(StepWatchdogDeathTest, AStepPastItsLimitNamesTheOtherRanksOfTheStep) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StepWatchdog dog(0.2, "rank 3 (replica 1) on test", 0.0);
        dog.set_step_peers("the other rank of this step (rank 2 on test)");
        dog.begin_step(4, 1);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      ::testing::ExitedWithCode(3),
      "rank 3 \\(replica 1\\) on test: step 4 .* the other rank of this step \\(rank 2 on test\\) is stopped, hung or "
      "unreachable");
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

TEST(StepWatchdog, Rank0MayBeSilentForTheBasePlusTwoKeepaliveIntervals) {
  StepWatchdog dog(15.0, "rank 1 on test", 0.0);
  EXPECT_DOUBLE_EQ(dog.rank0_silence_limit(), 15.0 + 2 * StepWatchdog::kKeepaliveIntervalS);
}

TEST(StepWatchdog, TheStartupWaitAllowsForASlowLoadOfRank0) {
  StepWatchdog dog(15.0, "rank 1 on test", 0.0);
  const double silence = dog.rank0_silence_limit();
  // Measured load time, times the allowance factor, when that is the larger.
  EXPECT_DOUBLE_EQ(dog.startup_wait_limit(100.0, 0.0), silence + StepWatchdog::kAllowanceFactor * 100.0);
  // Else a read of the shard at the slow rate: GPT-J-6B's 6 GB fp16 shard at TP 2 gets minutes.
  EXPECT_DOUBLE_EQ(dog.startup_wait_limit(1.0, 6e9), silence + 6e9 / StepWatchdog::kSlowReadBytesPerS);
  EXPECT_GT(dog.startup_wait_limit(1.0, 6e9), 300.0);
}

// In a child: a wait of `kind` outlasts its 0.3 s limit; the watchdog ends it with `message`.
void expect_wait_ends_process(StepWatchdog::Wait kind, const char* who, const char* message) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StepWatchdog dog(0.2, who, 0.0);
        dog.begin_wait(kind, 0.3);
        std::this_thread::sleep_for(std::chrono::seconds(10));
      },
      ::testing::ExitedWithCode(3), message);
}

TEST(StepWatchdogDeathTest, SilenceFromRank0PastTheLimitEndsTheProcessSayingSo) {
  expect_wait_ends_process(
      StepWatchdog::Wait::kRank0, "rank 1 on test",
      "rank 1 on test: no word from rank 0 for 0 s \\(stopped, hung or unreachable\\); ending the job");
}

TEST(StepWatchdogDeathTest, AStartupWaitPastItsLimitEndsTheProcessNamingTheLoad) {
  expect_wait_ends_process(StepWatchdog::Wait::kRank0Startup, "rank 1 on test",
                           "rank 1 on test: no word from rank 0 for 0 s after this rank loaded its shard");
}

TEST(StepWatchdogDeathTest, AKeepaliveThatDoesNotCompleteEndsRank0) {
  expect_wait_ends_process(StepWatchdog::Wait::kKeepaliveSent, "rank 0 on test",
                           "rank 0 on test: a keepalive to the other ranks did not complete within 0 s");
}

TEST(StepWatchdog, WaitsThatEndInTimeAndStepsAfterThemLeaveTheProcessAlone) {
  StepWatchdog dog(2.0, "rank 1 on test", 0.0);
  for (int step = 1; step <= 3; ++step) {
    dog.begin_wait(StepWatchdog::Wait::kRank0, 0.3);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dog.end_wait();
    dog.begin_wait(StepWatchdog::Wait::kRank0, 0.3);
    dog.begin_step(step, 1);  // a step ends the wait: it may outlast the wait's limit
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    dog.end_step();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // no wait in progress: no limit
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
