"""Base model vs CLLM on held-out prompts: python3 -m training.evaluate --base DIR --cllm DIR --prompts FILE --out DIR

Each model is loaded once by `cllm generate --prompts FILE --json-out ...` (batch mode), which
decodes every prompt with greedy AR and greedy Jacobi on the same engine. From its JSON lines:
  - Jacobi tokens per iteration (cllm's count: the prefill is an iteration; also decode-only);
  - speedup: total AR decode seconds / total Jacobi decode seconds (same model, engine, prompts);
  - quality of the CLLM's greedy (Jacobi) output against the base model's greedy (AR) output:
    token agreement (equal tokens at equal positions / the longer length), exact matches, common
    prefix; and the perplexity of each model's outputs under the base model (training/model.py).
With --train-prompts FILE, the CLLM is also decoded (AR with the first window, Jacobi with every
window) on the first --train-n prompts of its training set: its tokens/iteration there against the
held-out prompts shows over- or under-fitting (eval.json "training_prompts"; eval.md rows
"cllm (training prompts)").
A window may carry lookahead (training/windows.py): "sliding+4x3" verifies 4 candidate n-grams of
3 tokens after their first (--candidates 4 --ngram 4) beside each Jacobi block of that window.
Writes eval.json, eval.md (table) and eval.png (needs matplotlib) into --out."""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

from .report import write_report
from .windows import parse_window

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the base model (HF dir, or anything cllm loads; the perplexity "
                                                 "needs an HF dir)")
    p.add_argument("--cllm", required=True, help="the trained model (HF dir)")
    p.add_argument("--prompts", required=True, help="held-out prompts (JSONL or text, as cllm trajectories reads)")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--n", type=int, default=100, help="the first N prompts (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--windows", default="blockwise",
                   help="comma-separated Jacobi windows: blockwise (the paper's, as trained) and/or sliding, each "
                        "optionally with lookahead: WINDOW+GxR (G candidate n-grams of R tokens, e.g. sliding+4x3)")
    p.add_argument("--device", default="cpu", help="cllm's device: cpu | cuda")
    p.add_argument("--chat", action="store_true", help="wrap plain-text prompts in the chat template")
    p.add_argument("--cllm-bin", default=os.environ.get("CLLM_BIN", os.path.join(REPO, "build", "cllm")))
    p.add_argument("--ppl-device", default="auto", help="torch device for the perplexity: auto | cpu | cuda")
    p.add_argument("--reuse", action="store_true", help="reuse JSON lines already in --out (no decoding)")
    p.add_argument("--train-prompts", default="", help="also decode the CLLM on these training prompts (AR + Jacobi)")
    p.add_argument("--train-n", type=int, default=30, help="the first N of --train-prompts (0: all)")
    return p.parse_args(argv)


# ---- metrics (pure functions of the JSON records; tested in training/tests/test_evaluate.py) ----

def tokens_per_iteration(records, key="jacobi"):
    """(tokens / iterations as cllm counts them, the same without the prefill's token and iteration)."""
    tokens = sum(r[key]["tokens"] for r in records)
    iters = sum(r[key]["iterations"] for r in records)
    decode_tokens = sum(max(0, r[key]["tokens"] - 1) for r in records)
    decode_iters = sum(r[key]["iterations"] - 1 for r in records)
    return tokens / max(1, iters), decode_tokens / max(1, decode_iters)


def speedup(ar_records, jacobi_records):
    """Jacobi decode tokens/s over AR decode tokens/s, each summed over the same prompts. A ratio of
    rates, not of times: Jacobi and AR may stop at different lengths (an EOS after a bf16 near-tie)."""
    def rate(records, key):
        seconds = sum(r[key]["decode_seconds"] for r in records)
        return sum(r[key]["tokens"] for r in records) / seconds if seconds > 0 else float("nan")
    ar = rate(ar_records, "ar")
    return rate(jacobi_records, "jacobi") / ar if ar > 0 else float("nan")


def agreement(outputs, references):
    """outputs, references: lists of id lists. Returns (token agreement: equal tokens at equal
    positions / the longer length, summed over prompts; exact-match fraction; mean fraction of the
    reference reproduced before the first difference)."""
    equal = longer = exact = 0
    prefix = []
    for a, b in zip(outputs, references):
        m = min(len(a), len(b))
        same = [x == y for x, y in zip(a[:m], b[:m])]
        equal += sum(same)
        longer += max(len(a), len(b))
        exact += list(a) == list(b)
        first_diff = same.index(False) if False in same else m  # a prefix of the other: m agree
        prefix.append(first_diff / max(1, len(b)))
    n = max(1, len(references))
    return equal / max(1, longer), exact / n, float(np.mean(prefix)) if prefix else 0.0


