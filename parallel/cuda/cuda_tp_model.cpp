// make_cuda_sharded_model: GPU choice, device all-reduce (NcclComm adapter or host-staged), slices.
#include "parallel/cuda/cuda_tp_model.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/check.h"
#include "core/shard_plan.h"
#include "kernels/cuda/cuda_check.cuh"
#include "parallel/comm_nccl.h"
#include "runtime/cuda/cuda_weights.h"

namespace cllm {
namespace {

// NCCL / CUDA-IPC sums through NcclComm (which it owns): enqueued on the model's stream, capturable.
class NcclDeviceAllReduce final : public cuda::DeviceAllReduce {
 public:
  explicit NcclDeviceAllReduce(std::unique_ptr<NcclComm> comm, AllReducePath path)
      : comm_(std::move(comm)), path_(path) {}
  void sum_bf16(__nv_bfloat16* data, size_t count, cudaStream_t stream, const CommPhase& phase) override {
    comm_->all_reduce_sum_async(data, count, CommDType::bf16, stream, phase);
  }
  bool capturable() const override { return true; }
  void wait(cudaStream_t stream, const CommPhase& phase) override { comm_->wait(stream, "forward", phase); }
  const char* name() const override { return all_reduce_path_name(path_); }

 private:
  std::unique_ptr<NcclComm> comm_;
  AllReducePath path_;
};

struct NodeInfo {
  int local_rank = 0, local_size = 1, gpus = 0;
};

NodeInfo node_info() {
  NodeInfo n;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &n.local_rank);
  MPI_Comm_size(node, &n.local_size);
  MPI_Comm_free(&node);
  if (cudaGetDeviceCount(&n.gpus) != cudaSuccess) n.gpus = 0;
  return n;
}

// True on every rank when every rank's node has a GPU per rank (collective).
bool every_rank_has_a_gpu(Comm& comm, const NodeInfo& n) {
  const int32_t mine = n.local_size <= n.gpus ? 1 : 0;
  std::vector<int32_t> all(comm.size());
  comm.all_gather(&mine, sizeof mine, all.data(), {"GPU count"});
  return std::all_of(all.begin(), all.end(), [](int32_t v) { return v == 1; });
}

}  // namespace

CudaAllReduce parse_cuda_all_reduce(const std::string& text) {
  if (text == "auto") return CudaAllReduce::automatic;
  if (text == "nccl") return CudaAllReduce::nccl;
  if (text == "ipc") return CudaAllReduce::ipc;
  if (text == "host") return CudaAllReduce::host;
  CLLM_FAIL("--all-reduce '" << text << "': expected auto, nccl, ipc or host");
}

const char* cuda_all_reduce_name(CudaAllReduce a) {
  switch (a) {
    case CudaAllReduce::automatic: return "auto";
    case CudaAllReduce::nccl: return "nccl";
    case CudaAllReduce::ipc: return "ipc";
    case CudaAllReduce::host: return "host";
  }
  return "?";
}

std::unique_ptr<cuda::CudaModel> make_cuda_sharded_model(const CheckpointReader& ckpt, Comm& comm,
                                                         const CudaTpOptions& opts, const LoadProgress& progress) {
  const ModelConfig& cfg = ckpt.config();
  // Refusals before any GPU work; every rank reaches the same verdict from the same config.
  const ShardPlan plan = make_shard_plan(cfg, comm.rank(), comm.size());
  cuda::check_cuda_supported(cfg, plan, ckpt.source());
  int mpi_inited = 0;
  MPI_Initialized(&mpi_inited);
  CLLM_CHECK(mpi_inited, "tensor parallelism on the GPU runs under mpirun (MPI is not initialised)");

  const NodeInfo node = node_info();
  const bool own_gpus = every_rank_has_a_gpu(comm, node);
  CudaAllReduce how = opts.all_reduce;
  if (how == CudaAllReduce::automatic) how = own_gpus ? CudaAllReduce::automatic : CudaAllReduce::host;
  CLLM_CHECK(how == CudaAllReduce::host || own_gpus,
             "--all-reduce " << cuda_all_reduce_name(how) << " needs a GPU per rank; rank " << comm.rank()
                             << "'s node has " << node.gpus << " GPU(s) for " << node.local_size
                             << " ranks (--all-reduce host lets ranks share a GPU)");
  CLLM_CHECK(node.gpus > 0, "rank " << comm.rank() << ": --device cuda but no CUDA device is visible");

  std::unique_ptr<cuda::DeviceAllReduce> all_reduce;
  if (how == CudaAllReduce::host) {
    CLLM_CUDA_CHECK(cudaSetDevice(node.local_rank % node.gpus));
    all_reduce = cuda::make_host_staged_all_reduce(comm);
  } else {
    NcclCommOptions o;  // sets the device: local rank
    o.path = how == CudaAllReduce::nccl ? AllReducePath::nccl
             : how == CudaAllReduce::ipc ? AllReducePath::ipc
                                          : AllReducePath::automatic;
    // Forced IPC takes every sum, the largest being kMaxRows rows of the hidden size in bf16.
    if (how == CudaAllReduce::ipc)
      o.ipc_max_bytes = std::max(o.ipc_max_bytes, size_t{cuda::CudaModel::kMaxRows} * cfg.hidden_size * 2);
    o.deadline_s = comm.deadline_seconds();
    auto nccl = std::make_unique<NcclComm>(o);
    const AllReducePath path = how == CudaAllReduce::automatic && !nccl->ipc_available() ? AllReducePath::nccl : o.path;
    all_reduce = std::make_unique<NcclDeviceAllReduce>(std::move(nccl), path);
  }
  if (comm.rank() == 0)
    std::fprintf(stderr, "tensor parallel on the GPU: %d ranks, all-reduce %s%s\n", comm.size(), all_reduce->name(),
                 all_reduce->capturable() ? "" : " (no CUDA graphs)");
  cuda::DeviceWeights w = cuda::load_device_weights(ckpt, plan, progress);
  return std::make_unique<cuda::CudaModel>(cfg, std::move(w), opts.model, plan, std::move(all_reduce), comm);
}

}  // namespace cllm
