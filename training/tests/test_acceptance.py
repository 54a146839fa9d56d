"""training/acceptance.py against cllm's decoding core (runtime/acceptance.h, through the
accept_verdicts tool) on the same random blocks: plain Jacobi blocks and blocks with lookahead
branches, with predictions drawn so that long accepted runs and ties happen."""
import json
import os
import random
import subprocess

import pytest

from training import acceptance

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool():
    path = os.environ.get("ACCEPT_VERDICTS_BIN", os.path.join(REPO, "build", "tests", "accept_verdicts"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it (ninja -C build accept_verdicts) or set ACCEPT_VERDICTS_BIN")
    return path


def random_block(rng):
    """tokens, y, pos, rows over a 4-token vocabulary, so guesses are often right; some are
    multi-block (K blocks of guesses in one causal run, the first one the frontier)."""
    pos = rng.randrange(0, 50)
    blocks, per_block = rng.randrange(1, 4), rng.randrange(1, 5)
    n = blocks * per_block
    tokens = [rng.randrange(4) for _ in range(n)]
    rows = None
    if rng.random() < 0.7:
        rows = [[pos + i, 0] for i in range(n)]
        for _ in range(rng.randrange(0, 4)):
            root = rng.randrange(0, n)
            length = rng.randrange(1, 5)
            rows += [[pos + root + 1 + i, pos + root + 1] for i in range(length)]
            tokens += [rng.randrange(4) for _ in range(length)]
    # Predictions: mostly the next token of the row's own sequence, sometimes noise.
    y = [rng.randrange(4) for _ in tokens]
    for i in range(len(tokens) - 1):
        if rng.random() < 0.6:
            y[i] = tokens[i + 1]
    return dict(tokens=tokens, y=y, pos=pos, rows=rows, guesses=n, frontier=per_block)


def python_verdict(c):
    try:
        v = acceptance.verify_block(c["tokens"], c["y"], c["pos"], c["rows"])
    except ValueError:
        return {"error": True}
    out = dict(v, final=acceptance.verdict_tokens(v, c["tokens"], c["y"]))
    if "guesses" in c:
        out["sources"] = acceptance.accepted_sources(v, c["guesses"], c["frontier"])
    return out


def test_python_rule_equals_cpp_rule(tmp_path):
    rng = random.Random(13)
    cases = [random_block(rng) for _ in range(3000)]
    # Layouts the rule must refuse: a branch rooted past the main run, a row that starts nowhere.
    cases.append(dict(tokens=[1, 2, 3], y=[2, 3, 0], pos=5, rows=[[5, 0], [6, 0], [9, 9]]))
    cases.append(dict(tokens=[1, 2, 3], y=[2, 3, 0], pos=5, rows=[[5, 0], [7, 6], [8, 6]]))
    path = tmp_path / "blocks.json"
    path.write_text(json.dumps(cases))
    r = subprocess.run([tool(), str(path)], capture_output=True, text=True, check=True)
    cpp = json.loads(r.stdout)
    assert len(cpp) == len(cases)
    branches_won = later_won = 0
    for c, want in zip(cases, cpp):
        got = python_verdict(c)
        if "error" in want:
            assert "error" in got, (c, want)
            continue
        assert got == want, c
        branches_won += want["branch"] >= 0
        later_won += want["sources"]["later"] > 0
        assert sum(want["sources"].values()) == want["accepted"], c
    # The random blocks exercise both outcomes, later blocks' tokens and both refusals.
    assert branches_won > 100
    assert later_won > 100
    assert "error" in cpp[-1] and "error" in cpp[-2]


def test_accept_length_by_hand():
    assert acceptance.accept_length([5, 1, 2, 9], [1, 2, 3, 4]) == 2
    assert acceptance.accept_length([5], [7]) == 0
    # A branch rooted at g[0] that verifies further than the block wins.
    v = acceptance.verify_block([5, 8, 1, 2], [1, 0, 2, 3], pos=10, rows=[[10, 0], [11, 0], [11, 11], [12, 11]])
    assert v == dict(branch=0, first_row=2, root=0, accepted=2)
    assert acceptance.verdict_tokens(v, [5, 8, 1, 2], [1, 0, 2, 3]) == [1, 2, 3]


def test_accepted_sources_by_hand():
    # Two blocks of 3 at position 10, all of the first and one of the second accepted.
    tokens, y = [5, 1, 2, 3, 4, 9], [1, 2, 3, 4, 0, 0]
    v = acceptance.verify_block(tokens, y, pos=10)
    assert v["accepted"] == 4
    assert acceptance.accepted_sources(v, guesses=6, frontier=3) == dict(block=2, later=2, candidate=0)
    # A branch rooted at g[0] wins: its tokens are the candidate's.
    v = acceptance.verify_block([5, 8, 1, 2], [1, 0, 2, 3], pos=10, rows=[[10, 0], [11, 0], [11, 11], [12, 11]])
    assert acceptance.accepted_sources(v, guesses=2, frontier=1) == dict(block=0, later=0, candidate=2)
