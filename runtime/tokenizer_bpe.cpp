// Byte-level BPE encoder/decoder. Encoding: split out added tokens (leftmost-longest, as HF's
// AddedVocabulary), pre-tokenize each remaining segment, map every piece's bytes to their
// byte tokens, then merge adjacent pairs lowest-rank-first (ties: leftmost), as HF's
// Word::merge_all and llama.cpp do. Merges are keyed by token-id pairs, and encoded pieces
// are cached, so steady-state encoding is mostly hash lookups.
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_table.h"

#include <array>
#include <atomic>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "core/check.h"
#include "runtime/unicode_text.h"

namespace cllm {

uint32_t byte_to_unicode(uint8_t b) {
  // Printable Latin-1 bytes stand for themselves; the other 68 are shifted to U+0100.. in order.
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
  uint32_t n = 0;
  for (uint32_t c = 0; c < b; ++c) {
    if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) ++n;
  }
  return 256 + n;
}

namespace {

std::atomic<uint64_t> g_pair_lookups{0};  // bpe_pair_lookups()

using unicode::replace_all;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // "▁", sentencepiece's space

// Sentencepiece's byte piece "<0x0A>" (two upper-case hex digits).
std::string byte_piece(uint8_t b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

class BpeTokenizer : public TokenTable {
 public:
  BpeTokenizer(BpeVocab v, const std::string& source) : v_(std::move(v)), added_(v_.added) {
    const int n = static_cast<int>(v_.tokens.size());
    CLLM_CHECK(n > 0 && v_.attrs.size() == v_.tokens.size(),
               source << ": tokenizer vocab is empty or its token types do not match it");
    CLLM_CHECK(v_.bos_id < n && v_.eos_id < n, source << ": bos/eos id out of range of " << n << " tokens");
    for (int32_t id = 0; id < n; ++id) ids_.emplace(v_.tokens[id], id);
    bos_ = v_.bos_id;
    eos_ = v_.eos_id;

    std::array<int, 324> cp_to_byte;  // byte-level code points are all < 324
    cp_to_byte.fill(-1);
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = byte_to_unicode(static_cast<uint8_t>(b));
      cp_to_byte[cp] = b;
      std::string s;
      if (v_.spm.on) s = byte_piece(static_cast<uint8_t>(b));
      else unicode::append_utf8(s, cp);
      auto it = ids_.find(s);
      byte_id_[b] = it == ids_.end() ? -1 : it->second;
    }
    CLLM_CHECK(v_.spm.unk_id < n, source << ": unk id " << v_.spm.unk_id << " out of range");

    for (size_t rank = 0; rank < v_.merges.size(); ++rank) {
      const std::string& m = v_.merges[rank];
      size_t sp = m.find(' ', 1);
      CLLM_CHECK(sp != std::string::npos, source << ": merge " << rank << " '" << m << "' is not 'left right'");
      int32_t a = token_id(m.substr(0, sp)), b = token_id(m.substr(sp + 1)), ab = token_id(m.substr(0, sp) + m.substr(sp + 1));
      CLLM_CHECK(a >= 0 && b >= 0 && ab >= 0,
                 source << ": merge " << rank << " '" << m << "' uses a token that is not in the vocab");
      merges_.emplace(pair_key(a, b), Merge{static_cast<int32_t>(rank), ab});  // first rank wins
    }

    bytes_.resize(n);
    for (int32_t id = 0; id < n; ++id) {
      const std::string& t = v_.tokens[id];
      switch (v_.attrs[id]) {
        case TokenAttr::Control:
        case TokenAttr::Unused: break;
        case TokenAttr::UserDefined: bytes_[id] = t; break;
        case TokenAttr::Normal: {
          if (v_.spm.on) {  // "▁" is a space; <0xNN> is that byte (HF's ByteFallback decoder)
            bytes_[id] = replace_all(t, kSpmSpace, " ");
            for (int b = 0; b < 256; ++b)
              if (byte_id_[b] == id) bytes_[id] = std::string(1, static_cast<char>(b));
            break;
          }
          // HF's ByteLevel decoder: a token with any unmapped char is emitted as its raw text.
          std::string out;
          bool mapped = true;
          for (size_t pos = 0; pos < t.size() && mapped;) {
            size_t len;
            uint32_t cp = unicode::decode_utf8(t, pos, &len);
            mapped = cp < cp_to_byte.size() && cp_to_byte[cp] >= 0;
            if (mapped) out += static_cast<char>(cp_to_byte[cp]);
            pos += len;
          }
          bytes_[id] = mapped ? out : t;
        }
      }
    }
    for (const AddedToken& a : v_.added) {
      CLLM_CHECK(a.id >= 0 && a.id < n, source << ": added token id " << a.id << " out of range");
    }
    // Sentencepiece decoding drops the space its prepended "▁" stands for.
    strip_leading_space_ = v_.spm.on && v_.spm.prepend != BpeVocab::Spm::Prepend::Never;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && v_.bos_id >= 0) out.push_back(v_.bos_id);
    added_.split(
        text,
        [&](std::string_view seg) {
          if (v_.spm.on) encode_spm_segment(seg, seg.data() == text.data(), out);
          else encode_segment(seg, out);
        },
        [&](int32_t id) { out.push_back(id); });
    return out;
  }


