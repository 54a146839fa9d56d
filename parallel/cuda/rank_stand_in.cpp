// make_cuda_rank_stand_in: a lone rank's communicator and its local one-shot all-reduce.
#include "parallel/cuda/rank_stand_in.h"

#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/shard_plan.h"
#include "kernels/cuda/cuda_check.cuh"
#include "parallel/cuda/comm_kernels.cuh"
#include "runtime/cuda/cuda_weights.h"

namespace cllm {
namespace {

// Rank R of N with no peers: host collectives leave this rank's values as they are (the argmax of
// its vocabulary shard stands for the group's).
class LoneRankComm final : public Comm {
 public:
  LoneRankComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return 1; }
  void all_reduce_sum(float*, size_t, const CommPhase&) override {}
  void all_reduce_max_loc(ValueIndex*, size_t, const CommPhase&) override {}
  void broadcast(void*, size_t, int, const CommPhase&) override {}
  void all_gather(const void* send, size_t bytes, void* recv, const CommPhase&) override {
    std::memset(recv, 0, bytes * static_cast<size_t>(size_));
    std::memcpy(static_cast<char*>(recv) + bytes * static_cast<size_t>(rank_), send, bytes);
  }

 protected:
  void stop_all_ranks(const std::string& message) override {
    throw Error("rank " + std::to_string(rank_) + " (stand-in): " + message);
  }

 private:
  int rank_, size_;
};

// The one-shot IPC all-reduce kernel with every peer's signal block and data area in this GPU's
// memory: the peers' flags are preset past any step, so the barrier passes at once, and their data
// stays zero. It owns the lone rank's communicator, which the model refers to.
class LocalOneShotAllReduce final : public cuda::DeviceAllReduce {
 public:
  LocalOneShotAllReduce(int rank, int size, size_t max_bytes) : comm_(rank, size) {
    CLLM_CHECK(size >= 2 && size <= kIpcMaxRanks,
               "--tp-rank: a group of " << size << " ranks (the one-shot all-reduce takes 2.." << kIpcMaxRanks << ")");
    args_.rank = rank;
    args_.nranks = size;
    args_.half_bytes = (max_bytes + 15) / 16 * 16;
    args_.timeout_ns = 10ull * 1000 * 1000 * 1000;
    const size_t total = sizeof(IpcSignal) + 2 * args_.half_bytes;
    areas_.resize(size);
    for (int r = 0; r < size; ++r) {
      areas_[r] = cuda::DeviceBuffer(total);
      CLLM_CUDA_CHECK(cudaMemset(areas_[r].as<char>(), 0, total));
      args_.signal[r] = areas_[r].as<IpcSignal>();
      args_.data[r] = areas_[r].as<char>() + sizeof(IpcSignal);
    }
    // This rank's flags from every peer: already past any step (the kernel waits while flag < step).
    IpcSignal mine{};
    for (auto& block : mine.flag)
      for (int r = 0; r < kIpcMaxRanks; ++r) block[r] = r == rank ? 0 : std::numeric_limits<uint64_t>::max();
    CLLM_CUDA_CHECK(cudaMemcpy(args_.signal[rank], &mine, sizeof mine, cudaMemcpyHostToDevice));
    CLLM_CUDA_CHECK(cudaHostAlloc(&error_host_, sizeof(int), cudaHostAllocMapped));
    *error_host_ = 0;
    CLLM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&args_.error), error_host_, 0));
  }
  ~LocalOneShotAllReduce() override {
    cudaDeviceSynchronize();
    if (error_host_) cudaFreeHost(error_host_);
  }
  void sum_bf16(__nv_bfloat16* data, size_t count, cudaStream_t stream, const CommPhase& phase) override {
    CLLM_CHECK(count * sizeof(__nv_bfloat16) <= args_.half_bytes,
               "stand-in all-reduce in " << phase.str() << ": " << count << " elements exceed its buffer");
    launch_ipc_one_shot(args_, data, count, CommDType::bf16, stream);
  }
  bool capturable() const override { return true; }
  const char* name() const override { return "one-shot kernel over local stand-in peers"; }
  Comm& comm() { return comm_; }

 private:
  LoneRankComm comm_;
  IpcKernelArgs args_;
  std::vector<cuda::DeviceBuffer> areas_;
  int* error_host_ = nullptr;
};

}  // namespace

std::unique_ptr<cuda::CudaModel> make_cuda_rank_stand_in(const CheckpointReader& ckpt, int rank, int size,
                                                         const cuda::CudaModelOptions& opts,
                                                         const LoadProgress& progress) {
  const ModelConfig& cfg = ckpt.config();
  CLLM_CHECK(0 <= rank && rank < size, "--tp-rank " << rank << "/" << size << ": the rank must be in 0.." << size - 1);
  const ShardPlan plan = make_shard_plan(cfg, rank, size);
  cuda::check_cuda_supported(cfg, plan, ckpt.source());
  // The largest sum: a forward of kMaxRows rows of the hidden size, in bf16.
  auto all_reduce = std::make_unique<LocalOneShotAllReduce>(
      rank, size, size_t{cuda::CudaModel::kMaxRows} * static_cast<size_t>(cfg.hidden_size) * sizeof(__nv_bfloat16));
  Comm& comm = all_reduce->comm();
  cuda::DeviceWeights w = cuda::load_device_weights(ckpt, plan, progress);
  return std::make_unique<cuda::CudaModel>(cfg, std::move(w), opts, plan, std::move(all_reduce), comm);
}

}  // namespace cllm
