// Draw summaries on the GPU: each draw (runtime/backend/draw.h) reduced over this rank's vocab shard
// of the step's logits, so only DrawSummary values (560 bytes each) leave the device. Same results as
// the CPU reference summarize_draw() (tests/gpu compares them):
//   1. prepare: keys[d][j] = logit of id vocab_begin + j in draw d's row, -inf past allowed_vocab
//   2. edits:   the draw's penalty edits applied to the keys of this shard's ids (apply_logit_edit)
//   3. stats:   one block per draw: non-finite raw logits, max, sum exp (double), sum exp at
//               temperature T, Gumbel-max winner
//   4. sort:    cub segmented radix sort of (key, id) per draw, descending and stable, so equal keys
//               keep ascending ids: the candidate order of ranks_before()
//   5. top:     the first kDrawCandidates of each sorted segment into the summary
// and the threshold-search rounds (answer_search; runtime/generate/draw_search.h) over the same
// processed keys, on the device: a block per query builds its histogram in shared memory, lists a
// bucket's ids, or races over the kept ids; only the SearchReply values leave the device.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "kernels/cuda/cuda_kernels.h"

namespace gptj::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void prepare_keys_kernel(const float* logits, int vocab_rows, int64_t vocab_begin,
                                    const DeviceDrawParams* params, float* keys, int32_t* ids,
                                    int32_t* offsets, int n_draws) {
  const int d = blockIdx.y;
  const DeviceDrawParams p = params[d];
  const float* row = logits + static_cast<size_t>(p.logit_row) * vocab_rows;
  float* k = keys + static_cast<size_t>(d) * vocab_rows;
  int32_t* id = ids + static_cast<size_t>(d) * vocab_rows;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < vocab_rows; j += gridDim.x * blockDim.x) {
    const int64_t token = vocab_begin + j;
    k[j] = token < p.allowed_vocab ? row[j] : -INFINITY;
    id[j] = static_cast<int32_t>(token);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    offsets[d] = d * vocab_rows;
    if (d == n_draws - 1) offsets[n_draws] = n_draws * vocab_rows;
  }
}

__global__ void apply_edits_kernel(const DeviceDrawParams* params, const LogitEdit* edits, int vocab_rows,
                                   int64_t vocab_begin, float* keys) {
  const int d = blockIdx.x;
  const DeviceDrawParams p = params[d];
  float* k = keys + static_cast<size_t>(d) * vocab_rows;
  for (int e = p.edit_begin + threadIdx.x; e < p.edit_end; e += blockDim.x) {
    const LogitEdit edit = edits[e];
    const int64_t j = edit.token - vocab_begin;
    if (j >= 0 && j < vocab_rows) k[j] = apply_logit_edit(k[j], edit);  // tokens are unique per draw
  }
}

struct RaceEntry {
  float score;
  float value;
  int32_t token;
};
struct RaceBetter {
  __device__ RaceEntry operator()(const RaceEntry& a, const RaceEntry& b) const {
    if (a.token < 0) return b;
    if (b.token < 0) return a;
    if (a.score > b.score || (a.score == b.score && a.token < b.token)) return a;
    return b;
  }
};
struct BestOp {  // the candidate order: higher value, then lower id; an empty entry (id -1) loses
  __device__ TokenScore operator()(const TokenScore& a, const TokenScore& b) const {
    if (a.token < 0) return b;
    if (b.token < 0) return a;
    return ranks_before(b, a) ? b : a;
  }
};

