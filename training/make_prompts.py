#!/usr/bin/env python3
"""Real prompts that no one here wrote: functions and methods from the Python standard library's own sources.

usage: python3 training/make_prompts.py --out-train train.jsonl --out-eval eval.jsonl [--limit 4000]
                                         [--eval-fraction 0.1] [--stdlib DIR]
       python3 training/make_prompts.py --out-train more.jsonl --eval-fraction 0 --stdlib DIR
           [--skip PATTERN,...] [--max-per-package N] [--unlike EVAL.jsonl[.gz]]

The second form makes extra training prompts from any tree of Python packages (e.g. Debian's
/usr/lib/python3/dist-packages): --skip drops functions whose "module.qualname" contains a pattern
(vendored or back-ported copies of the standard library), --max-per-package keeps one top-level
package from dominating, and --unlike drops every function whose docstring is also in the given
prompts file, so that a copy of a held-out function never reaches training.

Each prompt asks the model to implement one stdlib function, or one method of a top-level class
(--no-methods leaves those out: functions alone give only ~1000 prompts), from its signature and
docstring (the body is left out). The split is by a hash of "module.qualname", so it is stable across
machines and Python versions that share a function, and the evaluation split never overlaps
the training split. Output lines: {"messages": [{"role": "user", "content": ...}], "source": ...}
for `cllm trajectories --chat` and training/pipeline.sh.
"""
import argparse
import ast
import gzip
import hashlib
import json
import os
import sysconfig

MAX_DOC_CHARS = 600


def documented(node):
    """The docstring of a public function node when it is a useful size, else None."""
    if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
        return None
    doc = ast.get_docstring(node)
    return doc if doc and 40 <= len(doc) <= MAX_DOC_CHARS else None


def functions(stdlib, methods=True):
    """Yields (module, class name or None, function node, docstring) in a stable file order."""
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
                doc = documented(node)
                if doc:
                    yield module, None, node, doc
                if methods and isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    for member in node.body:
                        doc = documented(member)
                        if doc:
                            yield module, node.name, member, doc


def docstring_of(prompt):
    """The docstring inside a prompt_for() text (as written there), or None."""
    start = prompt.find('    """')
    end = prompt.rfind('\n    """')
    return prompt[start + 7:end] if 0 <= start < end else None


def docstrings_in(path):
    """Docstrings of the prompts in a JSON-lines file (gzipped or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return {docstring_of(json.loads(line)["messages"][-1]["content"]) for line in f if line.strip()}


def prompt_for(node, doc, module=None, cls=None):
    args = ast.unparse(node.args)
    indented = "\n    ".join(doc.splitlines())
    what = "this Python function" if cls is None else f"this method of the Python class `{cls}` (module `{module}`)"
    return (f"Implement {what}. Reply with the code only.\n\n"
            f"```python\ndef {node.name}({args}):\n    \"\"\"{indented}\n    \"\"\"\n```")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-train", required=True)
    ap.add_argument("--out-eval", help="required unless --eval-fraction is 0")
    ap.add_argument("--limit", type=int, default=4000, help="at most this many prompts in all")
    ap.add_argument("--no-methods", action="store_true", help="module-level functions only")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="the source tree to read")
    ap.add_argument("--skip", default="", help="comma list: drop functions whose module.qualname contains one")
    ap.add_argument("--max-per-package", type=int, default=0, help="at most this many per top-level package (0: any)")
    ap.add_argument("--unlike", action="append", default=[],
                    help="a prompts file: drop functions whose docstring is in it (repeatable)")
    args = ap.parse_args()
    if args.eval_fraction > 0 and not args.out_eval:
        ap.error("--out-eval is required unless --eval-fraction is 0")

    skip = [p for p in args.skip.split(",") if p]
    banned = set()
    for path in args.unlike:
        banned |= docstrings_in(path)
    rows = []
    for module, cls, node, doc in functions(args.stdlib, methods=not args.no_methods):
        key = f"{module}.{cls + '.' if cls else ''}{node.name}"
        text = prompt_for(node, doc, module, cls)
        if any(p in key for p in skip) or docstring_of(text) in banned:
            continue
        rows.append((hashlib.sha256(key.encode()).hexdigest(), key, text))
    rows.sort()  # hash order: a stable shuffle
    if args.max_per_package > 0:
        per_package, kept = {}, []
        for row in rows:
            package = row[1].split(".")[0]
            per_package[package] = per_package.get(package, 0) + 1
            if per_package[package] <= args.max_per_package:
                kept.append(row)
        rows = kept
    rows = rows[: args.limit]
    n_train = n_eval = 0
    with open(args.out_train, "w", encoding="utf-8") as tr, open(args.out_eval or os.devnull, "w", encoding="utf-8") as ev:
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
