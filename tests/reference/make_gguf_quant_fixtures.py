#!/usr/bin/env python3
"""GGUF quantized-type fixtures, written with the `gguf` package (what llama.cpp's converter uses).

  python3 tests/reference/make_gguf_quant_fixtures.py --out DIR [--seed N]

Writes into DIR (tests/fixtures/generated/gguf_quant in CI, git-ignored):
- dequant.gguf: for every block type T, a tensor "T" of fresh random blocks (64 rows of 2 blocks, or 2
  k-quant super-blocks; every fp16 scale a random finite half, subnormals included) and a float32 tensor
  "T.expected" holding gguf.quants.dequantize of those bytes. The package has no Q8_K decoder (ggml
  uses Q8_K only for dot products), so Q8_K.expected is ggml's formula x = d * q in numpy float32.
- tiny_<scheme>.gguf: one random LLaMA (2 layers, hidden 256, GQA 4/2 heads, vocab 512) with tensor
  types as llama.cpp's quantize assigns them for that scheme (Q4_K_M, Q5_K_M, Q6_K, and "legacy_mix",
  which spreads Q2_K, Q3_K, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 over the tensors), and tiny_f32_<scheme>.gguf:
  the same model with every tensor replaced by gguf.quants.dequantize of its blocks. A loader whose
  dequantization is bit-exact gives each quantized file the logits of its float32 twin.
The package cannot quantize k-quants (gguf.quants.quantize raises NotImplementedError for Q2_K..Q6_K),
so the model's weights are random blocks, scaled so weights stay within about +-0.1.
"""
import argparse
import importlib.metadata
import os
import secrets

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

BLOCK_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]

# Byte offsets of each block's fp16 scale fields (ggml-quants.h layouts) and, per field, the divisor
# that keeps |x| within about `s` when the field is s / divisor: the largest |quant * sub-scale| term.
SCALE_FIELDS = {
    T.Q4_0: [(0, 8)], T.Q4_1: [(0, 7.5), (2, -1)], T.Q5_0: [(0, 16)], T.Q5_1: [(0, 15.5), (2, -1)],
    T.Q8_0: [(0, 127)], T.Q2_K: [(80, 22.5), (82, 15)], T.Q3_K: [(108, 128)],
    T.Q4_K: [(0, 472.5), (2, 63)], T.Q5_K: [(0, 976.5), (2, 63)], T.Q6_K: [(208, 4096)],
}


def random_finite_halves(rng, n):
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (h & 0x7C00) == 0x7C00  # inf / NaN: clear one exponent bit
    h[bad] &= np.uint16(0xFBFF)
    return h


