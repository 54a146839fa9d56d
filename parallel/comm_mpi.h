// The MPI communicator (CPU tensor parallelism) and the MPI error-check macro.
// Collectives are non-blocking MPI calls completed by a polling loop with a deadline; on expiry
// the rank prints what it was waiting for and calls MPI_Abort, which ends every rank.
#pragma once
#include <memory>

#include <mpi.h>

#include "core/check.h"
#include "core/comm.h"

namespace cllm {

namespace detail {
std::string mpi_error_text(int code);
}  // namespace detail

// CLLM_MPI_CHECK(MPI_Xxx(...)): throws cllm::Error with file:line, the call and MPI's message.
// Works because the communicator uses MPI_ERRORS_RETURN instead of the default abort.
#define CLLM_MPI_CHECK(call)                                                                   \
  do {                                                                                         \
    const int cllm_mpi_rc_ = (call);                                                           \
    CLLM_CHECK(cllm_mpi_rc_ == MPI_SUCCESS, #call << " failed: " << ::cllm::detail::mpi_error_text(cllm_mpi_rc_)); \
  } while (0)

// Initialises MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI) and returns a communicator
// over a duplicate of MPI_COMM_WORLD. The object finalizes MPI when destroyed. A watchdog thread ends
// the process when MPI_Init and the first collective take longer than startup_deadline_s
// (init_comm_from_environment).
std::unique_ptr<Comm> make_mpi_comm(double startup_deadline_s);

}  // namespace cllm
