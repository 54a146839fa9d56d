#!/usr/bin/env bash
# The whole CLLM experiment (docs/training.md): SmolLM2-135M-Instruct (GGUF, dequantized by `cllm
# convert`) -> Jacobi trajectories of the stdlib and packages prompts (training/prompts/, made by
# training/make_prompts.py), collected by `cllm trajectories` on the GPU -> packed consistency + AR
# training -> base vs CLLM on the held-out prompts (training/evaluate.py) and through `cllm serve`
# (training/serve_speedup.py). In one call, or split over several that share --work (--stages).
#
#   training/gpu_recipe.sh --out DIR [--stages collect,train,evaluate,serve] [--work DIR] [--budget 900]
#       [--collect-seconds S] [--train-seconds S] [--device cuda] [--procs N] [--collect-batch N]
#       [--gguf FILE] [--prompts-limit 0] [--max-new-tokens 128] [--block 16] [--lr 3e-4]
#       [--batch-size 32] [--states 4] [--epochs 8] [--eval-n 100] [--eval-tokens 128]
#       [--windows blockwise,sliding] [--train-eval-n 30] [--eval-reserve 75]
#       [--serve-n 30] [--serve-windows blockwise] [--serve-reserve 25] [--smoke]
#       [--hf-dir DIR (instead of --gguf)] [--train-prompts FILE[,FILE...]] [--eval-prompts FILE] [--random-model]
#
# --stages: which of collect, train, evaluate, serve this call runs (always in that order). Each
# reads what earlier ones left in --work: the base model (made by collect: base/ from the GGUF,
# random135m/ with --random-model; --hf-dir is used in place), the trajectory shards traj_*.h5
# (shards.list), the trained model cllm/; a stage whose input is missing is refused at once.
# Collect: --procs `cllm trajectories` processes (one shard file each), each collecting
# --collect-batch prompts at once (`--batch N`, passed only when N > 1; default 64 on cuda, 1 on
# cpu; --procs defaults to 2 on cuda with N > 1, else 8); shards resume, so a later call continues
# the collection. Train: `python3 -m training.train` from the base model on all shards (cllm/ is
# overwritten). Evaluate: base vs CLLM on --eval-n held-out prompts x --eval-tokens (AR + every
# --windows Jacobi), and the CLLM on the first --train-eval-n training prompts (0: not), rows
# "cllm (training prompts)". Serve: `cllm serve` per model and --serve-windows window, --serve-n
# held-out prompts one request at a time (serve.json; its table goes into eval.md and summary.md).
# Time: --budget is the wall-clock seconds of this call. Evaluate and serve have their reserves
# (--eval-reserve, --serve-reserve) when they run in this call; collect takes half of the rest when
# train runs too, and train what is left then (its cosine schedule follows the clock). Explicit
# --collect-seconds / --train-seconds replace that split (--collect-seconds 0: until every prompt is
# done); they are refused if with the reserves they exceed --budget. --smoke: a 2-minute check of
# every step (16 prompts, 32 tokens, 4 eval prompts, 2 training and 2 served prompts).
# --random-model: no GGUF needed, a random model of SmolLM2's shape (`cllm random-model --shape
# 135m`) and the prompts as plain text (it has no chat template): with --smoke, a check of the GPU
# paths before the model file is on the machine.
# DIR receives summary.md, eval.json, eval.md, eval.png, loss.csv, loss.png, recipe.log and
# records.tar.gz (every JSON line of the evaluation, serve.json, the collection's logs,
# recipe_history.log). recipe.log is this call's log; every call appends its log to
# WORK/recipe_history.log and summary.md lists the earlier calls' collect and train lines. Big files
# stay in --work (default /tmp/cllm_recipe, /tmp/cllm_recipe_smoke with --smoke).
# --budget defaults to 900 s (15 minutes on one GPU); the stages of a longer run can be split over
# several calls that share --work.
# The measured run (docs/training.md, 2026-11-29, one H200, ~545 s): the defaults with
#   training/gpu_recipe.sh --out DIR --budget 575 --collect-seconds 70 --train-seconds 380
# Env: CLLM_BIN (default build-gpu/cllm if it exists, else build/cllm), PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
invocation="$*"
cllm="${CLLM_BIN:-}"
[[ -n "$cllm" ]] || { cllm="$root/build-gpu/cllm"; [[ -x "$cllm" ]] || cllm="$root/build/cllm"; }
python="${PYTHON:-python3}"

