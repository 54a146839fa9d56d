// Making the process's communicator (the Comm interface itself is core/comm.h).
#pragma once
#include <memory>

#include "core/comm.h"

namespace cllm {

// The one-rank communicator: collectives are identities.
std::unique_ptr<Comm> make_single_comm();

// The process's communicator: MPI (MPI_Init_thread) when started by mpirun or srun with more
// than one rank, else the single-rank one. Throws when launched with several ranks by a cllm
// built without MPI. Call once per process; the returned object finalizes MPI when destroyed.
std::unique_ptr<Comm> init_comm_from_environment();

}  // namespace cllm
