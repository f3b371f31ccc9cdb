// Unit tests for runtime/serve/request_frontend.h, the request front-end `gptj serve` and `gptj batch`
// share: the generation-field parser (defaults, logit_bias, and the same error naming the same field
// whether a bad field comes in a plain batch line or a server request body), the choice collector and
// the OpenAI response builder, and OpenAI batch lines (launcher/batch_lines.h) answered through the
// server's parser and CompletionJob.
#include "runtime/serve/request_frontend.h"

#include <gtest/gtest.h>

#include <string>

#include "launcher/batch_io.h"
#include "launcher/batch_lines.h"
#include "runtime/serve/completion_api.h"

namespace gptj {
namespace {
namespace json = boost::json;

ModelInfo model_without_tokenizer() {
  ModelInfo model;
  model.name = "tiny";
  model.fingerprint = "fp_test";
  return model;
}

TEST(GenerationFields, DefaultsAndValuesFollowTheRules) {
  GenerationFieldRules rules;
  const json::object empty;
  GenerationRequest r = parse_generation_fields(empty, rules, 100, nullptr);
  EXPECT_EQ(r.max_new_tokens, 16);
  EXPECT_EQ(r.n, 1);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.sampling.report_logprob);
  rules.max_tokens_field = "max_new_tokens";
  rules.default_temperature = 0;
  const json::object o = json::parse(R"({"max_new_tokens": 5, "n": 3, "temperature": 0.5, "top_k": -1, "top_p": 0.9,
      "seed": -1, "logprobs": 2, "stop": ["", "x"], "logit_bias": {"7": 100, "3": -5.5}})").as_object();
  try {
    parse_generation_fields(o, rules, 100, nullptr);
    FAIL() << "stop without a tokenizer must be refused";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "stop");
  }
  json::object no_stop = o;
  no_stop.erase("stop");
  r = parse_generation_fields(no_stop, rules, 100, nullptr);
  EXPECT_EQ(r.max_new_tokens, 5);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.sampling.top_k, 0);  // -1 is off, as 0
  EXPECT_EQ(*r.sampling.seed, UINT64_MAX);
  EXPECT_TRUE(r.sampling.report_logprob);
  EXPECT_EQ(r.sampling.logprobs, 2);
  const std::vector<std::pair<int32_t, float>> bias{{3, -5.5f}, {7, 100.0f}};
  EXPECT_EQ(r.sampling.logit_bias, bias);  // sorted by token
  rules.chat_logprobs = true;
  r = parse_generation_fields(json::parse(R"({"logprobs": true, "top_logprobs": 4})").as_object(), rules, 100, nullptr);
  EXPECT_TRUE(r.sampling.report_logprob);
  EXPECT_EQ(r.sampling.logprobs, 4);
}

TEST(GenerationFields, LogitBiasKeysAndValuesAreChecked) {
  const GenerationFieldRules rules;
  for (const char* bad : {R"([1])", R"({"abc": 1})", R"({"-1": 1})", R"({"100": 1})", R"({"1.5": 1})", R"({"": 1})",
                          R"({"1": 101})", R"({"1": -100.5})", R"({"1": "x"})", R"({" 1": 1})", R"({"01": 1})", R"({"+1": 1})"}) {
    json::object o{{"logit_bias", json::parse(bad)}};
    try {
      parse_generation_fields(o, rules, 100, nullptr);
      ADD_FAILURE() << bad << " must be refused";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_EQ(e.param, "logit_bias") << bad;
      EXPECT_NE(std::string(e.what()).find("'logit_bias'"), std::string::npos) << e.what();
    }
  }
  json::object ok{{"logit_bias", json::parse(R"({"99": -100, "0": 100, "10": 5})")}};
  const std::vector<std::pair<int32_t, float>> bias{{0, 100.0f}, {10, 5.0f}, {99, -100.0f}};
  EXPECT_EQ(parse_logit_bias(ok, 100), bias);
}

