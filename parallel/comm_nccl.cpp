// NcclComm: NCCL bootstrapped over MPI, non-blocking communicator, deadline polling, IPC fast path
// (see comm_nccl.h).
#include "parallel/comm_nccl.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "kernels/cuda/cuda_check.cuh"

namespace cllm {

AllReducePath parse_all_reduce_path(const std::string& text) {
  if (text == "auto") return AllReducePath::automatic;
  if (text == "nccl") return AllReducePath::nccl;
  if (text == "ipc") return AllReducePath::ipc;
  CLLM_FAIL("all-reduce path '" << text << "': expected auto, nccl or ipc");
}

const char* all_reduce_path_name(AllReducePath p) {
  switch (p) {
    case AllReducePath::automatic: return "auto";
    case AllReducePath::nccl: return "nccl";
    case AllReducePath::ipc: return "ipc";
  }
  return "?";
}

namespace {
ncclDataType_t nccl_type(CommDType t) { return t == CommDType::f32 ? ncclFloat32 : ncclBfloat16; }
}  // namespace

NcclComm::NcclComm(const NcclCommOptions& o) : path_(o.path), ipc_max_bytes_(o.ipc_max_bytes) {
  int inited = 0;
  MPI_Initialized(&inited);
  CLLM_CHECK(inited, "NcclComm needs MPI initialised first (it bootstraps NCCL over MPI)");
  set_deadline_seconds(o.deadline_s);
  MPI_Comm_dup(o.mpi, &mpi_);
  MPI_Comm_rank(mpi_, &rank_);
  MPI_Comm_size(mpi_, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(mpi_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);

  // Every rank learns whether every rank has its GPU, so that all throw together, not hang.
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;
  int ok = local_rank_ < gpus ? 1 : 0, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, mpi_);
  CLLM_CHECK(all_ok, "rank " << rank_ << ": " << local_size_ << " ranks on this node need as many GPUs; "
                              << (ok ? "another rank's node" : "this node") << " has too few (here " << gpus << ")");
  device_ = local_rank_;
  CLLM_CUDA_CHECK(cudaSetDevice(device_));
  if (o.stream) {
    stream_ = o.stream;
  } else {
    CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    own_stream_ = true;
  }

  ncclUniqueId id{};
  if (rank_ == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    CLLM_CHECK(r == ncclSuccess, "ncclGetUniqueId failed: " << ncclGetErrorString(r));
  }
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi_);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  nccl_issued(ncclCommInitRankConfig(&nccl_, size_, id, rank_, &config), "NCCL init", {"start-up"});

  // The IPC path: every rank decides the same way (unavailable_reason is collective).
  if (path_ != AllReducePath::nccl) {
    const std::string why = IpcAllReduce::unavailable_reason(mpi_);
    if (why.empty())
      ipc_ = std::make_unique<IpcAllReduce>(mpi_, ipc_max_bytes_);
    else
      CLLM_CHECK(path_ == AllReducePath::automatic, "--all-reduce ipc: the IPC all-reduce is unavailable: " << why);
  }
}

NcclComm::~NcclComm() {
  ipc_.reset();  // collective: barrier before freeing
  if (nccl_) {
    cudaStreamSynchronize(stream_);
    ncclCommFinalize(nccl_);  // non-blocking: poll until it has flushed
    ncclResult_t st = ncclInProgress;
    while (ncclCommGetAsyncError(nccl_, &st) == ncclSuccess && st == ncclInProgress) std::this_thread::yield();
    ncclCommDestroy(nccl_);
  }
  if (scratch_) cudaFree(scratch_);
  if (own_stream_) cudaStreamDestroy(stream_);
  if (mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
}

AllReducePath NcclComm::path_for(size_t bytes) const {
  if (path_ == AllReducePath::automatic) return ipc_ && bytes <= ipc_max_bytes_ ? AllReducePath::ipc : AllReducePath::nccl;
  return path_;
}

void NcclComm::nccl_issued(ncclResult_t r, const char* op, const CommPhase& phase) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  while (r == ncclInProgress) {
    if (ncclCommGetAsyncError(nccl_, &r) != ncclSuccess) break;
    if (r != ncclInProgress) break;
    if (std::chrono::duration<double>(Clock::now() - start).count() > deadline_seconds()) {
      char msg[256];
      std::snprintf(msg, sizeof msg, "%s in %s: NCCL call still in progress after %g s", op, phase.str().c_str(),
                    deadline_seconds());
      abort(msg);
    }
    std::this_thread::yield();
  }
  if (r != ncclSuccess) {
    const char* last = nccl_ ? ncclGetLastError(nccl_) : "";
    abort(std::string(op) + " in " + phase.str() + ": NCCL error: " + ncclGetErrorString(r) +
          (last && *last ? std::string(" (") + last + ")" : std::string()));
  }
}

