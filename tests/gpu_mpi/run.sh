#!/usr/bin/env bash
# GPU tensor-parallel and communicator tests, and the all-reduce bench. Builds nothing: the targets
# cllm_gpu_tp_tests, cllm_gpu_mpi_tests, cllm_gpu_mpi_fault and cllm_bench_allreduce must exist in
# BUILD_DIR.
#
#   tests/gpu_mpi/run.sh OUT_DIR [BUILD_DIR]     BUILD_DIR defaults to <repo>/build-gpu
#
# 1. The sharded CUDA model against the one-rank one (cllm_gpu_tp_tests) at -np 2, 3 (SmolLM2) and
#    4, on any GPU count: with fewer GPUs than ranks the ranks share GPUs through the host-staged
#    all-reduce, and the test says that it skipped nccl and ipc.
# 2. The communicators, one rank per GPU, at -np 2 (and 4 when 4 GPUs exist); with fewer than 2
#    GPUs they are skipped, saying so.
# Logs go to OUT_DIR/gpu_mpi_*.log. Exit status 1 when any step failed.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="${1:?usage: run.sh OUT_DIR [BUILD_DIR]}"
BUILD="${2:-$REPO/build-gpu}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
export NCCL_NVLS_ENABLE=0   # NVLink multicast must stay off on these shared hosts
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
for t in cllm_gpu_tp_tests cllm_gpu_mpi_tests cllm_gpu_mpi_fault cllm_bench_allreduce; do
  [ -x "$BUILD/$t" ] || { echo "gpu_mpi: $BUILD/$t missing (build it first)"; exit 1; }
done
MPIRUN=(mpirun --allow-run-as-root --bind-to none --oversubscribe -x NCCL_NVLS_ENABLE)
FAILED=0
# step NAME CMD...: output to OUT_DIR/gpu_mpi_NAME.log; prints ok/FAILED and the log's tail.
step() {
  local name=$1; shift
  local log="$OUT_DIR/gpu_mpi_$name.log"
  timeout 600 "$@" >"$log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then echo "gpu_mpi $name: ok"; else
    echo "gpu_mpi $name: FAILED (rc $rc, $log)"; tail -n 15 "$log" | sed "s/^/   /"; FAILED=1; fi
}
for np in 2 3 4; do
  step "tp_np$np" "${MPIRUN[@]}" -np "$np" "$BUILD/cllm_gpu_tp_tests" --gtest_output="xml:$OUT_DIR/gpu_mpi_tp_np$np.xml"
  grep -h '^\[ tp ' "$OUT_DIR/gpu_mpi_tp_np$np.log" | sed "s/^/   /"
done
if [ "$NGPU" -lt 2 ]; then
  echo "gpu_mpi: $NGPU GPU(s): the communicator tests and the all-reduce bench need 2; skipped"
  exit $FAILED
fi
NPS=(2); [ "$NGPU" -ge 4 ] && NPS+=(4)
for np in "${NPS[@]}"; do
  step "tests_np$np" "${MPIRUN[@]}" -np "$np" "$BUILD/cllm_gpu_mpi_tests" --gtest_output="xml:$OUT_DIR/gpu_mpi_tests_np$np.xml"
done
# Failure semantics at a 3 s deadline: 40 s covers start-up (NCCL init, IPC mapping) + deadline + abort.
EXPECT="$REPO/tests/mpi/expect_abort.sh"
for path in nccl ipc; do
  step "skip_$path" "$EXPECT" 40 "rank 0: all-reduce in layer 3 attention timed out after 3 s" \
      "${MPIRUN[@]}" -np 2 "$BUILD/cllm_gpu_mpi_fault" skip "$path" 3
done
step kill_nccl "$EXPECT" 40 "process rank 1 .*(signal 9|Killed)|rank 0: .*layer 3 attention (timed out|.*NCCL error)" \
    "${MPIRUN[@]}" -np 2 "$BUILD/cllm_gpu_mpi_fault" kill nccl 3
for np in "${NPS[@]}"; do
  step "bench_np$np" "${MPIRUN[@]}" -np "$np" "$BUILD/cllm_bench_allreduce"
  cat "$OUT_DIR/gpu_mpi_bench_np$np.log"
done
exit $FAILED
