// MPI communicator: non-blocking collectives completed under a deadline (see comm_mpi.h).
#include "parallel/comm_mpi.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace cllm {

namespace detail {
std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}
}  // namespace detail

namespace {

static_assert(sizeof(ValueIndex) == 8, "ValueIndex must match MPI_FLOAT_INT (float, int)");

int checked_int(size_t n, const char* op, const CommPhase& phase) {
  CLLM_CHECK(n <= static_cast<size_t>(INT_MAX), op << " in " << phase.str() << ": " << n
                                                    << " elements exceed MPI's int count");
  return static_cast<int>(n);
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    int provided = 0;
    CLLM_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    CLLM_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level " << provided << ", cllm needs FUNNELED");
    CLLM_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    CLLM_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));  // inherits MPI_ERRORS_RETURN
    CLLM_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    CLLM_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm node;
    CLLM_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    CLLM_MPI_CHECK(MPI_Comm_size(node, &local_size_));
    CLLM_MPI_CHECK(MPI_Comm_free(&node));
    counts_.resize(size_);
    displs_.resize(size_);
    chunk_counts_.resize(size_);
    chunk_displs_.resize(size_);
  }

  ~MpiComm() override {
    MPI_Comm_free(&comm_);
    MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }

  // Reduce-scatter by all-to-all (rank r sums chunk r, in rank order), then all-gather: the same
  // bytes on the wire as a ring all-reduce, but each element's summation order is fixed.
  void all_reduce_sum(float* data, size_t count, const CommPhase& phase) override {
    checked_int(count, "all-reduce", phase);
    for (int r = 0; r < size_; ++r) {
      displs_[r] = static_cast<int>(count * r / size_);
      counts_[r] = static_cast<int>(count * (r + 1) / size_) - displs_[r];
    }
    const int mine = counts_[rank_];
    for (int r = 0; r < size_; ++r) {
      chunk_counts_[r] = mine;
      chunk_displs_[r] = r * mine;
    }
    chunks_.resize(static_cast<size_t>(size_) * mine);  // [size][mine]: every rank's copy of my chunk
    MPI_Request req;
    CLLM_MPI_CHECK(MPI_Ialltoallv(data, counts_.data(), displs_.data(), MPI_FLOAT, chunks_.data(),
                                  chunk_counts_.data(), chunk_displs_.data(), MPI_FLOAT, comm_, &req));
    wait(req, "all-reduce", phase);
    float* out = data + displs_[rank_];
    for (int i = 0; i < mine; ++i) out[i] = chunks_[i];
    for (int r = 1; r < size_; ++r) {
      const float* c = chunks_.data() + static_cast<size_t>(r) * mine;
      for (int i = 0; i < mine; ++i) out[i] += c[i];
    }
    CLLM_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts_.data(), displs_.data(),
                                   MPI_FLOAT, comm_, &req));
    wait(req, "all-reduce", phase);
  }

  void all_reduce_max_loc(ValueIndex* data, size_t count, const CommPhase& phase) override {
    MPI_Request req;
    CLLM_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, checked_int(count, "max-loc", phase), MPI_FLOAT_INT,
                                  MPI_MAXLOC, comm_, &req));
    wait(req, "max-loc all-reduce", phase);
  }

  void broadcast(void* data, size_t bytes, int root, const CommPhase& phase) override {
    CLLM_CHECK(root >= 0 && root < size_, "broadcast in " << phase.str() << ": root " << root << " outside [0, "
                                                          << size_ << ")");
    MPI_Request req;
    CLLM_MPI_CHECK(MPI_Ibcast(data, checked_int(bytes, "broadcast", phase), MPI_BYTE, root, comm_, &req));
    wait(req, "broadcast", phase);
  }

  void all_gather(const void* send, size_t bytes, void* recv, const CommPhase& phase) override {
    const int n = checked_int(bytes, "all-gather", phase);
    MPI_Request req;
    CLLM_MPI_CHECK(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &req));
    wait(req, "all-gather", phase);
  }

 protected:
  void stop_all_ranks(const std::string& message) override {
    std::fprintf(stderr, "rank %d: %s\n", rank_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 1);
  }

 private:
  // Polls until req completes. The first polls spin (a step's collectives are microseconds
  // apart); later ones yield, then sleep, so that oversubscribed ranks (more ranks than cores)
  // let the rank being waited for run.
  void wait(MPI_Request& req, const char* op, const CommPhase& phase) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    for (long polls = 0;; ++polls) {
      int done = 0;
      CLLM_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) return;
      if (polls < 64) continue;
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (waited > deadline_seconds()) {
        char msg[256];
        std::snprintf(msg, sizeof msg, "%s in %s timed out after %g s", op, phase.str().c_str(), deadline_seconds());
        abort(msg);
      }
      if (waited < 1e-3)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_size_ = 1;
  std::vector<int> counts_, displs_;              // all-reduce: each rank's chunk of the buffer
  std::vector<int> chunk_counts_, chunk_displs_;  // all-reduce: my chunk as received from each rank
  std::vector<float> chunks_;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace cllm
