// The LLaMA forward on one NVIDIA GPU in bf16 (`--device cuda`): weights and KV cache bf16, residual
// stream fp32, fp32 accumulation everywhere; 4 GEMMs per layer (fused qkv, o, fused gate|up, down).
// One forward of n tokens is one CUDA graph launch plus one synchronisation: only the n argmax ids
// (and, on request, the logits) come back to the host.
//
// Graphs: every call captures the step into a fresh cudaGraph_t (cheap host work) and updates the
// executable graph cached for that block size with cudaGraphExecUpdate, so changed positions,
// attention grids and buffer addresses are patched in place; when the topology changed (the
// attention's split-K combine appears once the context passes its first chunk) the update fails and
// the graph is instantiated again. This is llama.cpp's scheme.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <memory>
#include <optional>
#include <vector>

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/skinny_gemm.cuh"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/cuda/device_buffer.h"
#include "runtime/model.h"

namespace cllm::cuda {

struct CudaModelOptions {
  bool use_graphs = true;  // false: enqueue the kernels directly (the eager path tests compare against)
  // Blocks of at most this many tokens run their linear layers on the skinny bandwidth-bound GEMM
  // (kernels/cuda/skinny_gemm.cuh), larger ones on cuBLASLt; 0 = cuBLASLt always. Capped at
  // kSkinnyGemmMaxM. make_cuda_model(ckpt, progress) reads it from CLLM_CUDA_SKINNY_MAX_M when set.
  // Default 8: on the H200 (2026-11-28, docs/benchmarks.md) the skinny kernel beats cuBLASLt by
  // 5-20% per GEMM at M <= 8 and loses at M = 16 and 32.
  int skinny_gemm_max_m = 8;
};

// What the graph cache did, for tests and benchmarks.
struct CudaGraphStats {
  int captures = 0;        // steps captured
  int updates = 0;         // captured steps patched into an existing executable graph
  int instantiations = 0;  // executable graphs (re)built: first use of a block size, or a topology change
};

class CudaModel final : public Model {
 public:
  // A device forward handles at most this many tokens; longer forwards (prompt prefill) run as a
  // sequence of blocks of kMaxBlock, 128 and 64 tokens and a rest of at most kExactMax, each over
  // the KV the previous ones wrote, which is the same computation. So GEMM plans and graphs exist
  // for at most 66 distinct block sizes, and all scratch is sized once, for kMaxBlock rows.
  static constexpr int kMaxBlock = 256;
  static constexpr int kExactMax = 64;

  CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts);
  ~CudaModel() override;
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens, int slots = 1) override;
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override;
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  // bf16 weight bytes a step reads + bf16 K and V rows of `context` positions, all layers.
  double step_bytes(int context) const override;

  const CudaGraphStats& graph_stats() const { return stats_; }

 private:
  // One linear layer y[M, N] = x[M, K] . W[N, K]^T at one block size: the skinny kernel when M is
  // small enough, else a cuBLASLt plan (only then created: plans allocate workspace).
  class Linear {
   public:
    Linear(cublasLtHandle_t lt, int M, int N, int K, int skinny_max_m);
    void run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, cudaStream_t stream) const;

   private:
    int m_, n_, k_;
    std::optional<GemmPlan> plan_;  // empty: skinny kernel
  };

  // Linear layers for one block size (M = n) and that size's executable graph.
  struct BlockPlans {
    BlockPlans(cublasLtHandle_t lt, const ModelConfig& c, int n, int skinny_max_m);
    ~BlockPlans();
    Linear qkv, o, gate_up, down, head;
    cudaGraphExec_t exec = nullptr;
    bool warmed_up = false;  // ran once eagerly
  };

  // Stream and cuBLASLt handle; declared first so they are destroyed last.
  struct Handles {
    Handles();
    ~Handles();
    cudaStream_t stream = nullptr;
    cublasLtHandle_t lt = nullptr;
  };

  BlockPlans& plans_for(int n);
  // One device forward of n <= kMaxBlock tokens; logits (or nullptr) receives [n, vocab] fp32.
  void run_block(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits);
  void launch_graph(BlockPlans& p, int n, int pos);
  // Enqueues the whole step on the stream: token/position upload, layers, head, argmax, id download.
  void enqueue_step(const BlockPlans& p, int n, int pos);

  Handles h_;
  ModelConfig cfg_;
  CudaModelOptions opts_;
  DeviceWeights w_;
  DeviceBuffer inv_freq_;  // fp32 [head_dim / 2]
  int capacity_ = 0;       // KV rows per layer
  DeviceBuffer kv_;        // bf16 [layers][2 (k, v)][capacity][n_kv][head_dim]

  // Scratch for kMaxBlock rows. Element types: bf16 unless noted.
  DeviceBuffer io_dev_;       // int32 [2 * kMaxBlock]: tokens [n] then positions [n]
  DeviceBuffer ids_dev_;      // int32 [kMaxBlock] argmax ids
  DeviceBuffer residual_;     // fp32 [kMaxBlock, d]
  DeviceBuffer sub_;          // [kMaxBlock, d]: embedding, then each sublayer's output
  DeviceBuffer normed_;       // [kMaxBlock, d]: RMSNorm output, the GEMM input
  DeviceBuffer qkv_;          // [kMaxBlock, q + 2 kv]
  DeviceBuffer att_;          // [kMaxBlock, q]
  DeviceBuffer gate_up_;      // [kMaxBlock, 2 ffn]
  DeviceBuffer act_;          // [kMaxBlock, ffn]
  DeviceBuffer logits_;       // [kMaxBlock, vocab]
  DeviceBuffer attn_ws_;      // block_attention_workspace_bytes(kMaxBlock, ...)
  DeviceBuffer argmax_ws_;    // argmax_workspace_bytes(kMaxBlock, vocab)
  PinnedBuffer io_host_;      // int32 [2 * kMaxBlock], mirrors io_dev_
  PinnedBuffer ids_host_;     // int32 [kMaxBlock]
  std::vector<uint16_t> logits_host_;  // bf16 bits [kMaxBlock, vocab], only when logits are requested

  std::vector<std::unique_ptr<BlockPlans>> plans_;  // indexed by n, created on first use
  CudaGraphStats stats_;
};

// As make_cuda_model (runtime/model.h), with options.
std::unique_ptr<CudaModel> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress,
                                           const CudaModelOptions& opts);

}  // namespace cllm::cuda
