// Tokenizer specs that cllm writes out or makes up: the HF files equivalent to a GGUF BPE
// vocabulary (for `cllm convert` to an HF directory), and a byte-level vocabulary of any size
// (for `cllm random-model`).
#pragma once
#include <string>

#include "loaders/checkpoint.h"

namespace cllm {

// Writes an HF tokenizer.json that HF tokenizers and cllm's HfJson path both read to the
// same ids as the GgufBpe spec. Control (3), unknown (2) and unused (5) tokens become special
// added tokens, user-defined (4) ones non-special added tokens. Throws on a spec that is not
// GgufBpe, or on duplicate token texts (tokenizer.json's vocab is a JSON object).
void write_hf_tokenizer_json(const TokenizerSpec& gguf_bpe_spec, const std::string& path);

// Writes tokenizer_config.json: tokenizer_class, bos/eos token text, add_bos_token, chat_template.
void write_hf_tokenizer_config_json(const TokenizerSpec& spec, const std::string& path);

// A GgufBpe spec with no merges, so every byte is one token, for random checkpoints:
//   id 0 "<s>" (BOS, control), id 1 "</s>" (EOS, control),
//   ids 2..257 the 256 byte tokens (byte b at id 2 + b, in GPT-2's byte-level spelling),
//   ids 258..vocab_size-1 "<|unused_K|>" control fillers (K = id - 258).
// vocab_size must be >= 258.
TokenizerSpec make_byte_level_spec(int vocab_size);

}  // namespace cllm
