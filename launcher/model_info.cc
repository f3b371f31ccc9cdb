#include "launcher/model_info.h"

#include <fmt/format.h>

#include <ctime>
#include <filesystem>

namespace gptj {

ModelInfo model_info_for(ModelSession& session, const SchedulerOptions& options, const Tokenizer* tokenizer,
                         const std::string& served_name) {
  const std::string& dir = session.options().model_dir;
  ModelInfo info;
  info.name = !served_name.empty() ? served_name : std::filesystem::path(dir).lexically_normal().filename().string();
  if (info.name.empty()) info.name = std::filesystem::path(dir).parent_path().filename().string();
  info.n_positions = options.n_positions;
  info.allowed_vocab = options.allowed_vocab;
  info.vocab_size = session.config().vocab_size;
  info.eos_id = options.eos_id;
  info.kv_capacity_tokens = options.kv.num_blocks * options.kv.block_size;
  info.max_batch = options.max_batch;
  info.tokenizer = tokenizer;
  info.created = static_cast<int64_t>(std::time(nullptr));
  // What decides the numbers: the backend, its compute dtype and the tensor-parallel width (of one
  // replica: each runs the whole model).
  info.fingerprint =
      fmt::format("fp_{}_{}_tp{}", session.backend().name(), session.options().dtype, session.replicas().tp);
  return info;
}

}  // namespace gptj
