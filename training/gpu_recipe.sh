#!/usr/bin/env bash
# The whole CLLM experiment in one time budget (docs/training.md): SmolLM2-135M-Instruct (GGUF,
# dequantized by `cllm convert`) -> Jacobi trajectories of the stdlib prompts (training/prompts/,
# made by training/make_prompts.py), collected by --procs cllm processes sharing the GPU -> packed
# consistency + AR training -> base vs CLLM on the held-out prompts (training/evaluate.py).
#
#   training/gpu_recipe.sh --out DIR [--budget 480] [--device cuda] [--procs 8] [--work DIR]
#       [--gguf FILE] [--prompts-limit 0] [--max-new-tokens 128] [--block 16] [--lr 2e-4]
#       [--batch-size 32] [--states 4] [--epochs 8] [--eval-n 100] [--eval-tokens 128]
#       [--windows blockwise] [--eval-reserve 120] [--smoke]
#       [--hf-dir DIR (instead of --gguf)] [--train-prompts FILE] [--eval-prompts FILE] [--random-model]
#
# --budget is the wall-clock seconds of the whole script. --eval-reserve seconds are kept for the
# evaluation (100 prompts x 128 tokens, AR + blockwise Jacobi, both models: ~100 s on an H200;
# --windows blockwise,sliding adds sliding-window Jacobi, ~40 s more); of the rest, half goes to
# the collection (it stops at its deadline and the shards hold every prompt finished by then) and
# what is left to training (its cosine schedule follows the clock). --smoke: a 2-minute check of
# every step (16 prompts, 32 tokens, 4 eval prompts). --random-model: no GGUF needed, a random model
# of SmolLM2's shape (`cllm random-model --shape 135m`) and the prompts as plain text (it has no
# chat template): with --smoke, a check of the GPU paths before the model file is on the machine.
# DIR receives at most 8 files: summary.md, eval.json, eval.md, eval.png, loss.csv, loss.png,
# recipe.log, records.tar.gz (every JSON line of the evaluation). Big files stay in --work
# (default /tmp/cllm_recipe, /tmp/cllm_recipe_smoke with --smoke): base/ and cllm/ (HF dirs),
# traj_*.h5 (re-running with the same settings resumes them).
# Env: CLLM_BIN (default build-gpu/cllm if it exists, else build/cllm), PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
cllm="${CLLM_BIN:-}"
[[ -n "$cllm" ]] || { cllm="$root/build-gpu/cllm"; [[ -x "$cllm" ]] || cllm="$root/build/cllm"; }
python="${PYTHON:-python3}"

out="" work="" gguf="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" device=cuda smoke=0 random_model=0
hf_dir="" train_prompts="$root/training/prompts/stdlib_train.jsonl.gz"
eval_prompts="$root/training/prompts/stdlib_eval.jsonl.gz"
budget="" procs="" limit="" max_new="" block=16 lr=2e-4 batch=32 states=4 epochs=8 eval_n="" eval_tokens=""
windows="" eval_reserve=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --gguf) gguf="$2"; shift 2 ;;
    --hf-dir) hf_dir="$2"; shift 2 ;;
    --train-prompts) train_prompts="$2"; shift 2 ;;
    --eval-prompts) eval_prompts="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    --prompts-limit) limit="$2"; shift 2 ;;
    --max-new-tokens) max_new="$2"; shift 2 ;;
    --block) block="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --states) states="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --eval-n) eval_n="$2"; shift 2 ;;
    --eval-tokens) eval_tokens="$2"; shift 2 ;;
    --windows) windows="$2"; shift 2 ;;
    --eval-reserve) eval_reserve="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --random-model) random_model=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_recipe.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "gpu_recipe.sh: --out DIR is required" >&2; exit 2; }