def perplexity(nll_sum, count):
    return math.exp(nll_sum / count) if count else float("nan")


@torch.no_grad()
def output_nll(model, prompts, outputs, device):
    """(summed negative log-likelihood, token count) of each output given its prompt, under model."""
    total, count = 0.0, 0
    for prompt, out in zip(prompts, outputs):
        if not out:
            continue
        ids = torch.tensor([list(prompt) + list(out)], device=device)
        logits = model(ids)[0, len(prompt) - 1:-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):], reduction="sum"))
        count += len(out)
    return total, count


def window_stats(ar_recs, recs):
    """One table row: Jacobi records of a window, with the AR records of the same prompts."""
    tpi, decode_tpi = tokens_per_iteration(recs)
    ar_s = sum(r["ar"]["decode_seconds"] for r in ar_recs)
    jac_s = sum(r["jacobi"]["decode_seconds"] for r in recs)
    return {
        "prompts": len(recs),
        "tokens_per_iteration": tpi, "decode_tokens_per_iteration": decode_tpi,
        "speedup": speedup(ar_recs, recs),
        "ar_tokens_per_s": sum(r["ar"]["tokens"] for r in ar_recs) / max(ar_s, 1e-9),
        "jacobi_tokens_per_s": sum(r["jacobi"]["tokens"] for r in recs) / max(jac_s, 1e-9),
        "identical": float(np.mean([a["ar"]["ids"] == j["jacobi"]["ids"] for a, j in zip(ar_recs, recs)])),
        "per_prompt_tokens_per_iteration": [r["jacobi"]["tokens_per_iteration"] for r in recs],
    }


# ---- running cllm ----

