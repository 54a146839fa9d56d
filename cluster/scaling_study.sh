#!/usr/bin/env bash
# The tensor-parallel scaling study (docs/benchmarks.md): `cllm bench` under mpirun on random-weight
# checkpoints of the LLaMA-2 shapes, one JSON per (model, TP), then tables and plots.
#
#   cluster/scaling_study.sh OUT_DIR [--models 7b,13b] [--tps 1,2,4] [--ns 1,16,32] [--context 512]
#       [--with-70b] [--device cuda] [--scratch DIR] [--random]
#
# --random benchmarks random:SHAPE weights made in memory (no checkpoint on disk, so the load time is
# that of generating the weights, not of reading them).
# --with-70b adds the LLaMA-2-70B shape at TP = 4 (140 GB of bf16 on disk in --scratch, written once).
# Each run's JSON holds ms per forward at every n, the per-rank floor (this rank's weight + KV bytes
# over its own GPU's read bandwidth, measured in the same run) and the load time of the slowest rank
# (from the page cache: the checkpoint was just written). cluster/plot_scaling.py turns them into
# OUT_DIR/scaling.md (ms per iteration, x floor, scaling efficiency, load time) and scaling.png.
# The all-reduce share needs a run with collectives off, which the CUDA TP path does not offer yet;
# cluster/cost_model.py gives the modelled share.
# Env: CLLM_BIN (default build/cllm), MPIRUN_ARGS (extra mpirun flags, e.g. a hostfile).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cllm="${CLLM_BIN:-$root/build/cllm}"
[[ $# -ge 1 && "$1" != -* ]] || { sed -n '2,19p' "$0"; exit 2; }
out="$1"; shift
models=7b,13b tps=1,2,4 ns=1,16,32 context=512 with70=0 device=cuda scratch="${TMPDIR:-/tmp}/cllm_scaling" random=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --tps) tps="$2"; shift 2 ;;
    --ns) ns="$2"; shift 2 ;;
    --context) context="$2"; shift 2 ;;
    --with-70b) with70=1; shift ;;
    --device) device="$2"; shift 2 ;;
    --scratch) scratch="$2"; shift 2 ;;
    --random) random=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "scaling_study.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$cllm" ]] || { echo "scaling_study.sh: $cllm is missing: build cllm or set CLLM_BIN" >&2; exit 2; }
mkdir -p "$out" "$scratch"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck source=/dev/null
source "$root/cluster/nccl_env.sh"

runs=()
for m in ${models//,/ }; do for tp in ${tps//,/ }; do runs+=("$m:$tp"); done; done
[[ $with70 == 1 ]] && runs+=("70b:4")
for run in "${runs[@]}"; do
  m="${run%%:*}" tp="${run##*:}"
  ckpt="$scratch/$m"
  [[ $random == 1 ]] && ckpt="random:$m"
  if [[ $random == 0 && ! -f "$ckpt/config.json" ]]; then
    echo "=== writing random $m checkpoint to $ckpt ===" >&2
    "$cllm" random-model --shape "$m" --dtype bf16 --out "$ckpt"
  fi
  echo "=== $m at TP=$tp ===" >&2
  # shellcheck disable=SC2086
  mpirun -np "$tp" "${mpi_env_args[@]}" ${MPIRUN_ARGS:-} "$cllm" bench --device "$device" --model "$ckpt" --ns "$ns" \
    --contexts "$context" --tokens 32 --reps 10 --json "$out/${m}_tp${tp}.json" 2>&1 | tee "$out/${m}_tp${tp}.log"
done
python3 "$root/cluster/plot_scaling.py" "$out"
