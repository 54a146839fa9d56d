#!/usr/bin/env python3
"""Requantizes a llama GGUF file the way llama.cpp's quantize assigns types, with the `gguf` package.

  python3 tests/reference/requantize_gguf.py --src models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --scheme Q4_K_M --out /tmp/smollm2_Q4_K_M.gguf

Every tensor is dequantized with gguf.quants.dequantize, then written again:
- Q4_K_M / Q5_K_M / Q6_K: llama.cpp's per-tensor rule: output.weight (or token_embd.weight when the
  model ties its head) and, in use_more_bits layers, attn_v and ffn_down get Q6_K; the rest the base
  k-quant. A tensor whose rows are not whole 256-element super-blocks gets llama.cpp's fallback
  (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); in SmolLM2-135M (hidden 576) that is every tensor
  whose input is the hidden size, so only ffn_down (input 1536) is k-quantized.
- Q8_0 / Q4_0: every matrix Q8_0 / Q4_0 (gguf.quants.quantize, llama.cpp's reference rounding).
- F32: every tensor dequantized to float32 (the input llama.cpp's own quantizer is given in
  llamacpp_quant_check.py).
Norms stay F32. Metadata is copied unchanged (general.file_type aside).

The gguf package (0.19) cannot quantize k-quants (gguf.quants.quantize raises NotImplementedError for
Q2_K..Q6_K), so Q4_K, Q5_K and Q6_K blocks are made here in numpy: each sub-block's scale (and min)
from its range, rounded to the 6-bit (8-bit for Q6_K) sub-scales of the block's fp16 super-scale,
then round-to-nearest. That is simpler than llama.cpp's search (make_qkx2_quants), so its error is
somewhat larger; the layout is ggml's, and the tests decode it with cllm and with the package.
"""
import argparse

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

