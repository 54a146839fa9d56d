#!/usr/bin/env bash
# The whole CLLM pipeline, end to end: base model -> Jacobi trajectories -> consistency training ->
# evaluation of base vs CLLM (Jacobi tokens/iteration and decode speedup over AR, both measured by
# `cllm generate --decode both`, which also checks that Jacobi reproduces AR).
#
#   training/pipeline.sh --prompts FILE --work DIR [--gguf FILE | --hf-dir DIR] [--block 16]
#       [--max-new-tokens 256] [--steps 0] [--lr 2e-5] [--device cpu|cuda] [--chat] [--bf16]
#       [--eval-prompts FILE] [--eval-n 8] [--eval-tokens 128] [--augment] [--nproc 1]
#
# Default model: models/SmolLM2-135M-Instruct.Q4_1.gguf (launch/fetch_model.sh), converted to an HF
# dir with `cllm convert`. --steps 0 trains one epoch. --nproc N trains with torchrun on N GPUs.
# Outputs in --work: base/ (HF dir), trajectories.h5 (resumed if present), cllm/ (trained HF dir,
# loss.csv), eval.tsv (one row per model and prompt) and the summary on stdout.
# Env: CLLM_BIN (default build/cllm), PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cllm="${CLLM_BIN:-$root/build/cllm}"
python="${PYTHON:-python3}"

gguf="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" hf_dir="" prompts="" work="" block=16 max_new=256
steps=0 lr=2e-5 device=cpu chat=() bf16=() augment=() eval_prompts="" eval_n=8 eval_tokens=128 nproc=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gguf) gguf="$2"; shift 2 ;;
    --hf-dir) hf_dir="$2"; shift 2 ;;
    --prompts) prompts="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --block) block="$2"; shift 2 ;;
    --max-new-tokens) max_new="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --chat) chat=(--chat); shift ;;
    --bf16) bf16=(--bf16); shift ;;
    --augment) augment=(--augment); shift ;;
    --eval-prompts) eval_prompts="$2"; shift 2 ;;
    --eval-n) eval_n="$2"; shift 2 ;;
    --eval-tokens) eval_tokens="$2"; shift 2 ;;
    --nproc) nproc="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "pipeline.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$prompts" && -n "$work" ]] || { echo "pipeline.sh: --prompts and --work are required" >&2; exit 2; }
[[ -x "$cllm" ]] || { echo "pipeline.sh: $cllm is missing: build cllm or set CLLM_BIN" >&2; exit 2; }
mkdir -p "$work"
step() { echo "=== $* ===" >&2; }

# 1. The base model as an HF safetensors dir (what the trainer reads).
base="$hf_dir"
if [[ -z "$base" ]]; then
  base="$work/base"
  [[ -f "$base/config.json" ]] || { step "convert $gguf"; "$cllm" convert --model "$gguf" --out "$base"; }
fi

# 2. Trajectories (resumed when the file exists).
step "collect trajectories"
"$cllm" trajectories --model "$base" --prompts "$prompts" --out "$work/trajectories.h5" --block "$block" \
  --max-new-tokens "$max_new" --device "$device" "${chat[@]}" "${augment[@]}"

# 3. Consistency training.
step "train"
train=(-m training.train --model "$base" --trajectories "$work/trajectories.h5" --out "$work/cllm"
       --steps "$steps" --lr "$lr" --device "$device" "${bf16[@]}")
if [[ "$nproc" -gt 1 ]]; then
  (cd "$root" && "$python" -m torch.distributed.run --standalone --nproc_per_node "$nproc" "${train[@]}")
else
  (cd "$root" && "$python" "${train[@]}")
fi

# 4. Evaluation: the same prompts through base and CLLM, AR and Jacobi each.
step "evaluate"
eval_dir="$work/eval_prompts"
rm -rf "$eval_dir" && mkdir -p "$eval_dir"
# One file per prompt, so multi-line prompts (code) reach cllm generate unchanged.
"$python" - "${eval_prompts:-$prompts}" "$eval_n" "$eval_dir" <<'PY'
import json, os, sys
path, n, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prompts = []
for line in open(path, encoding="utf-8"):
    line = line.rstrip("\n")
    if not line.strip():
        continue
    if line.startswith("{"):
        obj = json.loads(line)
        if "prompt" in obj:
            line = obj["prompt"]
        else:  # {"messages": [...]}: the last user message (cllm generate --chat wraps it)
            line = [m["content"] for m in obj["messages"] if m["role"] == "user"][-1]
    prompts.append(line)
for i, p in enumerate(prompts[:n]):
    with open(os.path.join(out_dir, f"{i:04d}.txt"), "w", encoding="utf-8") as f:
        f.write(p)
PY
printf 'model\tprompt\tjacobi_tokens_per_iteration\tdecode_speedup\n' > "$work/eval.tsv"
for name in base cllm; do
  dir="$base"; [[ "$name" == cllm ]] && dir="$work/cllm"
  i=0
  for prompt_file in "$eval_dir"/*.txt; do
    out="$("$cllm" generate --model "$dir" --prompt "$(cat "$prompt_file")" --decode both --quiet --block "$block" \
            --max-new-tokens "$eval_tokens" --device "$device" "${chat[@]}")"
    tpi="$(sed -n 's/^\[jacobi\].* \([0-9.]*\) tokens\/iteration.*/\1/p' <<<"$out")"
    speedup="$(sed -n 's/^jacobi vs ar: decode speedup \([0-9.]*\)x.*/\1/p' <<<"$out")"
    [[ -n "$tpi" && -n "$speedup" ]] || { echo "pipeline.sh: cannot parse cllm generate output:" >&2; echo "$out" >&2; exit 1; }
    printf '%s\t%d\t%s\t%s\n' "$name" "$i" "$tpi" "$speedup" >> "$work/eval.tsv"
    i=$((i + 1))
  done
done
awk -F'\t' 'NR > 1 { t[$1] += $3; s[$1] += $4; n[$1]++ }
  END { for (m in n) printf "%s: %.3f Jacobi tokens/iteration, %.2fx decode speedup over AR (mean of %d prompts)\n", m, t[m] / n[m], s[m] / n[m], n[m] }' \
  "$work/eval.tsv" | sort
