// The LLaMA forward on one NVIDIA GPU in bf16 (`--device cuda`): weights and KV cache bf16, residual
// stream fp32, fp32 accumulation everywhere; 4 GEMMs per layer (fused qkv, o, fused gate|up, down).
// One device forward is one CUDA graph launch plus one synchronisation: only the argmax ids (and,
// on request, the logits) come back to the host.
//
// KV slots (continuous batching). The cache holds `slots` sequences of `capacity` rows each, laid
// out [layers][k, v][slots][capacity][n_kv][head_dim], so one layer's K (or V) of every slot is one
// array of slots * capacity rows: sequence s's position t is row s * capacity + t. forward_batch
// runs the blocks of several sequences as one device forward: embedding, norms, GEMMs, LM head and
// argmax see all rows at once (M = total rows); RoPE and the KV write take per-row positions and
// per-row cache rows; the attention takes per-block descriptors (query rows, position, slot) from a
// table in device memory (kernels/cuda/attention.cuh), so every block attends to its own slot only.
// A batch of more than kMaxRows rows runs as several device forwards over consecutive rows; a block
// cut between two of them keeps its meaning, since the first writes its KV before the second reads.
//
// Graphs. A device forward is one CUDA graph launch. Executable graphs are cached per GEMM row
// count, each with the key of the step it was captured from: the real rows, the bytes uploaded,
// the attention's launch shape (grid, kernel variant, table offsets) and the KV allocation. A step
// whose key equals the cached one launches the graph as is: everything else a step varies (token
// ids, positions, cache rows, the attention's block table) travels in one pinned host buffer that
// the graph's first node copies to the device, so no launch parameter changes. The attention pads
// its work list to a power of two, so a growing context changes the key only at doublings of its
// work (and when its split-K combine first appears). Otherwise the step is captured into a fresh
// cudaGraph_t and patched into the cached executable with cudaGraphExecUpdate, or the graph is
// instantiated again when the topology changed (llama.cpp's scheme; step_graphs.h). Capturing a ~300-node step
// costs about a millisecond of host time, as much as a small model's whole forward on the GPU, so
// replaying instead is what makes a 135M model's decode step cheap. Graphs and GEMM plans are keyed
// by the row count rounded up to a multiple of 16 above kExactMax (at most 124 keys up to kMaxRows);
// the GEMMs run over the padded rows (their extra rows are never read), every other kernel over the
// real ones. Every step, single sequence or batch, takes the batched attention (descriptors in the
// table), so graph and eager launches run the same kernels.
//
// Tensor parallelism (Megatron, core/shard_plan.h): a rank holds its heads, KV heads, FFN units
// and vocab rows; the step is the same with its narrower widths plus three in-stream all-reduces
// (bf16, summed in fp32) after the embedding, o and down (DeviceAllReduce: NCCL or CUDA IPC,
// capturable, or host-staged for ranks sharing one GPU, eager). The LM head computes this rank's
// vocab rows and their argmax on the device; the ids and values come back with the step and one
// host max-loc (Comm, MPI) picks the global argmax, so the graph holds no max-loc collective.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "core/comm.h"
#include "core/shard_plan.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/skinny_gemm.cuh"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/cuda/device_all_reduce.h"
#include "runtime/block_rows.h"
#include "runtime/cuda/device_buffer.h"
#include "runtime/cuda/step_graphs.h"
#include "runtime/model.h"
#include "runtime/row_runs.h"