# Defaults (budget procs limit max_new eval_n eval_tokens windows eval_reserve work): the full run or
# the smoke test's small sizes; explicit flags win over both.
# (The smoke test has its own work dir: its shards, collected at other settings, cannot be resumed.)
if [[ $smoke == 1 ]]; then d=(120 8 16 32 4 32 blockwise 30 /tmp/cllm_recipe_smoke)
else d=(480 8 0 128 100 128 blockwise 120 /tmp/cllm_recipe); fi
budget=${budget:-${d[0]}} procs=${procs:-${d[1]}} limit=${limit:-${d[2]}} max_new=${max_new:-${d[3]}}
eval_n=${eval_n:-${d[4]}} eval_tokens=${eval_tokens:-${d[5]}} windows=${windows:-${d[6]}}
eval_reserve=${eval_reserve:-${d[7]}} work=${work:-${d[8]}}
[[ -x "$cllm" ]] || { echo "gpu_recipe.sh: $cllm is missing: build cllm or set CLLM_BIN" >&2; exit 2; }
[[ -n "$hf_dir" || -f "$gguf" || $random_model == 1 ]] || { echo "gpu_recipe.sh: $gguf is missing (launch/fetch_model.sh, or --gguf)" >&2; exit 2; }
mkdir -p "$out" "$work"
# Absolute paths: the Python steps run from the repository root.
out="$(cd "$out" && pwd)" work="$(cd "$work" && pwd)" cllm="$(cd "$(dirname "$cllm")" && pwd)/$(basename "$cllm")"
if [[ $random_model == 1 ]]; then
  hf_dir="$work/random135m"
  [[ -f "$hf_dir/config.json" ]] || "$cllm" random-model --shape 135m --out "$hf_dir" > /dev/null
elif [[ -n "$hf_dir" ]]; then
  hf_dir="$(cd "$hf_dir" && pwd)"
else
  gguf="$(cd "$(dirname "$gguf")" && pwd)/$(basename "$gguf")"
fi
log="$out/recipe.log"
: > "$log"
say() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*" | tee -a "$log" >&2; }
left() { echo $((budget - (SECONDS - start))); }
say "cllm $cllm, device $device, budget ${budget}s, work $work, out $out"
say "settings: procs $procs, prompts-limit $limit, max-new-tokens $max_new, block $block, lr $lr, batch $batch prompts," \
    "states $states, epochs <= $epochs, eval $eval_n x $eval_tokens tokens ($windows), eval reserve ${eval_reserve}s"
[[ "$device" != cuda ]] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log" >&2 || true

# 1. Prompts (committed, so that every machine trains on the same ones) and the base model.
# zcat -f: gzipped or plain prompts files.
zcat -f "$train_prompts" > "$work/train_all.jsonl"
zcat -f "$eval_prompts" > "$work/eval.jsonl"
if [[ $random_model == 1 ]]; then  # chat messages -> {"prompt": the user's text}, used as is
  for f in "$work/train_all.jsonl" "$work/eval.jsonl"; do
    "$python" -c 'import json, sys
for line in sys.stdin:
    print(json.dumps({"prompt": json.loads(line)["messages"][-1]["content"]}))' < "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  done
fi
if [[ "$limit" -gt 0 ]]; then head -n "$limit" "$work/train_all.jsonl"; else cat "$work/train_all.jsonl"; fi > "$work/train.jsonl"
base="${hf_dir:-$work/base}"
[[ -f "$base/config.json" ]] || "$cllm" convert --model "$gguf" --out "$base" >> "$log" 2>&1
say "prompts: $(wc -l < "$work/train.jsonl") training, $(wc -l < "$work/eval.jsonl") held out; base model in $base"

