// Unit tests for runtime/model/config.h: parsing the fixture config.json, every validation error
// (each naming the file, the field and the value: types, ranges, upper limits, token ids), config_to_json
// round-tripping through parse_config, and check_checkpoint_matches against the fixture checkpoint.
#include "runtime/model/config.h"

#include <gtest/gtest.h>

#include "tests/golden/expect_error.h"

#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

#ifndef GPTJ_TEST_DATA_DIR
#error "GPTJ_TEST_DATA_DIR must be defined by the build (absolute path to tests/data)"
#endif

namespace gptj {
namespace {
namespace json = boost::json;

const std::string kConfigPath = std::string(GPTJ_TEST_DATA_DIR) + "/tiny-gptj-a/model/config.json";
const std::string kOrigin = "/some/dir/config.json";

std::string fixture_text() {
  std::ifstream in(kConfigPath);
  EXPECT_TRUE(in.good()) << kConfigPath;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

json::object fixture_object() { return json::parse(fixture_text()).as_object(); }

// parse_config must throw gptj::Error whose message contains every one of `needles`.
void expect_error(const std::string& text, std::initializer_list<std::string> needles) {
  SCOPED_TRACE(text);
  testing::expect_gptj_error([&] { parse_config(text, kOrigin); }, needles);
}

TEST(Config, FixtureValues) {
  const GptjConfig c = load_config(kConfigPath);
  EXPECT_EQ(c.vocab_size, 50400);
  EXPECT_EQ(c.n_positions, 2048);
  EXPECT_EQ(c.n_embd, 64);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.head_dim(), 16);
  EXPECT_EQ(c.rotary_dim, 8);
  EXPECT_EQ(c.n_inner, 256);  // null -> 4 * n_embd
  EXPECT_FLOAT_EQ(c.layer_norm_epsilon, 1e-5f);
  EXPECT_EQ(c.bos_token_id, 50256);
  EXPECT_EQ(c.eos_token_id, 50256);
  EXPECT_EQ(c.activation_function, "gelu_new");
  EXPECT_EQ(c.torch_dtype, "float32");
}

TEST(Config, ExplicitNInnerAndMissingOptionalFields) {
  auto obj = fixture_object();
  obj["n_inner"] = 100;
  obj.erase("layer_norm_epsilon");
  obj.erase("bos_token_id");
  obj.erase("eos_token_id");
  obj.erase("activation_function");
  const GptjConfig c = parse_config(json::serialize(obj), kOrigin);
  EXPECT_EQ(c.n_inner, 100);
  EXPECT_FLOAT_EQ(c.layer_norm_epsilon, 1e-5f);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_EQ(c.eos_token_id, -1);
  EXPECT_EQ(c.activation_function, "gelu_new");

  obj.erase("n_inner");  // absent like null: 4 * n_embd
  EXPECT_EQ(parse_config(json::serialize(obj), kOrigin).n_inner, 256);
}

TEST(Config, LoadConfigOfMissingFileNamesThePath) {
  try {
    load_config("/nonexistent/dir/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/config.json"), std::string::npos) << e.what();
  }
}

TEST(Config, UnknownModelType) {
  auto obj = fixture_object();
  obj["model_type"] = "gpt2";
  expect_error(json::serialize(obj), {kOrigin, "model_type", "gpt2"});
  obj.erase("model_type");
  expect_error(json::serialize(obj), {kOrigin, "model_type"});
}

TEST(Config, NEmbdNotDivisibleByNHead) {
  auto obj = fixture_object();
  obj["n_head"] = 5;
  expect_error(json::serialize(obj), {kOrigin, "n_embd", "n_head", "64", "5"});
}

TEST(Config, RotaryDimBeyondHeadDim) {
  auto obj = fixture_object();
  obj["rotary_dim"] = 18;  // head_dim is 16
  expect_error(json::serialize(obj), {kOrigin, "rotary_dim", "18"});
  obj["rotary_dim"] = 7;  // odd: rotate-every-two needs pairs
  expect_error(json::serialize(obj), {kOrigin, "rotary_dim"});
  obj["rotary_dim"] = 16;  // exactly head_dim is fine
  EXPECT_EQ(parse_config(json::serialize(obj), kOrigin).rotary_dim, 16);
}

TEST(Config, EveryRequiredFieldMissing) {
  for (const char* field : {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim"}) {
    SCOPED_TRACE(field);
    auto obj = fixture_object();
    ASSERT_TRUE(obj.erase(field));
    expect_error(json::serialize(obj), {kOrigin, "missing", std::string("'") + field + "'"});
  }
}

TEST(Config, WrongTypes) {
  for (const char* field : {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim",
                            "n_inner", "eos_token_id", "bos_token_id"}) {
    SCOPED_TRACE(field);
    auto obj = fixture_object();
    obj[field] = "64";
    expect_error(json::serialize(obj), {kOrigin, std::string("'") + field + "'"});
    obj[field] = 64.5;
    expect_error(json::serialize(obj), {kOrigin, std::string("'") + field + "'"});
  }
  auto obj = fixture_object();
  obj["layer_norm_epsilon"] = "1e-5";
  expect_error(json::serialize(obj), {kOrigin, "layer_norm_epsilon"});
  obj = fixture_object();
  obj["activation_function"] = "relu";
  expect_error(json::serialize(obj), {kOrigin, "activation_function", "relu"});
}

TEST(Config, NonPositiveValues) {
  for (const char* field : {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"}) {
    SCOPED_TRACE(field);
    auto obj = fixture_object();
    obj[field] = 0;
    expect_error(json::serialize(obj), {kOrigin, std::string("'") + field + "'"});
  }
  auto obj = fixture_object();
  obj["layer_norm_epsilon"] = 0.0;
  expect_error(json::serialize(obj), {kOrigin, "layer_norm_epsilon"});
}

TEST(Config, EosOutsideTheVocabulary) {
  auto obj = fixture_object();
  obj["eos_token_id"] = 50400;
  expect_error(json::serialize(obj), {kOrigin, "eos_token_id", "50400"});
}

// The issue's cases, and the other bounds: each error names the field and the value.
TEST(Config, NegativeTokenIds) {
  for (const char* field : {"eos_token_id", "bos_token_id"}) {
    SCOPED_TRACE(field);
    auto obj = fixture_object();
    obj[field] = -5;
    expect_error(json::serialize(obj), {kOrigin, std::string("'") + field + "'", "-5"});
    obj[field] = nullptr;  // null: no such token
    EXPECT_EQ(field == std::string("eos_token_id") ? parse_config(json::serialize(obj), kOrigin).eos_token_id
                                                    : parse_config(json::serialize(obj), kOrigin).bos_token_id,
              -1);
  }
}

TEST(Config, SizesBeyondTheirLimits) {
  const std::pair<const char*, int64_t> cases[] = {
      {"n_layer", 1000000000}, {"n_layer", 1025},      {"vocab_size", 2000000}, {"n_positions", 2000000},
      {"n_embd", 131072},      {"n_inner", 2000000},   {"n_head", 131072},      {"n_layer", -3}};
  for (const auto& [field, value] : cases) {
    SCOPED_TRACE(field);
    auto obj = fixture_object();
    obj[field] = value;
    expect_error(json::serialize(obj), {kOrigin, std::string("'") + field + "'", std::to_string(value)});
  }
  auto obj = fixture_object();  // GPT-J-6B's own sizes pass
  obj["n_embd"] = 4096;
  obj["n_head"] = 16;
  obj["n_layer"] = 28;
  obj["rotary_dim"] = 64;
  obj["n_inner"] = 16384;
  EXPECT_EQ(parse_config(json::serialize(obj), kOrigin).n_layer, 28);
}

TEST(Config, LayerNormEpsilonMustBeFiniteAndSmall) {
  // 1e300 is a finite double but infinite as float32; 1e-50 is zero as float32.
  for (const char* text : {"1e300", "1e999", "2.0", "-1e-5", "1e-50"}) {
    SCOPED_TRACE(text);
    std::string config = fixture_text();
    const auto at = config.find("\"layer_norm_epsilon\": 1e-05");
    ASSERT_NE(at, std::string::npos);
    config.replace(at, std::string("\"layer_norm_epsilon\": 1e-05").size(),
                   std::string("\"layer_norm_epsilon\": ") + text);
    expect_error(config, {kOrigin, "layer_norm_epsilon"});
  }
}

TEST(Config, DefaultNInnerOfAHugeNEmbdNamesNEmbd) {
  auto obj = fixture_object();
  obj["n_embd"] = 2147483644;  // divisible by n_head; 4 * n_embd (the default n_inner) would overflow int
  expect_error(json::serialize(obj), {kOrigin, "'n_embd'", "2147483644"});
}

// A value that does not fit in int must not silently wrap (2^32 + 2 would become 2 layers).
TEST(Config, IntegerOutOfRangeIsAnErrorNotAWrap) {
  auto obj = fixture_object();
  obj["n_layer"] = int64_t{4294967298};
  expect_error(json::serialize(obj), {kOrigin, "n_layer"});
  obj = fixture_object();
  obj["vocab_size"] = uint64_t{18446744073709551615ull};
  expect_error(json::serialize(obj), {kOrigin, "vocab_size"});
}

TEST(Config, NotJson) {
  expect_error("{\"model_type\": \"gptj\", ", {kOrigin, "JSON"});
  expect_error("", {kOrigin, "JSON"});
  expect_error("[1, 2, 3]", {kOrigin});
}

TEST(Config, ToJsonRoundTrips) {
  GptjConfig c;
  c.vocab_size = 1000;
  c.n_positions = 512;
  c.n_embd = 96;
  c.n_layer = 3;
  c.n_head = 6;
  c.rotary_dim = 4;
  c.n_inner = 200;
  c.layer_norm_epsilon = 3e-6f;
  c.bos_token_id = 7;
  c.eos_token_id = 999;
  c.activation_function = "gelu_new";
  c.torch_dtype = "float16";
  const GptjConfig back = parse_config(config_to_json(c), "round-trip");
  EXPECT_EQ(back.vocab_size, c.vocab_size);
  EXPECT_EQ(back.n_positions, c.n_positions);
  EXPECT_EQ(back.n_embd, c.n_embd);
  EXPECT_EQ(back.n_layer, c.n_layer);
  EXPECT_EQ(back.n_head, c.n_head);
  EXPECT_EQ(back.rotary_dim, c.rotary_dim);
  EXPECT_EQ(back.n_inner, c.n_inner);
  EXPECT_EQ(back.layer_norm_epsilon, c.layer_norm_epsilon);  // exact
  EXPECT_EQ(back.bos_token_id, c.bos_token_id);
  EXPECT_EQ(back.eos_token_id, c.eos_token_id);
  EXPECT_EQ(back.activation_function, c.activation_function);
  EXPECT_EQ(back.torch_dtype, c.torch_dtype);

  c.bos_token_id = -1;  // none: written as null, read back as none
  c.eos_token_id = -1;
  const GptjConfig none = parse_config(config_to_json(c), "round-trip");
  EXPECT_EQ(none.bos_token_id, -1);
  EXPECT_EQ(none.eos_token_id, -1);

  const GptjConfig fixture = load_config(kConfigPath);
  const GptjConfig again = parse_config(config_to_json(fixture), "round-trip");
  EXPECT_EQ(config_to_json(again), config_to_json(fixture));
  EXPECT_EQ(again.n_inner, 256);
}

// check_checkpoint_matches: the fixture checkpoint against its config, and against configs that
// claim other sizes (each error names the config file, the field and the tensor).
class CheckpointAgainstConfig : public ::testing::Test {
 protected:
  const std::string dir_ = std::string(GPTJ_TEST_DATA_DIR) + "/tiny-gptj-a/model";
  const Checkpoint checkpoint_{dir_};
  GptjConfig with(const char* field, int value) {
    auto obj = fixture_object();
    obj[field] = value;
    return parse_config(json::serialize(obj), kOrigin);
  }
};

TEST_F(CheckpointAgainstConfig, FixtureMatches) {
  EXPECT_NO_THROW(check_checkpoint_matches(load_config(kConfigPath), checkpoint_, kConfigPath));
}

TEST_F(CheckpointAgainstConfig, LayerCountOtherThanTheCheckpoints) {
  for (int layers : {1, 3, 1024}) {
    SCOPED_TRACE(layers);
    testing::expect_gptj_error([&] { check_checkpoint_matches(with("n_layer", layers), checkpoint_, kOrigin); },
                               {kOrigin, "'n_layer'", std::to_string(layers), "holds 2 layers", dir_});
  }
}

TEST_F(CheckpointAgainstConfig, SizesOtherThanTheTensors) {
  testing::expect_gptj_error([&] { check_checkpoint_matches(with("n_inner", 128), checkpoint_, kOrigin); },
                             {kOrigin, "mlp.fc_in", "[256]", "[128]", "n_inner 128"});
  testing::expect_gptj_error([&] { check_checkpoint_matches(with("vocab_size", 50432), checkpoint_, kOrigin); },
                             {kOrigin, "vocab_size 50432", "[50400", "[50432"});
}

TEST(CheckpointAgainstConfigMissing, ATensorTheConfigNeeds) {
  const GptjConfig c = parse_config(R"({"model_type": "gptj", "vocab_size": 16, "n_positions": 32,
      "n_embd": 8, "n_layer": 2, "n_head": 2, "rotary_dim": 2})", kOrigin);
  std::map<std::string, TensorToWrite> tensors;  // zeros of every shape, then one left out
  for (const auto& [name, shape] : gptj_tensor_shapes(c)) {
    const int64_t bytes = std::accumulate(shape.begin(), shape.end(), int64_t{4}, std::multiplies<>());
    tensors[name] = {DType::kF32, shape, std::vector<uint8_t>(static_cast<std::size_t>(bytes), 0)};
  }
  tensors.erase("transformer.h.1.mlp.fc_out.bias");
  const auto dir = std::filesystem::temp_directory_path() / ("gptj_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_safetensors((dir / "model.safetensors").string(), tensors);
  const Checkpoint checkpoint(dir.string());
  testing::expect_gptj_error([&] { check_checkpoint_matches(c, checkpoint, kOrigin); },
                             {kOrigin, "no tensor 'transformer.h.1.mlp.fc_out.bias'", dir.string()});
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gptj
