#include "runtime/cuda/cuda_model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/bf16_host.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/skinny_gemm.cuh"
#include "runtime/rope.h"

namespace cllm::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr size_t kBf16 = sizeof(bf16);

DeviceBuffer bf16_rows(int rows, int cols) { return DeviceBuffer(static_cast<size_t>(rows) * cols * kBf16); }

// Tokens in the next device forward of a longer one with `remaining` tokens left: at most
// kExactMax exactly, else the largest of 256, 128, 64 that fits (see CudaModel::kMaxBlock).
int next_block(int remaining) {
  static_assert(CudaModel::kMaxBlock == 256 && CudaModel::kExactMax == 64);
  if (remaining <= CudaModel::kExactMax) return remaining;
  return remaining >= 256 ? 256 : remaining >= 128 ? 128 : 64;
}

}  // namespace

CudaModel::Handles::Handles() {
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CLLM_CUBLAS_CHECK(cublasLtCreate(&lt));
}

CudaModel::Handles::~Handles() {
  if (lt != nullptr) cublasLtDestroy(lt);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

CudaModel::Linear::Linear(cublasLtHandle_t lt, int M, int N, int K, int skinny_max_m) : m_(M), n_(N), k_(K) {
  // The scratch and weight buffers are whole cudaMalloc allocations (256-byte aligned), so the
  // skinny kernel's pointer requirements hold; its shape ones are checked here.
  const bool skinny = M <= std::min(skinny_max_m, kSkinnyGemmMaxM) && K % 8 == 0;
  if (!skinny) plan_.emplace(lt, M, N, K);
}

void CudaModel::Linear::run(const bf16* x, const bf16* w, bf16* y, cudaStream_t stream) const {
  if (plan_)
    plan_->run(x, w, y, stream);
  else
    invoke_skinny_gemm(x, w, y, m_, n_, k_, stream);
}

CudaModel::BlockPlans::BlockPlans(cublasLtHandle_t lt, const ModelConfig& c, int n, int skinny_max_m)
    : qkv(lt, n, c.q_dim() + 2 * c.kv_dim(), c.hidden_size, skinny_max_m),
      o(lt, n, c.hidden_size, c.q_dim(), skinny_max_m),
      gate_up(lt, n, 2 * c.intermediate_size, c.hidden_size, skinny_max_m),
      down(lt, n, c.hidden_size, c.intermediate_size, skinny_max_m),
      head(lt, n, c.vocab_size, c.hidden_size, skinny_max_m) {}

CudaModel::BlockPlans::~BlockPlans() {
  if (exec != nullptr) cudaGraphExecDestroy(exec);
}

CudaModel::CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts)
    : cfg_(cfg), opts_(opts), w_(std::move(weights)), plans_(kMaxBlock + 1) {
  const int d = cfg_.hidden_size, q = cfg_.q_dim(), kv = cfg_.kv_dim(), f = cfg_.intermediate_size;
  const std::vector<float> inv_freq = rope_inv_freq(cfg_);
  inv_freq_ = DeviceBuffer(inv_freq.size() * sizeof(float));
  CLLM_CUDA_CHECK(cudaMemcpy(inv_freq_.as<float>(), inv_freq.data(), inv_freq_.bytes(), cudaMemcpyHostToDevice));

  io_dev_ = DeviceBuffer(2 * kMaxBlock * sizeof(int32_t));
  ids_dev_ = DeviceBuffer(kMaxBlock * sizeof(int32_t));
  residual_ = DeviceBuffer(static_cast<size_t>(kMaxBlock) * d * sizeof(float));
  sub_ = bf16_rows(kMaxBlock, d);
  normed_ = bf16_rows(kMaxBlock, d);
  qkv_ = bf16_rows(kMaxBlock, q + 2 * kv);
  att_ = bf16_rows(kMaxBlock, q);
  gate_up_ = bf16_rows(kMaxBlock, 2 * f);
  act_ = bf16_rows(kMaxBlock, f);
  logits_ = bf16_rows(kMaxBlock, cfg_.vocab_size);
  attn_ws_ = DeviceBuffer(block_attention_workspace_bytes(kMaxBlock, cfg_.num_heads, cfg_.head_dim));
  argmax_ws_ = DeviceBuffer(argmax_workspace_bytes(kMaxBlock, cfg_.vocab_size));
  io_host_ = PinnedBuffer(2 * kMaxBlock * sizeof(int32_t));
  ids_host_ = PinnedBuffer(kMaxBlock * sizeof(int32_t));
  // cudaMemcpy from pageable memory (inv_freq above; weights, when a loader stages them in pageable
  // memory) may return before its DMA lands, and h_.stream is non-blocking: it would not wait.
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
}

