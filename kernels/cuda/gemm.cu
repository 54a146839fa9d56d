// cuBLASLt is column-major. A row-major [R, C] matrix is a column-major [C, R] one, so
//   y[M,N] = x[M,K] . W[N,K]^T   (row-major)
// is, column-major,
//   y'[N,M] = op(W')[N,K] . x'[K,M]   with W' = [K,N] (ld K) transposed, x' = [K,M] (ld K) as is,
// i.e. A = W with TRANSA = T, B = x with TRANSB = N, C = D = y' [N,M] (ld N): the "TN" case that
// cuBLASLt serves best.
#include <utility>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/gemm.cuh"

namespace cllm::cuda {

GemmPlan::GemmPlan(cublasLtHandle_t lt, int M, int N, int K, size_t workspace_bytes, unsigned alignment,
                   void* shared_workspace)
    : lt_(lt), m_(M), n_(N), k_(K), alignment_(alignment), workspace_bytes_(workspace_bytes) {
  CLLM_CHECK(M > 0 && N > 0 && K > 0, "GemmPlan: bad shape M=" << M << " N=" << N << " K=" << K);
  CLLM_CHECK(alignment >= 16 && (alignment & (alignment - 1)) == 0 && alignment <= 256,
             "GemmPlan: alignment " << alignment << " must be a power of two in [16, 256]");
  cublasLtMatmulPreference_t pref = nullptr;
  try {
    CLLM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    CLLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    CLLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    CLLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&w_layout_, CUDA_R_16BF, K, N, K));
    CLLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&x_layout_, CUDA_R_16BF, K, M, K));
    CLLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&y_layout_, CUDA_R_16BF, N, M, N));

    CLLM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t max_ws = workspace_bytes;
    CLLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                           sizeof(max_ws)));
    const uint32_t align = alignment;
    for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CLLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    CLLM_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_, op_, w_layout_, x_layout_, y_layout_, y_layout_, pref, 1,
                                                     &result, &found));
    CLLM_CHECK(found > 0, "GemmPlan: cuBLASLt has no bf16 algorithm for M=" << M << " N=" << N << " K=" << K
                                                                            << " within " << workspace_bytes
                                                                            << " workspace bytes");
    algo_ = result.algo;
    workspace_bytes_ = result.workspaceSize;  // the chosen algorithm's need, <= workspace_bytes
    if (shared_workspace != nullptr) {
      workspace_ = shared_workspace;
    } else if (workspace_bytes_ > 0) {
      CLLM_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
      owns_workspace_ = true;
    }
    CLLM_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  } catch (...) {
    if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
    release();
    throw;
  }
}

GemmPlan::~GemmPlan() { release(); }

GemmPlan::GemmPlan(GemmPlan&& other) noexcept { *this = std::move(other); }

GemmPlan& GemmPlan::operator=(GemmPlan&& other) noexcept {
  if (this != &other) {
    release();
    lt_ = other.lt_;
    m_ = other.m_;
    n_ = other.n_;
    k_ = other.k_;
    alignment_ = other.alignment_;
    op_ = std::exchange(other.op_, nullptr);
    w_layout_ = std::exchange(other.w_layout_, nullptr);
    x_layout_ = std::exchange(other.x_layout_, nullptr);
    y_layout_ = std::exchange(other.y_layout_, nullptr);
    algo_ = other.algo_;
    workspace_ = std::exchange(other.workspace_, nullptr);
    workspace_bytes_ = std::exchange(other.workspace_bytes_, 0);
    owns_workspace_ = std::exchange(other.owns_workspace_, false);
  }
  return *this;
}

void GemmPlan::release() noexcept {
  // Destruction paths must not throw: statuses are ignored here.
  if (workspace_ != nullptr && owns_workspace_) cudaFree(workspace_);
  if (y_layout_ != nullptr) cublasLtMatrixLayoutDestroy(y_layout_);
  if (x_layout_ != nullptr) cublasLtMatrixLayoutDestroy(x_layout_);
  if (w_layout_ != nullptr) cublasLtMatrixLayoutDestroy(w_layout_);
  if (op_ != nullptr) cublasLtMatmulDescDestroy(op_);
  workspace_ = nullptr;
  owns_workspace_ = false;
  y_layout_ = x_layout_ = w_layout_ = nullptr;
  op_ = nullptr;
}

void GemmPlan::run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, cudaStream_t stream) const {
  CLLM_CHECK(op_ != nullptr, "GemmPlan::run on a moved-from plan");
  CLLM_CHECK(is_aligned(x, alignment_) && is_aligned(w, alignment_) && is_aligned(y, alignment_),
             "GemmPlan::run: x/W/y not " << alignment_ << "-byte aligned as the plan assumes");
  CLLM_CUBLAS_CHECK(cublasLtMatmul(lt_, op_, &alpha_, w, w_layout_, x, x_layout_, &beta_, y, y_layout_, y, y_layout_,
                                   &algo_, workspace_, workspace_bytes_, stream));
}

}  // namespace cllm::cuda
