// linear_bench: times one cpu::linear product shape by each way this project can compute it, in one
// run, interleaved, and prints a JSON line per way (median and best ms, GFLOP/s, ratio to the
// first way). Not a test: a tool for choosing the kernels' row thresholds (linear.cc) on a machine.
//   ways: auto   cpu::linear as the model calls it (the level's kernels or OpenBLAS by row count)
//         sgemm  OpenBLAS sgemm on float32 weights (16-bit / quantized weights widened once, outside
//                the timing: the same values)
//         tile   the level's register tile (3 or 6 weight rows x 4 input rows) on those float32 weights at any row count
//         w8a8   (int8 only) cpu::linear with --int8-activations: the rows quantized, the level's int8 x int8 product
//         bf16dot (bfloat16 only) cpu::linear with --dtype bfloat16's products: the rows rounded to bfloat16,
//                vdpbf16ps at avx512bf16 (4+ rows), the same numerics by widening elsewhere
// Usage: linear_bench ROWS IN OUT [float32|float16|bfloat16|int8|int4] [REPEATS]   (threads: OMP_NUM_THREADS)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_kernels.h"
#include "runtime/core/aligned.h"
#include "runtime/core/dtype.h"
#include "runtime/core/matrix.h"
#include "runtime/core/quant.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Way {
  std::string name;
  std::vector<double> ms;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace gptj;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ROWS IN OUT [float32|float16|bfloat16|int8|int4] [REPEATS]\n", argv[0]);
    return 2;
  }
  const int rows = std::atoi(argv[1]), in = std::atoi(argv[2]), out = std::atoi(argv[3]);
  const std::string format = argc > 4 ? argv[4] : "float32";
  const bool quantized = format == "int8" || format == "int4";
  const DType dtype = quantized ? DType::kF32 : parse_dtype(format);
  const int repeats = argc > 5 ? std::atoi(argv[5]) : 15;
  if (rows < 1 || in < 1 || out < 1 || repeats < 1) {
    std::fprintf(stderr, "linear_bench: ROWS, IN, OUT and REPEATS must be positive\n");
    return 2;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  // 64-byte aligned, as the model's weights and activations (runtime/core/aligned.h).
  AlignedVector<float> x(static_cast<std::size_t>(rows) * in), w(static_cast<std::size_t>(out) * in),
      y(static_cast<std::size_t>(rows) * out);
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng);
  AlignedVector<uint8_t> stored(w.size() * dtype_size(dtype));
  QuantizedMatrix q;
  cpu::WeightRef weight{stored.data(), static_cast<int>(dtype)};
  if (quantized) {
    HostMatrix m(DType::kF32, out, in);
    std::copy(w.begin(), w.end(), static_cast<float*>(m.data()));
    q = quantize(m, format == "int8" ? WeightFormat::kInt8 : WeightFormat::kInt4, "bench");
    dequantize_rows(q, 0, out, w.data());  // sgemm / tile see the same values
    weight = format == "int8" ? cpu::WeightRef{q.values.data(), cpu::WeightRef::kInt8, q.scales.data()}
                              : cpu::WeightRef{q.values.data(), cpu::WeightRef::kInt4, q.scales16.data()};
  } else {
    convert_from_f32(dtype, w.data(), stored.data(), w.size());
    convert_to_f32(dtype, stored.data(), w.data(), w.size());  // sgemm / tile see the same values
  }
  const cpu::LinearKernels& level = cpu::active_linear_kernels();

  std::vector<Way> ways = {{"auto", {}}, {"sgemm", {}}};
  if (in % 8 == 0) ways.push_back({"tile", {}});
  if (format == "int8") ways.push_back({"w8a8", {}});  // --int8-activations: the level's int8 x int8 product
  if (dtype == DType::kBF16) ways.push_back({"bf16dot", {}});  // --dtype bfloat16's products
  auto run = [&](const std::string& name) {
    if (name == "auto") {
      cpu::linear(x.data(), in, rows, in, weight, out, nullptr, y.data(), out);
    } else if (name == "w8a8") {
      cpu::WeightRef w8a8 = weight;
      w8a8.int8_activations = true;
      cpu::linear(x.data(), in, rows, in, w8a8, out, nullptr, y.data(), out);
    } else if (name == "bf16dot") {
      cpu::WeightRef rounded = weight;
      rounded.bf16_products = true;
      cpu::linear(x.data(), in, rows, in, rounded, out, nullptr, y.data(), out);
    } else if (name == "sgemm") {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x.data(), in, w.data(), in, 0.0f,
                  y.data(), out);
    } else {
      level.tiled_f32(x.data(), in, rows, in, w.data(), out, nullptr, y.data(), out);
    }
  };
  for (Way& way : ways) run(way.name);  // warm-up: scratch, OpenBLAS threads, pages
  for (int r = 0; r < repeats; ++r)
    for (Way& way : ways) {
      const auto start = Clock::now();
      run(way.name);
      way.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
  const double flop = 2.0 * rows * in * out, first = median(ways[0].ms);
  for (const Way& way : ways) {
    const double med = median(way.ms);
    std::printf(
        "{\"way\": \"%s\", \"rows\": %d, \"in\": %d, \"out\": %d, \"weights\": \"%s\", \"cpu_isa\": \"%s\", "
        "\"median_ms\": %.3f, \"best_ms\": %.3f, \"gflops\": %.1f, \"vs_auto\": %.3f}\n",
        way.name.c_str(), rows, in, out, format.c_str(),
        std::string(cpu::cpu_isa_name(cpu::active_cpu_isa())).c_str(), med,
        *std::min_element(way.ms.begin(), way.ms.end()), flop / med / 1e6, med / first);
  }
  return 0;
}
