#!/usr/bin/env bash
# Server tests: starts `build/cllm serve` (default model) on a free loopback port, waits for
# /health, runs pytest on tests/server, and always stops the server. CLLM_SERVE_RANKS=N runs it
# under mpirun -np N (SmolLM2-135M has 9 heads: N must divide 9, so the default is 1 rank;
# test_lifecycle uses N too). CLLM_BIN overrides the binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CLLM_BIN="${CLLM_BIN:-$root/build/cllm}" CLLM_SERVE_RANKS="${CLLM_SERVE_RANKS:-1}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet openai
python3 -c "import pytest, requests" 2>/dev/null || python3 -m pip install --quiet pytest requests
# lm-evaluation-harness with its API backends (test_lm_eval.py).
python3 -c "import lm_eval, tenacity, aiohttp" 2>/dev/null || python3 -m pip install --quiet "lm-eval[api]"

export CLLM_TEST_TMP="$(mktemp -d)"
export CLLM_API_KEY="test-key-$RANDOM"
log="$CLLM_TEST_TMP/server.log"
cmd=("$CLLM_BIN" serve --port 0 --api-key "$CLLM_API_KEY" --max-batch 32 --max-queue 64 --block 8)
if [ "$CLLM_SERVE_RANKS" -gt 1 ]; then cmd=(mpirun -np "$CLLM_SERVE_RANKS" --oversubscribe "${cmd[@]}"); fi
"${cmd[@]}" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$CLLM_TEST_TMP"' EXIT

url=""
for _ in $(seq 240); do
  url="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)"
  if [ -n "$url" ] && curl -sf "$url/health" >/dev/null; then break; fi
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf "$url/health" >/dev/null || { cat "$log"; echo "server not ready" >&2; exit 1; }
export CLLM_SERVER_URL="$url"
set +e
python3 -m pytest -q -s -p no:cacheprovider "$root/tests/server" "$@"
status=$?
[ $status -eq 0 ] || tail -50 "$log"
exit $status
