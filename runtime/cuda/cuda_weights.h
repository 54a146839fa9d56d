// LLaMA weights in bf16 device memory, laid out for 4 GEMMs per layer: q|k|v stacked into one
// [q + 2*kv, d] matrix and gate|up into one [2*ffn, d] matrix (the layouts invoke_rope_kv_write and
// invoke_silu_mul read). Every matrix is HF row-major [out, in], in its own cudaMalloc (256-byte
// aligned, as GemmPlan assumes). A tensor-parallel rank holds the slices of its ShardPlan
// (the slices of core/tensor_manifest.h); the shapes below then use its heads, KV heads, FFN units
// and vocab rows.
#pragma once
#include <cuda_bf16.h>

#include <vector>

#include "core/shard_plan.h"
#include "loaders/checkpoint.h"
#include "runtime/cuda/device_buffer.h"
#include "runtime/model.h"

namespace cllm::cuda {

struct DeviceLayer {
  DeviceBuffer attn_norm;  // [d]
  DeviceBuffer wqkv;       // [q_dim + 2 * kv_dim, d]: rows of q_proj, then k_proj, then v_proj
  DeviceBuffer wo;         // [d, q_dim]
  DeviceBuffer ffn_norm;   // [d]
  DeviceBuffer wgu;        // [2 * ffn, d]: rows of gate_proj, then up_proj
  DeviceBuffer wdown;      // [d, ffn]
};

struct DeviceWeights {
  DeviceBuffer embed;       // [vocab, d]
  DeviceBuffer final_norm;  // [d]
  DeviceBuffer lm_head;     // [vocab, d]; empty when tied to embed
  std::vector<DeviceLayer> layers;

  const __nv_bfloat16* head() const {
    return (lm_head.empty() ? embed : lm_head).as<const __nv_bfloat16>();
  }
  // Bytes one decode step reads: every layer matrix and norm, the final norm and the head.
  // The embedding table counts only when it is the head (a lookup reads n rows of it).
  double step_weight_bytes() const;
};

// Throws, naming the file and the feature, when the CUDA kernels cannot run this shape
// (head_dim not 64 or 128, hidden or ffn size, or a rank's FFN slice, not a multiple of 8). Call
// before any allocation.
void check_cuda_supported(const ModelConfig& cfg, const std::string& source);
void check_cuda_supported(const ModelConfig& cfg, const ShardPlan& plan, const std::string& source);

// Reads every tensor with read_f32 in row slices of at most 64 MiB of fp32 (bounded host memory,
// whatever the model size), rounds to bf16 (nearest even) and copies it into place. Shapes are
// checked against the config, naming the file and tensor. progress(done, total, name) counts bf16
// bytes written to the device.
DeviceWeights load_device_weights(const CheckpointReader& ckpt, const LoadProgress& progress);
// Only the slices of `plan` (TensorRange reads: each rank reads its own), full shapes checked first.
DeviceWeights load_device_weights(const CheckpointReader& ckpt, const ShardPlan& plan, const LoadProgress& progress);

}  // namespace cllm::cuda
