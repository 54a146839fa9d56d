// Communicator interface used by tensor parallelism: every rank calls the same collectives in
// the same order. Implementations: single-rank (here), MPI (CPU backend) and NCCL (GPU).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace cllm {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over ranks of count floats.
  virtual void all_reduce_sum(float* data, size_t count) = 0;
  // Copies bytes from `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
};

// The one-rank communicator: collectives are identities.
std::unique_ptr<Comm> make_single_comm();

}  // namespace cllm
