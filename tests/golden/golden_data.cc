#include "tests/golden/golden_data.h"

#include <boost/json.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace gptj::testing {
namespace json = boost::json;

namespace {
std::string data_dir() {  // the environment can move the data (prebuilt binaries run elsewhere)
  const char* moved = std::getenv("GPTJ_TEST_DATA_DIR");
  return moved ? moved : GPTJ_TEST_DATA_DIR;
}

json::value read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

std::vector<int32_t> ids_of(const json::value& array) {
  std::vector<int32_t> ids;
  for (const auto& v : array.as_array()) ids.push_back(static_cast<int32_t>(v.to_number<int64_t>()));
  return ids;
}
}  // namespace

std::string model_dir(const std::string& model) { return data_dir() + "/" + model + "/model"; }

std::string reference_model(const std::string& model) {
  std::ifstream in(data_dir() + "/" + model + "/same_as");
  std::string other;
  return in >> other ? other : model;
}

std::vector<std::vector<int32_t>> prompts(const std::string& model) {
  const auto root = read_json(data_dir() + "/gptj_prompts.json");
  std::vector<std::vector<int32_t>> out;
  for (const auto& p : root.at("models").at(reference_model(model)).at("prompts").as_array()) out.push_back(ids_of(p));
  return out;
}

std::vector<float> expected_logits(const std::string& model, const std::string& file) {
  const std::string path = data_dir() + "/" + reference_model(model) + "/expected/" + file;
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<float> data(static_cast<std::size_t>(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  return data;
}

std::vector<std::vector<int32_t>> expected_greedy(const std::string& model) {
  const auto root = read_json(data_dir() + "/" + reference_model(model) + "/expected/greedy.json");
  std::vector<std::vector<int32_t>> out;
  for (const auto& r : root.at("results").as_array()) out.push_back(ids_of(r.at("new_tokens")));
  return out;
}

std::vector<std::vector<int32_t>> expected_batched(const std::string& model) {
  const auto root = read_json(data_dir() + "/" + reference_model(model) + "/expected/batched.json");
  std::vector<std::vector<int32_t>> out;
  for (const auto& r : root.at("new_tokens").as_array()) out.push_back(ids_of(r));
  return out;
}

float max_abs_diff(const float* a, const float* b, std::size_t n) {
  float worst = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float diff = std::fabs(a[i] - b[i]);
    if (!(diff <= worst)) worst = diff;  // a NaN propagates (std::max would drop it) and fails the test
  }
  return worst;
}

}  // namespace gptj::testing
