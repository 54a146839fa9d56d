// Both sentencepiece paths split control/user-defined tokens out of the text first and encode
// each remaining segment on its own. tokenizer.model gives each segment its own leading "▁"
// (HF's legacy LLaMA behaviour); the GGUF path prepends "▁" only at the start of the text, as
// sentencepiece does. Decode strips the single space that the dummy prefix added.
#include "runtime/tokenizer_spm.h"
#include "runtime/tokenizer_table.h"

#include <sentencepiece_processor.h>

#include <cctype>
#include <queue>
#include <unordered_map>

#include "core/check.h"
#include "runtime/tokenizer_added.h"
#include "runtime/unicode_text.h"

namespace cllm {
namespace {

using unicode::replace_all;

constexpr std::string_view kSpace = "\xE2\x96\x81";            // U+2581 "▁"
constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";     // sentencepiece's " ⁇ "

// "<0x41>" -> 0x41; -1 when the piece is not a byte piece.
int parse_byte_piece(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>' || !std::isxdigit(static_cast<unsigned char>(p[3])) ||
      !std::isxdigit(static_cast<unsigned char>(p[4])))
    return -1;
  return static_cast<int>(std::stoul(p.substr(3, 2), nullptr, 16));
}

// Both kinds strip sentencepiece's dummy prefix when decoding.
class SpmBase : public TokenTable {
 protected:
  SpmBase() { strip_leading_space_ = true; }
};

class SentencePieceTokenizer : public SpmBase {
 public:
  explicit SentencePieceTokenizer(const TokenizerSpec& spec) {
    auto st = sp_.Load(spec.path);
    CLLM_CHECK(st.ok(), "cannot load sentencepiece model " << spec.path << ": " << st.ToString());
    const int n = sp_.GetPieceSize();
    std::vector<AddedToken> control;
    bytes_.resize(n);
    for (int id = 0; id < n; ++id) {
      const std::string& piece = sp_.IdToPiece(id);
      ids_.emplace(piece, id);
      if (sp_.IsControl(id)) {
        if (!piece.empty()) control.push_back({id, piece});
      } else if (sp_.IsUnknown(id)) {
        bytes_[id] = kUnkSurface;
      } else if (sp_.IsByte(id)) {
        const int b = parse_byte_piece(piece);
        CLLM_CHECK(b >= 0, spec.path << ": byte piece " << id << " '" << piece << "' is not <0xNN>");
        bytes_[id] = std::string(1, static_cast<char>(b));
      } else {
        bytes_[id] = replace_all(piece, kSpace, " ");
      }
    }
    splitter_ = std::make_unique<AddedTokenSplitter>(std::move(control));
    bos_ = spec.bos_id >= 0 ? spec.bos_id : sp_.bos_id();
    eos_ = spec.eos_id >= 0 ? spec.eos_id : sp_.eos_id();
    // Without a dummy prefix there is no added space to strip; probe rather than parse the proto.
    std::vector<int> probe;
    sp_.Encode("a", &probe);
    strip_leading_space_ = !probe.empty() && !bytes_[probe[0]].empty() && bytes_[probe[0]][0] == ' ';
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    splitter_->split(
        text,
        [&](std::string_view seg) {
          if (seg.empty()) return;
          std::vector<int> ids;
          auto st = sp_.Encode(seg, &ids);
          CLLM_CHECK(st.ok(), "sentencepiece encode failed: " << st.ToString());
          out.insert(out.end(), ids.begin(), ids.end());
        },
        [&](int32_t id) { out.push_back(id); });
    return out;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::unique_ptr<AddedTokenSplitter> splitter_;
};

// llama.cpp's llm_tokenizer_spm: start from UTF-8 characters, repeatedly merge the adjacent
// pair whose concatenation is the highest-scoring token (ties: leftmost), then emit symbols
// that are not tokens as <0xNN> byte tokens (or unk when the vocab has no byte tokens).
class GgufSpmTokenizer : public SpmBase {
 public:
  GgufSpmTokenizer(const TokenizerSpec& spec, bool add_space_prefix) : add_space_prefix_(add_space_prefix) {
    const size_t n = spec.tokens.size();
    CLLM_CHECK(n > 0 && spec.scores.size() == n && spec.token_types.size() == n,
               spec.path << ": GGUF SPM tokenizer: " << n << " tokens, " << spec.scores.size() << " scores, "
                                      << spec.token_types.size() << " token types (must match)");
    scores_ = spec.scores;
    bytes_.resize(n);
    byte_id_.fill(-1);
    std::vector<AddedToken> added;
    for (size_t id = 0; id < n; ++id) {
      const std::string& t = spec.tokens[id];
      ids_[t] = static_cast<int32_t>(id);  // a string listed twice means its last id, as llama.cpp reads it
      switch (spec.token_types[id]) {
        case 2: bytes_[id] = kUnkSurface; unk_ = static_cast<int32_t>(id); break;
        case 3: added.push_back({static_cast<int32_t>(id), t}); break;
        case 4: added.push_back({static_cast<int32_t>(id), t}); bytes_[id] = replace_all(t, kSpace, " "); break;
        case 5: break;
        case 6: {
          int b = parse_byte_piece(t);
          CLLM_CHECK(b >= 0, spec.path << ": GGUF SPM tokenizer: byte token " << id << " '" << t << "' is not <0xNN>");
          bytes_[id] = std::string(1, static_cast<char>(b));
          byte_id_[b] = static_cast<int32_t>(id);
          break;
        }
        default: bytes_[id] = replace_all(t, kSpace, " ");
      }
    }
    std::erase_if(added, [](const AddedToken& a) { return a.content.empty(); });
    splitter_ = std::make_unique<AddedTokenSplitter>(std::move(added));
    bos_ = spec.bos_id;
    eos_ = spec.eos_id;
    strip_leading_space_ = add_space_prefix;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    // As sentencepiece (and transformers' non-legacy LLaMA tokenizer, Metaspace "first"): only text
    // at the very start gets the dummy-prefix "▁", none after a special token. (llama.cpp adds
    // one after every special token, so "<s>Hi" and "a</s>b" differed from sentencepiece, and
    // decoding showed that extra "▁" as a second space.)
    splitter_->split(
        text,
        [&](std::string_view seg) {
          if (seg.empty()) return;
          std::string s = (add_space_prefix_ && seg.data() == text.data()) ? " " : "";
          s.append(seg);
          encode_segment(replace_all(s, " ", kSpace), out);
        },
        [&](int32_t id) { out.push_back(id); });
    return out;
  }

