// GPT-J hyper-parameters read from a Hugging Face config.json. Every field is validated on load; a
// missing or wrong field is one error naming the file and the field.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gptj {

struct GptjConfig {
  int vocab_size = 0;       // rows of wte and lm_head (50400 for GPT-J-6B)
  int n_positions = 0;      // longest sequence
  int n_embd = 0;           // d_model
  int n_layer = 0;
  int n_head = 0;
  int rotary_dim = 0;       // rotary applies to the first rotary_dim dims of each head
  int n_inner = 0;          // MLP width; config's null means 4 * n_embd
  float layer_norm_epsilon = 1e-5f;
  int bos_token_id = -1;
  int eos_token_id = -1;
  std::string activation_function;  // must be gelu_new
  std::string torch_dtype;          // informational only: per-tensor dtypes come from the file

  int head_dim() const { return n_embd / n_head; }
};

// Reads and validates `path` (a config.json).
GptjConfig load_config(const std::string& path);
// Parses config JSON text; `origin` names the source in error messages.
GptjConfig parse_config(const std::string& json_text, const std::string& origin);
// Every tensor of a Hugging Face GPT-J checkpoint of this shape: name -> full shape
// (nn.Linear layout [out, in]; docs/DESIGN.md §3).
std::map<std::string, std::vector<int64_t>> gptj_tensor_shapes(const GptjConfig& config);

class Checkpoint;
// Checks the checkpoint against the config before anything is sized from it: every tensor of
// gptj_tensor_shapes(config) present with that shape, and exactly n_layer layers
// (transformer.h.0 .. n_layer-1). Errors name `origin` (the config file), the field and the tensor.
void check_checkpoint_matches(const GptjConfig& config, const Checkpoint& checkpoint, const std::string& origin);

// Serializes (for make-random); round-trips through parse_config.
std::string config_to_json(const GptjConfig& config);

}  // namespace gptj
