// Each CUDA kernel (kernels/cuda) against its CPU counterpart (kernels/cpu) on random inputs, in
// float16 and bfloat16 storage. Inputs are rounded to the storage type first, so the CPU reference
// sees exactly what the GPU sees and the differences come from output rounding and float32
// summation order only. Tolerances, |gpu - cpu| <= tol * (1 + |cpu|):
//   float16 2e-3 (output rounding 2^-11 ~ 4.9e-4 relative, plus __expf and summation order),
//   bfloat16 1.6e-2 (output rounding 2^-8 ~ 3.9e-3 relative).
// Skips with the reason when no CUDA device is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "runtime/backend/cuda_backend.h"
#include "tests/gpu/gpu_test_support.h"
#include "runtime/core/dtype.h"

namespace gptj {
namespace {

template <typename T>
struct Traits;
template <>
struct Traits<__half> {
  static constexpr DType kDType = DType::kF16;
  static constexpr float kTol = 2e-3f;
};
template <>
struct Traits<__nv_bfloat16> {
  static constexpr DType kDType = DType::kBF16;
  static constexpr float kTol = 1.6e-2f;
};

using testing::DeviceMem;

std::vector<float> random_vector(std::size_t n, float scale, uint32_t seed, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = offset + scale * dist(rng);
  return v;
}

// Rounds every value through the storage type T.
template <typename T>
std::vector<float> round_to(const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(T));
  convert_from_f32(Traits<T>::kDType, v.data(), bytes.data(), v.size());
  std::vector<float> out(v.size());
  convert_to_f32(Traits<T>::kDType, bytes.data(), out.data(), v.size());
  return out;
}

template <typename T>
std::unique_ptr<DeviceMem> upload_as(const std::vector<float>& v) {
  std::vector<uint8_t> bytes(v.size() * sizeof(T));
  convert_from_f32(Traits<T>::kDType, v.data(), bytes.data(), v.size());
  std::unique_ptr<DeviceMem> mem = std::make_unique<DeviceMem>(bytes.size());
  GPTJ_CUDA_CHECK(cudaMemcpy(mem->get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return mem;
}
template <typename T>
std::vector<float> download_as(const DeviceMem& mem, std::size_t n) {
  GPTJ_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint8_t> bytes(n * sizeof(T));
  GPTJ_CUDA_CHECK(cudaMemcpy(bytes.data(), mem.get(), bytes.size(), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  convert_to_f32(Traits<T>::kDType, bytes.data(), out.data(), n);
  return out;
}
template <typename U>
std::unique_ptr<DeviceMem> upload_raw(const std::vector<U>& v) {
  std::unique_ptr<DeviceMem> mem = std::make_unique<DeviceMem>(v.size() * sizeof(U));
  GPTJ_CUDA_CHECK(cudaMemcpy(mem->get(), v.data(), v.size() * sizeof(U), cudaMemcpyHostToDevice));
  return mem;
}
std::vector<float> download_f32(const DeviceMem& mem, std::size_t n) {
  GPTJ_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out(n);
  GPTJ_CUDA_CHECK(cudaMemcpy(out.data(), mem.get(), n * sizeof(float), cudaMemcpyDeviceToHost));
  return out;
}

void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, float tol,
                  const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  float worst = 0;
  std::size_t worst_at = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    const float err = std::fabs(gpu[i] - cpu[i]) / (1.0f + std::fabs(cpu[i]));
    if (!(err <= worst)) {  // also catches NaN
      worst = std::isnan(err) ? INFINITY : err;
      worst_at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": worst at " << worst_at << " gpu " << gpu[worst_at] << " cpu "
                        << cpu[worst_at];
}

template <typename T>
class CudaKernels : public ::testing::Test {};
using StorageTypes = ::testing::Types<__half, __nv_bfloat16>;
TYPED_TEST_SUITE(CudaKernels, StorageTypes);

TYPED_TEST(CudaKernels, Embedding) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int vocab = 50, dim = 70;
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23, 1, 48, 30, 12};
  const int n = static_cast<int>(ids.size());
  const auto wte = round_to<T>(random_vector(static_cast<std::size_t>(vocab) * dim, 1.0f, 1));
  std::vector<float> expected(static_cast<std::size_t>(n) * dim);
  cpu::embedding(wte.data(), ids.data(), n, dim, expected.data());
  auto d_wte = upload_as<T>(wte);
  auto d_ids = upload_raw(ids);
  DeviceMem d_out(expected.size() * sizeof(float));
  cuda::embedding<T>(d_wte->template as<T>(), d_ids->template as<int32_t>(), n, dim,
                     d_out.as<float>(), nullptr);
  EXPECT_EQ(download_f32(d_out, expected.size()), expected);  // a copy: exact
}

TYPED_TEST(CudaKernels, LayernormWithRowGather) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int rows = 5, dim = 300;
  const auto x = random_vector(static_cast<std::size_t>(rows) * dim, 3.0f, 2, 1.0f);
  const auto gamma = random_vector(dim, 0.3f, 3, 1.0f);
  const auto beta = random_vector(dim, 0.3f, 4);
  std::vector<float> expected(x.size());
  cpu::layernorm(x.data(), gamma.data(), beta.data(), expected.data(), rows, dim, 1e-5f);
  auto d_x = upload_raw(x);
  auto d_g = upload_raw(gamma);
  auto d_b = upload_raw(beta);
  DeviceMem d_y(x.size() * sizeof(T));
  cuda::layernorm<T>(d_x->template as<float>(), nullptr, d_g->template as<float>(),
                     d_b->template as<float>(), d_y.as<T>(), rows, dim, 1e-5f, nullptr);
  expect_close(download_as<T>(d_y, x.size()), expected, Traits<T>::kTol, "layernorm");

  // Gathered rows (the logit rows of a step): output row r is input row index[r].
  const std::vector<int32_t> index = {3, 0, 4};
  auto d_index = upload_raw(index);
  cuda::layernorm<T>(d_x->template as<float>(), d_index->template as<int32_t>(),
                     d_g->template as<float>(), d_b->template as<float>(), d_y.as<T>(), 3, dim,
                     1e-5f, nullptr);
  std::vector<float> gathered;
  for (int32_t r : index)
    gathered.insert(gathered.end(), expected.begin() + r * dim, expected.begin() + (r + 1) * dim);
  expect_close(download_as<T>(d_y, gathered.size()), gathered, Traits<T>::kTol, "layernorm gather");
}

TYPED_TEST(CudaKernels, RotaryGptj) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int tokens = 6, n_heads = 4, head_dim = 16, rotary_dim = 8, stride = 80;
  const std::vector<int32_t> positions = {0, 1, 2, 100, 1000, 2047};
  auto x = round_to<T>(random_vector(static_cast<std::size_t>(tokens) * stride, 1.0f, 5));
  auto d_x = upload_as<T>(x);
  auto d_pos = upload_raw(positions);
  cpu::rotary_gptj(x.data(), tokens, stride, n_heads, head_dim, rotary_dim, positions.data());
  cuda::rotary_gptj<T>(d_x->template as<T>(), tokens, stride, n_heads, head_dim, rotary_dim,
                       d_pos->template as<int32_t>(), nullptr);
  expect_close(download_as<T>(*d_x, x.size()), x, Traits<T>::kTol, "rotary");
}

// The fused kernel the backend runs equals rotary_gptj (on q and k) followed by kv_write, bit for bit.
TYPED_TEST(CudaKernels, RotaryKvWriteEqualsRotaryThenKvWrite) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int tokens = 5, n_heads = 3, head_dim = 16, rotary_dim = 8, block_size = 4;
  const int width = n_heads * head_dim, stride = 3 * width + 8;  // q | k | v | 8 more columns
  const std::vector<int32_t> positions = {0, 1, 2, 9, 2047}, bt_off = {0, 0, 0, 0, 3};
  const std::vector<int32_t> tables = {4, 2, 0, 511, 7, 1};  // token 4 reads table [511, 7, 1]...
  std::vector<int32_t> big_table(tables);
  big_table.resize(3 + 2048 / block_size, 3);  // ...long enough for position 2047
  const int num_blocks = 512;
  const std::size_t cache = static_cast<std::size_t>(num_blocks) * block_size * width;
  const auto rows = round_to<T>(random_vector(static_cast<std::size_t>(tokens) * stride, 1.0f, 21));
  auto d_pos = upload_raw(positions);
  auto d_bt_off = upload_raw(bt_off);
  auto d_tables = upload_raw(big_table);
  auto run = [&](bool fused, std::vector<float>& q_out, std::vector<float>& k_cache, std::vector<float>& v_cache) {
    auto d_rows = upload_as<T>(rows);
    auto d_k = upload_as<T>(std::vector<float>(cache, 0.0f));
    auto d_v = upload_as<T>(std::vector<float>(cache, 0.0f));
    T* q = d_rows->template as<T>();
    if (fused) {
      cuda::rotary_kv_write<T>(q, q + width, q + 2 * width, stride, tokens, d_pos->template as<int32_t>(),
                               d_bt_off->template as<int32_t>(), d_tables->template as<int32_t>(), block_size,
                               n_heads, head_dim, rotary_dim, d_k->template as<T>(), d_v->template as<T>(), nullptr);
    } else {
      cuda::rotary_gptj<T>(q, tokens, stride, 2 * n_heads, head_dim, rotary_dim, d_pos->template as<int32_t>(),
                           nullptr);
      cuda::kv_write<T>(q + width, q + 2 * width, stride, tokens, d_pos->template as<int32_t>(),
                        d_bt_off->template as<int32_t>(), d_tables->template as<int32_t>(), block_size, n_heads,
                        head_dim, d_k->template as<T>(), d_v->template as<T>(), nullptr);
    }
    const std::vector<float> all = download_as<T>(*d_rows, rows.size());
    q_out.clear();
    for (int t = 0; t < tokens; ++t)
      q_out.insert(q_out.end(), all.begin() + t * stride, all.begin() + t * stride + width);
    k_cache = download_as<T>(*d_k, cache);
    v_cache = download_as<T>(*d_v, cache);
  };
  std::vector<float> q1, k1, v1, q2, k2, v2;
  run(false, q1, k1, v1);
  run(true, q2, k2, v2);
  EXPECT_EQ(q1, q2) << "q";
  EXPECT_EQ(k1, k2) << "k cache";
  EXPECT_EQ(v1, v2) << "v cache";
}

