// UTF-8 and Unicode helpers for the tokenizer (owned by the generate library).
//  - decode_code_point: one code point from UTF-8, tolerant of invalid bytes;
//  - is_letter / is_number / is_space: the \p{L}, \p{N} and \s classes of the GPT-2 pre-tokenizer
//    pattern (general categories L* and N* from Unicode 14 tables; \s = Unicode White_Space, as in
//    Python's `regex` module, which GPT-2's encoder.py uses);
//  - incomplete_utf8_tail: how many trailing bytes form a valid but unfinished UTF-8 sequence, which
//    StreamDecoder (declared in tokenizer.h, implemented in utf8_stream.cc) holds back.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gptj::utf8 {

// Decodes the code point starting at text[pos] and sets `length` to its byte count (1..4). A byte
// that does not start a valid, complete, shortest-form sequence decodes as kInvalid with length 1.
inline constexpr char32_t kInvalid = 0xFFFFFFFF;
char32_t decode_code_point(std::string_view text, size_t pos, size_t& length);

bool is_letter(char32_t cp);  // \p{L}
bool is_number(char32_t cp);  // \p{N}
bool is_space(char32_t cp);   // \s (White_Space)

// Number of bytes at the end of `bytes` that begin a valid UTF-8 sequence which is not yet complete
// (0..3). Bytes that can never become valid are not counted: they are emitted as they are.
size_t incomplete_utf8_tail(std::string_view bytes);

// `bytes` with every invalid byte replaced by U+FFFD (as Python's errors="replace" and Hugging
// Face's decode do), so it can go into JSON. Valid text comes back unchanged.
std::string to_valid_utf8(std::string_view bytes);

}  // namespace gptj::utf8
