// The one list of a LLaMA checkpoint's tensors, built from (ModelConfig, ShardPlan): for each its
// HF name, full HF shape ([out, in] for linear weights), tensor-parallel split axis, this rank's
// range along that axis, its slice's shape and bytes. Every loader (CPU and CUDA weights), the
// checkpoint readers' shape checks, the HDF5 writer and the random model read it; nothing else
// spells the names or the Megatron split (core/shard_plan.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/shard_plan.h"

namespace cllm {

enum class SplitAxis {
  None,   // replicated: every rank holds all of it (norms)
  Rows,   // column-parallel: rows of [out, in] (q, k, v: heads; gate, up: FFN units)
  Cols,   // row-parallel: columns of [out, in] (o: heads; down: FFN units); an all-reduce follows
  Vocab,  // vocab-parallel: rows of [vocab, d] (embedding, LM head)
};

const char* split_axis_name(SplitAxis a);  // "none", "rows", "cols", "vocab"

struct TensorSpec {
  std::string name;                  // HF name: "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;        // full HF shape: [out, in], or [n] for a norm
  SplitAxis split = SplitAxis::None;
  int64_t begin = 0, end = 0;        // this rank's [begin, end) along dim(); all of dim 0 when None
  std::vector<int64_t> local_shape;  // this rank's slice: shape with dim() cut to [begin, end)

  // The dimension that split cuts: 0 (rows, vocab), 1 (cols), -1 (none).
  int dim() const { return split == SplitAxis::Cols ? 1 : split == SplitAxis::None ? -1 : 0; }
  int64_t elements() const;        // of the full tensor
  int64_t local_elements() const;  // of this rank's slice
  int64_t bytes(int element_bytes) const { return local_elements() * element_bytes; }  // this rank's
};

struct LayerTensors {
  TensorSpec attn_norm;  // [d], replicated
  TensorSpec wq;         // [n_heads * head_dim, d], rows: this rank's heads
  TensorSpec wk, wv;     // [n_kv * head_dim, d], rows: this rank's KV heads
  TensorSpec wo;         // [d, n_heads * head_dim], cols: this rank's heads
  TensorSpec ffn_norm;   // [d], replicated
  TensorSpec w_gate;     // [ffn, d], rows: this rank's FFN units
  TensorSpec w_up;       // [ffn, d], rows
  TensorSpec w_down;     // [d, ffn], cols
};

struct TensorManifest {
  TensorSpec embed;  // [vocab, d], vocab rows
  std::vector<LayerTensors> layers;
  TensorSpec final_norm;  // [d], replicated
  TensorSpec lm_head;     // [vocab, d], vocab rows; name empty when tied to embed
  bool has_lm_head() const { return !lm_head.name.empty(); }

  // Every tensor in checkpoint order: embed, layer 0 (attn_norm, q, k, v, o, ffn_norm, gate, up,
  // down), ..., final norm, lm_head when untied. Pointers into this manifest, so not callable on a
  // temporary (`for (t : make_tensor_manifest(c).all())` would read a destroyed manifest).
  std::vector<const TensorSpec*> all() const&;
  std::vector<const TensorSpec*> all() const&& = delete;
  // Bytes of this rank's slices at element_bytes per element (4: fp32, 2: bf16).
  int64_t bytes(int element_bytes) const;
};

// The tensors of this rank of `plan` (ShardPlan::whole(cfg): the whole model).
TensorManifest make_tensor_manifest(const ModelConfig& cfg, const ShardPlan& plan);
inline TensorManifest make_tensor_manifest(const ModelConfig& cfg) {
  return make_tensor_manifest(cfg, ShardPlan::whole(cfg));
}

// "[576, 1536]": shapes in error messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace cllm
