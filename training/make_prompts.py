#!/usr/bin/env python3
"""Real prompts that no one here wrote: functions from the Python standard library's own sources.

usage: python3 training/make_prompts.py --out-train train.jsonl --out-eval eval.jsonl [--limit 2000]
                                         [--eval-fraction 0.1] [--stdlib DIR]

Each prompt asks the model to implement one stdlib function from its signature and docstring
(the body is left out). The split is by a hash of "module.qualname", so it is stable across
machines and Python versions that share a function, and the evaluation split never overlaps
the training split. Output lines: {"messages": [{"role": "user", "content": ...}], "source": ...}
for `cllm trajectories --chat` and training/pipeline.sh.
"""
import argparse
import ast
import hashlib
import json
import os
import sysconfig

MAX_DOC_CHARS = 600


def functions(stdlib):
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "idlelib", "site-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.relpath(path, stdlib)[:-3].replace(os.sep, ".")
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    doc = ast.get_docstring(node)
                    if doc and 40 <= len(doc) <= MAX_DOC_CHARS:
                        yield module, node, doc


def prompt_for(node, doc):
    args = ast.unparse(node.args)
    indented = "\n    ".join(doc.splitlines())
    return ("Implement this Python function. Reply with the code only.\n\n"
            f"```python\ndef {node.name}({args}):\n    \"\"\"{indented}\n    \"\"\"\n```")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-train", required=True)
    ap.add_argument("--out-eval", required=True)
    ap.add_argument("--limit", type=int, default=2000, help="at most this many prompts in all")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    args = ap.parse_args()

    rows = []
    for module, node, doc in functions(args.stdlib):
        key = f"{module}.{node.name}"
        rows.append((hashlib.sha256(key.encode()).hexdigest(), key, prompt_for(node, doc)))
    rows.sort()  # hash order: a stable shuffle
    rows = rows[: args.limit]
    n_train = n_eval = 0
    with open(args.out_train, "w", encoding="utf-8") as tr, open(args.out_eval, "w", encoding="utf-8") as ev:
        for digest, key, text in rows:
            # The last hex digits: the first ones are small for every row kept (rows are hash-sorted).
            is_eval = int(digest[-8:], 16) / 0xFFFFFFFF < args.eval_fraction
            line = json.dumps({"messages": [{"role": "user", "content": text}], "source": key}) + "\n"
            (ev if is_eval else tr).write(line)
            n_eval += is_eval
            n_train += not is_eval
    print(f"{n_train} training and {n_eval} evaluation prompts from {args.stdlib}")


if __name__ == "__main__":
    main()
