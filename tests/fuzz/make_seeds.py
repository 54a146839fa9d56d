#!/usr/bin/env python3
"""Writes the small seed inputs of the fuzz corpora (tests/fuzz/corpus/<fuzzer>/seed_*).

GGUF seeds come from the python `gguf` package's GGUFWriter, an implementation independent of
cllm's parser; safetensors seeds are built by hand. Every file stays under 4 KB but the whole
checkpoints of fuzz_gguf_checkpoint (~32 KB).
Usage: python3 tests/fuzz/make_seeds.py  (from the repository root; needs `pip install gguf numpy`)
"""
import json
import os
import struct
import sys

import gguf
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from byte_level import byte_level_chars  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def out(fuzzer, name):
    d = os.path.join(HERE, "corpus", fuzzer)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


def safetensors(name, tensors, metadata=None):
    header, data = {}, b""
    for tname, (dtype, shape, raw) in tensors.items():
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(out("fuzz_safetensors", name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def gguf_file(name, quant_types, version_2=False):
    path = out("fuzz_gguf", name)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_uint8("t.u8", 7)
    w.add_int8("t.i8", -3)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -2)
    w.add_int32("t.i32", -5)
    w.add_float32("t.f32", 0.5)
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 1.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "hello")
    w.add_array("t.strs", ["a", "bc", ""])
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.floats", [0.5, 1.5])
    rng = np.random.default_rng(0)
    for qt in quant_types:
        x = rng.standard_normal((2, 32)).astype(np.float32)
        if qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(f"w.{qt.name}", x)
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(f"w.{qt.name}", x.astype(np.float16))
        else:
            w.add_tensor(f"w.{qt.name}", gguf.quants.quantize(x, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version_2:
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", 2))


def gguf_checkpoint(name, spm):
    """A whole one-layer LLaMA (d 16, 2 heads, 1 KV head) with its tokenizer: byte-level BPE (gpt2)
    or sentencepiece-style (llama, byte tokens and scores). cllm generates from both; ~32 KB each,
    the tensors being most of it."""
    w = gguf.GGUFWriter(out("fuzz_gguf_checkpoint", name), "llama")
    d, f, heads = 16, 32, 2
    w.add_block_count(1)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(1)
    w.add_context_length(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if spm:
        tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "\u2581t", "he", "\u2581the"]
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types([2, 3, 3] + [6] * 256 + [1] * 4)
        w.add_token_scores([0.0] * 259 + [-1.0, -2.0, -3.0, -4.0])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    else:
        alphabet = byte_level_chars()
        tokens = [alphabet[b] for b in range(256)] + ["\u0120t", "he", "\u0120the", "<|im_start|>", "<|im_end|>"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list(tokens)
        w.add_token_types([1] * 259 + [3, 3])
        w.add_token_merges(["\u0120 t", "h e", "\u0120t he"])
        w.add_bos_token_id(259)
        w.add_eos_token_id(260)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), d), "output_norm.weight": (d,), "blk.0.attn_norm.weight": (d,),
              "blk.0.ffn_norm.weight": (d,), "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (d // heads, d),
              "blk.0.attn_v.weight": (d // heads, d), "blk.0.attn_output.weight": (d, d),
              "blk.0.ffn_gate.weight": (f, d), "blk.0.ffn_up.weight": (f, d), "blk.0.ffn_down.weight": (d, f)}
    for tname, shape in shapes.items():
        w.add_tensor(tname, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    f32 = np.arange(6, dtype=np.float32).tobytes()
    safetensors("seed_f32", {"a": ("F32", [2, 3], f32)}, {"format": "pt"})
    safetensors("seed_mixed", {
        "x.weight": ("F16", [2, 2], np.ones(4, np.float16).tobytes()),
        "y.weight": ("BF16", [3], b"\x80\x3f" * 3),
        "empty": ("F32", [0, 4], b""),
    })
    safetensors("seed_dtype_i64", {"n": ("I64", [1], b"\0" * 8)})
    with open(out("fuzz_safetensors", "seed_empty_header"), "wb") as f:
        f.write(struct.pack("<Q", 2) + b"{}")

    Q = gguf.GGMLQuantizationType
    gguf_file("seed_float", [Q.F32, Q.F16])
    gguf_file("seed_quant", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.BF16])
    gguf_file("seed_v2", [Q.F32], version_2=True)
    gguf_checkpoint("seed_tiny_bpe", spm=False)
    gguf_checkpoint("seed_tiny_spm", spm=True)


if __name__ == "__main__":
    main()
