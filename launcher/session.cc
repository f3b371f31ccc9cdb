#include "launcher/session.h"

#include <sched.h>

#include <cstdlib>

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "kernels/cpu/cpu_isa.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "launcher/replicas.h"
#ifdef GPTJ_WITH_CUDA
#include "runtime/backend/cuda_backend.h"
#endif

namespace gptj {

double prior_seconds_per_token(const GptjConfig& config, int ranks, const std::string& backend) {
  // The multiply-adds of one token through this rank's shard, at a rate far below any real device
  // (2 GFLOP/s for a CPU rank, 200 for a GPU): only the first steps use it, before any is measured.
  const double E = config.n_embd, I = config.n_inner, V = config.vocab_size;
  const double flops = 2.0 * (config.n_layer * (4 * E * E + 2 * E * I) + V * E) / std::max(ranks, 1);
  return flops / (backend == "cuda" ? 2e11 : 2e9);
}

int compute_threads_per_rank(const World& world) {
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) return std::atoi(env);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  CPU_ZERO(&set);
  const int allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : cores;
  // A rank bound to some cores (mpirun --bind-to, srun --cpus-per-task, taskset) uses those; an
  // unbound one shares the node's cores with the other ranks on it.
  if (allowed > 0 && allowed < cores) return allowed;
  return std::max(1, cores / std::max(1, world.local_size()));
}

