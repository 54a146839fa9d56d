// LLaMA weights in fp32 host memory: plain data, HF layout ([out, in] row-major for linears).
#pragma once
#include <vector>

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

ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress);

}  // namespace cllm
