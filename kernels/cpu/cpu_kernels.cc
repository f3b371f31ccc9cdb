#include "kernels/cpu/cpu_kernels.h"
#include "runtime/core/dtype.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace gptj::cpu {

using gptj::bf16_to_f32;
using gptj::f16_to_f32;

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

namespace {

// Decode-sized products (a few rows): every weight row is streamed from memory once and dotted
// with all input rows while it sits in L1. Debian's OpenBLAS (0.3.21) packs the whole weight
// matrix for sgemm even when M = 1, which doubles the memory traffic of a decode step.
constexpr int kSmallRows = 16;

using v8f = float __attribute__((vector_size(32), aligned(4)));  // 8 floats (AVX2 register)

inline float hsum(v8f v) {
  float sum = 0;
  for (int i = 0; i < 8; ++i) sum += v[i];
  return sum;
}

// y[r, o..o+1] for rows r..r+3: two weight rows against four input rows, 8 accumulators in
// registers, so each 8-float load feeds more than one FMA. `in` is a multiple of 8.
inline void dot_2x4(const float* w0, const float* w1, const float* x, int ldx, int in, float out[2][4]) {
  v8f acc[2][4] = {};
  for (int i = 0; i < in; i += 8) {
    const v8f a = *reinterpret_cast<const v8f*>(w0 + i);
    const v8f b = *reinterpret_cast<const v8f*>(w1 + i);
    for (int r = 0; r < 4; ++r) {
      const v8f xv = *reinterpret_cast<const v8f*>(x + static_cast<std::size_t>(r) * ldx + i);
      acc[0][r] += a * xv;
      acc[1][r] += b * xv;
    }
  }
  for (int k = 0; k < 2; ++k)
    for (int r = 0; r < 4; ++r) out[k][r] = hsum(acc[k][r]);
}

inline float dot(const float* w, const float* x, int in) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < in; ++i) sum += w[i] * x[i];
  return sum;
}

void linear_small(const float* x, int ldx, int rows, int in, const float* weight, int out,
                  const float* bias, float* y, int ldy) {
  const bool blocked = in % 8 == 0 && ldx % 8 == 0 && rows >= 4;
  const int row_blocks = blocked ? rows / 4 * 4 : 0;
#pragma omp parallel for schedule(static)
  for (int pair = 0; pair < (out + 1) / 2; ++pair) {
    const int o = 2 * pair;
    const int n_out = std::min(2, out - o);
    const float* w[2] = {weight + static_cast<std::size_t>(o) * in,
                         weight + static_cast<std::size_t>(o + n_out - 1) * in};
    for (int r = 0; r < row_blocks; r += 4) {
      float block[2][4];
      dot_2x4(w[0], w[1], x + static_cast<std::size_t>(r) * ldx, ldx, in, block);
      for (int k = 0; k < n_out; ++k)
        for (int j = 0; j < 4; ++j)
          y[static_cast<std::size_t>(r + j) * ldy + o + k] = block[k][j] + (bias ? bias[o + k] : 0.0f);
    }
    for (int r = row_blocks; r < rows; ++r)
      for (int k = 0; k < n_out; ++k)
        y[static_cast<std::size_t>(r) * ldy + o + k] =
            dot(w[k], x + static_cast<std::size_t>(r) * ldx, in) + (bias ? bias[o + k] : 0.0f);
  }
}

#if defined(__F16C__) && defined(__AVX2__) && defined(__FMA__)
// Widens 8 16-bit values (float16 when kHalf, else bfloat16) to 8 floats, in registers.
template <bool kHalf>
inline __m256 widen8(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kHalf) return _mm256_cvtph_ps(raw);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

inline float hsum256(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 1)));
}

