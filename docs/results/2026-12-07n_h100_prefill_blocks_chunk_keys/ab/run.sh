#!/usr/bin/env bash
# Prefill in 1024-row blocks and 256-key invariant chunks for models with >= 16 KV heads:
# tests on the new binaries, A/B against the parent commit's (alternated), HF peer, then the random-7B Jacobi == AR test.
set -u
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
D=$OUT/r; mkdir -p $D
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $D/gpu.txt
N=new; O=old   # new: the commit's binaries; old: the parent commit's
timeout 170 $N/cllm_gpu_tests --gtest_filter='*ttention*:BatchInvariance.*' --gtest_output=xml:$D/kernel_tests.xml > $D/kernel_tests.log 2>&1
el "kernel tests rc $?: $(grep -E '^\[  (PASSED|FAILED)' $D/kernel_tests.log | tr '\n' ' ')"; grep 'FAILED  \]' $D/kernel_tests.log | head -8
timeout 90 $N/cllm_gpu_model_tests --gtest_filter='CudaModel.*Random*:CudaBatch.RandomGqa*:CudaLookahead.BranchRowsEqualCausalRowsRandom*:CudaLookahead.BranchesInABatchEqualAlone' > $D/model_tests.log 2>&1
rc=$?; tar czf $OUT/r.tgz -C $OUT r; el "model tests rc $rc: $(grep -E '^\[  (PASSED|FAILED)' $D/model_tests.log | tr '\n' ' ')"; grep 'FAILED  \]' $D/model_tests.log | head -5
for B in old new old2 new2; do
  X=$O/cllm; case $B in new*) X=$N/cllm;; esac
  timeout 80 $X bench --device cuda --model random:7b --ns 1,16 --contexts 512,2048 --prefill 2048 --reps 3 --tokens 8 --json $D/ab7b_$B.json > $D/ab7b_$B.log 2>&1 || tail -3 $D/ab7b_$B.log
  el "7b $B"; tar czf $OUT/r.tgz -C $OUT r
done
for B in old new; do
  X=$O/cllm; case $B in new*) X=$N/cllm;; esac
  timeout 40 $X bench --device cuda --model random:135m --ns 1,16 --contexts 512,2048 --prefill 2048 --reps 7 --tokens 16 --json $D/ab135m_$B.json > $D/ab135m_$B.log 2>&1 || tail -3 $D/ab135m_$B.log
  el "135m $B"
done
python3 - <<'PY'
import json, glob, os
d = os.environ["OUT"] + "/r"
for f in sorted(glob.glob(d + "/ab*.json")):
    j = json.load(open(f))
    print(os.path.basename(f)[:-5].ljust(12), f"read {j['read_gbs']:.0f} prefill {j['prefill_ms']:.1f} ms ({j['prefill_ms']/j['prefill_floor_ms']:.2f}x)", "  ".join(f"c{x['context']} n{x['n']} {x['forward_ms']:.3f} ({x['forward_ms']/x['floor_ms']:.2f}x)" for x in j["forward"]))
PY
tar czf $OUT/r.tgz -C $OUT r
timeout 150 python3 tests/reference/hf_peer_bench.py --shape 7b --ns 1,16 --contexts 512 --prefill 2048 --json $D/hf7b.json > $D/hf7b.log 2>&1
el "hf rc $?"; tail -6 $D/hf7b.log; tar czf $OUT/r.tgz -C $OUT r
timeout 100 $N/cllm random-model --shape 7b --out /tmp/r7b > $D/r7b.log 2>&1; el "random 7b rc $?"
CLLM_GPU_7B_MODEL=/tmp/r7b timeout 200 $N/cllm_gpu_model_tests --gtest_filter='CudaModel.JacobiEqualsArRandom7B' > $D/jacobi7b.log 2>&1
el "jacobi 7b rc $?: $(grep -E '^\[  (PASSED|FAILED)' $D/jacobi7b.log | tr '\n' ' ')"
tar czf $OUT/r.tgz -C $OUT r; rm -rf $D /tmp/r7b; el done
