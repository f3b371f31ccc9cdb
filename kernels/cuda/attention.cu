// Paged KV cache write and causal attention over the paged cache (prefill tiles and decode).
// Semantics match cpu::kv_write / cpu::attention_paged: scale 1/sqrt(head_dim), softmax in float32.
#include <cmath>

#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_types.cuh"

namespace gptj::cuda {
namespace {

using detail::cache_offset;
using detail::from_float;
using detail::to_float;

constexpr int kDimsPerLane = kMaxHeadDim / 32;  // head dims each lane accumulates

template <typename T>
__global__ void kv_write_kernel(const T* k, const T* v, int row_stride, const int32_t* positions,
                                const int32_t* token_bt_off, const int32_t* block_tables,
                                int block_size, int n_heads, int head_dim, T* k_cache, T* v_cache) {
  const int t = blockIdx.x;
  const size_t at = cache_offset(block_tables + token_bt_off[t], block_size, positions[t], n_heads,
                                 head_dim);
  const int width = n_heads * head_dim;
  const size_t src = static_cast<size_t>(t) * row_stride;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    k_cache[at + i] = k[src + i];
    v_cache[at + i] = v[src + i];
  }
}

// Rotary on q (in place) and on k on its way into the cache, v copied: rotary_gptj over q and k
// followed by kv_write, in one pass. One block per token; thread i handles rotary pair i.
template <typename T>
__global__ void rotary_kv_write_kernel(T* q, const T* k, const T* v, int row_stride, const int32_t* positions,
                                       const int32_t* token_bt_off, const int32_t* block_tables,
                                       int block_size, int n_heads, int head_dim, int rotary_dim, T* k_cache,
                                       T* v_cache) {
  const int t = blockIdx.x;
  const int pos = positions[t];
  const size_t at = cache_offset(block_tables + token_bt_off[t], block_size, pos, n_heads, head_dim);
  const size_t src = static_cast<size_t>(t) * row_stride;
  const int half_dim = head_dim / 2, half_rot = rotary_dim / 2;
  for (int idx = threadIdx.x; idx < n_heads * half_dim; idx += blockDim.x) {
    const int h = idx / half_dim, i = idx % half_dim;
    const size_t d = static_cast<size_t>(h) * head_dim + 2 * i;
    T* qp = q + src + d;
    const float k0 = to_float(k[src + d]), k1 = to_float(k[src + d + 1]);
    if (i < half_rot) {
      float s, c;
      detail::rotary_sin_cos(pos, i, rotary_dim, &s, &c);
      const float q0 = to_float(qp[0]), q1 = to_float(qp[1]);
      qp[0] = from_float<T>(q0 * c - q1 * s);
      qp[1] = from_float<T>(q1 * c + q0 * s);
      k_cache[at + d] = from_float<T>(k0 * c - k1 * s);
      k_cache[at + d + 1] = from_float<T>(k1 * c + k0 * s);
    } else {
      k_cache[at + d] = k[src + d];
      k_cache[at + d + 1] = k[src + d + 1];
    }
    v_cache[at + d] = v[src + d];
    v_cache[at + d + 1] = v[src + d + 1];
  }
}

// ---- prefill: one block per (query tile, head); kWarps warps x kQueriesPerWarp queries -----------
constexpr int kTileK = 32;  // keys per shared-memory tile (one key per lane for the scores)
constexpr int kPrefillWarps = 8;
constexpr int kQueriesPerWarp = kPrefillTileQ / kPrefillWarps;

inline size_t prefill_smem_bytes(int head_dim) {
  // Q [TileQ, D], K [TileK, D + 1] (padded: lane j reads row j), V [TileK, D], all float32.
  return sizeof(float) * (static_cast<size_t>(kPrefillTileQ) * head_dim +
                          static_cast<size_t>(kTileK) * (head_dim + 1) +
                          static_cast<size_t>(kTileK) * head_dim);
}

template <typename T>
__global__ void __launch_bounds__(kPrefillWarps * 32)
    attention_prefill_kernel(const T* q, int q_stride, const int32_t* tile_begin,
                             const int32_t* tile_count, const int32_t* positions,
                             const int32_t* token_bt_off, const int32_t* block_tables,
                             int block_size, int n_heads, int head_dim, float scale,
                             const T* k_cache, const T* v_cache, T* out, int out_stride) {
  extern __shared__ float smem[];
  const int D = head_dim;
  float* sq = smem;                                  // [TileQ, D]
  float* sk = sq + kPrefillTileQ * D;                // [TileK, D + 1]
  float* sv = sk + kTileK * (D + 1);                 // [TileK, D]
  const int h = blockIdx.y;
  const int t0 = tile_begin[blockIdx.x];
  const int nq = tile_count[blockIdx.x];
  const int32_t* bt = block_tables + token_bt_off[t0];
  const int last_pos = positions[t0 + nq - 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int idx = threadIdx.x; idx < nq * D; idx += blockDim.x) {
    const int qi = idx / D, d = idx % D;
    sq[qi * D + d] = to_float(q[static_cast<size_t>(t0 + qi) * q_stride + h * D + d]);
  }

  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][kDimsPerLane];
  int qpos[kQueriesPerWarp];
#pragma unroll
  for (int j = 0; j < kQueriesPerWarp; ++j) {
    const int qi = warp * kQueriesPerWarp + j;
    qpos[j] = qi < nq ? positions[t0 + qi] : -1;  // -1: no query, skipped
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[j][i] = 0.0f;
  }

