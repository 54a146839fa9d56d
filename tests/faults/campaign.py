#!/usr/bin/env python3
"""Fault campaign: many corrupted checkpoints, bad flags, over-long prompts and rank faults against
the cllm binary, each held to the reliability rules (docs/reliability.md):

- a refusal exits non-zero within its deadline, with one cause line (`error: ...`, or
  `rank N: error: ...` from each rank that reports it) that names the file, tensor, field, flag or
  rank; no crash by signal, no `terminate called`, no HDF5 error-stack dump, no bare bad_alloc;
- a run that exits 0 prints exactly the unmodified model's output (a corruption that changes no
  value cllm uses), except where a format cannot tell (a finite value changed inside tensor data of
  a GGUF or safetensors file, which store no checksums): those are counted as `undetectable`;
- nothing runs past its deadline.

  python3 tests/faults/campaign.py --cllm build/cllm --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
      [--subset ci|full] [--mpirun mpirun] [--work DIR] [--json results.json] [--only REGEX]

Cases are generated from a fixed seed, so every run makes the same files. Exit status 1 when a case
fails; one line per case, then a summary per class with the slowest exit time.
"""
import argparse
import copy
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_layout  # noqa: E402

PROMPT = "The quick brown fox"
NEW = 6
FILE_DEADLINE = 20.0   # a refusal of a damaged file or a bad flag, one process
COMM_DEADLINE = 5      # --comm-deadline of the multi-rank cases
MPI_DEADLINE = 25.0    # a multi-rank case: start-up + COMM_DEADLINE + naming + the launcher's teardown
BAD_OUTPUT = re.compile(r"terminate called|Segmentation fault|HDF5-DIAG|Traceback|core dumped|"
                        r"what\(\):|std::bad_alloc|AddressSanitizer|Assertion .* failed")
ERROR_LINE = re.compile(r"^(rank \d+: )?(cllm [a-z-]+: )?error: (.*)$")
# Under mpirun: a rank's report ("rank 1: ...", "rank 0 (host h): start-up timed out ...") or the
# launcher's one line about a killed rank.
# A stopped rank 0 may leave its streamed text mid-line, so another rank's report can follow it on
# that line: it is looked for anywhere in the line.
RANK_LINE = re.compile(r"(?:^|(?<=[^\w]))(rank \d+( \(host [^)]*\))?: (?!loaded |loading ).*|(?:mpirun|mpiexec) noticed that process rank \d+ .*)$")


class Case:
    def __init__(self, name, klass, argv, expect, names, deadline=FILE_DEADLINE, baseline=None, driver=None, env=None):
        self.name, self.klass, self.argv, self.expect = name, klass, argv, expect
        self.names = names            # regex the cause line must match
        self.deadline = deadline
        self.baseline = baseline      # key of the unmodified output, for expect 'refuse_or_same' / 'undetectable'
        self.driver = driver          # callable(proc) for signal cases
        self.env = env


# ---------------------------------------------------------------------------------------------
# Running and judging


