// A fixture model on the CPU backend, TP = 1, in process: config, checkpoint, backend and the
// control channel, plus scheduler options that match its KV cache. Shared by the in-process tests.
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/generate/model_runner.h"
#include "runtime/generate/scheduler.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "tests/golden/golden_data.h"

namespace gptj::testing {

struct CpuModel {
  // `name`: a folder of tests/data (tiny-gptj-a, tiny-gptj-b); the backend has `num_blocks` KV blocks.
  explicit CpuModel(const std::string& name, int num_blocks = 256)
      : model(name), dir(model_dir(name)), config(load_config(dir + "/config.json")), checkpoint(dir) {
    BackendOptions options;
    options.kv.num_blocks = num_blocks;
    options.kv.block_size = 16;
    backend = make_cpu_backend(config, checkpoint, options, comm);
    runner = std::make_unique<ModelRunner>(*backend, comm, config.vocab_size);
  }
  // Scheduler options for a cache of `num_blocks` (at most the backend's) blocks of 16.
  SchedulerOptions scheduler_options(int num_blocks = 256) const {
    SchedulerOptions o;
    o.kv.num_blocks = num_blocks;
    o.kv.block_size = 16;
    o.n_positions = config.n_positions;
    o.eos_id = config.eos_token_id;
    return o;
  }

  std::string model, dir;
  GptjConfig config;
  Checkpoint checkpoint;
  SingleCommunicator comm;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelRunner> runner;
};

}  // namespace gptj::testing
