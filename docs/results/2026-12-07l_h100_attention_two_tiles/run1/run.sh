#!/usr/bin/env bash
# Attention (two tiles in flight, idle warps skip the maths, batched combine loads), normed 32-row GEMM tiles:
# tests, one A/B round (old vs new; fused:16 on 7B), then the tile sweep if time is left.
set -u
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
D=$OUT/r; mkdir -p $D
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $D/gpu.txt
N=new; O=old   # binaries: new = the candidate CUDA sources, old = the previous ones
timeout 90 $N/cllm_gpu_tests --gtest_filter='*ttention*:BatchInvariance.*:FusedKernels.*' --gtest_output=xml:$D/kernel_tests.xml > $D/kernel_tests.log 2>&1
el "kernel tests rc $?: $(grep -E '^\[  (PASSED|FAILED)' $D/kernel_tests.log | tr '\n' ' ')"; grep 'FAILED  \]' $D/kernel_tests.log | head -5
timeout 50 $N/cllm_gpu_model_tests --gtest_filter='CudaModel.*Random*:CudaBatch.RandomGqa*:CudaLookahead.BranchRowsEqualCausalRowsRandom:CudaLookahead.BranchesInABatchEqualAlone' > $D/model_tests.log 2>&1
rc=$?; tar czf $OUT/r.tgz -C $OUT r; el "model tests rc $rc: $(grep -E '^\[  (PASSED|FAILED)' $D/model_tests.log | tr '\n' ' ')"; grep 'FAILED  \]' $D/model_tests.log | head -5
for B in old new16 new; do
  X=$O/cllm; [ $B != old ] && X=$N/cllm
  L=""; [ $B = new16 ] && L="--cuda-layer fused:16"
  [ $B != new16 ] && { timeout 30 $X bench --device cuda --model random:135m --ns 1,16 --contexts 512 --reps 5 --tokens 16 --json $D/ab135m_${B}.json > $D/ab135m_${B}.log 2>&1 || tail -3 $D/ab135m_${B}.log; }
  timeout 45 $X bench --device cuda --model random:7b $L --ns 1,16,64 --contexts 512 --reps 3 --tokens 8 --json $D/ab7b_${B}.json > $D/ab7b_${B}.log 2>&1 || tail -3 $D/ab7b_${B}.log
  el "$B done"; tar czf $OUT/r.tgz -C $OUT r
done
python3 - <<'PY'
import json, glob, os
d = os.environ["OUT"] + "/r"
for f in sorted(glob.glob(d + "/ab*.json")):
    j = json.load(open(f))
    print(os.path.basename(f)[:-5].ljust(12), f"read {j['read_gbs']:.0f}", "  ".join(f"n={x['n']} {x['forward_ms']:.3f} ({x['forward_ms']/x['floor_ms']:.2f}x)" for x in j["forward"]))
PY
timeout 60 $N/cllm_gpu_bench --tile-sweep 3 > $D/tile_sweep.log 2>&1; el "sweep rc $?"
tar czf $OUT/r.tgz -C $OUT r
grep -A120 "fastest tile shape" $D/tile_sweep.log | grep -E "normed" | head -20
rm -rf $D
el done