__global__ void draw_stats_kernel(const float* logits, const float* keys, int vocab_rows, int64_t vocab_begin,
                                  const DeviceDrawParams* params, DrawSummary* out) {
  using BestReduce = cub::BlockReduce<TokenScore, kThreads>;
  using DoubleReduce = cub::BlockReduce<double, kThreads>;
  using RaceReduce = cub::BlockReduce<RaceEntry, kThreads>;
  __shared__ union {
    typename BestReduce::TempStorage f;
    typename DoubleReduce::TempStorage d;
    typename RaceReduce::TempStorage r;
  } temp;
  __shared__ TokenScore shared_best;
  const int d = blockIdx.x;
  const DeviceDrawParams p = params[d];
  const float* k = keys + static_cast<size_t>(d) * vocab_rows;

  // The shard's best entry (its max and argmax), ids visited in ascending order per thread; and
  // whether any raw logit of the row is NaN or ±inf (as summarize_draw: before padding and edits).
  const float* raw = logits + static_cast<size_t>(p.logit_row) * vocab_rows;
  TokenScore best_entry{-INFINITY, -1};
  int non_finite = 0;
  for (int j = threadIdx.x; j < vocab_rows; j += blockDim.x) {
    const TokenScore e{k[j], static_cast<int32_t>(vocab_begin + j)};
    if (best_entry.token < 0 || ranks_before(e, best_entry)) best_entry = e;
    non_finite |= non_finite_bits(__float_as_uint(raw[j])) ? 1 : 0;
  }
  non_finite = __syncthreads_or(non_finite);
  best_entry = BestReduce(temp.f).Reduce(best_entry, BestOp());
  if (threadIdx.x == 0) shared_best = best_entry;
  __syncthreads();
  const float m = shared_best.value;
  DrawSummary& s = out[d];
  if (threadIdx.x == 0) {
    s.non_finite = non_finite ? 1 : 0;
    s.max_logit = m;
    if (p.candidates <= 1) {  // plain greedy: the argmax is the whole list (no sort)
      s.count = vocab_rows > 0 ? 1 : 0;
      s.top[0] = vocab_rows > 0 ? shared_best : TokenScore{};
      for (int i = 1; i < kDrawCandidates; ++i) s.top[i] = TokenScore{};
    }
    s.sum_exp = 0;
    s.sum_exp_t = 0;
    s.noise_score = -INFINITY;
    s.noise_best = TokenScore{};
    const int64_t j = static_cast<int64_t>(p.score_token) - vocab_begin;
    const bool found = p.score_token >= 0 && j >= 0 && j < vocab_rows;
    s.score_found = found ? 1 : 0;
    s.score_value = found ? k[j] : -INFINITY;
  }
  if (m == -INFINITY) return;  // nothing in this shard can be chosen (uniform across the block)

  if (p.want_log_norm) {
    double sum = 0;
    for (int j = threadIdx.x; j < vocab_rows; j += blockDim.x) sum += expf(k[j] - m);
    __syncthreads();
    sum = DoubleReduce(temp.d).Sum(sum);
    if (threadIdx.x == 0) s.sum_exp = sum;
  }
  const float t = p.temperature;
  if (t <= 0.0f) return;
  if (p.top_p < 1.0f) {
    const float m_t = m / t;
    double sum = 0;
    for (int j = threadIdx.x; j < vocab_rows; j += blockDim.x)
      sum += expf(k[j] / t - m_t);
    __syncthreads();
    sum = DoubleReduce(temp.d).Sum(sum);
    if (threadIdx.x == 0) s.sum_exp_t = sum;
  }
  RaceEntry best{-INFINITY, -INFINITY, -1};
  for (int j = threadIdx.x; j < vocab_rows; j += blockDim.x) {
    const float v = k[j];
    if (v == -INFINITY) continue;
    const int32_t token = static_cast<int32_t>(vocab_begin + j);
    const RaceEntry entry{race_score(v, t, p.noise_key, token), v, token};
    if (!(entry.score > -INFINITY)) continue;  // as race_enter: -inf and NaN never lead
    best = RaceBetter()(best, entry);
  }
  __syncthreads();
  best = RaceReduce(temp.r).Reduce(best, RaceBetter());
  if (threadIdx.x == 0 && best.token >= 0) {
    s.noise_score = best.score;
    s.noise_best = TokenScore{best.value, best.token};
  }
}

__global__ void write_top_kernel(const float* sorted_keys, const int32_t* sorted_ids, int vocab_rows,
                                 const DeviceDrawParams* params, DrawSummary* out) {
  const int d = blockIdx.x;
  const int want = params[d].candidates;
  if (want <= 1) return;  // written by draw_stats_kernel
  const int count = vocab_rows < want ? vocab_rows : want;
  DrawSummary& s = out[d];
  for (int i = threadIdx.x; i < kDrawCandidates; i += blockDim.x) {
    const size_t at = static_cast<size_t>(d) * vocab_rows + i;
    s.top[i] = i < count ? TokenScore{sorted_keys[at], sorted_ids[at]} : TokenScore{};
  }
  if (threadIdx.x == 0) s.count = count;  // score_found, score_value, non_finite: draw_stats_kernel
}


