// CUDA weight-only int8 / int4 products (kernels/cuda/quant_linear.cu through
// runtime/backend/cuda_quant_linear.h), FP8 E4M3 (kernels/cuda/fp8.cu, CudaGemm::linear_fp8) and the
// CUDA backend with --weights int8/int4/fp8.
//
// Kernels: every path — quant_gemv (1..8 rows) and dequantized tiles into cuBLASLt (more rows; one
// tile, and 16-row tiles with a ragged last one) — for rows 1..100, ragged in/out sizes (in not a
// multiple of 16 or of the int4 group, out not a multiple of the 4 outputs per block), row strides
// ldx > in and ldy > out, int8 and int4, T = float, __half, __nv_bfloat16, output T or float32;
// against the same product in double on the weights dequantized by runtime/core/quant.h
// (dequantize_rows), on x rounded to T first. The padding columns of x are NaN (a kernel that reads
// past `in` fails) and y's padding must be left as it was. The gemv's per-lane code
// (kernels/cuda/quant_lane.cuh) also runs on the CPU, lane by lane (no GPU needed), for rows 1..8 on
// the same shapes, with the float32 bound below. Tolerance, with S = sum_k |x_k w_k|:
//   float32 storage: 2 (in + 4) 2^-24 S — the worst-case bound of float32 summation (plus the
//     scale multiply and the reference's rounding of scale * q), i.e. equal within float rounding;
//   16-bit storage (u = 2^-11 float16, 2^-8 bfloat16): that + u S (the tiled path rounds each
//     dequantized weight to T) + u |y| when y is T (output rounding).
// Whole model: tiny-gptj-a/b on the CUDA backend in float32 with --weights int8/int4 (lm_head kept
// and quantized) against the CPU backend with the same --weights, so both hold the same quantized
// weights and only float32 rounding differs: max |logit difference| <= 2e-4 (twice the 1e-4 that
// the unquantized float32 CUDA-vs-CPU checks of scripts/gpu-check.sh use), on a 7-token prefill
// (the gemv path: 7 rows), a 33-token prefill (the tiled path) and decode steps.
// FP8 (sm_89+; skipped below): cuda::fp8_quantize against the same per-tensor E4M3 quantization on the
// host (bytes and scales equal exactly), and CudaGemm::linear_fp8 against the double product of the
// dequantized E4M3 values within 2^-10 S (+ output rounding), for T = float / __half / __nv_bfloat16;
// the fixtures with --weights fp8 against Hugging Face within a sanity bound (see CudaFp8Model).
// The GPU tests skip with the reason when no CUDA device is visible (CudaQuantLanes and
// CudaQuantTiles run on the CPU and must pass everywhere).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_fp8.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/quant_lane.cuh"
#include "parallel/communicator.h"
#include "runtime/backend/cuda_gemm.h"
#include "runtime/backend/cuda_quant_linear.h"
#include "runtime/backend/cuda_type_info.h"
#include "runtime/core/dtype.h"
#include "runtime/core/error.h"
#include "runtime/core/quant.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/golden_data.h"
#include "tests/gpu/gpu_test_support.h"