TYPED_TEST(CudaKernels, BiasGeluNew) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int rows = 7, cols = 50, ld = 64;
  auto x = round_to<T>(random_vector(static_cast<std::size_t>(rows) * ld, 2.0f, 6));
  const auto bias = random_vector(cols, 0.5f, 7);
  auto d_x = upload_as<T>(x);
  auto d_b = upload_raw(bias);
  cpu::bias_gelu_new(x.data(), bias.data(), rows, cols, ld);
  cuda::bias_gelu_new<T>(d_x->template as<T>(), d_b->template as<float>(), rows, cols, ld, nullptr);
  expect_close(download_as<T>(*d_x, x.size()), x, Traits<T>::kTol, "bias_gelu_new");
}

TYPED_TEST(CudaKernels, ResidualAddAndBias) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int rows = 9, cols = 33;
  auto x = random_vector(static_cast<std::size_t>(rows) * cols, 1.0f, 8);
  const auto partial = round_to<T>(random_vector(x.size(), 1.0f, 9));
  const auto bias = random_vector(cols, 1.0f, 10);
  auto d_x = upload_raw(x);
  auto d_p = upload_as<T>(partial);
  auto d_b = upload_raw(bias);
  cpu::add_inplace(x.data(), partial.data(), x.size());
  cpu::add_bias(x.data(), bias.data(), rows, cols);
  cuda::residual_add<T>(d_x->template as<float>(), d_p->template as<T>(),
                        d_b->template as<float>(), rows, cols, nullptr);
  expect_close(download_f32(*d_x, x.size()), x, 1e-6f, "residual_add (float32 result)");
  cpu::add_bias(x.data(), bias.data(), rows, cols);
  cuda::add_bias_f32(d_x->template as<float>(), d_b->template as<float>(), rows, cols, nullptr);
  expect_close(download_f32(*d_x, x.size()), x, 1e-6f, "add_bias_f32");
}

