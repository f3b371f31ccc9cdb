// Unit tests for the GPT-2 byte-level BPE tokenizer (runtime/generate/tokenizer.h) and the
// streaming detokenizer. Reference data: tests/data/tokenizer/vectors.jsonl (ids agreed on by two
// independent public GPT-2 encoders) and the GPT-2 vocab/merges in tests/data/tiny-gptj-a/model.
#include "runtime/generate/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/generate/bpe.h"
#include "runtime/generate/utf8_stream.h"

#ifndef GPTJ_TEST_DATA_DIR
#error "GPTJ_TEST_DATA_DIR must be defined by the build (absolute path to tests/data)"
#endif

namespace gptj {
namespace {
namespace fs = std::filesystem;
namespace json = boost::json;

const std::string kDataDir = GPTJ_TEST_DATA_DIR;
const std::string kModelDir = kDataDir + "/tiny-gptj-a/model";

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

std::vector<Vector> load_vectors() {
  std::istringstream in(read_text(kDataDir + "/tokenizer/vectors.jsonl"));
  std::vector<Vector> vectors;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json::object obj = json::parse(line).as_object();
    Vector v;
    v.text = std::string(obj.at("text").as_string());
    for (const auto& id : obj.at("ids").as_array()) v.ids.push_back(id.to_number<int32_t>());
    vectors.push_back(std::move(v));
  }
  return vectors;
}

const Tokenizer& gpt2() {
  static const Tokenizer tokenizer = Tokenizer::from_model_dir(kModelDir);
  return tokenizer;
}

// A fresh scratch directory under the system temp dir, removed at scope exit.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(fs::temp_directory_path() /
              ("gptj_tokenizer_test_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void write(const std::string& file, const std::string& content) const {
    std::ofstream(path_ / file, std::ios::binary) << content;
  }

 private:
  fs::path path_;
};

TEST(Tokenizer, LoadsGpt2Files) {
  EXPECT_TRUE(Tokenizer::available(kModelDir));
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eos_id(), 50256);
  EXPECT_EQ(gpt2().token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(gpt2().token_bytes(220), " ");   // "Ġ" in vocab.json
  EXPECT_EQ(gpt2().token_bytes(198), "\n");  // "Ċ"
}

TEST(Tokenizer, EncodesAndDecodesEveryVector) {
  const auto vectors = load_vectors();
  ASSERT_GE(vectors.size(), 30u);
  size_t passed = 0;
  for (const auto& v : vectors) {
    SCOPED_TRACE("text: " + v.text);
    const auto ids = gpt2().encode(v.text);
    EXPECT_EQ(ids, v.ids);
    EXPECT_EQ(gpt2().decode(v.ids), v.text);
    if (ids == v.ids && gpt2().decode(v.ids) == v.text) ++passed;
  }
  EXPECT_EQ(passed, vectors.size());
}

TEST(Tokenizer, EncodeIsStableAcrossCallsAndCopies) {
  // The second call is served from the merge cache; a copy shares the same state.
  const std::string text = "The weather outside is beautiful today and it's nice.";
  const auto first = gpt2().encode(text);
  const Tokenizer copy = gpt2();
  EXPECT_EQ(copy.encode(text), first);
  EXPECT_EQ(gpt2().encode(text), first);
}

TEST(Tokenizer, SplitsOutEndOfText) {
  EXPECT_EQ(gpt2().encode("a<|endoftext|>b"), (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_EQ(gpt2().encode("<|endoftext|>"), (std::vector<int32_t>{50256}));
  EXPECT_EQ(gpt2().encode("<|endoftext|><|endoftext|>"), (std::vector<int32_t>{50256, 50256}));
  // Not merged with neighbouring text: " Hello" keeps its leading space token.
  const auto ids = gpt2().encode("Hi<|endoftext|> Hello");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], 50256);
  EXPECT_EQ(gpt2().decode(ids), "Hi<|endoftext|> Hello");
  // A partial marker is ordinary text.
  const auto partial = gpt2().encode("<|endoftext|");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 50256), 0);
  EXPECT_EQ(gpt2().decode(partial), "<|endoftext|");
}

TEST(Tokenizer, InvalidUtf8RoundTrips) {
  const std::string bytes = std::string("ab\xff\xfe c\xe2\x82", 8);
  EXPECT_EQ(gpt2().decode(gpt2().encode(bytes)), bytes);
}

TEST(Tokenizer, UnknownIdThrowsNamingIt) {
  try {
    gpt2().decode({464, 50300});
    FAIL() << "decode of id 50300 did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50300"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gpt2().decode({-1}), Error);
  EXPECT_THROW(gpt2().decode({50257}), Error);
  EXPECT_THROW(gpt2().token_bytes(50399), Error);
}

