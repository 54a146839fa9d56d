#!/usr/bin/env bash
# run_node.sh NP -- CLLM_ARGS...: one node, NP tensor-parallel ranks of `cllm`.
#   cluster/run_node.sh 3 -- generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "Hi"
# Each rank is bound to its own cores (--map-by slot:PE=cores/NP) so the ranks' thread pools do not
# share cores; cllm gives each rank cores/NP threads by default. Set CLLM_BUILD to use another
# build directory (default: build).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
np="${1:?usage: run_node.sh NP -- CLLM_ARGS...}"; shift
[ "${1:-}" = "--" ] && shift
cllm="${CLLM_BUILD:-$here/../build}/cllm"
cores=$(nproc)
pe=$(( cores / np ))
mpi_args=(-np "$np")
if [ "$pe" -ge 1 ]; then
  mpi_args+=(--map-by "slot:PE=$pe" --bind-to core)
else
  mpi_args+=(--oversubscribe --bind-to none)  # more ranks than cores: tests and demos only
fi
# Open MPI refuses root unless told (containers and CI run as root).
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# SIGTERM to mpirun (scancel, systemd, docker stop) reaches the ranks this many seconds later and
# SIGKILL as long after that: `cllm serve` drains in that window (>= its --grace, default 30).
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-35}"
source "$here/nccl_env.sh"
exec mpirun "${mpi_args[@]}" "${mpi_env_args[@]}" "$cllm" "$@"
