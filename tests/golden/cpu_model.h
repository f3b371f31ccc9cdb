// A fixture model on the CPU backend, TP = 1, in process: config, checkpoint, backend and the
// control channel, plus scheduler options that match its KV cache. Shared by the in-process tests.
#pragma once
#include <memory>
#include <string>
#include <vector>

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
  // `weights`: as stored (default) or quantized at load (--weights); compute_dtype: --dtype.
  explicit CpuModel(const std::string& name, int num_blocks = 256, WeightOptions weights = {},
                    const std::string& compute_dtype = "float32")
      : model(name), dir(model_dir(name)), config(load_config(dir + "/config.json")), checkpoint(dir) {
    BackendOptions options;
    options.compute_dtype = compute_dtype;
    options.weights = weights;
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

  // Logits of `tokens` fed as steps of the given sizes (one sequence, blocks 0..), every position:
  // [tokens.size(), vocab].
  std::vector<float> logits(const std::vector<int32_t>& tokens, std::vector<int> step_sizes) {
    std::vector<int32_t> table;
    for (int b = 0; b * 16 < static_cast<int>(tokens.size()); ++b) table.push_back(b);
    std::vector<float> rows;
    int at = 0;
    for (int n : step_sizes) {
      StepBatch batch;
      batch.seqs.push_back({std::vector<int32_t>(tokens.begin() + at, tokens.begin() + at + n), at, table, true});
      const auto& out = runner->step(batch);
      rows.insert(rows.end(), out.begin(), out.begin() + static_cast<long>(n) * config.vocab_size);
      at += n;
    }
    return rows;
  }

  std::string model, dir;
  GptjConfig config;
  Checkpoint checkpoint;
  SingleCommunicator comm;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelRunner> runner;
};

}  // namespace gptj::testing