 private:
  struct Merge {
    int32_t rank, id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void encode_segment(std::string_view seg, std::vector<int32_t>& out) const {
    if (seg.empty()) return;
    std::string prefixed;
    if (v_.add_prefix_space && seg.front() != ' ') {
      prefixed.reserve(seg.size() + 1);
      prefixed.append(" ").append(seg);
      seg = prefixed;
    }
    for (std::string_view piece : pre_tokenize(seg, v_.pre)) encode_piece(piece, out);
  }

  // Sentencepiece-style segment: spaces become "▁", a "▁" is prepended as BpeVocab::Spm says
  // (at_start: the segment begins the text, so Prepend::First applies), then the whole segment,
  // or with split each "▁word" of it, is merged.
  void encode_spm_segment(std::string_view seg, bool at_start, std::vector<int32_t>& out) const {
    if (seg.empty()) return;
    std::string s = replace_all(seg, " ", kSpmSpace);
    using P = BpeVocab::Spm::Prepend;
    const bool starts = s.rfind(kSpmSpace, 0) == 0;
    if (v_.spm.prepend == P::Every || (v_.spm.prepend == P::Always && !starts) ||
        (v_.spm.prepend == P::First && at_start && !starts))
      s.insert(0, kSpmSpace);
    if (!v_.spm.split) return encode_piece(s, out);
    for (size_t begin = 0; begin < s.size();) {  // pieces start at each "▁" (MergedWithNext)
      size_t next = s.find(kSpmSpace, begin + 1);
      if (next == std::string::npos) next = s.size();
      encode_piece(std::string_view(s).substr(begin, next - begin), out);
      begin = next;
    }
  }

  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = bpe(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kCacheMax) cache_.clear();  // bounded memory on adversarial input
    cache_.emplace(std::move(key), std::move(ids));
  }

  std::vector<int32_t> bpe(std::string_view piece) const {
    if (v_.ignore_merges) {
      std::string mapped;
      for (unsigned char b : piece) unicode::append_utf8(mapped, byte_to_unicode(b));
      int32_t whole = token_id(mapped);
      if (whole >= 0 && v_.attrs[whole] == TokenAttr::Normal) return {whole};
    }
    // Symbols form a linked list; a byte with no token is dropped, as HF's BPE does without unk.
    struct Sym {
      int32_t id;
      int prev, next;
    };
    std::vector<Sym> sym;
    const auto add = [&](int32_t id) {
      int i = static_cast<int>(sym.size());
      sym.push_back({id, i - 1, i + 1});
    };
    if (v_.spm.on) {
      // Sentencepiece-style: one symbol per UTF-8 character; a character missing from the vocab
      // becomes its byte tokens, or unk when one of those is missing too (consecutive unks fuse).
      for (size_t pos = 0; pos < piece.size();) {
        size_t len;
        unicode::decode_utf8(piece, pos, &len);
        const int32_t id = token_id(piece.substr(pos, len));
        bool bytes_ok = true;
        for (size_t k = 0; k < len; ++k) bytes_ok = bytes_ok && byte_id_[static_cast<uint8_t>(piece[pos + k])] >= 0;
        if (id >= 0) {
          add(id);
        } else if (bytes_ok) {
          for (size_t k = 0; k < len; ++k) add(byte_id_[static_cast<uint8_t>(piece[pos + k])]);
        } else if (v_.spm.unk_id >= 0 && (sym.empty() || sym.back().id != v_.spm.unk_id)) {
          add(v_.spm.unk_id);
        }
        pos += len;
      }
    } else {
      for (unsigned char b : piece) {
        if (byte_id_[b] < 0) continue;
        add(byte_id_[b]);
      }
    }
    if (sym.empty()) return {};
    sym.back().next = -1;

    struct Cand {
      int32_t rank;
      int left;
      int32_t left_id, right_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> pq;
    auto push = [&](int left) {
      if (left < 0 || sym[left].next < 0) return;
      g_pair_lookups.fetch_add(1, std::memory_order_relaxed);
      auto it = merges_.find(pair_key(sym[left].id, sym[sym[left].next].id));
      if (it != merges_.end()) pq.push({it->second.rank, left, sym[left].id, sym[sym[left].next].id});
    };
    for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) push(i);
    while (!pq.empty()) {
      Cand c = pq.top();
      pq.pop();
      Sym& l = sym[c.left];
      // Stale candidate: the left symbol was merged away or one side changed since the push.
      if (l.id != c.left_id || l.next < 0 || sym[l.next].id != c.right_id) continue;
      int r = l.next;
      l.id = merges_.at(pair_key(c.left_id, c.right_id)).id;
      l.next = sym[r].next;
      if (l.next >= 0) sym[l.next].prev = c.left;
      sym[r].id = -1;  // dead; never matches a candidate again
      push(l.prev);
      push(c.left);
    }
    std::vector<int32_t> ids;
    for (int i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
    return ids;
  }

  static constexpr size_t kCacheMax = 1 << 16;
  BpeVocab v_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_id_;
  AddedTokenSplitter added_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

uint64_t bpe_pair_lookups() { return g_pair_lookups.load(std::memory_order_relaxed); }

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeVocab vocab, const std::string& source) {
  return std::make_unique<BpeTokenizer>(std::move(vocab), source);
}

}  // namespace cllm
