// One rank of a tensor-parallel group, alone on one GPU, for timing (`cllm bench --tp-rank R/N`):
// the rank's shard of the model (make_shard_plan's slices, nothing else loaded) whose all-reduces
// run the one-shot IPC kernel over local stand-ins of the N - 1 peers' buffers. So a step does
// every byte of work of rank R of a TP=N group (its shard's weights and KV, the same-size
// reductions in the same kernel) without the peers: it tracks per-rank efficiency of shapes
// (70B at TP=4) whose group needs more GPUs than one machine has. Not modelled: peer reads over
// NVLink (local HBM here) and waiting for slower peers. The sums are the rank's own partial
// sums (the stand-in peers hold zeros), so the tokens are not the model's; only time counts.
#pragma once
#include <memory>

#include "core/comm.h"
#include "runtime/cuda/cuda_model.h"

namespace cllm {

// Refuses a split that does not divide (make_shard_plan) or that the CUDA model cannot run.
std::unique_ptr<cuda::CudaModel> make_cuda_rank_stand_in(const CheckpointReader& ckpt, int rank, int size,
                                                         const cuda::CudaModelOptions& opts,
                                                         const LoadProgress& progress = {});

}  // namespace cllm
