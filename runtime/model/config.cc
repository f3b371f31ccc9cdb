#include "runtime/model/config.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <climits>
#include <cmath>
#include <fstream>
#include <sstream>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

namespace gptj {
namespace json = boost::json;

namespace {

int read_int(const json::object& obj, const char* field, const std::string& origin) {
  auto* value = obj.if_contains(field);
  GPTJ_CHECK(value != nullptr, "{}: missing field '{}'", origin, field);
  GPTJ_CHECK(value->is_int64() || value->is_uint64(), "{}: field '{}' must be an integer", origin,
             field);
  const bool fits = value->is_int64() ? (value->as_int64() >= INT32_MIN && value->as_int64() <= INT32_MAX)
                                      : value->as_uint64() <= INT32_MAX;
  GPTJ_CHECK(fits, "{}: field '{}' = {} is out of range", origin, field, json::serialize(*value));
  return static_cast<int>(value->to_number<int64_t>());
}

// Upper limits of the size fields (see parse_config).
constexpr int kMaxVocab = 1 << 20;
constexpr int kMaxPositions = 1 << 20;
constexpr int kMaxEmbd = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxInner = 1 << 20;
constexpr int kNoToken = -1;  // bos/eos absent or null

void check_range(int value, const char* field, int max, const std::string& origin) {
  GPTJ_CHECK(value > 0 && value <= max, "{}: field '{}' = {} is out of range (1..{})", origin, field,
             value, max);
}

}  // namespace

GptjConfig parse_config(const std::string& json_text, const std::string& origin) {
  json::value root;
  try {
    root = json::parse(json_text);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON ({})", origin, e.what());
  }
  GPTJ_CHECK(root.is_object(), "{}: expected a JSON object", origin);
  const auto& obj = root.as_object();

  auto* model_type = obj.if_contains("model_type");
  GPTJ_CHECK(model_type != nullptr, "{}: missing field 'model_type'", origin);
  GPTJ_CHECK(model_type->is_string() && model_type->as_string() == "gptj",
             "{}: field 'model_type' is {} but only \"gptj\" is supported", origin,
             json::serialize(*model_type));

  GptjConfig c;
  c.vocab_size = read_int(obj, "vocab_size", origin);
  c.n_positions = read_int(obj, "n_positions", origin);
  c.n_embd = read_int(obj, "n_embd", origin);
  c.n_layer = read_int(obj, "n_layer", origin);
  c.n_head = read_int(obj, "n_head", origin);
  // HF: rotary_dim null means rotary over the whole head.
  const json::value* rotary = obj.if_contains("rotary_dim");
  c.rotary_dim = (rotary && rotary->is_null()) ? c.n_embd / std::max(1, c.n_head) : read_int(obj, "rotary_dim", origin);
  auto* n_inner = obj.if_contains("n_inner");
  c.n_inner = (n_inner == nullptr || n_inner->is_null())
                  ? static_cast<int>(std::min<int64_t>(4 * int64_t{c.n_embd}, INT32_MAX))  // n_embd is checked below
                  : read_int(obj, "n_inner", origin);
  if (auto* eps = obj.if_contains("layer_norm_epsilon")) {
    GPTJ_CHECK(eps->is_number(), "{}: field 'layer_norm_epsilon' must be a number", origin);
    const double value = eps->to_number<double>();
    GPTJ_CHECK(std::isfinite(value) && value > 0 && value <= 1,
               "{}: field 'layer_norm_epsilon' = {} must be a finite number in (0, 1]", origin, value);
    c.layer_norm_epsilon = static_cast<float>(value);
  }
  if (obj.contains("bos_token_id") && !obj.at("bos_token_id").is_null())
    c.bos_token_id = read_int(obj, "bos_token_id", origin);
  if (obj.contains("eos_token_id") && !obj.at("eos_token_id").is_null())
    c.eos_token_id = read_int(obj, "eos_token_id", origin);
  c.activation_function = "gelu_new";
  if (auto* act = obj.if_contains("activation_function")) {
    GPTJ_CHECK(act->is_string(), "{}: field 'activation_function' must be a string", origin);
    c.activation_function = std::string(act->as_string());
  }
  if (auto* dtype = obj.if_contains("torch_dtype"); dtype && dtype->is_string())
    c.torch_dtype = std::string(dtype->as_string());

  // Bounds, each naming the field and its value: positive and below sane upper limits (GPT-J-6B
  // is 50400 / 2048 / 4096 / 28 / 16 / 16384; the limits leave room for any real GPT-J-shaped
  // model, while a corrupt value fails here, before anything is sized from it).
  check_range(c.vocab_size, "vocab_size", kMaxVocab, origin);
  check_range(c.n_positions, "n_positions", kMaxPositions, origin);
  check_range(c.n_embd, "n_embd", kMaxEmbd, origin);
  check_range(c.n_layer, "n_layer", kMaxLayers, origin);
  check_range(c.n_head, "n_head", kMaxEmbd, origin);
  check_range(c.n_inner, "n_inner", kMaxInner, origin);
  GPTJ_CHECK(c.n_embd % c.n_head == 0, "{}: field 'n_embd' ({}) is not divisible by 'n_head' ({})",
             origin, c.n_embd, c.n_head);
  GPTJ_CHECK(c.rotary_dim > 0 && c.rotary_dim <= c.head_dim() && c.rotary_dim % 2 == 0,
             "{}: field 'rotary_dim' ({}) must be even and within 1..head_dim ({})", origin,
             c.rotary_dim, c.head_dim());
  GPTJ_CHECK(std::isfinite(c.layer_norm_epsilon) && c.layer_norm_epsilon > 0 && c.layer_norm_epsilon <= 1,
             "{}: field 'layer_norm_epsilon' = {} must be a finite number in (0, 1] (as a float32)",
             origin, c.layer_norm_epsilon);
  GPTJ_CHECK(c.activation_function == "gelu_new",
             "{}: field 'activation_function' is '{}' but GPT-J uses 'gelu_new'", origin,
             c.activation_function);
  for (const auto& [field, id] : {std::pair{"bos_token_id", c.bos_token_id}, std::pair{"eos_token_id", c.eos_token_id}})
    GPTJ_CHECK(id == kNoToken || (id >= 0 && id < c.vocab_size),
               "{}: field '{}' = {} is outside the vocabulary (0..{}; null or absent for none)", origin,
               field, id, c.vocab_size - 1);
  return c;
}

GptjConfig load_config(const std::string& path) {
  std::ifstream in(path);
  GPTJ_CHECK(in.good(), "cannot open {}", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

std::map<std::string, std::vector<int64_t>> gptj_tensor_shapes(const GptjConfig& c) {
  const int64_t E = c.n_embd, I = c.n_inner, V = c.vocab_size;
  std::map<std::string, std::vector<int64_t>> shapes{{"transformer.wte.weight", {V, E}},
                                                     {"transformer.ln_f.weight", {E}},
                                                     {"transformer.ln_f.bias", {E}},
                                                     {"lm_head.weight", {V, E}},
                                                     {"lm_head.bias", {V}}};
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    shapes[p + "ln_1.weight"] = {E};
    shapes[p + "ln_1.bias"] = {E};
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"})
      shapes[p + "attn." + proj + ".weight"] = {E, E};
    shapes[p + "mlp.fc_in.weight"] = {I, E};
    shapes[p + "mlp.fc_in.bias"] = {I};
    shapes[p + "mlp.fc_out.weight"] = {E, I};
    shapes[p + "mlp.fc_out.bias"] = {E};
  }
  return shapes;
}

void check_checkpoint_matches(const GptjConfig& c, const Checkpoint& checkpoint, const std::string& origin) {
  // Layers the checkpoint holds: one past the highest N of a "transformer.h.N." tensor.
  const std::string prefix = "transformer.h.";
  int64_t layers = 0;
  for (const auto& [name, info] : checkpoint.tensors()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    int64_t index = 0;
    const auto [end, err] = std::from_chars(first, last, index);
    if (end == first || end == last || *end != '.') continue;  // not a layer tensor
    layers = std::max(layers, err == std::errc() ? index + 1 : INT64_MAX);
  }
  GPTJ_CHECK(layers == c.n_layer,
             "{}: field 'n_layer' = {} but the checkpoint in {} holds {} layers (tensors transformer.h.N.*)",
             origin, c.n_layer, checkpoint.dir(), layers);
  for (const auto& [name, shape] : gptj_tensor_shapes(c)) {
    auto it = checkpoint.tensors().find(name);
    GPTJ_CHECK(it != checkpoint.tensors().end(), "{}: the checkpoint in {} has no tensor '{}', which this config needs",
               origin, checkpoint.dir(), name);
    const TensorInfo& info = *it->second;
    GPTJ_CHECK(info.shape == shape,
               "{}: tensor '{}' in {} has shape {} but fields vocab_size {}, n_embd {}, n_inner {} need {}",
               origin, name, info.file, shape_text(info.shape), c.vocab_size, c.n_embd, c.n_inner,
               shape_text(shape));
  }
}

std::string config_to_json(const GptjConfig& c) {
  json::object obj;
  obj["model_type"] = "gptj";
  obj["architectures"] = json::array{"GPTJForCausalLM"};
  obj["vocab_size"] = c.vocab_size;
  obj["n_positions"] = c.n_positions;
  obj["n_embd"] = c.n_embd;
  obj["n_layer"] = c.n_layer;
  obj["n_head"] = c.n_head;
  obj["rotary_dim"] = c.rotary_dim;
  obj["n_inner"] = c.n_inner;
  obj["layer_norm_epsilon"] = c.layer_norm_epsilon;
  // No token (-1) is written as null, as Hugging Face writes it.
  obj["bos_token_id"] = c.bos_token_id >= 0 ? json::value(c.bos_token_id) : json::value(nullptr);
  obj["eos_token_id"] = c.eos_token_id >= 0 ? json::value(c.eos_token_id) : json::value(nullptr);
  obj["activation_function"] = c.activation_function;
  obj["tie_word_embeddings"] = false;
  if (!c.torch_dtype.empty()) obj["torch_dtype"] = c.torch_dtype;
  return json::serialize(obj);
}

}  // namespace gptj
