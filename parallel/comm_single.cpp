// The single-rank communicator and the choice of communicator at process start
// (init_comm_from_environment). The shared parts of Comm are in core/comm.cpp.
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "parallel/comm.h"
#ifdef CLLM_HAVE_MPI
#include "parallel/comm_mpi.h"
#endif

namespace cllm {
namespace {

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_size() const override { return 1; }
  void all_reduce_sum(float*, size_t, const CommPhase&) override {}
  void all_reduce_max_loc(ValueIndex*, size_t, const CommPhase&) override {}
  void broadcast(void*, size_t, int root, const CommPhase& phase) override {
    CLLM_CHECK(root == 0, "broadcast in " << phase.str() << ": root " << root
                                          << " does not exist in a 1-rank communicator");
  }
  void all_gather(const void* send, size_t bytes, void* recv, const CommPhase&) override {
    if (send != recv) std::memmove(recv, send, bytes);
  }

 protected:
  void stop_all_ranks(const std::string& message) override { throw Error("rank 0: " + message); }
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 1;
}

std::unique_ptr<Comm> init_comm_from_environment(double startup_deadline_s) {
  const int world = launcher_world_size();
  if (world <= 1) return make_single_comm();
#ifdef CLLM_HAVE_MPI
  return make_mpi_comm(startup_deadline_s);
#else
  (void)startup_deadline_s;
  CLLM_FAIL("started as one of " << world << " ranks, but this cllm was built without MPI (-DCLLM_MPI=ON)");
#endif
}

}  // namespace cllm
