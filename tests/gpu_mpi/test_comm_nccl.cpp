// NcclComm and the IPC one-shot all-reduce against host references, under mpirun -np 2 or 4.
// Inputs are rebuilt on every rank from (rank, seed), so the rank-order reference needs no comm.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_support.h"

namespace cllm::test {
namespace {

// Device buffer of bytes, freed on scope exit.
struct DeviceBuf {
  explicit DeviceBuf(size_t bytes) { CLLM_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1)); }
  ~DeviceBuf() { cudaFree(p); }
  char* p = nullptr;
};

struct Stream {
  Stream() { CLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s); }
  cudaStream_t s = nullptr;
};

std::vector<uint8_t> to_host(const void* d, size_t bytes) {
  std::vector<uint8_t> h(bytes);
  CLLM_CUDA_CHECK(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost));
  return h;
}

// True when every rank holds the same bytes.
bool same_on_all_ranks(const std::vector<uint8_t>& v) {
  const uint64_t mine = fnv1a(v.data(), v.size());
  std::vector<uint64_t> all(gpu_comm().size());
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (uint64_t h : all)
    if (h != mine) return false;
  return true;
}

// Largest |got - ref| over elements, and the index of the first bitwise difference (or -1).
struct Diff {
  double max_abs = 0;
  long first = -1;
};
Diff compare(const std::vector<uint8_t>& ref, const std::vector<uint8_t>& got, size_t count, CommDType t) {
  Diff d;
  const size_t esz = comm_dtype_bytes(t);
  for (size_t i = 0; i < count; ++i) {
    if (d.first < 0 && std::memcmp(ref.data() + i * esz, got.data() + i * esz, esz) != 0) d.first = static_cast<long>(i);
    d.max_abs = std::max(d.max_abs, static_cast<double>(std::fabs(elem(ref, i, t) - elem(got, i, t))));
  }
  return d;
}

// Element counts of the all-reduces models make: n x hidden for n in {1,16,32,64} and hidden in
// {4096, 5120, 8192}, then odd counts (scalar tails, one element, partial vectors), then the largest
// the IPC buffer takes.
std::vector<size_t> sweep_counts(CommDType t) {
  std::vector<size_t> c;
  for (size_t n : {1, 16, 32, 64})
    for (size_t h : {4096, 5120, 8192}) c.push_back(n * h);
  for (size_t odd : {1, 3, 7, 8, 9, 127, 1001, 4095, 65537}) c.push_back(odd);
  c.push_back(NcclCommOptions{}.ipc_max_bytes / comm_dtype_bytes(t));
  return c;
}

// NCCL's order may differ from rank order beyond 2 ranks (and it rounds bf16 partial sums).
double nccl_tolerance(CommDType t, int nranks) {
  if (nranks == 2) return 0;  // a + b == b + a: bit for bit
  return t == CommDType::f32 ? 1e-5 * nranks : 4.0 / 256 * nranks;
}

