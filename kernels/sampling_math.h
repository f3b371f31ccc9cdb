// The sampling maths shared by the host (CPU backend, sampler: runtime/backend/draw.h) and the CUDA
// kernels (kernels/cuda/sampling.cu): plain structs with one layout on both sides and the functions
// marked GPTJ_HOST_DEVICE, the one definition both sides use. A leaf: it includes only the standard
// library, so kernels include it without reaching up into runtime/. What a draw is and how the
// shards' summaries settle it: runtime/backend/draw.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define GPTJ_HOST_DEVICE __host__ __device__
#else
#define GPTJ_HOST_DEVICE
#endif

namespace gptj {

// Logit processing for one context token, in Hugging Face order: repetition penalty, then
// no_repeat_ngram ban, then the OpenAI presence/frequency subtraction.
struct LogitEdit {
  int32_t token = 0;
  float repetition_penalty = 1.0f;  // logit < 0 ? logit * p : logit / p
  float subtract = 0.0f;            // presence + frequency * count
  int32_t ban = 0;                  // 1: the token becomes -inf
};

GPTJ_HOST_DEVICE inline float apply_logit_edit(float logit, const LogitEdit& edit) {
  if (edit.repetition_penalty != 1.0f)
    logit = logit < 0.0f ? logit * edit.repetition_penalty : logit / edit.repetition_penalty;
  if (edit.ban) return -INFINITY;
  return logit - edit.subtract;
}

constexpr int kDrawCandidates = 64;

struct TokenScore {
  float value = -INFINITY;  // processed logit (edited, masked), before temperature
  int32_t token = -1;       // -1: padding entry
};

// One rank's reduction of one draw over its vocab shard [vocab_begin, vocab_begin + count).
// Plain data, identical layout on host and device; gathered to rank 0 as bytes.
struct DrawSummary {
  float max_logit = -INFINITY;  // max processed logit of the shard
  float noise_score = -INFINITY;  // best logit/T + G over the shard (T > 0)
  double sum_exp = 0;           // sum expf(logit - max_logit)          (when want_log_norm)
  double sum_exp_t = 0;         // sum expf(logit / T - max_logit / T)  (when T > 0 and top_p < 1)
  TokenScore noise_best;        // the shard's Gumbel-max winner (T > 0)
  int32_t count = 0;            // valid entries of top
  int32_t score_found = 0;      // 1: score_token lies in this shard, its logit is score_value
  float score_value = -INFINITY;
  int32_t non_finite = 0;       // 1: a raw logit of the shard's row is NaN or ±inf (a failed forward pass)
  TokenScore top[kDrawCandidates];  // value descending, then token ascending
};
static_assert(sizeof(DrawSummary) == 560, "DrawSummary is gathered as raw bytes: keep its layout fixed");

// True when a float's exponent bits are all ones: NaN, +inf or -inf. Bitwise, so it holds under any
// floating-point flags and vectorizes as an integer test.
GPTJ_HOST_DEVICE inline bool non_finite_bits(uint32_t bits) { return (bits & 0x7f800000u) == 0x7f800000u; }

// Largest value gumbel_noise() can return (u <= 1 - 2^-24 gives 16.64): an upper bound used to skip
// ids that cannot win the race.
constexpr float kGumbelMax = 16.7f;

GPTJ_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform u in (0, 1) for (key, token): (2k + 1) / 2^24 for 23 hash bits k, exact in float.
GPTJ_HOST_DEVICE inline float gumbel_uniform(uint64_t key, int32_t token) {
  const uint64_t h = mix64(key ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) * 0xD1B54A32D192ED03ull));
  return static_cast<float>((h >> 41) * 2 + 1) * (1.0f / 16777216.0f);
}
// Gumbel(0,1) noise for (key, token): -log(-log(u)), range [-2.82, 16.64].
GPTJ_HOST_DEVICE inline float gumbel_from_uniform(float u) { return -logf(-logf(u)); }
GPTJ_HOST_DEVICE inline float gumbel_noise(uint64_t key, int32_t token) {
  return gumbel_from_uniform(gumbel_uniform(key, token));
}

// The race score of a token: logit / T + noise. One formula for every path.
GPTJ_HOST_DEVICE inline float race_score(float logit, float temperature, uint64_t key, int32_t token) {
  return logit / temperature + gumbel_noise(key, token);
}

// True when a ranks before b in the candidate order (value descending, then token ascending).
GPTJ_HOST_DEVICE inline bool ranks_before(const TokenScore& a, const TokenScore& b) {
  return a.value > b.value || (a.value == b.value && a.token < b.token);
}

// Gumbel-max race over processed logits v[count] of ids vocab_begin.., entering into (best_score,
// best): a higher score wins, an equal one goes to the lower id. Skips, exactly, the ids whose noise
// cannot lift them to the current best (a cheap test on u before any logarithm).
struct RaceLeader {
  float score = -INFINITY;
  TokenScore entry;  // token -1: none yet
};
GPTJ_HOST_DEVICE inline void race_enter(RaceLeader& leader, float v, float temperature, uint64_t key,
                                        int32_t token) {
  const float score = race_score(v, temperature, key, token);
  if (!(score > -INFINITY)) return;  // -inf and NaN never lead
  if (leader.entry.token < 0 || score > leader.score || (score == leader.score && token < leader.entry.token)) {
    leader.score = score;
    leader.entry = {v, token};
  }
}


