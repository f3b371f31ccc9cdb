// Reads the Hugging Face reference data in tests/data/<model>/expected (see tests/data's README).
#pragma once
#include <string>
#include <vector>

namespace gptj::testing {

std::string model_dir(const std::string& model);  // tests/data/<model>/model
// The model whose prompts and expected outputs apply to <model>: the name in tests/data/<model>/same_as
// (a copy of a fixture's weights in another format, e.g. tiny-gptj-b-bin), else the model itself.
std::string reference_model(const std::string& model);
// The 4 prompts of the model (lengths 1, 7, 33, 130).
std::vector<std::vector<int32_t>> prompts(const std::string& model);
// float32 LE rows from expected/<file>: [rows, vocab].
std::vector<float> expected_logits(const std::string& model, const std::string& file);
// greedy.json results[i].new_tokens; batched.json new_tokens rows.
std::vector<std::vector<int32_t>> expected_greedy(const std::string& model);
std::vector<std::vector<int32_t>> expected_batched(const std::string& model);
float max_abs_diff(const float* a, const float* b, std::size_t n);

}  // namespace gptj::testing
