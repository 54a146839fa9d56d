// Sentencepiece-style tokenizers ("▁" for spaces, <0xNN> byte fallback): a tokenizer.model
// through libsentencepiece, and GGUF "llama" vocabularies with scores, encoded with
// llama.cpp's algorithm (which is what those GGUF files are tested against).
#pragma once
#include <memory>

#include "loaders/checkpoint.h"
#include "runtime/tokenizer.h"

namespace cllm {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec);

// GGUF tokenizer.ggml.add_space_prefix is not in TokenizerSpec; LLaMA/Mistral SPM vocabs use true.
std::unique_ptr<Tokenizer> make_gguf_spm_tokenizer(const TokenizerSpec& spec, bool add_space_prefix = true);

}  // namespace cllm
