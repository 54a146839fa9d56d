// UTF-8 and Unicode-category helpers for the tokenizers. Text may hold invalid UTF-8 (the
// tokenizers accept any bytes): such bytes decode one at a time to kInvalid, which has no
// category, so they pre-tokenize as punctuation and still encode through their byte tokens.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cllm::unicode {

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

struct CodepointRange {
  uint32_t first, last;  // inclusive
};
// Generated into unicode_tables.cpp (sorted, disjoint).
extern const CodepointRange kLetterRanges[];
extern const size_t kLetterRanges_count;
extern const CodepointRange kNumberRanges[];
extern const size_t kNumberRanges_count;

// Decodes the code point at s[pos]; sets len to its byte length (1 for an invalid byte).
uint32_t decode_utf8(std::string_view s, size_t pos, size_t* len);
void append_utf8(std::string& out, uint32_t cp);

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_whitespace(uint32_t cp);  // \s as Oniguruma reads it: the White_Space property

// Replaces every invalid UTF-8 subsequence by U+FFFD, as Rust's String::from_utf8_lossy
// (which HF tokenizers' decode uses): one U+FFFD per maximal invalid subpart.
std::string to_valid_utf8(std::string_view s);

// Characters (code points) of UTF-8 text: its bytes that do not continue a sequence. What Python's
// len() and JavaScript's codePointAt count in the decoded text (OpenAI's text_offset unit).
size_t code_points(std::string_view s);

// Length of the longest prefix of s that does not end inside a UTF-8 sequence that later
// bytes could still complete. Streaming emits that prefix and holds back the rest.
size_t complete_prefix_len(std::string_view s);

// Characters of a text that arrives in pieces of raw bytes (tokens), as to_valid_utf8 decodes the
// whole: add() returns how many characters a piece completes. A character counts with the piece
// that completes it; an invalid byte counts as its U+FFFD once the bytes after it show it cannot be
// completed. So the counts add up to the decoded text's length before any piece, whatever the
// pieces split: the text_offset of the next piece, which plain code_points() of each piece loses
// on bytes that are not valid UTF-8 on their own.
class Utf8CharCounter {
 public:
  size_t add(std::string_view bytes);

 private:
  std::string pending_;  // the tail that later bytes could still complete (at most 3 bytes)
};

// s with every occurrence of `from` (non-empty) replaced by `to`, left to right.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

}  // namespace cllm::unicode
