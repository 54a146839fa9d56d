// IPC all-reduce set-up: allocation, handle exchange over MPI, peer mapping (see ipc_allreduce.h).
#include "parallel/cuda/ipc_allreduce.h"

#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"

namespace cllm {
namespace {

struct RankInfo {
  int device;
  int node_size;  // ranks of `comm` sharing this rank's node
};

// Every rank's device ordinal and node size (collective).
std::vector<RankInfo> gather_rank_info(MPI_Comm comm, int nranks) {
  MPI_Comm node;
  int rank = 0, node_size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  RankInfo me{};
  CLLM_CUDA_CHECK(cudaGetDevice(&me.device));
  me.node_size = node_size;
  std::vector<RankInfo> all(nranks);
  MPI_Allgather(&me, sizeof me, MPI_BYTE, all.data(), sizeof me, MPI_BYTE, comm);
  return all;
}

}  // namespace

std::string IpcAllReduce::unavailable_reason(MPI_Comm comm) {
  int rank = 0, nranks = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &nranks);
  if (nranks < 2 || nranks > kIpcMaxRanks)
    return std::to_string(nranks) + " ranks (the IPC all-reduce takes 2.." + std::to_string(kIpcMaxRanks) + ")";
  const std::vector<RankInfo> all = gather_rank_info(comm, nranks);
  if (all[rank].node_size != nranks)
    return "the ranks span nodes (" + std::to_string(all[rank].node_size) + " of " + std::to_string(nranks) +
           " on rank " + std::to_string(rank) + "'s node)";
  // This rank's verdict about its peers, then the first failing rank's text on every rank.
  std::string mine;
  for (int r = 0; r < nranks && mine.empty(); ++r) {
    if (r == rank) continue;
    if (all[r].device == all[rank].device) {
      mine = "ranks " + std::to_string(rank) + " and " + std::to_string(r) + " share GPU " + std::to_string(all[r].device);
      break;
    }
    int can = 0;
    CLLM_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, all[rank].device, all[r].device));
    if (!can)
      mine = "no peer access from GPU " + std::to_string(all[rank].device) + " (rank " + std::to_string(rank) +
             ") to GPU " + std::to_string(all[r].device) + " (rank " + std::to_string(r) + ")";
  }
  char text[256] = {};
  std::strncpy(text, mine.c_str(), sizeof text - 1);
  std::vector<char> texts(static_cast<size_t>(nranks) * sizeof text);
  MPI_Allgather(text, sizeof text, MPI_CHAR, texts.data(), sizeof text, MPI_CHAR, comm);
  for (int r = 0; r < nranks; ++r)
    if (texts[r * sizeof text] != 0) return std::string(&texts[r * sizeof text]);
  return "";
}

IpcAllReduce::IpcAllReduce(MPI_Comm comm, size_t max_bytes) {
  const std::string why = unavailable_reason(comm);
  CLLM_CHECK(why.empty(), "the IPC all-reduce is unavailable: " << why);
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &args_.rank);
  MPI_Comm_size(comm_, &args_.nranks);
  args_.half_bytes = (max_bytes + 15) / 16 * 16;
  const size_t total = sizeof(IpcSignal) + 2 * args_.half_bytes;
  CLLM_CUDA_CHECK(cudaMalloc(&mine_, total));
  CLLM_CUDA_CHECK(cudaMemset(mine_, 0, sizeof(IpcSignal)));  // steps and flags start at 0
  CLLM_CUDA_CHECK(cudaDeviceSynchronize());                  // zeroed before any peer can signal
  CLLM_CUDA_CHECK(cudaHostAlloc(&error_host_, sizeof(int), cudaHostAllocMapped));
  *error_host_ = 0;
  CLLM_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&args_.error), error_host_, 0));

  cudaIpcMemHandle_t handle;
  CLLM_CUDA_CHECK(cudaIpcGetMemHandle(&handle, mine_));
  std::vector<cudaIpcMemHandle_t> handles(args_.nranks);
  // Also the barrier after every rank zeroed its flags.
  MPI_Allgather(&handle, sizeof handle, MPI_BYTE, handles.data(), sizeof handle, MPI_BYTE, comm_);
  for (int r = 0; r < args_.nranks; ++r) {
    char* base = mine_;
    if (r != args_.rank) {
      void* p = nullptr;
      CLLM_CUDA_CHECK(cudaIpcOpenMemHandle(&p, handles[r], cudaIpcMemLazyEnablePeerAccess));
      base = static_cast<char*>(p);
    }
    args_.signal[r] = reinterpret_cast<IpcSignal*>(base);
    args_.data[r] = base + sizeof(IpcSignal);
  }
  MPI_Barrier(comm_);  // every rank mapped every peer before the first kernel
}

IpcAllReduce::~IpcAllReduce() {
  // Best effort: a destructor must not throw, and a failed free at exit changes nothing.
  cudaDeviceSynchronize();
  if (comm_ != MPI_COMM_NULL) MPI_Barrier(comm_);
  for (int r = 0; r < args_.nranks; ++r)
    if (r != args_.rank && args_.signal[r]) cudaIpcCloseMemHandle(args_.signal[r]);
  if (mine_) cudaFree(mine_);
  if (error_host_) cudaFreeHost(error_host_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void IpcAllReduce::enqueue(void* data, size_t count, CommDType dtype, cudaStream_t stream, double timeout_s) {
  args_.timeout_ns = static_cast<unsigned long long>(timeout_s * 1e9);
  launch_ipc_one_shot(args_, data, count, dtype, stream);
}

}  // namespace cllm