  for (int kb = 0; kb <= last_pos; kb += kTileK) {
    const int nk = min(kTileK, last_pos + 1 - kb);
    __syncthreads();  // the previous tile has been consumed (and Q is loaded on the first pass)
    for (int idx = threadIdx.x; idx < nk * D; idx += blockDim.x) {
      const int j = idx / D, d = idx % D;
      const size_t off = cache_offset(bt, block_size, kb + j, n_heads, D) + h * D + d;
      sk[j * (D + 1) + d] = to_float(k_cache[off]);
      sv[j * D + d] = to_float(v_cache[off]);
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kQueriesPerWarp; ++j) {
      const int qp = qpos[j];
      if (qp < kb) continue;  // warp-uniform: no query, or every key of this tile is in its future
      const int qi = warp * kQueriesPerWarp + j;
      const bool valid = lane < nk && kb + lane <= qp;
      float s = -INFINITY;
      if (valid) {
        const float* qrow = sq + qi * D;
        const float* krow = sk + lane * (D + 1);
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot += qrow[d] * krow[d];
        s = dot * scale;
      }
      const float m_new = fmaxf(m[j], detail::warp_max(s));  // finite: key kb <= qp is valid
      const float alpha = __expf(m[j] - m_new);
      const float p = valid ? __expf(s - m_new) : 0.0f;
      l[j] = l[j] * alpha + detail::warp_sum(p);
      m[j] = m_new;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) acc[j][i] *= alpha;
      for (int jj = 0; jj < nk; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const float* vrow = sv + jj * D;
#pragma unroll
        for (int i = 0; i < kDimsPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[j][i] += pj * vrow[d];
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kQueriesPerWarp; ++j) {
    if (qpos[j] < 0) continue;
    const int qi = warp * kQueriesPerWarp + j;
    const float inv = 1.0f / l[j];
    T* orow = out + static_cast<size_t>(t0 + qi) * out_stride + h * D;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) orow[d] = from_float<T>(acc[j][i] * inv);
    }
  }
}

// ---- decode: one block per (token, head, split); warps take keys round-robin, then combine ------
// With splits > 1 (flash-decoding), split z covers positions [z * split_len, (z + 1) * split_len)
// and writes its unnormalized state (max, sum of weights, weighted values) to `partials`; a second
// kernel merges the splits. Long contexts at small batch then use every SM.
constexpr int kDecodeWarps = 8;

