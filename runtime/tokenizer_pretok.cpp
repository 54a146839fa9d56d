// Hand-written equivalents of the pre-tokenizer regexes. Each matcher looks at code point i
// and returns the end of the regex's match there, trying the alternatives in the regex's order
// (Oniguruma is leftmost-first, not longest). Every code point is whitespace, a letter, a
// number or "other", and each regex has an alternative for each, so a match always exists.
#include "runtime/tokenizer_pretok.h"

#include <cstdint>

#include "runtime/unicode_text.h"

namespace cllm {
namespace {

struct Cpts {
  std::vector<uint32_t> cp;
  std::vector<size_t> off;  // byte offset of each code point, plus the end offset
  size_t size() const { return cp.size(); }
  bool ws(size_t i) const { return i < cp.size() && unicode::is_whitespace(cp[i]); }
  bool letter(size_t i) const { return i < cp.size() && unicode::is_letter(cp[i]); }
  bool number(size_t i) const { return i < cp.size() && unicode::is_number(cp[i]); }
  bool other(size_t i) const { return i < cp.size() && !ws(i) && !letter(i) && !number(i); }
  bool is(size_t i, uint32_t c) const { return i < cp.size() && cp[i] == c; }
  bool newline(size_t i) const { return is(i, '\r') || is(i, '\n'); }
};

Cpts decode(std::string_view s) {
  Cpts c;
  for (size_t pos = 0; pos < s.size();) {
    size_t len;
    c.cp.push_back(unicode::decode_utf8(s, pos, &len));
    c.off.push_back(pos);
    pos += len;
  }
  c.off.push_back(s.size());
  return c;
}

uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d at i (i holds the apostrophe); 0 when none matches.
size_t contraction(const Cpts& t, size_t i, bool ignore_case) {
  auto at = [&](size_t k) -> uint32_t {
    if (k >= t.size()) return 0;
    return ignore_case ? lower_ascii(t.cp[k]) : t.cp[k];
  };
  if (!t.is(i, '\'')) return 0;
  uint32_t a = at(i + 1), b = at(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  return 0;
}

// \s+(?!\S)|\s+ at a whitespace code point i: the run, less its last code point when a
// non-space follows and the run is longer than one.
size_t whitespace_tail(const Cpts& t, size_t i) {
  size_t j = i;
  while (t.ws(j)) ++j;
  if (j == t.size() || j - i == 1) return j;
  return j - 1;
}

template <typename Pred>
size_t run(size_t j, Pred pred) {
  while (pred(j)) ++j;
  return j;
}

size_t match_gpt2(const Cpts& t, size_t i) {
  if (size_t e = contraction(t, i, false)) return e;
  size_t s = t.is(i, ' ') ? i + 1 : i;  // the optional leading space
  auto letter = [&](size_t k) { return t.letter(k); };
  auto number = [&](size_t k) { return t.number(k); };
  auto other = [&](size_t k) { return t.other(k); };
  if (t.letter(s)) return run(s, letter);
  if (t.number(s)) return run(s, number);
  if (t.other(s)) return run(s, other);
  return whitespace_tail(t, i);
}

size_t match_llama3(const Cpts& t, size_t i) {
  if (size_t e = contraction(t, i, true)) return e;
  auto letter = [&](size_t k) { return t.letter(k); };
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (t.letter(i)) return run(i, letter);
  if (!t.newline(i) && !t.number(i) && t.letter(i + 1)) return run(i + 1, letter);
  // \p{N}{1,3}
  if (t.number(i)) {
    size_t j = i;
    while (j < i + 3 && t.number(j)) ++j;
    return j;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  size_t s = t.is(i, ' ') ? i + 1 : i;
  if (t.other(s)) {
    size_t j = run(s, [&](size_t k) { return t.other(k); });
    return run(j, [&](size_t k) { return t.newline(k); });
  }
  // \s*[\r\n]+ : the whitespace run up to and including its last newline.
  size_t j = run(i, [&](size_t k) { return t.ws(k); });
  for (size_t k = j; k > i; --k) {
    if (t.newline(k - 1)) return k;
  }
  return whitespace_tail(t, i);
}

size_t match_digits(const Cpts& t, size_t i, bool individual) {
  if (t.number(i)) return individual ? i + 1 : run(i, [&](size_t k) { return t.number(k); });
  return run(i, [&](size_t k) { return k < t.size() && !t.number(k); });
}

void split(std::string_view piece, PreTokStage stage, std::vector<std::string_view>& out) {
  Cpts t = decode(piece);
  for (size_t i = 0; i < t.size();) {
    size_t e = 0;
    switch (stage) {
      case PreTokStage::Gpt2Regex: e = match_gpt2(t, i); break;
      case PreTokStage::Llama3Regex: e = match_llama3(t, i); break;
      case PreTokStage::DigitsIndividual: e = match_digits(t, i, true); break;
      case PreTokStage::DigitsGrouped: e = match_digits(t, i, false); break;
    }
    out.push_back(piece.substr(t.off[i], t.off[e] - t.off[i]));
    i = e;
  }
}

}  // namespace

std::vector<std::string_view> pre_tokenize(std::string_view text, const std::vector<PreTokStage>& stages) {
  std::vector<std::string_view> pieces;
  if (!text.empty()) pieces.push_back(text);
  for (PreTokStage stage : stages) {
    std::vector<std::string_view> next;
    next.reserve(pieces.size() * 2);
    for (std::string_view p : pieces) split(p, stage, next);
    pieces.swap(next);
  }
  return pieces;
}

bool pre_tok_stage_from_regex(const std::string& regex, PreTokStage* stage) {
  static const char* kGpt2 =
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
  static const char* kLlama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (regex == kGpt2) {
    *stage = PreTokStage::Gpt2Regex;
    return true;
  }
  if (regex == kLlama3) {
    *stage = PreTokStage::Llama3Regex;
    return true;
  }
  return false;
}

}  // namespace cllm
