// GPT-2 / GPT-J byte-level BPE tokenizer (owned by the generate library; used on rank 0 only).
//
// Semantics are exactly those of OpenAI's GPT-2 encoder (and Hugging Face's GPT2Tokenizer):
//  - text is split into pre-tokens by the GPT-2 pattern
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    (implemented by hand over UTF-8 code points; \s is Unicode White_Space as in Python's `regex`);
//  - each pre-token's bytes are mapped to vocab symbols by the byte-to-unicode table, then merged
//    pair by pair, lowest merge rank first (bpe.h: O(n log n) in the pre-token's length);
//  - a pre-token longer than kMaxPieceBytes (64 KiB) — never a real word, but a run of one letter
//    class or of whitespace can be that long — is cut into chunks of at most that many bytes
//    (ending on a UTF-8 character boundary when one lies in the last 3 bytes), and each chunk is
//    merged on its own: no token spans a cut. Below the cap the ids are Hugging Face's exactly;
//    above it they can differ from Hugging Face's near each cut (which has no hard cap, and whose
//    own cost for such a piece grows with it). The cap bounds the scratch memory and time of one
//    piece, so a multi-megabyte "word" costs the same per byte as ordinary text;
//  - "<|endoftext|>" anywhere in the text is split out first and becomes its special id (50256).
// Decoding concatenates each token's raw bytes; the result need not be valid UTF-8 for a partial
// sequence of ids (see StreamDecoder for safe incremental output).
//
// A Tokenizer is immutable after loading except for an internal, mutex-protected merge cache; it is
// cheap to copy (shared state) and safe to use from several threads at once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gptj {

class Tokenizer {
 public:
  static constexpr std::size_t kMaxPieceBytes = 64 * 1024;  // the pre-token cap (above)

  // Loads vocab.json + merges.txt from model_dir; when those are missing but tokenizer.json exists,
  // reads model.vocab and model.merges from it (merges as "a b" strings or ["a", "b"] pairs).
  // Throws gptj::Error naming the directory when no tokenizer files exist, or naming the file (and
  // line / entry) when one is malformed.
  static Tokenizer from_model_dir(const std::string& model_dir);
  // True when model_dir holds vocab.json + merges.txt, or tokenizer.json.
  static bool available(const std::string& model_dir);

  std::vector<int32_t> encode(std::string_view text) const;
  // Raw bytes of the tokens, concatenated. An id unknown to the vocab (e.g. GPT-J's padding ids
  // 50257..50399) throws gptj::Error naming the id.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of one token; throws like decode() for an unknown id.
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const;  // 1 + the largest id in the vocab: 50257 for the GPT-2 files
  int32_t eos_id() const;      // id of <|endoftext|>, or -1 when the vocab has none

  struct Impl;  // defined in tokenizer.cc

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// Streaming detokenizer for one sequence: push ids one by one and get back text that is safe to
// emit — an incomplete UTF-8 sequence at the end is held back until later bytes complete it.
// flush() returns whatever is still held (bytes that never formed a valid character, as-is).
// Holds a reference: the Tokenizer must outlive the StreamDecoder. Not thread-safe (one per stream).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);  // throws gptj::Error for an unknown id (nothing is consumed)
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;  // bytes of an incomplete trailing UTF-8 sequence (at most 3)
};

}  // namespace gptj