void configure_threads(const World& world) {
  const int threads = compute_threads_per_rank(world);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

namespace {

std::string resolve_backend(const std::string& requested) {
  if (requested == "cpu") return "cpu";
#ifdef GPTJ_WITH_CUDA
  std::string why;
  const bool gpu = cuda_device_available(&why);
  if (requested == "cuda") {
    GPTJ_CHECK(gpu, "--backend cuda: {}", why);
    return "cuda";
  }
  GPTJ_CHECK(requested == "auto", "unknown --backend '{}' (cpu, cuda or auto)", requested);
  return gpu ? "cuda" : "cpu";
#else
  GPTJ_CHECK(requested != "cuda", "--backend cuda: this gptj was built without CUDA (GPTJ_CUDA=OFF or no nvcc)");
  GPTJ_CHECK(requested == "auto", "unknown --backend '{}' (cpu, cuda or auto)", requested);
  return "cpu";
#endif
}

// The other ranks of this rank's replica (its steps' collectives), for the step watchdog's message:
// "the other rank of this step (rank 2 on vm)", "one of the other ranks of this step (rank 1 on a,
// rank 2 on b, ...)" (at most 8 named), or "another rank" when the replica is this rank alone.
std::string describe_step_peers(const World& world) {
  const ReplicaLayout& layout = world.replicas();
  std::string names;
  int named = 0;
  for (int r = layout.leader_rank(layout.index); r < layout.leader_rank(layout.index) + layout.tp; ++r) {
    if (r == world.rank()) continue;
    if (named++ == 8) {
      names += ", ...";
      break;
    }
    names += fmt::format("{}rank {} on {}", names.empty() ? "" : ", ", r, world.hosts()[r]);
  }
  if (layout.tp <= 1) return "another rank";
  return fmt::format("{} of this step ({})", layout.tp == 2 ? "the other rank" : "one of the other ranks", names);
}

}  // namespace

ModelSession::ModelSession(World& world, const ModelOptions& options, const std::string& command)
    : world_(world), options_(options) {
  const auto started = std::chrono::steady_clock::now();
  options_.backend = resolve_backend(options.backend);
  if (options_.dtype == "auto") options_.dtype = options_.backend == "cuda" ? "float16" : "float32";
  options_.dtype = std::string(dtype_name(parse_dtype(options_.dtype)));
  const std::string source = options.random_config.empty()
                                 ? std::filesystem::absolute(options.model_dir).string()
                                 : "random:" + options.random_config;
  // --step-timeout too: ranks that disagree on it would disagree on keepalives (model_runner.h).
  // The KV need too: every rank must size the same pool (rank 0's block ids are used on all).
  world.check_same_arguments(fmt::format("{} --model {} --backend {} --dtype {} --kv-blocks {} --step-timeout {} --tp {} "
                                         "(KV for {} x {} positions)",
                                         command, source, options_.backend, options_.dtype, options.kv_blocks,
                                         options.step_timeout_s, options.tp, options.kv_need.sequences,
                                         options.kv_need.positions));
  world.split_replicas(options.tp);
  const int tp = world.replicas().tp;
  GPTJ_CHECK(world.replicas().count == 1 || command == "batch" || command == "serve",
             "gptj {} runs one tensor-parallel group: --tp {} would make {} replicas (data-parallel replicas are for "
             "gptj batch and gptj serve); leave --tp out or set it to {}",
             command, tp, world.replicas().count, world.size());
  Communicator& comm = world.replica_communicator();
  const bool random = !options.random_config.empty();
  GPTJ_CHECK(random || std::filesystem::exists(std::filesystem::path(options.model_dir) / "config.json"),
             "--model {}: no config.json there (expected a Hugging Face GPT-J checkpoint directory)",
             options.model_dir);
  const std::string layout = world.describe_layout();
  cpu::active_cpu_isa();  // every rank: a bad GPTJ_CPU_ISA fails here, on each, before any work
  if (world.rank() == 0)
    spdlog::info("{}; backend {}{}", layout, options_.backend,
                 options_.backend == "cuda" ? " (each rank uses the GPU numbered by its local rank)"
                                            : fmt::format(" (CPU kernels {}, {} threads per rank)",
                                                          cpu::describe_cpu_isa(), omp_get_max_threads()));
  config_ = load_config(random ? options.random_config
                               : (std::filesystem::path(options.model_dir) / "config.json").string());
  GPTJ_CHECK(config_.n_head % tp == 0,
             "{} ranks cannot split the model's {} attention heads: the tensor-parallel size (--tp, default: "
             "every rank) must divide n_head",
             tp, config_.n_head);

  BackendOptions backend_options;
  backend_options.tp = {world.replicas().tp_rank, tp};
  backend_options.compute_dtype = options_.dtype;
  backend_options.weights.format = parse_weight_format(options.weights);
  backend_options.weights.quantize_lm_head = options.quantize_lm_head;
  GPTJ_CHECK(!options.quantize_lm_head || backend_options.weights.format != WeightFormat::kStored,
             "--quantize-lm-head needs --weights int8 or int4");
  backend_options.weights.int8_activations = options.int8_activations;
  GPTJ_CHECK(!options.int8_activations || (backend_options.weights.format == WeightFormat::kInt8 && options_.backend == "cpu"),
             "--int8-activations needs --weights int8 on the cpu backend");
  backend_options.kv.block_size = options.block_size;
  // The pool: --kv-blocks; else what a one-shot command said it needs (each sequence's positions,
  // at most n_positions, in whole blocks), unless --kv-memory-gb is given; else the memory budget.
  std::string kv_source;
  const ModelOptions::KvNeed& need = options.kv_need;
  GPTJ_CHECK(options.block_size > 0, "--block-size {} must be at least 1", options.block_size);
  if (options.kv_blocks > 0) {
    kv_blocks_ = options.kv_blocks;
    kv_source = "--kv-blocks";
  } else if (need.sequences > 0 && options.kv_memory_gb <= 0) {
    const int positions = std::clamp(need.positions, 1, config_.n_positions);
    kv_blocks_ = need.sequences * ((positions + options.block_size - 1) / options.block_size);
    kv_source = fmt::format("what the run needs: {} x {} positions", need.sequences, positions);
  } else {
    const double budget_gb = options.kv_memory_gb > 0 ? options.kv_memory_gb
                                                      : (options_.backend == "cuda" ? 24.0 : 1.0);
    const double bytes_per_block = 2.0 * options.block_size * (config_.n_embd / tp) *
                                   config_.n_layer *
                                   (options_.dtype == "float32" || options_.backend == "cpu" ? 4 : 2);  // CPU cache: float32
    kv_blocks_ = static_cast<int>(std::clamp(budget_gb * (1 << 30) / bytes_per_block, 16.0, 8192.0));
    kv_source = fmt::format("{:g} GiB", budget_gb);
  }
  backend_options.kv.num_blocks = kv_blocks_;

  if (random && options_.backend == "cpu") {
    // The cpu backend reads a checkpoint: write the random one once (rank 0), reuse it after.
    options_.model_dir = fmt::format("/tmp/gptj-random-{}-{}", std::hash<std::string>{}(config_to_json(config_)),
                                     options.random_seed);
    if (world.rank() == 0 && !std::filesystem::exists(options_.model_dir + "/model.safetensors"))
      make_random_model(config_, options_.model_dir, options.random_seed, DType::kF32);
    int ready = 1;
    world.communicator().broadcast(&ready, sizeof(ready));  // the others wait for the file
  }
  if (!(random && options_.backend == "cuda")) {
    checkpoint_ = std::make_unique<Checkpoint>(options_.model_dir);
    // Before the backend allocates anything from the config's sizes.
    check_checkpoint_matches(config_, *checkpoint_, (std::filesystem::path(options_.model_dir) / "config.json").string());
  }
  if (options_.backend == "cpu") {
    backend_ = make_cpu_backend(config_, *checkpoint_, backend_options, comm);
  } else {
#ifdef GPTJ_WITH_CUDA
    backend_ = make_cuda_backend(config_, checkpoint_.get(), options.random_seed, backend_options, comm,
                                 world.local_rank());
#endif
  }
  if (checkpoint_) checkpoint_->release_pages();  // the shard is copied; only wte rows are read later
  runner_ = std::make_unique<ModelRunner>(*backend_, comm, config_.vocab_size);
  load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // Several ranks: a watchdog times this rank's steps and waits (also at TP 1 when there are several
  // replicas: its allowance tells the other side of the replica link how long a step may take).
  if (world.size() > 1 && options.step_timeout_s > 0) {
    const std::string who = world.replicas().count > 1
                                ? fmt::format("rank {} (replica {}) on {}", world.rank(), world.replicas().index, world.host())
                                : fmt::format("rank {} on {}", world.rank(), world.host());
    watchdog_ = std::make_unique<StepWatchdog>(options.step_timeout_s, who,
                                               prior_seconds_per_token(config_, tp, backend_->name()));
    watchdog_->set_health_probe([backend = backend_.get()] { return backend->async_error(); });
    watchdog_->set_step_peers(describe_step_peers(world));
    if (world.replicas().index > 0)
      watchdog_->set_leader_name(fmt::format("rank {} (the leader of replica {})",
                                             world.replicas().leader_rank(world.replicas().index),
                                             world.replicas().index));
    runner_->set_watchdog(watchdog_.get(),
                          watchdog_->startup_wait_limit(load_seconds_, static_cast<double>(backend_->weight_bytes())));
  }
  const std::string ready = fmt::format("{} backend ready: {:.1f} MB of {} weights per rank, {} KV blocks of {} ({})",
                                        backend_->name(), backend_->weight_bytes() / 1e6, backend_->weight_format(),
                                        kv_blocks_, options.block_size, kv_source);
  // Quantized runs say so at info level (rank 0): what was asked for is what is measured.
  if (world.rank() == 0 && backend_options.weights.format != WeightFormat::kStored)
    spdlog::info("{}", ready);
  else
    spdlog::debug("{}", ready);
}

ModelSession::~ModelSession() = default;

std::string ModelSession::weights_summary() const {
  return fmt::format("weights {}, {:.1f} MB per rank", backend_->weight_format(), backend_->weight_bytes() / 1e6);
}

int ModelSession::run(const std::function<int()>& body) {
  if (world_.replicas().tp_rank != 0) return runner_->run_worker_loop();
  runner_->keepalive_if_due();  // the first word: rank 0 has loaded (the workers' start-up wait ends)
  const int code = body();
  runner_->shutdown(code);
  return code;
}

}  // namespace gptj

