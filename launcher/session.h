// What every model-running subcommand shares, on every rank: the world, the model directory's
// config and checkpoint, this rank's backend and the control channel. Rank 0 runs the command's
// body; ranks > 0 serve steps until rank 0 shuts them down.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "parallel/world.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/model_runner.h"
#include "runtime/generate/scheduler.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"

namespace gptj {

struct ModelOptions {
  std::string model_dir;
  // When set (bench --random-weights): the shape comes from this config.json and the weights are
  // random (made on the GPU by the cuda backend; written once to a cache dir for the cpu backend).
  std::string random_config;
  uint64_t random_seed = 0;
  std::string backend = "auto";  // cpu | cuda | auto
  std::string dtype = "auto";    // float32 | float16 | bfloat16 | auto (cpu: float32, cuda: float16)
  // --weights: auto (as the checkpoint stores them) | int8 | int4 | fp8 (quantized at load, each rank
  // its own slices: runtime/core/quant.h); --quantize-lm-head quantizes lm_head too.
  std::string weights = "auto";
  bool quantize_lm_head = false;
  bool int8_activations = false;  // --int8-activations (with --weights int8, CPU): W8A8 products
  int kv_blocks = 0;             // 0: kv_need's blocks when set, else as many as kv_memory_gb holds (at most 8192)
  double kv_memory_gb = 0;       // KV cache per rank; 0: kv_need when set, else 1 GiB on cpu, 24 GiB on cuda
  // What a one-shot command (generate, logits) will hold in the KV cache at most: `sequences` of up to
  // `positions` each (capped at n_positions). When set and neither --kv-blocks nor --kv-memory-gb
  // is given, the pool is that many blocks, not a budget's worth. Unset (batch, serve): the budget.
  struct KvNeed {
    int sequences = 0;
    int positions = 0;
  } kv_need;
  int block_size = 16;
  // A step slower than this base plus an allowance for its tokens (parallel/watchdog.h) ends the
  // job: a peer is stopped or hung; so does rank 0's silence between steps for this base + 8 s
  // (it sends keepalives: model_runner.h). 0: both off. Every rank must have the same value.
  double step_timeout_s = 15;
  // Ranks per data-parallel replica (each a tensor-parallel group); 0: one replica of every rank.
  int tp = 0;
};

class ModelSession {
 public:
  // Reads the config (checks TP divides n_head on every rank before any weight is read), then the
  // checkpoint and this rank's shard. `command` names the subcommand for the argument check.
  ModelSession(World& world, const ModelOptions& options, const std::string& command);
  ~ModelSession();

  // Rank 0 sends the workers its first keepalive (it has loaded), runs `body` (its return value is
  // the exit code; where it waits or works between steps it calls runner().keepalive_if_due()),
  // then shuts the workers down; ranks > 0 run the worker loop. Every rank returns rank 0's exit code.
  int run(const std::function<int()>& body);
  // The same for commands that run requests (batch, serve), over every replica: world
  // rank 0 runs `body` with an Engine over all of them (its own Scheduler when there is one
  // replica, else a DataParallelEngine, launcher/replicas.h), the other replica leaders serve it
  // (run_replica_leader), the remaining ranks serve their leader's steps. Every rank builds the
  // same `options` (and its tokenizer, for stop strings).
  int run_engine(const SchedulerOptions& options, const Tokenizer* tokenizer,
                 const std::function<int(Engine& engine)>& body);
  const ReplicaLayout& replicas() const { return world_.replicas(); }

  World& world() { return world_; }
  const GptjConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  Backend& backend() { return *backend_; }
  // "weights int8 (lm_head float16), 6.8 MB per rank": for the batch and serve summaries.
  std::string weights_summary() const;
  ModelRunner& runner() { return *runner_; }
  int kv_blocks() const { return kv_blocks_; }

 private:
  World& world_;
  ModelOptions options_;
  GptjConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<StepWatchdog> watchdog_;
  std::unique_ptr<ModelRunner> runner_;
  int kv_blocks_ = 0;
  double load_seconds_ = 0;
};

// Writes a random model directory (launcher/cmd_tools.cc).
void make_random_model(const GptjConfig& config, const std::string& out_dir, uint64_t seed, DType dtype);

// The watchdog's assumed seconds per token before any step is measured (deliberately slow).
double prior_seconds_per_token(const GptjConfig& config, int ranks, const std::string& backend);

// OpenMP/OpenBLAS threads of this rank: OMP_NUM_THREADS when set; else the cores the rank is bound
// to (mpirun --bind-to, srun --cpus-per-task, taskset) when that is fewer than the host's; else the
// host's cores divided among its ranks.
int compute_threads_per_rank(const World& world);
// Applies compute_threads_per_rank().
void configure_threads(const World& world);

}  // namespace gptj
