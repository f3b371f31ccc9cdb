#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

namespace gptj::cpu {


void embedding(const float* wte, const int32_t* ids, int n, int dim, float* out) {
  for (int t = 0; t < n; ++t)
    std::memcpy(out + static_cast<std::size_t>(t) * dim, wte + static_cast<std::size_t>(ids[t]) * dim,
                sizeof(float) * dim);
}

void layernorm(const float* x, const float* gamma, const float* beta, float* y, int rows, int dim,
               float eps) {
#pragma omp parallel for if (rows > 8)
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * dim;
    float* yr = y + static_cast<std::size_t>(r) * dim;
    float mean = 0;
    for (int i = 0; i < dim; ++i) mean += xr[i];
    mean /= dim;
    float var = 0;
    for (int i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= dim;
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int i = 0; i < dim; ++i) yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
  }
}

void rotary_gptj(float* x, int tokens, int row_stride, int n_heads, int head_dim, int rotary_dim,
                 const int32_t* positions) {
  // inv_freq as transformers computes it: 1 / 10000^(2i / rotary_dim) in float32, and the angle
  // pos * inv_freq rounded to float32 before sin/cos.
  std::vector<float> inv_freq(rotary_dim / 2);
  for (int i = 0; i < rotary_dim / 2; ++i)
    inv_freq[i] = 1.0f / static_cast<float>(std::pow(10000.0, (2.0 * i) / rotary_dim));
  for (int t = 0; t < tokens; ++t) {
    float* row = x + static_cast<std::size_t>(t) * row_stride;
    for (int i = 0; i < rotary_dim / 2; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int h = 0; h < n_heads; ++h) {
        float* pair = row + h * head_dim + 2 * i;
        const float a = pair[0], b = pair[1];
        pair[0] = a * c - b * s;
        pair[1] = b * c + a * s;
      }
    }
  }
}

namespace {
// exp(x) in plain float arithmetic that the compiler vectorizes inside `omp simd` loops (std::exp /
// std::tanh are scalar library calls: they were ~10 % of a batch-32 decode step). Cephes' expf:
// x = n ln2 + r, a degree-6 polynomial for exp(r), 2^n from the exponent bits; within 2 ulp of exp
// for x in [-87, 88]. n is rounded to nearest even by adding and subtracting 1.5 * 2^23 (what
// std::nearbyint gives in the default rounding mode, but GCC does not vectorize nearbyint: with it
// the GELU ran one float at a time, 5 % of a 128-token prefill on a Zen 4 VM).
inline float exp_vectorizable(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: |x * log2(e)| < 2^22, so the sum's ulp is 1
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}
}  // namespace

void bias_gelu_new(float* x, const float* bias, int rows, int cols, int ld) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
#pragma omp parallel for if (rows * cols > 65536)
  for (int r = 0; r < rows; ++r) {
    float* xr = x + static_cast<std::size_t>(r) * ld;
#pragma omp simd
    for (int c = 0; c < cols; ++c) {
      const float v = xr[c] + bias[c];
      const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
      const float tanh_u = 1.0f - 2.0f / (exp_vectorizable(2.0f * u) + 1.0f);  // absolute error ~1e-7
      xr[c] = 0.5f * v * (1.0f + tanh_u);
    }
  }
}

void add_inplace(float* x, const float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
}

void add_bias(float* x, const float* bias, int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) x[static_cast<std::size_t>(r) * cols + c] += bias[c];
}

namespace {
inline std::size_t cache_offset(const int32_t* block_table, int block_size, int pos, int n_heads,
                                int head_dim) {
  const std::size_t block = static_cast<std::size_t>(block_table[pos / block_size]);
  return ((block * block_size + pos % block_size) * n_heads) * head_dim;
}
}  // namespace

void kv_write(const float* k, const float* v, int row_stride, int tokens, int start_pos,
              const int32_t* block_table, int block_size, int n_heads, int head_dim,
              float* k_cache, float* v_cache) {
  const std::size_t width = static_cast<std::size_t>(n_heads) * head_dim;
  for (int t = 0; t < tokens; ++t) {
    const std::size_t at = cache_offset(block_table, block_size, start_pos + t, n_heads, head_dim);
    std::memcpy(k_cache + at, k + static_cast<std::size_t>(t) * row_stride, width * sizeof(float));
    std::memcpy(v_cache + at, v + static_cast<std::size_t>(t) * row_stride, width * sizeof(float));
  }
}

