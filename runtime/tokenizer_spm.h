// Sentencepiece-style tokenizers ("▁" for spaces, <0xNN> byte fallback): a tokenizer.model
// through libsentencepiece, and GGUF "llama" vocabularies with scores, encoded with
// llama.cpp's algorithm (which is what those GGUF files are tested against).
#pragma once
#include <memory>

#include "loaders/checkpoint.h"
#include "runtime/tokenizer.h"

namespace cllm {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec);

// spec.add_space_prefix (GGUF tokenizer.ggml.add_space_prefix; LLaMA/Mistral vocabs: true) puts
// sentencepiece's dummy "▁" before the text.
std::unique_ptr<Tokenizer> make_gguf_spm_tokenizer(const TokenizerSpec& spec);

}  // namespace cllm
