// make_tokenizer dispatches on where the vocabulary came from; StreamDecoder lives here too,
// since it only needs the Tokenizer interface.
#include "core/check.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_bpe.h"
#include "runtime/tokenizer_spm.h"
#include "runtime/unicode_text.h"

namespace cllm {
namespace {

BpeVocab gguf_bpe_vocab(const TokenizerSpec& spec) {
  BpeVocab v;
  v.tokens = spec.tokens;
  v.merges = spec.merges;
  CLLM_CHECK(spec.token_types.empty() || spec.token_types.size() == spec.tokens.size(),
             spec.path << ": GGUF BPE tokenizer: " << spec.token_types.size() << " token types for " << spec.tokens.size() << " tokens");
  v.attrs.assign(spec.tokens.size(), TokenAttr::Normal);
  for (size_t id = 0; id < spec.token_types.size(); ++id) {
    switch (spec.token_types[id]) {
      case 2:  // unknown: like control, never part of the output text
      case 3: v.attrs[id] = TokenAttr::Control; break;
      case 4: v.attrs[id] = TokenAttr::UserDefined; break;
      case 5: v.attrs[id] = TokenAttr::Unused; break;
      default: break;
    }
    if ((v.attrs[id] == TokenAttr::Control || v.attrs[id] == TokenAttr::UserDefined) && !spec.tokens[id].empty()) {
      v.added.push_back({static_cast<int32_t>(id), spec.tokens[id]});
    }
  }
  v.pre = gguf_pre_stages(spec.pre, &v.ignore_merges);
  v.bos_id = spec.bos_id;
  v.eos_id = spec.eos_id;
  return v;
}

}  // namespace

std::vector<PreTokStage> gguf_pre_stages(const std::string& name, bool* ignore_merges) {
  *ignore_merges = false;
  if (name == "gpt2" || name == "default" || name.empty()) return {PreTokStage::Gpt2Regex};
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") {
    *ignore_merges = true;  // as llama.cpp for LLaMA-3 (HF: model.ignore_merges)
    return {PreTokStage::Llama3Regex};
  }
  if (name == "dbrx" || name == "smaug-bpe") return {PreTokStage::Llama3Regex};
  if (name == "smollm" || name == "starcoder" || name == "refact" || name == "codeshell") {
    return {PreTokStage::DigitsIndividual, PreTokStage::Gpt2Regex};
  }
  CLLM_FAIL("unsupported GGUF pre-tokenizer '" << name
                                               << "' (supported: gpt2, llama-bpe/llama3, dbrx, smaug-bpe, smollm, "
                                                  "starcoder, refact, codeshell)");
}

namespace {

// The padded ids [inner's vocab, model_vocab) of a model whose embedding has more rows than its
// tokenizer has tokens: no text, never produced by encode.
class PaddedVocabTokenizer final : public Tokenizer {
 public:
  PaddedVocabTokenizer(std::unique_ptr<Tokenizer> inner, int model_vocab)
      : inner_(std::move(inner)), model_vocab_(model_vocab) {}
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override { return inner_->encode(text, add_bos); }
  std::string token_bytes(int32_t id) const override { return padded(id) ? "" : inner_->token_bytes(id); }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int32_t> known;
    for (int32_t id : ids)
      if (!padded(id)) known.push_back(id);
    return inner_->decode(known);
  }
  int vocab_size() const override { return model_vocab_; }
  int bos_id() const override { return inner_->bos_id(); }
  int eos_id() const override { return inner_->eos_id(); }
  int32_t token_id(std::string_view token) const override { return inner_->token_id(token); }
  std::string token_string(int32_t id) const override { return padded(id) ? "" : inner_->token_string(id); }

 private:
  bool padded(int32_t id) const { return id >= inner_->vocab_size() && id < model_vocab_; }
  std::unique_ptr<Tokenizer> inner_;
  int model_vocab_;
};

std::unique_ptr<Tokenizer> make_unpadded_tokenizer(const TokenizerSpec& spec) {
  switch (spec.kind) {
    case TokenizerSpec::Kind::SentencePieceModel: return make_sentencepiece_tokenizer(spec);
    case TokenizerSpec::Kind::GgufSpm: return make_gguf_spm_tokenizer(spec);
    case TokenizerSpec::Kind::GgufBpe: return make_bpe_tokenizer(gguf_bpe_vocab(spec), spec.path + ": GGUF BPE tokenizer");
    case TokenizerSpec::Kind::HfJson: {
      BpeVocab v = load_hf_bpe_vocab(spec.path);
      if (v.spm.on && !spec.spm_prepend.empty()) {  // as transformers' LlamaTokenizer rebuilds it
        using P = BpeVocab::Spm::Prepend;
        v.spm.prepend = spec.spm_prepend == "always" ? P::Always : spec.spm_prepend == "first" ? P::First : P::Never;
        v.spm.split = false;
      }
      v.bos_id = spec.bos_id;
      v.eos_id = spec.eos_id;
      return make_bpe_tokenizer(std::move(v), spec.path);
    }
    case TokenizerSpec::Kind::None: break;
  }
  CLLM_FAIL((spec.path.empty() ? "" : spec.path + ": ")
            << "the checkpoint has no tokenizer (no tokenizer.model, tokenizer.json or GGUF vocab)");
}

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec, int model_vocab) {
  std::unique_ptr<Tokenizer> tok = make_unpadded_tokenizer(spec);
  if (model_vocab > tok->vocab_size()) return std::make_unique<PaddedVocabTokenizer>(std::move(tok), model_vocab);
  return tok;
}

std::string StreamDecoder::push(int32_t id) {
  std::string bytes = tok_.token_bytes(id);
  if (bytes.empty()) return "";
  if (first_) {
    // Sentencepiece decoding drops the dummy-prefix space of the first piece; decode() of the
    // piece alone says whether this tokenizer does that, without a Tokenizer "kind" query.
    first_ = false;
    if (bytes[0] == ' ' && tok_.decode({id}).rfind(' ', 0) != 0) bytes.erase(0, 1);
  }
  pending_ += bytes;
  size_t n = unicode::complete_prefix_len(pending_);
  std::string out = unicode::to_valid_utf8(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = unicode::to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace cllm
