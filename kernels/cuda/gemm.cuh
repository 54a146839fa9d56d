// bf16 GEMM through cuBLASLt, planned once per shape: y[M, N] = x[M, K] . W[N, K]^T, the layout of
// every linear layer (W row-major [out, in], as HF checkpoints store it), fp32 accumulation.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace cllm::cuda {

class GemmPlan {
 public:
  // Picks the algorithm (cublasLtMatmulAlgoGetHeuristic) and allocates its workspace, so run()
  // neither allocates nor synchronises: safe to capture into a CUDA graph. `alignment` (bytes) is
  // the alignment every x, W and y passed to run() will have: 256 for whole cudaMalloc buffers;
  // less (down to 16) admits slices at row offsets but may exclude faster algorithms.
  // Throws cllm::Error when cuBLASLt offers no algorithm for the shape.
  // shared_workspace: when not null, device memory of workspace_bytes (256-byte aligned) that the plan
  // uses instead of allocating its own; plans whose runs never overlap (one stream) may share one.
  GemmPlan(cublasLtHandle_t lt, int M, int N, int K, size_t workspace_bytes = size_t{8} << 20,
           unsigned alignment = 256, void* shared_workspace = nullptr);
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  GemmPlan(GemmPlan&& other) noexcept;
  GemmPlan& operator=(GemmPlan&& other) noexcept;

  // x: bf16 [M, K], w: bf16 [N, K], y: bf16 [M, N], all row-major and contiguous on the device.
  // Checks the alignment promised at construction.
  void run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, cudaStream_t stream) const;

  int M() const { return m_; }
  int N() const { return n_; }
  int K() const { return k_; }

 private:
  void release() noexcept;

  cublasLtHandle_t lt_ = nullptr;
  int m_ = 0, n_ = 0, k_ = 0;
  unsigned alignment_ = 256;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t w_layout_ = nullptr, x_layout_ = nullptr, y_layout_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool owns_workspace_ = false;
  float alpha_ = 1.f, beta_ = 0.f;  // host scalars; read by cuBLASLt at enqueue time
};

}  // namespace cllm::cuda