namespace gptj {

int ModelSession::run_engine(const SchedulerOptions& options, const Tokenizer* tokenizer,
                             const std::function<int(Engine& engine)>& body) {
  const ReplicaLayout& layout = world_.replicas();
  if (!layout.leader()) return runner_->run_worker_loop();
  Scheduler scheduler(*runner_, options, tokenizer);
  if (layout.count == 1) return run([&] { return body(scheduler); });
  ReplicaTimeouts timeouts;
  timeouts.watchdog = watchdog_.get();
  timeouts.max_step_tokens = options.max_step_tokens;
  if (watchdog_) {
    // A live peer sends at least every keepalive interval between steps, and a step of its lasts at
    // most base + its announced allowance (which the receiver adds): 2 s of slack on top.
    timeouts.silence_s = watchdog_->rank0_silence_limit() - StepWatchdog::kKeepaliveIntervalS + 2;
    timeouts.startup_s = watchdog_->startup_wait_limit(load_seconds_, static_cast<double>(backend_->weight_bytes()));
  }
  runner_->keepalive_if_due();  // the first word to this replica's workers: its leader has loaded
  int code = 0;
  if (world_.rank() == 0) {
    DataParallelEngine engine(scheduler, world_, timeouts);
    engine.wait_until_ready();
    spdlog::debug("all {} replicas are ready", layout.count);
    code = body(engine);
    engine.stop(code);
  } else {
    code = run_replica_leader(scheduler, world_, timeouts);
  }
  runner_->shutdown(code);
  return code;
}

}  // namespace gptj
