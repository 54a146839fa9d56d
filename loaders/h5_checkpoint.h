// cllm's HDF5 checkpoint (format_version 1), written by `cllm convert --to h5`, read through
// open_checkpoint("x.h5"). Layout (h5py can read all of it):
//   /             attributes: format = "cllm-checkpoint", format_version = 1, and every ModelConfig
//                 field under its own name (architecture, vocab_size, hidden_size, intermediate_size,
//                 num_layers, num_heads, num_kv_heads, head_dim, max_position_embeddings, rms_norm_eps,
//                 rope_theta, tie_word_embeddings 0/1, sliding_window (0 = none; absent in older files), bos_token_id, eos_token_ids int32[n] (n >= 0),
//                 rope_scaling_type, rope_scaling_factor, rope_scaling_low_freq_factor,
//                 rope_scaling_high_freq_factor, rope_scaling_original_max_position_embeddings)
//   /tensors/<HF name>   one dataset per tensor, HF shape ([out, in] for linear weights), q/k rows in
//                 HF (rotate_half) order. attribute dtype = "f32" | "f16" | "bf16":
//                   f32: IEEE F32LE; f16: IEEE binary16 (h5py: float16); bf16: U16LE holding the bits.
//                 Chunked along the tensor-parallel split axis (attribute split_axis, the dimension
//                 TensorSpec::dim() of core/tensor_manifest.h): 0 = rows for q/k/v/gate/up/embedding/
//                 lm_head, 1 = columns for o/down, -1 = one chunk (norms).
//                 The split dimension holds gcd(tp_chunks, dim) chunks, so every TP that divides that
//                 count reads whole chunks (tp_chunks 8: TP 1, 2, 4, 8); doubled while a chunk would
//                 pass HDF5's 4 GiB limit. Fletcher32 on every chunk.
//   /tokenizer    attributes kind ("none" | "sentencepiece_model" | "hf_json" | "gguf_bpe" |
//                 "gguf_spm"), pre, bos_id, eos_id, add_bos (0/1); datasets (uint8 unless noted,
//                 chunked with Fletcher32 like the tensors):
//     chat_template            the jinja text
//     file                     hf_json / sentencepiece_model: the bytes of the file named by its
//                              attribute file_name ("tokenizer.json" | "tokenizer.model")
//     tokens, token_offsets    GGUF kinds: token i = tokens[token_offsets[i] : token_offsets[i+1]]
//                              (token_offsets int64 [n+1]; bytes, not strings: a token may hold NUL)
//     merges, merge_offsets    gguf_bpe: the ranked merges "a b", same encoding
//     scores                   gguf_spm: float32 [n]
//     token_types              GGUF kinds, when the source had them: int32 [n]
// A file-based tokenizer is rebuilt from a copy of `file` in the temp directory
// (cllm-tokenizer-<content hash>/<file_name>), since the tokenizers load from a path.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "loaders/checkpoint.h"
#include "loaders/dequant.h"

namespace cllm {

struct H5WriteOptions {
  DType dtype = DType::F32;  // F32, F16 or BF16 on disk
  int tp_chunks = 8;         // chunks along each tensor's split axis: gcd(tp_chunks, dim)
  // Called after each tensor: (bytes of fp32 converted so far, total, tensor name).
  std::function<void(double, double, const std::string&)> progress;
};

// Writes every tensor of `in` (those its config implies), its config and its tokenizer to `path`,
// one chunk at a time (host memory: about one chunk in fp32). Writes `path`.tmp and renames it, so
// an interrupted conversion leaves no file that looks complete.
void write_h5_checkpoint(const CheckpointReader& in, const std::string& path, const H5WriteOptions& opts);
// The temporary file write_h5_checkpoint writes before the rename (for a caller that cleans up
// after a signal).
std::string h5_checkpoint_temp_path(const std::string& path);

// Chunks along a split dimension of `dim` elements (gcd(tp_chunks, dim), at least 1).
int64_t h5_chunk_count(int64_t dim, int tp_chunks);

namespace detail {
// The reader behind open_checkpoint for a .h5 path: validates format, config, every dataset's
// dtype, shape and Fletcher32 filter, and the tokenizer before returning.
std::unique_ptr<CheckpointReader> open_h5_checkpoint(const std::string& path);
}  // namespace detail

}  // namespace cllm
