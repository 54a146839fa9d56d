#include "runtime/cuda/cuda_model.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/check.h"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/bf16_host.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/kv_move.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/norm.cuh"
#include "runtime/rope.h"

namespace cllm::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr size_t kBf16 = sizeof(bf16);

DeviceBuffer bf16_rows(int rows, int cols) { return DeviceBuffer(static_cast<size_t>(rows) * cols * kBf16); }

// Bytes before the attention block table in the step's input buffer: tokens, positions and cache
// rows of kMaxRows rows (a multiple of 16).
constexpr size_t kTableOffsetMax = 3 * CudaModel::kMaxRows * sizeof(int32_t);
static_assert(kTableOffsetMax % 16 == 0);

// Shared cuBLASLt workspace: the most any GemmPlan may ask for (GemmPlan's default).
constexpr size_t kGemmWorkspaceBytes = size_t{8} << 20;

}  // namespace

// Tokens in the next device forward of a longer one with `remaining` tokens left: at most
// kExactMax exactly, else the largest power of two from 64 up to the block limit that fits (see
// CudaModel::kMaxBlock).
int CudaModel::next_block(int remaining) const {
  static_assert(kExactMax == 64 && (kMaxBlock & (kMaxBlock - 1)) == 0 && kMaxInvariantBlock <= kMaxBlock);
  if (remaining <= kExactMax) return remaining;
  int block = opts_.batch_invariant() ? kMaxInvariantBlock : kMaxBlock;
  while (block > remaining) block /= 2;
  return block;
}

CudaModel::Handles::Handles() {
  CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CLLM_CUBLAS_CHECK(cublasLtCreate(&lt));
}

CudaModel::Handles::~Handles() {
  if (lt != nullptr) cublasLtDestroy(lt);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

CudaModel::CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts)
    : CudaModel(cfg, std::move(weights), opts, ShardPlan::whole(cfg), nullptr, nullptr) {}

CudaModel::CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
                     DeviceAllReduce& all_reduce, Comm& comm)
    : CudaModel(cfg, std::move(weights), opts, plan, &all_reduce, &comm) {
  CLLM_CHECK(comm.size() == plan.size && comm.rank() == plan.rank,
             "shard plan of rank " << plan.rank << "/" << plan.size << " given to rank " << comm.rank() << "/"
                                   << comm.size());
}

CudaModel::CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
                     std::unique_ptr<DeviceAllReduce> all_reduce, Comm& comm)
    : CudaModel(cfg, std::move(weights), opts, plan, *all_reduce, comm) {
  owned_all_reduce_ = std::move(all_reduce);
}

CudaModel::CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
                     DeviceAllReduce* all_reduce, Comm* comm)
    : cfg_(cfg),
      opts_(opts),
      w_(std::move(weights)),
      plan_(plan),
      all_reduce_(all_reduce),
      comm_(comm),
      dims_{cfg.hidden_size, plan.heads * cfg.head_dim, plan.kv_heads * cfg.head_dim, plan.ffn, plan.vocab},
      plans_(kMaxRows + 1) {
  // The invariant GEMM needs K % 8 == 0; cuBLASLt would take such a layer, with no invariance.
  if (opts_.invariant_max_rows > 0)
    for (const int k : {dims_.d, dims_.q, dims_.ffn})
      CLLM_CHECK(k % 8 == 0, "batch-invariant CUDA numerics need every GEMM's K to be a multiple of 8; this "
                             "model (rank) has a width of " << k);
  // A group's forwards hold host collectives between kernels when the sum is host-staged: no graphs.
  if (all_reduce_ != nullptr && !all_reduce_->capturable()) opts_.use_graphs = false;
  if (opts_.fused_layer_rows == ModelOptions::kAutoFusedLayerRows)
    opts_.fused_layer_rows = CudaModelOptions::auto_fused_layer_rows(dims_.d);
  set_launch_overlap(opts_.overlap_launches);
  set_skinny_ring(opts_.gemm_ring);
  const int d = dims_.d, q = dims_.q, kv = dims_.kv, f = dims_.ffn;
  const std::vector<float> inv_freq = rope_inv_freq(cfg_);
  inv_freq_ = DeviceBuffer(inv_freq.size() * sizeof(float));
  CLLM_CUDA_CHECK(cudaMemcpy(inv_freq_.as<float>(), inv_freq.data(), inv_freq_.bytes(), cudaMemcpyHostToDevice));

  table_bytes_ = batched_attention_table_bytes(kMaxRows, kMaxRows, plan_.heads, plan_.kv_heads);
  const size_t io_bytes = kTableOffsetMax + table_bytes_;
  io_dev_ = DeviceBuffer(io_bytes);
  io_host_ = PinnedBuffer(io_bytes);
  ids_dev_ = DeviceBuffer(kMaxRows * sizeof(int32_t));
  ids_host_ = PinnedBuffer(kMaxRows * sizeof(int32_t));
  values_dev_ = DeviceBuffer(kMaxRows * sizeof(float));
  values_host_ = PinnedBuffer(kMaxRows * sizeof(float));
  residual_ = DeviceBuffer(static_cast<size_t>(kMaxRows) * d * sizeof(float));
  sub_ = bf16_rows(kMaxRows, d);
  normed_ = bf16_rows(kMaxRows, d);
  rms_parts_ = DeviceBuffer(static_cast<size_t>(kSkinnyFusedMaxM) * rms_segments(d) * sizeof(float));
  qkv_ = bf16_rows(kMaxRows, q + 2 * kv);
  att_ = bf16_rows(kMaxRows, q);
  gate_up_ = bf16_rows(kMaxRows, 2 * f);
  act_ = bf16_rows(kMaxRows, f);
  logits_ = bf16_rows(kMaxRows, dims_.vocab);
  // Room for a 256-row block's partial results (adaptive plans fit within what there is; fixed-chunk
  // plans grow it, fit_attention_plan).
  attn_ws_ = DeviceBuffer(block_attention_workspace_bytes(kMaxInvariantBlock, plan_.heads, cfg_.head_dim));
  argmax_ws_ = DeviceBuffer(argmax_workspace_bytes(kMaxRows, dims_.vocab));
  gemm_ws_ = DeviceBuffer(kGemmWorkspaceBytes);
  // The GEMMs read rows past a step's real ones (gemm_rows padding): start them as zeros, not
  // whatever the allocator left (their results are never read either way).
  for (DeviceBuffer* b : {&sub_, &normed_, &qkv_, &att_, &gate_up_, &act_})
    CLLM_CUDA_CHECK(cudaMemset(b->as<void>(), 0, b->bytes()));
  // cudaMemcpy from pageable memory (inv_freq above; weights, when a loader stages them in pageable
  // memory) may return before its DMA lands, and h_.stream is non-blocking: it would not wait.
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());
}

