#!/usr/bin/env bash
# make_h5_models.sh CLLM MODELS_DIR: the .h5 checkpoints of the HDF5 tensor-parallel tests (the
# ctest fixture mpi_h5_models), converted from make_models.sh's HF directories with `cllm convert`
# at the default 8 chunks per split axis, in the dtype each source has on disk.
set -euo pipefail
cllm="$1"; dir="$2"
"$cllm" convert --model "$dir/kv4" --out "$dir/kv4.h5"
"$cllm" convert --model "$dir/kv2_tied" --out "$dir/kv2_tied.h5"
"$cllm" convert --model "$dir/mem" --out "$dir/mem.h5" --dtype f16
"$cllm" convert --model "$dir/kv4_other" --out "$dir/kv4_other.h5"