CudaModel::~CudaModel() {
  // Kernels still in flight may use the buffers about to be freed (only after an exception).
  cudaStreamSynchronize(h_.stream);
}

void CudaModel::reset(int max_tokens, int slots) {
  CLLM_CHECK(slots == 1, "CudaModel: one KV slot only for now");
  CLLM_CHECK(max_tokens > 0, "KV capacity must be positive, got " << max_tokens);
  if (max_tokens <= capacity_) return;
  CLLM_CUDA_CHECK(cudaStreamSynchronize(h_.stream));
  kv_ = DeviceBuffer();  // free the old cache before allocating the larger one
  kv_ = DeviceBuffer(static_cast<size_t>(cfg_.num_layers) * 2 * max_tokens * cfg_.kv_dim() * kBf16);
  capacity_ = max_tokens;
}

double CudaModel::step_bytes(int context) const {
  return w_.step_weight_bytes() + 2.0 * cfg_.num_layers * context * cfg_.kv_dim() * kBf16;
}

CudaModel::BlockPlans& CudaModel::plans_for(int n) {
  std::unique_ptr<BlockPlans>& p = plans_[n];
  if (!p) p = std::make_unique<BlockPlans>(h_.lt, cfg_, n, opts_.skinny_gemm_max_m);
  return *p;
}

void CudaModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  check_forward_args(cfg_, tokens, n, pos, capacity_);
  for (int done = 0; done < n;) {
    const int m = next_block(n - done);
    run_block(tokens + done, m, pos + done, out_ids + done,
              logits ? logits + static_cast<size_t>(done) * cfg_.vocab_size : nullptr);
    done += m;
  }
}

void CudaModel::run_block(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  BlockPlans& p = plans_for(n);  // before capture: plan creation allocates
  int32_t* io = io_host_.as<int32_t>();
  std::memcpy(io, tokens, n * sizeof(int32_t));
  for (int i = 0; i < n; ++i) io[n + i] = pos + i;

  // The first step of each block size runs eagerly, so one-time lazy work (cuBLASLt kernel
  // selection state, module loading) never happens inside a capture.
  if (opts_.use_graphs && p.warmed_up)
    launch_graph(p, n, pos);
  else
    enqueue_step(p, n, pos);
  p.warmed_up = true;
  const size_t V = cfg_.vocab_size;
  if (logits != nullptr) {
    logits_host_.resize(static_cast<size_t>(kMaxBlock) * V);  // host only; sized once
    CLLM_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.as<bf16>(), n * V * kBf16, cudaMemcpyDeviceToHost,
                                    h_.stream));
  }
  CLLM_CUDA_CHECK(cudaStreamSynchronize(h_.stream));
  std::memcpy(out_ids, ids_host_.as<int32_t>(), n * sizeof(int32_t));
  if (logits != nullptr)
    for (size_t i = 0; i < n * V; ++i) logits[i] = bf16_bits_to_float(logits_host_[i]);
}