template <typename T>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode_kernel(const T* q, int q_stride, const int32_t* token_index,
                            const int32_t* positions, const int32_t* token_bt_off,
                            const int32_t* block_tables, int block_size, int n_heads,
                            int head_dim, float scale, const T* k_cache, const T* v_cache, T* out,
                            int out_stride, int splits, int split_len, float* partials) {
  __shared__ float s_m[kDecodeWarps], s_l[kDecodeWarps];
  __shared__ float s_acc[kDecodeWarps][kMaxHeadDim];
  const int D = head_dim;
  const int t = token_index[blockIdx.x];
  const int h = blockIdx.y;
  const int pos = positions[t];
  const int32_t* bt = block_tables + token_bt_off[t];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float qv[kDimsPerLane], acc[kDimsPerLane];
  const T* qrow = q + static_cast<size_t>(t) * q_stride + h * D;
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + 32 * i;
    qv[i] = d < D ? to_float(qrow[d]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int begin = blockIdx.z * split_len;
  const int end = min(pos + 1, begin + split_len);
  for (int p = begin + warp; p < end; p += kDecodeWarps) {
    const size_t off = cache_offset(bt, block_size, p, n_heads, D) + h * D;
    const T* krow = k_cache + off;
    const T* vrow = v_cache + off;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) dot += qv[i] * to_float(krow[d]);
    }
    const float s = detail::warp_sum(dot) * scale;
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new);
    const float w = __expf(s - m_new);
    l = l * alpha + w;
    m = m_new;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * alpha + (d < D ? w * to_float(vrow[d]) : 0.0f);
    }
  }
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) s_acc[warp][d] = acc[i];
  }
  __syncthreads();
  // Combine: idle warps (l = 0) weigh 0. Without splits warp 0 holds key 0, so l_all > 0; a split
  // past the sequence's end has l_all = 0 and writes (m -inf, l 0, values 0).
  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) m_all = fmaxf(m_all, s_m[w]);
  float l_all = 0.0f, weight[kDecodeWarps];
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) {
    weight[w] = s_l[w] > 0.0f ? __expf(s_m[w] - m_all) : 0.0f;
    l_all += s_l[w] * weight[w];
  }
  if (splits > 1) {
    float* part = partials + ((static_cast<size_t>(blockIdx.x) * n_heads + h) * splits + blockIdx.z) * (D + 2);
    if (threadIdx.x == 0) {
      part[0] = m_all;
      part[1] = l_all;
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) sum += s_acc[w][d] * weight[w];
      part[2 + d] = sum;
    }
    return;
  }
  const float inv = 1.0f / l_all;
  T* orow = out + static_cast<size_t>(t) * out_stride + h * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) sum += s_acc[w][d] * weight[w];
    orow[d] = from_float<T>(sum * inv);
  }
}

// Merges the splits of one (listed token, head): grid (n, n_heads).
template <typename T>
__global__ void attention_decode_merge_kernel(const int32_t* token_index, int n_heads, int head_dim,
                                              int splits, const float* partials, T* out, int out_stride) {
  const int D = head_dim;
  const int t = token_index[blockIdx.x];
  const int h = blockIdx.y;
  const float* base = partials + (static_cast<size_t>(blockIdx.x) * n_heads + h) * splits * (D + 2);
  float m_all = -INFINITY;
  for (int z = 0; z < splits; ++z)
    if (base[z * (D + 2) + 1] > 0.0f) m_all = fmaxf(m_all, base[z * (D + 2)]);
  float l_all = 0.0f;
  for (int z = 0; z < splits; ++z) {
    const float l = base[z * (D + 2) + 1];
    if (l > 0.0f) l_all += l * __expf(base[z * (D + 2)] - m_all);
  }
  const float inv = 1.0f / l_all;  // split 0 holds key 0, so l_all > 0
  T* orow = out + static_cast<size_t>(t) * out_stride + h * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f;
    for (int z = 0; z < splits; ++z) {
      const float l = base[z * (D + 2) + 1];
      if (l > 0.0f) sum += base[z * (D + 2) + 2 + d] * __expf(base[z * (D + 2)] - m_all);
    }
    orow[d] = from_float<T>(sum * inv);
  }
}

}  // namespace

template <typename T>
void kv_write(const T* k, const T* v, int row_stride, int tokens, const int32_t* positions,
              const int32_t* token_bt_off, const int32_t* block_tables, int block_size, int n_heads,
              int head_dim, T* k_cache, T* v_cache, cudaStream_t stream) {
  if (tokens <= 0) return;
  kv_write_kernel<T><<<tokens, 256, 0, stream>>>(k, v, row_stride, positions, token_bt_off,
                                                 block_tables, block_size, n_heads, head_dim,
                                                 k_cache, v_cache);
  check_launch("kv_write");
}

template <typename T>
void rotary_kv_write(T* q, const T* k, const T* v, int row_stride, int tokens, const int32_t* positions,
                     const int32_t* token_bt_off, const int32_t* block_tables, int block_size, int n_heads,
                     int head_dim, int rotary_dim, T* k_cache, T* v_cache, cudaStream_t stream) {
  if (tokens <= 0) return;
  if (head_dim % 2 != 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim) {
    throw_cuda_error(cudaErrorInvalidValue, "rotary_kv_write: head_dim and rotary_dim must be even, rotary_dim <= head_dim",
                     __FILE__, __LINE__);
  }
  rotary_kv_write_kernel<T><<<tokens, 256, 0, stream>>>(q, k, v, row_stride, positions, token_bt_off, block_tables,
                                                        block_size, n_heads, head_dim, rotary_dim, k_cache, v_cache);
  check_launch("rotary_kv_write");
}