// The same bad field gives the same one-line message from a plain batch line and from a server
// request, and the server names it as the error's param.
TEST(GenerationFields, BatchAndServerGiveTheSameErrorForTheSameField) {
  const ModelInfo model = model_without_tokenizer();
  const std::vector<std::pair<std::string, std::string>> cases{
      {"temperature", "\"hot\""}, {"top_p", "1.5"},          {"top_k", "-2"},
      {"presence_penalty", "3"},  {"frequency_penalty", "-2.5"}, {"repetition_penalty", "0"},
      {"no_repeat_ngram_size", "-1"}, {"seed", "\"x\""},     {"stop", "5"},
      {"stop", "[\"a\", 1]"},     {"logprobs", "21"},        {"logprobs", "true"},
      {"logit_bias", "{\"x\": 1}"}, {"logit_bias", "{\"1\": 200}"},
      {"logit_bias", "{\"50257\": 1}"}};
  for (const auto& [field, value] : cases) {
    const std::string extra = ", \"" + field + "\": " + value + "}";
    std::string batch_message, server_message, server_param, id;
    try {
      parse_batch_line("{\"id\": 1, \"tokens\": [1, 2]" + extra, nullptr, 8, id, model.allowed_vocab);
    } catch (const Error& e) {
      batch_message = e.what();
    }
    try {
      parse_completion_request("{\"prompt\": [1, 2]" + extra, model);
    } catch (const ApiError& e) {
      server_message = e.what();
      server_param = e.param;
    }
    EXPECT_FALSE(batch_message.empty()) << field << " = " << value << " must be refused in a batch line";
    EXPECT_EQ(batch_message, server_message) << field << " = " << value;
    EXPECT_EQ(server_param, field);
    EXPECT_NE(batch_message.find("'" + field + "'"), std::string::npos) << batch_message;
  }
}

TEST(GenerationFields, EachFormatKeepsItsOwnLimits) {
  std::string id;
  // Plain batch lines: temperature up to 100, n up to 128, greedy by default; the server: 2, 16, 1.
  BatchItem item = parse_batch_line(R"({"id": 1, "tokens": [1], "temperature": 50, "n": 100})", nullptr, 8, id, 100);
  EXPECT_FLOAT_EQ(item.request.sampling.temperature, 50.0f);
  EXPECT_EQ(item.n, 100);
  EXPECT_EQ(item.request.max_new_tokens, 8);
  EXPECT_FLOAT_EQ(parse_batch_line(R"({"id": 1, "tokens": [1]})", nullptr, 8, id, 100).request.sampling.temperature, 0.0f);
  const ModelInfo model = model_without_tokenizer();
  EXPECT_THROW(parse_completion_request(R"({"prompt": [1], "temperature": 50})", model), ApiError);
  EXPECT_THROW(parse_completion_request(R"({"prompt": [1], "n": 100})", model), ApiError);
  EXPECT_FLOAT_EQ(parse_completion_request(R"({"prompt": [1]})", model).sampling.temperature, 1.0f);
  EXPECT_EQ(parse_completion_request(R"({"prompt": [1], "logit_bias": {"5": -3}})", model).sampling.logit_bias,
            (std::vector<std::pair<int32_t, float>>{{5, -3.0f}}));
}

GenerationEvent event(int32_t token, FinishReason finish, const std::vector<int32_t>* generated, float logprob = 0) {
  GenerationEvent e;
  e.choice.token = token;
  e.choice.logprob = logprob;
  e.finish = finish;
  e.generated = generated;
  return e;
}

TEST(ResponseBuilder, CollectsChoicesAndBuildsTheOpenAiBody) {
  CompletionRequest req;
  req.prompts = {{1, 2, 3}};
  req.n = 2;
  req.logprobs = 0;
  const ModelInfo model = model_without_tokenizer();
  std::vector<ChoiceResult> choices(2);
  // Choice 0 ends at its length; choice 1 with end-of-text, which is not a token of the answer.
  const std::vector<int32_t> gen0{5, 6}, gen1{7, 50256};
  EXPECT_TRUE(collect_token(choices[0], event(5, FinishReason::kNone, &gen0, -0.5f)));
  EXPECT_TRUE(collect_token(choices[0], event(6, FinishReason::kLength, &gen0, -0.25f)));
  finish_choice(choices[0], event(6, FinishReason::kLength, &gen0), nullptr);
  EXPECT_TRUE(collect_token(choices[1], event(7, FinishReason::kNone, &gen1)));
  EXPECT_FALSE(collect_token(choices[1], event(50256, FinishReason::kEos, &gen1)));
  finish_choice(choices[1], event(50256, FinishReason::kEos, &gen1), nullptr);
  EXPECT_EQ(choices[1].tokens, (std::vector<int32_t>{7}));
  const json::object body = completion_body(req, model, "cmpl-x", 42, choices);
  EXPECT_EQ(body.at("object"), "text_completion");
  EXPECT_EQ(body.at("id"), "cmpl-x");
  EXPECT_EQ(body.at("created"), 42);
  EXPECT_EQ(body.at("model"), "tiny");
  EXPECT_EQ(body.at("system_fingerprint"), "fp_test");
  const json::array& out = body.at("choices").as_array();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].at("index"), 0);
  EXPECT_EQ(out[0].at("finish_reason"), "length");
  EXPECT_EQ(out[1].at("finish_reason"), "stop");
  EXPECT_EQ(out[0].at("token_ids"), json::parse("[5, 6]"));
  EXPECT_EQ(out[1].at("token_ids"), json::parse("[7]"));
  EXPECT_EQ(out[0].at("logprobs").at("token_logprobs"), json::parse("[-0.5, -0.25]"));
  EXPECT_EQ(body.at("usage"), json::parse(R"({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})"));
  req.chat = true;
  const json::object chat = completion_body(req, model, "chatcmpl-x", 42, choices);
  EXPECT_EQ(chat.at("object"), "chat.completion");
  const json::object& message = chat.at("choices").as_array()[0].at("message").as_object();
  EXPECT_EQ(message.at("role"), "assistant");
  EXPECT_TRUE(message.at("refusal").is_null());
  EXPECT_EQ(chat.at("choices").as_array()[0].at("logprobs").at("content").as_array().size(), 2u);
}

