// The model as the decoders see it: forward a block of tokens of one sequence over its KV cache.
// Backends (CPU now, CUDA later) implement Model; decoding code never sees weights or kernels.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/model_config.h"
#include "core/types.h"
#include "loaders/checkpoint.h"

namespace cllm {

// What a decoder needs: argmax predictions for a block of tokens.
class BlockPredictor {
 public:
  virtual ~BlockPredictor() = default;
  // tokens[0..n) sit at positions pos..pos+n-1; the cache must hold exact KV for [0, pos).
  // Writes KV rows [pos, pos+n) and out_ids[i] = argmax of the logits at position pos+i.
  virtual void predict(const int32_t* tokens, int n, int pos, int32_t* out_ids) = 0;
  // Lookahead verification (design.md, "More tokens per forward"): as predict(), but row i sits
  // at rows[i] (core/types.h, RowSpec; null: every row causal), and first the KV `move` is
  // applied. Backends that cannot lay rows out this way answer false to verifies_branches() and
  // throw here unless the layout is plain.
  virtual void predict_rows(const int32_t* tokens, int n, int pos, const RowSpec* rows, KvMove move,
                            int32_t* out_ids);
  virtual bool verifies_branches() const { return false; }
};

class Model : public BlockPredictor {
 public:
  virtual const ModelConfig& config() const = 0;
  // Makes room for `slots` sequences (KV slots 0..slots-1) of up to max_tokens positions each and
  // forgets the old ones. Overrides repeat the default `slots = 1`.
  virtual void reset(int max_tokens, int slots = 1) = 0;
  // As predict() on slot 0, and if logits != nullptr also writes logits [n, vocab] (fp32).
  virtual void forward(const int32_t* tokens, int n, int pos, int32_t* out_ids, float* logits) = 0;
  // Continuous batching: the blocks of `count` sequences in one pass. tokens holds the blocks' rows
  // back to back (sum of blocks[i].n rows); out_ids and logits (if not null, [rows, vocab]) follow
  // the same row order. Each block only attends to its own slot's KV. Slots in one call are distinct.
  virtual void forward_batch(const int32_t* tokens, const SeqBlock* blocks, int count, int32_t* out_ids,
                             float* logits) = 0;
  void predict(const int32_t* tokens, int n, int pos, int32_t* out_ids) override {
    forward(tokens, n, pos, out_ids, nullptr);
  }
  // forward_batch with lookahead branches: rows (null, or one RowSpec per row of the batch, in the
  // same order) and moves (null, or one KvMove per block, applied to its slot before the forward).
  // The CPU model implements it in its attention; a backend that does not (the default) runs a
  // plain layout through forward_batch and refuses any other, naming verifies_branches().
  virtual void forward_rows(const int32_t* tokens, const SeqBlock* blocks, int count, const RowSpec* rows,
                            const KvMove* moves, int32_t* out_ids, float* logits);
  void predict_rows(const int32_t* tokens, int n, int pos, const RowSpec* rows, KvMove move,
                    int32_t* out_ids) override {
    const SeqBlock block{0, pos, n};
    forward_rows(tokens, &block, 1, rows, &move, out_ids, nullptr);
  }
  // Bytes one decode step must read (weights + KV of `context` positions): the bandwidth floor.
  virtual double step_bytes(int context) const = 0;
  // int8 multiply-adds one token costs in the weights this backend multiplies in int8 blocks
  // (kernels/cpu/gemm_quant.h): with cpu::measure_int8_gmacs, the compute floor of a multi-token
  // step. 0: none (fp32 or bf16 weights).
  virtual double step_int8_macs() const { return 0; }
};

// Shared argument checks of Model::forward implementations: n > 0, pos >= 0, the block fits the
// KV capacity, every token id is inside the vocabulary. Throws naming the bad value.
void check_forward_args(const ModelConfig& cfg, const int32_t* tokens, int n, int pos, int capacity);
// The same for a batch: every block as above, slots inside [0, slots) and distinct. Returns the rows.
int check_batch_args(const ModelConfig& cfg, const int32_t* tokens, const SeqBlock* blocks, int count, int capacity,
                     int slots);

// A batch's branch layout and KV moves (Model::forward_rows): every row inside its block's
// positions (0 <= base <= pos <= its cache row), every move inside the exact KV below the block's
// position and the slot's capacity. Returns true when the layout is plain (no branch row and no move:
// forward_batch computes the same). Throws naming the block and row.
bool check_row_layout(const SeqBlock* blocks, int count, const RowSpec* rows, const KvMove* moves, int capacity);

enum class Device { Cpu, Cuda };
Device parse_device(const std::string& name);  // "cpu" | "cuda"; throws naming the valid ones

// How a model computes where its backend has a choice (design.md, "GPU numerics: batch invariance").
struct ModelOptions {
  // CUDA: device forwards of up to this many rows run the batch-invariant kernels, so a token's
  // logits do not depend on what shares such a forward (runtime/cuda/cuda_model.h,
  // CudaModelOptions). 16: decoding and Jacobi blocks of up to 16 tokens (0-13% of a 7B step).
  // The CPU model is batch-invariant up to kMaxBlockRows rows whatever this says.
  int cuda_invariant_max_rows = 16;
  // CPU, one rank: Q8_0 / Q4_0 / Q4_1 matrices of a GGUF file stay in their blocks and are computed on
  // directly (kernels/cpu/gemm_quant.h); false: every weight is converted to fp32 at load.
  bool cpu_native_weights = false;
  // CUDA: kernels launched to overlap the one before them (kernels/cuda/launch.cuh); false: plain
  // launches, for A/B timings.
  bool cuda_overlap_launches = true;
  // CUDA: silu(gate) * up computed in the epilogue of the gate|up projection's GEMM (one kernel fewer
  // a layer, the same bits) for the forwards that run the small-M GEMM; false: a separate kernel. On
  // by default: 7% of a 135M step at n <= 4, 1% of a 7B step, on 1x H100 (docs/benchmarks.md).
  bool cuda_fuse_swiglu = true;
  // CUDA: the small-M GEMM's default tile shapes at up to 16 rows keep their weight loads in flight
  // through a ring in shared memory (cp.async, several load rounds ahead); false: each round loaded
  // into registers and waited for (kernels/cuda/skinny_gemm.cuh). The same bits either way. Off by
  // default until a GPU run times it against the register loads (tests/gpu/run's A/B).
  bool cuda_gemm_ring = false;
  // CUDA, one rank: residual adds, RMSNorms, RoPE and the KV write inside the neighbouring small-M
  // GEMMs (three kernels fewer a layer, the same bits: kernels/cuda/skinny_gemm.cuh), in forwards of
  // up to this many rows (at most 64); 0: the add_rmsnorm and rope_kv_write kernels everywhere;
  // kAutoFusedLayerRows (the default): as many rows as CudaModelOptions::auto_fused_layer_rows gives
  // the model's hidden size (16384 / hidden, at most 16).
  static constexpr int kAutoFusedLayerRows = -1;
  int cuda_fused_layer_rows = kAutoFusedLayerRows;
  // CUDA: how device forwards are launched. kReplay: cached graphs, replayed while the step's launch
  // shape is unchanged; kRecapture: every step captured and patched into its graph (A/B timings);
  // kOff: kernels enqueued directly.
  enum class CudaGraphs { kReplay, kRecapture, kOff };
  CudaGraphs cuda_graphs = CudaGraphs::kReplay;
};
// --weights: "native" (true), "f32" (false) or "auto" (the command-line default: native on one
// rank, where the quantized matrices of a GGUF file stay in their blocks and anything else is fp32
// anyway; f32 for a tensor-parallel group of `ranks`, whose shards are fp32). Throws naming the
// valid ones.
bool parse_weights(const std::string& name, int ranks = 1);
// --numerics: "blocks" (the default above), "invariant" (every forward: blocks of any size,
// batches and prefill chunks too, at a cost) or "fast" (none). Throws naming the valid ones.
ModelOptions parse_numerics(const std::string& name);
// --cuda-launch: "overlapped" (true) or "serial" (false). --cuda-swiglu: "fused" (true) or
// "separate" (false). Throw naming the valid ones.
bool parse_cuda_launch(const std::string& name);
bool parse_cuda_swiglu(const std::string& name);
// --cuda-gemm-loads: "ring" (true) or "registers" (false). Throws naming the valid ones.
bool parse_cuda_gemm_loads(const std::string& name);
// --cuda-layer: "fused" (kAutoFusedLayerRows), "fused:N" (forwards of up to N rows, 1..64) or
// "separate" (0). Throws naming the valid ones.
int parse_cuda_layer(const std::string& name);
// --cuda-graphs: "replay", "recapture" or "off". Throws naming the valid ones.
ModelOptions::CudaGraphs parse_cuda_graphs(const std::string& name);

#ifdef CLLM_HAVE_CUDA
std::unique_ptr<Model> make_cuda_model(const CheckpointReader& ckpt, const LoadProgress& progress,
                                       const ModelOptions& opts);
#endif

std::unique_ptr<Model> make_model(const CheckpointReader& ckpt, Device device, const LoadProgress& progress = {},
                                  const ModelOptions& opts = {});

}  // namespace cllm