QK_K = 256
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quantize_q45_k(x, bits):
    """Q4_K (bits 4) or Q5_K (bits 5) blocks of x: (n, 256) float32 -> (n, 144 or 176) uint8."""
    n = x.shape[0]
    qmax = (1 << bits) - 1
    sub = x.reshape(n, 8, 32)
    mn = np.minimum(sub.min(axis=2), 0.0)  # x = d*sc*q - dmin*m, m >= 0
    mx = sub.max(axis=2)
    scale = (mx - mn) / qmax
    mins = -mn
    d = f16(scale.max(axis=1) / 63).astype(np.float32)
    dmin = f16(mins.max(axis=1) / 63).astype(np.float32)
    sc = np.clip(np.round(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)), 0, 63)
    m = np.clip(np.round(np.divide(mins, dmin[:, None], out=np.zeros_like(mins), where=dmin[:, None] > 0)), 0, 63)
    step = (d[:, None] * sc)[:, :, None]
    off = (dmin[:, None] * m)[:, :, None]
    q = np.clip(np.round(np.divide(sub + off, step, out=np.zeros_like(sub), where=step > 0)), 0, qmax).astype(np.uint8)
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    # 12 scale bytes: j < 4 in the low 6 bits of bytes j (scale) and j+4 (min); j >= 4 split into a
    # low nibble in byte j+4 and 2 high bits in the top of bytes j-4 / j.
    scales = np.zeros((n, 12), np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    # Element c*64 + h*32 + l is nibble h of qs[c*32 + l]; Q5_K's fifth bit j of qh[l] for sub-block j.
    q = q.reshape(n, 4, 2, 32)
    qs = ((q[:, :, 0, :] & 0x0F) | ((q[:, :, 1, :] & 0x0F) << 4)).reshape(n, 128)
    head = [d.astype(np.float16).view(np.uint8).reshape(n, 2), dmin.astype(np.float16).view(np.uint8).reshape(n, 2), scales]
    if bits == 5:
        hi = (q.reshape(n, 8, 32) >> 4) & 1
        qh = np.zeros((n, 32), np.uint8)
        for j in range(8):
            qh |= (hi[:, j, :] << j).astype(np.uint8)
        head.append(qh)
    return np.concatenate(head + [qs], axis=1)


def quantize_q6_k(x):
    """Q6_K blocks of x: (n, 256) float32 -> (n, 210) uint8."""
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    scale = np.abs(sub).max(axis=2) / 31  # q in [-32, 31]
    d = f16(scale.max(axis=1) / 127).astype(np.float32)
    sc = np.clip(np.round(np.divide(scale, d[:, None], out=np.zeros_like(scale), where=d[:, None] > 0)), 0, 127)
    step = (d[:, None] * sc)[:, :, None]
    q = np.clip(np.round(np.divide(sub, step, out=np.zeros_like(sub), where=step > 0)), -32, 31).astype(np.int16) + 32
    q = q.astype(np.uint8).reshape(n, 2, 128)  # halves of 128
    # Element half*128 + h*64 + k: low nibble h of ql[half*64 + k]; with e = half*128 + s*32 + l the
    # top 2 bits are bits 2s of qh[half*32 + l].
    lo = q & 0x0F
    ql = (lo[:, :, 0:64] | (lo[:, :, 64:128] << 4)).reshape(n, 128)
    hi = (q >> 4).reshape(n, 2, 4, 32)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    scales = sc.astype(np.int8).view(np.uint8)
    return np.concatenate([ql, qh, scales, d.astype(np.float16).view(np.uint8).reshape(n, 2)], axis=1)


def quantize(values, qtype):
    """(rows, cols) float32 -> (rows, row_bytes) uint8 of qtype."""
    rows, cols = values.shape
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        blocks = values.reshape(-1, QK_K).astype(np.float32)
        b = quantize_q6_k(blocks) if qtype == T.Q6_K else quantize_q45_k(blocks, 4 if qtype == T.Q4_K else 5)
        return b.reshape(rows, -1)
    return gguf.quants.quantize(values, qtype)


def use_more_bits(layer, n_layers):
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def choose(name, cols, scheme, n_layers, tied):
    if scheme in ("Q8_0", "Q4_0"):
        t = T[scheme]
    else:
        base = {"Q4_K_M": T.Q4_K, "Q5_K_M": T.Q5_K, "Q6_K": T.Q6_K}[scheme]
        t = base
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = T.Q6_K
        elif name.startswith("blk.") and (".attn_v." in name or ".ffn_down." in name):
            if use_more_bits(int(name.split(".")[1]), n_layers):
                t = T.Q6_K
    be, _ = gguf.GGML_QUANT_SIZES[t]
    if cols % be != 0:
        t = FALLBACK[t]
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--scheme", required=True, choices=["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "F32"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.src)
    arch = r.fields["general.architecture"].contents()
    n_layers = int(r.fields[f"{arch}.block_count"].contents())
    tied = not any(t.name == "output.weight" for t in r.tensors)
    w = gguf.GGUFWriter(a.out, arch)
    for field in r.fields.values():
        if field.name in ("general.architecture", "general.file_type") or field.name.startswith("GGUF."):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    counts = {}
    err = []
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]  # numpy order: (rows, cols)
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if len(shape) == 1 or a.scheme == "F32":
            w.add_tensor(t.name, values)
            continue
        qtype = choose(t.name, shape[1], a.scheme, n_layers, tied)
        raw = quantize(values, qtype)
        back = gguf.quants.dequantize(raw, qtype).reshape(shape)
        err.append(float(np.sqrt(np.mean((back - values) ** 2)) / (np.sqrt(np.mean(values ** 2)) + 1e-30)))
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        w.add_tensor(t.name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if err:
        print(f"{a.out}: {a.scheme}: tensor types {counts}; relative RMS error vs the source weights: "
              f"mean {np.mean(err):.4f}, max {np.max(err):.4f}")
    else:
        print(f"{a.out}: every tensor float32")


if __name__ == "__main__":
    main()
