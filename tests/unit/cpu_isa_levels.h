// Kernel tests run once per CPU ISA level (kernels/cpu/cpu_isa.h): a gtest fixture over a parameter
// that names a level. Each test switches the kernels to its level for its duration, and a level
// this CPU lacks is SKIPPED with the reason (never counted as passed). tests/CMakeLists.txt runs
// such a binary once per level (a ctest entry each, filtered by the name suffix).
#pragma once
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "kernels/cpu/cpu_isa.h"

namespace gptj::cpu {
inline void PrintTo(CpuIsa isa, std::ostream* out) { *out << cpu_isa_name(isa); }  // gtest's name for it
}  // namespace gptj::cpu

namespace gptj::testing {

inline const auto kAllCpuIsaLevels = ::testing::Values(cpu::CpuIsa::kAvx2, cpu::CpuIsa::kAvx512, cpu::CpuIsa::kAvx512Vnni,
                                                cpu::CpuIsa::kAvx512Bf16);

// Param: the test's parameter; level_of(param) says which level it runs at.
template <class Param>
class CpuIsaTest : public ::testing::TestWithParam<Param> {
 protected:
  virtual cpu::CpuIsa level() const = 0;
  void SetUp() override {
    const cpu::CpuIsa want = level(), best = cpu::detected_cpu_isa();
    if (want > best)
      GTEST_SKIP() << "this CPU lacks " << cpu::cpu_isa_name(want) << " (best level " << cpu::cpu_isa_name(best)
                   << "; has: " << cpu::cpu_isa_features() << ")";
    cpu::set_active_cpu_isa(want);
  }
  void TearDown() override { cpu::set_active_cpu_isa(saved_); }

 private:
  cpu::CpuIsa saved_ = cpu::active_cpu_isa();
};

}  // namespace gptj::testing
