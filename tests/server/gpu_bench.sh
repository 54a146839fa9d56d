#!/usr/bin/env bash
# The GPU serving benchmark (docs/benchmarks.md, "Serving on the H200"): `cllm serve --device cuda`
# on the LLaMA-2-7B shape with random weights (random:7b, nothing to load from disk) at each TP
# size, driven by tests/server/bench_serve.py with 1, 4, 16 and 64 concurrent streaming clients,
# AR and Jacobi. One JSON and one server log per TP size land in OUT_DIR.
#
#   tests/server/gpu_bench.sh OUT_DIR [--tps 1,2] [--concurrency 1,4,16,64] [--requests 2]
#       [--max-tokens 128] [--block 16]
#
# Env: CLLM_BIN (default build-gpu/cllm); CLLM_BENCH_MODEL (random:7b) and CLLM_BENCH_DEVICE (cuda) for
# a smoke test elsewhere. The server runs with 64 KV slots of 1024 rows (32 GB of
# bf16 KV at 7B next to 13.5 GB of weights on one H200; half of each per GPU at TP=2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cllm="${CLLM_BIN:-$root/build-gpu/cllm}"
model="${CLLM_BENCH_MODEL:-random:7b}" device="${CLLM_BENCH_DEVICE:-cuda}"
[[ $# -ge 1 && "$1" != -* ]] || { sed -n '2,13p' "$0"; exit 2; }
out="$1"; shift
tps=1,2 conc=1,4,16,64 requests=2 max_tokens=128 block=16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tps) tps="$2"; shift 2 ;;
    --concurrency) conc="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    --max-tokens) max_tokens="$2"; shift 2 ;;
    --block) block="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_bench.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
port=8391
for tp in ${tps//,/ }; do
  launch=("$cllm")
  [[ $tp -gt 1 ]] && launch=(mpirun -np "$tp" --bind-to none "$cllm")
  echo "=== serve random:7b at TP=$tp ===" >&2
  "${launch[@]}" serve --model "$model" --device "$device" --port "$port" --max-batch 64 --max-queue 256 \
    --max-context 1024 --block "$block" >"$out/serve_tp$tp.log" 2>&1 &
  server=$!
  for _ in $(seq 1 180); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$out/serve_tp$tp.log" >&2; exit 1; }
    sleep 1
  done
  # The engine-alone comparison (cllm generate) runs at TP=1 only: it needs the GPU the server holds.
  gen=()
  [[ $tp == 1 ]] && gen=(--generate-bin "$cllm" --generate-args "--model $model --device $device")
  python3 "$root/tests/server/bench_serve.py" --url "http://127.0.0.1:$port" --concurrency "$conc" \
    --requests "$requests" --max-tokens "$max_tokens" --modes ar,jacobi --block "$block" \
    --json "$out/serve_tp$tp.json" "${gen[@]}" || { kill -TERM "$server"; wait "$server" || true; exit 1; }
  # SIGTERM to rank 0 drains and stops every rank (mpirun itself would kill the job instead).
  kill -TERM "$(grep -o 'pid [0-9]*' "$out/serve_tp$tp.log" | head -1 | cut -d' ' -f2)"
  wait "$server" || echo "gpu_bench.sh: the TP=$tp server exited with $?" >&2
  port=$((port + 1))
done
