// Kernels of the GPU communicator: the one-shot IPC all-reduce and the max-loc pick
// (algorithm and synchronisation argument in comm_kernels.cuh).
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "parallel/cuda/comm_kernels.cuh"

namespace cllm {
namespace {

__device__ __forceinline__ void store_release_sys(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ uint64_t load_acquire_sys(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Element traits: raw storage type, lanes per 16-byte vector, widening and narrowing.
template <CommDType D> struct Elem;
template <> struct Elem<CommDType::f32> {
  using Raw = uint32_t;
  static constexpr int kLanes = 4;
  __device__ static float to_f(Raw r) { return __uint_as_float(r); }
  __device__ static Raw from_f(float f) { return __float_as_uint(f); }
};
template <> struct Elem<CommDType::bf16> {
  using Raw = uint16_t;
  static constexpr int kLanes = 8;
  __device__ static float to_f(Raw r) { return __uint_as_float(static_cast<uint32_t>(r) << 16); }
  __device__ static Raw from_f(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

// Sums one 16-byte vector (kLanes elements) over R ranks' buffers at byte offset `off`, in rank order.
template <CommDType D, int R>
__device__ __forceinline__ uint4 sum_vec(const IpcKernelArgs& a, size_t half, size_t off) {
  using E = Elem<D>;
  float acc[E::kLanes];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const uint4 v = __ldcg(reinterpret_cast<const uint4*>(a.data[r] + half + off));
    const typename E::Raw* e = reinterpret_cast<const typename E::Raw*>(&v);
#pragma unroll
    for (int l = 0; l < E::kLanes; ++l) acc[l] = r == 0 ? E::to_f(e[l]) : acc[l] + E::to_f(e[l]);
  }
  uint4 out;
  typename E::Raw* o = reinterpret_cast<typename E::Raw*>(&out);
#pragma unroll
  for (int l = 0; l < E::kLanes; ++l) o[l] = E::from_f(acc[l]);
  return out;
}

// data: this rank's tensor, in place. vec: data is 16-byte aligned, so whole vectors are moved;
// else every element goes alone. The index -> thread map depends only on (count, vec, grid), so
// it is the same on every rank and each block reads back exactly the slice it copied in.
template <CommDType D, int R>
__global__ void __launch_bounds__(kIpcThreads) ipc_one_shot_kernel(IpcKernelArgs a, char* data, size_t count, bool vec) {
  using E = Elem<D>;
  using Raw = typename E::Raw;
  constexpr size_t kEsz = sizeof(Raw);
  __shared__ uint64_t s_step;
  __shared__ int s_failed;
  IpcSignal* me = a.signal[a.rank];
  const int b = blockIdx.x;
  if (threadIdx.x == 0) {
    s_step = me->step[b] + 1;
    me->step[b] = s_step;
    s_failed = 0;
  }
  __syncthreads();
  const uint64_t step = s_step;
  const size_t half = (step & 1) * a.half_bytes;
  char* mine = a.data[a.rank] + half;
  const size_t tid = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const size_t n_vec = vec ? count / E::kLanes : 0;  // whole 16-byte vectors
  const size_t tail0 = n_vec * E::kLanes;            // first element moved alone

  // 1. Copy in.
  for (size_t i = tid; i < n_vec; i += stride)
    reinterpret_cast<uint4*>(mine)[i] = reinterpret_cast<const uint4*>(data)[i];
  for (size_t i = tail0 + tid; i < count; i += stride)
    reinterpret_cast<Raw*>(mine)[i] = reinterpret_cast<const Raw*>(data)[i];

  // 2. Barrier of block b across ranks.
  __syncthreads();
  if (threadIdx.x < R) {
    const int peer = threadIdx.x;
    __threadfence_system();
    store_release_sys(&a.signal[peer]->flag[b][a.rank], step);
    const uint64_t* f = &me->flag[b][peer];
    if (load_acquire_sys(f) < step) {
      const unsigned long long t0 = global_timer_ns();
      while (load_acquire_sys(f) < step) {
        if (global_timer_ns() - t0 > a.timeout_ns) {
          s_failed = 1;
          *reinterpret_cast<volatile int*>(a.error) = peer + 1;
          __threadfence_system();
          break;
        }
      }
    }
  }
  __syncthreads();
  if (s_failed) return;  // the host reports the missing peer and stops every rank

  // 3. Sum in rank order into the tensor.
  for (size_t i = tid; i < n_vec; i += stride)
    reinterpret_cast<uint4*>(data)[i] = sum_vec<D, R>(a, half, i * 16);
  for (size_t i = tail0 + tid; i < count; i += stride) {
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float x = E::to_f(__ldcg(reinterpret_cast<const Raw*>(a.data[r] + half + i * kEsz)));
      acc = r == 0 ? x : acc + x;
    }
    reinterpret_cast<Raw*>(data)[i] = E::from_f(acc);
  }
}

template <CommDType D>
void launch_for_dtype(const IpcKernelArgs& a, char* data, size_t count, bool vec, cudaStream_t s) {
  const dim3 grid(kIpcBlocks), block(kIpcThreads);
  switch (a.nranks) {
    case 2: ipc_one_shot_kernel<D, 2><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 3: ipc_one_shot_kernel<D, 3><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 4: ipc_one_shot_kernel<D, 4><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 5: ipc_one_shot_kernel<D, 5><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 6: ipc_one_shot_kernel<D, 6><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 7: ipc_one_shot_kernel<D, 7><<<grid, block, 0, s>>>(a, data, count, vec); break;
    case 8: ipc_one_shot_kernel<D, 8><<<grid, block, 0, s>>>(a, data, count, vec); break;
    default: CLLM_FAIL("IPC all-reduce: " << a.nranks << " ranks, supported 2.." << kIpcMaxRanks);
  }
  CLLM_CUDA_LAUNCH_CHECK(s);
}

__global__ void pick_max_loc_kernel(const char* gathered, char* out, size_t rows, int nranks) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < rows;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float best = 0.f;
    int32_t best_idx = 0;
    for (int r = 0; r < nranks; ++r) {
      const char* p = gathered + (static_cast<size_t>(r) * rows + i) * 8;
      const float v = *reinterpret_cast<const float*>(p);
      const int32_t idx = *reinterpret_cast<const int32_t*>(p + 4);
      if (r == 0 || v > best || (v == best && idx < best_idx) || (best != best && v == v)) {
        best = v;
        best_idx = idx;
      }
    }
    *reinterpret_cast<float*>(out + i * 8) = best;
    *reinterpret_cast<int32_t*>(out + i * 8 + 4) = best_idx;
  }
}

}  // namespace

void launch_ipc_one_shot(const IpcKernelArgs& a, void* data, size_t count, CommDType dtype, cudaStream_t stream) {
  if (count == 0) return;
  CLLM_CHECK(count * comm_dtype_bytes(dtype) <= a.half_bytes,
             "IPC all-reduce of " << count * comm_dtype_bytes(dtype) << " bytes exceeds its buffer of " << a.half_bytes);
  const bool vec = reinterpret_cast<uintptr_t>(data) % 16 == 0;
  char* d = static_cast<char*>(data);
  if (dtype == CommDType::f32)
    launch_for_dtype<CommDType::f32>(a, d, count, vec, stream);
  else
    launch_for_dtype<CommDType::bf16>(a, d, count, vec, stream);
}

void launch_pick_max_loc(const void* gathered, void* out, size_t rows, int nranks, cudaStream_t stream) {
  if (rows == 0) return;
  const int threads = 256;
  const int blocks = static_cast<int>((rows + threads - 1) / threads < 1024 ? (rows + threads - 1) / threads : 1024);
  pick_max_loc_kernel<<<blocks, threads, 0, stream>>>(static_cast<const char*>(gathered), static_cast<char*>(out),
                                                      rows, nranks);
  CLLM_CUDA_LAUNCH_CHECK(stream);
}

}  // namespace cllm
