// Making the process's communicator (the Comm interface itself is core/comm.h).
#pragma once
#include <memory>

#include "core/comm.h"

namespace cllm {

// The one-rank communicator: collectives are identities.
std::unique_ptr<Comm> make_single_comm();

// World size announced by the launcher: Open MPI's mpirun, a PMI launcher, or a Slurm job step
// (srun; not sbatch, whose SLURM_NTASKS a plain command in the batch script also sees). 1 without one.
int launcher_world_size();

// The process's communicator: MPI (MPI_Init_thread) when started by mpirun or srun with more
// than one rank, else the single-rank one. Throws when launched with several ranks by a cllm
// built without MPI. Call once per process; the returned object finalizes MPI when destroyed.
// With several ranks, a watchdog armed before MPI_Init ends this process (non-zero, naming its rank,
// host and start-up phase) unless MPI_Init and the first collective finish within
// startup_deadline_s: a rank that never starts, or stalls before the communicators exist, then stops
// the job (the launcher ends the other ranks) instead of hanging it (design.md, Failure semantics).
std::unique_ptr<Comm> init_comm_from_environment(double startup_deadline_s = 60);

}  // namespace cllm
