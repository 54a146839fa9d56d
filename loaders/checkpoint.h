// One interface over every checkpoint format (HF safetensors dir, GGUF file, cllm HDF5).
// Tensor names are the HF LLaMA names ("model.layers.3.self_attn.q_proj.weight"), shapes are
// HF order ([out, in] for linear weights), whatever the file stores. GGUF q/k weights are
// un-permuted back to HF's rotate_half layout, so one RoPE serves every format.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/tensor_manifest.h"
#include "loaders/dequant.h"

namespace cllm {

// Everything needed to build a tokenizer, from whichever file carries it.
struct TokenizerSpec {
  enum class Kind { None, SentencePieceModel, HfJson, GgufBpe, GgufSpm };
  Kind kind = Kind::None;
  std::string path;                 // tokenizer.model / tokenizer.json (file kinds); for messages: the .gguf (GGUF
                                    // kinds), the directory that has no tokenizer (None, HF)
  std::string pre;                  // GGUF pre-tokenizer name: "smollm", "llama-bpe", "gpt2", ...
  std::vector<std::string> tokens;  // GGUF kinds: id -> token text
  std::vector<std::string> merges;  // GgufBpe: "a b" ranked by order
  std::vector<float> scores;        // GgufSpm
  std::vector<int32_t> token_types; // GGUF: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  int bos_id = -1;
  int eos_id = -1;
  bool add_bos = false;
  bool add_space_prefix = true;     // GgufSpm: the dummy "▁" before the text (tokenizer.ggml.add_space_prefix)
  std::string chat_template;        // jinja text from tokenizer_config.json or GGUF metadata
  std::string note;                 // which file was chosen when there was a choice, and why
  // HfJson with a sentencepiece-style (byte_fallback) model: "always", "first" or "never" when
  // tokenizer_config.json names tokenizer_class LlamaTokenizer(Fast), for which transformers (5.x)
  // replaces the file's space handling by Metaspace(prepend_scheme, split=false); "" = as the file says.
  std::string spm_prepend;
};

// A half-open range of rows and columns of a 1-D or 2-D tensor (columns ignored for 1-D).
// Tensor parallelism reads only its slice; end = -1 means "to the end".
struct TensorRange {
  int64_t row_begin = 0, row_end = -1;
  int64_t col_begin = 0, col_end = -1;
};

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const TokenizerSpec& tokenizer() const = 0;
  virtual bool has_tensor(const std::string& name) const = 0;
  // Logical shape in HF order; throws naming the file and tensor if absent.
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  // Converts (dequantizes) the selected range to fp32, row-major, into dst
  // (rows * cols floats). Throws naming the file and tensor on any inconsistency, and naming the
  // element (row, column of the tensor) when a value is NaN or Inf: one non-finite weight makes
  // every logit NaN, and greedy decoding would then emit token 0 forever with exit status 0
  // (design.md, Failure semantics). Every format's weights pass here while they are converted
  // anyway, and each block of rows is checked while still in cache (read_block_values).
  void read_f32(const std::string& name, const TensorRange& range, float* dst) const;
  // The element type the file stores `name` in; formats that only convert (safetensors, HDF5) say F32.
  virtual DType stored_dtype(const std::string& name) const {
    (void)name;
    return DType::F32;
  }
  // Whole rows [row_begin, row_end) of a 2-D tensor as stored (stored_dtype's blocks), in HF row
  // order, each dtype_row_bytes(stored_dtype(name), cols) bytes, into dst: for kernels that compute
  // on the blocks. Each row is decoded once and refused like read_f32 if a value is not finite.
  // Formats that do not keep blocks refuse, naming the file and tensor.
  void read_blocks(const std::string& name, int64_t row_begin, int64_t row_end, uint8_t* dst) const;
  // Human-readable origin for messages ("models/x.gguf").
  virtual std::string source() const = 0;
  // A hash of tensor `name` that does not depend on which slice a rank loads: the ranks of a
  // tensor-parallel group compare these to check that they loaded one checkpoint
  // (parallel/tp_model.h, agree_on_checkpoint). Default: probe_fingerprint. A format that stores
  // checksums of all its bytes returns a hash of those (cllm HDF5: every chunk's Fletcher32).
  virtual uint64_t fingerprint(const std::string& name) const;

 protected:
  // The format's conversion of the range, as read_f32 describes, before the finiteness check.
  virtual void convert_f32(const std::string& name, const TensorRange& range, float* dst) const = 0;
  // About how many values read_f32 converts per convert_f32 call (whole rows, at least one): 64K
  // (256 KB of fp32, cache-resident) where a partial read costs nothing extra (mapped files); a
  // format whose every call has a fixed cost (an HDF5 hyperslab read) returns more.
  virtual int64_t read_block_values() const { return int64_t{1} << 16; }
  // The stored bytes of read_blocks, before the finiteness check. The default refuses.
  virtual void copy_blocks(const std::string& name, int64_t row_begin, int64_t row_end, uint8_t* dst) const;
};

// The TensorRange of this rank's slice of t (core/tensor_manifest.h).
TensorRange slice_range(const TensorSpec& t);
// Throws, naming the file, the tensor and both shapes, when the checkpoint lacks t or stores it with
// a shape other than the config's.
void check_shape(const CheckpointReader& ckpt, const TensorSpec& t);

// FNV-1a of `bytes` bytes, continuing from `h`: the hash of fingerprints (CheckpointReader::fingerprint).
inline uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = 1469598103934665603ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

// The default CheckpointReader::fingerprint: FNV-1a over the fp32 values of a fixed probe of the
// whole tensor (4 rows spread over it, 4 windows of 16 columns spread over each row; a 1-D tensor
// is one row), 256 values at most, so a few small reads. Two checkpoints of one shape but different
// weights (another seed, another training step) differ in it; a change confined to values outside
// the probe does not.
uint64_t probe_fingerprint(const CheckpointReader& ckpt, const std::string& name);

// The whole checkpoint's identity: fnv1a over the fingerprints of every tensor of its manifest, in
// manifest order. Equal for copies of one checkpoint wherever they sit; different for other weights.
uint64_t checkpoint_fingerprint(const CheckpointReader& ckpt);

// Opens a GGUF file, an HF checkpoint directory (config.json + safetensors [+ index]) or a
// cllm .h5 checkpoint, and validates the config against the tensor shapes before returning.
std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path);

}  // namespace cllm