TEST(Nccl, AllReduceMatchesMpiAllreduceOnHostCopies) {
  NcclComm& c = gpu_comm();
  for (size_t count : {size_t{1}, size_t{1000}, size_t{262147}}) {
    const std::vector<uint8_t> in = make_input(c.rank(), 11 + count, count, CommDType::f32);
    DeviceBuf d(in.size());
    CLLM_CUDA_CHECK(cudaMemcpy(d.p, in.data(), in.size(), cudaMemcpyHostToDevice));
    c.all_reduce_sum(reinterpret_cast<float*>(d.p), count, {"test nccl vs mpi"});
    const std::vector<uint8_t> got = to_host(d.p, in.size());
    std::vector<float> host(count);
    std::memcpy(host.data(), in.data(), in.size());
    MPI_Allreduce(MPI_IN_PLACE, host.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    std::vector<uint8_t> ref(in.size());
    std::memcpy(ref.data(), host.data(), in.size());
    const Diff d2 = compare(ref, got, count, CommDType::f32);
    EXPECT_LE(d2.max_abs, nccl_tolerance(CommDType::f32, c.size())) << "count " << count << " first diff " << d2.first;
    EXPECT_TRUE(same_on_all_ranks(got)) << "count " << count;
  }
}

TEST(Ipc, AvailableOnOneNodeWithPeerAccess) {
  NcclComm& c = gpu_comm();
  ASSERT_EQ(c.local_size(), c.size()) << "these tests run on one node";
  EXPECT_TRUE(c.ipc_available()) << "path auto did not set up the IPC all-reduce (peer access missing?)";
  EXPECT_EQ(c.path_for(4096 * 2), AllReducePath::ipc);
  EXPECT_EQ(c.path_for(NcclCommOptions{}.ipc_max_bytes + 2), AllReducePath::nccl);
}

// Every size models use, both dtypes, aligned and misaligned (scalar path): IPC equals the
// rank-order sum bit for bit on every rank; NCCL agrees (bitwise at 2 ranks).
TEST(Ipc, MatchesRankOrderSumAndNcclAtModelSizes) {
  NcclComm& c = gpu_comm();
  if (!c.ipc_available()) GTEST_SKIP() << "IPC unavailable (Ipc.AvailableOnOneNodeWithPeerAccess fails)";
  Stream s;
  for (CommDType t : {CommDType::bf16, CommDType::f32}) {
    for (size_t count : sweep_counts(t)) {
      const size_t esz = comm_dtype_bytes(t), bytes = count * esz;
      const uint64_t seed = count * 2 + (t == CommDType::f32);
      const std::vector<uint8_t> in = make_input(c.rank(), seed, count, t);
      const std::vector<uint8_t> ref = rank_order_sum(c.size(), seed, count, t);
      DeviceBuf d(bytes + 16);
      for (size_t offset : {size_t{0}, esz}) {
        const std::string what = std::string(comm_dtype_name(t)) + " count " + std::to_string(count) + " offset " +
                                 std::to_string(offset);
        for (AllReducePath p : {AllReducePath::ipc, AllReducePath::nccl}) {
          if (p == AllReducePath::ipc && bytes > NcclCommOptions{}.ipc_max_bytes) continue;
          CLLM_CUDA_CHECK(cudaMemcpy(d.p + offset, in.data(), bytes, cudaMemcpyHostToDevice));
          c.all_reduce_sum_via(p, d.p + offset, count, t, s.s, {"test sweep"});
          c.wait(s.s, "all-reduce", {"test sweep"});
          const std::vector<uint8_t> got = to_host(d.p + offset, bytes);
          const Diff df = compare(ref, got, count, t);
          if (p == AllReducePath::ipc) {
            EXPECT_EQ(df.first, -1) << "IPC " << what << ": differs from the rank-order sum, max |diff| " << df.max_abs;
          } else {
            EXPECT_LE(df.max_abs, nccl_tolerance(t, c.size())) << "NCCL " << what << " first diff " << df.first;
          }
          EXPECT_TRUE(same_on_all_ranks(got)) << all_reduce_path_name(p) << " " << what;
        }
      }
    }
  }
}

// Many IPC all-reduces enqueued back to back with no host sync in between: the step counters and
// the two buffer halves must keep a fast rank from overwriting data a slow rank still reads.
TEST(Ipc, BackToBackCallsWithoutSync) {
  NcclComm& c = gpu_comm();
  if (!c.ipc_available()) GTEST_SKIP() << "IPC unavailable";
  Stream s;
  const CommDType t = CommDType::bf16;
  const size_t counts[] = {4096, 1, 8192 * 64, 5003, 5120 * 16};
  constexpr int kCalls = 60;
  std::vector<std::unique_ptr<DeviceBuf>> bufs;
  for (int k = 0; k < kCalls; ++k) {
    const size_t n = counts[k % 5];
    const std::vector<uint8_t> in = make_input(c.rank(), 500 + k, n, t);
    bufs.push_back(std::make_unique<DeviceBuf>(in.size()));
    CLLM_CUDA_CHECK(cudaMemcpy(bufs.back()->p, in.data(), in.size(), cudaMemcpyHostToDevice));
  }
  for (int k = 0; k < kCalls; ++k) c.all_reduce_sum_via(AllReducePath::ipc, bufs[k]->p, counts[k % 5], t, s.s, {"test b2b"});
  c.wait(s.s, "all-reduce", {"test b2b"});
  for (int k = 0; k < kCalls; ++k) {
    const size_t n = counts[k % 5];
    const Diff df = compare(rank_order_sum(c.size(), 500 + k, n, t), to_host(bufs[k]->p, n * 2), n, t);
    EXPECT_EQ(df.first, -1) << "call " << k << " count " << n;
  }
}

// All-reduces captured into a CUDA graph and replayed several times: the device-side step counter
// makes every replay a new step (nothing step-dependent is baked into the graph).
TEST(Ipc, CudaGraphReplay) {
  NcclComm& c = gpu_comm();
  if (!c.ipc_available()) GTEST_SKIP() << "IPC unavailable";
  Stream s;
  const CommDType t = CommDType::f32;
  constexpr int kCalls = 8;
  const size_t n = 4096 * 16 + 3;
  for (AllReducePath p : {AllReducePath::ipc, AllReducePath::nccl}) {
    std::vector<std::unique_ptr<DeviceBuf>> src, work;
    for (int k = 0; k < kCalls; ++k) {
      const std::vector<uint8_t> in = make_input(c.rank(), 900 + k, n, t);
      src.push_back(std::make_unique<DeviceBuf>(in.size()));
      work.push_back(std::make_unique<DeviceBuf>(in.size()));
      CLLM_CUDA_CHECK(cudaMemcpy(src.back()->p, in.data(), in.size(), cudaMemcpyHostToDevice));
    }
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CLLM_CUDA_CHECK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal));
    for (int k = 0; k < kCalls; ++k) {
      CLLM_CUDA_CHECK(cudaMemcpyAsync(work[k]->p, src[k]->p, n * 4, cudaMemcpyDeviceToDevice, s.s));
      c.all_reduce_sum_via(p, work[k]->p, n, t, s.s, {"test graph"});
    }
    CLLM_CUDA_CHECK(cudaStreamEndCapture(s.s, &graph));
    CLLM_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 3; ++replay) {
      CLLM_CUDA_CHECK(cudaGraphLaunch(exec, s.s));
      c.wait(s.s, "graph replay", {"test graph"});
      for (int k = 0; k < kCalls; ++k) {
        const Diff df = compare(rank_order_sum(c.size(), 900 + k, n, t), to_host(work[k]->p, n * 4), n, t);
        if (p == AllReducePath::ipc)
          EXPECT_EQ(df.first, -1) << "IPC replay " << replay << " call " << k;
        else
          EXPECT_LE(df.max_abs, nccl_tolerance(t, c.size())) << "NCCL replay " << replay << " call " << k;
      }
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

// Max-loc: values drawn from {0..3} so ties across ranks are common; must equal MPI_MAXLOC (the
// largest value, the lowest index among equal ones) on every rank.
TEST(Nccl, MaxLocMatchesMpiMaxloc) {
  NcclComm& c = gpu_comm();
  const size_t rows = 3001;
  std::mt19937 g(77 + c.rank());
  std::vector<ValueIndex> in(rows);
  for (size_t i = 0; i < rows; ++i) in[i] = {static_cast<float>(g() % 4), static_cast<int32_t>(g() % 100000)};
  DeviceBuf d(rows * sizeof(ValueIndex));
  CLLM_CUDA_CHECK(cudaMemcpy(d.p, in.data(), rows * sizeof(ValueIndex), cudaMemcpyHostToDevice));
  c.all_reduce_max_loc(reinterpret_cast<ValueIndex*>(d.p), rows, {"test max-loc"});
  std::vector<ValueIndex> got(rows), ref = in;
  CLLM_CUDA_CHECK(cudaMemcpy(got.data(), d.p, rows * sizeof(ValueIndex), cudaMemcpyDeviceToHost));
  MPI_Allreduce(MPI_IN_PLACE, ref.data(), static_cast<int>(rows), MPI_FLOAT_INT, MPI_MAXLOC, MPI_COMM_WORLD);
  int ties = 0;
  for (size_t i = 0; i < rows; ++i) {
    ASSERT_EQ(got[i].value, ref[i].value) << "row " << i;
    ASSERT_EQ(got[i].index, ref[i].index) << "row " << i;
    ties += got[i].value == in[i].value && got[i].index != in[i].index;
  }
  EXPECT_GT(ties, 0) << "the data should contain ties that another rank won";
}

TEST(Nccl, BroadcastAndAllGather) {
  NcclComm& c = gpu_comm();
  const int n = c.size();
  DeviceBuf d(64 * n);
  std::vector<uint8_t> mine(64, static_cast<uint8_t>(c.rank() + 1));
  CLLM_CUDA_CHECK(cudaMemcpy(d.p, mine.data(), 64, cudaMemcpyHostToDevice));
  c.broadcast(d.p, 64, n - 1, {"test broadcast"});
  EXPECT_EQ(to_host(d.p, 64), std::vector<uint8_t>(64, static_cast<uint8_t>(n)));
  DeviceBuf all(64 * n);
  CLLM_CUDA_CHECK(cudaMemcpy(d.p, mine.data(), 64, cudaMemcpyHostToDevice));
  c.all_gather(d.p, 64, all.p, {"test all-gather"});
  const std::vector<uint8_t> got = to_host(all.p, 64 * n);
  for (int r = 0; r < n; ++r) EXPECT_EQ(got[64 * r], r + 1) << "slot " << r;
}

}  // namespace
}  // namespace cllm::test
