// main() of the test binaries whose tests can skip for want of hardware (the GPU tests: no GPU
// visible, or fewer GPUs than a test needs; the per-level kernel tests: a CPU ISA level this CPU
// lacks): gtest's, except that a run in which some test skipped and none failed exits 77, which
// ctest reports as skipped (SKIP_RETURN_CODE) instead of passed: a check that did not run is never
// counted as one that passed.
#include <gtest/gtest.h>

#include <cstdio>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int result = RUN_ALL_TESTS();
  if (result != 0) return result;
  const ::testing::UnitTest& run = *::testing::UnitTest::GetInstance();
  if (run.skipped_test_count() > 0) {
    std::printf("%d of %d tests skipped: exit 77 (reported as skipped)\n", run.skipped_test_count(),
                run.test_to_run_count());
    return 77;
  }
  return 0;
}
