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
  std::string path;                 // tokenizer.model / tokenizer.json (file kinds)
  std::string pre;                  // GGUF pre-tokenizer name: "smollm", "llama-bpe", "gpt2", ...
  std::vector<std::string> tokens;  // GGUF kinds: id -> token text
  std::vector<std::string> merges;  // GgufBpe: "a b" ranked by order
  std::vector<float> scores;        // GgufSpm
  std::vector<int32_t> token_types; // GGUF: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  int bos_id = -1;
  int eos_id = -1;
  bool add_bos = false;
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
  // (rows * cols floats). Throws naming the file and tensor on any inconsistency.
  virtual void read_f32(const std::string& name, const TensorRange& range, float* dst) const = 0;
  // The element type the file stores `name` in; formats that only convert (safetensors, HDF5) say F32.
  virtual DType stored_dtype(const std::string& name) const {
    (void)name;
    return DType::F32;
  }
  // Whole rows [row_begin, row_end) of a 2-D tensor as stored (stored_dtype's blocks), in HF row
  // order, each dtype_row_bytes(stored_dtype(name), cols) bytes, into dst: for kernels that compute
  // on the blocks. The default refuses, naming the file and tensor.
  virtual void read_blocks(const std::string& name, int64_t row_begin, int64_t row_end, uint8_t* dst) const;
  // Human-readable origin for messages ("models/x.gguf").
  virtual std::string source() const = 0;
};

// The TensorRange of this rank's slice of t (core/tensor_manifest.h).
TensorRange slice_range(const TensorSpec& t);
// Throws, naming the file, the tensor and both shapes, when the checkpoint lacks t or stores it with
// a shape other than the config's.
void check_shape(const CheckpointReader& ckpt, const TensorSpec& t);

// Opens a GGUF file, an HF checkpoint directory (config.json + safetensors [+ index]) or a
// cllm .h5 checkpoint, and validates the config against the tensor shapes before returning.
std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path);

}  // namespace cllm
