// Kernel micro-benchmark at decoding shapes (LLaMA-2-7B: dim 4096, 32 heads of 128, ffn 11008,
// vocab 32000; GQA variant with 8 kv heads), block sizes n = 1, 16, 64, context 2048; and the
// batched attention of B = 4, 16, 64 sequences x n = 1, 16 at context 512 each.
//
// Each kernel is timed with CUDA events around every launch, L2 flushed before each one (a memset of
// twice the L2 size), so every rep reads its inputs from HBM as the real forward does. Reported:
// mean time, the bytes the kernel must move (counted by hand, in the table's comment column) over
// that time, that as a fraction of the device-to-device copy bandwidth measured first in the same
// run, and TFLOP/s for the GEMMs.
//
// Usage: cllm_gpu_bench [reps]   (default 100)
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

namespace {

using bf16 = __nv_bfloat16;
namespace cu = cllm::cuda;

// Deterministic pseudo-random fill in [-1, 1): timings should not see zeros or NaNs.
__device__ float hash_unit(size_t i, uint32_t seed) {
  uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  return static_cast<float>(h & 0xffffff) / 8388608.f - 1.f;
}
__global__ void fill_kernel(bf16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    p[i] = __float2bfloat16_rn(hash_unit(i, seed));
}
__global__ void fill_kernel(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    p[i] = hash_unit(i, seed);
}

// Device allocations live until exit: the benchmark is one short process.
template <typename T>
T* alloc(size_t n, uint32_t seed = 1) {
  T* p = nullptr;
  CLLM_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, float>) {
    fill_kernel<<<1024, 256>>>(p, n, seed);
    CLLM_CUDA_LAUNCH_CHECK(0);
  }
  return p;
}

struct Bench {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  int reps = 100;
  double copy_gbs = 0;

  Bench(int reps_) : reps(reps_) {
    int dev = 0, l2 = 0;
    CLLM_CUDA_CHECK(cudaGetDevice(&dev));
    CLLM_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    flush_bytes = 2 * static_cast<size_t>(l2);
    CLLM_CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
    CLLM_CUDA_CHECK(cudaStreamCreate(&stream));
    CLLM_CUDA_CHECK(cudaEventCreate(&start));
    CLLM_CUDA_CHECK(cudaEventCreate(&stop));
  }

  // Mean microseconds of launch(), L2 flushed before each rep; 3 untimed warm-up reps first.
  double time_us(const std::function<void()>& launch) {
    for (int r = 0; r < 3; ++r) launch();
    float total_ms = 0;
    for (int r = 0; r < reps; ++r) {
      CLLM_CUDA_CHECK(cudaMemsetAsync(flush, r & 0xff, flush_bytes, stream));
      CLLM_CUDA_CHECK(cudaEventRecord(start, stream));
      launch();
      CLLM_CUDA_CHECK(cudaEventRecord(stop, stream));
      CLLM_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CLLM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      total_ms += ms;
    }
    return 1e3 * total_ms / reps;
  }

  // Device-to-device copy of 1 GiB: 2 GiB moved (read + write) per copy.
  void measure_copy() {
    const size_t bytes = size_t{1} << 30;
    void *a = nullptr, *b = nullptr;
    CLLM_CUDA_CHECK(cudaMalloc(&a, bytes));
    CLLM_CUDA_CHECK(cudaMalloc(&b, bytes));
    const double us = time_us([&] { CLLM_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); });
    copy_gbs = 2.0 * bytes / (us * 1e3);
    CLLM_CUDA_CHECK(cudaFree(a));
    CLLM_CUDA_CHECK(cudaFree(b));
  }

  void row(const std::string& kernel, const std::string& shape, double bytes, double flops,
           const std::function<void()>& launch) {
    const double us = time_us(launch);
    const double gbs = bytes / (us * 1e3);
    std::printf("| %-15s | %-34s | %9.2f | %8.1f | %5.1f%% |", kernel.c_str(), shape.c_str(), us, gbs,
                100.0 * gbs / copy_gbs);
    if (flops > 0)
      std::printf(" %7.1f |\n", flops / (us * 1e6));
    else
      std::printf("         |\n");
  }
};