// A mixed step: prefill sequences (one spanning two query tiles, one with a cached prefix) and
// decode sequences, over a shuffled paged cache. Checks kv_write (exact) and attention.
template <typename T>
void check_paged_attention(int head_dim) {
  struct Seq {
    int start_pos, n;
  };
  const std::vector<Seq> seqs = {{5, 40}, {30, 1}, {0, 3}, {0, 1}, {70, 1}};
  const int n_heads = 3, block_size = 4, width = n_heads * head_dim, stride = 3 * width;
  int total = 0, blocks_needed = 0;
  for (const Seq& s : seqs) {
    total += s.n;
    blocks_needed += (s.start_pos + s.n + block_size - 1) / block_size;
  }
  const int num_blocks = blocks_needed + 5;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(11));

  const std::size_t cache_elems = static_cast<std::size_t>(num_blocks) * block_size * width;
  auto k_cache = round_to<T>(random_vector(cache_elems, 1.0f, 12));  // old positions: random
  auto v_cache = round_to<T>(random_vector(cache_elems, 1.0f, 13));
  const auto qkv = round_to<T>(random_vector(static_cast<std::size_t>(total) * stride, 1.0f, 14));
  auto d_k_cache = upload_as<T>(k_cache);
  auto d_v_cache = upload_as<T>(v_cache);
  auto d_qkv = upload_as<T>(qkv);

  std::vector<int32_t> positions, bt_off, tables, tile_begin, tile_count, decode;
  std::vector<std::vector<int32_t>> seq_tables;
  std::vector<float> expected(static_cast<std::size_t>(total) * width);
  int row = 0, next_block = 0;
  for (const Seq& s : seqs) {
    std::vector<int32_t> table;
    for (int b = 0; b < (s.start_pos + s.n + block_size - 1) / block_size; ++b)
      table.push_back(pool[next_block++]);
    const int at = static_cast<int>(tables.size());
    tables.insert(tables.end(), table.begin(), table.end());
    for (int i = 0; i < s.n; ++i) {
      positions.push_back(s.start_pos + i);
      bt_off.push_back(at);
    }
    if (s.n == 1) {
      decode.push_back(row);
    } else {
      for (int i = 0; i < s.n; i += cuda::kPrefillTileQ) {
        tile_begin.push_back(row + i);
        tile_count.push_back(std::min(cuda::kPrefillTileQ, s.n - i));
      }
    }
    const float* base = qkv.data() + static_cast<std::size_t>(row) * stride;
    cpu::kv_write(base + width, base + 2 * width, stride, s.n, s.start_pos, table.data(), block_size,
                  n_heads, head_dim, k_cache.data(), v_cache.data());
    cpu::attention_paged(base, stride, s.n, s.start_pos, table.data(), block_size, n_heads, head_dim,
                         k_cache.data(), v_cache.data(),
                         expected.data() + static_cast<std::size_t>(row) * width, width);
    row += s.n;
  }
  auto d_pos = upload_raw(positions);
  auto d_bt_off = upload_raw(bt_off);
  auto d_tables = upload_raw(tables);
  auto d_tile_begin = upload_raw(tile_begin);
  auto d_tile_count = upload_raw(tile_count);
  auto d_decode = upload_raw(decode);
  DeviceMem d_out(expected.size() * sizeof(T));
  const T* q = d_qkv->template as<T>();
  cuda::kv_write<T>(q + width, q + 2 * width, stride, total, d_pos->template as<int32_t>(),
                    d_bt_off->template as<int32_t>(), d_tables->template as<int32_t>(), block_size,
                    n_heads, head_dim, d_k_cache->template as<T>(), d_v_cache->template as<T>(),
                    nullptr);
  cuda::attention_prefill<T>(q, stride, d_tile_begin->template as<int32_t>(),
                             d_tile_count->template as<int32_t>(),
                             static_cast<int>(tile_begin.size()), d_pos->template as<int32_t>(),
                             d_bt_off->template as<int32_t>(), d_tables->template as<int32_t>(),
                             block_size, n_heads, head_dim, d_k_cache->template as<T>(),
                             d_v_cache->template as<T>(), d_out.as<T>(), width, nullptr);
  auto decode_with = [&](const cuda::DecodeSplit& split) {
    cuda::attention_decode<T>(q, stride, d_decode->template as<int32_t>(),
                              static_cast<int>(decode.size()), d_pos->template as<int32_t>(),
                              d_bt_off->template as<int32_t>(), d_tables->template as<int32_t>(),
                              block_size, n_heads, head_dim, d_k_cache->template as<T>(),
                              d_v_cache->template as<T>(), d_out.as<T>(), width, split, nullptr);
  };
  decode_with(cuda::DecodeSplit{});
  EXPECT_EQ(download_as<T>(*d_k_cache, cache_elems), k_cache) << "kv_write (k)";
  EXPECT_EQ(download_as<T>(*d_v_cache, cache_elems), v_cache) << "kv_write (v)";
  expect_close(download_as<T>(d_out, expected.size()), expected, Traits<T>::kTol,
               "paged attention, head_dim " + std::to_string(head_dim));
  // Flash-decoding: the decode contexts (31, 1 and 71 positions) in splits of 24 and of 7 (the
  // 1-position one leaves splits empty) give the same output.
  for (int splits : {3, 11}) {
    DeviceMem partials(decode.size() * n_heads * splits * (head_dim + 2) * sizeof(float));
    decode_with(cuda::DecodeSplit{splits, (71 + splits - 1) / splits, partials.as<float>()});
    expect_close(download_as<T>(d_out, expected.size()), expected, Traits<T>::kTol,
                 "split decode attention (" + std::to_string(splits) + " splits), head_dim " +
                     std::to_string(head_dim));
  }
}