// ---- Threshold search: top-k / top-p of any width without moving a row (runtime/generate/draw_search.h) ----
// Rank 0 asks every rank about one interval (lo, hi] of a draw's scaled logits s = v / T (v the processed
// logit): a histogram of counts and probability masses over buckets of it, the list of its ids in it,
// or the Gumbel race over the ids a settled cut keeps. Masses are integers, floor(exp(s - s_max) *
// 2^kMassBits) with s_max the row's largest scaled logit, so sums over shards are exact and do not
// depend on the order of addition: the full-row reference (apply_top_p) uses the same masses.
constexpr int kSearchBuckets = 256;
constexpr int kSearchListed = 192;
constexpr int kMassBits = 40;  // 50400 ids * 2^40 < 2^56: no overflow; a mass below 2^-40 counts as 0

// Order-preserving map of floats (not NaN) to unsigned keys: a < b iff float_key(a) < float_key(b).
GPTJ_HOST_DEVICE inline uint32_t float_key(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
GPTJ_HOST_DEVICE inline float key_float(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  memcpy(&f, &bits, sizeof(f));
  return f;
}

// e^x for x <= 0 from explicit fused multiply-adds only (range reduction by ln 2, degree-8 Taylor
// polynomial; relative error below 1e-9, far inside what the masses need): the same bits on every host and device, whatever the
// compiler contracts or the maths library rounds, so the CPU and CUDA masses agree exactly.
GPTJ_HOST_DEVICE inline double mass_exp(double x) {
  if (!(x > -40.0)) return 0.0;  // 2^40 e^-40 < 1e-5: no mass (also -inf and NaN)
  const double k = floor(fma(x, 1.4426950408889634, 0.5));
  double r = fma(-k, 6.93147180369123816490e-01, x);  // ln 2, high part
  r = fma(-k, 1.90821492927058770002e-10, r);          // ln 2, low part
  double p = 1.0 / 40320.0;
  p = fma(p, r, 1.0 / 5040.0);
  p = fma(p, r, 1.0 / 720.0);
  p = fma(p, r, 1.0 / 120.0);
  p = fma(p, r, 1.0 / 24.0);
  p = fma(p, r, 1.0 / 6.0);
  p = fma(p, r, 0.5);
  p = fma(p, r, 1.0);
  p = fma(p, r, 1.0);
  // times 2^k (k in [-58, 0]) from its bit pattern: exact, and no library call
  const uint64_t bits = static_cast<uint64_t>(1023 + static_cast<int64_t>(k)) << 52;
  double two_k;
  memcpy(&two_k, &bits, sizeof(two_k));
  return p * two_k;
}

// The integer probability mass of scaled logit s in a row whose largest scaled logit is s_max.
GPTJ_HOST_DEVICE inline uint64_t token_mass(float s, float s_max) {
  const double e = mass_exp(static_cast<double>(s) - static_cast<double>(s_max));
  return static_cast<uint64_t>(e * static_cast<double>(uint64_t{1} << kMassBits));  // truncates: exact per id
}

enum SearchMode : int32_t { kSearchHistogram = 0, kSearchList = 1, kSearchRace = 2 };

// One question about one draw (rank 0 -> every rank; plain data, broadcast as bytes).
struct SearchQuery {
  int32_t draw = 0;        // index into the step's draws
  int32_t mode = kSearchHistogram;
  float scaled_max = 0;    // the row's largest scaled logit (the masses' reference)
  float lo = 0, hi = 0;    // the interval (lo, hi] of scaled logits asked about
  float cut = 0;           // race: ids with s > cut are kept; of those with s == cut, rank r < tie_rank
  int32_t tie_rank = 0;    // keeps all, rank tie_rank its first tie_take (in id order), later ranks none
  int32_t tie_take = 0;
  float bucket_scale = 0;  // histogram: (hi - s) * bucket_scale guesses s's bucket (the edges decide)
  int32_t want_mass = 1;   // histogram: 0 when only counts matter (top-k's threshold): masses stay 0
  int32_t pad_ = 0;
  float edges[kSearchBuckets + 1] = {};  // histogram: hi = edges[0] >= ... >= edges[B] = lo; bucket b = (edges[b+1], edges[b]]
};

struct ListedToken {
  float value;   // processed logit v (before temperature)
  int32_t token;
  float score;   // its race score (race_score)
  int32_t pad_;
};

// One rank's answer (rank -> rank 0; gathered as raw words).
struct SearchReply {
  float min_scaled;    // lowest s of this shard in (lo, hi] (+inf: none)
  float best_score;    // list: race winner over this shard's ids with s > hi; race: over the kept ids
  TokenScore best;     // its processed logit and id (-1: none)
  int32_t listed;      // list: entries of `list`
  float max_scaled;    // highest s of this shard in (lo, hi] (-inf: none)
  union {
    struct {
      uint64_t mass[kSearchBuckets];
      uint32_t count[kSearchBuckets];
    } hist;
    ListedToken list[kSearchListed];
  };
};
static_assert(sizeof(SearchReply) % sizeof(float) == 0, "gathered as float words");

}  // namespace gptj