CudaModel::~CudaModel() {
  // Kernels still in flight may use the buffers about to be freed (only after an exception).
  cudaStreamSynchronize(h_.stream);
}

void CudaModel::reset(int max_tokens, int slots) {
  CLLM_CHECK(max_tokens > 0, "KV capacity must be positive, got " << max_tokens);
  CLLM_CHECK(slots > 0, "KV slots must be positive, got " << slots);
  // Forwards are checked against what was asked for; the allocation only grows.
  limit_tokens_ = limit_slots_ = 0;
  if (max_tokens <= capacity_ && slots <= slots_) {
    limit_tokens_ = max_tokens;
    limit_slots_ = slots;
    return;
  }
  CLLM_CHECK(static_cast<int64_t>(slots) * max_tokens <= INT32_MAX,
             "KV cache of " << slots << " slots x " << max_tokens << " positions: too many rows for int32 indices");
  const size_t bytes = static_cast<size_t>(cfg_.num_layers) * 2 * slots * static_cast<size_t>(max_tokens) *
                       dims_.kv * kBf16;
  CLLM_CUDA_CHECK(cudaStreamSynchronize(h_.stream));
  kv_ = DeviceBuffer();  // free the old cache before allocating the larger one
  capacity_ = slots_ = 0;
  try {
    kv_ = DeviceBuffer(bytes);
  } catch (const Error& e) {
    CLLM_FAIL("KV cache of " << slots << " slots x " << max_tokens << " positions (" << bytes / 1e9
                              << " GB) does not fit on the device: " << e.what());
  }
  capacity_ = limit_tokens_ = max_tokens;
  slots_ = limit_slots_ = slots;
  ++kv_generation_;
}

double CudaModel::step_bytes(int context) const {
  return w_.step_weight_bytes() + 2.0 * cfg_.num_layers * context * dims_.kv * kBf16;
}

CudaModel::BlockPlans& CudaModel::plans_for(int gemm_rows) {
  std::unique_ptr<BlockPlans>& p = plans_[gemm_rows];
  if (!p)
    p = std::make_unique<BlockPlans>(h_.lt, dims_, gemm_rows,
                                     std::max(opts_.invariant_max_rows, CudaModelOptions::kSkinnyBestMaxM), gemm_ws_.as<void>(),
                                     gemm_ws_.bytes());
  return *p;
}

void CudaModel::forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) {
  check_forward_args(cfg_, tokens, n, pos, limit_tokens_);
  run_sequence(tokens, n, pos, 0, out_ids, logits);
}

