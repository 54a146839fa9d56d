# Sourced by run_node.sh, run_hosts.sh, slurm_tp.sbatch and scaling_study.sh. NCCL settings for
# tensor parallelism on GPUs (--device cuda); the CPU backend ignores them. Values already in the
# environment win; uncomment the site-specific ones for multi-node runs.
# After sourcing, mpi_env_args holds "-x NAME" for every NCCL_* and CLLM_* variable, so that
# mpirun passes them to the remote ranks (srun passes the environment itself).
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"                 # INFO to see the rings and transports chosen
# export NCCL_SOCKET_IFNAME=ib0                          # bootstrap interface between nodes
# export NCCL_IB_HCA=mlx5                                # InfiniBand adapters to use
# export NCCL_NVLS_ENABLE=0                              # leave NVLink multicast (NVLS) off
mpi_env_args=()
while IFS='=' read -r name _; do
  case "$name" in NCCL_*|CLLM_*) mpi_env_args+=(-x "$name") ;; esac
done < <(env)
