// Backend: one rank's shard of GPT-J on some device (CPU or CUDA), with its own weights and its
// slice of the paged KV cache. Every rank of the TP group calls forward() with the same StepBatch;
// the backend runs its shard and does the one all-reduce per layer through its communicator.
// A backend may point into the Checkpoint's mapping (the CPU one reads wte rows from it): the
// Checkpoint must outlive the backend.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/sharding.h"
#include "runtime/backend/model_shard.h"
#include "runtime/backend/step.h"
#include "runtime/model/config.h"

namespace gptj {

class Checkpoint;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Runs the step. This rank's vocab shard of the logits, [batch.logit_rows(), vocab_shard_rows()]
  // (ids tp.rank * vocab_shard_rows() ..; padded vocab rows hold bias 0), stays inside the backend
  // (device memory on a GPU) until the next forward().
  virtual void forward(const StepBatch& batch) = 0;
  // Copies the raw float32 logits of the step's rows `rows` into host memory
  // out [rows.size(), vocab_shard_rows()] row-major.
  virtual void read_logit_rows(const std::vector<int32_t>& rows, float* out) = 0;
  // Reduces each draw over this rank's vocab shard (runtime/backend/draw.h): out[d] for draws[d].
  virtual void summarize_draws(const std::vector<DrawPlan>& draws, DrawSummary* out) = 0;
  // Answers threshold-search queries about the same step's draws (kernels/sampling_math.h,
  // runtime/generate/draw_search.h): out[i] for queries[i], about draws[queries[i].draw], from this
  // rank's shard (answer_search_query() is the CPU reference).
  virtual void answer_search(const std::vector<DrawPlan>& draws, const std::vector<SearchQuery>& queries,
                             SearchReply* out) = 0;
  virtual int64_t vocab_shard_rows() const = 0;
  // Bytes of weights this rank holds (for the memory report).
  virtual int64_t weight_bytes() const = 0;
  // The format its weight matrices are held in: "float16", "int8 (lm_head float32)", ...
  virtual std::string weight_format() const = 0;
  // How many times the partial sums were reduced across TP ranks (one per layer per step by design;
  // counted at TP 1 too, where the reduction is the identity). Printed by the bench.
  virtual uint64_t all_reduce_calls() const = 0;
  // Any thread (the step watchdog polls it): "" while healthy; otherwise a one-line description of
  // an asynchronous failure of this rank's device collectives (NCCL), which would otherwise leave
  // the step waiting forever.
  virtual std::string async_error() { return {}; }
};

struct BackendOptions {
  TpPosition tp;
  KvCacheOptions kv;
  std::string compute_dtype = "float32";  // the CPU backend: float32, or bfloat16 (opt-in: WeightOptions::bf16_products)
  WeightOptions weights;                   // --weights: as stored, or quantized at load
};

// CPU backend: OpenBLAS GEMMs + kernels/cpu; `comm` joins the TP ranks (host memory).
std::unique_ptr<Backend> make_cpu_backend(const GptjConfig& config, const Checkpoint& checkpoint,
                                          const BackendOptions& options, Communicator& comm);

}  // namespace gptj
