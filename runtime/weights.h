// LLaMA weights in host memory: plain data, HF layout ([out, in] row-major for linears), fp32, or
// with native weights the linears (and the embedding / LM head) kept in the file's Q8_0 / Q4_0 / Q4_1
// blocks for kernels/cpu/gemm_quant.h (other stored types are converted to fp32 as before).
// A tensor-parallel rank holds only its slice (core/tensor_manifest.h); the shapes below are those
// of the slice, with heads, kv, ffn and vocab the rank's own counts (the whole model at TP=1).
#pragma once
#include <vector>

#include "core/shard_plan.h"
#include "kernels/cpu/gemm_quant.h"
#include "loaders/checkpoint.h"
#include "runtime/model.h"

namespace cllm {

// A weight matrix [out, in]: fp32, or quantized blocks (then f32 is empty).
struct LinearWeight {
  std::vector<float> f32;
  cpu::QuantMatrix q;
  bool quantized() const { return !q.qs.empty(); }
  bool empty() const { return f32.empty() && !quantized(); }
  size_t bytes() const { return f32.size() * sizeof(float) + q.bytes(); }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [d]
  LinearWeight wq;         // [n_heads * head_dim, d]
  LinearWeight wk;         // [n_kv * head_dim, d]
  LinearWeight wv;         // [n_kv * head_dim, d]
  LinearWeight wo;         // [d, n_heads * head_dim]
  std::vector<float> ffn_norm;   // [d]
  LinearWeight w_gate;     // [ffn, d]
  LinearWeight w_up;       // [ffn, d]
  LinearWeight w_down;     // [d, ffn]
};

struct ModelWeights {
  LinearWeight embed;       // [vocab, d]
  std::vector<float> final_norm;  // [d]
  LinearWeight lm_head;     // [vocab, d]; empty when tied to embed
  std::vector<LayerWeights> layers;

  const LinearWeight& head() const { return lm_head.empty() ? embed : lm_head; }
  size_t bytes() const;
};

// Reads the whole model.
ModelWeights load_weights_f32(const CheckpointReader& ckpt, const LoadProgress& progress);
// The whole model with Q8_0 / Q4_0 / Q4_1 matrices kept in their blocks (one rank only).
ModelWeights load_weights_native(const CheckpointReader& ckpt, const LoadProgress& progress);
// Reads only the slices of `plan` (TensorRange reads), checking each tensor's full shape first.
// progress counts this rank's bytes.
ModelWeights load_weights_f32(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress);

}  // namespace cllm
