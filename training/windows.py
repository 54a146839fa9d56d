"""Jacobi windows as the recipe and training/evaluate.py name them: blockwise (the paper's, as
trained) or sliding, each optionally with lookahead: "sliding+4x3" verifies 4 candidate n-grams of
3 tokens after their first (cllm generate --candidates 4 --ngram 4) beside each Jacobi block."""
import re

WINDOWS = ("blockwise", "sliding")
_SPEC = re.compile(r"(blockwise|sliding)(?:\+([1-9][0-9]*)x([1-9][0-9]*))?")


def parse_window(spec):
    """"sliding+4x3" -> ("sliding", candidates 4, ngram 4); "blockwise" -> ("blockwise", 0, 0).
    Raises ValueError naming the spec and the accepted forms."""
    m = _SPEC.fullmatch(spec)
    if not m:
        raise ValueError(f"window '{spec}' is not blockwise or sliding, optionally +GxR (e.g. sliding+4x3)")
    return m.group(1), int(m.group(2) or 0), int(m.group(3)) + 1 if m.group(3) else 0
