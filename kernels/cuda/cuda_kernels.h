// CUDA kernels for GPT-J. Same semantics as kernels/cpu/cpu_kernels.h (tests/gpu compares them),
// templated on the storage type T in {float, __half, __nv_bfloat16}; all arithmetic is float32.
// Every function takes device pointers, sizes and a stream, never allocates, and enqueues its work on
// `stream` (asynchronous). Every launch is checked: a launch error throws gptj::Error naming the kernel.
// The residual stream is float32 ([tokens, d_model]); activations fed to GEMMs are T.
//
// Paged batches: a step's tokens are flattened across sequences. Per token t, positions[t] is its
// position and token_bt_off[t] the offset of its sequence's block table inside `block_tables` (the
// concatenation of all sequences' tables). The KV cache of one layer is
// [num_blocks, block_size, n_heads, head_dim] (n_heads = this rank's heads).
// This header compiles with the host C++ compiler too (no device code here).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/sampling_math.h"

namespace gptj::cuda {

// Throws gptj::Error "CUDA error in <what> (<file>:<line>): <code name>: <message>".
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, what, file, line);
}
// After a launch: cudaGetLastError() → gptj::Error "CUDA kernel '<kernel>' failed to launch: ...".
void check_launch(const char* kernel);

// Largest head_dim the attention kernels support.
constexpr int kMaxHeadDim = 256;

// out [n, dim] (float32) = wte [vocab, dim] rows ids[n]
template <typename T>
void embedding(const T* wte, const int32_t* ids, int n, int dim, float* out, cudaStream_t stream);

// y [rows, dim] = layernorm(x[src_row(r), :]) * gamma + beta, statistics float32 (two-pass).
// src_row(r) = row_index ? row_index[r] : r (gathers the rows that need logits). x float32 [*, dim].
template <typename T>
void layernorm(const float* x, const int32_t* row_index, const float* gamma, const float* beta, T* y,
               int rows, int dim, float eps, cudaStream_t stream);

// GPT-J rotate-every-two rotary, in place, first rotary_dim dims of each of n_heads heads (columns
// 0..n_heads*head_dim of each row). x [tokens, row_stride]; positions [tokens] (device).
template <typename T>
void rotary_gptj(T* x, int tokens, int row_stride, int n_heads, int head_dim, int rotary_dim,
                 const int32_t* positions, cudaStream_t stream);

// x [rows, cols] (row stride ld) = gelu_new(x + bias[cols]) (tanh approximation). bias float32.
template <typename T>
void bias_gelu_new(T* x, const float* bias, int rows, int cols, int ld, cudaStream_t stream);

// x [rows, cols] (float32) += partial [rows, cols] (T) + bias [cols] (float32; may be null).
template <typename T>
void residual_add(float* x, const T* partial, const float* bias, int rows, int cols,
                  cudaStream_t stream);

// x [rows, cols] (float32) += bias [cols]
void add_bias_f32(float* x, const float* bias, int rows, int cols, cudaStream_t stream);

// Writes the k/v rows of `tokens` tokens into their paged cache slots.
// k, v [tokens, row_stride] (heads at columns 0..); caches [num_blocks, block_size, n_heads, head_dim].
template <typename T>
void kv_write(const T* k, const T* v, int row_stride, int tokens, const int32_t* positions,
              const int32_t* token_bt_off, const int32_t* block_tables, int block_size, int n_heads,
              int head_dim, T* k_cache, T* v_cache, cudaStream_t stream);

// rotary_gptj on q's and k's first n_heads heads, then kv_write, in one pass: q rotated in place, k
// rotated into the cache (the k columns themselves are left as they were), v copied.
template <typename T>
void rotary_kv_write(T* q, const T* k, const T* v, int row_stride, int tokens, const int32_t* positions,
                     const int32_t* token_bt_off, const int32_t* block_tables, int block_size, int n_heads,
                     int head_dim, int rotary_dim, T* k_cache, T* v_cache, cudaStream_t stream);

