// GPT-2 byte-level BPE: loading (vocab.json + merges.txt, or tokenizer.json), the hand-written
// GPT-2 pre-tokenizer, rank-ordered BPE with a shared cache, and decoding.
#include "runtime/generate/tokenizer.h"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <climits>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "runtime/core/error.h"
#include "runtime/generate/bpe.h"
#include "runtime/generate/utf8_stream.h"

namespace gptj {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kEndOfText = "<|endoftext|>";
// The pre-token cap (see tokenizer.h).
constexpr size_t kMaxPieceBytes = Tokenizer::kMaxPieceBytes;
// Pieces longer than this are not cached (rare; long runs of one character and the like).
constexpr size_t kMaxCachedPieceBytes = 256;
// The cache is cleared when it reaches this many entries, which bounds its memory.
constexpr size_t kMaxCacheEntries = 1 << 16;

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so every byte has a visible, non-space symbol in vocab.json.
std::array<char32_t, 256> byte_to_unicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

std::string encode_utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Maps a vocab symbol string (byte-to-unicode form) back to raw bytes. A symbol with characters
// outside the byte table (an added special token) is kept as its own UTF-8 text.
std::string symbol_to_bytes(const std::string& symbol) {
  static const std::array<int, 324> unicode_to_byte = [] {
    std::array<int, 324> inverse;
    inverse.fill(-1);
    const auto forward = byte_to_unicode();
    for (int b = 0; b < 256; ++b) inverse[forward[b]] = b;
    return inverse;
  }();
  std::string bytes;
  for (size_t pos = 0; pos < symbol.size();) {
    size_t length = 0;
    const char32_t cp = utf8::decode_code_point(symbol, pos, length);
    if (cp >= unicode_to_byte.size() || unicode_to_byte[cp] < 0) return symbol;
    bytes += static_cast<char>(unicode_to_byte[cp]);
    pos += length;
  }
  return bytes;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  GPTJ_CHECK(in.good(), "{}: cannot open tokenizer file", path.string());
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

json::value parse_json_file(const fs::path& path) {
  const std::string text = read_file(path);
  boost::system::error_code ec;
  json::value value = json::parse(text, ec);
  GPTJ_CHECK(!ec, "{}: invalid JSON: {}", path.string(), ec.message());
  return value;
}

using Vocab = std::unordered_map<std::string, int32_t>;  // symbol (byte-to-unicode form) -> id
using MergeList = std::vector<std::pair<std::string, std::string>>;  // in rank order

Vocab read_vocab(const json::value& value, const std::string& origin) {
  GPTJ_CHECK(value.is_object(), "{}: the vocab must be a JSON object of token -> id", origin);
  Vocab vocab;
  for (const auto& [key, id] : value.get_object()) {
    GPTJ_CHECK(id.is_int64() || id.is_uint64(), "{}: vocab entry '{}' has a non-integer id", origin,
               std::string(key));
    const auto number = id.to_number<int64_t>();
    GPTJ_CHECK(number >= 0 && number < INT32_MAX, "{}: vocab entry '{}' has id {} out of range",
               origin, std::string(key), number);
    vocab.emplace(std::string(key), static_cast<int32_t>(number));
  }
  GPTJ_CHECK(!vocab.empty(), "{}: the vocab is empty", origin);
  return vocab;
}

MergeList read_merges_txt(const fs::path& path) {
  std::istringstream in(read_file(path));
  MergeList merges;
  std::string line;
  for (int line_number = 1; std::getline(in, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    GPTJ_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               "{}:{}: expected two symbols separated by one space, got '{}'", path.string(),
               line_number, line);
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

MergeList read_json_merges(const json::value& value, const std::string& origin) {
  GPTJ_CHECK(value.is_array(), "{}: model.merges must be an array", origin);
  MergeList merges;
  size_t index = 0;
  for (const auto& entry : value.get_array()) {
    if (entry.is_string()) {
      const std::string text(entry.get_string());
      const size_t space = text.find(' ');
      GPTJ_CHECK(space != std::string::npos && space > 0 && space + 1 < text.size(),
                 "{}: model.merges[{}] '{}' is not two symbols separated by a space", origin, index,
                 text);
      merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else {
      GPTJ_CHECK(entry.is_array() && entry.get_array().size() == 2 &&
                     entry.get_array()[0].is_string() && entry.get_array()[1].is_string(),
                 "{}: model.merges[{}] must be \"a b\" or [\"a\", \"b\"]", origin, index);
      merges.emplace_back(std::string(entry.get_array()[0].get_string()),
                          std::string(entry.get_array()[1].get_string()));
    }
    ++index;
  }
  return merges;
}

}  // namespace

struct Tokenizer::Impl {
  std::string origin;                      // where the files came from, for messages
  std::vector<std::string> bytes_by_id;    // raw bytes of each token
  std::vector<bool> present;               // whether an id is in the vocab at all
  std::array<int32_t, 256> byte_token{};   // id of each single-byte symbol, -1 when missing
  BpeMergeTable merges;
  int32_t eos = -1;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;  // piece bytes -> ids

  Impl(const Vocab& vocab, const MergeList& merge_list, std::string origin_in);
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  std::vector<int32_t> bpe(std::string_view piece) const;
};

Tokenizer::Impl::Impl(const Vocab& vocab, const MergeList& merge_list, std::string origin_in)
    : origin(std::move(origin_in)) {
  int32_t max_id = -1;
  for (const auto& entry : vocab) max_id = std::max(max_id, entry.second);
  bytes_by_id.resize(static_cast<size_t>(max_id) + 1);
  present.assign(bytes_by_id.size(), false);
  for (const auto& [symbol, id] : vocab) {
    bytes_by_id[id] = symbol_to_bytes(symbol);
    present[id] = true;
  }
  const auto byte_symbols = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(encode_utf8(byte_symbols[b]));
    byte_token[b] = it == vocab.end() ? -1 : it->second;
  }
  // Merges whose parts or result the vocab lacks can never apply; skipping them matches what the
  // reference encoders produce for such files. The first (lowest-rank) copy of a pair wins.
  for (size_t rank = 0; rank < merge_list.size(); ++rank) {
    const auto& [left, right] = merge_list[rank];
    const auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || m == vocab.end()) continue;
    merges.add(l->second, r->second, BpeMerge{static_cast<int32_t>(rank), m->second});
  }
  if (const auto it = vocab.find(std::string(kEndOfText)); it != vocab.end()) eos = it->second;
}

// BPE of one pre-token (at most kMaxPieceBytes), exactly as GPT-2's encoder.py (see bpe.h).
std::vector<int32_t> Tokenizer::Impl::bpe(std::string_view piece) const {
  std::vector<int32_t> word;
  word.reserve(piece.size());
  for (const char c : piece) {
    const int32_t id = byte_token[static_cast<unsigned char>(c)];
    GPTJ_CHECK(id >= 0, "{}: the vocab has no symbol for byte 0x{:02X}", origin,
               static_cast<unsigned>(static_cast<unsigned char>(c)));
    word.push_back(id);
  }
  bpe_merge(word, merges);
  return word;
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  // The cap (tokenizer.h): a longer pre-token is BPE'd in chunks of at most kMaxPieceBytes, each
  // ending on a UTF-8 character boundary where one lies in its last 3 bytes.
  while (piece.size() > kMaxPieceBytes) {
    size_t cut = kMaxPieceBytes;
    while (cut > kMaxPieceBytes - 3 && (static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) --cut;
    if ((static_cast<unsigned char>(piece[cut]) & 0xC0) == 0x80) cut = kMaxPieceBytes;
    const auto ids = bpe(piece.substr(0, cut));
    out.insert(out.end(), ids.begin(), ids.end());
    piece.remove_prefix(cut);
  }
  if (piece.size() == 1) {  // one byte is always one token; no cache needed
    const auto ids = bpe(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (const auto it = cache.find(std::string(piece)); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  auto ids = bpe(piece);  // computed outside the lock: other threads keep encoding meanwhile
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::string(piece), std::move(ids));
  }
}

// The GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matched by hand. At each position the alternatives are tried in order; each is a greedy run with
// nothing after it, so no backtracking is needed except the whitespace lookahead, which gives up the
// last whitespace character before a non-space (that one then leads the next piece, e.g. " word").
void Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  enum class Class : uint8_t { kLetter, kNumber, kSpace, kOther };
  std::vector<char32_t> cps;
  std::vector<Class> classes;
  std::vector<size_t> offsets;  // byte offset of each code point; offsets.back() == text.size()
  for (size_t pos = 0; pos < text.size();) {
    size_t length = 0;
    const char32_t cp = utf8::decode_code_point(text, pos, length);
    cps.push_back(cp);
    // An invalid byte is neither letter, number nor space: it joins the "other" runs.
    classes.push_back(cp == utf8::kInvalid ? Class::kOther
                      : utf8::is_letter(cp) ? Class::kLetter
                      : utf8::is_number(cp) ? Class::kNumber
                      : utf8::is_space(cp)  ? Class::kSpace
                                            : Class::kOther);
    offsets.push_back(pos);
    pos += length;
  }
  offsets.push_back(text.size());
  const size_t n = cps.size();
  auto emit = [&](size_t begin, size_t end) {
    encode_piece(text.substr(offsets[begin], offsets[end] - offsets[begin]), out);
  };

  for (size_t i = 0; i < n;) {
    // 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2)
    if (cps[i] == '\'' && i + 1 < n) {
      const char32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
      size_t length = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        length = 2;
      } else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        length = 3;
      }
      if (length > 0) {
        emit(i, i + length);
        i += length;
        continue;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class.
    const size_t run_start = (cps[i] == ' ' && i + 1 < n && classes[i + 1] != Class::kSpace) ? i + 1
                                                                                            : i;
    const Class run_class = classes[run_start];
    if (run_class != Class::kSpace) {
      size_t end = run_start + 1;
      while (end < n && classes[end] == run_class) ++end;
      emit(i, end);
      i = end;
      continue;
    }
    // '\s+(?!\S)' then '\s+': a whitespace run; when a non-space follows a run of two or more, the
    // last whitespace character is left for the next piece.
    size_t end = i + 1;
    while (end < n && classes[end] == Class::kSpace) ++end;
    if (end < n && end - i >= 2) --end;
    emit(i, end);
    i = end;
  }
}

Tokenizer Tokenizer::from_model_dir(const std::string& model_dir) {
  const fs::path dir(model_dir);
  const fs::path vocab_path = dir / "vocab.json", merges_path = dir / "merges.txt";
  const fs::path tokenizer_json = dir / "tokenizer.json";
  const bool has_vocab = fs::is_regular_file(vocab_path);
  const bool has_merges = fs::is_regular_file(merges_path);

  if (has_vocab && has_merges) {
    const Vocab vocab = read_vocab(parse_json_file(vocab_path), vocab_path.string());
    const MergeList merges = read_merges_txt(merges_path);
    return Tokenizer(std::make_shared<Impl>(vocab, merges, model_dir));
  }
  if (fs::is_regular_file(tokenizer_json)) {
    const std::string origin = tokenizer_json.string();
    const json::value root = parse_json_file(tokenizer_json);
    const json::value* model = root.is_object() ? root.get_object().if_contains("model") : nullptr;
    GPTJ_CHECK(model != nullptr && model->is_object(), "{}: missing object 'model'", origin);
    const json::value* vocab_value = model->get_object().if_contains("vocab");
    const json::value* merges_value = model->get_object().if_contains("merges");
    GPTJ_CHECK(vocab_value != nullptr, "{}: missing field 'model.vocab'", origin);
    GPTJ_CHECK(merges_value != nullptr, "{}: missing field 'model.merges'", origin);
    const Vocab vocab = read_vocab(*vocab_value, origin + " (model.vocab)");
    const MergeList merges = read_json_merges(*merges_value, origin);
    return Tokenizer(std::make_shared<Impl>(vocab, merges, model_dir));
  }
  if (has_vocab != has_merges) {
    fail("{}: tokenizer file missing: {} (found {}, and no tokenizer.json)", model_dir,
         has_vocab ? "merges.txt" : "vocab.json", has_vocab ? "vocab.json" : "merges.txt");
  }
  fail("{}: no tokenizer files (need vocab.json + merges.txt, or tokenizer.json)", model_dir);
}

bool Tokenizer::available(const std::string& model_dir) {
  const fs::path dir(model_dir);
  std::error_code ec;
  return (fs::is_regular_file(dir / "vocab.json", ec) && fs::is_regular_file(dir / "merges.txt", ec)) ||
         fs::is_regular_file(dir / "tokenizer.json", ec);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  // Special tokens are split out before pre-tokenization, so "a<|endoftext|>b" -> a, EOS, b.
  size_t pos = 0;
  if (impl_->eos >= 0) {
    for (size_t found; (found = text.find(kEndOfText, pos)) != std::string_view::npos;) {
      impl_->encode_ordinary(text.substr(pos, found - pos), out);
      out.push_back(impl_->eos);
      pos = found + kEndOfText.size();
    }
  }
  impl_->encode_ordinary(text.substr(pos), out);
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  GPTJ_CHECK(id >= 0 && id < vocab_size() && impl_->present[id],
             "token id {} is not in the tokenizer's vocabulary ({} ids, from {})", id, vocab_size(),
             impl_->origin);
  return impl_->bytes_by_id[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (const int32_t id : ids) {
    GPTJ_CHECK(id >= 0 && id < vocab_size() && impl_->present[id],
               "token id {} is not in the tokenizer's vocabulary ({} ids, from {})", id,
               vocab_size(), impl_->origin);
    text += impl_->bytes_by_id[id];
  }
  return text;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->bytes_by_id.size()); }

int32_t Tokenizer::eos_id() const { return impl_->eos; }

}  // namespace gptj