def random_blocks(rng, qtype, n_blocks, scale=None):
    """n_blocks random blocks; scale None: every fp16 field a random finite half (Q8_K: random
    finite f32), else fields set so values stay within about +-scale."""
    _, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    if qtype == T.Q8_K:  # f32 d, int8 q[256], int16 bsums[16] (unused by dequantization)
        d = (rng.standard_normal(n_blocks) * (1.0 if scale is None else scale / 127)).astype(np.float32)
        b[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
        return b
    for off, div in SCALE_FIELDS[qtype]:
        if scale is None:
            h = random_finite_halves(rng, n_blocks)
        else:
            h = (scale / div * rng.uniform(0.5, 1.0, n_blocks)).astype(np.float16).view(np.uint16)
        b[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return b


def dequantize(blocks, qtype, n_elems):
    """Row-major float32 values of `blocks` (rows, row_bytes) as the package decodes them."""
    if qtype == T.Q8_K:
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1, n_elems)
    return gguf.quants.dequantize(blocks, qtype).astype(np.float32).reshape(-1, n_elems)


def quant_tensor(rng, qtype, rows, cols, scale=None):
    """(rows, row_bytes) uint8 of random blocks for a (rows, cols) tensor, and its float32 values."""
    be, bb = gguf.GGML_QUANT_SIZES[qtype]
    assert cols % be == 0, (qtype.name, cols)
    blocks = random_blocks(rng, qtype, rows * cols // be, scale)
    return blocks.reshape(rows, cols // be * bb), dequantize(blocks, qtype, cols)


def write_dequant(path, rng, seed):
    w = gguf.GGUFWriter(path, "cllm-dequant-fixture")
    w.add_uint64("cllm.seed", seed)
    for qtype in BLOCK_TYPES:
        be, _ = gguf.GGML_QUANT_SIZES[qtype]
        cols = 2 * be if be == 256 else 8 * be
        raw, ref = quant_tensor(rng, qtype, 64, cols)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", ref)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Tiny LLaMA: every row length (hidden 256, intermediate 512) is a whole number of super-blocks.
V, H, I, L, NH, NKV = 512, 256, 512, 2, 4, 2
HD = H // NH


def use_more_bits(layer, n_layers):  # llama.cpp's rule for Q*_K_M: attn_v and ffn_down get Q6_K
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def scheme_type(scheme, name, layer):
    if scheme == "legacy_mix":
        order = [T.Q2_K, T.Q3_K, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
        return order[(hash_name(name) + layer) % len(order)]
    base = {"Q4_K_M": T.Q4_K, "Q5_K_M": T.Q5_K, "Q6_K": T.Q6_K}[scheme]
    if name == "output":
        return T.Q6_K
    if name in ("attn_v", "ffn_down") and use_more_bits(layer, L):
        return T.Q6_K
    return base


def hash_name(name):
    return sum(ord(c) for c in name)


def model_tensors():
    """(GGUF name, short name, layer, rows, cols) of every matrix, numpy (out, in) order."""
    out = [("token_embd.weight", "token_embd", -1, V, H)]
    for l in range(L):
        for short, rows, cols in [("attn_q", NH * HD, H), ("attn_k", NKV * HD, H), ("attn_v", NKV * HD, H),
                                  ("attn_output", H, NH * HD), ("ffn_gate", I, H), ("ffn_up", I, H),
                                  ("ffn_down", H, I)]:
            out.append((f"blk.{l}.{short}.weight", short, l, rows, cols))
    out.append(("output.weight", "output", -1, V, H))
    return out


def new_model_writer(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_feed_forward_length(I)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_dimension_count(HD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(V)
    return w


def write_models(out, rng):
    schemes = ["Q4_K_M", "Q5_K_M", "Q6_K", "legacy_mix"]
    writers = {s: new_model_writer(os.path.join(out, f"tiny_{s}.gguf")) for s in schemes}
    norms = {}
    for l in range(L):
        norms[f"blk.{l}.attn_norm.weight"] = rng.uniform(0.8, 1.2, H).astype(np.float32)
        norms[f"blk.{l}.ffn_norm.weight"] = rng.uniform(0.8, 1.2, H).astype(np.float32)
    norms["output_norm.weight"] = rng.uniform(0.8, 1.2, H).astype(np.float32)
    # Each scheme gets its own random blocks, so each has its own float32 reference file.
    refs = {s: new_model_writer(os.path.join(out, f"tiny_f32_{s}.gguf")) for s in schemes}
    for name, short, layer, rows, cols in model_tensors():
        for s in schemes:
            qtype = scheme_type(s, short, layer)
            raw, values = quant_tensor(rng, qtype, rows, cols, scale=0.1)
            writers[s].add_tensor(name, raw, raw_dtype=qtype)
            refs[s].add_tensor(name, values)
    for name, v in norms.items():
        for w in list(writers.values()) + list(refs.values()):
            w.add_tensor(name, v)
    for w in list(writers.values()) + list(refs.values()):
        finish(w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=None, help="default: fresh random, printed")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else secrets.randbits(32)
    print(f"make_gguf_quant_fixtures: seed {seed} (rerun with --seed {seed} to reproduce), gguf {importlib.metadata.version('gguf')}")
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_dequant(os.path.join(a.out, "dequant.gguf"), rng, seed)
    write_models(a.out, rng)


if __name__ == "__main__":
    main()