// Causal paged attention for query tiles of prefill sequences (flash-style: K/V tiles in shared
// memory, online softmax, no [seq x seq] buffer). Tile i covers tokens
// [tile_begin[i], tile_begin[i] + tile_count[i]), all of one sequence with consecutive positions,
// tile_count[i] <= kPrefillTileQ. Query t attends cache positions [0, positions[t]].
// q [tokens, q_stride], out [tokens, out_stride] (heads at columns 0..). All int arrays on device.
constexpr int kPrefillTileQ = 32;
template <typename T>
void attention_prefill(const T* q, int q_stride, const int32_t* tile_begin, const int32_t* tile_count,
                       int n_tiles, const int32_t* positions, const int32_t* token_bt_off,
                       const int32_t* block_tables, int block_size, int n_heads, int head_dim,
                       const T* k_cache, const T* v_cache, T* out, int out_stride,
                       cudaStream_t stream);

// Split of a decode step's keys (flash-decoding): with splits > 1 each (token, head) runs `splits`
// blocks of split_len positions, writing float32 partial states to `partials`
// [n, n_heads, splits, head_dim + 2] (device), merged by a second kernel.
constexpr int kMaxDecodeSplits = 32;
struct DecodeSplit {
  int splits = 1;
  int split_len = 0;
  float* partials = nullptr;
};
// The split for n decode tokens over n_heads heads whose longest context is max_positions, on a GPU
// with sm_count SMs: none (splits 1) once n * n_heads blocks fill the GPU twice over.
DecodeSplit plan_decode_split(int n, int n_heads, int max_positions, int sm_count);

// Single-query (decode) attention: one thread block per (listed token, head, split), warps split
// the keys and combine their online-softmax states. token_index [n] lists the tokens (rows of q/out).
template <typename T>
void attention_decode(const T* q, int q_stride, const int32_t* token_index, int n,
                      const int32_t* positions, const int32_t* token_bt_off,
                      const int32_t* block_tables, int block_size, int n_heads, int head_dim,
                      const T* k_cache, const T* v_cache, T* out, int out_stride,
                      const DecodeSplit& split, cudaStream_t stream);

// p[n] = mean + stddev * (approximately normal value from a counter-based hash of (seed, tensor_id,
// i)). Deterministic for given arguments; used for random weights generated on the GPU.
template <typename T>
void fill_random(T* p, std::size_t n, uint64_t seed, uint64_t tensor_id, float mean, float stddev,
                 cudaStream_t stream);

// ---- Weight-only quantized products (quant_linear.cu) ----

// A quantized weight matrix [rows, cols] (nn.Linear layout) on the device, in runtime/core/quant.h's
// layout, uploaded as the host holds it (device pointers, not owned):
//   kInt8  values int8 [rows, cols] (row stride cols bytes), scales float32 [rows]
//   kInt4  values [rows, row_bytes()] nibbles (every 8 bytes hold 16 consecutive values: byte j's low
//          nibble = value j, high nibble = value j + 8, code = q + 8; rows padded to 16 values),
//          scales float16 [rows, groups()] (one per kQuantGroup columns)
// A weight is scale * q, rounded once to float32 (as runtime/core/quant.h's dequantize_rows).
// (The members are constexpr so that device code may call them: --expt-relaxed-constexpr.)
enum class QuantKind { kInt8, kInt4 };
constexpr int kQuantGroup = 128;  // = runtime/core/quant.h's kInt4Group
struct QuantWeights {
  QuantKind kind = QuantKind::kInt8;
  int rows = 0, cols = 0;
  const uint8_t* values = nullptr;
  const void* scales = nullptr;
  constexpr std::size_t row_bytes() const {
    return kind == QuantKind::kInt8 ? static_cast<std::size_t>(cols) : static_cast<std::size_t>(cols + 15) / 16 * 8;
  }
  constexpr int groups() const { return (cols + kQuantGroup - 1) / kQuantGroup; }
  constexpr std::size_t scale_bytes() const {
    return kind == QuantKind::kInt8 ? rows * sizeof(float) : static_cast<std::size_t>(rows) * groups() * 2;
  }
};

// Largest row count quant_gemv takes (decode-sized products; more rows go through
// quant_dequantize into tiles and a tensor-core GEMM: runtime/backend/cuda_quant_linear.h).
constexpr int kQuantGemvMaxRows = 8;

// y [rows, w.rows] (row stride ldy; float32 when y_f32, else T) = x [rows, w.cols] (T, row stride
// ldx) · dequant(w)^T, rows in 1..kQuantGemvMaxRows, float32 accumulation, weights dequantized in
// registers (one warp per output column, 16 values per lane per load).
template <typename T>
void quant_gemv(const T* x, int ldx, int rows, const QuantWeights& w, void* y, int ldy, bool y_f32,
                cudaStream_t stream);

