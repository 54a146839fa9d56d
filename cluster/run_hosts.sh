#!/usr/bin/env bash
# run_hosts.sh HOSTFILE RANKS_PER_NODE -- CLLM_ARGS...: tensor parallelism across nodes.
#   cluster/run_hosts.sh hosts.txt 4 -- bench --model /shared/llama-2-7b
# HOSTFILE is Open MPI's format, one "hostname slots=N" line per node. The same cllm binary and
# checkpoint path must exist on every node (a shared filesystem); every rank reads only its slice.
# Ranks fill a node before the next (--map-by ppr:RANKS_PER_NODE:node), each bound to its share of
# the node's cores. Rank 0 (first host) prints; the others stay silent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
hostfile="${1:?usage: run_hosts.sh HOSTFILE RANKS_PER_NODE -- CLLM_ARGS...}"
per_node="${2:?usage: run_hosts.sh HOSTFILE RANKS_PER_NODE -- CLLM_ARGS...}"; shift 2
[ "${1:-}" = "--" ] && shift
cllm="${CLLM_BUILD:-$here/../build}/cllm"
nodes=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# SIGTERM to mpirun (scancel, systemd, docker stop) reaches the ranks this many seconds later and
# SIGKILL as long after that: `cllm serve` drains in that window (>= its --grace, default 30).
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-35}"
source "$here/nccl_env.sh"
exec mpirun -np $(( nodes * per_node )) --hostfile "$hostfile" --map-by "ppr:$per_node:node:PE=${CLLM_CORES_PER_RANK:-1}" \
  --bind-to core "${mpi_env_args[@]}" "$cllm" "$@"
