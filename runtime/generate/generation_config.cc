#include "runtime/generate/generation_config.h"

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/core/error.h"

namespace gptj {

GenerationDefaults load_generation_defaults(const std::string& model_dir) {
  GenerationDefaults out;
  const std::string path = model_dir + "/generation_config.json";
  if (!std::filesystem::exists(path)) return out;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  GPTJ_CHECK(in.good() || in.eof(), "{}: cannot read", path);
  boost::system::error_code ec;
  const boost::json::value doc = boost::json::parse(text.str(), ec);
  GPTJ_CHECK(!ec && doc.is_object(), "{}: not a JSON object", path);
  const boost::json::object& o = doc.as_object();
  auto number = [&](const char* key, double lo, double hi) -> std::optional<double> {
    const boost::json::value* v = o.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    GPTJ_CHECK(v->is_number(), "{}: {} must be a number", path, key);
    const double x = v->to_number<double>();
    GPTJ_CHECK(x >= lo && x <= hi, "{}: {} = {} is outside [{}, {}]", path, key, x, lo, hi);
    return x;
  };
  auto integer = [&](const char* key, double lo, double hi) -> std::optional<int> {
    const std::optional<double> x = number(key, lo, hi);
    if (!x) return std::nullopt;
    GPTJ_CHECK(*x == static_cast<int>(*x), "{}: {} must be an integer", path, key);
    return static_cast<int>(*x);
  };
  const boost::json::value* sample = o.if_contains("do_sample");
  GPTJ_CHECK(!sample || sample->is_bool() || sample->is_null(), "{}: do_sample must be true or false", path);
  if (sample && sample->is_bool() && sample->as_bool()) {
    if (const auto t = number("temperature", 0, 100)) out.temperature = static_cast<float>(*t);
    if (const auto p = number("top_p", 0, 1)) out.top_p = static_cast<float>(*p);
    out.top_k = integer("top_k", 0, 1 << 20);
  }
  if (const auto r = number("repetition_penalty", 1e-3, 100)) out.repetition_penalty = static_cast<float>(*r);
  out.no_repeat_ngram_size = integer("no_repeat_ngram_size", 0, 1 << 20);
  out.max_new_tokens = integer("max_new_tokens", 0, 1 << 20);
  if (const boost::json::value* eos = o.if_contains("eos_token_id"); eos && !eos->is_null()) {
    const boost::json::value* first = eos;
    if (eos->is_array()) first = eos->as_array().empty() ? nullptr : &eos->as_array()[0];
    if (first) {
      GPTJ_CHECK(first->is_int64() && first->as_int64() >= 0 && first->as_int64() < (1 << 24),
                 "{}: eos_token_id must be a token id or a list of them", path);
      out.eos_token_id = static_cast<int>(first->as_int64());
    }
  }
  return out;
}

}  // namespace gptj