# 2. Trajectories: --procs processes, one shard file each, all stopping at the collection deadline.
collect_s=$(( ($(left) - eval_reserve) / 2 ))
[[ $collect_s -ge 10 ]] || { say "budget too small: ${collect_s}s for the collection"; exit 2; }
say "collect: $procs processes, ${collect_s}s"
keep_all=(); [[ $random_model == 0 ]] || keep_all=(--max-repeat 0)  # a random model repeats itself
pids=()
for ((i = 0; i < procs; i++)); do
  "$cllm" trajectories --model "$base" --prompts "$work/train.jsonl" --out "$work/traj_$i.h5" --block "$block" \
    --max-new-tokens "$max_new" --augment "${keep_all[@]}" --shard "$i/$procs" --max-seconds "$collect_s" --device "$device" \
    --threads 2 > "$work/collect_$i.out" 2> "$work/collect_$i.err" &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { failed=$((failed + 1)); say "shard $i failed:"; tail -3 "$work/collect_$i.err" | tee -a "$log" >&2; }
done
cat "$work"/collect_*.out >> "$log"
shards=()
for ((i = 0; i < procs; i++)); do [[ -s "$work/collect_$i.out" ]] && shards+=("$work/traj_$i.h5"); done
[[ ${#shards[@]} -gt 0 ]] || { say "no shard finished: see $work/collect_*.err"; exit 1; }
summary="$("$python" - "$work"/collect_*.out <<'PY'
import re, sys
k = d = a = r = t = it = 0
for path in sys.argv[1:]:
    m = re.search(r"(\d+) kept, (\d+) dropped .*?(\d+) already present, (\d+) left .*?kept: (\d+) tokens in (\d+) "
                  r"iterations", open(path).read())
    if m:
        k, d, a, r, t, it = (x + int(y) for x, y in zip((k, d, a, r, t, it), m.groups()))
print(f"{k} prompts kept, {d} dropped, {a} already present, {r} left; base Jacobi {t / max(1, it):.3f} "
      f"tokens/iteration over {t} tokens")
PY
)"
say "collect: done, $failed shards failed; $summary"

# 3. Training: the clock left minus the evaluation's reserve and a margin to load and save.
train_s=$(( $(left) - eval_reserve - 20 ))
[[ $train_s -ge 5 ]] || train_s=5
say "train: ${train_s}s"
# bf16 autocast on the GPU only: on a CPU it is ~20x slower than fp32.
precision=(--device cpu); [[ $device == cuda ]] && precision=(--device cuda --bf16)
(cd "$root" && "$python" -m training.train --model "$base" --trajectories "${shards[@]}" --out "$work/cllm" --pack \
  --batch-size "$batch" --micro-batch 16 --states-per-example "$states" --epochs "$epochs" \
  --max-seconds "$train_s" --lr "$lr" "${precision[@]}" --log-every 10 --plot) 2>&1 | tee -a "$log" >&2
cp "$work/cllm/loss.csv" "$out/"
[[ ! -f "$work/cllm/loss.png" ]] || cp "$work/cllm/loss.png" "$out/"

# 4. Evaluation: each model loaded once; AR and Jacobi on the same engine; quality under the base.
say "evaluate: $eval_n held-out prompts x $eval_tokens tokens ($(left)s left)"
(cd "$root" && "$python" -m training.evaluate --base "$base" --cllm "$work/cllm" --prompts "$work/eval.jsonl" \
  --out "$work/eval" --n "$eval_n" --max-new-tokens "$eval_tokens" --block "$block" --windows "$windows" \
  --device "$device" --cllm-bin "$cllm") 2>&1 | tee -a "$log" >&2
for f in eval.json eval.md eval.png; do [[ ! -f "$work/eval/$f" ]] || cp "$work/eval/$f" "$out/"; done
tar -czf "$out/records.tar.gz" -C "$work/eval" $(cd "$work/eval" && ls *.jsonl *.log)

{
  echo "# CLLM recipe result"
  echo
  echo "$((SECONDS - start))s of a ${budget}s budget; device $device."
  echo
  grep -E '^\[ *[0-9]+s\] (settings|prompts|collect|train|evaluate)' "$log" | sed 's/^/    /'
  echo
  grep -E '^(trained|step [0-9]+/)' "$log" | tail -3 | sed 's/^/    /'
  echo
  cat "$work/eval/eval.md"
} > "$out/summary.md"
say "done: $out/summary.md"
cat "$out/summary.md"