// out [n, w.cols] (T, dense) = dequant(w) rows [row_begin, row_begin + n).
template <typename T>
void quant_dequantize(const QuantWeights& w, int row_begin, int n, T* out, cudaStream_t stream);

// Random quantized weights generated on the GPU (no checkpoint): q = round(normal * k) clamped to
// the format's range (k = 32 of 127 for int8, 2.5 of 7 for int4), every scale stddev / k, so a weight
// is ~ normal(0, stddev) cut at ~4 sigma (int8) or ~2.8 sigma (int4). Deterministic for the arguments;
// int4 padding nibbles hold the code for 0. values / scales laid out as QuantWeights.
void fill_random_quantized(QuantKind kind, int rows, int cols, uint64_t seed, uint64_t tensor_id, float stddev,
                           uint8_t* values, void* scales, cudaStream_t stream);

// Per-tensor FP8 E4M3 (fp8.cu), for --weights fp8 on sm_89+: out [rows, cols] (dense, E4M3 bytes) =
// x [rows, cols] (row stride ld) / s rounded to nearest and saturated to +-kFp8Max, with
// s = max|x| / kFp8Max (1 when x is all zeros). scale (device, 2 floats): [0] the max (scratch),
// [1] s, which a product multiplies back (cuBLASLt's A/B scale pointers). Asynchronous on `stream`.
constexpr float kFp8Max = 448.0f;  // largest finite E4M3 value
template <typename T>
void fp8_quantize(const T* x, int rows, int cols, int ld, float* scale, uint8_t* out, cudaStream_t stream);

// ---- Draw summaries (sampling.cu): the GPU half of runtime/backend/draw.h ----

// One draw's plan on the device; its edits are edits[edit_begin, edit_end) of one shared array.
struct DeviceDrawParams {
  int32_t logit_row = 0;
  int32_t allowed_vocab = 0;
  float temperature = 0;
  float top_p = 1;
  uint64_t noise_key = 0;
  int32_t want_log_norm = 0;
  int32_t edit_begin = 0;
  int32_t edit_end = 0;
  int32_t score_token = -1;
  int32_t candidates = kDrawCandidates;  // 1: only the argmax (no sort needed)
};

// Device scratch for n_draws draws of a vocab_rows shard: keys, ids, sorted_keys, sorted_ids
// [n_draws * vocab_rows] each, offsets [n_draws + 1], and sort_bytes of cub temporary storage
// (summarize_draws_sort_bytes).
struct DrawScratch {
  float* keys = nullptr;
  int32_t* ids = nullptr;
  float* sorted_keys = nullptr;
  int32_t* sorted_ids = nullptr;
  int32_t* offsets = nullptr;
  void* sort_temp = nullptr;
  std::size_t sort_bytes = 0;
};
std::size_t summarize_draws_sort_bytes(int n_draws, int vocab_rows);

// out[d] (device) = summarize_draw() of draw d over logits [*, vocab_rows] (device, float32; this
// shard holds ids vocab_begin ..). params [n_draws] and edits on the device. any_sort: some draw
// wants more than one candidate (else the segmented sort is skipped; scratch.sort_temp may be null).
void summarize_draws(const float* logits, int vocab_rows, int64_t vocab_begin, const DeviceDrawParams* params,
                     int n_draws, const LogitEdit* edits, const DrawScratch& scratch, bool any_sort,
                     DrawSummary* out, cudaStream_t stream);

// Threshold-search queries (kernels/sampling_math.h) answered from the processed keys summarize_draws()
// left in scratch.keys [n_draws, vocab_rows] (device): out[i] (device) for queries[i] (device), as
// answer_search_query() on the host. `rank`: this rank's TP position (ties at a cut are split by rank).
void answer_search(const float* keys, int vocab_rows, int64_t vocab_begin, int rank, const DeviceDrawParams* params,
                   const SearchQuery* queries, int n_queries, SearchReply* out, cudaStream_t stream);

}  // namespace gptj::cuda

#define GPTJ_CUDA_CHECK(expr) ::gptj::cuda::check((expr), #expr, __FILE__, __LINE__)
