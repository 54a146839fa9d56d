// MPI communicator: non-blocking collectives completed under a deadline (see comm_mpi.h).
#include "parallel/comm_mpi.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <sstream>
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

// Naming a stall: a rank whose collective passes its deadline sends a Notice (tag kNotice) to every
// other rank over a side communicator; a rank that is itself waiting in a collective answers with its
// own (tag kReply) from its polling loop, and a rank that timed out too has sent one anyway. Ranks
// heard from within the grace period arrived somewhere; the others did not arrive in any collective:
// stopped, stuck in compute, or dead. Every rank's host is gathered at start-up for the message.
constexpr int kNotice = 1, kReply = 2;
struct Notice {
  int64_t seq;    // collectives this rank has entered, this one included: equal on ranks in the same one
  char what[120]; // "all-reduce in layer 3 attention"
};

int checked_int(size_t n, const char* op, const CommPhase& phase) {
  CLLM_CHECK(n <= static_cast<size_t>(INT_MAX), op << " in " << phase.str() << ": " << n
                                                    << " elements exceed MPI's int count");
  return static_cast<int>(n);
}

// Armed before MPI_Init, disarmed when the first collective has completed (on destruction). Until
// then no deadline covers this rank: MPI_Init and a blocking collective wait for every rank without
// limit. When the deadline passes it prints this rank's start-up phase and ends the process with
// status 1; the launcher (mpirun, srun) then ends the other ranks, the stalled one included.
class StartupWatchdog {
 public:
  explicit StartupWatchdog(double deadline_s) : deadline_s_(deadline_s), thread_([this] { run(); }) {}
  ~StartupWatchdog() {
    {
      std::lock_guard lock(m_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void phase(const char* p) {
    std::lock_guard lock(m_);
    phase_ = p;
  }

 private:
  void run() {
    std::unique_lock lock(m_);
    if (cv_.wait_for(lock, std::chrono::duration<double>(deadline_s_), [this] { return done_; })) return;
    // MPI has no rank yet: the launcher's is in the environment.
    const char* rank = "?";
    for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
      if (const char* v = std::getenv(var)) {
        rank = v;
        break;
      }
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr,
                 "rank %s (host %s): start-up timed out after %g s in %s: a rank did not start, or stalled before "
                 "its first collective; stopping so that the launcher ends every rank\n",
                 rank, host, deadline_s_, phase_);
    std::fflush(stderr);
    std::_Exit(1);
  }

  const double deadline_s_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  const char* phase_ = "MPI_Init (waiting for every rank to start)";
  std::thread thread_;  // last: starts once the members above exist
};

class MpiComm final : public Comm {
 public:
  explicit MpiComm(double startup_deadline_s) {
    CLLM_CHECK(startup_deadline_s > 0, "the start-up deadline must be positive, got " << startup_deadline_s << " s");
    StartupWatchdog watchdog(startup_deadline_s);
    int provided = 0;
    CLLM_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    watchdog.phase("the first collectives (communicator set-up, host names: every rank must have finished MPI_Init)");
    CLLM_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level " << provided << ", cllm needs FUNNELED");
    CLLM_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    CLLM_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));  // inherits MPI_ERRORS_RETURN
    CLLM_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &side_));  // stall notices, apart from the collectives
    CLLM_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    CLLM_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    char host[MPI_MAX_PROCESSOR_NAME] = {};
    int host_len = 0;
    CLLM_MPI_CHECK(MPI_Get_processor_name(host, &host_len));
    std::vector<char> hosts(static_cast<size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
    CLLM_MPI_CHECK(MPI_Allgather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts.data(), MPI_MAX_PROCESSOR_NAME,
                                 MPI_CHAR, comm_));
    for (int r = 0; r < size_; ++r) hosts_.emplace_back(&hosts[static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME]);
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
    MPI_Comm_free(&side_);
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
    // Rank 0 may be streaming text to stdout (cllm generate): end its line, so the message that
    // follows on the same terminal is on a line of its own.
    if (rank_ == 0) {
      std::fflush(stdout);
      std::fprintf(stderr, "\n");
    }
    std::fprintf(stderr, "rank %d: %s\n", rank_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 1);
  }

 private:
  // Polls until req completes. The first polls spin (a step's collectives are microseconds
  // apart); later ones yield, then sleep, so that oversubscribed ranks (more ranks than cores)
  // let the rank being waited for run. While sleeping it answers other ranks' stall notices.
  void wait(MPI_Request& req, const char* op, const CommPhase& phase) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    ++seq_;
    std::snprintf(current_, sizeof current_, "%s in %s", op, phase.str().c_str());
    for (long polls = 0;; ++polls) {
      int done = 0;
      CLLM_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) return;
      if (polls < 64) continue;
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (waited > deadline_seconds()) abort(current_ + std::string(" timed out after ") + seconds(deadline_seconds()) +
                                             ": " + name_missing_ranks());
      if (waited < 1e-3) {
        std::this_thread::yield();
      } else {
        answer_notices();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  static std::string seconds(double s) {
    std::ostringstream os;
    os << s << " s";
    return os.str();
  }

  // Sends this rank's Notice to `to` without waiting for it: the buffer lives in sent_ until the
  // process ends (notices are only sent once a collective has timed out, and then the job stops).
  void send_notice(int to, int tag) {
    Notice& n = sent_.emplace_back();
    n.seq = seq_;
    std::memcpy(n.what, current_, sizeof n.what);
    MPI_Request req;
    if (MPI_Isend(&n, sizeof n, MPI_BYTE, to, tag, side_, &req) == MPI_SUCCESS) MPI_Request_free(&req);
  }

  // Answers every pending notice with this rank's own: "I am waiting in this collective".
  void answer_notices() {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kNotice, side_, &flag, &st) != MPI_SUCCESS || !flag) return;
      Notice in;
      MPI_Recv(&in, sizeof in, MPI_BYTE, st.MPI_SOURCE, kNotice, side_, MPI_STATUS_IGNORE);
      send_notice(st.MPI_SOURCE, kReply);
    }
  }

  // After this rank's deadline passed: which ranks are not waiting in this collective, with hosts.
  // Waits up to a grace period (a tenth of the deadline, 0.2 to 2 s) for the others' notices.
  std::string name_missing_ranks() {
    for (int r = 0; r < size_; ++r)
      if (r != rank_) send_notice(r, kNotice);
    std::vector<bool> heard(size_, false);
    std::vector<Notice> where(size_);
    heard[rank_] = true;
    int missing = size_ - 1;
    const double grace = std::clamp(deadline_seconds() / 10, 0.2, 2.0);
    const auto start = std::chrono::steady_clock::now();
    while (missing > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < grace) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, side_, &flag, &st) != MPI_SUCCESS || !flag) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      Notice in;
      MPI_Recv(&in, sizeof in, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, side_, MPI_STATUS_IGNORE);
      in.what[sizeof in.what - 1] = '\0';
      if (st.MPI_TAG == kNotice) send_notice(st.MPI_SOURCE, kReply);  // it timed out too: tell it we are here
      if (!heard[st.MPI_SOURCE]) --missing;
      heard[st.MPI_SOURCE] = true;
      where[st.MPI_SOURCE] = in;
    }
    std::ostringstream absent, elsewhere, waiting;
    for (int r = 0; r < size_; ++r) {
      const std::string who = "rank " + std::to_string(r) + " (host " + hosts_[r] + ")";
      if (!heard[r])
        absent << (absent.tellp() > 0 ? ", " : "") << who;
      else if (r != rank_ && where[r].seq != seq_)
        elsewhere << "; " << who << " is waiting in another collective: " << where[r].what << " (collective #"
                  << where[r].seq << ", this one is #" << seq_ << ")";
      else
        waiting << (waiting.tellp() > 0 ? ", " : "") << r;
    }
    std::ostringstream os;
    if (absent.tellp() > 0)
      os << "not arrived: " << absent.str() << " (no answer within " << seconds(grace)
         << ": stopped, stuck outside the collectives, or dead)";
    else
      os << "every rank answered; none is missing";
    os << elsewhere.str() << "; waiting here: ranks " << waiting.str();
    return os.str();
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm side_ = MPI_COMM_NULL;   // stall notices (name_missing_ranks)
  std::vector<std::string> hosts_;  // [rank]: MPI_Get_processor_name
  int64_t seq_ = 0;                 // collectives entered (wait() calls)
  char current_[120] = "";          // the collective being waited for: "all-reduce in embedding"
  std::deque<Notice> sent_;         // buffers of notices in flight (deque: stable addresses)
  int rank_ = 0, size_ = 1, local_size_ = 1;
  std::vector<int> counts_, displs_;              // all-reduce: each rank's chunk of the buffer
  std::vector<int> chunk_counts_, chunk_displs_;  // all-reduce: my chunk as received from each rank
  std::vector<float> chunks_;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm(double startup_deadline_s) {
  return std::make_unique<MpiComm>(startup_deadline_s);
}

}  // namespace cllm