TEST(Tokenizer, MissingFilesThrowNamingTheDir) {
  ScratchDir dir("empty");
  EXPECT_FALSE(Tokenizer::available(dir.path().string()));
  try {
    Tokenizer::from_model_dir(dir.path().string());
    FAIL() << "from_model_dir on an empty directory did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MalformedFilesThrowNamingTheFile) {
  ScratchDir dir("malformed");
  dir.write("vocab.json", R"({"a": 0, "b": 1, "ab": 2})");
  dir.write("merges.txt", "#version: 0.2\na b\nnot-a-pair\n");
  try {
    Tokenizer::from_model_dir(dir.path().string());
    FAIL() << "a malformed merges.txt did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt:3"), std::string::npos) << e.what();
  }
  dir.write("merges.txt", "#version: 0.2\na b\n");
  dir.write("vocab.json", R"({"a": 0, "b": )");
  try {
    Tokenizer::from_model_dir(dir.path().string());
    FAIL() << "a malformed vocab.json did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
  }
}

// tokenizer.json alone (no vocab.json / merges.txt) gives the same ids, for both merge spellings.
TEST(Tokenizer, ReadsTokenizerJson) {
  const json::value vocab = json::parse(read_text(kModelDir + "/vocab.json"));
  std::istringstream merges_in(read_text(kModelDir + "/merges.txt"));
  json::array as_strings, as_pairs;
  std::string line;
  while (std::getline(merges_in, line)) {
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    as_strings.emplace_back(line);
    as_pairs.emplace_back(json::array{json::string(line.substr(0, space)),
                                      json::string(line.substr(space + 1))});
  }
  const auto vectors = load_vectors();
  for (const json::array* merges : {&as_strings, &as_pairs}) {
    ScratchDir dir(merges == &as_strings ? "json_strings" : "json_pairs");
    json::object model{{"type", "BPE"}, {"vocab", vocab}, {"merges", *merges}};
    dir.write("tokenizer.json", json::serialize(json::object{{"model", model}}));
    ASSERT_TRUE(Tokenizer::available(dir.path().string()));
    const Tokenizer tok = Tokenizer::from_model_dir(dir.path().string());
    EXPECT_EQ(tok.vocab_size(), 50257);
    EXPECT_EQ(tok.eos_id(), 50256);
    for (const auto& v : vectors) EXPECT_EQ(tok.encode(v.text), v.ids) << v.text;
  }
}

