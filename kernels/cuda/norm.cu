// One block per row. Pass 1 adds x into the fp32 residual (16-byte vectors: 8 elements per step);
// the row's squares are then summed in the order of rms_sum.cuh (segment partials in shared memory,
// one warp adds them), the order the fused small-M GEMMs use; pass 2 re-reads the row this same
// thread wrote (an L1/L2 hit) and writes the normalised bf16 output.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rms_sum.cuh"

namespace cllm::cuda {
namespace {

using detail::Bf16x8;

// Dynamic shared memory: rms_segments(dim) floats, then the row's inverse rms.
__global__ void add_rmsnorm_kernel(float* __restrict__ residual, const Bf16x8* __restrict__ x,
                                   const Bf16x8* __restrict__ weight, Bf16x8* __restrict__ out, int dim,
                                   float eps) {
  extern __shared__ float parts[];
  detail::start_after_prior_grids();
  const int vecs = dim / 8, segments = rms_segments(dim);
  const size_t row = blockIdx.x;
  float* row_res = residual + row * dim;
  float4* res = reinterpret_cast<float4*>(row_res);
  if (x != nullptr)
    for (int c = threadIdx.x; c < vecs; c += blockDim.x) {
      float4 a = res[2 * c], b = res[2 * c + 1];
      float xf[8];
      detail::bf16x8_to_float(x[row * vecs + c], xf);
      a.x += xf[0]; a.y += xf[1]; a.z += xf[2]; a.w += xf[3];
      b.x += xf[4]; b.y += xf[5]; b.z += xf[6]; b.w += xf[7];
      res[2 * c] = a;
      res[2 * c + 1] = b;
    }
  __syncthreads();  // the row's new residual is written (visible to the whole block)
  for (int sg = threadIdx.x; sg < segments; sg += blockDim.x)
    parts[sg] = detail::rms_segment_partial(row_res + sg * kRmsSegment, min(kRmsSegment, dim - sg * kRmsSegment));
  __syncthreads();
  if (threadIdx.x < detail::kWarp) {
    const float inv = detail::rms_inv_from_partials(parts, dim, eps);
    if (threadIdx.x == 0) parts[segments] = inv;
  }
  __syncthreads();
  const float inv_rms = parts[segments];
  for (int c = threadIdx.x; c < vecs; c += blockDim.x) {
    const float4 a = res[2 * c], b = res[2 * c + 1];
    float wf[8];
    detail::bf16x8_to_float(weight[c], wf);
    const float y[8] = {a.x * inv_rms * wf[0], a.y * inv_rms * wf[1], a.z * inv_rms * wf[2], a.w * inv_rms * wf[3],
                        b.x * inv_rms * wf[4], b.y * inv_rms * wf[5], b.z * inv_rms * wf[6], b.w * inv_rms * wf[7]};
    out[row * vecs + c] = detail::float_to_bf16x8(y);
  }
}

}  // namespace

void invoke_add_rmsnorm(float* residual, const __nv_bfloat16* x, const __nv_bfloat16* weight,
                        __nv_bfloat16* out, int rows, int dim, float eps, cudaStream_t stream) {
  CLLM_CHECK(dim > 0 && dim % 8 == 0, "add_rmsnorm: dim " << dim << " must be a positive multiple of 8");
  CLLM_CHECK(is_aligned(residual, 16) && (x == nullptr || is_aligned(x, 16)) && is_aligned(weight, 16) &&
                 is_aligned(out, 16),
             "add_rmsnorm: pointers must be 16-byte aligned");
  if (rows == 0) return;
  // One 8-element vector per thread where possible: dim 4096 -> 512 threads, 8192 -> 1024.
  const int vecs = dim / 8;
  const int threads = vecs >= 1024 ? 1024 : ((vecs + 31) / 32) * 32;
  const size_t smem = (rms_segments(dim) + 1) * sizeof(float);
  launch_overlapped(add_rmsnorm_kernel, rows, threads, smem, stream, residual, reinterpret_cast<const Bf16x8*>(x),
                    reinterpret_cast<const Bf16x8*>(weight), reinterpret_cast<Bf16x8*>(out), dim, eps);
}

}  // namespace cllm::cuda