void CudaModel::launch_graph(BlockPlans& p, int n, int pos) {
  cudaGraph_t graph = nullptr;
  CLLM_CUDA_CHECK(cudaStreamBeginCapture(h_.stream, cudaStreamCaptureModeThreadLocal));
  try {
    enqueue_step(p, n, pos);
  } catch (...) {
    // Leave the stream usable: end the (invalidated) capture and drop what it recorded.
    if (cudaStreamEndCapture(h_.stream, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  CLLM_CUDA_CHECK(cudaStreamEndCapture(h_.stream, &graph));
  ++stats_.captures;
  if (p.exec != nullptr) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(p.exec, graph, &info) == cudaSuccess) {
      ++stats_.updates;
    } else {  // topology or node kinds changed: build a new executable graph
      (void)cudaGetLastError();
      cudaGraphExecDestroy(p.exec);
      p.exec = nullptr;
    }
  }
  if (p.exec == nullptr) {
    const cudaError_t err = cudaGraphInstantiate(&p.exec, graph, 0);
    if (err != cudaSuccess) {
      p.exec = nullptr;
      cudaGraphDestroy(graph);
      CLLM_CUDA_CHECK(err);
    }
    ++stats_.instantiations;
  }
  cudaGraphDestroy(graph);
  CLLM_CUDA_CHECK(cudaGraphLaunch(p.exec, h_.stream));
}

void CudaModel::enqueue_step(const BlockPlans& p, int n, int pos) {
  cudaStream_t s = h_.stream;
  const int d = cfg_.hidden_size, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), f = cfg_.intermediate_size;
  const int V = cfg_.vocab_size, ld_qkv = qd + 2 * kvd;
  const float eps = cfg_.rms_norm_eps;

  // Tokens and positions from pinned memory (a memcpy node reading io_host_ at replay time).
  int32_t* tokens_dev = io_dev_.as<int32_t>();
  int32_t* pos_dev = tokens_dev + n;
  CLLM_CUDA_CHECK(cudaMemcpyAsync(tokens_dev, io_host_.as<int32_t>(), 2 * n * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, s));

  float* residual = residual_.as<float>();
  bf16* sub = sub_.as<bf16>();
  bf16* normed = normed_.as<bf16>();
  bf16* qkv = qkv_.as<bf16>();
  bf16* att = att_.as<bf16>();
  bf16* gate_up = gate_up_.as<bf16>();
  bf16* act = act_.as<bf16>();
  bf16* logits = logits_.as<bf16>();
  const size_t layer_cache = static_cast<size_t>(capacity_) * kvd;  // elements in one layer's K (or V)

  // The residual starts at 0; the first add_rmsnorm adds the embedding into it.
  invoke_embedding(w_.embed.as<bf16>(), tokens_dev, sub, n, d, 0, V, s);
  CLLM_CUDA_CHECK(cudaMemsetAsync(residual, 0, static_cast<size_t>(n) * d * sizeof(float), s));
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const DeviceLayer& L = w_.layers[l];
    bf16* k_cache = kv_.as<bf16>() + 2 * l * layer_cache;
    bf16* v_cache = k_cache + layer_cache;
    // Attention: fused q|k|v GEMM; RoPE on q in place, k rotated and v copied into cache rows pos..pos+n-1.
    invoke_add_rmsnorm(residual, sub, L.attn_norm.as<bf16>(), normed, n, d, eps, s);
    p.qkv.run(normed, L.wqkv.as<bf16>(), qkv, s);
    invoke_rope_kv_write(qkv, ld_qkv, qkv + qd, ld_qkv, qkv + qd + kvd, ld_qkv, k_cache, v_cache, pos_dev,
                         inv_freq_.as<float>(), n, cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim, s);
    invoke_block_attention(qkv, ld_qkv, k_cache, v_cache, att, attn_ws_.as<void>(), attn_ws_.bytes(), n, pos,
                           cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim, s);
    p.o.run(att, L.wo.as<bf16>(), sub, s);
    // SwiGLU MLP: fused gate|up GEMM, silu(gate) * up, down projection.
    invoke_add_rmsnorm(residual, sub, L.ffn_norm.as<bf16>(), normed, n, d, eps, s);
    p.gate_up.run(normed, L.wgu.as<bf16>(), gate_up, s);
    invoke_silu_mul(gate_up, act, n, f, s);
    p.down.run(act, L.wdown.as<bf16>(), sub, s);
  }
  invoke_add_rmsnorm(residual, sub, w_.final_norm.as<bf16>(), normed, n, d, eps, s);
  p.head.run(normed, w_.head(), logits, s);
  invoke_argmax(logits, n, V, ids_dev_.as<int32_t>(), nullptr, 0, argmax_ws_.as<void>(), argmax_ws_.bytes(), s);
  CLLM_CUDA_CHECK(cudaMemcpyAsync(ids_host_.as<int32_t>(), ids_dev_.as<int32_t>(), n * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, s));
}

std::unique_ptr<CudaModel> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress,
                                           const CudaModelOptions& opts) {
  check_cuda_supported(ckpt.config(), ckpt.source());  // refuse before any device allocation
  int devices = 0;
  CLLM_CUDA_CHECK(cudaGetDeviceCount(&devices));
  CLLM_CHECK(devices > 0, "--device cuda: no CUDA device is visible");
  DeviceWeights w = load_device_weights(ckpt, progress);
  return std::make_unique<CudaModel>(ckpt.config(), std::move(w), opts);
}

}  // namespace cllm::cuda

namespace cllm {

std::unique_ptr<Model> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress) {
  cuda::CudaModelOptions opts;
  // CLLM_CUDA_SKINNY_MAX_M=0 puts every GEMM on cuBLASLt (A/B comparisons of the skinny kernel).
  if (const char* env = std::getenv("CLLM_CUDA_SKINNY_MAX_M"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    CLLM_CHECK(*end == '\0' && v >= 0, "CLLM_CUDA_SKINNY_MAX_M=" << env << ": expected an integer >= 0");
    opts.skinny_gemm_max_m = static_cast<int>(std::min<long>(v, cuda::kSkinnyGemmMaxM));
  }
  return cuda::make_cuda_model(ckpt, progress, opts);
}


// Placeholder until the batched forward lands: one block on slot 0 only.
void CudaModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids, float* logits) {
  CLLM_CHECK(count == 1 && blocks[0].slot == 0, "CudaModel: batched forward not implemented yet");
  forward(tokens, blocks[0].n, blocks[0].pos, out_ids, logits);
}

}  // namespace cllm