 private:
  struct Sym {
    size_t begin, len;
    int prev, next;
  };
  struct Bigram {
    float score;
    int left;
    size_t len;  // combined length when queued; a mismatch later means the pair is stale
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };

  void encode_segment(const std::string& s, std::vector<int32_t>& out) const {
    std::vector<Sym> sym;
    for (size_t pos = 0; pos < s.size();) {
      size_t len;
      unicode::decode_utf8(s, pos, &len);
      int i = static_cast<int>(sym.size());
      sym.push_back({pos, len, i - 1, i + 1});
      pos += len;
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    std::priority_queue<Bigram> pq;
    auto try_add = [&](int left) {
      if (left < 0 || sym[left].next < 0) return;
      const Sym& r = sym[sym[left].next];
      size_t len = sym[left].len + r.len;
      auto it = ids_.find(s.substr(sym[left].begin, len));
      if (it != ids_.end() && it->second < static_cast<int32_t>(scores_.size())) pq.push({scores_[it->second], left, len});
    };
    for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) try_add(i);
    while (!pq.empty()) {
      Bigram b = pq.top();
      pq.pop();
      Sym& l = sym[b.left];
      if (l.len == 0 || l.next < 0 || l.len + sym[l.next].len != b.len) continue;
      Sym& r = sym[l.next];
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (l.next >= 0) sym[l.next].prev = b.left;
      try_add(l.prev);
      try_add(b.left);
    }
    for (int i = 0; i >= 0; i = sym[i].next) {
      auto it = ids_.find(s.substr(sym[i].begin, sym[i].len));
      if (it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (size_t k = 0; k < sym[i].len; ++k) {
        int32_t id = byte_id_[static_cast<uint8_t>(s[sym[i].begin + k])];
        CLLM_CHECK(id >= 0 || unk_ >= 0, "GGUF SPM tokenizer: no byte token and no unknown token for a character");
        if (id < 0) {  // without byte tokens the whole character is one unk
          out.push_back(unk_);
          break;
        }
        out.push_back(id);
      }
    }
  }

  bool add_space_prefix_;
  std::vector<float> scores_;
  std::array<int32_t, 256> byte_id_;
  int32_t unk_ = -1;
  std::unique_ptr<AddedTokenSplitter> splitter_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<SentencePieceTokenizer>(spec);
}

std::unique_ptr<Tokenizer> make_gguf_spm_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<GgufSpmTokenizer>(spec, spec.add_space_prefix);
}

}  // namespace cllm
