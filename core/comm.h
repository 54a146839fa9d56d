// Communicator interface used by tensor parallelism: every rank calls the same collectives in
// the same order. The implementations live in parallel/ (parallel/comm.h makes them): single-rank
// (comm_single.cpp), MPI (comm_mpi.cpp, the CPU backend) and NCCL (comm_nccl.cpp, the GPU).
// Failure semantics (design.md): no rank waits forever. Every collective carries a CommPhase that
// names it, and a multi-rank communicator stops all ranks when a collective passes its deadline,
// printing "rank R: <op> in <phase> timed out after S s".
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace cllm {

// Names a collective for error messages: {"attention", 3} reads "layer 3 attention".
struct CommPhase {
  const char* what;
  int layer = -1;  // -1: not inside a layer
  std::string str() const;
};

// One (value, index) pair of a max-loc reduction; the layout of MPI_FLOAT_INT.
struct ValueIndex {
  float value;
  int32_t index;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Ranks on this rank's node (MPI_Comm_split_type SHARED): for thread counts and device ids.
  virtual int local_size() const = 0;

  // In-place sum over ranks of count floats. Each element is summed in rank order
  // ((r0 + r1) + r2) + ..., whatever count is, so a row's sum does not depend on how many rows
  // are reduced together: Jacobi blocks reproduce AR bit for bit at every TP size.
  virtual void all_reduce_sum(float* data, size_t count, const CommPhase& phase) = 0;
  // Per element: the largest value over ranks, the lowest index among equal values.
  virtual void all_reduce_max_loc(ValueIndex* data, size_t count, const CommPhase& phase) = 0;
  // Copies bytes from `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root, const CommPhase& phase) = 0;
  // recv[r * bytes .. (r + 1) * bytes) = rank r's send; recv holds size() * bytes.
  virtual void all_gather(const void* send, size_t bytes, void* recv, const CommPhase& phase) = 0;

  // Prints "rank R: message" on stderr and ends every rank with a non-zero exit status.
  // A single-rank communicator throws cllm::Error instead (the usual error path).
  [[noreturn]] void abort(const std::string& message);
  // Runs once inside abort(), on the aborting thread, before the ranks stop: a server answers
  // its open requests there. It must not use this communicator. Empty: none.
  void set_abort_hook(std::function<void(const std::string& message)> hook) { abort_hook_ = std::move(hook); }

  // Deadline of every later collective, in seconds (default 60).
  void set_deadline_seconds(double s);
  double deadline_seconds() const { return deadline_s_; }

 protected:
  // abort()'s work; must not return (abort() ends the process if one does).
  virtual void stop_all_ranks(const std::string& message) = 0;

 private:
  double deadline_s_ = 60.0;
  std::function<void(const std::string&)> abort_hook_;
};

}  // namespace cllm
