#!/usr/bin/env bash
# HEAD binaries: carveout model test + A/B, attention ncu, kernel_times, then the full attention/invariance kernel tests.
set -u
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
D=$OUT/r; mkdir -p $D
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $D/gpu.txt
N=new   # the binaries of the commit under test
timeout 60 $N/cllm_gpu_model_tests --gtest_filter='CudaModel.SharedCarveoutEqualsAutoRandom:CudaModel.*Random*:CudaBatch.RandomGqa*:CudaLookahead.BranchRowsEqualCausalRowsRandom:CudaLookahead.BranchesInABatchEqualAlone' > $D/model_tests.log 2>&1
el "model tests rc $?: $(grep -E '^\[  (PASSED|FAILED)' $D/model_tests.log | tr '\n' ' ')"; grep 'FAILED  \]' $D/model_tests.log | head -5
for R in 1 2; do for CV in auto shared; do
  timeout 30 $N/cllm bench --device cuda --model random:135m --ns 1,16 --contexts 512 --reps 7 --tokens 16 --cuda-carveout $CV --json $D/cv135m_${CV}_$R.json > $D/cv135m_${CV}_$R.log 2>&1 || tail -3 $D/cv135m_${CV}_$R.log
  timeout 45 $N/cllm bench --device cuda --model random:7b --ns 1,16,64 --contexts 512 --reps 3 --tokens 8 --cuda-carveout $CV --json $D/cv7b_${CV}_$R.json > $D/cv7b_${CV}_$R.log 2>&1 || tail -3 $D/cv7b_${CV}_$R.log
done; el "round $R"; tar czf $OUT/r.tgz -C $OUT r; done
python3 - <<'PY'
import json, glob, os
d = os.environ["OUT"] + "/r"
for f in sorted(glob.glob(d + "/cv*.json")):
    j = json.load(open(f))
    print(os.path.basename(f)[:-5].ljust(16), f"read {j['read_gbs']:.0f}", "  ".join(f"n={x['n']} {x['forward_ms']:.3f} ({x['forward_ms']/x['floor_ms']:.2f}x)" for x in j["forward"]))
PY
timeout 50 python3 tests/gpu/kernel_times.py --cllm $N/cllm --model random:7b --n 1 --out $D > $D/kernel_times_7b_n1.txt 2>&1; el "kernel_times rc $?"; head -12 $D/kernel_times_7b_n1.txt
timeout 50 python3 tests/gpu/kernel_times.py --cllm $N/cllm --model random:135m --n 1 --out $D > $D/kernel_times_135m_n1.txt 2>&1; el "kernel_times 135m rc $?"; head -14 $D/kernel_times_135m_n1.txt
tar czf $OUT/r.tgz -C $OUT r
timeout 45 ncu --clock-control none -k regex:attention_partial --launch-skip 300 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
  $N/cllm bench --device cuda --model random:7b --ns 1 --contexts 512 --reps 20 --tokens 4 --cuda-graphs off > $D/ncu_attn_7b_n1.txt 2>&1; el "ncu attn rc $?"
grep -E "Duration|Elapsed Cycles|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Block Limit|Stall|Waves" $D/ncu_attn_7b_n1.txt | head -30
tar czf $OUT/r.tgz -C $OUT r
timeout 250 $N/cllm_gpu_tests --gtest_filter='*ttention*:BatchInvariance.*:FusedKernels.*' --gtest_output=xml:$D/kernel_tests.xml > $D/kernel_tests.log 2>&1
el "kernel tests rc $?: $(grep -E '^\[  (PASSED|FAILED)' $D/kernel_tests.log | tr '\n' ' ') $(grep -c '^\[       OK' $D/kernel_tests.log) ok"; grep 'FAILED  \]' $D/kernel_tests.log | head -5
tar czf $OUT/r.tgz -C $OUT r; rm -rf $D; el done
