#include "runtime/generate/wire.h"

namespace gptj::wire {

void Writer::put_string(const std::string& s) {
  put<uint32_t>(static_cast<uint32_t>(s.size()));
  bytes_.insert(bytes_.end(), s.begin(), s.end());
}

const uint8_t* Reader::take(std::size_t n) {
  GPTJ_CHECK(n <= size_ - pos_, "replica message ends early: {} bytes wanted at offset {} of {}", n, pos_, size_);
  const uint8_t* p = data_ + pos_;
  pos_ += n;
  return p;
}

std::string Reader::get_string() {
  const uint32_t n = get<uint32_t>();
  const uint8_t* p = take(n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

void Reader::expect_end() const {
  GPTJ_CHECK(at_end(), "replica message has {} bytes left over", size_ - pos_);
}

namespace {

// (token, value) lists, element by element (std::pair is not trivially copyable).
void put_pairs(Writer& w, const std::vector<std::pair<int32_t, float>>& pairs) {
  w.put<uint32_t>(static_cast<uint32_t>(pairs.size()));
  for (const auto& [token, value] : pairs) {
    w.put(token);
    w.put(value);
  }
}

std::vector<std::pair<int32_t, float>> get_pairs(Reader& r) {
  const uint32_t n = r.get<uint32_t>();
  std::vector<std::pair<int32_t, float>> pairs;
  for (uint32_t i = 0; i < n; ++i) {
    const int32_t token = r.get<int32_t>();
    pairs.emplace_back(token, r.get<float>());
  }
  return pairs;
}

// One plain field either way (a bool travels as one byte 0/1, never loaded from a raw byte).
template <typename T>
void put_field(Writer& w, const T& value) {
  if constexpr (std::is_same_v<T, bool>)
    w.put<uint8_t>(value ? 1 : 0);
  else
    w.put(value);
}
template <typename T>
void get_field(Reader& r, T& value) {
  if constexpr (std::is_same_v<T, bool>)
    value = r.get<uint8_t>() != 0;
  else
    value = r.get<T>();
}

// Each struct's plain fields, listed once for both directions, in wire order (S may be const).
template <typename S, typename F>
void sampling_fields(S& s, F&& f) {
  f(s.temperature), f(s.top_k), f(s.top_p), f(s.repetition_penalty), f(s.presence_penalty);
  f(s.frequency_penalty), f(s.no_repeat_ngram_size), f(s.logprobs), f(s.report_logprob);
}
template <typename S, typename F>
void stats_fields(S& s, F&& f) {  // `ready` is not sent: rank 0 decides it
  f(s.running), f(s.waiting), f(s.kv_blocks_used), f(s.kv_blocks_free), f(s.kv_blocks_total);
  f(s.peak_used_blocks), f(s.preemptions), f(s.prefix_hit_tokens), f(s.sequences_finished), f(s.tokens_generated);
}

void put_sampling(Writer& w, const SamplingParams& s) {
  sampling_fields(s, [&](const auto& field) { put_field(w, field); });
  put_field(w, s.seed.has_value());
  w.put<uint64_t>(s.seed.value_or(0));
  put_pairs(w, s.logit_bias);
}

SamplingParams get_sampling(Reader& r) {
  SamplingParams s;
  sampling_fields(s, [&](auto& field) { get_field(r, field); });
  bool seeded = false;
  get_field(r, seeded);
  const uint64_t seed = r.get<uint64_t>();
  if (seeded) s.seed = seed;
  s.logit_bias = get_pairs(r);
  return s;
}

void put_choice(Writer& w, const TokenChoice& c) {
  w.put(c.token);
  w.put(c.logprob);
  put_pairs(w, c.top);
}

TokenChoice get_choice(Reader& r) {
  TokenChoice c;
  c.token = r.get<int32_t>();
  c.logprob = r.get<float>();
  c.top = get_pairs(r);
  return c;
}

}  // namespace

std::vector<uint8_t> encode_request(const GenerationRequest& q) {
  Writer w;
  w.put(q.handle);
  w.put_vector(q.prompt);
  put_sampling(w, q.sampling);
  w.put(q.max_new_tokens);
  w.put<uint32_t>(static_cast<uint32_t>(q.stop.size()));
  for (const std::string& s : q.stop) w.put_string(s);
  put_field(w, q.ignore_eos);
  w.put(q.n);
  put_field(w, q.score_prompt);
  return w.take();
}

GenerationRequest decode_request(const std::vector<uint8_t>& bytes) {
  Reader r(bytes.data(), bytes.size());
  GenerationRequest q;
  q.handle = r.get<uint64_t>();
  q.prompt = r.get_vector<int32_t>();
  q.sampling = get_sampling(r);
  q.max_new_tokens = r.get<int>();
  const uint32_t stops = r.get<uint32_t>();
  for (uint32_t i = 0; i < stops; ++i) q.stop.push_back(r.get_string());
  get_field(r, q.ignore_eos);
  q.n = r.get<int>();
  get_field(r, q.score_prompt);
  r.expect_end();
  return q;
}

std::vector<uint8_t> encode_report(const ReplicaStats& s, const std::vector<GenerationEvent>& events) {
  Writer w;
  stats_fields(s, [&](const auto& field) { put_field(w, field); });
  w.put<uint32_t>(static_cast<uint32_t>(events.size()));
  for (const GenerationEvent& e : events) {
    w.put(e.handle);
    put_choice(w, e.choice);
    w.put(static_cast<int32_t>(e.finish));
    w.put_string(e.stop_text);
    w.put(e.prompt_tokens);
    w.put<uint32_t>(static_cast<uint32_t>(e.prompt_logprobs.size()));
    for (const TokenChoice& c : e.prompt_logprobs) put_choice(w, c);
    const bool finished = e.finish != FinishReason::kNone && e.generated;
    w.put_vector(finished ? *e.generated : std::vector<int32_t>{});
  }
  return w.take();
}

void decode_report(const std::vector<uint8_t>& bytes, ReplicaStats& s, std::vector<WireEvent>& events) {
  Reader r(bytes.data(), bytes.size());
  stats_fields(s, [&](auto& field) { get_field(r, field); });
  const uint32_t n = r.get<uint32_t>();
  events.clear();
  for (uint32_t i = 0; i < n; ++i) {
    WireEvent w;
    GenerationEvent& e = w.event;
    e.handle = r.get<uint64_t>();
    e.choice = get_choice(r);
    const int32_t finish = r.get<int32_t>();
    GPTJ_CHECK(finish >= 0 && finish <= static_cast<int32_t>(FinishReason::kCancelled),
               "replica message: finish reason {} unknown", finish);
    e.finish = static_cast<FinishReason>(finish);
    e.stop_text = r.get_string();
    e.prompt_tokens = r.get<int>();
    const uint32_t scored = r.get<uint32_t>();
    for (uint32_t k = 0; k < scored; ++k) e.prompt_logprobs.push_back(get_choice(r));
    w.final_tokens = r.get_vector<int32_t>();
    events.push_back(std::move(w));
  }
  r.expect_end();
}

}  // namespace gptj::wire