struct MinOp {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// One block per query: the GPU half of answer_search_query() (runtime/backend/draw.cc).
__global__ void answer_search_kernel(const float* keys, int vocab_rows, int64_t vocab_begin, int rank,
                                     const DeviceDrawParams* params, const SearchQuery* queries, SearchReply* out) {
  using FloatReduce = cub::BlockReduce<float, kThreads>;
  using RaceReduce = cub::BlockReduce<RaceEntry, kThreads>;
  using CountScan = cub::BlockScan<int, kThreads>;
  __shared__ union {
    typename FloatReduce::TempStorage f;
    typename RaceReduce::TempStorage r;
    typename CountScan::TempStorage s;
  } temp;
  __shared__ float edges[kSearchBuckets + 1];
  __shared__ uint32_t count[kSearchBuckets];
  __shared__ unsigned long long mass[kSearchBuckets];
  __shared__ int listed;
  const SearchQuery& q = queries[blockIdx.x];
  const DeviceDrawParams p = params[q.draw];
  const float* k = keys + static_cast<size_t>(q.draw) * vocab_rows;
  const float t = p.temperature;
  SearchReply& o = out[blockIdx.x];
  for (int b = threadIdx.x; b < kSearchBuckets; b += blockDim.x) {
    count[b] = 0;
    mass[b] = 0;
  }
  for (int b = threadIdx.x; b <= kSearchBuckets; b += blockDim.x) edges[b] = q.edges[b];
  if (threadIdx.x == 0) listed = 0;
  __syncthreads();
  float lo_s = INFINITY, hi_s = -INFINITY;
  RaceEntry best{-INFINITY, -INFINITY, -1};
  auto enter = [&](float v, int64_t j) {
    const int32_t token = static_cast<int32_t>(vocab_begin + j);
    const RaceEntry e{race_score(v, t, p.noise_key, token), v, token};
    if (e.score > -INFINITY) best = RaceBetter()(best, e);
  };
  if (q.mode == kSearchRace) {
    // Contiguous chunks per thread, so the ties at the cut are counted in id order.
    const int chunk = (vocab_rows + blockDim.x - 1) / blockDim.x;
    const int begin = threadIdx.x * chunk, end = min(vocab_rows, begin + chunk);
    int ties = 0;
    for (int j = begin; j < end; ++j) ties += (k[j] != -INFINITY && k[j] / t == q.cut) ? 1 : 0;
    int before = 0;
    CountScan(temp.s).ExclusiveSum(ties, before);
    __syncthreads();
    const int64_t take = rank < q.tie_rank ? vocab_rows : rank == q.tie_rank ? q.tie_take : 0;
    for (int j = begin; j < end; ++j) {
      const float v = k[j];
      if (v == -INFINITY) continue;
      const float s = v / t;
      if (s > q.cut || (s == q.cut && before++ < take)) enter(v, j);
    }
  } else {
    for (int j = threadIdx.x; j < vocab_rows; j += blockDim.x) {
      const float v = k[j];
      if (v == -INFINITY) continue;
      const float s = v / t;
      if (s > q.lo && s <= q.hi) {
        lo_s = fminf(lo_s, s);
        hi_s = fmaxf(hi_s, s);
        if (q.mode == kSearchHistogram) {
          constexpr int kLast = kSearchBuckets - 1;
          const float guess = (q.hi - s) * q.bucket_scale;
          int b = guess >= static_cast<float>(kLast) ? kLast : guess > 0.0f ? static_cast<int>(guess) : 0;
          while (b > 0 && s > edges[b]) --b;
          while (b < kLast && !(s > edges[b + 1])) ++b;
          atomicAdd(&count[b], 1u);
          if (q.want_mass) atomicAdd(&mass[b], static_cast<unsigned long long>(token_mass(s, q.scaled_max)));
        } else {
          const int at = atomicAdd(&listed, 1);
          const int32_t token = static_cast<int32_t>(vocab_begin + j);
          if (at < kSearchListed) o.list[at] = ListedToken{v, token, race_score(v, t, p.noise_key, token), 0};
        }
      } else if (q.mode == kSearchList && s > q.hi) {
        enter(v, j);
      }
    }
  }
  __syncthreads();
  lo_s = FloatReduce(temp.f).Reduce(lo_s, MinOp());
  __syncthreads();
  hi_s = FloatReduce(temp.f).Reduce(hi_s, MaxOp());
  __syncthreads();
  best = RaceReduce(temp.r).Reduce(best, RaceBetter());
  if (q.mode == kSearchHistogram)
    for (int b = threadIdx.x; b < kSearchBuckets; b += blockDim.x) {
      o.hist.count[b] = count[b];
      o.hist.mass[b] = mass[b];
    }
  if (threadIdx.x == 0) {
    o.min_scaled = lo_s;
    o.max_scaled = hi_s;
    o.listed = min(listed, kSearchListed);  // rank 0 sized the bucket to fit (it checks the count)
    o.best_score = best.token >= 0 ? best.score : -INFINITY;
    o.best = best.token >= 0 ? TokenScore{best.value, best.token} : TokenScore{};
  }
}

}  // namespace

