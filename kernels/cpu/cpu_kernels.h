// CPU kernels for GPT-J, float32. They take pointers and sizes and never allocate; each row-major
// matrix argument names its shape. Threads: OpenMP across rows/heads where it pays.
// The CUDA kernels (kernels/cuda) implement the same semantics; tests/gpu compares them to these.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gptj::cpu {

// out[t, :] = wte[ids[t], :]            wte [vocab, dim], out [n, dim]
void embedding(const float* wte, const int32_t* ids, int n, int dim, float* out);

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta, statistics in float32 (two-pass)
// x, y [rows, dim] (may alias)
void layernorm(const float* x, const float* gamma, const float* beta, float* y, int rows, int dim,
               float eps);

// y [rows, out] = x [rows, in] · W^T (+ bias [out] when non-null); W [out, in] (nn.Linear layout).
// ldx, ldy: row strides of x (>= in) and y (>= out), so operands can be column blocks of wider
// matrices.
void linear(const float* x, int ldx, int rows, int in, const float* weight, int out,
            const float* bias, float* y, int ldy);

// A weight matrix [out, in] (row-major, nn.Linear layout) in one of the stored formats:
//   kF32, kF16, kBF16  (the order of gptj::DType): data [out, in] of that type
//   kInt8  data [out, in] int8, scales float32 [out]: w = scales[o] * q
//   kInt4  data [out, (in + 15) / 16 * 8] nibbles, scales float16 [out, ceil(in / 128)]: the layout of
//          runtime/core/quant.h (w = scale of the 128-column group * (nibble - 8))
struct WeightRef {
  enum Format { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8 = 3, kInt4 = 4 };
  const void* data = nullptr;
  int dtype = kF32;
  const void* scales = nullptr;  // int8 and int4 only
  // int8 only, opt-in (--int8-activations): quantize each input row to int8 too and take exact
  // int8 x int8 products (kernels/cpu/linear_w8a8.cc). Off: the activations stay float32.
  bool int8_activations = false;
  // bfloat16 only, opt-in (--dtype bfloat16 on the CPU backend): each input row is rounded to
  // bfloat16 (to nearest even) and the products of bfloat16 pairs are summed in float32 — vdpbf16ps
  // at the avx512bf16 level (LinearKernels::tiled_bf16_dot); at the other levels the same numerics by
  // widening (the rounded rows widened back to float32, exact, then the float32 path: each product
  // of two bfloat16 values is exact in float32). The levels differ only in the order of the float32
  // sums and in vdpbf16ps flushing denormals to zero. Off: the activations stay float32.
  bool bf16_products = false;
};

// linear() for a weight of any of these formats. 16-bit weights are widened to float32 in
// registers (decode-sized products) or block by block into a scratch buffer (larger products), so
// the arithmetic is the same as with the float32 weights they widen to. int8/int4 weights are
// dequantized in registers for 1..3 input rows (the scale applied once per row or group: equal to
// the product with the dequantized weights within float32 rounding) and panel by panel into a
// float32 scratch for more rows (then exactly the float32 product with the dequantized weights).
void linear(const float* x, int ldx, int rows, int in, WeightRef weight, int out, const float* bias,
            float* y, int ldy);

// GPT-J rotary, rotate-every-two, in place on the first rotary_dim dims of each head:
// for pair i (dims 2i, 2i+1), angle = positions[t] * 10000^(-2i / rotary_dim).
// x [tokens, row_stride]; the heads are n_heads consecutive blocks of head_dim starting at column 0.
void rotary_gptj(float* x, int tokens, int row_stride, int n_heads, int head_dim, int rotary_dim,
                 const int32_t* positions);

// x [rows, cols] (row stride ld) = gelu_new(x + bias[cols]), the tanh approximation.
void bias_gelu_new(float* x, const float* bias, int rows, int cols, int ld);

// x [n] += y [n]
void add_inplace(float* x, const float* y, std::size_t n);
// x [rows, cols] += bias [cols]
void add_bias(float* x, const float* bias, int rows, int cols);

// Paged KV cache of one layer: cache [num_blocks, block_size, n_heads, head_dim].
// Writes k/v rows of `tokens` new tokens at positions start_pos.. into their blocks.
// k, v [tokens, row_stride] (heads at columns 0..n_heads*head_dim).
void kv_write(const float* k, const float* v, int row_stride, int tokens, int start_pos,
              const int32_t* block_table, int block_size, int n_heads, int head_dim,
              float* k_cache, float* v_cache);

// Causal attention of `tokens` new queries (positions start_pos..) over the cached keys/values of
// positions [0, start_pos + t] for query t; scale 1/sqrt(head_dim), softmax in float32.
// q [tokens, q_stride] (heads at columns 0..), out [tokens, out_stride] (heads at columns 0..).
void attention_paged(const float* q, int q_stride, int tokens, int start_pos,
                     const int32_t* block_table, int block_size, int n_heads, int head_dim,
                     const float* k_cache, const float* v_cache, float* out, int out_stride);

// The same for a whole batch in one call: sequence s owns query rows [first_row, first_row + tokens)
// of q and out, at positions start_pos.. with its own block table. In place (out == q) is allowed.
struct AttentionSequence {
  int first_row = 0;
  int tokens = 0;
  int start_pos = 0;
  const int32_t* block_table = nullptr;
};
void attention_paged_batch(const float* q, int q_stride, const AttentionSequence* seqs, int n_seqs,
                           int block_size, int n_heads, int head_dim, const float* k_cache,
                           const float* v_cache, float* out, int out_stride);

}  // namespace gptj::cpu