namespace cllm::cuda {

struct CudaModelOptions {
  bool use_graphs = true;  // false: enqueue the kernels directly (the eager path tests compare against)
  // false: capture every step and patch it into the cached graph even when its key is unchanged
  // (the behaviour before replays, for A/B timings: --cuda-graphs recapture).
  bool replay_graphs = true;
  // Batch invariance (design.md, "GPU numerics"): a token's logits do not depend on what shares its
  // forward (its block's size, other sequences, prefill chunking), so greedy Jacobi equals greedy AR
  // and a request's answer does not depend on the load. Device forwards of at most this many rows
  // run the invariant kernels: the GEMM with one reduction order for every M (skinny_gemm.cuh) and
  // attention chunks at fixed key boundaries (invariant_chunk_keys); larger ones run cuBLASLt (its
  // algorithm and split-K change with M) and chunks sized to the batch. Any two forwards within the
  // limit give a token the same bits. The default, 16, covers decoding and Jacobi blocks of up to 16
  // tokens (measured on 1x H100: 0-13% of a 7B step at n = 16, none for SmolLM2); every forward
  // (kMaxRowsPerForward: 64-token blocks, batches and prefill chunks too) costs +47% at n = 64 and
  // about 3x on prefill and 256-1024-row batches, where the invariant GEMM is 4x slower than
  // cuBLASLt (docs/benchmarks.md).
  int invariant_max_rows = ModelOptions{}.cuda_invariant_max_rows;
  bool overlap_launches = ModelOptions{}.cuda_overlap_launches;  // see ModelOptions
  bool fuse_swiglu = ModelOptions{}.cuda_fuse_swiglu;
  bool gemm_ring = ModelOptions{}.cuda_gemm_ring;  // see ModelOptions
  int fused_layer_rows = ModelOptions{}.cuda_fused_layer_rows;  // see ModelOptions; 0: separate kernels

  static CudaModelOptions invariant() { return with(parse_numerics("invariant")); }  // every forward
  // None: the fastest kernels (skinny up to kSkinnyBestMaxM rows, cuBLASLt above, adaptive chunks).
  static CudaModelOptions fast() { return with(parse_numerics("fast")); }
  static CudaModelOptions with(const ModelOptions& m) {
    CudaModelOptions o;
    o.invariant_max_rows = m.cuda_invariant_max_rows;
    o.overlap_launches = m.cuda_overlap_launches;
    o.fuse_swiglu = m.cuda_fuse_swiglu;
    o.gemm_ring = m.cuda_gemm_ring;
    o.fused_layer_rows = m.cuda_fused_layer_rows;
    o.use_graphs = m.cuda_graphs != ModelOptions::CudaGraphs::kOff;
    o.replay_graphs = m.cuda_graphs == ModelOptions::CudaGraphs::kReplay;
    return o;
  }
  // Rows of one batched device forward (CudaModel::kMaxRows): invariant_max_rows at or above it
  // makes every forward invariant.
  static constexpr int kMaxRowsPerForward = 1024;
  // GEMM rows up to which the skinny kernel beats cuBLASLt (docs/benchmarks.md: 0-20% faster at
  // M <= 8 on the 7B projections, 0-30% slower at 9-16); it runs there in every mode.
  static constexpr int kSkinnyBestMaxM = 8;
  bool batch_invariant() const { return invariant_max_rows >= kMaxRowsPerForward; }