std::string fmt(const char* f, int a, int b = 0, int c = 0) {
  char buf[96];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// --tile-sweep: every built tile shape of the skinny GEMM at the 7B and 135M projection shapes, plain,
// with the SwiGLU epilogue (gate|up into silu(gate) * up) and with the fused layer's normalised fp32
// input ("normed": the residual and its RMS partials), M = 1..64: one row per run, then the
// fastest shape per case beside the default dispatch's. The shapes give the same bits (BatchInvariance tests), so the
// dispatch may take whichever is fastest.
void tile_sweep(Bench& b) {
  struct Case {
    const char* name;
    int N, K;
    bool swiglu, normed;
  };
  const Case cases[] = {{"7b qkv", 12288, 4096, false, false},
                        {"7b qkv normed", 12288, 4096, false, true},
                        {"7b o", 4096, 4096, false, false},
                        {"7b gate_up", 22016, 4096, false, false},
                        {"7b down", 4096, 11008, false, false},
                        {"7b gate_up swiglu", 22016, 4096, true, false},
                        {"7b gate_up swiglu normed", 22016, 4096, true, true},
                        {"7b lm_head", 32000, 4096, false, false},
                        {"135m qkv", 960, 576, false, false},
                        {"135m o", 576, 576, false, false},
                        {"135m gate_up", 3072, 576, false, false},
                        {"135m gate_up swiglu", 3072, 576, true, false},
                        {"135m gate_up swiglu normed", 3072, 576, true, true},
                        {"135m lm_head", 49152, 576, false, false}};
  const cudaStream_t s = b.stream;
  bf16* weight = alloc<bf16>(size_t{49152} * 4096);  // the largest N*K above
  bf16* x = alloc<bf16>(size_t{64} * 2 * 11008);
  bf16* y = alloc<bf16>(size_t{64} * 49152);
  // The normalised input: residual [64, K], gamma [K], RMS partials [64, rms_segments(K)]; the partials
  // are a positive constant (bytes 0x3f: 0.75 each), so every row's inverse rms is finite.
  float* residual = alloc<float>(size_t{64} * 4096);
  bf16* gamma = alloc<bf16>(4096);
  float* rms_parts = alloc<float>(size_t{64} * cu::rms_segments(4096));
  CLLM_CUDA_CHECK(cudaMemset(rms_parts, 0x3f, sizeof(float) * 64 * cu::rms_segments(4096)));
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("| case            | M  | tiles NTxRTxUL/minCTAs |   time us | %%copy  |\n");
  std::vector<std::string> best_rows;
  for (const Case& c : cases)
    for (const int m : {1, 4, 8, 16, 32, 64}) {
      const double bytes =
          2.0 * (double(c.N) * c.K + (c.normed ? 2.0 : 1.0) * m * c.K + double(m) * c.N / (c.swiglu ? 2 : 1));
      const cu::SkinnyTileShape def = cu::skinny_default_tile_shape(m, c.N, c.normed);
      double best_us = 1e30, def_us = 0;
      cu::SkinnyTileShape best{};
      for (const cu::SkinnyTileShape& t : cu::skinny_tile_shapes()) {
        cu::SkinnyInput in;
        if (c.normed) {
          in.residual = residual;
          in.gamma = gamma;
          in.rms_parts = rms_parts;
          in.eps = 1e-5f;
        } else {
          in.x = x;
        }
        cu::SkinnyOutput out{y};
        out.swiglu = c.swiglu;
        const double us = b.time_us([&] { cu::invoke_skinny_gemm_tiles(t, in, weight, out, m, c.N, c.K, s); });
        const bool is_def = t == def;
        std::printf("| %-26s | %2d | %-22s | %9.2f | %5.1f%% |\n", c.name, m,
                    (t.name() + (is_def ? " default" : "")).c_str(), us, 100.0 * bytes / (us * 1e3) / b.copy_gbs);
        if (is_def) def_us = us;
        if (us < best_us) best_us = us, best = t;
      }
      char line[160];
      std::snprintf(line, sizeof line, "| %-26s | %2d | default %-7s %8.2f us %5.1f%% | best %-7s %8.2f us %5.1f%% |",
                    c.name, m, def.name().c_str(), def_us, 100.0 * bytes / (def_us * 1e3) / b.copy_gbs,
                    best.name().c_str(), best_us, 100.0 * bytes / (best_us * 1e3) / b.copy_gbs);
      best_rows.push_back(line);
    }
  std::printf("\nfastest tile shape per case (%%copy: bytes over the copy bandwidth of this run)\n");
  for (const std::string& r : best_rows) std::printf("%s\n", r.c_str());
}

int run(int argc, char** argv) {
  const bool sweep = argc > 1 && std::strcmp(argv[1], "--tile-sweep") == 0;
  const int reps = argc > 1 + sweep ? std::atoi(argv[1 + sweep]) : 100;
  if (reps <= 0) {
    std::fprintf(stderr, "usage: %s [--tile-sweep] [reps > 0]\n", argv[0]);
    return 2;
  }
  cudaDeviceProp prop{};
  CLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Bench b(reps);
  b.measure_copy();
  std::printf("device: %s, %d SMs, L2 %d MiB; %d reps, L2 flushed before each\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, reps);
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n\n", b.copy_gbs);
  if (sweep) {
    tile_sweep(b);
    return 0;
  }
  std::printf("| kernel          | shape                              |   time us |     GB/s | %%copy  | TFLOP/s |\n");
  std::printf("|-----------------|------------------------------------|-----------|----------|--------|---------|\n");

  constexpr int dim = 4096, heads = 32, hd = 128, ffn = 11008, vocab = 32000, ctx = 2048, max_n = 64;
  const cudaStream_t s = b.stream;
  bf16* table = alloc<bf16>(size_t{vocab} * dim);
  bf16* x = alloc<bf16>(size_t{max_n} * 2 * ffn);  // big enough for every activation below
  bf16* y = alloc<bf16>(size_t{max_n} * 2 * ffn);
  bf16* w = alloc<bf16>(dim);
  float* residual = alloc<float>(size_t{max_n} * dim);
  bf16* qkv = alloc<bf16>(size_t{max_n} * 3 * heads * hd);
  bf16* k_cache = alloc<bf16>(size_t{ctx} * heads * hd);
  bf16* v_cache = alloc<bf16>(size_t{ctx} * heads * hd);
  bf16* logits = alloc<bf16>(size_t{max_n} * vocab);
  float* inv_freq = alloc<float>(hd / 2);
  int32_t* ids = alloc<int32_t>(max_n);
  float* vals = alloc<float>(max_n);
  int32_t* positions = alloc<int32_t>(max_n);
  const size_t attn_ws_bytes = cu::block_attention_workspace_bytes(max_n, heads, hd);
  void* attn_ws = alloc<unsigned char>(attn_ws_bytes);
  const size_t argmax_ws_bytes = cu::argmax_workspace_bytes(max_n, vocab);
  void* argmax_ws = alloc<unsigned char>(argmax_ws_bytes);
  {
    std::vector<int32_t> h(max_n);
    for (int i = 0; i < max_n; ++i) h[i] = (i * 7919) % vocab;  // token ids, also valid positions < ctx
    CLLM_CUDA_CHECK(cudaMemcpy(ids, h.data(), max_n * sizeof(int32_t), cudaMemcpyHostToDevice));
    for (int i = 0; i < max_n; ++i) h[i] = ctx - max_n + i;
    CLLM_CUDA_CHECK(cudaMemcpy(positions, h.data(), max_n * sizeof(int32_t), cudaMemcpyHostToDevice));
  }
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());

  for (const int n : {1, 16, 64}) {
    const double bf = 2, f32 = 4;  // bytes per element
    b.row("embedding", fmt("n%d dim%d", n, dim), 2 * n * dim * bf, 0,
          [&] { cu::invoke_embedding(table, ids, x, n, dim, 0, vocab, s); });
    b.row("add_rmsnorm", fmt("n%d dim%d", n, dim), n * dim * (2 * f32 + 2 * bf) + dim * bf, 0,
          [&] { cu::invoke_add_rmsnorm(residual, x, w, y, n, dim, 1e-5f, s); });
    for (const int kv : {32, 8}) {
      const int stride = (heads + 2 * kv) * hd;
      // q read + written, k and v read, k and v written to the cache
      b.row("rope_kv_write", fmt("n%d heads%d kv%d", n, heads, kv), n * (2 * heads + 4 * kv) * hd * bf, 0, [&] {
        cu::invoke_rope_kv_write(qkv, stride, qkv + heads * hd, stride, qkv + (heads + kv) * hd, stride, k_cache,
                                 v_cache, positions + max_n - n, inv_freq, n, heads, kv, hd, s);
      });
      // K and V of the whole context once, q in, out
      b.row("block_attention", fmt("n%d kv%d ctx%d", n, kv, ctx), (2.0 * ctx * kv * hd + 2.0 * n * heads * hd) * bf,
            4.0 * n * heads * hd * (ctx - n / 2.0),
            [&] {
              cu::invoke_block_attention(qkv, stride, k_cache, v_cache, y, attn_ws, attn_ws_bytes, n, ctx - n, heads,
                                         kv, hd, s);
            });
    }
    b.row("silu_mul", fmt("n%d ffn%d", n, ffn), 3.0 * n * ffn * bf, 0, [&] { cu::invoke_silu_mul(x, y, n, ffn, s); });
    b.row("argmax_bf16", fmt("n%d vocab%d", n, vocab), 1.0 * n * vocab * bf, 0,
          [&] { cu::invoke_argmax(logits, n, vocab, ids, vals, 0, argmax_ws, argmax_ws_bytes, s); });
  }

  // Batched attention (continuous batching): B sequences of n queries, each at the end of its own
  // context of 512 in its own KV slot, planned as CudaModel plans them (its workspace size, one
  // table upload before timing). Bytes: every sequence's K and V once, q in and out.
  {
    const int bctx = 512, max_b = 64, max_bn = 16;
    bf16* kb = alloc<bf16>(size_t{max_b} * bctx * heads * hd);
    bf16* vb = alloc<bf16>(size_t{max_b} * bctx * heads * hd);
    bf16* bq = alloc<bf16>(size_t{max_b} * max_bn * 3 * heads * hd);
    bf16* bout = alloc<bf16>(size_t{max_b} * max_bn * heads * hd);
    const size_t ws_bytes = cu::block_attention_workspace_bytes(256, heads, hd);
    void* ws = alloc<unsigned char>(ws_bytes);
    const size_t table_cap = cu::batched_attention_table_bytes(max_b * max_bn, max_b, heads, 8);
    unsigned char* table = alloc<unsigned char>(table_cap);
    CLLM_CUDA_CHECK(cudaDeviceSynchronize());
    for (const int kv : {32, 8})
      for (const int B : {1, 4, 16, 64})
        for (const int n : {1, 16})
          for (const int chunk_keys : {0, cu::invariant_chunk_keys(kv)}) {
          std::vector<cu::AttnBlock> blocks;
          for (int i = 0; i < B; ++i) blocks.push_back({i * n, bctx - n, n, i});
          cu::BatchedAttentionPlan plan;
          cu::plan_batched_attention(blocks.data(), B, heads, kv, hd, ws_bytes, table_cap, chunk_keys, plan);
          CLLM_CHECK(cu::attention_partials_bytes(plan.partials, hd) <= ws_bytes && plan.table.size() <= table_cap,
                     "bench: batched attention plan outgrows its buffers");
          CLLM_CUDA_CHECK(cudaMemcpy(table, plan.table.data(), plan.table.size(), cudaMemcpyHostToDevice));
          const int stride = (heads + 2 * kv) * hd;
          const size_t slot_stride = size_t{bctx} * kv * hd;
          b.row(chunk_keys ? "batched_attention_inv" : "batched_attention", fmt("B%d n%d kv%d ctx512", B, n, kv),
                (2.0 * B * bctx * kv * hd + 2.0 * B * n * heads * hd) * 2, 4.0 * B * n * heads * hd * (bctx - n / 2.0),
                [&] {
                  cu::invoke_batched_attention(bq, stride, kb, vb, slot_stride, bout, ws, ws_bytes, plan, table, heads,
                                               kv, hd, s);
                });
        }
  }

  // GEMMs: the 7B layer's projections and the LM head; the weights dominate the bytes at small M.
  cublasLtHandle_t lt = nullptr;
  CLLM_CUBLAS_CHECK(cublasLtCreate(&lt));
  const int nk[][2] = {{3 * dim, dim}, {dim, dim}, {2 * ffn, dim}, {dim, ffn}, {vocab, dim}};
  const char* names[] = {"gemm qkv", "gemm o", "gemm gate_up", "gemm down", "gemm lm_head"};
  bf16* weight = alloc<bf16>(size_t{vocab} * dim);  // the largest N*K above
  bf16* gx = alloc<bf16>(size_t{1024} * ffn);
  bf16* gy = alloc<bf16>(size_t{1024} * vocab);
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
  // Each cuBLASLt row is followed by the invariant (skinny) kernel at the same shape.
  for (const int m : {1, 4, 8, 16, 32, 64, 256, 1024})
    for (int g = 0; g < 5; ++g) {
      const int N = nk[g][0], K = nk[g][1];
      const double bytes = 2.0 * (double(N) * K + double(m) * K + double(m) * N), flops = 2.0 * m * N * K;
      const cu::GemmPlan plan(lt, m, N, K);
      b.row(names[g], fmt("M%d N%d K%d", m, N, K), bytes, flops, [&] { plan.run(gx, weight, gy, s); });
      if (m <= cu::kSkinnyGemmMaxM)
        b.row(std::string("skinny") + (names[g] + 4), fmt("M%d N%d K%d", m, N, K), bytes, flops,
              [&] { cu::invoke_skinny_gemm(gx, weight, gy, m, N, K, s); });
    }
  CLLM_CUBLAS_CHECK(cublasLtDestroy(lt));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cllm_gpu_bench: %s\n", e.what());
    return 1;
  }
}