void CudaModel::run_sequence(const int32_t* tokens, int n, int pos, int slot, int32_t* out_ids, float* logits) {
  for (int done = 0; done < n;) {
    const int m = next_block(n - done);
    const SeqBlock b{slot, pos + done, m};
    run_device_forward(tokens + done, &b, 1, nullptr, out_ids + done,
                       logits ? logits + static_cast<size_t>(done) * cfg_.vocab_size : nullptr);
    done += m;
  }
}

void CudaModel::forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                              float* logits) {
  check_batch_args(cfg_, tokens, blocks, count, limit_tokens_, limit_slots_);
  if (count == 1) {  // one sequence: exactly forward()'s path, on its slot
    run_sequence(tokens, blocks[0].n, blocks[0].pos, blocks[0].slot, out_ids, logits);
    return;
  }
  run_batch(tokens, blocks, count, nullptr, out_ids, logits);
}

void CudaModel::forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                             const KvMove* moves, int32_t* out_ids, float* logits) {
  check_batch_args(cfg_, tokens, blocks, count, limit_tokens_, limit_slots_);
  if (check_row_layout(blocks, count, rows, moves, limit_tokens_)) {
    forward_batch(tokens, blocks, count, out_ids, logits);  // plain: the same computation
    return;
  }
  apply_kv_moves(blocks, count, moves);
  run_batch(tokens, blocks, count, rows, out_ids, logits);
}

void CudaModel::apply_kv_moves(const SeqBlock* blocks, int count, const KvMove* moves) {
  const size_t slot_rows = static_cast<size_t>(capacity_) * slots_;  // rows of one layer's K (or V)
  for (int b = 0; moves != nullptr && b < count; ++b) {
    const KvMove& m = moves[b];
    if (m.n == 0) continue;
    // Rows counted from the slot's first row: the arrays below start there.
    bf16* slot_cache = kv_.as<bf16>() + static_cast<size_t>(blocks[b].slot) * capacity_ * dims_.kv;
    invoke_kv_move(slot_cache, slot_rows * dims_.kv, 2 * cfg_.num_layers, m.src, blocks[b].pos - m.n, m.n, dims_.kv,
                   h_.stream);
  }
}

void CudaModel::run_batch(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                          int32_t* out_ids, float* logits) {
  const size_t V = cfg_.vocab_size;
  std::vector<SeqBlock> pieces;
  int first_row = 0, piece_rows = 0;
  auto flush = [&] {
    run_device_forward(tokens + first_row, pieces.data(), static_cast<int>(pieces.size()),
                       rows ? rows + first_row : nullptr, out_ids + first_row, logits ? logits + first_row * V : nullptr);
    first_row += piece_rows;
    piece_rows = 0;
    pieces.clear();
  };
  for (int b = 0; b < count; ++b) {
    for (int done = 0; done < blocks[b].n;) {
      const int take = std::min(blocks[b].n - done, kMaxRows - piece_rows);
      pieces.push_back({blocks[b].slot, blocks[b].pos + done, take});
      piece_rows += take;
      done += take;
      if (piece_rows == kMaxRows) flush();
    }
  }
  if (piece_rows > 0) flush();
}