def run_case(c, outputs):
    env = dict(os.environ, **(c.env or {}))
    t0 = time.monotonic()
    p = subprocess.Popen(c.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if c.driver:
        c.driver(p)
    try:
        out, _ = p.communicate(timeout=c.deadline + 10)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, _ = p.communicate()
        timed_out = True
    elapsed = time.monotonic() - t0
    kill_group(p)  # anything the command left behind (a stopped rank)
    text = out.decode("utf-8", "replace")
    return judge(c, p.returncode, elapsed, timed_out, text, outputs)


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def generated_text(out):
    """The streamed continuation of `cllm generate --decode ar` (between its header and stats)."""
    m = re.search(r"--- ar ---\n(.*?)\n\[ar\] ", out, re.S)
    return m.group(1) if m else None


def judge(c, rc, elapsed, timed_out, out, outputs):
    if c.klass == "mpi":
        errors = [m.group(1) for line in out.splitlines() if (m := RANK_LINE.search(line.strip()))]
    else:
        errors = [m.group(3) for line in out.splitlines() if (m := ERROR_LINE.match(line.strip()))]
    res = {"name": c.name, "class": c.klass, "rc": rc, "seconds": round(elapsed, 2), "expect": c.expect,
           "cause": errors[0] if errors else "", "verdict": "ok", "why": ""}

    def fail(why):
        res["verdict"], res["why"] = "FAIL", why
        return res

    if timed_out or elapsed > c.deadline:
        return fail(f"ran {elapsed:.1f} s, deadline {c.deadline:.0f} s")
    if m := BAD_OUTPUT.search(out):
        return fail(f"output holds '{m.group(0)}'")
    if rc == 0:
        if c.expect == "refuse":
            return fail("exit 0, a refusal was expected")
        if c.expect in ("refuse_or_same", "undetectable"):
            got, want = generated_text(out), outputs.get(c.baseline)
            if got is None or want is None:
                return fail("exit 0 but no generated text to compare")
            if got != want:
                if c.expect == "undetectable":
                    res["verdict"] = "undetectable"
                    return res
                return fail(f"exit 0 with other output: {got!r} instead of {want!r}")
            res["verdict"] = "same"
        return res
    if c.expect == "run":
        return fail(f"exit {rc}, a successful run was expected: {errors[0] if errors else out[-300:]!r}")
    if rc < 0 or rc >= 128 and rc not in (134,) and not c.driver:
        return fail(f"ended by signal (status {rc})")
    if rc in (134, -6) :
        return fail("aborted (SIGABRT)")
    if not errors:
        return fail(f"no cause line; output ends {out[-300:]!r}")
    causes = {e for e in errors}
    if len(causes) > 1 and not c.klass.startswith("mpi"):
        return fail(f"{len(causes)} different cause lines: {sorted(causes)}")
    if not any(re.search(c.names, e) for e in errors):
        return fail(f"the cause does not name /{c.names}/: {errors[0]!r}")
    res["verdict"] = "refused"
    return res


# ---------------------------------------------------------------------------------------------
# Files


def write_variant(src, dst, edits=(), truncate=None):
    """Copy src to dst, apply (offset, bytes) edits, and truncate to `truncate` bytes."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        for off, b in edits:
            f.seek(off)
            f.write(b)
        if truncate is not None:
            f.truncate(truncate)
    return dst


def half_is_finite(b2):
    return ((struct.unpack("<H", b2)[0] >> 10) & 0x1F) != 0x1F


def flip_effect(dtype, rel, data, pos):
    """Whether flipping the byte at `pos` (already applied in `data`) makes a non-finite value: dtype
    F32/F16/BF16 or GGUF Q4_1/Q8_0, rel the byte's offset inside the tensor data."""
    if dtype in ("F32", 0):
        a = pos - rel % 4
        return not math.isfinite(struct.unpack("<f", data[a:a + 4])[0])
    if dtype in ("F16",):
        a = pos - rel % 2
        return not half_is_finite(data[a:a + 2])
    if dtype in ("BF16",):
        a = pos - rel % 2
        return not math.isfinite(struct.unpack("<f", b"\0\0" + data[a:a + 2])[0])
    if dtype == 3:  # Q4_1: d, m halves, 16 bytes of nibbles
        k = rel % 20
        a = pos - k
        return k < 4 and not (half_is_finite(data[a:a + 2]) and half_is_finite(data[a + 2:a + 4]))
    if dtype == 8:  # Q8_0: d half, 32 int8
        k = rel % 34
        return k < 2 and not half_is_finite(data[pos - k:pos - k + 2])
    return False


def gguf_cases(cli, model, work, rng, n_random):
    lay = gguf_layout.parse(model)
    base = lambda p: cli.gen(p)  # noqa: E731
    cases = []
    out = os.path.join(work, "gguf")
    os.makedirs(out, exist_ok=True)
    fname = re.escape(os.path.basename(model))[:8]
    names_file = r"\.gguf|GGUF|gguf"

    def add(name, expect, names, edits=(), truncate=None, b="gguf"):
        path = os.path.join(out, name + ".gguf")
        cases.append(Case("gguf/" + name, "gguf", lambda p=path, e=edits, t=truncate: (write_variant(model, p, e, t), base(p))[1],
                          expect, names, baseline=b))

    # Truncations: inside the header, the metadata, the tensor infos, the data, one byte short.
    for at in [0, 3, 7, 12, 20, 30, 100, 5000, lay.entries["tokenizer.ggml.tokens"].items_at + 1000,
               lay.entries["tokenizer.ggml.merges"].items_at + 77, lay.infos_at, lay.infos_at + 9, lay.infos_at + 5000,
               lay.data_at, lay.data_at + 1, lay.data_at + (lay.size - lay.data_at) // 2, lay.size - 1]:
        add(f"truncated_at_{at}", "refuse", names_file, truncate=at)
    u32, u64, i32 = (lambda v: struct.pack("<I", v)), (lambda v: struct.pack("<Q", v)), (lambda v: struct.pack("<i", v))
    # Header fields.
    add("bad_magic", "refuse", names_file, [(0, b"GGUX")])
    for v in [0, 1, 2, 4, 99, 0xFFFFFFFF]:
        add(f"version_{v}", "refuse" if v not in (2,) else "refuse_or_same", names_file, [(4, u32(v))])
    for v in [0, lay.n_tensors - 1, lay.n_tensors + 1, 1 << 40, (1 << 64) - 1]:
        add(f"n_tensors_{v}", "refuse", names_file, [(8, u64(v))])
    for v in [0, lay.n_kv - 1, lay.n_kv + 1, 1 << 40, (1 << 64) - 1]:
        add(f"n_kv_{v}", "refuse", names_file, [(16, u64(v))])
    # Metadata values of the wrong value or range.
    e = lay.entries
    hp = {"llama.block_count": [0, 31, 1000, 0xFFFFFFFF], "llama.context_length": [0, 0xFFFFFFFF, 0x80000000],
          "llama.embedding_length": [0, 575, 577, 1152, 0xFFFFFFFF], "llama.feed_forward_length": [0, 1535, 3072, 0xFFFFFFFF],
          "llama.attention.head_count": [0, 7, 8, 18, 0xFFFFFFFF], "llama.attention.head_count_kv": [0, 2, 4, 9, 10, 0xFFFFFFFF],
          "llama.vocab_size": [0, 49151, 49153, 0xFFFFFFFF], "llama.rope.dimension_count": [0, 63, 65, 128, 0xFFFFFFFF],
          "tokenizer.ggml.bos_token_id": [49152, 0xFFFFFFFF], "tokenizer.ggml.eos_token_id": [49152, 0xFFFFFFFF],
          "tokenizer.ggml.unknown_token_id": [49152, 0xFFFFFFFF], "tokenizer.ggml.padding_token_id": [49152, 0xFFFFFFFF]}
    unused = ("tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id")  # llama.cpp ignores them too
    for key, vals in hp.items():
        for v in vals:
            add(f"{key}={v}", "refuse_or_same" if key in unused else "refuse", re.escape(key.split(".")[-1]) + "|" + re.escape(key) + "|" + names_file,
                [(e[key].value_at, u32(v))])
    for key in ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"]:
        for v in [float("nan"), float("inf"), -1.0, 0.0, 1e38]:
            # a rope base of 1e38 is a legal (if useless) setting: bounded, any output
            add(f"{key}={v}", "any_bounded" if v == 1e38 and "freq_base" in key else "refuse", re.escape(key) + "|" + names_file, [(e[key].value_at, struct.pack("<f", v))])
    # Wrong value types: the same bytes read as another type, and types that change the size.
    for key in ["llama.block_count", "llama.attention.head_count", "llama.context_length", "llama.rope.freq_base"]:
        for t in [0, 5, 6, 7, 8, 9, 10, 12, 13, 99]:
            if t == e[key].type:
                continue
            # an integer type of the same size reads the same value: refused or the same output
            add(f"{key}_type_{t}", "refuse_or_same", re.escape(key) + "|" + names_file, [(e[key].type_at, u32(t))])
    for key in ["general.architecture", "tokenizer.ggml.model"]:
        s = e[key].value
        for v in ["gpt2" if s != "gpt2" else "llama", "x" * len(s)]:
            add(f"{key}={v}", "refuse", re.escape(key) + "|" + names_file,
                [(e[key].value_at + 8, v.encode()[:len(s)].ljust(len(s), b"x"))])
        add(f"{key}_length_huge", "refuse", names_file, [(e[key].value_at, u64(1 << 62))])
        add(f"{key}_length_0", "refuse", re.escape(key) + "|" + names_file, [(e[key].value_at, u64(0))])
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"]:
        a = e[key]
        for v in [0, a.count - 1, a.count + 1, 1 << 40, (1 << 64) - 1]:
            add(f"{key}_count_{v}", "refuse", re.escape(key) + "|" + names_file, [(a.count_at, u64(v))])
        for t in [0, 4, 6, 9, 13, 99]:
            if t != a.elem_type:
                add(f"{key}_elem_type_{t}", "refuse_or_same", re.escape(key) + "|" + names_file, [(a.value_at, u32(t))])
    tt = e["tokenizer.ggml.token_type"]
    for i, v in [(5, 7), (100, 255), (49151, -1 & 0xFFFFFFFF)]:
        add(f"token_type[{i}]={v}", "refuse", "token_type", [(tt.items_at + 4 * i, u32(v))])
    tok = e["tokenizer.ggml.tokens"]
    add("token_0_length_huge", "refuse", "tokenizer.ggml.tokens|" + names_file, [(tok.items_at, u64(1 << 50))])
    k0 = 24  # the first key's length
    add("key_length_huge", "refuse", names_file, [(k0, u64(1 << 50))])
    add("key_with_nul", "refuse", names_file, [(k0 + 8 + 3, b"\0")])
    add("key_renamed_block_count", "refuse", "block_count|" + names_file,
        [(e["llama.block_count"].type_at - len("block_count"), b"blxck_count")])
    # Tensor infos.
    ti = {t.name: t for t in lay.tensors}
    for tname in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"]:
        t = ti[tname]
        q = re.escape(tname)
        for nd in [0, 3, 5, 0xFFFFFFFF]:
            add(f"{tname}_n_dims_{nd}", "refuse", q + "|" + names_file, [(t.n_dims_at, u32(nd))])
        for v in [0, 1, t.dims[0] + 1, 1 << 40, (1 << 63) + 1]:
            add(f"{tname}_dim0_{v}", "refuse", q + "|" + names_file, [(t.dims_at, u64(v))])
        for ty in [0, 1, 2, 6, 12, 14, 30, 39, 99, 0xFFFFFFFF]:
            if ty != t.type:
                add(f"{tname}_type_{ty}", "refuse", q + "|" + names_file, [(t.type_at, u32(ty))])
        for off in [t.offset + 1, t.offset + 32, lay.size, 1 << 40, (1 << 64) - 32]:
            add(f"{tname}_offset_{off}", "refuse", q + "|" + names_file, [(t.offset_at, u64(off))])
        add(f"{tname}_renamed", "refuse", q + "|" + names_file, [(t.name_at + 8, b"X")])
    # Two tensors with one name.
    a, b = ti["blk.1.attn_k.weight"], ti["blk.1.attn_v.weight"]
    add("duplicate_tensor_name", "refuse", "attn_[kv]|" + names_file, [(b.name_at + 8 + len("blk.1.attn_"), b"k")])
    # Tensor data: NaN/Inf injected, and random bit flips.
    data = open(model, "rb").read()
    for tname, row in [("output_norm.weight", 0), ("blk.3.attn_norm.weight", 100), ("blk.7.ffn_up.weight", 0),
                       ("token_embd.weight", 5), ("blk.29.attn_v.weight", 3)]:
        t = ti[tname]
        at = lay.data_at + t.offset + (row * 4 if t.type == 0 else row * (20 if t.type == 3 else 34))
        for name, bits in [("nan", struct.pack("<f", float("nan")) if t.type == 0 else struct.pack("<H", 0x7E00)),
                           ("inf", struct.pack("<f", float("inf")) if t.type == 0 else struct.pack("<H", 0x7C00))]:
            add(f"{tname}_{name}", "refuse", re.escape(tname) + ".*(nan|inf|finite)", [(at, bits)])
    for i in range(n_random):
        t = lay.tensors[rng.randrange(len(lay.tensors))]
        nbytes = (lay.tensors[lay.tensors.index(t) + 1].offset if t is not lay.tensors[-1] else lay.size - lay.data_at) - t.offset
        rel = rng.randrange(max(1, nbytes))
        pos = lay.data_at + t.offset + rel
        bit = 1 << rng.randrange(8)
        new = bytearray(data[pos - 40:pos + 40])
        new[40] ^= bit
        bad = flip_effect(t.type, rel, bytes(new), 40)
        add(f"data_flip_{i}_{t.name}_{rel}", "refuse" if bad else "undetectable",
            re.escape(t.name) + ".*(nan|inf|finite)", [(pos, bytes([data[pos] ^ bit]))])
    # Random bit flips in the metadata and tensor infos: refused, or no change to what runs.
    for i in range(n_random):
        pos = rng.randrange(24, lay.data_at)
        bit = 1 << rng.randrange(8)
        add(f"meta_flip_{i}_{pos}", "refuse_or_same", names_file + "|tensor|token|key", [(pos, bytes([data[pos] ^ bit]))])
    return cases


def safetensors_cases(cli, hf_dir, work, rng, n_random, tag="hf"):
    """HF directories with one thing wrong: the safetensors file or config.json."""
    st = os.path.join(hf_dir, "model.safetensors")
    raw = open(st, "rb").read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hlen])
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    cases = []
    out = os.path.join(work, "st_" + tag)
    os.makedirs(out, exist_ok=True)
    names_file = r"safetensors|config\.json|/st_hf"

    def variant(name, st_bytes=None, config=None, config_text=None):
        d = os.path.join(out, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        shutil.copytree(hf_dir, d)
        if st_bytes is not None:
            open(os.path.join(d, "model.safetensors"), "wb").write(st_bytes)
        if config is not None:
            json.dump(config, open(os.path.join(d, "config.json"), "w"))
        if config_text is not None:
            open(os.path.join(d, "config.json"), "w").write(config_text)
        return d

    def add(name, expect, names, baseline=tag, **kw):
        cases.append(Case(f"st_{tag}/" + name, "safetensors", lambda: cli.gen(variant(name, **kw)), expect, names, baseline=baseline))

    def with_header(h, data=None):
        hb = json.dumps(h).encode()
        return struct.pack("<Q", len(hb)) + hb + (raw[8 + hlen:] if data is None else data)

    for at in [0, 4, 8, 9, 8 + hlen // 2, 8 + hlen, 8 + hlen + 1, len(raw) // 2, len(raw) - 1]:
        add(f"truncated_at_{at}", "refuse", names_file, st_bytes=raw[:at])
    for v in [0, 1, hlen - 1, hlen + 1, len(raw), 1 << 40, (1 << 64) - 1]:
        add(f"header_length_{v}", "refuse", names_file, st_bytes=struct.pack("<Q", v) + raw[8:])
    add("header_not_json", "refuse", names_file, st_bytes=raw[:8] + b"[" + raw[9:])
    add("header_is_list", "refuse", names_file, st_bytes=with_header([1, 2, 3]))
    add("header_bad_utf8", "refuse", names_file, st_bytes=raw[:9] + b"\xff" + raw[10:])
    tensors = [k for k in header if k != "__metadata__"]
    for k in [tensors[0], "model.norm.weight", "model.layers.1.mlp.down_proj.weight"]:
        if k not in header:
            continue
        t = header[k]
        q = re.escape(k)
        b0, b1 = t["data_offsets"]
        total = len(raw) - 8 - hlen
        for name, change in [("end_past_eof", {"data_offsets": [b0, total + 4]}),
                             ("begin_after_end", {"data_offsets": [b1, b0]}),
                             ("offsets_huge", {"data_offsets": [1 << 62, (1 << 62) + b1 - b0]}),
                             ("offsets_negative", {"data_offsets": [-4, b1 - b0 - 4]}),
                             ("offsets_float", {"data_offsets": [float(b0), float(b1)]}),
                             ("offsets_one_value", {"data_offsets": [b0]}),
                             ("offsets_string", {"data_offsets": "0-4"}),
                             ("shape_too_big", {"shape": [d * 2 for d in t["shape"]]}),
                             ("shape_extra_dim", {"shape": t["shape"] + [1, 2]}),
                             ("shape_negative", {"shape": [-d for d in t["shape"]]}),
                             ("shape_overflow", {"shape": [1 << 32, 1 << 32, 1 << 32]}),
                             ("shape_empty", {"shape": []}),
                             ("shape_zero", {"shape": [0] + t["shape"][1:]}),
                             ("dtype_F64", {"dtype": "F64"}), ("dtype_I8", {"dtype": "I8"}),
                             ("dtype_unknown", {"dtype": "Q4"}), ("dtype_missing", {"dtype": None})]:
            h = copy.deepcopy(header)
            h[k].update(change)
            if change.get("dtype", 1) is None:
                del h[k]["dtype"]
            add(f"{k}_{name}", "refuse", q + "|" + names_file, st_bytes=with_header(h))
        h = copy.deepcopy(header)
        del h[k]
        add(f"{k}_missing", "refuse", q, st_bytes=with_header(h))
    # Two tensors over the same bytes: a wrong weight, but a well-formed file (overlap refused).
    h = copy.deepcopy(header)
    a, b = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
    if a in h and b in h and h[a]["shape"] == h[b]["shape"]:
        h[b]["data_offsets"] = h[a]["data_offsets"]
        add("overlapping_tensors", "refuse", re.escape(a) + "|" + re.escape(b) + "|overlap", st_bytes=with_header(h))
    # config.json: each shape and range field with wrong values and types.
    for key, vals in {"hidden_size": [0, -1, 255, 2147483647, 1e30, "256", None, 2.5, True],
                      "num_attention_heads": [0, -8, 3, 7, 2147483647, "8", None],
                      "num_key_value_heads": [0, -4, 3, 5, 16, 2147483647, "4"],
                      "intermediate_size": [0, -1, 511, 2147483647, "512"],
                      "num_hidden_layers": [0, -1, 3, 2147483647, 1.5, "2"],
                      "vocab_size": [0, -1, 511, 513, 2147483647, "512"],
                      "max_position_embeddings": [0, -1, 2147483647, 1e30, "512"],
                      "rms_norm_eps": [0, -1e-5, "nan", 1e30, None],
                      "rope_theta": [0, -1, "x", 1e300, None],
                      "head_dim": [0, 16, 64, -32, 2147483647],
                      "rope_scaling": [{"rope_type": "yarn"}, {"rope_type": "llama3", "factor": "x"}, 5, "linear"],
                      "hidden_act": ["gelu", "relu", 7],
                      "tie_word_embeddings": ["yes", 2],
                      "architectures": [["GPT2LMHeadModel"], "LlamaForCausalLM", []],
                      "torch_dtype": ["int4", 3]}.items():
        for v in vals:
            c = dict(cfg)
            c[key] = v
            # A value equal to the original (after the file's own type) runs unchanged.
            add(f"config_{key}={json.dumps(v)}", "refuse_or_same", re.escape(key) + "|config", config=c)
        if key in cfg:
            c = dict(cfg)
            del c[key]
            add(f"config_{key}_deleted", "refuse_or_same", re.escape(key) + "|config", config=c)
    add("config_not_json", "refuse", "config", config_text="{\"hidden_size\": 256,")
    add("config_is_list", "refuse", "config", config_text="[]")
    add("config_empty", "refuse", "config", config_text="")
    # NaN/Inf in the data, and random bit flips.
    data_at = 8 + hlen
    for k in [tensors[0], "model.norm.weight", "model.layers.1.mlp.down_proj.weight"]:
        if k not in header:
            continue
        t = header[k]
        size = {"F32": 4, "F16": 2, "BF16": 2}[t["dtype"]]
        for idx in [0, (t["data_offsets"][1] - t["data_offsets"][0]) // size - 1]:
            at = data_at + t["data_offsets"][0] + idx * size
            for name, v in [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]:
                bits = struct.pack("<f", v) if size == 4 else (np.array([v], dtype=np.float16).tobytes()
                                                               if t["dtype"] == "F16" else struct.pack("<f", v)[2:])
                b = bytearray(raw)
                b[at:at + size] = bits
                add(f"{k}[{idx}]={name}", "refuse", re.escape(k) + ".*(nan|inf)", st_bytes=bytes(b))
    for i in range(n_random):
        k = tensors[rng.randrange(len(tensors))]
        t = header[k]
        rel = rng.randrange(t["data_offsets"][1] - t["data_offsets"][0])
        pos = data_at + t["data_offsets"][0] + rel
        b = bytearray(raw)
        b[pos] ^= 1 << rng.randrange(8)
        bad = flip_effect(t["dtype"], rel, bytes(b), pos)
        add(f"data_flip_{i}_{k}_{rel}", "refuse" if bad else "undetectable", re.escape(k) + ".*(nan|inf)", st_bytes=bytes(b))
    for i in range(n_random):
        pos = rng.randrange(8, 8 + hlen)
        b = bytearray(raw)
        b[pos] ^= 1 << rng.randrange(7)
        add(f"header_flip_{i}_{pos}", "refuse_or_same", names_file + "|tensor|model\\.", st_bytes=bytes(b))
    return cases


def h5_cases(cli, h5, work, rng, n_random):
    raw = open(h5, "rb").read()
    out = os.path.join(work, "h5")
    os.makedirs(out, exist_ok=True)
    cases = []

    def add(name, expect, edits=(), truncate=None):
        p = os.path.join(out, name + ".h5")
        cases.append(Case("h5/" + name, "h5", lambda: (write_variant(h5, p, edits, truncate), cli.gen(p))[1], expect,
                          r"\.h5|HDF5|checksum|tensor", baseline="h5"))

    for at in [0, 8, 100, 1000, 4096, len(raw) // 4, len(raw) // 2, len(raw) - 100, len(raw) - 1]:
        add(f"truncated_at_{at}", "refuse", truncate=at)
    for i in range(n_random * 2):
        pos = rng.randrange(len(raw))
        add(f"flip_{i}_{pos}", "refuse_or_same", [(pos, bytes([raw[pos] ^ (1 << rng.randrange(8))]))])
    for i in range(n_random // 2):
        pos = rng.randrange(len(raw) - 64)
        add(f"zeroed_64_at_{pos}", "refuse_or_same", [(pos, bytes(64))])
    return cases


def trajectory_cases(cli, model, work, rng, n_random):
    """A trajectory file damaged by bit flips, resumed by `cllm trajectories`: it finishes (exit 0)
    or refuses the file with a cause line; never a crash, an HDF5 error dump or a hang."""
    out = os.path.join(work, "traj")
    os.makedirs(out, exist_ok=True)
    prompts = os.path.join(out, "prompts.txt")
    with open(prompts, "w") as f:
        f.write("The quick brown fox\nOnce upon a time\nwrite a function\n")
    clean = os.path.join(out, "clean.h5")
    argv = lambda path: cli.cmd("trajectories", "--model", model, "--prompts", prompts, "--out", path, "--block", "4",
                                "--max-new-tokens", "8", "--max-repeat", "0", "--threads", "1")
    sh(*argv(clean))
    raw = open(clean, "rb").read()
    cases = []
    for i in range(n_random * 4):
        edits = []
        for _ in range(rng.choice([1, 1, 2, 4])):
            pos = rng.randrange(len(raw))
            edits.append((pos, bytes([raw[pos] ^ (1 << rng.randrange(8))])))
        p = os.path.join(out, f"flip_{i}.h5")
        cases.append(Case(f"trajectory/flip_{i}", "trajectory", lambda p=p, e=edits: (write_variant(clean, p, e), argv(p))[1],
                          "any_bounded", r"\.h5|HDF5|damaged|prompt|file"))
    return cases


# ---------------------------------------------------------------------------------------------
# Flags and prompts


def flag_cases(cli, small, work):
    cases = []
    # " 5" is 5 (leading blanks are skipped), so it may run; every value runs or is refused naming the flag.
    values = ["2147483647", "2147483648", "9223372036854775807", "99999999999999999999", "-1", "-2147483648", "0", "abc",
              "", "1.5", "0x10", "nan", "1e9", " 5", "5abc"]
    # For each flag: the values that may run (exit 0); every other value must be refused naming the flag.
    gen_flags = {"threads": {"0", " 5"}, "max-new-tokens": {"0", " 5"}, "block": {" 5"},
                 "seed": {"2147483647", "2147483648", "9223372036854775807", "-1", "-2147483648", "0", " 5"},
                 "pad-id": {"0", " 5"}, "limit": {"0", "2147483647", " 5"}, "warmup-tokens": {"0", "2147483647", " 5"},
                 "comm-deadline": {"2147483647", "2147483648", "9223372036854775807", "99999999999999999999", "1.5", "1e9",
                                   " 5"}}
    prompts = os.path.join(work, "prompts.txt")
    open(prompts, "w").write("hello\nworld\n")
    for flag, ok in gen_flags.items():
        for v in values:
            argv = cli.gen(small, extra=[f"--{flag}", v])
            if flag in ("limit", "warmup-tokens"):
                argv = cli.cmd("generate", "--model", small, "--prompts", prompts, "--max-new-tokens", "4", "--quiet",
                               f"--{flag}", v)
            cases.append(Case(f"flags/generate --{flag} '{v}'", "flags", argv, "any_bounded" if v in ok else "refuse",
                              re.escape(f"--{flag}") + "|" + re.escape(flag)))
    bench_flags = {"threads": {"0", " 5"}, "prefill": {"0", " 5"}, "tokens": {" 5"}, "reps": {" 5"}, "ns": {" 5"},
                   "contexts": {"0", " 5"}, "batch-sizes": {""}, "batch-ns": {" 5", "2147483647"},
                   "batch-context": {"0", " 5", "2147483647"}}  # without --batch-sizes these two are unused
    for flag, ok in bench_flags.items():
        for v in values:
            argv = cli.cmd("bench", "--model", small, "--ns", "1", "--contexts", "4", "--tokens", "2", "--reps", "1",
                           "--batch-context", "8", f"--{flag}", v)
            cases.append(Case(f"flags/bench --{flag} '{v}'", "flags", argv, "any_bounded" if v in ok else "refuse",
                              re.escape(f"--{flag}") + "|" + re.escape(flag)))
    for flag in ["max-batch", "max-queue", "max-context", "max-step-rows", "port", "threads"]:
        for v in values:
            argv = cli.cmd("serve", "--model", small, "--port", "0", f"--{flag}", v)
            # a queue, context or step-rows limit of 2^31-1 means "no limit" (the context is capped at the model's)
            ok = ((v == "0" and flag in ("port", "threads", "max-queue", "max-step-rows")) or v == " 5" or
                  (v == "2147483647" and flag in ("max-queue", "max-context", "max-step-rows")))
            cases.append(Case(f"flags/serve --{flag} '{v}'", "flags", argv, "serve" if ok else "refuse",
                              re.escape(f"--{flag}") + "|" + re.escape(flag), driver=serve_driver))
    for flag in ["vocab", "hidden", "ffn", "layers", "heads", "kv-heads", "ctx"]:
        for v in ["0", "-1", "2147483647", "abc", "3"]:
            d = os.path.join(work, "rm_" + flag + v)
            argv = cli.cmd("random-model", "--shape", "custom", "--vocab", "512", "--hidden", "64", "--ffn", "128",
                           "--layers", "1", "--heads", "4", "--ctx", "64", "--out", d, f"--{flag}", v)
            cases.append(Case(f"flags/random-model --{flag} '{v}'", "flags", argv, "any_bounded",
                              re.escape(f"--{flag}") + "|" + re.escape(flag) + "|" + {"vocab": "vocab", "hidden": "hidden",
                              "ffn": "intermediate", "layers": "layer", "heads": "head", "kv-heads": "head", "ctx": "position"}[flag]))
    for v in ["0", "-1", "2147483647", "abc", "3"]:
        argv = cli.cmd("convert", "--model", small, "--to", "h5", "--out", os.path.join(work, f"conv{v}.h5"), "--tp-chunks", v)
        cases.append(Case(f"flags/convert --tp-chunks '{v}'", "flags", argv, "any_bounded", "tp-chunks"))
    return cases


def serve_driver(p):
    """A server that starts is stopped after it prints its address (or after 8 s)."""
    p._serve_started = False


def prompt_cases(cli, small, ctx, work):
    cases = []
    words = lambda n: " ".join(["a"] * n)  # noqa: E731 (one token per "a" and its space, about)
    for n, new, expect in [(ctx + 100, 4, "refuse"), (ctx * 4, 4, "refuse"), (ctx - 2, 64, "refuse"),
                           (ctx // 4, 2147483647, "refuse"), (ctx // 4, 2147483648, "refuse"), (50000, 4, "refuse")]:
        cases.append(Case(f"prompt/{n}_words_new_{new}", "prompt", cli.gen(small, prompt=words(n), new=new), expect,
                          r"positions|max_new_tokens|max-new-tokens|prompt"))
    for n, expect in [(1, "run"), (ctx // 4, "run")]:
        cases.append(Case(f"prompt/{n}_words_fits", "prompt", cli.gen(small, prompt=words(n), new=4), expect, ""))
    for name, text in [("empty", ""), ("nul_byte", "a\x01b"), ("invalid_utf8_file", None)]:
        if text is None:
            p = os.path.join(work, "bad_utf8.txt")
            open(p, "wb").write(b"ok\n\xff\xfe bad\n")
            argv = cli.cmd("generate", "--model", small, "--prompts", p, "--max-new-tokens", "2", "--quiet")
            cases.append(Case("prompt/" + name, "prompt", argv, "refuse", r"line 2|UTF-8"))
        else:
            cases.append(Case("prompt/" + name, "prompt", cli.gen(small, prompt=text, new=2), "any_bounded", "prompt"))
    p = os.path.join(work, "long_prompts.txt")
    open(p, "w").write("hello\n" + words(ctx + 50) + "\n")
    argv = cli.cmd("generate", "--model", small, "--prompts", p, "--max-new-tokens", "4", "--quiet")
    cases.append(Case("prompt/prompts_file_line_2_too_long", "prompt", argv, "refuse", r"prompt 1|positions"))
    return cases


# ---------------------------------------------------------------------------------------------
# Multi-rank cases


def rank_pids(tag, rank):
    """Pids of this campaign's processes of MPI rank `rank` (found by an environment tag)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"CLLM_FAULT_TAG={tag}".encode() in env and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            pids.append(int(d))
    return pids


def signal_driver(tag, rank, sig, after, wait_for=None):
    def drive(p):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            pids = rank_pids(tag, rank)
            if pids:
                break
            time.sleep(0.005)
        if after:
            time.sleep(after)
        for pid in rank_pids(tag, rank):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    return drive


def mpi_cases(cli, mpirun, models, work):
    cases = []
    base = [mpirun, "--oversubscribe", "-x", "CLLM_FAULT_TAG"]
    g = lambda m, new=4, extra=(): ["-np", "1", cli.exe, "generate", "--model", m, "--max-new-tokens", str(new),  # noqa: E731
                                    "--decode", "ar", "--comm-deadline", str(COMM_DEADLINE), "--threads", "1", *extra]
    kv4, other, tied, kv4h5, otherh5 = (models[k] for k in ["kv4", "kv4_other", "kv2_tied", "kv4.h5", "kv4_other.h5"])
    gg, gg_other, gg_one = models["gguf"], models["gguf_other"], models["gguf_one_tensor"]

    def add(name, argv, names, deadline=MPI_DEADLINE, driver=None, tag=None, expect="refuse"):
        env = {"CLLM_FAULT_TAG": tag or name, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "OMPI_MCA_rmaps_base_oversubscribe": "1"}
        cases.append(Case("mpi/" + name, "mpi", argv, expect, names, deadline=deadline, driver=driver, env=env))

    def mpmd(*paths, new=4):
        argv = list(base)
        for i, m in enumerate(paths):
            if i:
                argv.append(":")
            argv += g(m, new)
        return argv

    stale = r"rank (\d) \(host [^)]+\) loaded a checkpoint different from rank 0's: tensor '[^']+' differs"
    add("stale_rank1_of_2_safetensors", mpmd(kv4, other), stale.replace(r"(\d)", "1"))
    kv3, kv3o, kv3h5, kv3oh5 = (models[k] for k in ["kv3", "kv3_other", "kv3.h5", "kv3_other.h5"])
    add("stale_rank2_of_3_safetensors", mpmd(kv3, kv3, kv3o), stale.replace(r"(\d)", "2"))
    add("stale_rank0_of_3_safetensors", mpmd(kv3o, kv3, kv3), stale.replace(r"(\d)", "[12]"))
    add("stale_rank1_of_2_h5", mpmd(kv4h5, otherh5), stale.replace(r"(\d)", "1"))
    add("stale_rank2_of_3_h5", mpmd(kv3h5, kv3h5, kv3oh5), stale.replace(r"(\d)", "2"))
    add("stale_rank1_of_3_gguf", mpmd(gg, gg_other, gg), stale.replace(r"(\d)", "1"))
    add("stale_rank2_of_3_gguf_one_tensor", mpmd(gg, gg, gg_one), stale.replace("tensor '[^']+'", r"tensor '(blk\.5\.ffn_down|model\.layers\.5\.mlp\.down_proj)\.weight'").replace(r"(\d)", "2"))
    # The same weights as safetensors on one rank and .h5 on the other: the fingerprints are made
    # differently per format, so this is refused as another checkpoint (safe, if over-cautious).
    add("other_format_same_weights_rank1", mpmd(kv4, kv4h5), "rank 1", expect="any_bounded")
    add("other_shape_rank1_of_2", mpmd(kv4, tied), r"rank 1 \(host [^:]+: .*kv2_tied\) opened a checkpoint whose")
    add("other_shape_rank2_of_3", mpmd(kv3, kv3, kv4), r"rank 2 \(host [^:]+: .*kv4\) opened a checkpoint whose")
    add("missing_file_rank1", mpmd(kv4, kv4 + "_nope"), r"rank 1.*kv4_nope")
    long_model = models["long"]
    # Signals from outside: SIGSTOP (a stalled node) and SIGKILL at start-up and mid-run.
    for np_, rank, sig, after, what in [(2, 1, signal.SIGSTOP, 0, "start"), (3, 2, signal.SIGSTOP, 0, "start"),
                                        (2, 1, signal.SIGSTOP, 1.0, "run"), (2, 0, signal.SIGSTOP, 1.0, "run"),
                                        (3, 1, signal.SIGSTOP, 1.0, "run"), (2, 1, signal.SIGKILL, 0, "start"),
                                        (2, 1, signal.SIGKILL, 1.0, "run"), (2, 0, signal.SIGKILL, 1.0, "run"),
                                        (3, 2, signal.SIGKILL, 1.0, "run")]:
        name = f"{signal.Signals(sig).name}_rank{rank}_of_{np_}_at_{what}"
        argv = mpmd(*([long_model] * np_), new=8000)  # runs well past the signal (1 s after start)
        if sig == signal.SIGSTOP:
            names = (rf"not arrived: rank {rank} \(host [^)]+\)|rank {rank}.*(stalled|did not)|start-up timed out"
                     if what == "run" else rf"rank {rank}|start-up timed out")
        else:
            names = rf"rank {rank}|process rank {rank}"
        add(name, argv, names, driver=signal_driver(name, rank, sig, after), tag=name)
    # Over-long prompt under mpirun.
    argv = list(base) + ["-np", "3", cli.exe, "generate", "--model", kv3, "--prompt", "a" * 700, "--comm-deadline", "5"]
    add("long_prompt_tp3", argv, r"rank 0: error: cannot decode: prompt")
    return cases


# ---------------------------------------------------------------------------------------------


class Cli:
    def __init__(self, exe):
        self.exe = os.path.abspath(exe)

    def cmd(self, *args):
        return [self.exe, *args]

    def gen(self, model, prompt=PROMPT, new=NEW, extra=()):
        return [self.exe, "generate", "--model", model, "--prompt", prompt, "--max-new-tokens", str(new), "--decode", "ar",
                "--threads", "1", *extra]


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_models(cli, gguf_model, work):
    m = {}
    common = ["--shape", "custom", "--vocab", "512", "--hidden", "256", "--heads", "8", "--ctx", "512"]
    for name, extra in [("kv4", ["--ffn", "512", "--layers", "2", "--kv-heads", "4", "--seed", "11"]),
                        ("kv4_other", ["--ffn", "512", "--layers", "2", "--kv-heads", "4", "--seed", "99"]),
                        ("kv2_tied", ["--ffn", "768", "--layers", "3", "--kv-heads", "2", "--tied", "--seed", "12"]),
                        ("bf16", ["--ffn", "512", "--layers", "2", "--kv-heads", "4", "--seed", "11", "--dtype", "bf16"])]:
        m[name] = os.path.join(work, name)
        sh(cli.exe, "random-model", *common, *extra, "--out", m[name])
    # Shapes that split over 3 ranks as well as 2 (heads 6, KV heads 3 or 6, FFN 1152).
    for name, seed in [("kv3", "21"), ("kv3_other", "22")]:
        m[name] = os.path.join(work, name)
        sh(cli.exe, "random-model", "--shape", "custom", "--vocab", "768", "--hidden", "384", "--heads", "6", "--kv-heads",
           "3", "--ctx", "512", "--ffn", "1152", "--layers", "2", "--seed", seed, "--out", m[name])
    m["long"] = os.path.join(work, "long")
    sh(cli.exe, "random-model", "--shape", "custom", "--vocab", "768", "--hidden", "384", "--heads", "6", "--ctx", "8192",
       "--ffn", "1152", "--layers", "4", "--seed", "5", "--out", m["long"])
    for name in ["kv4", "kv4_other", "kv3", "kv3_other"]:
        m[name + ".h5"] = os.path.join(work, name + ".h5")
        sh(cli.exe, "convert", "--model", m[name], "--to", "h5", "--out", m[name + ".h5"])
    # GGUF checkpoints for the multi-rank cases: SmolLM2, the same with every Q4_1 nibble changed
    # (another checkpoint of the same shape) and with one tensor's nibbles changed.
    lay = gguf_layout.parse(gguf_model)
    data = bytearray(open(gguf_model, "rb").read())
    m["gguf"] = gguf_model
    for name, which in [("gguf_other", None), ("gguf_one_tensor", "blk.5.ffn_down.weight")]:
        b = bytearray(data)
        for i, t in enumerate(lay.tensors):
            if t.type != 3 or (which and t.name != which):
                continue
            start = lay.data_at + t.offset
            n = int(np.prod(t.dims)) // 32
            blocks = np.frombuffer(b, dtype=np.uint8, count=n * 20, offset=start).reshape(n, 20).copy()
            blocks[:, 4:] ^= 0x5A
            b[start:start + n * 20] = blocks.tobytes()
        m[name] = os.path.join(work, name + ".gguf")
        open(m[name], "wb").write(b)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cllm", required=True)
    ap.add_argument("--model", required=True, help="a GGUF checkpoint (Q4_1 SmolLM2 in CI)")
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "")
    ap.add_argument("--subset", choices=["ci", "full"], default="full")
    ap.add_argument("--work", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--only", default="", help="run the cases whose name matches this regex")
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = a.work or tempfile.mkdtemp(prefix="cllm_faults_")
    os.makedirs(work, exist_ok=True)
    cli = Cli(a.cllm)
    t_setup = time.monotonic()
    models = make_models(cli, a.model, work)
    n_random = 6 if a.subset == "ci" else 16
    # Unmodified outputs, the yardstick of every exit-0 run.
    outputs = {}
    for key, path in [("gguf", a.model), ("hf", models["kv4"]), ("h5", models["kv4.h5"])]:
        r = subprocess.run(cli.gen(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)
        outputs[key] = generated_text(r.stdout.decode("utf-8", "replace"))
    cases = (gguf_cases(cli, a.model, work, rng, n_random) + safetensors_cases(cli, models["kv4"], work, rng, n_random) +
             safetensors_cases(cli, models["bf16"], work, rng, n_random // 2, "hf_bf16") + h5_cases(cli, models["kv4.h5"], work, rng, n_random) +
             trajectory_cases(cli, models["kv4"], work, rng, n_random) +
             flag_cases(cli, models["kv4"], work) + prompt_cases(cli, models["kv4"], 512, work))
    # the bf16 copy's own output is its baseline
    r = subprocess.run(cli.gen(models["bf16"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)
    outputs["hf_bf16"] = generated_text(r.stdout.decode())
    if a.mpirun:
        cases += mpi_cases(cli, a.mpirun, models, work)
    if a.subset == "ci":
        # Every eighth file and flag case, every prompt case, every multi-rank checkpoint case, and one
        # stall and one kill at start-up and mid-run: about two minutes on 2 cores.
        ci_signals = ("SIGSTOP_rank1_of_2_at_run", "SIGSTOP_rank1_of_2_at_start", "SIGKILL_rank1_of_2_at_run")
        cases = [c for i, c in enumerate(cases) if c.klass == "prompt" or i % 8 == 0 or
                 (c.klass == "mpi" and ("SIG" not in c.name or c.name.endswith(ci_signals)))]
    if a.only:
        cases = [c for c in cases if re.search(a.only, c.name)]
    print(f"setup {time.monotonic() - t_setup:.1f} s; {len(cases)} cases in {work}", flush=True)
    results = []
    for c in cases:
        if callable(c.argv):
            c.argv = c.argv()
        r = run_serve(c) if c.expect == "serve" or (c.driver is serve_driver) else run_case(c, outputs)
        if c.expect == "any_bounded" and r["verdict"] == "FAIL" and r["why"].startswith("exit 0"):
            r["verdict"] = "ok"
        results.append(r)
        print(f"{r['verdict']:12s} {r['seconds']:6.2f} s  rc={r['rc']:<4} {c.name}: {r['why'] or r['cause'][:150]}", flush=True)
    summary(results)
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r["verdict"] == "FAIL" for r in results) else 0


def run_serve(c):
    """cllm serve with one flag value: refused (as run_case judges), or it starts listening and is stopped."""
    env = dict(os.environ)
    t0 = time.monotonic()
    p = subprocess.Popen(c.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    out = b""
    os.set_blocking(p.stdout.fileno(), False)
    started = False
    while time.monotonic() - t0 < c.deadline:
        chunk = p.stdout.read() or b""
        out += chunk
        if re.search(rb"ready: ", out):  # it listens while loading; ready once every check has passed
            started = True
            break
        if p.poll() is not None:
            out += p.stdout.read() or b""
            break
        time.sleep(0.05)
    kill_group(p)
    p.wait()
    elapsed = time.monotonic() - t0
    text = out.decode("utf-8", "replace")
    if started:
        res = {"name": c.name, "class": c.klass, "rc": 0, "seconds": round(elapsed, 2), "expect": c.expect, "cause": "",
               "verdict": "ok" if c.expect == "serve" else "FAIL", "why": "" if c.expect == "serve" else "the server started"}
        return res
    c2 = copy.copy(c)
    c2.expect = "refuse"
    c2.driver = None
    return judge(c2, p.returncode if p.returncode is not None else -9, elapsed, elapsed >= c.deadline, text, {})


def summary(results):
    by = {}
    for r in results:
        by.setdefault(r["class"], []).append(r)
    print("\nclass        cases  refused  same  ran  undetectable  FAIL  slowest exit (s)")
    for k, rs in by.items():
        cnt = lambda v: sum(r["verdict"] == v for r in rs)  # noqa: E731
        print(f"{k:12s} {len(rs):5d} {cnt('refused'):8d} {cnt('same'):5d} {cnt('ok'):4d} {cnt('undetectable'):13d} "
              f"{cnt('FAIL'):5d}  {max(r['seconds'] for r in rs):8.2f}")
    print(f"total {len(results)} cases, {sum(r['verdict'] == 'FAIL' for r in results)} failed")


if __name__ == "__main__":
    sys.exit(main())
