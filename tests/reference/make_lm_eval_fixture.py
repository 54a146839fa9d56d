#!/usr/bin/env python3
"""Reference loglikelihoods from Hugging Face transformers for the lm-evaluation-harness task in
tests/server/lm_eval (tests/server/test_lm_eval.py compares what lm-eval gets from `cllm serve`).

    python3 tests/reference/make_lm_eval_fixture.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out tests/fixtures/lm_eval/tiny_mc_smollm2_q4_1.json

The requests are built as lm-eval builds them for a multiple-choice task: context = doc_to_text,
continuation = target_delimiter + choice, the pair encoded as lm-eval's _encode_pair does (trailing
context spaces move to the continuation; the whole is encoded, the context's length split off; no
special tokens). The model runs in float32 (eager attention) on the GGUF as transformers
dequantizes it; each loglikelihood is the sum over the continuation's tokens of the log-softmax
(float64 over the float32 logits) at the preceding position.
"""
import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "server", "lm_eval", "tiny_mc.jsonl")


def requests_of(doc):
    context = f"Question: {doc['question']}\nAnswer:"
    return [(context, " " + choice) for choice in doc["choices"]]


def encode_pair(tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    ctx = tok(context, add_special_tokens=False).input_ids
    return ctx, whole[len(ctx):]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a .gguf file")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d, f = os.path.dirname(os.path.abspath(a.model)), os.path.basename(a.model)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager").eval()
    out = []
    with open(DATA) as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    for doc in docs:
        for context, continuation in requests_of(doc):
            ctx, cont = encode_pair(tok, context, continuation)
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logits = model(ids).logits[0].to(torch.float64)
            logp = torch.log_softmax(logits, dim=-1)
            ll = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
            greedy = all(int(logp[len(ctx) - 1 + i].argmax()) == t for i, t in enumerate(cont))
            out.append({"context": context, "continuation": continuation, "context_ids": ctx,
                        "continuation_ids": cont, "loglikelihood": ll, "is_greedy": greedy})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        head = {"model": os.path.basename(a.model), "transformers": __import__("transformers").__version__}
        fh.write(json.dumps(head)[:-1] + ', "requests": [\n')  # one request per line
        fh.write(",\n".join(json.dumps(r) for r in out) + "\n]}\n")
    print(f"wrote {len(out)} requests to {a.out}")


if __name__ == "__main__":
    main()
