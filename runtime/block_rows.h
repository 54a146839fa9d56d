// The most token rows one block of a forward may have: a Jacobi block, or one chunk of a prompt's
// prefill. On the CPU up to this many rows a row is computed the same way whatever shares its
// forward (its block size, the other sequences, the prefill chunking: design.md, "GPU numerics:
// batch invariance"): the batch-invariant GEMM serves such blocks (CpuModel). On the GPU they run
// unpadded (CudaModel::kExactMax), and CudaModelOptions::invariant_max_rows says which forwards
// run the invariant kernels. The scheduler, the trajectory collector, `cllm serve --block`, `cllm
// trajectories --block` and the API's cllm_block all cut blocks at this size.
//
// PrefillBudget is the row budget of one batched forward, the one rule the scheduler (`generate`,
// `serve`) and the trajectory collector (`trajectories`) plan their steps by.
#pragma once

#include <algorithm>
#include <limits>

namespace cllm {

inline constexpr int kMaxBlockRows = 64;

// Every decoding block of a step runs: a burst of prompts cannot stall the tokens of running
// sequences. Prefill chunks, in admission order, take what the blocks leave of max_step_rows, but
// never less than one chunk (or the whole budget when it is smaller), so a waiting prompt
// progresses even when decoding alone fills the budget (64 Jacobi streams of 16 rows against 512)
// and its time to first token stays bounded. A chunk may be cut short by the budget: the KV of the
// rows before it is exact whichever step wrote it, and every row of a block of <= kMaxBlockRows
// rows is computed alike. Once the budget is spent, later chunks wait for a later step.
class PrefillBudget {
 public:
  // max_step_rows 0: no limit. decode_rows: the rows of this step's decoding blocks.
  PrefillBudget(int max_step_rows, int decode_rows)
      : left_(max_step_rows > 0 ? std::max(std::min(kMaxBlockRows, max_step_rows), max_step_rows - decode_rows)
                                : std::numeric_limits<int>::max()) {}

  // Rows this step gives the next chunk of a prompt with `remaining` tokens still to prefill:
  // min(kMaxBlockRows, remaining, what is left); 0: the prompt waits for a later step.
  int take(int remaining) {
    const int n = std::max(0, std::min({kMaxBlockRows, remaining, left_}));
    left_ -= n;
    return n;
  }

 private:
  int left_;
};

}  // namespace cllm