// Host-side planning: runs without a GPU.
TEST(CudaDecodeSplit, PlanFillsTheGpuOnlyWhenTheBatchDoesNot) {
  const cuda::DecodeSplit planned = cuda::plan_decode_split(1, 16, 2048, 132);
  EXPECT_EQ(planned.splits, 17);  // 2 waves over 132 SMs for 16 heads
  EXPECT_EQ(planned.split_len, 121);
  EXPECT_EQ(cuda::plan_decode_split(64, 16, 2048, 132).splits, 1);  // 1024 blocks: no split
  EXPECT_EQ(cuda::plan_decode_split(1, 16, 100, 132).splits, 2);    // at least 64 positions a split
  EXPECT_EQ(cuda::plan_decode_split(1, 16, 40, 132).splits, 1);
  EXPECT_EQ(cuda::plan_decode_split(1, 1, 100000, 132).splits, cuda::kMaxDecodeSplits);
}

TYPED_TEST(CudaKernels, PagedAttentionHeadDim16) {
  SKIP_WITHOUT_GPU();
  check_paged_attention<TypeParam>(16);
}
TYPED_TEST(CudaKernels, PagedAttentionHeadDim64) {
  SKIP_WITHOUT_GPU();
  check_paged_attention<TypeParam>(64);
}
TYPED_TEST(CudaKernels, PagedAttentionHeadDim256) {  // GPT-J-6B's head_dim; > 48 KiB shared memory
  SKIP_WITHOUT_GPU();
  check_paged_attention<TypeParam>(256);
}

TYPED_TEST(CudaKernels, FillRandomIsDeterministicAndScaled) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const std::size_t n = 1 << 16;
  DeviceMem a(n * sizeof(T)), b(n * sizeof(T));
  cuda::fill_random<T>(a.as<T>(), n, 7, 3, 0.0f, 0.02f, nullptr);
  cuda::fill_random<T>(b.as<T>(), n, 7, 3, 0.0f, 0.02f, nullptr);
  const auto va = download_as<T>(a, n), vb = download_as<T>(b, n);
  EXPECT_EQ(va, vb);
  double sum = 0, sq = 0;
  for (float v : va) {
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double mean = sum / n, stddev = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(stddev, 0.02, 2e-3);
}

}  // namespace
}  // namespace gptj