out="" work="" gguf="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" device=cuda smoke=0 random_model=0
# Training prompts: the standard library's (the held-out split's domain) first, so that a collection
# cut short by its deadline has them, then the Debian packages' (training/make_prompts.py --unlike).
hf_dir="" train_prompts="$root/training/prompts/stdlib_train.jsonl.gz,$root/training/prompts/packages_train.jsonl.gz"
eval_prompts="$root/training/prompts/stdlib_eval.jsonl.gz"
budget="" procs="" limit="" max_new="" block=16 lr=3e-4 batch=32 states=4 epochs=8 eval_n="" eval_tokens=""
windows="" eval_reserve="" stages=collect,train,evaluate,serve collect_seconds="" train_seconds=""
collect_batch="" train_eval_n="" serve_n="" serve_windows=blockwise serve_reserve=""
while [[ $# -gt 0 ]]; do
  [[ $1 == --smoke || $1 == --random-model || $1 == -h || $1 == --help || $# -ge 2 ]] || {
    echo "gpu_recipe.sh: $1 needs a value (see --help)" >&2; exit 2; }
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    --gguf) gguf="$2"; shift 2 ;;
    --hf-dir) hf_dir="$2"; shift 2 ;;
    --train-prompts) train_prompts="$2"; shift 2 ;;
    --eval-prompts) eval_prompts="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --collect-seconds) collect_seconds="$2"; shift 2 ;;
    --train-seconds) train_seconds="$2"; shift 2 ;;
    --procs) procs="$2"; shift 2 ;;
    --collect-batch) collect_batch="$2"; shift 2 ;;
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
    --train-eval-n) train_eval_n="$2"; shift 2 ;;
    --eval-reserve) eval_reserve="$2"; shift 2 ;;
    --serve-n) serve_n="$2"; shift 2 ;;
    --serve-windows) serve_windows="$2"; shift 2 ;;
    --serve-reserve) serve_reserve="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --random-model) random_model=1; shift ;;
    -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
    *) echo "gpu_recipe.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "gpu_recipe.sh: --out DIR is required" >&2; exit 2; }
# Defaults (budget limit max_new eval_n eval_tokens windows eval_reserve work train_eval_n serve_n
# serve_reserve): the full run or the smoke test's small sizes; explicit flags win over both.
# (The smoke test has its own work dir: its shards, collected at other settings, cannot be resumed.)
if [[ $smoke == 1 ]]; then d=(120 16 32 4 32 blockwise 30 /tmp/cllm_recipe_smoke 2 2 20)
else d=(900 0 128 100 128 blockwise,sliding 75 /tmp/cllm_recipe 30 30 25); fi
budget=${budget:-${d[0]}} limit=${limit:-${d[1]}} max_new=${max_new:-${d[2]}} eval_n=${eval_n:-${d[3]}}
eval_tokens=${eval_tokens:-${d[4]}} windows=${windows:-${d[5]}} eval_reserve=${eval_reserve:-${d[6]}}
work=${work:-${d[7]}} train_eval_n=${train_eval_n:-${d[8]}} serve_n=${serve_n:-${d[9]}}
serve_reserve=${serve_reserve:-${d[10]}}
# One process collecting 64 prompts at once fills the GPU better than 8 processes of one prompt.
if [[ $device == cuda ]]; then collect_batch=${collect_batch:-64}; else collect_batch=${collect_batch:-1}; fi
if [[ $device == cuda && $collect_batch -gt 1 ]]; then procs=${procs:-2}; else procs=${procs:-8}; fi