template <typename T>
void attention_prefill(const T* q, int q_stride, const int32_t* tile_begin, const int32_t* tile_count,
                       int n_tiles, const int32_t* positions, const int32_t* token_bt_off,
                       const int32_t* block_tables, int block_size, int n_heads, int head_dim,
                       const T* k_cache, const T* v_cache, T* out, int out_stride,
                       cudaStream_t stream) {
  if (n_tiles <= 0) return;
  if (head_dim > kMaxHeadDim || head_dim <= 0) {
    throw_cuda_error(cudaErrorInvalidValue, "attention_prefill: head_dim above kMaxHeadDim (256)",
                     __FILE__, __LINE__);
  }
  const size_t smem = prefill_smem_bytes(head_dim);
  if (smem > 48 * 1024) {
    // Opt in to more than 48 KiB of dynamic shared memory (head_dim 256 needs ~97 KiB).
    check(cudaFuncSetAttribute(attention_prefill_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "cudaFuncSetAttribute(attention_prefill)", __FILE__, __LINE__);
  }
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  dim3 grid(n_tiles, n_heads);
  attention_prefill_kernel<T><<<grid, kPrefillWarps * 32, smem, stream>>>(
      q, q_stride, tile_begin, tile_count, positions, token_bt_off, block_tables, block_size,
      n_heads, head_dim, scale, k_cache, v_cache, out, out_stride);
  check_launch("attention_prefill");
}

template <typename T>
void attention_decode(const T* q, int q_stride, const int32_t* token_index, int n,
                      const int32_t* positions, const int32_t* token_bt_off,
                      const int32_t* block_tables, int block_size, int n_heads, int head_dim,
                      const T* k_cache, const T* v_cache, T* out, int out_stride,
                      const DecodeSplit& split, cudaStream_t stream) {
  if (n <= 0) return;
  if (head_dim > kMaxHeadDim || head_dim <= 0) {
    throw_cuda_error(cudaErrorInvalidValue, "attention_decode: head_dim above kMaxHeadDim (256)",
                     __FILE__, __LINE__);
  }
  if (split.splits > 1 && (split.partials == nullptr || split.split_len <= 0 || split.splits > kMaxDecodeSplits)) {
    throw_cuda_error(cudaErrorInvalidValue, "attention_decode: bad split (partials, length or count)", __FILE__,
                     __LINE__);
  }
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  const int splits = split.splits > 1 ? split.splits : 1;
  const int split_len = splits > 1 ? split.split_len : (1 << 30);
  dim3 grid(n, n_heads, splits);
  attention_decode_kernel<T><<<grid, kDecodeWarps * 32, 0, stream>>>(
      q, q_stride, token_index, positions, token_bt_off, block_tables, block_size, n_heads,
      head_dim, scale, k_cache, v_cache, out, out_stride, splits, split_len, split.partials);
  check_launch("attention_decode");
  if (splits > 1) {
    attention_decode_merge_kernel<T><<<dim3(n, n_heads), 128, 0, stream>>>(
        token_index, n_heads, head_dim, splits, split.partials, out, out_stride);
    check_launch("attention_decode_merge");
  }
}

DecodeSplit plan_decode_split(int n, int n_heads, int max_positions, int sm_count) {
  DecodeSplit split;
  const int blocks = n * n_heads;
  if (n <= 0 || blocks >= 2 * sm_count) return split;
  // Enough blocks for two waves over the SMs, at least 64 positions per split.
  int splits = (2 * sm_count + blocks - 1) / blocks;
  splits = std::min({splits, kMaxDecodeSplits, (max_positions + 63) / 64});
  if (splits <= 1) return split;
  split.splits = splits;
  split.split_len = (max_positions + splits - 1) / splits;
  return split;
}

#define GPTJ_INSTANTIATE(T)                                                                         \
  template void kv_write<T>(const T*, const T*, int, int, const int32_t*, const int32_t*,          \
                            const int32_t*, int, int, int, T*, T*, cudaStream_t);                 \
  template void rotary_kv_write<T>(T*, const T*, const T*, int, int, const int32_t*, const int32_t*,  \
                                   const int32_t*, int, int, int, int, T*, T*, cudaStream_t);          \
  template void attention_prefill<T>(const T*, int, const int32_t*, const int32_t*, int,           \
                                     const int32_t*, const int32_t*, const int32_t*, int, int, int, \
                                     const T*, const T*, T*, int, cudaStream_t);                  \
  template void attention_decode<T>(const T*, int, const int32_t*, int, const int32_t*,            \
                                    const int32_t*, const int32_t*, int, int, int, const T*,       \
                                    const T*, T*, int, const DecodeSplit&, cudaStream_t);

GPTJ_INSTANTIATE(float)
GPTJ_INSTANTIATE(__half)
GPTJ_INSTANTIATE(__nv_bfloat16)
#undef GPTJ_INSTANTIATE

}  // namespace gptj::cuda
