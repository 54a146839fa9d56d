#!/usr/bin/env python3
"""How far a quantized GGUF decodes from a reference GGUF, both run by transformers (which
dequantizes with the gguf package), so no cllm code is involved: greedy continuations, top-1
agreement along the reference's greedy text and KL(reference || candidate).

  python3 tests/reference/quant_agreement.py --ref smollm2_Q8_0.gguf --cand smollm2_Q4_K_M.gguf \
      [--only-types Q5_0,Q4_K]

--only-types: the candidate's weights only for the linear weights it stores in these types, the
reference's elsewhere: which of a mixed file's types the divergence comes from. The prompts and
counts are those of tests/gguf_quant (SmolLM2Requantized.Q4KMDecodesLikeQ8_0), whose numbers for
the same files this reproduces if cllm decodes like transformers.
"""
import argparse
import os

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "To make a cup of tea, first", "import numpy as np\n",
           "Water boils at a temperature of", "The largest planet in the solar system is"]
NEW_TOKENS = 16
HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
      "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}


def load(path):
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path),
                                                dtype=torch.float32).eval()


def hf_names_of_types(path, types):
    """HF names of the block linear weights that `path` stores in one of `types`."""
    names = []
    for t in gguf.GGUFReader(path).tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and parts[2] in HF and t.tensor_type.name in types:
            names.append(f"model.layers.{parts[1]}.{HF[parts[2]]}.weight")
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True)
    ap.add_argument("--cand", required=True)
    ap.add_argument("--only-types", default="", help="comma-separated GGUF types, e.g. Q5_0,Q4_K")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(a.ref)), gguf_file=os.path.basename(a.ref))
    ref = load(a.ref)
    cand = load(a.cand)
    label = os.path.basename(a.cand)
    if a.only_types:
        types = set(a.only_types.split(","))
        names = hf_names_of_types(a.cand, types)
        sd = ref.state_dict()
        csd = cand.state_dict()
        sd.update({n: csd[n] for n in names})
        cand.load_state_dict(sd)
        label += f" ({len(names)} {'/'.join(sorted(types))} weights, the rest from the reference)"
    same = agree = positions = 0
    kl = 0.0
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            text = ref.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
            same += int(torch.equal(cand.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False), text))
            lr = ref(text).logits[0].double()
            lc = cand(text).logits[0].double()
            lp, lq = torch.log_softmax(lr, -1), torch.log_softmax(lc, -1)
            kl += (lp.exp() * (lp - lq)).sum(-1).mean().item() / len(PROMPTS)
            span = slice(ids.shape[1] - 1, text.shape[1])
            agree += int((lr[span].argmax(-1) == lc[span].argmax(-1)).sum())
            positions += text.shape[1] - ids.shape[1] + 1
    print(f"{label} vs {os.path.basename(a.ref)}: identical {NEW_TOKENS}-token greedy output on {same} of "
          f"{len(PROMPTS)} prompts, top-1 agreement {agree / positions:.3f} ({positions} positions), "
          f"mean KL {kl:.4f} nats/token")


if __name__ == "__main__":
    main()
