#!/usr/bin/env python3
"""SmolLM2 quantized by llama.cpp itself, and llama.cpp's own logits on those files: the reference
that tells cllm's GGUF decoder apart from the quantizer that wrote the file.

  python3 tests/reference/llamacpp_quant_check.py --src models/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

Needs llama-cpp-python (PyPI; it builds llama.cpp from source) besides the gguf package. Writes into DIR:
- smollm2_F32.gguf: the source's weights dequantized to float32 (requantize_gguf.py --scheme F32);
- smollm2_Q4_K_M.llamacpp.gguf, smollm2_Q8_0.llamacpp.gguf: llama.cpp's llama_model_quantize of that
  file (LLAMA_FTYPE_MOSTLY_Q4_K_M / Q8_0, no importance matrix), so the same weights as the files
  requantize_gguf.py writes, quantized by llama.cpp's own search;
- llamacpp_logits.json: for each file and prompt (tokenized by llama.cpp), the ids and llama.cpp's
  logits at every position (float32, in llamacpp_logits.<file>.<prompt>.f32 beside it), with float32
  KV cache and no flash attention; and llama.cpp's own 16-token greedy continuations.
The gtest LlamaCppQuant.* (tests/gguf_quant) reads DIR from CLLM_LLAMACPP_DIR and compares cllm with
these logits, and cllm's greedy output on the Q4_K_M file with that on the Q8_0 file.
"""
import argparse
import ctypes
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import llama_cpp

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "To make a cup of tea, first", "import numpy as np\n",
           "Water boils at a temperature of", "The largest planet in the solar system is"]
NEW_TOKENS = 16
KV_TYPE = 1  # GGML_TYPE_F16: llama.cpp 0.3.36 crashes in decode on quantized files with an F32 KV cache
FTYPES = {"Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}


def quantize(src, dst, ftype, threads):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}) failed: {rc}")


def run_file(path, threads):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, logits_all=True, n_threads=threads,
                          type_k=KV_TYPE, type_v=KV_TYPE, flash_attn=False, verbose=False)
    out = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        # Greedy continuation from llama.cpp's own logits; then the logits along prompt + continuation
        # in one pass (as cllm's test computes them).
        llm.reset()
        llm.eval(ids)
        greedy = []
        for _ in range(NEW_TOKENS):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            greedy.append(nxt)
            llm.eval([nxt])
        seq = ids + greedy
        llm.reset()
        llm.eval(seq)
        logits = np.array(llm.scores[:len(seq)], dtype=np.float32)
        out.append({"prompt": text, "ids": ids, "greedy": greedy, "logits": logits})
    del llm
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    f32 = os.path.join(a.out, "smollm2_F32.gguf")
    subprocess.run([sys.executable, os.path.join(here, "requantize_gguf.py"), "--src", a.src, "--scheme", "F32",
                    "--out", f32], check=True)
    files = {"F32": f32}
    for name, ftype in FTYPES.items():
        files[name] = os.path.join(a.out, f"smollm2_{name}.llamacpp.gguf")
        quantize(f32, files[name], ftype, a.threads)
    meta = {"versions": {p: importlib.metadata.version(p) for p in ["llama_cpp_python", "gguf", "numpy"]},
            "new_tokens": NEW_TOKENS, "files": {}}
    for name, path in files.items():
        runs = run_file(path, a.threads)
        entries = []
        for i, r in enumerate(runs):
            raw = f"llamacpp_logits.{name}.{i}.f32"
            r["logits"].tofile(os.path.join(a.out, raw))
            entries.append({"prompt": r["prompt"], "ids": r["ids"], "greedy": r["greedy"], "logits": raw,
                            "rows": int(r["logits"].shape[0]), "vocab": int(r["logits"].shape[1])})
        meta["files"][name] = {"gguf": os.path.basename(path), "prompts": entries}
    # llama.cpp's own agreement of its Q4_K_M with its Q8_0 (greedy output, first difference).
    q4, q8 = meta["files"]["Q4_K_M"]["prompts"], meta["files"]["Q8_0"]["prompts"]
    same = sum(x["greedy"] == y["greedy"] for x, y in zip(q4, q8))
    first = [next((k for k in range(NEW_TOKENS) if x["greedy"][k] != y["greedy"][k]), NEW_TOKENS) for x, y in zip(q4, q8)]
    meta["llamacpp_q4_k_m_vs_q8_0"] = {"identical": same, "first_difference": first}
    json.dump(meta, open(os.path.join(a.out, "llamacpp_logits.json"), "w"), indent=1)
    print(f"llama.cpp's own greedy output, Q4_K_M vs Q8_0: identical on {same} of {len(PROMPTS)} prompts; "
          f"first difference at tokens {first}")


if __name__ == "__main__":
    main()