def decode(args, model, name, window, decode_mode, prompts=None, n=None):
    """Runs cllm generate in batch mode once (on --prompts and --n unless given); returns its JSON records."""
    prompts = args.prompts if prompts is None else prompts
    n = args.n if n is None else n
    path = os.path.join(args.out, f"{name}_{window}.jsonl")
    plain, candidates, ngram = parse_window(window)
    if not (args.reuse and os.path.exists(path)):
        cmd = [args.cllm_bin, "generate", "--model", model, "--prompts", prompts, "--json-out", path,
               "--limit", str(n), "--decode", decode_mode, "--window", plain, "--block", str(args.block),
               "--max-new-tokens", str(args.max_new_tokens), "--device", args.device, "--quiet"]
        if candidates:
            cmd += ["--candidates", str(candidates), "--ngram", str(ngram)]
        if args.chat:
            cmd.append("--chat")
        t0 = time.time()
        print(f"evaluate: {name}, {window} ({decode_mode}) ...", file=sys.stderr, flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        with open(os.path.join(args.out, f"{name}_{window}.log"), "w") as f:
            f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
        # Exit 3: AR and Jacobi differ on the CPU, which the records show; anything else is a failure.
        if r.returncode not in (0, 3):
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        print(f"evaluate: {name}, {window}: {time.time() - t0:.1f} s\n{r.stdout.strip()}", file=sys.stderr, flush=True)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("evaluate: matplotlib is not installed; no eval.png", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [k for k in results["models"]]
    for ax, metric, label in ((axes[0], "tokens_per_iteration", "Jacobi tokens / iteration"),
                              (axes[1], "speedup", "decode speedup of Jacobi over AR")):
        width = 0.8 / len(results["windows"])
        for w, window in enumerate(results["windows"]):
            vals = [results["models"][m][window][metric] for m in names]
            ax.bar(np.arange(len(names)) + width * w, vals, width=width, label=window)
        ax.set_xticks(np.arange(len(names)) + width / 2 * (len(results["windows"]) - 1))
        ax.set_xticklabels(names)
        ax.set_title(label)
        ax.legend()
    window = results["windows"][0]
    for m in names:
        axes[2].hist(results["models"][m][window]["per_prompt_tokens_per_iteration"], bins=20, alpha=0.6, label=m)
    axes[2].set_title(f"per-prompt tokens / iteration ({window})")
    axes[2].legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return True


def markdown(results):
    lines = [f"Held-out prompts: {results['prompts']} (first {results['n']}), {results['max_new_tokens']} new tokens, "
             f"block {results['block']}, device {results['device']}.", "",
             "| model | window | tokens/iteration | decode-only tokens/iteration | AR tokens/s | Jacobi tokens/s | "
             "speedup | Jacobi == AR |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = [(m, per) for m, per in results["models"].items()]
    train = results.get("training_prompts")
    if train:
        rows += [(f"{m} (training prompts)", per) for m, per in train["models"].items()]
    for m, per in rows:
        for w in results["windows"]:
            r = per[w]
            lines.append(f"| {m} | {w} | {r['tokens_per_iteration']:.3f} | {r['decode_tokens_per_iteration']:.3f} | "
                         f"{r['ar_tokens_per_s']:.1f} | {r['jacobi_tokens_per_s']:.1f} | {r['speedup']:.2f}x | "
                         f"{r['identical']:.0%} |")
    if train:
        lines += ["", f"Rows \"(training prompts)\": the first {train['prompts_decoded']} prompts of {train['prompts']} "
                      "(training prompts, not held out: the gap to the held-out rows shows over- or under-fitting)."]
    q = results["quality"]
    lines += ["", "Quality (CLLM greedy Jacobi output vs base greedy AR output; perplexity under the base model):", "",
              "| | value |", "|---|---:|",
              f"| token agreement | {q['token_agreement']:.3f} |",
              f"| exact match | {q['exact_match']:.3f} |",
              f"| common prefix (fraction of the base output) | {q['common_prefix']:.3f} |"]
    for k, v in q["perplexity"].items():
        lines.append(f"| perplexity of {k} | {v:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    windows = [w for w in args.windows.split(",") if w]
    for w in windows:
        try:
            parse_window(w)
        except ValueError as e:
            raise SystemExit(f"--windows: {e}")
    os.makedirs(args.out, exist_ok=True)
    results = {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, "block": args.block,
               "device": args.device, "windows": windows, "models": {}}
    records = {}
    for name, model in (("base", args.base), ("cllm", args.cllm)):
        per = {}
        for w, window in enumerate(windows):
            # AR runs once per model (with the first window); later windows decode Jacobi only.
            recs = decode(args, model, name, window, "both" if w == 0 else "jacobi")
            records[name, window] = recs
            per[window] = window_stats(records[name, windows[0]], recs)
        results["models"][name] = per
    if args.train_prompts:
        per = {}
        for w, window in enumerate(windows):
            recs = decode(args, args.cllm, "cllm_train", window, "both" if w == 0 else "jacobi",
                          prompts=args.train_prompts, n=args.train_n)
            records["cllm_train", window] = recs
            per[window] = window_stats(records["cllm_train", windows[0]], recs)
        results["training_prompts"] = {"prompts": args.train_prompts, "n": args.train_n,
                                       "prompts_decoded": len(records["cllm_train", windows[0]]),
                                       "models": {"cllm": per}}

    base_ar = records["base", windows[0]]
    cllm_jac = records["cllm", windows[0]]
    tok_agree, exact, prefix = agreement([r["jacobi"]["ids"] for r in cllm_jac], [r["ar"]["ids"] for r in base_ar])
    results["quality"] = {"token_agreement": tok_agree, "exact_match": exact, "common_prefix": prefix, "perplexity": {}}

    if os.path.exists(os.path.join(args.base, "config.json")):
        from .model import load_model
        device = torch.device("cuda" if args.ppl_device == "auto" and torch.cuda.is_available()
                              else "cpu" if args.ppl_device == "auto" else args.ppl_device)
        model = load_model(args.base)[0].to(device).eval()
        prompts = [r["prompt_ids"] for r in base_ar]
        for label, outs in (("base AR outputs", [r["ar"]["ids"] for r in base_ar]),
                            ("CLLM Jacobi outputs", [r["jacobi"]["ids"] for r in cllm_jac]),
                            ("CLLM AR outputs", [r["ar"]["ids"] for r in records["cllm", windows[0]]])):
            results["quality"]["perplexity"][label] = perplexity(*output_nll(model, prompts, outs, device))
    else:
        print(f"evaluate: {args.base} is not an HF dir: no perplexity", file=sys.stderr)

    table = markdown(results)
    write_report(args.out, "eval", results, table)
    plot(results, os.path.join(args.out, "eval.png"))
    print(table)
    return results


if __name__ == "__main__":
    main()
