"""training/humaneval.py: answers of known correctness on real HumanEval problems (no model), the
sandbox's limits, and the whole path through cllm generate with SmolLM2 on 2 problems."""
import json
import os
import subprocess
import sys

import pytest

from training import humaneval

from .conftest import REPO, cllm_bin

PROBLEMS = {p["task_id"]: p for p in humaneval.load_problems()}


def test_the_164_problems_ship_with_the_repository():
    assert len(PROBLEMS) == 164 and "HumanEval/0" in PROBLEMS and "HumanEval/163" in PROBLEMS
    assert len(humaneval.load_problems(limit=3)) == 3


def test_canonical_solutions_pass_and_wrong_ones_fail():
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/12"]
    problems = [PROBLEMS[i] for i in ids]
    right = [p["canonical_solution"] for p in problems]
    # Wrong: a constant, a wrong formula, a syntax error.
    wrong = ["    return False\n", "    return number - int(number) + 1\n", "    return strings[0 if\n"]
    assert humaneval.check_all(problems, right, "complete") == ["passed"] * 3
    results = humaneval.check_all(problems, wrong, "complete")
    assert all(r.startswith("failed: ") for r in results), results
    assert "AssertionError" in results[0] and "SyntaxError" in results[2], results


def test_chat_answers_are_read_from_their_code_block():
    p = PROBLEMS["HumanEval/2"]  # truncate_number(number: float) -> float
    whole = ("Here is the function:\n\n```python\ndef truncate_number(number: float) -> float:\n"
             "    return number % 1.0\n```\nIt returns the decimals.")
    body_only = "```python\n    return number % 1.0\n```"
    unclosed = "```python\ndef truncate_number(number):\n    return number - int(number)\n"
    wrong = "```python\ndef truncate_number(number: float) -> float:\n    return number\n```"
    other_lang = "```\ndef truncate_number(number):\n    return number % 1.0\n```"
    results = humaneval.check_all([p] * 5, [whole, body_only, unclosed, wrong, other_lang], "chat")
    assert results[:3] == ["passed"] * 3 and results[3].startswith("failed: ") and results[4] == "passed", results
    # A definition keeps the prompt's imports and helpers (HumanEval/38's decode_cyclic needs encode_cyclic).
    p38 = PROBLEMS["HumanEval/38"]
    answer = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    assert humaneval.check_all([p38], [answer], "chat") == ["passed"]


def test_complete_mode_cuts_at_the_next_top_level_statement():
    p = PROBLEMS["HumanEval/2"]
    text = "    return number % 1.0\n\n\ndef other():\n    return 1\n\nprint(undefined_name)\n"
    assert humaneval.truncate(text) == "    return number % 1.0\n\n"
    assert humaneval.check_all([p], [text], "complete") == ["passed"]
    assert humaneval.check_all([p], [None], "complete") == ["failed: no answer"]


def test_sandbox_limits_time_network_processes_and_directory(tmp_path):
    assert humaneval.run_program("while True:\n    pass\n", timeout=1.0) == "timed out"
    for netns in [False] + ([True] if humaneval.netns_works() else []):
        r = humaneval.run_program("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", 5, netns)
        assert r.startswith("failed: PermissionError: sandbox: socket."), r
        r = humaneval.run_program("import subprocess\nsubprocess.run(['true'])\n", 5, netns)
        assert r.startswith("failed: PermissionError: sandbox: subprocess.Popen"), r
        r = humaneval.run_program("import os\nos.system('true')\n", 5, netns)
        assert "sandbox: os.system" in r, r
    # A fresh empty temporary directory each time, which is the working directory and HOME.
    probe = ("import os, tempfile\nassert os.listdir('.') == ['program.py'], os.listdir('.')\n"
             "assert os.environ['HOME'] == os.getcwd() and tempfile.gettempdir() == os.getcwd()\n"
             "assert os.getcwd().startswith(os.path.join(os.path.dirname(os.getcwd()), 'cllm_humaneval_'))\n"
             "open('x', 'w').write('1')\n")
    assert humaneval.run_program(probe, 5) == "passed"
    assert humaneval.run_program(probe, 5) == "passed"
    assert humaneval.run_program("x = bytearray(4 << 30)\n", 5).startswith("failed: MemoryError")
    big = "f = open('f', 'wb')\nf.seek(300 << 20)\nf.write(b'x')\nf.close()\n"  # past the 256 MiB file limit
    assert humaneval.run_program(big, 5).startswith("failed: OSError: [Errno 27] File too large")


