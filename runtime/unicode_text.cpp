// UTF-8 decoding follows the Unicode "maximal subpart" rule (Unicode 15, section 3.9), the
// same rule Rust's from_utf8_lossy applies, so cllm's U+FFFD replacements match HF's.
#include "runtime/unicode_text.h"

#include <algorithm>

namespace cllm::unicode {
namespace {

// Valid range of the second byte for a lead byte; later continuation bytes are 0x80..0xBF.
// Returns the sequence length (0 for a byte that cannot start a sequence).
int lead_info(uint8_t b, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) {
    if (b == 0xE0) *lo = 0xA0;  // no overlong forms
    if (b == 0xED) *hi = 0x9F;  // no surrogates
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (b == 0xF0) *lo = 0x90;
    if (b == 0xF4) *hi = 0x8F;  // <= U+10FFFF
    return 4;
  }
  return 0;
}

// Number of bytes of s[pos..] that form a valid sequence (== need) or a valid but
// truncated/broken prefix of one (< need); need is the full length.
size_t valid_run(std::string_view s, size_t pos, int* need) {
  uint8_t lo, hi;
  *need = lead_info(static_cast<uint8_t>(s[pos]), &lo, &hi);
  if (*need <= 1) return *need;
  size_t n = 1;
  while (n < static_cast<size_t>(*need) && pos + n < s.size()) {
    uint8_t c = static_cast<uint8_t>(s[pos + n]);
    if (n == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
    ++n;
  }
  return n;
}

bool in_ranges(const CodepointRange* r, size_t count, uint32_t cp) {
  const CodepointRange* end = r + count;
  const CodepointRange* it =
      std::upper_bound(r, end, cp, [](uint32_t v, const CodepointRange& x) { return v < x.first; });
  return it != r && cp <= (it - 1)->last;
}

}  // namespace

uint32_t decode_utf8(std::string_view s, size_t pos, size_t* len) {
  uint8_t b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) {
    *len = 1;
    return b;
  }
  int need;
  size_t n = valid_run(s, pos, &need);
  if (need == 0 || n < static_cast<size_t>(need)) {
    *len = 1;
    return kInvalid;
  }
  uint32_t cp = b & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[pos + i]) & 0x3F);
  *len = n;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
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
}

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return cp != kInvalid && in_ranges(kLetterRanges, kLetterRanges_count, cp);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return cp != kInvalid && in_ranges(kNumberRanges, kNumberRanges_count, cp);
}

bool is_whitespace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    int need;
    size_t n = valid_run(s, pos, &need);
    if (need > 0 && n == static_cast<size_t>(need)) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      out += "\xEF\xBF\xBD";
      pos += std::max<size_t>(n, 1);
    }
  }
  return out;
}

size_t code_points(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

size_t complete_prefix_len(std::string_view s) {
  // A held-back tail is at most 3 bytes: the start of a 4-byte sequence.
  size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t pos = start; pos < s.size(); ++pos) {
    uint8_t b = static_cast<uint8_t>(s[pos]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation: belongs to an earlier lead
    int need;
    size_t n = valid_run(s, pos, &need);
    if (need > 1 && n < static_cast<size_t>(need) && pos + n == s.size()) return pos;
  }
  return s.size();
}

size_t Utf8CharCounter::add(std::string_view bytes) {
  pending_.append(bytes);
  const size_t done = complete_prefix_len(pending_);
  const size_t chars = code_points(to_valid_utf8(std::string_view(pending_).substr(0, done)));
  pending_.erase(0, done);
  return chars;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  for (size_t pos = 0;;) {
    size_t hit = s.find(from, pos);
    out.append(s.substr(pos, hit - pos));
    if (hit == std::string_view::npos) return out;
    out.append(to);
    pos = hit + from.size();
  }
}

}  // namespace cllm::unicode
