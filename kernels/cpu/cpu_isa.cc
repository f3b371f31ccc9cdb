// Run-time detection of the kernels' instruction-set level (cpu_isa.h): cpuid for what the CPU
// implements, xgetbv for what the OS saves on a context switch (a CPU with AVX-512 under an OS that
// does not enable the ZMM/opmask state must not run AVX-512 code).
#include "kernels/cpu/cpu_isa.h"

#include <cpuid.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "runtime/core/error.h"

namespace gptj::cpu {
namespace {

constexpr std::array<std::string_view, kCpuIsaLevels> kNames = {"avx2", "avx512", "avx512vnni", "avx512bf16"};

struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false,
       avx512bf16 = false;
  bool ymm_state = false, zmm_state = false;  // XCR0: the OS saves YMM / ZMM + opmask registers
};

uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Features read_features() {
  Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (osxsave && avx) {
    const uint64_t xcr0 = read_xcr0();
    f.ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
    f.zmm_state = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a;
  f.avx2 = b & (1u << 5);
  f.avx512f = b & (1u << 16);
  f.avx512dq = b & (1u << 17);
  f.avx512bw = b & (1u << 30);
  f.avx512vl = b & (1u << 31);
  f.avx512vnni = c & (1u << 11);
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512bf16 = a & (1u << 5);
  }
  return f;
}

const Features& features() {
  static const Features f = read_features();
  return f;
}

std::atomic<int>& active_slot() {
  // Decided at the first call; a throw (bad GPTJ_CPU_ISA) leaves it undecided, so the next call
  // throws the same error.
  static std::atomic<int> slot{static_cast<int>(choose_cpu_isa(std::getenv("GPTJ_CPU_ISA"), detected_cpu_isa()))};
  return slot;
}

// `wanted` (asked for by `what`), checked against the CPU's best level.
CpuIsa require(CpuIsa wanted, CpuIsa detected, std::string_view what) {
  GPTJ_CHECK(wanted <= detected, "{}{}: this CPU lacks it (its best level is {}; it has: {})", what,
             cpu_isa_name(wanted), cpu_isa_name(detected), cpu_isa_features());
  return wanted;
}

}  // namespace

std::string_view cpu_isa_name(CpuIsa isa) { return kNames.at(static_cast<std::size_t>(isa)); }

CpuIsa parse_cpu_isa(std::string_view name) {
  for (int i = 0; i < kCpuIsaLevels; ++i)
    if (kNames[i] == name) return static_cast<CpuIsa>(i);
  fail("GPTJ_CPU_ISA={}: unknown level (valid: {}, {}, {}, {})", name, kNames[0], kNames[1], kNames[2], kNames[3]);
}

CpuIsa detected_cpu_isa() {
  const Features& f = features();
  GPTJ_CHECK(f.avx2 && f.fma && f.f16c && f.ymm_state,
             "this CPU lacks AVX2+FMA+F16C (has: {}): gptj is built for x86-64-v3", cpu_isa_features());
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.zmm_state)) return CpuIsa::kAvx2;
  if (!f.avx512vnni) return CpuIsa::kAvx512;  // Skylake-SP
  return f.avx512bf16 ? CpuIsa::kAvx512Bf16 : CpuIsa::kAvx512Vnni;  // Cooper Lake, Sapphire Rapids, Zen 4 : Ice Lake
}

std::string cpu_isa_features() {
  const Features& f = features();
  const std::pair<bool, const char*> all[] = {
      {f.avx2, "avx2"},         {f.fma, "fma"},           {f.f16c, "f16c"},
      {f.avx512f, "avx512f"},   {f.avx512bw, "avx512bw"}, {f.avx512vl, "avx512vl"},
      {f.avx512dq, "avx512dq"}, {f.avx512vnni, "avx512_vnni"}, {f.avx512bf16, "avx512_bf16"},
      {f.zmm_state, "os-zmm-state"}};
  std::string out;
  for (const auto& [present, name] : all) {
    if (!present) continue;
    if (!out.empty()) out += ' ';
    out += name;
  }
  return out.empty() ? "none of them" : out;
}

CpuIsa choose_cpu_isa(const char* env_value, CpuIsa detected) {
  if (env_value == nullptr || *env_value == '\0') return detected;
  return require(parse_cpu_isa(env_value), detected, "GPTJ_CPU_ISA=");
}

CpuIsa active_cpu_isa() { return static_cast<CpuIsa>(active_slot().load(std::memory_order_relaxed)); }

std::string_view cpu_isa_name() { return cpu_isa_name(active_cpu_isa()); }

std::string describe_cpu_isa() {
  const CpuIsa active = active_cpu_isa(), detected = detected_cpu_isa();
  const char* env = std::getenv("GPTJ_CPU_ISA");
  if (active == detected && (env == nullptr || *env == '\0')) return std::string(cpu_isa_name(active)) + " (detected)";
  return fmt::format("{} (forced; the CPU's best is {})", cpu_isa_name(active), cpu_isa_name(detected));
}

void set_active_cpu_isa(CpuIsa isa) {
  active_slot().store(static_cast<int>(require(isa, detected_cpu_isa(), "CPU ISA level ")),
                      std::memory_order_relaxed);
}

}  // namespace gptj::cpu
