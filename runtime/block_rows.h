// The most token rows one block of a forward may have: a Jacobi block, or one chunk of a prompt's
// prefill. Up to this many rows a row is computed the same way whatever shares its forward (its
// block size, the other sequences, the prefill chunking: design.md, "GPU numerics: batch
// invariance"). On the CPU the batch-invariant GEMM serves such blocks (CpuModel); on the GPU they
// run unpadded (CudaModel::kExactMax in runtime/cuda/cuda_model.h must equal it; the GPU tests
// static_assert that). The scheduler, the trajectory collector, `cllm serve --block`, `cllm
// trajectories --block` and the API's cllm_block all cut blocks at this size.
#pragma once

namespace cllm {

inline constexpr int kMaxBlockRows = 64;

}  // namespace cllm