// An OpenAI batch line: custom_id + method + url + body, answered by the server's own parser and job.
TEST(OpenAiBatchLine, AnswersAsTheServerWould) {
  BatchLineContext context;
  context.model = model_without_tokenizer();
  std::string id, key;
  auto line = parse_input_line(
      R"({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": [1, 2], "max_tokens": 2, "temperature": 0}})",
      1, context, id, key);
  EXPECT_EQ(key, custom_id_key("\"a\""));
  EXPECT_EQ(id.rfind("\"batch_req_", 0), 0u) << id;
  EXPECT_FALSE(line->take_output());  // not run yet
  ASSERT_EQ(line->requests().size(), 1u);
  EXPECT_EQ(line->requests()[0].max_new_tokens, 2);
  const std::vector<int32_t> gen{9, 8};
  line->on_event(0, event(9, FinishReason::kNone, &gen));
  line->on_event(0, event(8, FinishReason::kLength, &gen));
  std::optional<json::object> out = line->take_output();
  ASSERT_TRUE(out);
  EXPECT_EQ(out->at("custom_id"), "a");
  EXPECT_TRUE(out->at("error").is_null());
  const json::object& response = out->at("response").as_object();
  EXPECT_EQ(response.at("status_code"), 200);
  EXPECT_EQ(std::string(response.at("request_id").as_string()).rfind("req_", 0), 0u);
  const json::object& body = response.at("body").as_object();
  EXPECT_EQ(body.at("object"), "text_completion");
  EXPECT_EQ(body.at("choices").as_array()[0].at("token_ids"), json::parse("[9, 8]"));
  EXPECT_FALSE(line->is_error());

  // A body the server refuses: its 400 and exactly the server's error body, at once.
  const std::string bad = R"({"prompt": [1], "temperature": 7})";
  line = parse_input_line(R"({"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": )" + bad + "}", 2,
                          context, id, key);
  out = line->take_output();
  ASSERT_TRUE(out);
  std::string server_error;
  try {
    parse_completion_request(bad, context.model);
  } catch (const ApiError& e) {
    server_error = error_body(e.what(), e.type, e.param);
  }
  EXPECT_EQ(out->at("response").at("status_code"), 400);
  EXPECT_EQ(out->at("response").at("body"), json::parse(server_error));

  // Streaming is refused with the field named.
  line = parse_input_line(R"({"custom_id": "c", "url": "/v1/completions", "body": {"prompt": [1], "stream": true}})", 3,
                          context, id, key);
  out = line->take_output();
  ASSERT_TRUE(out);
  EXPECT_EQ(out->at("response").at("status_code"), 400);
  EXPECT_EQ(out->at("response").at("body").at("error").at("param"), "stream");

  // A bad envelope: an error line with the line number.
  line = parse_input_line(R"({"custom_id": "d", "url": "/v1/embeddings", "body": {}})", 4, context, id, key);
  out = line->take_output();
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->at("response").is_null());
  EXPECT_EQ(out->at("line"), 4);
  EXPECT_NE(std::string(out->at("error").at("message").as_string()).find("'url'"), std::string::npos);
  EXPECT_TRUE(line->is_error());
  line = parse_input_line(R"({"custom_id": 5, "url": "/v1/completions", "body": {}})", 5, context, id, key);
  EXPECT_TRUE(key.empty());  // no custom_id to key it by
  out = line->take_output();
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->at("custom_id").is_null());
}

}  // namespace
}  // namespace gptj