namespace gptj {
namespace {

using testing::DeviceMem;

// Each compute type's DType / cudaDataType_t, and kUnit: its rounding unit beyond float32's.
template <typename T>
struct Storage;
template <>
struct Storage<float> : CudaTypeInfo<float> {
  static constexpr double kUnit = 0.0;  // no rounding beyond float32's
};
template <>
struct Storage<__half> : CudaTypeInfo<__half> {
  static constexpr double kUnit = 1.0 / 2048;
};
template <>
struct Storage<__nv_bfloat16> : CudaTypeInfo<__nv_bfloat16> {
  static constexpr double kUnit = 1.0 / 256;
};

// W [out, in] of random values with a zero row (scale 0) and a row with one huge value.
QuantizedMatrix random_quantized(int out, int in, WeightFormat format, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  HostMatrix m(DType::kF32, out, in);
  float* w = static_cast<float*>(m.data());
  for (int64_t i = 0; i < static_cast<int64_t>(out) * in; ++i) w[i] = normal(rng);
  if (out > 2) {
    std::fill(w, w + in, 0.0f);
    w[static_cast<std::size_t>(2) * in + in / 2] = 1000.0f;
  }
  return quantize(m, format, "test.weight");
}

cuda::QuantWeights device_view(const QuantizedMatrix& q, const DeviceMem& values, const DeviceMem& scales) {
  cuda::QuantWeights w;
  w.kind = q.format == WeightFormat::kInt8 ? cuda::QuantKind::kInt8 : cuda::QuantKind::kInt4;
  w.rows = static_cast<int>(q.rows);
  w.cols = static_cast<int>(q.cols);
  w.values = values.as<uint8_t>();
  w.scales = scales.get();
  return w;
}

struct Shape {
  int out, in, ldx_pad, ldy_pad;
};

// out, in, ldx - in, ldy - out: aligned (16-byte loads), ragged (in % 16 != 0, several int4 groups
// with a short last one), one column, a single output, a width past one warp's 512 values per step
// with aligned rows and strides.
constexpr Shape kShapes[] = {{64, 256, 0, 0}, {37, 300, 5, 3}, {5, 1, 2, 1}, {1, 130, 0, 7}, {45, 1040, 8, 0}};

struct Stream {  // one owned non-blocking stream
  Stream() { GPTJ_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(stream); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t stream = nullptr;
};

// y [rows, out] (row stride ldy) against the product in double of x [rows, in] (row stride ldx) and the
// dequantized w [out, in], within the tolerance of the header (u: the storage type's unit roundoff,
// 0 for float32; y_rounded: y was rounded to the storage type).
void expect_reference(const float* y, int ldy, int rows, const float* x, int ldx, const float* w, int out, int in,
                      double u, bool y_rounded, const std::string& what) {
  const double u32 = std::ldexp(1.0, -24);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      const float got = y[static_cast<std::size_t>(r) * ldy + o];
      double want = 0, magnitude = 0;
      for (int k = 0; k < in; ++k) {
        const double term = static_cast<double>(x[static_cast<std::size_t>(r) * ldx + k]) *
                            w[static_cast<std::size_t>(o) * in + k];
        want += term;
        magnitude += std::fabs(term);
      }
      const double tol = 2.0 * (in + 4) * u32 * magnitude + u * magnitude + (y_rounded ? u * std::fabs(want) : 0.0) +
                         1e-30;
      ASSERT_LE(std::fabs(got - want), tol) << what << ": row " << r << " out " << o << " got " << got << " want "
                                            << want << " (sum |x w| " << magnitude << ")";
    }
  }
}

// One product through `linear` (rows, shape, format) with T inputs and output T or float32, checked
// element by element against the double reference.
template <typename T>
void check_product(CudaQuantLinear& linear, cudaStream_t stream, int rows, const Shape& shape, WeightFormat format,
                   bool y_f32, const std::string& what) {
  const int out = shape.out, in = shape.in, ldx = in + shape.ldx_pad, ldy = out + shape.ldy_pad;
  const QuantizedMatrix q = random_quantized(out, in, format, 1000u * rows + 7u * in + out);
  std::vector<float> w(static_cast<std::size_t>(out) * in);
  dequantize_rows(q, 0, out, w.data());

  // x [rows, ldx] rounded to T, NaN in the padding columns.
  std::mt19937 rng(rows * 31 + in);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(rows) * ldx, std::numeric_limits<float>::quiet_NaN());
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < in; ++k) x[static_cast<std::size_t>(r) * ldx + k] = normal(rng);
  std::vector<uint8_t> x_bytes(x.size() * sizeof(T));
  convert_from_f32(Storage<T>::kDType, x.data(), x_bytes.data(), x.size());
  convert_to_f32(Storage<T>::kDType, x_bytes.data(), x.data(), x.size());

  const std::size_t y_elem = y_f32 ? sizeof(float) : sizeof(T);
  const DType y_dtype = y_f32 ? DType::kF32 : Storage<T>::kDType;
  const float sentinel = 12345.0f;
  std::vector<float> y_init(static_cast<std::size_t>(rows) * ldy, sentinel);
  std::vector<uint8_t> y_bytes(y_init.size() * y_elem);
  convert_from_f32(y_dtype, y_init.data(), y_bytes.data(), y_init.size());
  float sentinel_as_y = 0;  // the sentinel as y's type holds it
  convert_to_f32(y_dtype, y_bytes.data(), &sentinel_as_y, 1);

  DeviceMem d_values(q.values.size()), d_scales(q.size_bytes() - q.values.size());
  DeviceMem d_x(x_bytes.size()), d_y(y_bytes.size());
  GPTJ_CUDA_CHECK(cudaMemcpy(d_values.get(), q.values.data(), q.values.size(), cudaMemcpyHostToDevice));
  const void* scales = format == WeightFormat::kInt8 ? static_cast<const void*>(q.scales.data())
                                                     : static_cast<const void*>(q.scales16.data());
  GPTJ_CUDA_CHECK(cudaMemcpy(d_scales.get(), scales, q.size_bytes() - q.values.size(), cudaMemcpyHostToDevice));
  GPTJ_CUDA_CHECK(cudaMemcpy(d_x.get(), x_bytes.data(), x_bytes.size(), cudaMemcpyHostToDevice));
  GPTJ_CUDA_CHECK(cudaMemcpy(d_y.get(), y_bytes.data(), y_bytes.size(), cudaMemcpyHostToDevice));

  linear.linear(d_x.get(), ldx, rows, device_view(q, d_values, d_scales), d_y.get(), ldy, Storage<T>::kCuda,
                y_f32 ? CUDA_R_32F : Storage<T>::kCuda);
  GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream));
  GPTJ_CUDA_CHECK(cudaMemcpy(y_bytes.data(), d_y.get(), y_bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> y(y_init.size());
  convert_to_f32(y_dtype, y_bytes.data(), y.data(), y.size());

  for (int r = 0; r < rows; ++r) {
    for (int o = out; o < ldy; ++o)
      ASSERT_EQ(y[static_cast<std::size_t>(r) * ldy + o], sentinel_as_y)
          << what << ": wrote past out at row " << r << " column " << o;
  }
  expect_reference(y.data(), ldy, rows, x.data(), ldx, w.data(), out, in, Storage<T>::kUnit, !y_f32, what);
}

template <typename T>
class CudaQuantKernels : public ::testing::Test {};
using ComputeTypes = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(CudaQuantKernels, ComputeTypes);

TYPED_TEST(CudaQuantKernels, EveryPathAgainstTheDequantizedProductInDouble) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  Stream owned;
  cudaStream_t stream = owned.stream;
  {
    CudaGemm gemm(stream, 0);
    CudaQuantLinear one_tile(gemm, stream, 0);
    CudaQuantLinear small_tiles(gemm, stream, 0, /*tile_bytes=*/1);  // 16 rows per tile
    const int row_counts[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 100};
    for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
      for (const Shape& shape : kShapes) {
        for (int rows : row_counts) {
          for (bool y_f32 : {false, true}) {
            if (y_f32 && std::is_same_v<T, float>) continue;  // the same product
            const std::string what = std::string(weight_format_name(format)) + " rows " + std::to_string(rows) +
                                     " out " + std::to_string(shape.out) + " in " + std::to_string(shape.in) +
                                     (y_f32 ? " y float32" : " y T");
            check_product<T>(one_tile, stream, rows, shape, format, y_f32, what);
            if (rows > cuda::kQuantGemvMaxRows)
              check_product<T>(small_tiles, stream, rows, shape, format, y_f32, what + " (16-row tiles)");
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST(CudaQuantTiles, RowsPerTileAreMultiplesOfSixteen) {  // host arithmetic: runs without a GPU
  const std::size_t bytes = CudaQuantLinear::kDefaultTileBytes;  // 16 MiB
  EXPECT_EQ(CudaQuantLinear::tile_rows(bytes, 4096, 2), 2048);    // GPT-J w_in / lm_head in float16
  EXPECT_EQ(CudaQuantLinear::tile_rows(bytes, 20480, 2), 400);    // GPT-J w_out: 409.6 rows, down to 400
  EXPECT_EQ(CudaQuantLinear::tile_rows(bytes, 1, 4), 4194304);
  EXPECT_EQ(CudaQuantLinear::tile_rows(1, 300, 2), 16);           // at least 16
}

// ---- FP8 E4M3 (sm_89+) -------------------------------------------------------------------------------

int compute_capability() {
  int major = 0, minor = 0;
  GPTJ_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  GPTJ_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
  return major * 10 + minor;
}

#define SKIP_WITHOUT_FP8()                                                                              \
  do {                                                                                                 \
    SKIP_WITHOUT_GPU();                                                                                \
    if (compute_capability() < 89) GTEST_SKIP() << "no FP8 tensor cores (compute capability " << compute_capability() << ")"; \
  } while (0)

// v [rows, cols] (row stride ld) quantized as cuda::fp8_quantize does, on the host: the E4M3 bytes
// [rows, cols] and the scale.
std::vector<uint8_t> host_fp8(const std::vector<float>& v, int rows, int cols, int ld, float* scale) {
  float amax = 0;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(v[static_cast<std::size_t>(r) * ld + c]));
  *scale = amax > 0 ? amax / cuda::kFp8Max : 1.0f;
  std::vector<uint8_t> out(static_cast<std::size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const __nv_fp8_e4m3 q(v[static_cast<std::size_t>(r) * ld + c] / *scale);
      std::memcpy(&out[static_cast<std::size_t>(r) * cols + c], &q, 1);
    }
  return out;
}
float fp8_value(uint8_t byte) {
  __nv_fp8_e4m3 q;
  std::memcpy(static_cast<void*>(&q), &byte, 1);
  return static_cast<float>(q);
}

// The quantization (bytes and scales, exactly) and the product (within 2^-10 S + output rounding:
// cuBLASLt's FP8 tensor-core accumulation is not float32 summation order) against the host.
template <typename T>
void check_fp8_product(CudaGemm& gemm, cudaStream_t stream, int rows, int out, int in, int ldx_pad, bool y_f32) {
  const int ldx = in + ldx_pad, ldy = out;
  const std::string what = "fp8 rows " + std::to_string(rows) + " out " + std::to_string(out) + " in " +
                           std::to_string(in) + (y_f32 ? " y float32" : " y T");
  std::mt19937 rng(rows * 131 + out);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<std::size_t>(out) * in), x(static_cast<std::size_t>(rows) * ldx);
  for (float& v : w) v = 0.02f * normal(rng);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < ldx; ++k)
      x[static_cast<std::size_t>(r) * ldx + k] = k < in ? normal(rng) : std::numeric_limits<float>::quiet_NaN();
  std::vector<T> w_t(w.size()), x_t(x.size());
  convert_from_f32(Storage<T>::kDType, w.data(), w_t.data(), w.size());
  convert_to_f32(Storage<T>::kDType, w_t.data(), w.data(), w.size());
  convert_from_f32(Storage<T>::kDType, x.data(), x_t.data(), x.size());
  convert_to_f32(Storage<T>::kDType, x_t.data(), x.data(), x.size());

  DeviceMem d_w(w_t.size() * sizeof(T)), d_x(x_t.size() * sizeof(T)), d_w8(w.size()), d_x8(static_cast<std::size_t>(rows) * in);
  DeviceMem d_scales(4 * sizeof(float)), d_y(static_cast<std::size_t>(rows) * ldy * sizeof(float));
  GPTJ_CUDA_CHECK(cudaMemcpy(d_w.get(), w_t.data(), w_t.size() * sizeof(T), cudaMemcpyHostToDevice));
  GPTJ_CUDA_CHECK(cudaMemcpy(d_x.get(), x_t.data(), x_t.size() * sizeof(T), cudaMemcpyHostToDevice));
  float* scales = d_scales.as<float>();  // [w max, w scale, x max, x scale]
  cuda::fp8_quantize<T>(d_w.as<T>(), out, in, in, scales, d_w8.as<uint8_t>(), stream);
  cuda::fp8_quantize<T>(d_x.as<T>(), rows, in, ldx, scales + 2, d_x8.as<uint8_t>(), stream);
  gemm.linear_fp8(d_x8.get(), rows, in, d_w8.get(), out, scales + 3, scales + 1, d_y.get(), ldy,
                  y_f32 ? CUDA_R_32F : Storage<T>::kCuda);
  GPTJ_CUDA_CHECK(cudaStreamSynchronize(stream));

  float w_scale = 0, x_scale = 0, got_scales[4];
  const std::vector<uint8_t> w8 = host_fp8(w, out, in, in, &w_scale), x8 = host_fp8(x, rows, in, ldx, &x_scale);
  std::vector<uint8_t> got_w8(w8.size()), got_x8(x8.size());
  GPTJ_CUDA_CHECK(cudaMemcpy(got_scales, scales, sizeof(got_scales), cudaMemcpyDeviceToHost));
  GPTJ_CUDA_CHECK(cudaMemcpy(got_w8.data(), d_w8.get(), w8.size(), cudaMemcpyDeviceToHost));
  GPTJ_CUDA_CHECK(cudaMemcpy(got_x8.data(), d_x8.get(), x8.size(), cudaMemcpyDeviceToHost));
  ASSERT_EQ(got_scales[1], w_scale) << what;
  ASSERT_EQ(got_scales[3], x_scale) << what;
  ASSERT_EQ(got_w8, w8) << what << ": weight bytes";
  ASSERT_EQ(got_x8, x8) << what << ": input bytes";

  const DType y_dtype = y_f32 ? DType::kF32 : Storage<T>::kDType;
  std::vector<uint8_t> y_bytes(static_cast<std::size_t>(rows) * ldy * (y_f32 ? sizeof(float) : sizeof(T)));
  GPTJ_CUDA_CHECK(cudaMemcpy(y_bytes.data(), d_y.get(), y_bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> y(static_cast<std::size_t>(rows) * ldy);
  convert_to_f32(y_dtype, y_bytes.data(), y.data(), y.size());
  std::vector<float> xq(x8.size()), wq(w8.size());  // the dequantized E4M3 values
  for (std::size_t i = 0; i < xq.size(); ++i) xq[i] = fp8_value(x8[i]) * x_scale;
  for (std::size_t i = 0; i < wq.size(); ++i) wq[i] = fp8_value(w8[i]) * w_scale;
  // The 2^-10 S allowance stands in for the u S term: unit 2^-10 with float32 output, 2^-10 plus
  // output rounding otherwise.
  expect_reference(y.data(), ldy, rows, xq.data(), in, wq.data(), out, in, std::ldexp(1.0, -10) + Storage<T>::kUnit,
                   !y_f32, what);
}

template <typename T>
class CudaFp8 : public ::testing::Test {};
TYPED_TEST_SUITE(CudaFp8, ComputeTypes);

TYPED_TEST(CudaFp8, QuantizationExactAndProductsWithinTheBound) {
  SKIP_WITHOUT_FP8();
  using T = TypeParam;
  Stream owned;
  CudaGemm gemm(owned.stream, 0);
  // out, in (multiples of 16, as --weights fp8 requires of the model), x row padding.
  const int shapes[][3] = {{64, 256, 0}, {448, 64, 16}, {64, 320, 8}, {1008, 128, 0}};
  for (const auto& shape : shapes) {
    for (int rows : {1, 2, 7, 8, 9, 33, 100}) {
      for (bool y_f32 : {false, true}) {
        if (y_f32 && std::is_same_v<T, float>) continue;
        check_fp8_product<T>(gemm, owned.stream, rows, shape[0], shape[1], shape[2], y_f32);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

// The fixtures with --weights fp8 (float16 compute) against Hugging Face's float32 logits: a sanity
// bound, not an accuracy figure (none has been measured): every logit within 10 % of its row's range
// (E4M3 keeps 3 mantissa bits: each weight and input within 2^-4 relative). A wrong scale or layout
// misses it by far.
TEST(CudaFp8Model, FixturesNearTransformers) {
  SKIP_WITHOUT_FP8();
  for (const std::string model : {"tiny-gptj-a", "tiny-gptj-b"}) {
    const std::string dir = testing::model_dir(model);
    const GptjConfig config = load_config(dir + "/config.json");
    const Checkpoint checkpoint(dir);
    BackendOptions options = testing::small_float16_options();
    options.weights.format = WeightFormat::kFp8;
    SingleCommunicator comm;
    auto backend = make_cuda_backend(config, &checkpoint, 0, options, comm, 0);
    EXPECT_EQ(backend->weight_format(), "fp8 (lm_head float16)");
    StepBatch batch;
    batch.seqs.push_back({testing::prompts(model).at(1), 0, {0, 1}, true});
    const std::vector<float> logits = testing::forward_logits(*backend, batch);
    const std::vector<float> expected = testing::expected_logits(model, "logits_p7_all.f32.bin");
    ASSERT_EQ(logits.size(), expected.size());
    const int64_t vocab = config.vocab_size;
    for (int t = 0; t < 7; ++t) {
      const float* e = expected.data() + t * vocab;
      const float range = *std::max_element(e, e + vocab) - *std::min_element(e, e + vocab);
      EXPECT_LE(testing::max_abs_diff(logits.data() + t * vocab, e, vocab), 0.1f * range) << model << " position " << t;
    }
  }
}

// ---- the gemv's per-lane code on the CPU (quant_lane.cuh; runs without a GPU) --------------------

// quant_gemv's arithmetic with the 32 lanes of each output column's warp run one after another on
// the host, and their partial sums added (in lane order, where the GPU adds them by a shuffle tree).
template <typename T, cuda::QuantKind kKind>
std::vector<float> emulate_gemv(const T* x, int ldx, int rows, const cuda::QuantWeights& w) {
  const bool w_vec = cuda::quant_lane::weight_vector_loads(w), x_vec = cuda::quant_lane::input_vector_loads(x, ldx);
  std::vector<float> y(static_cast<std::size_t>(rows) * w.rows);
  for (int o = 0; o < w.rows; ++o) {
    std::vector<float> total(cuda::kQuantGemvMaxRows, 0.0f);
    for (int lane = 0; lane < cuda::quant_lane::kLanes; ++lane) {
      float acc[cuda::kQuantGemvMaxRows] = {};
      cuda::quant_lane::lane_partial<T, kKind, cuda::kQuantGemvMaxRows>(x, ldx, rows, w, o, lane, w_vec, x_vec, acc);
      for (int r = 0; r < rows; ++r) total[r] += acc[r];
    }
    for (int r = 0; r < rows; ++r)
      y[static_cast<std::size_t>(r) * w.rows + o] = cuda::quant_lane::row_scale<kKind>(w, o) * total[r];
  }
  return y;
}

template <typename T>
void check_emulated(int rows, const Shape& shape, WeightFormat format, const std::string& what) {
  const int out = shape.out, in = shape.in, ldx = in + shape.ldx_pad;
  const QuantizedMatrix q = random_quantized(out, in, format, 1000u * rows + 7u * in + out);
  std::vector<float> w(static_cast<std::size_t>(out) * in);
  dequantize_rows(q, 0, out, w.data());
  cuda::QuantWeights view;
  view.kind = format == WeightFormat::kInt8 ? cuda::QuantKind::kInt8 : cuda::QuantKind::kInt4;
  view.rows = out;
  view.cols = in;
  view.values = q.values.data();
  view.scales = format == WeightFormat::kInt8 ? static_cast<const void*>(q.scales.data())
                                              : static_cast<const void*>(q.scales16.data());
  for (int o = 0; o < out; ++o)  // the kernels' dequantization is runtime/core/quant.h's, exactly
    for (int c = 0; c < in; ++c)
      ASSERT_EQ(cuda::quant_lane::dequantized(view, o, c), w[static_cast<std::size_t>(o) * in + c])
          << what << ": weight " << o << ", " << c;

  std::mt19937 rng(rows * 31 + in);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(rows) * ldx, std::numeric_limits<float>::quiet_NaN());
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < in; ++k) x[static_cast<std::size_t>(r) * ldx + k] = normal(rng);
  std::vector<T> x_t(x.size());
  convert_from_f32(Storage<T>::kDType, x.data(), x_t.data(), x.size());
  convert_to_f32(Storage<T>::kDType, x_t.data(), x.data(), x.size());
  const std::vector<float> y = format == WeightFormat::kInt8
                                   ? emulate_gemv<T, cuda::QuantKind::kInt8>(x_t.data(), ldx, rows, view)
                                   : emulate_gemv<T, cuda::QuantKind::kInt4>(x_t.data(), ldx, rows, view);
  expect_reference(y.data(), out, rows, x.data(), ldx, w.data(), out, in, 0.0, false, what);
}

template <typename T>
class CudaQuantLanes : public ::testing::Test {};
TYPED_TEST_SUITE(CudaQuantLanes, ComputeTypes);

TYPED_TEST(CudaQuantLanes, GemvLaneCodeOnTheCpuAgainstTheDequantizedProduct) {
  using T = TypeParam;
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    for (const Shape& shape : kShapes) {
      for (int rows = 1; rows <= cuda::kQuantGemvMaxRows; ++rows) {
        check_emulated<T>(rows, shape, format,
                          std::string(weight_format_name(format)) + " rows " + std::to_string(rows) + " out " +
                              std::to_string(shape.out) + " in " + std::to_string(shape.in) + " (emulated lanes)");
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

// ---- whole model -----------------------------------------------------------------------------------

struct ModelCase {
  std::string model;
  WeightFormat format;
  bool quantize_lm_head;
};

std::string model_case_name(const ::testing::TestParamInfo<ModelCase>& info) {
  std::string name = info.param.model + "_" + std::string(weight_format_name(info.param.format)) +
                     (info.param.quantize_lm_head ? "_lm_head" : "");
  for (char& c : name)
    if (c == '-') c = '_';
  return name;
}

constexpr float kModelTol = 2e-4f;

class CudaQuantModel : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    const std::string dir = testing::model_dir(GetParam().model);
    checkpoint_ = std::make_unique<Checkpoint>(dir);
    config_ = load_config(dir + "/config.json");
    BackendOptions options;
    options.kv.num_blocks = 64;
    options.kv.block_size = 4;
    options.compute_dtype = "float32";
    options.weights.format = GetParam().format;
    options.weights.quantize_lm_head = GetParam().quantize_lm_head;
    cuda_ = make_cuda_backend(config_, checkpoint_.get(), 0, options, cuda_comm_, 0);
    cpu_ = make_cpu_backend(config_, *checkpoint_, options, cpu_comm_);
    vocab_ = config_.vocab_size;
  }

  // The same step on both backends: max |cuda - cpu| over every logit row.
  float step_difference(const StepBatch& batch) {
    const std::vector<float> on_gpu = testing::forward_logits(*cuda_, batch);
    const std::vector<float> on_cpu = testing::forward_logits(*cpu_, batch);
    EXPECT_EQ(on_gpu.size(), on_cpu.size());
    for (float v : on_gpu)
      if (!std::isfinite(v)) return std::numeric_limits<float>::infinity();
    return testing::max_abs_diff(on_gpu.data(), on_cpu.data(), std::min(on_gpu.size(), on_cpu.size()));
  }

  SingleCommunicator cuda_comm_, cpu_comm_;
  GptjConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> cuda_, cpu_;
  int64_t vocab_ = 0;
};

TEST_P(CudaQuantModel, LogitsMatchTheCpuBackendWithTheSameWeights) {
  const std::string layers(weight_format_name(GetParam().format));
  EXPECT_EQ(cuda_->weight_format(), GetParam().quantize_lm_head ? layers : layers + " (lm_head float32)");
  const std::vector<std::vector<int32_t>> prompts = testing::prompts(GetParam().model);
  const std::vector<int32_t>& p7 = prompts.at(1);
  const std::vector<int32_t>& p33 = prompts.at(2);
  ASSERT_EQ(p7.size(), 7u);
  ASSERT_EQ(p33.size(), 33u);
  StepBatch short_prefill;  // 7 token rows, 7 logit rows: the gemv path everywhere
  short_prefill.seqs.push_back({p7, 0, {0, 1}, true});
  EXPECT_LE(step_difference(short_prefill), kModelTol) << "7-token prefill";

  // 33 + 4 token rows (tiled path), then decode steps of both sequences (2 rows: gemv).
  const std::vector<int32_t> long_blocks = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, short_blocks = {12, 13};
  StepBatch prefill;
  prefill.seqs.push_back({p33, 0, long_blocks, true});
  prefill.seqs.push_back({{p7.begin(), p7.begin() + 4}, 0, short_blocks, true});
  EXPECT_LE(step_difference(prefill), kModelTol) << "33 + 4 token prefill";
  for (int t = 0; t < 3; ++t) {
    StepBatch decode;
    decode.seqs.push_back({{p7[t]}, 33 + t, long_blocks, false});
    decode.seqs.push_back({{p7[4 + t]}, 4 + t, short_blocks, false});
    EXPECT_LE(step_difference(decode), kModelTol) << "decode step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaQuantModel,
                         ::testing::Values(ModelCase{"tiny-gptj-a", WeightFormat::kInt8, false},
                                           ModelCase{"tiny-gptj-a", WeightFormat::kInt4, false},
                                           ModelCase{"tiny-gptj-a", WeightFormat::kInt8, true},
                                           ModelCase{"tiny-gptj-b", WeightFormat::kInt8, false},
                                           ModelCase{"tiny-gptj-b", WeightFormat::kInt4, false},
                                           ModelCase{"tiny-gptj-b", WeightFormat::kInt4, true}),
                         model_case_name);

TEST(CudaQuantRandomWeights, DeterministicFiniteAndSmallerThanFloat16) {
  SKIP_WITHOUT_GPU();
  const GptjConfig config = load_config(testing::model_dir("tiny-gptj-b") + "/config.json");
  BackendOptions options = testing::small_float16_options();
  SingleCommunicator comm;
  StepBatch batch;
  batch.seqs.push_back({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0, {3, 6, 1}, true});  // 10 rows: the tiled path
  const int64_t plain_bytes = make_cuda_backend(config, nullptr, 42, options, comm, 0)->weight_bytes();
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    options.weights.format = format;
    options.weights.quantize_lm_head = true;
    auto first = make_cuda_backend(config, nullptr, 42, options, comm, 0);
    EXPECT_EQ(first->weight_format(), std::string(weight_format_name(format)));
    EXPECT_LT(first->weight_bytes(), plain_bytes);
    const std::vector<float> a = testing::forward_logits(*first, batch);
    const std::vector<float> b = testing::forward_logits(*make_cuda_backend(config, nullptr, 42, options, comm, 0), batch);
    EXPECT_EQ(a, b);
    for (float v : a) ASSERT_TRUE(std::isfinite(v));
  }
  options.weights.format = WeightFormat::kFp8;
  options.weights.quantize_lm_head = false;
  if (compute_capability() < 89) {  // refused, in one line naming the GPU's capability
    try {
      make_cuda_backend(config, nullptr, 42, options, comm, 0);
      ADD_FAILURE() << "fp8 accepted below compute capability 8.9";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--weights fp8 needs a GPU of compute capability 8.9"), std::string::npos)
          << e.what();
    }
    return;
  }
  auto fp8 = make_cuda_backend(config, nullptr, 42, options, comm, 0);
  EXPECT_EQ(fp8->weight_format(), "fp8 (lm_head float16)");
  EXPECT_LT(fp8->weight_bytes(), plain_bytes);
  const std::vector<float> a = testing::forward_logits(*fp8, batch);
  EXPECT_EQ(a, testing::forward_logits(*make_cuda_backend(config, nullptr, 42, options, comm, 0), batch));
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace gptj
