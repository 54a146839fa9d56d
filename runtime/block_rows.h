// The most token rows one block of a forward may have: a Jacobi block, or one chunk of a prompt's
// prefill. On the CPU up to this many rows a row is computed the same way whatever shares its
// forward (its block size, the other sequences, the prefill chunking: design.md, "GPU numerics:
// batch invariance"): the batch-invariant GEMM serves such blocks (CpuModel). On the GPU they run
// unpadded (CudaModel::kExactMax), and CudaModelOptions::invariant_max_rows says which forwards
// run the invariant kernels. The scheduler, the trajectory collector, `cllm serve --block`, `cllm
// trajectories --block` and the API's cllm_block all cut blocks at this size.
#pragma once

namespace cllm {

inline constexpr int kMaxBlockRows = 64;

}  // namespace cllm