  // The fused layer's row limit for a hidden size (ModelOptions::kAutoFusedLayerRows). Its
  // normalised input re-reads each token's fp32 residual in every CTA of the qkv and gate|up
  // projections, rows x hidden x 4 bytes, which outgrows the two kernels it saves once it passes
  // ~64 KiB: on 1x H100 the 7B shape (hidden 4096) gained 5% at n <= 4 and lost 10% at n = 16;
  // on 1x H200 the 135M shape (hidden 576) gained 10% at n = 16 (docs/benchmarks.md). At most 16
  // rows, the most that has been timed fused.
  static constexpr int kFusedResidualElems = 16384, kAutoFusedMaxRows = 16;
  static int auto_fused_layer_rows(int hidden) {
    return std::clamp(kFusedResidualElems / std::max(hidden, 1), 1, kAutoFusedMaxRows);
  }
};

class CudaModel final : public Model {
 public:
  // One sequence's device forward handles at most this many tokens; longer forwards (prompt
  // prefill) run as a sequence of blocks of kMaxBlock, 512, 256, 128 and 64 tokens and a rest of at
  // most kExactMax, each over the KV the previous ones wrote, which is the same computation. So a
  // single sequence needs GEMM plans and graphs for at most 68 distinct block sizes. On the 7B
  // shape 256-row blocks ran the GEMMs at 55-83% of the bf16 matmul rate and split the attention's
  // context into chunks; 1024-row blocks took a 2048-token prefill from 72 to 56 ms (1x H100,
  // docs/benchmarks.md). Under batch-invariant numerics (every forward's attention cut into
  // fixed-length chunks, whose partial results grow with rows x context) the blocks stay at most
  // kMaxInvariantBlock.
  static constexpr int kMaxBlock = CudaModelOptions::kMaxRowsPerForward, kMaxInvariantBlock = 256;
  static constexpr int kExactMax = kMaxBlockRows;
  // Rows of one batched device forward (e.g. 64 sequences x 16); all scratch is sized for it.
  static constexpr int kMaxRows = CudaModelOptions::kMaxRowsPerForward;
  // GEMM rows (and graph key) of a device forward of `rows` rows: exact up to kExactMax, else
  // rounded up to a multiple of 16.
  static int gemm_rows(int rows) { return rows <= kExactMax ? rows : (rows + 15) / 16 * 16; }

  CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts);
  // One rank of a tensor-parallel group (design.md, "Tensor parallelism"): `weights` holds the
  // slices of `plan` (load_device_weights(ckpt, plan, ...)) and the KV cache only this rank's KV
  // heads. Every reset and forward is then collective (all ranks call it with the same arguments):
  // all_reduce sums the embedding, o and down outputs inside the step (a non-capturable one turns
  // graphs off), and comm (host memory; MPI) picks the LM-head argmax (max-loc of every rank's
  // (max, id) over its vocab rows) and gathers the logits when they are asked for. Both outlive this.
  CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
            DeviceAllReduce& all_reduce, Comm& comm);
  // The same, owning the all-reduce (and whatever communicator it holds).
  CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
            std::unique_ptr<DeviceAllReduce> all_reduce, Comm& comm);
  ~CudaModel() override;
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const override { return cfg_; }
  void reset(int max_tokens, int slots = 1) override;
  void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                     float* logits) override;
  void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) override;
  // Lookahead branches (runtime/model.h): each block's rows go to the attention as causal runs
  // (runtime/row_runs.h) at their logical positions, RoPE takes those positions, and the KV moves
  // run first, in one kernel per move for every layer. A branch row gets the bits of the plain row
  // at its position over the same keys (AttnBlock), so verification keeps greedy AR's tokens.
  void forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows, const KvMove* moves,
                    int32_t* out_ids, float* logits) override;
  bool verifies_branches() const override { return true; }
  // bf16 weight bytes a step reads + bf16 K and V rows of `context` positions, all layers.
  double step_bytes(int context) const override;

  const CudaGraphStats& graph_stats() const { return stats_; }
  const ShardPlan& shard_plan() const { return plan_; }
  const CudaModelOptions& options() const { return opts_; }
  bool uses_graphs() const { return opts_.use_graphs; }

 private:
  // One linear layer y[M, N] = x[M, K] . W[N, K]^T at one block size: the skinny kernel when M is
  // small enough, else a cuBLASLt plan (only then created: plans allocate workspace).
  class Linear {
   public:
    Linear(cublasLtHandle_t lt, int M, int N, int K, int skinny_max_m, void* gemm_ws, size_t ws_bytes);
    void run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, cudaStream_t stream) const;
    // The gate|up projection and SwiGLU: act [M, N / 2] = silu(gate) * up of in . W^T (W = [gate rows |
    // up rows]). in: bf16 x, or the residual normalised as it loads (fusable() only). With fuse (and
    // fusable()) the activation is the skinny kernel's epilogue; else the product goes through
    // gate_up [M, N] and invoke_silu_mul. The same bits either way.
    void run_swiglu(const SkinnyInput& in, const __nv_bfloat16* w, __nv_bfloat16* gate_up, __nv_bfloat16* act,
                    bool fuse, cudaStream_t stream) const;
    // The fused forms of the skinny kernel (skinny_gemm.cuh); only when fusable().
    bool fusable() const;
    void run_fused(const SkinnyInput& in, const __nv_bfloat16* w, const SkinnyOutput& out, cudaStream_t stream) const;

   private:
    int m_, n_, k_;
    std::optional<GemmPlan> plan_;  // empty: skinny kernel
  };

  // This rank's widths (the whole model's with one rank): hidden, q, k (= v), FFN, vocab rows.
  struct Dims {
    int d, q, kv, ffn, vocab;
  };

  // Linear layers for one GEMM row count (M = n) and that count's executable graphs.
  struct BlockPlans {
    BlockPlans(cublasLtHandle_t lt, const Dims& c, int n, int skinny_max_m, void* gemm_ws, size_t ws_bytes);
    Linear qkv, o, gate_up, down, head;
    StepGraphs graphs;
    bool warmed_up = false;  // ran once eagerly
  };

  // Stream and cuBLASLt handle; declared first so they are destroyed last.
  struct Handles {
    Handles();
    ~Handles();
    cudaStream_t stream = nullptr;
    cublasLtHandle_t lt = nullptr;
  };

  // Whether the step being planned runs the batch-invariant kernels (CudaModelOptions).
  bool invariant_step() const { return step_.gemm_rows <= opts_.invariant_max_rows; }
  // Grows the attention workspace and the step's input buffers to what attn_plan_ needs (before any
  // capture: it allocates); a growth makes every cached graph stale (buffer addresses changed).
  void fit_attention_plan();

  // What the step being enqueued covers (set by run_device_forward, read by enqueue_step).
  struct Step {
    int rows = 0;             // real rows
    int gemm_rows = 0;        // gemm_rows(rows)
    size_t table_offset = 0;  // bytes into io_: the attention block table
    size_t upload_bytes = 0;  // bytes of io_ the step copies to the device
  };

  CudaModel(const ModelConfig& cfg, DeviceWeights weights, const CudaModelOptions& opts, const ShardPlan& plan,
            DeviceAllReduce* all_reduce, Comm* comm);
  BlockPlans& plans_for(int gemm_rows);
  // One sequence on one slot: device forwards of at most kMaxBlock tokens (see kMaxBlock).
  int next_block(int remaining) const;
  void run_sequence(const int32_t* tokens, int n, int pos, int slot, int32_t* out_ids, float* logits);
  // Blocks of several sequences (or branch rows): consecutive rows in device forwards of at most
  // kMaxRows; a block may be cut between two, the first writing its KV before the second reads it.
  void run_batch(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows, int32_t* out_ids,
                 float* logits);
  // One device forward over `count` blocks whose rows (sum of n <= kMaxRows) follow each other in
  // tokens; rows: their RowSpecs in the same order, or null when every row is causal; logits (or
  // nullptr) receives [rows, vocab] fp32.
  void run_device_forward(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                          int32_t* out_ids, float* logits);
  // Applies each block's KvMove (null: none) to its slot, in every layer's K and V.
  void apply_kv_moves(const SeqBlock* blocks, int count, const KvMove* moves);
  // Launches the step through p's graph: as is when `key` matches, else captured and patched first.
  void launch_graph(BlockPlans& p, const GraphKey& key);
  // Enqueues the whole step_ on the stream: input upload, layers, head, argmax, id download
  // (cuda_step.cpp: the kernels in order).
  void enqueue_step(const BlockPlans& p);

  Handles h_;
  std::unique_ptr<DeviceAllReduce> owned_all_reduce_;  // destroyed after the buffers, before the stream
  ModelConfig cfg_;
  CudaModelOptions opts_;
  DeviceWeights w_;
  ShardPlan plan_;                            // ShardPlan::whole with one rank
  DeviceAllReduce* all_reduce_ = nullptr;     // null: one rank
  Comm* comm_ = nullptr;                      // null: one rank
  Dims dims_;
  DeviceBuffer inv_freq_;  // fp32 [head_dim / 2]
  int capacity_ = 0;       // KV rows per slot (allocated)
  int slots_ = 0;          // KV slots (allocated)
  int limit_tokens_ = 0;   // the last reset's max_tokens and slots: what forwards are checked against
  int limit_slots_ = 0;
  DeviceBuffer kv_;        // bf16 [layers][2 (k, v)][slots][capacity][n_kv][head_dim]
  uint64_t kv_generation_ = 0;  // bumped when kv_, attn_ws_ or io_ are reallocated: graphs captured before are stale
  uint64_t graph_clock_ = 0;    // counts graph launches, for the least-recently-used replacement

  // Scratch for kMaxRows rows. Element types: bf16 unless noted.
  DeviceBuffer io_dev_;       // the step's inputs, as io_host_
  DeviceBuffer ids_dev_;      // int32 [kMaxRows] argmax ids
  DeviceBuffer residual_;     // fp32 [kMaxRows, d]
  DeviceBuffer sub_;          // [kMaxRows, d]: embedding, then each sublayer's output
  DeviceBuffer normed_;       // [kMaxRows, d]: RMSNorm output, the GEMM input
  DeviceBuffer rms_parts_;    // fp32 [kSkinnyFusedMaxM, rms_segments(d)]: the fused layer boundary's partials
  DeviceBuffer qkv_;          // [kMaxRows, q + 2 kv]
  DeviceBuffer att_;          // [kMaxRows, q]
  DeviceBuffer gate_up_;      // [kMaxRows, 2 ffn]
  DeviceBuffer act_;          // [kMaxRows, ffn]
  DeviceBuffer logits_;       // [kMaxRows, vocab]
  DeviceBuffer attn_ws_;      // attention partials: adaptive plans fit within it, fixed-chunk plans grow it
  DeviceBuffer argmax_ws_;    // argmax_workspace_bytes(kMaxRows, vocab)
  DeviceBuffer gemm_ws_;      // cuBLASLt workspace shared by every GemmPlan (one stream: never concurrent)
  // The step's inputs in pinned memory: int32 tokens [rows], positions [rows], cache rows [rows]
  // (slot * capacity + position), then at a 16-byte boundary the attention's block table (batched).
  PinnedBuffer io_host_;
  size_t table_bytes_ = 0;    // capacity for the block table
  PinnedBuffer ids_host_;     // int32 [kMaxRows]
  DeviceBuffer values_dev_;   // fp32 [kMaxRows]: the argmax values (tensor parallel: for the max-loc)
  PinnedBuffer values_host_;  // fp32 [kMaxRows]
  std::vector<uint16_t> logits_host_;  // bf16 bits [rows, this rank's vocab], only when logits are requested
  std::vector<ValueIndex> best_;       // tensor parallel: [rows] (max, id) for the max-loc
  std::vector<float> local_logits_;    // tensor parallel: [rows, vocab shard], then
  std::vector<float> gathered_;        //   [ranks, rows, vocab shard] from the all-gather

  Step step_;
  std::vector<AttnBlock> attn_blocks_;              // the step's blocks, for the planner (reused)
  std::vector<RowRun> row_runs_;                    // one block's causal runs (reused)
  BatchedAttentionPlan attn_plan_;                  // of the batched step being enqueued
  std::vector<std::unique_ptr<BlockPlans>> plans_;  // indexed by GEMM rows, created on first use
  CudaGraphStats stats_;
};

// As make_cuda_model (runtime/model.h), with options.
std::unique_ptr<CudaModel> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress,
                                           const CudaModelOptions& opts);

}  // namespace cllm::cuda