// Few input rows (1..3, the decode steps of small batches): four weight rows at a time against one
// input row, two accumulators per weight row over alternating 8-float halves, so the loop streams
// the weights at memory speed instead of waiting on FMA latency. out % 4 and in % 16 must be 0.
template <bool kHalf>
void linear_few_rows_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                        const float* bias, float* y, int ldy) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; o += 4) {
    const uint16_t* w = weight + static_cast<std::size_t>(o) * in;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<std::size_t>(r) * ldx;
      __m256 a[4], c[4];
      for (int k = 0; k < 4; ++k) a[k] = c[k] = _mm256_setzero_ps();
      for (int i = 0; i < in; i += 16) {
        const __m256 lo = _mm256_loadu_ps(xr + i), hi = _mm256_loadu_ps(xr + i + 8);
        for (int k = 0; k < 4; ++k) {
          a[k] = _mm256_fmadd_ps(widen8<kHalf>(w + static_cast<std::size_t>(k) * in + i), lo, a[k]);
          c[k] = _mm256_fmadd_ps(widen8<kHalf>(w + static_cast<std::size_t>(k) * in + i + 8), hi, c[k]);
        }
      }
      for (int k = 0; k < 4; ++k)
        y[static_cast<std::size_t>(r) * ldy + o + k] = hsum256(_mm256_add_ps(a[k], c[k])) + (bias ? bias[o + k] : 0.0f);
    }
  }
}

// The 16-bit twin of linear_small: two weight rows (widened in registers) against four input rows
// at a time (a short tail repeats its last row; those results are not stored), 8 accumulators in
// registers. `in` must be a multiple of 8 (checked by the caller).
template <bool kHalf>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  if (rows < 4 && out % 4 == 0 && in % 16 == 0) {
    linear_few_rows_16<kHalf>(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int pair = 0; pair < (out + 1) / 2; ++pair) {
    const int o = 2 * pair;
    const int n_out = std::min(2, out - o);
    const uint16_t* w0 = weight + static_cast<std::size_t>(o) * in;
    const uint16_t* w1 = weight + static_cast<std::size_t>(o + n_out - 1) * in;
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const int nr = std::min(4, rows - r0);
      const float* x0 = x + static_cast<std::size_t>(r0) * ldx;
      const float* x1 = x + static_cast<std::size_t>(r0 + std::min(1, nr - 1)) * ldx;
      const float* x2 = x + static_cast<std::size_t>(r0 + std::min(2, nr - 1)) * ldx;
      const float* x3 = x + static_cast<std::size_t>(r0 + std::min(3, nr - 1)) * ldx;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int i = 0; i < in; i += 8) {
        const __m256 wa = widen8<kHalf>(w0 + i), wb = widen8<kHalf>(w1 + i);
        const __m256 v0 = _mm256_loadu_ps(x0 + i), v1 = _mm256_loadu_ps(x1 + i);
        const __m256 v2 = _mm256_loadu_ps(x2 + i), v3 = _mm256_loadu_ps(x3 + i);
        a0 = _mm256_fmadd_ps(wa, v0, a0);
        a1 = _mm256_fmadd_ps(wa, v1, a1);
        a2 = _mm256_fmadd_ps(wa, v2, a2);
        a3 = _mm256_fmadd_ps(wa, v3, a3);
        b0 = _mm256_fmadd_ps(wb, v0, b0);
        b1 = _mm256_fmadd_ps(wb, v1, b1);
        b2 = _mm256_fmadd_ps(wb, v2, b2);
        b3 = _mm256_fmadd_ps(wb, v3, b3);
      }
      const float sums[2][4] = {{hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)},
                                {hsum256(b0), hsum256(b1), hsum256(b2), hsum256(b3)}};
      for (int k = 0; k < n_out; ++k)
        for (int r = 0; r < nr; ++r)
          y[static_cast<std::size_t>(r0 + r) * ldy + o + k] = sums[k][r] + (bias ? bias[o + k] : 0.0f);
    }
  }
}
#else
// Without AVX2/FMA/F16C: widen each row to float32 and use the float32 path.
template <bool kHalf>
void linear_small_16(const float* x, int ldx, int rows, int in, const uint16_t* weight, int out,
                     const float* bias, float* y, int ldy) {
  std::vector<float> row(static_cast<std::size_t>(in));
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      const uint16_t bits = weight[static_cast<std::size_t>(o) * in + i];
      row[i] = kHalf ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
    for (int r = 0; r < rows; ++r)
      y[static_cast<std::size_t>(r) * ldy + o] =
          dot(row.data(), x + static_cast<std::size_t>(r) * ldx, in) + (bias ? bias[o] : 0.0f);
  }
}
#endif

}  // namespace

