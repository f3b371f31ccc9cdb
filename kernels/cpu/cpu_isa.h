// Which x86 instruction-set level the CPU kernels use, chosen at run time. The whole binary is built
// for x86-64-v3 (the avx2 level); the AVX-512 kernels live in their own translation units, built
// with their own flags, and run only when the CPU (cpuid) and the OS (xgetbv: ZMM and opmask state
// saved) support them. Environment GPTJ_CPU_ISA=avx2|avx512|avx512vnni|avx512bf16 forces a level, for tests
// and for comparing levels on one machine.
#pragma once
#include <string>
#include <string_view>

namespace gptj::cpu {

// Ordered: each level includes the ones before it.
enum class CpuIsa : int {
  kAvx2 = 0,        // AVX2 + FMA + F16C: the baseline (x86-64-v3)
  kAvx512 = 1,      // + AVX-512 F, BW, VL, DQ
  kAvx512Vnni = 2,  // + AVX512_VNNI (vpdpbusd: the int8 x int8 product)
  kAvx512Bf16 = 3,  // + AVX512_BF16 (vdpbf16ps: the bfloat16 x bfloat16 tile); needs VNNI as well
};
inline constexpr int kCpuIsaLevels = 4;

// "avx2", "avx512", "avx512vnni", "avx512bf16".
std::string_view cpu_isa_name(CpuIsa isa);

// The level GPTJ_CPU_ISA spells; an unknown name throws gptj::Error listing the valid ones.
CpuIsa parse_cpu_isa(std::string_view name);

// The best level this CPU and OS support (cpuid + xgetbv, read once). Throws gptj::Error when even
// the baseline is missing.
CpuIsa detected_cpu_isa();

// The CPU features that matter here, as present, e.g. "avx2 fma f16c avx512f avx512bw ...".
std::string cpu_isa_features();

// The level a GPTJ_CPU_ISA value selects on a CPU whose best level is `detected`: `detected` when
// the value is null or empty, else the named level, which must be <= detected (else gptj::Error,
// one line naming the level asked for and what the CPU has).
CpuIsa choose_cpu_isa(const char* env_value, CpuIsa detected);

// The level the kernels use: choose_cpu_isa(getenv("GPTJ_CPU_ISA"), detected_cpu_isa()), decided at
// the first call (which throws, as choose_cpu_isa does, on a bad value).
CpuIsa active_cpu_isa();
// Its name, for logs and the bench.
std::string_view cpu_isa_name();
// For the launch log: "avx512bf16 (detected)", or "avx2 (forced; the CPU's best is avx512)" when
// GPTJ_CPU_ISA or set_active_cpu_isa chose the level.
std::string describe_cpu_isa();

// Switches the active level in-process (the kernel tests run once per level). Throws gptj::Error
// when the CPU lacks `isa`. Not meant to race with running kernels.
void set_active_cpu_isa(CpuIsa isa);

}  // namespace gptj::cpu
