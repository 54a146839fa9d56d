// Tokenizer interface: sentencepiece (tokenizer.model), HF byte-level BPE (tokenizer.json),
// and the vocab/merges embedded in GGUF. Special/added tokens written literally in the text
// (e.g. "<|im_start|>") encode to their single ids.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loaders/checkpoint.h"

namespace cllm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids. add_bos prepends BOS when the model has one.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The raw bytes this token stands for in the output text (byte tokens resolved, "▁" -> " ",
  // Ġ-style byte-level mapping undone). Control tokens (BOS/EOS) give "".
  virtual std::string token_bytes(int32_t id) const = 0;
  // Whole-sequence decode, as HF tokenizers decode(skip_special_tokens=true).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  // Id of an exact token string (special tokens included), or -1.
  virtual int32_t token_id(std::string_view token) const = 0;
  // The token string token_id() maps to `id` ("<|endoftext|>" for a control token whose
  // token_bytes are ""), or "" when no string maps to it.
  virtual std::string token_string(int32_t id) const = 0;
};

// model_vocab: the rows of the model's embedding. Checkpoints pad it past the tokenizer's ids (to a
// multiple of 64 or 128); a padded id the model emits decodes as no text, as HF tokenizers skip ids
// they do not know, and vocab_size() is then model_vocab (every id the model can produce).
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec, int model_vocab = 0);

// Incremental detokenizer for streaming: feed ids, get the text that is now complete.
// Holds back bytes of an unfinished UTF-8 sequence, and the sentencepiece leading space.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (invalid bytes become U+FFFD)

 private:
  const Tokenizer& tok_;
  std::string pending_;
  bool first_ = true;
};

}  // namespace cllm