// ------------------------------------------------------------------------------------------------
// bpe_merge() against the quadratic loop it replaced (GPT-2's encoder.py as written: rescan every
// pair, take the lowest rank, merge its occurrences left to right, repeat), kept here as the
// reference.
std::vector<int32_t> reference_bpe(std::vector<int32_t> word, const BpeMergeTable& merges) {
  std::vector<int32_t> next;
  while (word.size() > 1) {
    const BpeMerge* best = nullptr;
    int32_t best_left = 0, best_right = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const BpeMerge* m = merges.find(word[i], word[i + 1]);
      if (m != nullptr && (best == nullptr || m->rank < best->rank)) {
        best = m;
        best_left = word[i];
        best_right = word[i + 1];
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == best_left && word[i + 1] == best_right) {
        next.push_back(best->result);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word.swap(next);
  }
  return word;
}

// Runs bpe_merge on `word`, checks it against the reference and that it stayed within 3n heap
// candidates (its O(n log n) bound); returns the merged ids.
std::vector<int32_t> checked_bpe(const std::vector<int32_t>& word, const BpeMergeTable& merges) {
  std::vector<int32_t> fast = word;
  const BpeMergeCounts counts = bpe_merge(fast, merges);
  EXPECT_EQ(fast, reference_bpe(word, merges)) << "length " << word.size();
  EXPECT_LE(counts.candidates, 3 * word.size()) << "length " << word.size();
  EXPECT_EQ(counts.merges, word.size() - fast.size());
  return fast;
}

// The GPT-2 merge table built straight from vocab.json + merges.txt (merges whose parts or result
// the vocab lacks are dropped, as the Tokenizer does), and each byte's id.
struct Gpt2Table {
  BpeMergeTable merges;
  std::array<int32_t, 256> byte_id{};
};

const Gpt2Table& gpt2_table() {
  static const Gpt2Table table = [] {
    Gpt2Table t;
    const json::object vocab = json::parse(read_text(kModelDir + "/vocab.json")).as_object();
    std::istringstream in(read_text(kModelDir + "/merges.txt"));
    std::string line;
    int32_t rank = 0;
    while (std::getline(in, line)) {
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      const std::string left = line.substr(0, space), right = line.substr(space + 1);
      const auto *l = vocab.if_contains(left), *r = vocab.if_contains(right),
                 *m = vocab.if_contains(left + right);
      if (l && r && m)
        t.merges.add(l->to_number<int32_t>(), r->to_number<int32_t>(), BpeMerge{rank, m->to_number<int32_t>()});
      ++rank;
    }
    for (int b = 0; b < 256; ++b) {
      const auto ids = gpt2().encode(std::string(1, static_cast<char>(b)));
      EXPECT_EQ(ids.size(), 1u) << "byte " << b;
      t.byte_id[b] = ids.at(0);
    }
    return t;
  }();
  return table;
}

std::vector<int32_t> byte_ids(const std::string& text) {
  std::vector<int32_t> ids;
  for (const char c : text) ids.push_back(gpt2_table().byte_id[static_cast<unsigned char>(c)]);
  return ids;
}

TEST(Bpe, MatchesReferenceOnGpt2Merges) {
  const BpeMergeTable& merges = gpt2_table().merges;
  ASSERT_GT(merges.size(), 49000u);
  std::mt19937 rng(17);
  auto random_text = [&](size_t length, const std::string& alphabet) {
    std::string text(length, ' ');
    for (char& c : text) c = alphabet[rng() % alphabet.size()];
    return text;
  };
  std::string all_bytes(256, '\0');
  std::iota(all_bytes.begin(), all_bytes.end(), 0);
  // Short random words (most real pre-tokens), over letters, bytes, and a few letters (many merges).
  for (int i = 0; i < 3000; ++i) {
    const size_t length = 1 + rng() % 40;
    checked_bpe(byte_ids(random_text(length, i % 3 == 0 ? all_bytes : i % 3 == 1 ? "abcdefghijklmnopqrstuvwxyz" : "aeit ")), merges);
  }
  // Long runs, where the quadratic loop was slow and where ties between equal pairs decide.
  for (const std::string& text : {std::string(20000, 'a'), std::string(20001, ' '), std::string(4999, '!'),
                                  random_text(20000, "abcdefghijklmnopqrstuvwxyz"), random_text(20000, all_bytes),
                                  random_text(20000, "ab"), [] { std::string s; while (s.size() < 20000) s += "the "; return s; }()})
    checked_bpe(byte_ids(text), merges);
}

// Random merge tables, also ones no BPE training would produce: a merged symbol whose pairs rank
// below the merge that made it, results that reuse an existing id, duplicate pairs (the first wins).
TEST(Bpe, MatchesReferenceOnRandomMergeTables) {
  std::mt19937 rng(5);
  for (int table = 0; table < 200; ++table) {
    const int32_t alphabet = 2 + static_cast<int32_t>(rng() % 6);
    const int32_t count = 1 + static_cast<int32_t>(rng() % 40);
    const bool ranks_in_order = table % 2 == 0;
    std::vector<int32_t> ranks(count);
    std::iota(ranks.begin(), ranks.end(), 0);
    if (!ranks_in_order) std::shuffle(ranks.begin(), ranks.end(), rng);
    BpeMergeTable merges;
    int32_t next_id = alphabet;
    for (int32_t i = 0; i < count; ++i) {
      const int32_t left = static_cast<int32_t>(rng() % next_id), right = static_cast<int32_t>(rng() % next_id);
      const int32_t result = rng() % 8 == 0 ? static_cast<int32_t>(rng() % next_id) : next_id++;
      merges.add(left, right, BpeMerge{ranks[i], result});
    }
    for (int word = 0; word < 30; ++word) {
      const size_t length = word < 25 ? rng() % 64 : 2000 + rng() % 2000;
      std::vector<int32_t> symbols(length);
      for (auto& s : symbols) s = static_cast<int32_t>(rng() % alphabet);
      checked_bpe(symbols, merges);
    }
  }
}

TEST(Bpe, DuplicatePairKeepsTheFirstMerge) {
  BpeMergeTable merges;
  merges.add(0, 1, BpeMerge{0, 2});
  merges.add(0, 1, BpeMerge{5, 3});
  ASSERT_NE(merges.find(0, 1), nullptr);
  EXPECT_EQ(merges.find(0, 1)->result, 2);
  EXPECT_EQ(merges.find(1, 0), nullptr);
  std::vector<int32_t> word{0, 1, 0, 1, 1};
  bpe_merge(word, merges);
  EXPECT_EQ(word, (std::vector<int32_t>{2, 2, 1}));
}

// Through the Tokenizer: a single pre-token below the cap is merged exactly as the reference.
TEST(Tokenizer, LongWordMatchesReference) {
  std::mt19937 rng(3);
  std::string letters(30000, 'a');
  for (char& c : letters) c = static_cast<char>('a' + rng() % 26);
  for (const std::string& word : {std::string(20000, 'a'), letters, std::string(30000, '-')}) {
    ASSERT_LT(word.size(), Tokenizer::kMaxPieceBytes);
    EXPECT_EQ(gpt2().encode(word), reference_bpe(byte_ids(word), gpt2_table().merges)) << word.substr(0, 8);
  }
}

// A pre-token over the cap is merged in chunks of kMaxPieceBytes that end on character boundaries.
TEST(Tokenizer, CapsOnePreToken) {
  constexpr size_t cap = Tokenizer::kMaxPieceBytes;
  auto joined = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string a(cap, 'a');
  EXPECT_EQ(gpt2().encode(a + "aaa"), joined(gpt2().encode(a), gpt2().encode("aaa")));
  EXPECT_EQ(gpt2().encode(a + a + "b"), joined(joined(gpt2().encode(a), gpt2().encode(a)), gpt2().encode("b")));
  // "€" is 3 bytes: the first cut falls inside a character and moves back to its start.
  std::string euros;
  while (euros.size() < cap + 300) euros += "\xe2\x82\xac";
  const size_t cut = cap - cap % 3;
  const auto ids = gpt2().encode(euros);
  EXPECT_EQ(ids, joined(gpt2().encode(euros.substr(0, cut)), gpt2().encode(euros.substr(cut))));
  EXPECT_EQ(gpt2().decode(ids), euros);
  // Several megabytes of one "word" (letters; random bytes in runs) still round-trip.
  std::mt19937 rng(9);
  std::string big(3 * cap + 12345, 'x');
  for (char& c : big) c = static_cast<char>(rng());
  EXPECT_EQ(gpt2().decode(gpt2().encode(big)), big);
}

TEST(Utf8, IncompleteTail) {
  using utf8::incomplete_utf8_tail;
  EXPECT_EQ(incomplete_utf8_tail(""), 0u);
  EXPECT_EQ(incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xf0\x9f\x98"), 3u);      // 😀 missing its last byte
  EXPECT_EQ(incomplete_utf8_tail("a\xf0\x9f\x98\x80"), 0u);  // complete
  EXPECT_EQ(incomplete_utf8_tail("a\xc3"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("a\xe2\x82"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("a\xff"), 0u);      // can never be valid: not held back
  EXPECT_EQ(incomplete_utf8_tail("a\xe0\x80"), 0u);  // overlong form: never valid
  EXPECT_EQ(incomplete_utf8_tail("\x80\x80"), 0u);   // stray continuation bytes
}

TEST(StreamDecoder, HoldsBackSplitCharacter) {
  // In the vectors, " 😀" is encoded as 30325 (" \xf0\x9f\x98") + 222 ("\x80").
  ASSERT_EQ(gpt2().token_bytes(30325), " \xf0\x9f\x98");
  ASSERT_EQ(gpt2().token_bytes(222), "\x80");
  StreamDecoder stream(gpt2());
  EXPECT_EQ(stream.push(30325), " ");
  EXPECT_EQ(stream.push(222), "\xf0\x9f\x98\x80");
  EXPECT_EQ(stream.flush(), "");

  StreamDecoder unfinished(gpt2());
  EXPECT_EQ(unfinished.push(30325), " ");
  EXPECT_EQ(unfinished.flush(), "\xf0\x9f\x98");  // what is left comes out as-is
  EXPECT_EQ(unfinished.flush(), "");
}

TEST(StreamDecoder, StreamsEveryVectorAsValidChunks) {
  size_t held_back = 0;
  for (const auto& v : load_vectors()) {
    SCOPED_TRACE("text: " + v.text);
    StreamDecoder stream(gpt2());
    std::string joined;
    for (const int32_t id : v.ids) {
      const std::string chunk = stream.push(id);
      EXPECT_EQ(utf8::incomplete_utf8_tail(chunk), 0u);
      if (chunk.size() < gpt2().token_bytes(id).size()) ++held_back;
      joined += chunk;
    }
    joined += stream.flush();
    EXPECT_EQ(joined, v.text);
  }
  EXPECT_GT(held_back, 0u);  // the emoji / CJK lines split characters across tokens
}

TEST(StreamDecoder, UnknownIdThrowsAndKeepsState) {
  StreamDecoder stream(gpt2());
  EXPECT_EQ(stream.push(30325), " ");
  EXPECT_THROW(stream.push(50300), Error);
  EXPECT_EQ(stream.push(222), "\xf0\x9f\x98\x80");
}

}  // namespace
}  // namespace gptj