void linear(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
            float* y, int ldy) {
  if (weight.dtype == 0) {
    linear(x, ldx, rows, in, static_cast<const float*>(weight.data), out, bias, y, ldy);
    return;
  }
  const auto* w = static_cast<const uint16_t*>(weight.data);
  const bool half = weight.dtype == 1;
  // Widening whole weight blocks for sgemm costs more than it saves until the batch is large.
  constexpr int kSmallRows16 = 64;
  if (rows <= kSmallRows16 && in % 8 == 0) {
    if (half)
      linear_small_16<true>(x, ldx, rows, in, w, out, bias, y, ldy);
    else
      linear_small_16<false>(x, ldx, rows, in, w, out, bias, y, ldy);
    return;
  }
  // Larger products: widen blocks of weight rows into a float32 scratch and let sgemm run on each.
  constexpr int kBlockRows = 512;
  static thread_local std::vector<float> scratch;  // the calling thread's; OpenMP workers get a pointer
  scratch.resize(static_cast<std::size_t>(kBlockRows) * in);
  float* const block = scratch.data();
  for (int o = 0; o < out; o += kBlockRows) {
    const int n = std::min(kBlockRows, out - o);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; ++r) {
      const uint16_t* src = w + static_cast<std::size_t>(o + r) * in;
      float* dst = block + static_cast<std::size_t>(r) * in;
      for (int i = 0; i < in; ++i) dst[i] = half ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
    }
    linear(x, ldx, rows, in, block, n, bias ? bias + o : nullptr, y + o, ldy);
  }
}

void linear(const float* x, int ldx, int rows, int in, const float* weight, int out,
            const float* bias, float* y, int ldy) {
  if (rows <= kSmallRows) {
    linear_small(x, ldx, rows, in, weight, out, bias, y, ldy);
    return;
  }
  if (bias) {
    for (int r = 0; r < rows; ++r) std::memcpy(y + static_cast<std::size_t>(r) * ldy, bias, sizeof(float) * out);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, ldx, weight, in,
              bias ? 1.0f : 0.0f, y, ldy);
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

void bias_gelu_new(float* x, const float* bias, int rows, int cols, int ld) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
#pragma omp parallel for if (rows * cols > 65536)
  for (int r = 0; r < rows; ++r) {
    float* xr = x + static_cast<std::size_t>(r) * ld;
    for (int c = 0; c < cols; ++c) {
      const float v = xr[c] + bias[c];
      xr[c] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
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
      const int32_t* table = seq.block_table;
      const float* qh = q + static_cast<std::size_t>(row) * q_stride + h * head_dim;
      const int len = seq.start_pos + (row - seq.first_row) + 1;  // causal: keys 0..its position
      float max_score = -INFINITY;
      for (int p = 0; p < len; ++p) {
        const float* kp = k_cache + cache_offset(table, block_size, p, n_heads, head_dim) + h * head_dim;
        float dot = 0;
        for (int d = 0; d < head_dim; ++d) dot += qh[d] * kp[d];
        scores[p] = dot * scale;
        max_score = std::max(max_score, scores[p]);
      }
      float sum = 0;
      for (int p = 0; p < len; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        sum += scores[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int p = 0; p < len; ++p) {
        const float* vp = v_cache + cache_offset(table, block_size, p, n_heads, head_dim) + h * head_dim;
        const float w = scores[p];
        for (int d = 0; d < head_dim; ++d) acc[d] += w * vp[d];
      }
      float* oh = out + static_cast<std::size_t>(row) * out_stride + h * head_dim;
      const float inv = 1.0f / sum;
      for (int d = 0; d < head_dim; ++d) oh[d] = acc[d] * inv;
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
