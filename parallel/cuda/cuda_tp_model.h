// A rank's CUDA model for tensor parallelism under mpirun (`cllm ... --device cuda`, several
// ranks): picks the rank's GPU, sets up the device all-reduce, loads only the rank's slices and
// returns the sharded CudaModel (runtime/cuda/cuda_model.h), whose forwards are collective.
// Needs CUDA, MPI and NCCL (target cllm_parallel_cuda, CLLM_HAVE_NCCL).
#pragma once
#include <memory>
#include <string>

#include "core/comm.h"
#include "runtime/cuda/cuda_model.h"

namespace cllm {

// How the ranks sum activations (the --all-reduce flag):
//   auto  NCCL, with the one-shot CUDA-IPC kernel for messages up to 8 MiB, when every rank of a
//         node has a GPU of its own; else host
//   nccl  NCCL only                      (one GPU per rank; capturable: CUDA graphs stay on)
//   ipc   the CUDA-IPC kernel only       (one GPU per rank, all ranks on one node with peer access)
//   host  staged through host memory over `comm` (MPI): ranks may share a GPU, which NCCL refuses;
//         not capturable, so the model runs without CUDA graphs. The way TP is tested on one GPU.
enum class CudaAllReduce { automatic, nccl, ipc, host };
CudaAllReduce parse_cuda_all_reduce(const std::string& text);  // throws naming the valid values
const char* cuda_all_reduce_name(CudaAllReduce a);

struct CudaTpOptions {
  CudaAllReduce all_reduce = CudaAllReduce::automatic;
  cuda::CudaModelOptions model;  // use_graphs is turned off for host
};

// Collective over `comm` (the group's host communicator, MPI; it must outlive the model). The
// rank's GPU is its local rank on the node (host: local rank modulo the GPUs there). Refuses,
// before any GPU allocation and on every rank alike, a model that does not split over comm.size()
// ranks (make_shard_plan's rules) and nccl/ipc with fewer GPUs than ranks on a node.
std::unique_ptr<cuda::CudaModel> make_cuda_sharded_model(const CheckpointReader& ckpt, Comm& comm,
                                                         const CudaTpOptions& opts, const LoadProgress& progress = {});

}  // namespace cllm