void NcclComm::wait(cudaStream_t stream, const char* op, const CommPhase& phase) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (long polls = 0;; ++polls) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(nccl_, &st);
    if (q != ncclSuccess || (st != ncclSuccess && st != ncclInProgress))
      abort(std::string(op) + " in " + phase.str() + ": NCCL error: " + ncclGetErrorString(q != ncclSuccess ? q : st));
    const cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady)
      abort(std::string(op) + " in " + phase.str() + ": CUDA error: " + cudaGetErrorName(e) + ": " +
            cudaGetErrorString(e));
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > deadline_seconds()) {
      char msg[256];
      std::snprintf(msg, sizeof msg, "%s in %s timed out after %g s", op, phase.str().c_str(), deadline_seconds());
      abort(msg);
    }
    if (polls < 64) continue;  // a step's collectives are microseconds long: spin first
    if (waited < 1e-3)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (ipc_ && ipc_->failed_peer() >= 0) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "%s in %s timed out after %g s waiting for rank %d (IPC all-reduce)", op,
                  phase.str().c_str(), deadline_seconds(), ipc_->failed_peer());
    abort(msg);
  }
}

void NcclComm::all_reduce_sum_via(AllReducePath path, void* data, size_t count, CommDType dtype, cudaStream_t stream,
                                  const CommPhase& phase) {
  const size_t bytes = count * comm_dtype_bytes(dtype);
  if (path == AllReducePath::automatic) path = ipc_ && bytes <= ipc_max_bytes_ ? AllReducePath::ipc : AllReducePath::nccl;
  if (path == AllReducePath::ipc) {
    CLLM_CHECK(ipc_, "all-reduce in " << phase.str() << ": the IPC path was asked for but is not set up");
    CLLM_CHECK(bytes <= ipc_->max_bytes(), "all-reduce in " << phase.str() << ": " << bytes
                                                             << " bytes exceed the IPC buffer of " << ipc_->max_bytes());
    ipc_->enqueue(data, count, dtype, stream, deadline_seconds());
    return;
  }
  nccl_issued(ncclAllReduce(data, data, count, nccl_type(dtype), ncclSum, nccl_, stream), "all-reduce", phase);
}

void NcclComm::all_reduce_sum_async(void* data, size_t count, CommDType dtype, cudaStream_t stream,
                                    const CommPhase& phase) {
  all_reduce_sum_via(path_for(count * comm_dtype_bytes(dtype)), data, count, dtype, stream, phase);
}

void NcclComm::all_reduce_sum(float* data, size_t count, const CommPhase& phase) {
  all_reduce_sum_async(data, count, CommDType::f32, stream_, phase);
  wait(stream_, "all-reduce", phase);
}

void* NcclComm::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    CLLM_CUDA_CHECK(cudaDeviceSynchronize());  // an earlier gather may still use the old buffer
    if (scratch_) CLLM_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    CLLM_CUDA_CHECK(cudaMalloc(&scratch_, bytes));
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void NcclComm::all_reduce_max_loc_async(ValueIndex* data, size_t count, cudaStream_t stream, const CommPhase& phase) {
  static_assert(sizeof(ValueIndex) == 8, "ValueIndex is (float, int32)");
  if (count == 0) return;
  void* all = scratch(count * sizeof(ValueIndex) * size_);
  nccl_issued(ncclAllGather(data, all, count * sizeof(ValueIndex), ncclUint8, nccl_, stream), "max-loc all-gather",
              phase);
  launch_pick_max_loc(all, data, count, size_, stream);
}

void NcclComm::all_reduce_max_loc(ValueIndex* data, size_t count, const CommPhase& phase) {
  all_reduce_max_loc_async(data, count, stream_, phase);
  wait(stream_, "max-loc all-reduce", phase);
}

void NcclComm::broadcast(void* data, size_t bytes, int root, const CommPhase& phase) {
  CLLM_CHECK(root >= 0 && root < size_, "broadcast in " << phase.str() << ": root " << root << " outside [0, " << size_ << ")");
  nccl_issued(ncclBroadcast(data, data, bytes, ncclUint8, root, nccl_, stream_), "broadcast", phase);
  wait(stream_, "broadcast", phase);
}

void NcclComm::all_gather(const void* send, size_t bytes, void* recv, const CommPhase& phase) {
  nccl_issued(ncclAllGather(send, recv, bytes, ncclUint8, nccl_, stream_), "all-gather", phase);
  wait(stream_, "all-gather", phase);
}

void NcclComm::stop_all_ranks(const std::string& message) {
  std::fprintf(stderr, "rank %d: %s\n", rank_, message.c_str());
  std::fflush(stderr);
  // ncclCommAbort or MPI_Abort can block behind a kernel that never ends (a peer that is gone):
  // a watchdog makes sure this process exits regardless.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::_Exit(1);
  }).detach();
  if (nccl_) ncclCommAbort(nccl_);
  MPI_Abort(mpi_ != MPI_COMM_NULL ? mpi_ : MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace cllm