void CudaModel::run_device_forward(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* specs,
                                   int32_t* out_ids, float* logits) {
  int rows = 0;
  for (int b = 0; b < count; ++b) rows += blocks[b].n;
  CLLM_CHECK(rows > 0 && rows <= kMaxRows, "device forward of " << rows << " rows (1.." << kMaxRows << ")");
  step_ = Step{};
  step_.rows = rows;
  step_.gemm_rows = gemm_rows(rows);
  BlockPlans& p = plans_for(step_.gemm_rows);  // before capture: plan creation allocates

  // Each block's causal runs (one for a plain block; one more per lookahead branch) as attention blocks.
  std::vector<AttnBlock>& attn = attn_blocks_;
  attn.clear();
  for (int b = 0, row = 0; b < count; row += blocks[b].n, ++b) {
    row_runs_.clear();
    append_row_runs(blocks[b].pos, blocks[b].n, specs ? specs + row : nullptr, row_runs_);
    for (const RowRun& r : row_runs_) attn.push_back({row + r.first, r.pos, r.n, blocks[b].slot, r.base, r.shift});
  }
  plan_batched_attention(attn.data(), static_cast<int>(attn.size()), plan_.heads, plan_.kv_heads, cfg_.head_dim, attn_ws_.bytes(),
                         table_bytes_, invariant_step() ? invariant_chunk_keys(cfg_.num_kv_heads) : 0, attn_plan_, cfg_.sliding_window);
  fit_attention_plan();  // may reallocate io_host_: fill it only after

  int32_t* io = io_host_.as<int32_t>();
  std::memcpy(io, tokens, rows * sizeof(int32_t));
  int32_t* positions = io + rows;
  int32_t* cache_rows = io + 2 * rows;
  for (int b = 0, row = 0; b < count; ++b)
    for (int i = 0; i < blocks[b].n; ++i, ++row) {
      positions[row] = specs ? specs[row].pos : blocks[b].pos + i;  // RoPE's; the KV goes to the cache row
      cache_rows[row] = blocks[b].slot * capacity_ + blocks[b].pos + i;
    }
  step_.table_offset = (3 * static_cast<size_t>(rows) * sizeof(int32_t) + 15) / 16 * 16;
  std::memcpy(io_host_.as<char>() + step_.table_offset, attn_plan_.table.data(), attn_plan_.table.size());
  step_.upload_bytes = step_.table_offset + attn_plan_.table.size();

  // The first step of each GEMM row count runs eagerly, so one-time lazy work (cuBLASLt kernel
  // selection state, module loading) never happens inside a capture.
  if (opts_.use_graphs && p.warmed_up)
    launch_graph(p, GraphKey{rows, step_.upload_bytes, step_.table_offset, attn_plan_.launch_shape(), kv_generation_});
  else
    enqueue_step(p);
  p.warmed_up = true;
  const size_t Vl = dims_.vocab;  // this rank's vocab rows (all of them with one rank)
  if (logits != nullptr) {
    logits_host_.resize(static_cast<size_t>(rows) * Vl);
    CLLM_CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.as<bf16>(), rows * Vl * kBf16,
                                    cudaMemcpyDeviceToHost, h_.stream));
  }
  if (all_reduce_ != nullptr)
    all_reduce_->wait(h_.stream, {"forward"});
  else
    CLLM_CUDA_CHECK(cudaStreamSynchronize(h_.stream));
  if (comm_ == nullptr) {
    std::memcpy(out_ids, ids_host_.as<int32_t>(), rows * sizeof(int32_t));
    if (logits != nullptr)
      for (size_t i = 0; i < rows * Vl; ++i) logits[i] = bf16_bits_to_float(logits_host_[i]);
    return;
  }
  // Tensor parallel: every rank has the (max, id) of its vocab shard; the max-loc picks the global
  // pair (the largest value, the lowest id among equal ones: the whole row's argmax).
  best_.resize(rows);
  for (int i = 0; i < rows; ++i) best_[i] = {values_host_.as<float>()[i], ids_host_.as<int32_t>()[i]};
  comm_->all_reduce_max_loc(best_.data(), rows, {"LM-head argmax"});
  for (int i = 0; i < rows; ++i) out_ids[i] = best_[i].index;
  if (logits == nullptr) return;
  const size_t shard = rows * Vl;
  local_logits_.resize(shard);
  for (size_t i = 0; i < shard; ++i) local_logits_[i] = bf16_bits_to_float(logits_host_[i]);
  gathered_.resize(shard * plan_.size);
  comm_->all_gather(local_logits_.data(), shard * sizeof(float), gathered_.data(), {"logits gather"});
  const size_t V = cfg_.vocab_size;
  for (int r = 0; r < plan_.size; ++r)
    for (int i = 0; i < rows; ++i)
      std::memcpy(logits + i * V + r * Vl, gathered_.data() + r * shard + i * Vl, Vl * sizeof(float));
}

void CudaModel::fit_attention_plan() {
  const size_t ws = attention_partials_bytes(attn_plan_.partials, cfg_.head_dim);
  const bool grow_ws = ws > attn_ws_.bytes(), grow_table = attn_plan_.table.size() > table_bytes_;
  if (!grow_ws && !grow_table) return;
  CLLM_CUDA_CHECK(cudaStreamSynchronize(h_.stream));  // the old buffers may still be in use
  // Half as much again as asked, so a context growing token by token reallocates rarely.
  if (grow_ws) {
    attn_ws_ = DeviceBuffer();
    attn_ws_ = DeviceBuffer(ws + ws / 2);
  }
  if (grow_table) {
    table_bytes_ = attn_plan_.table.size() + attn_plan_.table.size() / 2;
    io_dev_ = DeviceBuffer();
    io_dev_ = DeviceBuffer(kTableOffsetMax + table_bytes_);
    io_host_ = PinnedBuffer(kTableOffsetMax + table_bytes_);
  }
  ++kv_generation_;  // graphs hold the old addresses
}

void CudaModel::launch_graph(BlockPlans& p, const GraphKey& key) {
  p.graphs.launch(key, opts_.replay_graphs, ++graph_clock_, h_.stream, [&] { enqueue_step(p); }, stats_);
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

std::unique_ptr<Model> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress,
                                       const ModelOptions& model_opts) {
  return cuda::make_cuda_model(ckpt, progress, cuda::CudaModelOptions::with(model_opts));
}


}  // namespace cllm
