#!/usr/bin/env bash
# make_models.sh CLLM OUT_DIR: the random checkpoints of the tensor-parallel tests (the ctest
# fixture mpi_models). Shapes are chosen to split over 2 and 4 ranks in both KV regimes.
set -euo pipefail
cllm="$1"; out="$2"
common=(--shape custom --vocab 512 --hidden 256 --heads 8 --ctx 512)
# KV heads split at TP=2 and TP=4.
"$cllm" random-model "${common[@]}" --ffn 512 --layers 2 --kv-heads 4 --seed 11 --out "$out/kv4"
# kv4's shape with other weights: a stale checkpoint on one rank (mpi_stale_checkpoint).
"$cllm" random-model "${common[@]}" --ffn 512 --layers 2 --kv-heads 4 --seed 99 --out "$out/kv4_other"
# KV heads split at TP=2, replicated at TP=4; LM head tied to the embedding.
"$cllm" random-model "${common[@]}" --ffn 768 --layers 3 --kv-heads 2 --tied --seed 12 --out "$out/kv2_tied"
# The memory check: ~250 MB of fp32 weights, f16 on disk, linear weights dominating.
"$cllm" random-model --shape custom --vocab 1024 --hidden 1024 --ffn 4096 --layers 4 --heads 16 --kv-heads 8 \
  --dtype f16 --seed 13 --out "$out/mem"
