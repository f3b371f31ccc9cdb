// The CPU ISA level (kernels/cpu/cpu_isa.h): GPTJ_CPU_ISA parsing and its errors, forcing a level
// the CPU lacks, and detection against GCC's own (__builtin_cpu_supports, which also checks that
// the OS enables the AVX-512 register state).
#include "kernels/cpu/cpu_isa.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/core/error.h"

namespace gptj::cpu {
namespace {

std::string error_of(const auto& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CpuIsa, NamesParseBack) {
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAvx512Bf16})
    EXPECT_EQ(parse_cpu_isa(cpu_isa_name(isa)), isa) << cpu_isa_name(isa);
  EXPECT_EQ(cpu_isa_name(CpuIsa::kAvx512Vnni), "avx512vnni");
  EXPECT_EQ(cpu_isa_name(CpuIsa::kAvx512Bf16), "avx512bf16");
}

TEST(CpuIsa, AnUnknownNameListsTheValidOnes) {
  const std::string message = error_of([] { choose_cpu_isa("avx512fp16", CpuIsa::kAvx512Bf16); });
  EXPECT_NE(message.find("GPTJ_CPU_ISA=avx512fp16"), std::string::npos) << message;
  EXPECT_NE(message.find("avx2, avx512, avx512vnni, avx512bf16"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(error_of([] { parse_cpu_isa("AVX2"); }), "(no error)");  // names are exact
}

TEST(CpuIsa, UnsetOrEmptyMeansTheDetectedLevel) {
  EXPECT_EQ(choose_cpu_isa(nullptr, CpuIsa::kAvx512), CpuIsa::kAvx512);
  EXPECT_EQ(choose_cpu_isa("", CpuIsa::kAvx2), CpuIsa::kAvx2);
}

TEST(CpuIsa, ForcingALowerLevelIsAllowed) {
  EXPECT_EQ(choose_cpu_isa("avx2", CpuIsa::kAvx512Bf16), CpuIsa::kAvx2);
  EXPECT_EQ(choose_cpu_isa("avx512", CpuIsa::kAvx512Bf16), CpuIsa::kAvx512);
  EXPECT_EQ(choose_cpu_isa("avx512vnni", CpuIsa::kAvx512Bf16), CpuIsa::kAvx512Vnni);
  EXPECT_EQ(choose_cpu_isa("avx512bf16", CpuIsa::kAvx512Bf16), CpuIsa::kAvx512Bf16);
}

TEST(CpuIsa, ForcingAMissingLevelNamesItAndWhatTheCpuHas) {
  const std::string message = error_of([] { choose_cpu_isa("avx512bf16", CpuIsa::kAvx2); });
  EXPECT_NE(message.find("GPTJ_CPU_ISA=avx512bf16"), std::string::npos) << message;
  EXPECT_NE(message.find("best level is avx2"), std::string::npos) << message;
  EXPECT_NE(message.find(cpu_isa_features()), std::string::npos) << message;
  EXPECT_NE(error_of([] { choose_cpu_isa("avx512", CpuIsa::kAvx2); }), "(no error)");
  EXPECT_NE(error_of([] { choose_cpu_isa("avx512bf16", CpuIsa::kAvx512Vnni); }), "(no error)");
}

TEST(CpuIsa, SetActiveRefusesALevelThisCpuLacks) {
  const CpuIsa best = detected_cpu_isa(), before = active_cpu_isa();
  if (best == CpuIsa::kAvx512Bf16) GTEST_SKIP() << "this CPU has every level: none to refuse";
  const auto above = static_cast<CpuIsa>(static_cast<int>(best) + 1);
  const std::string message = error_of([&] { set_active_cpu_isa(above); });
  EXPECT_NE(message.find(std::string(cpu_isa_name(above))), std::string::npos) << message;
  EXPECT_EQ(active_cpu_isa(), before);  // unchanged
}

TEST(CpuIsa, DetectionAgreesWithTheCompilersRuntime) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool vnni = __builtin_cpu_supports("avx512vnni");
  const CpuIsa want = !avx512                                          ? CpuIsa::kAvx2
                      : !vnni                                          ? CpuIsa::kAvx512
                      : __builtin_cpu_supports("avx512bf16") ? CpuIsa::kAvx512Bf16
                                                                       : CpuIsa::kAvx512Vnni;
  EXPECT_EQ(cpu_isa_name(detected_cpu_isa()), cpu_isa_name(want)) << "features: " << cpu_isa_features();
  EXPECT_TRUE(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
}

TEST(CpuIsa, TheLogLineNamesTheActiveLevel) {
  const std::string line = describe_cpu_isa();
  EXPECT_EQ(line.rfind(std::string(cpu_isa_name()), 0), 0u) << line;
}

}  // namespace
}  // namespace gptj::cpu
