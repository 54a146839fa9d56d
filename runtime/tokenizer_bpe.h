// Byte-level BPE (GPT-2 family: GPT-2, LLaMA-3, SmolLM, StarCoder). Both tokenizer.json and
// GGUF vocab+merges are first turned into a BpeVocab, so one encoder serves both sources.
// The same encoder also runs sentencepiece models converted to tokenizer.json (LLaMA-2, Mistral,
// TinyLlama: BpeVocab::spm), which differ only in their symbols and in how spaces are written.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "loaders/checkpoint.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_added.h"
#include "runtime/tokenizer_pretok.h"

namespace cllm {

enum class TokenAttr : uint8_t {
  Normal,       // a byte-level BPE token ("Ġthe")
  Control,      // special added token: matched in text, skipped by decode ("<|im_end|>")
  UserDefined,  // non-special added token: matched in text, decoded as its literal text
  Unused,       // never produced, decodes to "" (GGUF type 5; byte-level filler tokens)
};

struct BpeVocab {
  std::vector<std::string> tokens;  // id -> token text (byte-level chars for Normal tokens)
  std::vector<TokenAttr> attrs;     // id -> kind
  std::vector<std::string> merges;  // "left right", rank = index
  std::vector<AddedToken> added;    // matched literally before pre-tokenization
  std::vector<PreTokStage> pre;     // pre-tokenizer stages, in order
  bool add_prefix_space = false;    // HF ByteLevel option: " " before a segment not starting with one
  bool ignore_merges = false;       // a piece that is a whole vocab token skips BPE (LLaMA-3)
  int bos_id = -1, eos_id = -1;
  // Sentencepiece-style BPE (tokenizer.json with byte_fallback): the initial symbols are UTF-8
  // characters instead of bytes, spaces are written "▁", a character missing from the vocab
  // becomes its <0xNN> byte tokens (or unk_id, runs of unknowns fused into one), and decoding
  // drops the "▁" that was prepended to the text.
  struct Spm {
    bool on = false;
    // Where a "▁" is prepended: Every text segment, unconditionally (the legacy Prepend
    // normalizer); Always, to every segment not already starting with "▁" (Metaspace
    // prepend_scheme "always"); First, only to such a segment at the very start of the text
    // (Metaspace "first": none after a special token); or Never.
    enum class Prepend { Every, Always, First, Never } prepend = Prepend::Every;
    bool split = false;  // Metaspace split = true: each "▁word" is merged on its own
    int32_t unk_id = -1;
  } spm;
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeVocab vocab, const std::string& source);

// Merge-table lookups (candidate pairs) made by this process's BPE encoders so far: the work that
// grows with the square of a piece's length in a BPE that rescans its pairs after every merge, and
// linearly here (at most 3 per byte of a piece that is not yet cached). Tests bound it per byte.
uint64_t bpe_pair_lookups();

// Parses an HF tokenizer.json with a BPE model (byte-level, or sentencepiece-style with
// byte_fallback) into a BpeVocab (bos/eos left -1).
BpeVocab load_hf_bpe_vocab(const std::string& path);

// The stages llama.cpp's pre-tokenizer `name` (GGUF tokenizer.ggml.pre) stands for;
// throws naming the supported names otherwise.
std::vector<PreTokStage> gguf_pre_stages(const std::string& name, bool* ignore_merges);

// GPT-2's byte <-> printable code point table (byte-level "Ġ" = space).
uint32_t byte_to_unicode(uint8_t b);

}  // namespace cllm
