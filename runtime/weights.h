// LLaMA weights in fp32 host memory: plain data, HF layout ([out, in] row-major for linears).
// A tensor-parallel rank holds only its slice (core/tensor_manifest.h); the shapes below are those
// of the slice, with heads, kv, ffn and vocab the rank's own counts (the whole model at TP=1).
#pragma once
#include <vector>

#include "core/shard_plan.h"
#include "loaders/checkpoint.h"
#include "runtime/model.h"

namespace cllm {

struct LayerWeights {
  std::vector<float> attn_norm;  // [d]
  std::vector<float> wq;         // [n_heads * head_dim, d]
  std::vector<float> wk;         // [n_kv * head_dim, d]
  std::vector<float> wv;         // [n_kv * head_dim, d]
  std::vector<float> wo;         // [d, n_heads * head_dim]
  std::vector<float> ffn_norm;   // [d]
  std::vector<float> w_gate;     // [ffn, d]
  std::vector<float> w_up;       // [ffn, d]
  std::vector<float> w_down;     // [d, ffn]
};

struct ModelWeights {
  std::vector<float> embed;       // [vocab, d]
  std::vector<float> final_norm;  // [d]
  std::vector<float> lm_head;     // [vocab, d]; empty when tied to embed
  std::vector<LayerWeights> layers;

  const float* head() const { return lm_head.empty() ? embed.data() : lm_head.data(); }
  size_t bytes() const;
};

// Reads the whole model.
ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress);
// Reads only the slices of `plan` (TensorRange reads), checking each tensor's full shape first.
// progress counts this rank's bytes.
ModelWeights load_weights_f32(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress);

}  // namespace cllm