def test_network_namespace_has_no_route():
    if not humaneval.netns_works():
        pytest.skip("unshare --user --net does not work on this machine")
    # Without the audit hook's refusal, the namespace alone: no interface to reach anything.
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--", sys.executable, "-c",
                        "import socket\ns = socket.socket()\nprint(s.connect_ex(('1.1.1.1', 80)))"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "101", r.stdout + r.stderr  # ENETUNREACH


def test_bad_model_flag_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training.humaneval", "--model", "nodir", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "expected NAME=PATH" in r.stderr


def test_smollm2_through_cllm_generate(tmp_path):
    """The real path: cllm generate (AR and Jacobi) on 2 problems, the answers run and counted."""
    model = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(model):
        pytest.skip(f"{model} is not here (launch/fetch_model.sh)")
    out = tmp_path / "he"
    r = subprocess.run([sys.executable, "-m", "training.humaneval", "--model", f"base={model}", "--out", str(out),
                        "--limit", "2", "--max-new-tokens", "24", "--block", "8", "--cllm-bin", cllm_bin()],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "humaneval.json").read_text())
    assert res["n"] == 2 and set(res["models"]) == {"base"}
    m = res["models"]["base"]
    assert m["ar"]["n"] == m["jacobi"]["n"] == 2 and m["jacobi_equals_ar"] == 2  # the CPU is exact
    assert m["ar"]["passed"] == m["jacobi"]["passed"] and m["tokens_per_iteration"] >= 1.0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["decode"]) for r in rows] == [("HumanEval/0", "ar"), ("HumanEval/1", "ar"),
                                                          ("HumanEval/0", "jacobi"), ("HumanEval/1", "jacobi")]
    # The decoded text is the model's answer: a Python function, in a code block.
    assert all(r["tokens"] > 0 and "def " in r["completion"] for r in rows), rows
    assert sum(r["passed"] for r in rows if r["decode"] == "ar") == m["ar"]["passed"]
    assert "| base | " in (out / "humaneval.md").read_text()


def test_generate_json_lines_carry_the_decoded_text(tiny_model, tmp_path):
    """cllm generate --json-out: each decoding's text; the tiny random model's bytes are not UTF-8,
    which becomes U+FFFD instead of failing the whole line."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("The sea is\nOnce upon a time\n1, 2, 3,\n")
    out = tmp_path / "j.jsonl"
    r = subprocess.run([cllm_bin(), "generate", "--model", tiny_model, "--prompts", str(prompts), "--json-out",
                        str(out), "--max-new-tokens", "24", "--block", "4", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        assert rec["ar"]["text"] == rec["jacobi"]["text"] and len(rec["ar"]["ids"]) == 24
    assert all(rec["ar"]["text"].strip() for rec in records)
    assert any("\ufffd" in rec["ar"]["text"] for rec in records)


def test_markdown_and_points_against_the_base():
    res = {"n": 164, "mode": "chat", "max_new_tokens": 512, "window": "blockwise", "block": 16, "device": "cuda",
           "isolation": "x", "models": {}}
    for name, (ar, jac) in (("base", (20, 20)), ("cllm", (18, 21))):
        res["models"][name] = {**humaneval.summarize({"ar": ["passed"] * ar + ["failed: x"] * (164 - ar),
                                                      "jacobi": ["passed"] * jac + ["timed out"] * (164 - jac)}, 164),
                               "jacobi_equals_ar": 150, "tokens_per_iteration": 2.0}
    humaneval.add_points_vs_base(res["models"])
    assert res["models"]["cllm"]["ar"] == {"passed": 18, "n": 164, "pass_at_1": 18 / 164}
    assert res["models"]["base"]["points_vs_base"] == {"ar": 0.0, "jacobi": 0.0}
    table = humaneval.markdown(res)
    assert "| cllm | 18/164 | 11.0% | 21/164 | 12.8% | 150/164 | 2.000 | -1.2 / +0.6 |" in table, table