namespace {
// q · k over one head (head_dim floats), vectorized with a reordered sum.
inline float head_dot(const float* q, const float* k, int head_dim) {
  float dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
  return dot;
}

// Calls visit(p, head's row of position p) for the positions 0..len-1 of a sequence's paged cache
// ([blocks, block_size, n_heads, head_dim]), block by block: no division per position.
template <class Visit>
inline void for_each_cached(const float* cache, const int32_t* block_table, int block_size, int len, int n_heads,
                            int head_dim, int h, const Visit& visit) {
  const std::size_t slot = static_cast<std::size_t>(n_heads) * head_dim;
  for (int p0 = 0, b = 0; p0 < len; p0 += block_size, ++b) {
    const float* row = cache + static_cast<std::size_t>(block_table[b]) * block_size * slot + h * head_dim;
    const int n = std::min(block_size, len - p0);
    for (int j = 0; j < n; ++j, row += slot) visit(p0 + j, row);
  }
}
}  // namespace

void attention_paged_batch(const float* q, int q_stride, const AttentionSequence* seqs, int n_seqs,
                           int block_size, int n_heads, int head_dim, const float* k_cache,
                           const float* v_cache, float* out, int out_stride) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  // One work item per (query row, head) over the whole batch: a single parallel region per layer,
  // not one per sequence.
  std::vector<int> row_seq;
  int max_len = 0;
  for (int s = 0; s < n_seqs; ++s) {
    row_seq.insert(row_seq.end(), static_cast<std::size_t>(seqs[s].tokens), s);
    max_len = std::max(max_len, seqs[s].start_pos + seqs[s].tokens);
  }
  const int rows = static_cast<int>(row_seq.size());
  long work = 0;
  for (int s = 0; s < n_seqs; ++s) work += static_cast<long>(seqs[s].tokens) * (seqs[s].start_pos + seqs[s].tokens);
#pragma omp parallel if (work * n_heads > 4096)
  {
    std::vector<float> scores(static_cast<std::size_t>(max_len));
    std::vector<float> acc(static_cast<std::size_t>(head_dim));
#pragma omp for schedule(dynamic, 4)
    for (int item = 0; item < rows * n_heads; ++item) {
      const int row = item / n_heads, h = item % n_heads;
      const AttentionSequence& seq = seqs[row_seq[row]];
      const float* qh = q + static_cast<std::size_t>(row) * q_stride + h * head_dim;
      const int len = seq.start_pos + (row - seq.first_row) + 1;  // causal: keys 0..its position
      float* const sc = scores.data();
      for_each_cached(k_cache, seq.block_table, block_size, len, n_heads, head_dim, h,
                      [&](int p, const float* kp) { sc[p] = head_dot(qh, kp, head_dim) * scale; });
      float max_score = -INFINITY;
      for (int p = 0; p < len; ++p) max_score = std::max(max_score, sc[p]);
      float sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int p = 0; p < len; ++p) {
        sc[p] = exp_vectorizable(sc[p] - max_score);
        sum += sc[p];
      }
      float* const a = acc.data();
      std::fill(acc.begin(), acc.end(), 0.0f);
      for_each_cached(v_cache, seq.block_table, block_size, len, n_heads, head_dim, h, [&](int p, const float* vp) {
        const float w = sc[p];
#pragma omp simd
        for (int d = 0; d < head_dim; ++d) a[d] += w * vp[d];
      });
      float* oh = out + static_cast<std::size_t>(row) * out_stride + h * head_dim;
      const float inv = 1.0f / sum;
      for (int d = 0; d < head_dim; ++d) oh[d] = a[d] * inv;
    }
  }
}

void attention_paged(const float* q, int q_stride, int tokens, int start_pos,
                     const int32_t* block_table, int block_size, int n_heads, int head_dim,
                     const float* k_cache, const float* v_cache, float* out, int out_stride) {
  const AttentionSequence seq{0, tokens, start_pos, block_table};
  attention_paged_batch(q, q_stride, &seq, 1, block_size, n_heads, head_dim, k_cache, v_cache, out,
                        out_stride);
}

}  // namespace gptj::cpu