void answer_search(const float* keys, int vocab_rows, int64_t vocab_begin, int rank, const DeviceDrawParams* params,
                   const SearchQuery* queries, int n_queries, SearchReply* out, cudaStream_t stream) {
  if (n_queries <= 0) return;
  answer_search_kernel<<<n_queries, kThreads, 0, stream>>>(keys, vocab_rows, vocab_begin, rank, params, queries, out);
  check_launch("answer_search_kernel");
}

std::size_t summarize_draws_sort_bytes(int n_draws, int vocab_rows) {
  std::size_t bytes = 0;
  const int n = n_draws * vocab_rows;
  check(cub::DeviceSegmentedRadixSort::SortPairsDescending(
            nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
            static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, n_draws,
            static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(nullptr)),
        "cub segmented sort (size query)", __FILE__, __LINE__);
  return bytes;
}

void summarize_draws(const float* logits, int vocab_rows, int64_t vocab_begin, const DeviceDrawParams* params,
                     int n_draws, const LogitEdit* edits, const DrawScratch& scratch, bool any_sort,
                     DrawSummary* out, cudaStream_t stream) {
  if (n_draws <= 0) return;
  const int x_blocks = (vocab_rows + kThreads - 1) / kThreads < 64 ? (vocab_rows + kThreads - 1) / kThreads : 64;
  prepare_keys_kernel<<<dim3(x_blocks, n_draws), kThreads, 0, stream>>>(
      logits, vocab_rows, vocab_begin, params, scratch.keys, scratch.ids, scratch.offsets, n_draws);
  check_launch("prepare_keys_kernel");
  apply_edits_kernel<<<n_draws, kThreads, 0, stream>>>(params, edits, vocab_rows, vocab_begin, scratch.keys);
  check_launch("apply_edits_kernel");
  draw_stats_kernel<<<n_draws, kThreads, 0, stream>>>(logits, scratch.keys, vocab_rows, vocab_begin, params, out);
  check_launch("draw_stats_kernel");
  if (!any_sort) return;  // every draw is plain greedy: draw_stats_kernel wrote the argmax
  std::size_t bytes = scratch.sort_bytes;
  check(cub::DeviceSegmentedRadixSort::SortPairsDescending(
            scratch.sort_temp, bytes, scratch.keys, scratch.sorted_keys, scratch.ids, scratch.sorted_ids,
            n_draws * vocab_rows, n_draws, scratch.offsets, scratch.offsets + 1, 0, 32, stream),
        "cub segmented sort", __FILE__, __LINE__);
  write_top_kernel<<<n_draws, 64, 0, stream>>>(scratch.sorted_keys, scratch.sorted_ids, vocab_rows, params, out);
  check_launch("write_top_kernel");
}

}  // namespace gptj::cuda
