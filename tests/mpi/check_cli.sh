#!/usr/bin/env bash
# check_cli.sh MPIEXEC NP_FLAG CLLM MODEL_DIR: `cllm generate` and `cllm bench` under mpirun -np 2.
# generate --decode both exits 3 unless Jacobi and AR agree; only rank 0 prints (one stats block),
# and it reports every rank's load.
set -euo pipefail
mpiexec="$1"; np="$2"; cllm="$3"; model="$4"
run() { "$mpiexec" "$np" 2 --oversubscribe "$cllm" "$@" 2>&1; }
out="$(run generate --model "$model" --prompt "tensor parallel" --max-new-tokens 24 --block 8 --decode both)"
echo "$out"
[ "$(grep -c '^jacobi vs ar: .* outputs identical' <<<"$out")" -eq 1 ] || { echo "check_cli: FAIL: want one agreeing stats line"; exit 1; }
grep -q '^rank 1: loaded' <<<"$out" || { echo "check_cli: FAIL: rank 0 did not report rank 1's load"; exit 1; }
[ "$(grep -c '^\[ar\]' <<<"$out")" -eq 1 ] || { echo "check_cli: FAIL: want the AR stats printed once"; exit 1; }
out="$(run bench --model "$model" --ns 1,4 --contexts 16 --tokens 8 --reps 1)"
echo "$out"
grep -q '^tensor parallel: 2 ranks' <<<"$out" || { echo "check_cli: FAIL: bench did not run over 2 ranks"; exit 1; }
[ "$(grep -c '^AR decode:' <<<"$out")" -eq 1 ] || { echo "check_cli: FAIL: want the AR figure printed once"; exit 1; }
echo "check_cli: ok"
