#!/usr/bin/env python3
"""Whole-model logit fixtures from Hugging Face transformers (the reference for cllm's forward).

Usage:
  python3 tests/reference/make_logit_fixtures.py --model PATH --name NAME \
      --out tests/fixtures/logits/NAME.json [--device cpu|cuda] [--prompt-set auto|text|ids]

  PATH is a .gguf file (llama.cpp; transformers dequantizes Q4_1/Q8_0/... to float32 and un-permutes q/k)
  or a Hugging Face checkpoint directory (config.json + safetensors [+ tokenizer files]).

What it does (float32, eager attention, no KV-cache tricks in the reference forward):
  For each prompt of a fixed list (see PROMPTS_TEXT / ids_prompts below):
    ids        the prompt token ids
    positions  the last min(3, len) positions; for each of them, from ONE full forward over the prompt:
                 argmax, top (the 32 largest [id, logit] pairs, best first), logsumexp over the full vocab
                 (computed in float64 from the float32 logits), sampled (logits at ids 0, 97, 194, ...)
    greedy     HF generate(): greedy (do_sample=False), 24 new tokens, no repetition penalty, EOS is NOT
               special (eos_token_id=None, so generation never stops early and EOS is never suppressed:
               exactly what a greedy decoder that ignores EOS produces)
    greedy_margin  per generated token, top1 - top2 logit of the step that produced it (small margins
               mark steps where a correct fp32 implementation may legitimately pick a different token)
  Top level: model basename + sha256, model config summary, versions, date, dtype, tolerance note, and a
  measured noise estimate (same forward with 1 vs N torch threads; float32 vs float64 model).
  All logits are rounded to 6 significant digits.

Environment that produced the committed fixtures (CPU only, Debian 12, Python 3.11.7, 2 cores):
  pip install torch transformers gguf safetensors accelerate
    -> torch 2.15.0+cu132 (the PyPI wheel; it runs fine on CPU), transformers 5.24.0, gguf 0.19.0,
       safetensors 0.8.0, accelerate (required by transformers to load GGUF), numpy 2.4.6
  Exact versions actually used are written into every fixture ("versions").
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

N_POSITIONS = 3        # last positions of the full forward that are stored
TOP_K = 32             # top-k (id, logit) pairs stored per position
SAMPLE_STRIDE = 97     # logits stored at ids 0, 97, 194, ...
N_GREEDY = 24          # new tokens of greedy generation
SIG_DIGITS = 6         # significant digits of every stored float
IDS_MODE_MAX_VOCAB = 4096  # prompt-set auto: vocab below this (or no tokenizer) -> fixed id lists

# Real-text prompts (models with a real tokenizer). "chat" goes through the tokenizer's chat template.
PROMPTS_TEXT = [
    ("chat", {"chat": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]}),
    ("code", {"text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"}),
    ("prose", {"text": "The Jacobi method is an iterative algorithm for determining the solutions of a "
                       "strictly diagonally dominant system of linear equations. Each diagonal element is "
                       "solved for, and an approximate value is plugged in. The process is then iterated "
                       "until it converges. It is named after Carl Gustav Jacob Jacobi, who"}),
    ("one_token", {"text": "The"}),
]

TOLERANCE_NOTE = (
    "Reference is HF transformers in float32 with eager attention. A correct float32 implementation differs "
    "only by summation order (matmul blocking, threads, fused kernels), which grows through the layers. "
    "Compare logits with an absolute tolerance of ~1e-3 (SmolLM2-135M, 30 layers; tiny random models are "
    "far tighter, ~1e-5) plus a relative term for large logits, e.g. |a-b| <= 1e-3 + 1e-4*|b|; logsumexp "
    "within the same bound; argmax must match exactly unless top1-top2 < 1e-3; top ids must match as sets "
    "except at near-ties at the cut. Greedy tokens must match exactly up to the first step whose "
    "greedy_margin is below the tolerance (after that, divergence is legitimate). See 'noise' for the "
    "measured run-to-run spread of the reference itself. Stored values are rounded to 6 significant digits."
)


def sig(x, digits=SIG_DIGITS):
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return float(f"{x:.{digits}g}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def lcg_ids(n, vocab, seed):
    """Deterministic ids in [0, vocab) that do not depend on Python's or torch's RNG."""
    out, s = [], (seed * 2654435761 + 12345) & 0xFFFFFFFF
    for _ in range(n):
        s = (1664525 * s + 1013904223) & 0xFFFFFFFF
        out.append((s >> 8) % vocab)
    return out


def ids_prompts(vocab):
    """Fixed id lists of length 1, 7 and 40. The 40-long one contains 0 and vocab-1 (embedding edges)."""
    p40 = lcg_ids(40, vocab, 3)
    p40[5], p40[29] = 0, vocab - 1
    return [
        ("ids_len1", [lcg_ids(1, vocab, 1)[0]]),
        ("ids_len7", lcg_ids(7, vocab, 2)),
        ("ids_len40", p40),
    ]


def load(model_path, device, dtype):
    if model_path.endswith(".gguf"):
        d, f = os.path.dirname(os.path.abspath(model_path)), os.path.basename(model_path)
        kw = {"gguf_file": f}
        files = [model_path]
    else:
        d, kw = model_path, {}
        files = sorted(os.path.join(d, x) for x in os.listdir(d)
                       if x.endswith(".safetensors") or x == "config.json")
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager",
                                                       output_loading_info=True, **kw)
    # A tensor the checkpoint lacks would be silently random-initialized by HF: refuse instead.
    bad = {k: sorted(map(str, v)) for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        sys.exit(f"error: checkpoint {model_path} does not match {type(model).__name__}: {bad}")
    model.to(device).eval()
    try:
        tok = AutoTokenizer.from_pretrained(d, **kw)
    except Exception as e:  # random models may ship a tokenizer HF cannot load; ids mode does not need it
        print(f"note: tokenizer not loaded ({type(e).__name__}: {e})", file=sys.stderr)
        tok = None
    hashes = {os.path.basename(p): sha256_file(p) for p in files}
    return model, tok, hashes


def text_prompts(tok):
    out = []
    for name, spec in PROMPTS_TEXT:
        if "chat" in spec:
            r = tok.apply_chat_template(spec["chat"], add_generation_prompt=True, tokenize=True)
            if hasattr(r, "keys"):
                r = r["input_ids"]
            ids = list(r)
        else:
            ids = tok(spec["text"], add_special_tokens=False)["input_ids"]
        out.append((name, [int(i) for i in ids]))
    return out


@torch.no_grad()
def full_logits(model, ids, device):
    x = torch.tensor([ids], dtype=torch.long, device=device)
    return model(input_ids=x, use_cache=False).logits[0]  # [len, vocab]


@torch.no_grad()
def greedy(model, ids, device):
    x = torch.tensor([ids], dtype=torch.long, device=device)
    # A None passed in generate()'s config means "unset" and falls back to the model's generation_config,
    # so EOS must be cleared there too; otherwise generation stops at EOS.
    model.generation_config.eos_token_id = None
    model.generation_config.forced_eos_token_id = None
    gc = transformers.GenerationConfig(
        max_new_tokens=N_GREEDY, min_new_tokens=0, do_sample=False, num_beams=1,
        repetition_penalty=1.0, temperature=None, top_p=None, top_k=None,
        eos_token_id=None, pad_token_id=0, bos_token_id=None,
        return_dict_in_generate=True, output_logits=True)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc)
    toks = out.sequences[0, len(ids):].tolist()
    assert len(toks) == N_GREEDY, f"expected {N_GREEDY} tokens, got {len(toks)}"
    margins = []
    for step, lg in enumerate(out.logits):
        v, i = torch.topk(lg[0].float(), 2)
        assert int(i[0]) == toks[step]
        margins.append(sig(v[0] - v[1], 4))
    return toks, margins, torch.stack([lg[0].float().cpu() for lg in out.logits])


def position_record(row):
    row = row.float()
    v, i = torch.topk(row, TOP_K)
    return {
        "argmax": int(torch.argmax(row)),
        "logsumexp": sig(torch.logsumexp(row.double(), 0)),
        "top": [[int(a), sig(b)] for a, b in zip(i.tolist(), v.tolist())],
        "sampled": [sig(x) for x in row[::SAMPLE_STRIDE].tolist()],
    }


def config_summary(cfg):
    keys = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
            "max_position_embeddings", "tie_word_embeddings", "hidden_act"]
    s = {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}
    rp = getattr(cfg, "rope_parameters", None) or {}
    s["rope_theta"] = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
    s["rope_parameters"] = rp or getattr(cfg, "rope_scaling", None)
    return json.loads(json.dumps(s, default=str))


def dump(obj, indent=0):
    """JSON with dict keys on separate lines but lists of scalars / pairs on one line (small, diffable)."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad1}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        return "[\n" + ",\n".join(pad1 + dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help=".gguf file or HF checkpoint dir")
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--prompt-set", default="auto", choices=["auto", "text", "ids"])
    ap.add_argument("--no-noise", action="store_true", help="skip the thread / float64 noise estimate")
    a = ap.parse_args()

    torch.manual_seed(0)
    model, tok, hashes = load(a.model, a.device, torch.float32)
    cfg = model.config
    vocab = cfg.vocab_size

    mode = a.prompt_set
    if mode == "auto":
        mode = "text" if (tok is not None and vocab >= IDS_MODE_MAX_VOCAB) else "ids"
    prompts = text_prompts(tok) if mode == "text" else ids_prompts(vocab)

    records, all_rows, steps = [], [], []
    for name, ids in prompts:
        assert all(0 <= t < vocab for t in ids), name
        lg = full_logits(model, ids, a.device)
        n = len(ids)
        pos = list(range(max(0, n - N_POSITIONS), n))
        rows = lg[pos]
        all_rows.append(rows.cpu())
        toks, margins, step_logits = greedy(model, ids, a.device)
        steps.append(step_logits)
        records.append({
            "name": name,
            "ids": ids,
            "positions": pos,
            "logits": [position_record(r) for r in rows],
            "greedy": toks,
            "greedy_margin": margins,
        })
        print(f"{name}: len {n}, argmax {[r['argmax'] for r in records[-1]['logits']]}, "
              f"greedy {toks[:8]}..., min margin {min(margins)}", file=sys.stderr)

    noise = None
    if not a.no_noise and a.device == "cpu":
        nthr = torch.get_num_threads()
        torch.set_num_threads(1)
        d_thr = max(float((full_logits(model, ids, a.device)[r["positions"]].cpu() - ref).abs().max())
                    for (_, ids), r, ref in zip(prompts, records, all_rows))
        torch.set_num_threads(nthr)
        # KV-cached incremental decode (generate) vs one uncached forward over prompt + greedy tokens
        d_kv, kv_flips = 0.0, 0
        for (_, ids), r, st in zip(prompts, records, steps):
            full = full_logits(model, ids + r["greedy"], a.device).cpu()[len(ids) - 1:len(ids) - 1 + N_GREEDY]
            d_kv = max(d_kv, float((full - st).abs().max()))
            kv_flips += int((full.argmax(-1) != st.argmax(-1)).sum())
        # eager vs sdpa attention (different attention summation order)
        d_sdpa = None
        try:
            model.set_attn_implementation("sdpa")
            d_sdpa = max(float((full_logits(model, ids, a.device)[r["positions"]].cpu() - ref).abs().max())
                         for (_, ids), r, ref in zip(prompts, records, all_rows))
            model.set_attn_implementation("eager")
        except Exception as e:
            print(f"note: sdpa comparison skipped ({e})", file=sys.stderr)
        model.to(torch.float64)
        d64 = max(float((full_logits(model, ids, a.device)[r["positions"]].cpu() - ref.double()).abs().max())
                  for (_, ids), r, ref in zip(prompts, records, all_rows))
        amax = max(float(ref.abs().max()) for ref in all_rows)
        noise = {
            "threads_1_vs_%d_max_abs_diff" % nthr: sig(d_thr, 3),
            "eager_vs_sdpa_max_abs_diff": None if d_sdpa is None else sig(d_sdpa, 3),
            "kv_cached_vs_full_forward_max_abs_diff": sig(d_kv, 3),
            "kv_cached_vs_full_forward_argmax_flips": kv_flips,
            "fp32_vs_fp64_max_abs_diff": sig(d64, 3),
            "max_abs_logit": sig(amax, 4),
            "note": "max |diff| over full-vocab logits: stored positions (threads, sdpa, fp64); all greedy "
                    "steps of all prompts (kv_cached: generate()'s step logits vs one uncached forward)",
        }
        print(f"noise: {noise}", file=sys.stderr)

    fixture = {
        "name": a.name,
        "model": os.path.basename(os.path.normpath(a.model)),
        "model_sha256": hashes,
        "config": config_summary(cfg),
        "generator": "tests/reference/make_logit_fixtures.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gguf": _ver("gguf"), "safetensors": _ver("safetensors"), "numpy": _ver("numpy"),
        },
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "device": a.device,
        "dtype": "float32",
        "attn_implementation": "eager",
        "prompt_set": mode,
        "n_positions": N_POSITIONS, "top_k": TOP_K, "sample_stride": SAMPLE_STRIDE, "n_greedy": N_GREEDY,
        "greedy_settings": "do_sample=False, num_beams=1, repetition_penalty=1.0, eos_token_id=None "
                           "(EOS is an ordinary token; exactly n_greedy tokens), KV cache on",
        "tolerance": TOLERANCE_NOTE,
        "noise": noise,
        "prompts": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    text = dump(fixture) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out} ({len(text)} bytes)", file=sys.stderr)
    if len(text) > 200_000:
        print("warning: fixture is over 200 KB", file=sys.stderr)


def _ver(mod):
    try:
        import importlib.metadata
        return importlib.metadata.version(mod)
    except Exception:
        return None


if __name__ == "__main__":
    main()