bad() { echo "gpu_recipe.sh: $*" >&2; exit 2; }
for vf in budget:budget procs:procs collect_batch:collect-batch limit:prompts-limit max_new:max-new-tokens block:block \
          eval_n:eval-n eval_tokens:eval-tokens eval_reserve:eval-reserve train_eval_n:train-eval-n serve_n:serve-n \
          serve_reserve:serve-reserve; do
  v=${vf%%:*}
  [[ ${!v} =~ ^[0-9]+$ ]] || bad "--${vf#*:} must be a non-negative integer, got '${!v}'"
done
[[ -z $collect_seconds || $collect_seconds =~ ^[0-9]+$ ]] || bad "--collect-seconds must be an integer >= 0"
[[ -z $train_seconds || $train_seconds =~ ^[1-9][0-9]*$ ]] || bad "--train-seconds must be a positive integer"
[[ $procs -ge 1 && $collect_batch -ge 1 ]] || bad "--procs and --collect-batch must be >= 1"
stages="${stages// /}"
IFS=, read -ra stage_list <<< "$stages"
[[ ${#stage_list[@]} -gt 0 ]] || bad "--stages is empty (collect, train, evaluate, serve)"
for s in "${stage_list[@]}"; do
  [[ $s == collect || $s == train || $s == evaluate || $s == serve ]] || bad "unknown stage '$s' in --stages" \
    "(collect, train, evaluate, serve)"
done
for w in ${windows//,/ } ${serve_windows//,/ }; do
  [[ $w == blockwise || $w == sliding ]] || bad "unknown window '$w' in --windows or --serve-windows (blockwise, sliding)"
done
has() { [[ ",$stages," == *",$1,"* ]]; }
# The canonical order, whatever the order given.
stages="$(for s in collect train evaluate serve; do if has $s; then printf '%s,' $s; fi; done)"; stages="${stages%,}"
reserve=0
has evaluate && reserve=$((reserve + eval_reserve))
has serve && reserve=$((reserve + serve_reserve))
# Explicit times win over the split, but this call must still fit in its budget.
explicit=$reserve
has collect && explicit=$((explicit + ${collect_seconds:-0}))
has train && [[ -n $train_seconds ]] && explicit=$((explicit + train_seconds + 20))
[[ $explicit -le $budget ]] || bad "--collect-seconds ${collect_seconds:-(split)} + --train-seconds" \
  "${train_seconds:-(split)} (+20 s to load and save) + the reserves of the stages run here (${reserve}s) is" \
  "${explicit}s, more than --budget ${budget}s: raise --budget or lower them"

[[ -x "$cllm" ]] || bad "$cllm is missing: build cllm or set CLLM_BIN"
mkdir -p "$out" "$work"
# Absolute paths: the Python steps run from the repository root.
out="$(cd "$out" && pwd)" work="$(cd "$work" && pwd)" cllm="$(cd "$(dirname "$cllm")" && pwd)/$(basename "$cllm")"
if [[ $random_model == 1 ]]; then
  base="$work/random135m"
elif [[ -n "$hf_dir" ]]; then
  [[ -d "$hf_dir" ]] || bad "--hf-dir $hf_dir is not a directory"
  base="$(cd "$hf_dir" && pwd)"
else
  base="$work/base"
fi
history="$work/recipe_history.log"
# This call's results only: what an earlier call left in --out goes (its story is in the history).
for f in summary.md eval.json eval.md eval.png loss.csv loss.png recipe.log records.tar.gz; do rm -f "$out/$f"; done
log="$out/recipe.log"
: > "$log"
say() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*" | tee -a "$log" >&2; }
die() { say "$*"; exit 2; }
left() { echo $((budget - (SECONDS - start))); }
on_exit() {
  local rc=$?
  { echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) gpu_recipe.sh $invocation (stages $stages, exit $rc) ==="
    cat "$log"; } >> "$history" 2>/dev/null || true
}
trap on_exit EXIT
say "stages $stages; cllm $cllm, device $device, budget ${budget}s, work $work, out $out"
say "settings: procs $procs x collect-batch $collect_batch, prompts-limit $limit, max-new-tokens $max_new, block $block," \
    "lr $lr, batch $batch prompts, states $states, epochs <= $epochs, eval $eval_n x $eval_tokens tokens ($windows)" \
    "+ $train_eval_n training prompts, serve $serve_n prompts ($serve_windows); reserved: ${reserve}s (evaluate" \
    "${eval_reserve}s, serve ${serve_reserve}s, when run here)"

# Inputs that no stage of this call makes must be in --work already.
if ! has collect; then
  [[ -f "$base/config.json" ]] || die "no base model in $base: run --stages collect first with this --work"
fi
shards_list="$work/shards.list"
read_shards() {  # the shards of the last collection (any traj_*.h5 for a work dir from before shards.list)
  shards=()
  if [[ -f "$shards_list" ]]; then
    while IFS= read -r f; do [[ -z "$f" || ! -f "$f" ]] || shards+=("$f"); done < "$shards_list"
  else
    for f in "$work"/traj_*.h5; do [[ ! -f "$f" ]] || shards+=("$f"); done
  fi
}
if has train && ! has collect; then
  read_shards
  [[ ${#shards[@]} -gt 0 ]] || die "no trajectories (traj_*.h5) in $work: run --stages collect first with this --work"
fi
if (has evaluate || has serve) && ! has train; then
  [[ -f "$work/cllm/config.json" ]] || die "no trained model in $work/cllm: run --stages train first with this --work"
fi
if has collect && [[ $random_model == 0 && -z "$hf_dir" && ! -f "$base/config.json" && ! -f "$gguf" ]]; then
  die "$gguf is missing (launch/fetch_model.sh, or --gguf)"
fi
[[ "$device" != cuda ]] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log" >&2 || true

# Prompts (committed, so that every machine trains on the same ones), made again by every call.
# zcat -f: gzipped or plain prompts files.
IFS=, read -r -a train_files <<< "$train_prompts"
zcat -f "${train_files[@]}" > "$work/train_all.jsonl"
zcat -f "$eval_prompts" > "$work/eval.jsonl"
if [[ $random_model == 1 ]]; then  # chat messages -> {"prompt": the user's text}, used as is
  for f in "$work/train_all.jsonl" "$work/eval.jsonl"; do
    "$python" -c 'import json, sys
for line in sys.stdin:
    print(json.dumps({"prompt": json.loads(line)["messages"][-1]["content"]}))' < "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  done
fi
if [[ "$limit" -gt 0 ]]; then head -n "$limit" "$work/train_all.jsonl"; else cat "$work/train_all.jsonl"; fi > "$work/train.jsonl"

# 1. Collect: the base model, then --procs processes, one shard file each, all stopping at the deadline.
if has collect; then
  if [[ ! -f "$base/config.json" ]]; then
    if [[ $random_model == 1 ]]; then "$cllm" random-model --shape 135m --out "$base" > /dev/null
    else "$cllm" convert --model "$(cd "$(dirname "$gguf")" && pwd)/$(basename "$gguf")" --out "$base" >> "$log" 2>&1; fi
  fi
fi
say "prompts: $(wc -l < "$work/train.jsonl") training, $(wc -l < "$work/eval.jsonl") held out; base model in $base"
if has collect; then
  if [[ -n $collect_seconds ]]; then collect_s=$collect_seconds
  elif has train && [[ -n $train_seconds ]]; then collect_s=$(( $(left) - reserve - train_seconds - 20 ))
  elif has train; then collect_s=$(( ($(left) - reserve) / 2 ))
  else collect_s=$(( $(left) - reserve - 5 )); fi
  [[ -n $collect_seconds ]] || [[ $collect_s -ge 10 ]] ||
    die "budget too small: ${collect_s}s for the collection (--budget, --collect-seconds)"
  batch_flag=()
  if [[ $collect_batch -gt 1 ]]; then
    help="$("$cllm" trajectories --help 2>&1 || true)"
    [[ $help == *--batch* ]] || die "$cllm trajectories has no --batch: rebuild cllm, or pass --collect-batch 1"
    batch_flag=(--batch "$collect_batch")
  fi
  if [[ $collect_s == 0 ]]; then
    say "collect: $procs processes x $collect_batch prompts at once, until every prompt is done (not bounded by the budget)"
  else
    say "collect: $procs processes x $collect_batch prompts at once, ${collect_s}s"
  fi
  keep_all=(); [[ $random_model == 0 ]] || keep_all=(--max-repeat 0)  # a random model repeats itself
  rm -f "$work"/collect_*.out "$work"/collect_*.err
  pids=()
  for ((i = 0; i < procs; i++)); do
    "$cllm" trajectories --model "$base" --prompts "$work/train.jsonl" --out "$work/traj_$i.h5" --block "$block" \
      --max-new-tokens "$max_new" --augment "${keep_all[@]}" --shard "$i/$procs" "${batch_flag[@]}" \
      --max-seconds "$collect_s" --device "$device" --threads 2 > "$work/collect_$i.out" 2> "$work/collect_$i.err" &
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
  printf '%s\n' "${shards[@]}" > "$shards_list"
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
fi

# 2. Train: from the base model on every shard; the clock left minus the later stages' reserves and a
# margin to load and save, unless --train-seconds.
if has train; then
  [[ -f "$base/config.json" ]] || die "no base model in $base"
  read_shards
  [[ ${#shards[@]} -gt 0 ]] || die "no trajectories in $work"
  if [[ -n $train_seconds ]]; then train_s=$train_seconds
  else train_s=$(( $(left) - reserve - 20 )); [[ $train_s -ge 5 ]] || train_s=5; fi
  say "train: ${train_s}s on ${#shards[@]} shards"
  # bf16 autocast on the GPU only: on a CPU it is ~20x slower than fp32.
  precision=(--device cpu); [[ $device == cuda ]] && precision=(--device cuda --bf16)
  (cd "$root" && "$python" -m training.train --model "$base" --trajectories "${shards[@]}" --out "$work/cllm" --pack \
    --batch-size "$batch" --micro-batch 16 --states-per-example "$states" --epochs "$epochs" \
    --max-seconds "$train_s" --lr "$lr" "${precision[@]}" --log-every 10 --plot) 2>&1 | tee -a "$log" >&2
fi

# 3. Evaluate: each model loaded once; AR and Jacobi on the same engine; quality under the base; the
# CLLM also on training prompts.
if has evaluate; then
  [[ -f "$work/cllm/config.json" ]] || die "no trained model in $work/cllm"
  say "evaluate: $eval_n held-out prompts x $eval_tokens tokens ($windows), the CLLM on $train_eval_n training" \
      "prompts ($(left)s left)"
  rm -rf "$work/eval"
  train_eval=(); [[ $train_eval_n == 0 ]] || train_eval=(--train-prompts "$work/train.jsonl" --train-n "$train_eval_n")
  (cd "$root" && "$python" -m training.evaluate --base "$base" --cllm "$work/cllm" --prompts "$work/eval.jsonl" \
    --out "$work/eval" --n "$eval_n" --max-new-tokens "$eval_tokens" --block "$block" --windows "$windows" \
    --device "$device" --cllm-bin "$cllm" "${train_eval[@]}") 2>&1 | tee -a "$log" >&2
fi

# 4. Serve: `cllm serve` per model and window, held-out prompts one request at a time.
if has serve; then
  [[ -f "$work/cllm/config.json" ]] || die "no trained model in $work/cllm"
  say "serve: $serve_n held-out prompts x $eval_tokens tokens ($serve_windows), max-batch 4 ($(left)s left)"
  rm -rf "$work/serve"
  (cd "$root" && "$python" -m training.serve_speedup --base "$base" --cllm "$work/cllm" --prompts "$work/eval.jsonl" \
    --out "$work/serve" --n "$serve_n" --max-tokens "$eval_tokens" --block "$block" --max-batch 4 \
    --windows "$serve_windows" --device "$device" --cllm-bin "$cllm") 2>&1 | tee -a "$log" >&2
fi

# Results: the files listed in the header; serve's results go into eval.json ("serve") and eval.md.
if (has train || has evaluate || has serve) && [[ -f "$work/cllm/loss.csv" ]]; then
  cp "$work/cllm/loss.csv" "$out/"
  [[ ! -f "$work/cllm/loss.png" ]] || cp "$work/cllm/loss.png" "$out/"
fi
if has evaluate; then
  for f in eval.json eval.md eval.png; do [[ ! -f "$work/eval/$f" ]] || cp "$work/eval/$f" "$out/"; done
fi
if has serve; then
  "$python" - "$out/eval.json" "$work/serve/serve.json" <<'PY'
import json, os, sys
path, serve = sys.argv[1], json.load(open(sys.argv[2]))
res = json.load(open(path)) if os.path.exists(path) else {}
res["serve"] = {k: v for k, v in serve.items() if k != "requests"}  # every request: serve.json in records.tar.gz
with open(path, "w") as f:
    json.dump(res, f, indent=2)
PY
  { [[ ! -f "$out/eval.md" ]] || echo; cat "$work/serve/serve.md"; } >> "$out/eval.md"
fi
records=()
if has collect; then
  records+=(-C "$work" $(cd "$work" && ls collect_*.out collect_*.err 2>/dev/null || true))
fi
if has evaluate; then records+=(-C "$work/eval" $(cd "$work/eval" && ls *.jsonl *.log 2>/dev/null || true)); fi
if has serve; then records+=(-C "$work/serve" $(cd "$work/serve" && ls serve.json *.log 2>/dev/null || true)); fi
[[ ! -s "$history" ]] || records+=(-C "$work" recipe_history.log)
[[ ${#records[@]} -eq 0 ]] || tar -czf "$out/records.tar.gz" "${records[@]}"

[[ $((SECONDS - start)) -le $budget ]] || say "over budget: $((SECONDS - start))s of ${budget}s"
{
  echo "# CLLM recipe result"
  echo
  echo "This call: stages $stages; $((SECONDS - start))s of a ${budget}s budget; device $device; work $work."
  echo
  grep -E '^\[ *[0-9]+s\] (stages|settings|prompts|collect|train|evaluate|serve|over budget)' "$log" | sed 's/^/    /'
  if has train; then
    echo
    grep -E '^(trained|step [0-9]+/)' "$log" | tail -3 | sed 's/^/    /'
  fi
  if [[ -s "$history" ]]; then
    echo
    echo "## Earlier calls with this --work ($history; also in records.tar.gz)"
    awk 'function flush() { if (step != "") print "    " step; if (trained != "") print "    " trained; step = trained = "" }
         /^=== / { flush(); print ""; print "`" substr($0, 5, length($0) - 8) "`:"; print ""; next }
         /^\[ *[0-9]+s\] (stages|prompts|collect|train|evaluate|serve|over budget)/ { print "    " $0; next }
         /^step [0-9]+\// { step = $0; next }
         /^trained / { trained = $0; next }
         END { flush() }' "$history"
  fi
  if [[ -f "$out/eval.md" ]]; then
    echo
    echo "## Evaluation"
    echo
    cat "$out/eval.md"
  fi
} > "$out/summary.md"
say "done: $out/summary.md"
cat "$out/summary.md"
