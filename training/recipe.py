"""The CLLM experiment (docs/training.md) in stages: python3 -m training.recipe --out DIR [flags]
(training/gpu_recipe.sh is the same command).

SmolLM2-135M-Instruct (GGUF, dequantized by `cllm convert`) -> Jacobi trajectories of the stdlib and
packages prompts (training/prompts/, made by training/make_prompts.py), collected by `cllm trajectories`
-> packed consistency + AR training -> base vs CLLM on the held-out prompts (training/evaluate.py),
through `cllm serve` (training/serve_speedup.py) and, optionally, on HumanEval (training/humaneval.py).
One call, or several that share --work (--stages).

Stages (--stages, run in this order whatever the order given): collect, train, evaluate, serve and
humaneval (not in the default list). Each reads what earlier ones left in --work: the base model (made by
collect: base/ from the GGUF, random135m/ with --random-model; --hf-dir is used in place), the trajectory
shards traj_*.h5 (shards.list), the trained model cllm/; a stage whose input is missing is refused at once.
 - collect: --procs `cllm trajectories` processes (one shard file each), each collecting --collect-batch
   prompts at once (default 64 on cuda, 1 on cpu; --procs defaults to 2 on cuda with a batch > 1, else
   8); shards resume, so a later call continues the collection.
 - train: `python3 -m training.train` from the base model on all shards (cllm/ is overwritten).
 - evaluate: base vs CLLM on --eval-n held-out prompts x --eval-tokens (AR + every --windows Jacobi), and
   the CLLM on the first --train-eval-n training prompts (0: not), rows "cllm (training prompts)".
 - serve: `cllm serve` per model and --serve-windows window, --serve-n held-out prompts one request at a
   time (serve.json; its table goes into eval.md and summary.md).
 - humaneval: greedy pass@1 of base and CLLM, AR and Jacobi, on --humaneval-n problems (0: all 164),
   generated code run sandboxed (training/humaneval.py); humaneval.json, its table in eval.md.
--resume: every stage that completes writes WORK/done/STAGE.json with its settings; with --resume a stage
whose record matches this call's settings is skipped (a stage that runs drops the records of the stages
after it; collect is recorded only once no prompt is left).
Time: --budget is the wall-clock seconds of this call. Evaluate, serve and humaneval have their reserves
when they run in this call; collect takes half of the rest when train runs too, and train what is left
then (its cosine schedule follows the clock). Explicit --collect-seconds / --train-seconds replace that
split (--collect-seconds 0: until every prompt is done); they are refused if with the reserves they exceed
--budget. --smoke: a 2-minute check of every step (16 prompts, 32 tokens, 4 eval prompts, 2 training and
2 served prompts). --random-model: no GGUF needed, a random model of SmolLM2's shape and the prompts as
plain text (it has no chat template): with --smoke, a check of the GPU paths before the model file is there.
DIR receives summary.md, eval.json, eval.md, eval.png, loss.csv, loss.png, recipe.log, records.tar.gz
(every JSON line of the evaluation, serve.json, the collection's logs, recipe_history.log) and, with the
humaneval stage, humaneval.json. Every call appends its log to WORK/recipe_history.log; summary.md lists
the earlier calls' collect and train lines. Big files stay in --work (default /tmp/cllm_recipe,
/tmp/cllm_recipe_smoke with --smoke).
The measured run (docs/training.md, one H200): gpu_recipe.sh --out DIR --budget 575 --collect-seconds 70
--train-seconds 380. Env: CLLM_BIN (default build-gpu/cllm if it exists, else build/cllm), PYTHON (the
interpreter of the Python steps; default this one)."""
import argparse
import dataclasses
import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from typing import List, Optional

from .windows import WINDOWS, parse_window

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("collect", "train", "evaluate", "serve", "humaneval")
DEFAULT_STAGES = "collect,train,evaluate,serve"


class RecipeError(Exception):
    """A refused setting or a missing input: exit 2 with the message."""


@dataclasses.dataclass
class Config:
    """Every setting of one call. None: the full run's or the smoke test's default (resolve())."""
    out: str
    work: Optional[str] = None
    stages: str = DEFAULT_STAGES
    gguf: str = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    hf_dir: str = ""
    # The standard library's prompts (the held-out split's domain) first, so that a collection cut short
    # by its deadline has them, then the Debian packages' (training/make_prompts.py --unlike).
    train_prompts: str = ",".join(os.path.join(REPO, "training", "prompts", f) for f in
                                  ("stdlib_train.jsonl.gz", "packages_train.jsonl.gz"))
    eval_prompts: str = os.path.join(REPO, "training", "prompts", "stdlib_eval.jsonl.gz")
    device: str = "cuda"
    budget: Optional[int] = None
    collect_seconds: Optional[int] = None
    train_seconds: Optional[int] = None
    procs: Optional[int] = None
    collect_batch: Optional[int] = None
    prompts_limit: Optional[int] = None
    max_new_tokens: Optional[int] = None
    block: int = 16
    lr: float = 3e-4
    batch_size: int = 32
    states: int = 4
    epochs: float = 8
    ar_weight: float = 10.0
    consistency_weight: float = 1.0
    distill_weight: float = 0.0
    train_init: str = "base"
    eval_n: Optional[int] = None
    eval_tokens: Optional[int] = None
    windows: Optional[str] = None
    train_eval_n: Optional[int] = None
    eval_reserve: Optional[int] = None
    serve_n: Optional[int] = None
    serve_windows: str = "blockwise"
    serve_reserve: Optional[int] = None
    humaneval_n: Optional[int] = None
    humaneval_tokens: int = 512
    humaneval_reserve: Optional[int] = None
    humaneval_window: str = "blockwise"
    humaneval_mode: str = ""
    humaneval_problems: str = os.path.join(REPO, "training", "data", "HumanEval.jsonl.gz")
    smoke: bool = False
    random_model: bool = False
    resume: bool = False
    cllm_bin: str = ""
    python: str = ""

    # (field, full run, --smoke) for the settings whose default depends on --smoke. The smoke test has
    # its own work dir: its shards, collected at other settings, cannot be resumed by a full run.
    SIZES = (("budget", 900, 120), ("prompts_limit", 0, 16), ("max_new_tokens", 128, 32), ("eval_n", 100, 4),
             ("eval_tokens", 128, 32), ("windows", "blockwise,sliding,sliding+4x3", "blockwise"),
             ("eval_reserve", 95, 30),
             ("work", "/tmp/cllm_recipe", "/tmp/cllm_recipe_smoke"), ("train_eval_n", 30, 2), ("serve_n", 30, 2),
             ("serve_reserve", 25, 20), ("humaneval_n", 0, 2), ("humaneval_reserve", 300, 60))

    def resolve(self):
        """Fills the defaults, checks every setting (RecipeError naming the flag), puts the stages in order."""
        for name, full, smoke in self.SIZES:
            if getattr(self, name) is None:
                setattr(self, name, smoke if self.smoke else full)
        if self.collect_batch is None:
            self.collect_batch = 64 if self.device == "cuda" else 1
        if self.procs is None:  # one process of 64 prompts fills the GPU better than 8 of one prompt
            self.procs = 2 if self.device == "cuda" and self.collect_batch > 1 else 8
        for name in ("budget", "procs", "collect_batch", "prompts_limit", "max_new_tokens", "block", "eval_n",
                     "eval_tokens", "eval_reserve", "train_eval_n", "serve_n", "serve_reserve", "humaneval_n",
                     "humaneval_tokens", "humaneval_reserve"):
            if getattr(self, name) < 0:
                raise RecipeError(f"--{flag(name)} must be a non-negative integer, got {getattr(self, name)}")
        if self.collect_seconds is not None and self.collect_seconds < 0:
            raise RecipeError("--collect-seconds must be an integer >= 0")
        if self.train_seconds is not None and self.train_seconds < 1:
            raise RecipeError("--train-seconds must be a positive integer")
        if self.procs < 1 or self.collect_batch < 1:
            raise RecipeError("--procs and --collect-batch must be >= 1")
        given = [s for s in self.stages.replace(" ", "").split(",") if s]
        if not given:
            raise RecipeError(f"--stages is empty ({', '.join(STAGES)})")
        for s in given:
            if s not in STAGES:
                raise RecipeError(f"unknown stage '{s}' in --stages ({', '.join(STAGES)})")
        self.stages = ",".join(s for s in STAGES if s in given)
        for w in self.windows.split(","):
            try:
                parse_window(w)
            except ValueError as e:
                raise RecipeError(f"--windows: {e}")
        for w in self.serve_windows.split(",") + [self.humaneval_window]:
            if w not in WINDOWS:
                raise RecipeError(f"unknown window '{w}' in --serve-windows or --humaneval-window "
                                  f"({', '.join(WINDOWS)})")
        explicit = self.reserve()
        if self.has("collect"):
            explicit += self.collect_seconds or 0
        if self.has("train") and self.train_seconds is not None:
            explicit += self.train_seconds + 20
        if explicit > self.budget:
            split = lambda v: "(split)" if v is None else v
            raise RecipeError(f"--collect-seconds {split(self.collect_seconds)} + --train-seconds "
                              f"{split(self.train_seconds)} (+20 s to load and save) + the reserves of the stages "
                              f"run here ({self.reserve()}s) is {explicit}s, more than --budget {self.budget}s: "
                              "raise --budget or lower them")
        if not self.cllm_bin:
            self.cllm_bin = os.environ.get("CLLM_BIN", "")
        if not self.cllm_bin:
            gpu = os.path.join(REPO, "build-gpu", "cllm")
            self.cllm_bin = gpu if os.access(gpu, os.X_OK) else os.path.join(REPO, "build", "cllm")
        if not self.humaneval_mode:  # a random model has no chat template
            self.humaneval_mode = "complete" if self.random_model else "chat"
        if self.humaneval_mode not in ("chat", "complete"):
            raise RecipeError(f"--humaneval-mode must be chat or complete, got '{self.humaneval_mode}'")
        if self.train_init not in ("base", "cllm"):
            raise RecipeError(f"--train-init must be base or cllm, got '{self.train_init}'")
        self.python = self.python or os.environ.get("PYTHON", "") or sys.executable
        return self

    def has(self, stage):
        return stage in self.stages.split(",")

    def reserve(self):
        """Seconds kept for the stages after train that run in this call."""
        return ((self.eval_reserve if self.has("evaluate") else 0) + (self.serve_reserve if self.has("serve") else 0)
                + (self.humaneval_reserve if self.has("humaneval") else 0))

    def base_dir(self):
        if self.random_model:
            return os.path.join(self.work, "random135m")
        return os.path.abspath(self.hf_dir) if self.hf_dir else os.path.join(self.work, "base")

    # The settings each stage's result depends on (--resume compares them).
    STAGE_KEYS = {
        "collect": ("gguf", "hf_dir", "random_model", "train_prompts", "prompts_limit", "max_new_tokens", "block"),
        "train": ("lr", "batch_size", "states", "epochs", "ar_weight", "consistency_weight", "distill_weight",
                  "train_seconds", "train_init"),
        "evaluate": ("eval_prompts", "eval_n", "eval_tokens", "windows", "train_eval_n", "block"),
        "serve": ("eval_prompts", "serve_n", "eval_tokens", "serve_windows", "block"),
        "humaneval": ("humaneval_problems", "humaneval_n", "humaneval_tokens", "humaneval_window", "humaneval_mode",
                      "block"),
    }

    def stage_settings(self, stage):
        return {k: getattr(self, k) for k in self.STAGE_KEYS[stage]}


def flag(name):
    return name.replace("_", "-")


def parse_args(argv=None):
    """Config from the command line: every field is a flag (--out, --collect-seconds, ...)."""
    p = argparse.ArgumentParser(prog=os.environ.get("CLLM_RECIPE_PROG", "python3 -m training.recipe"),
                                description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = {
        "out": "results folder (required)", "work": "big files: models, trajectories (kept between calls)",
        "stages": f"comma-separated, of {', '.join(STAGES)} (default {DEFAULT_STAGES})",
        "hf_dir": "an HF base model dir used in place of --gguf", "train_prompts": "FILE[,FILE...]",
        "device": "cuda | cpu", "budget": "wall-clock seconds of this call (default 900; smoke 120)",
        "collect_seconds": "0: until every prompt is done", "prompts_limit": "the first N training prompts (0: all)",
        "states": "states per block example (--states-per-example)", "epochs": "at most this many epochs",
        "windows": "Jacobi windows of evaluate: blockwise, sliding, each optionally with lookahead "
                   "(WINDOW+GxR: G candidate n-grams of R tokens; default blockwise,sliding,sliding+4x3)", "train_eval_n": "training prompts evaluated too",
        "humaneval_n": "HumanEval problems (0: all 164; smoke 2)",
        "humaneval_mode": "chat (default) or complete (plain-text prompts; default with --random-model)",
        "humaneval_tokens": "new tokens per HumanEval answer",
        "ar_weight": "w in L = consistency_weight * L_consistency + w * L_AR + distill_weight * KL(base || model)",
        "distill_weight": "0: no distillation to the base's logits (training/train.py --distill-weight)",
        "train_init": "base: train from the base model; cllm: go on training WORK/cllm (a new warm-up and cosine "
                      "over --train-seconds; the base stays the distillation teacher)",
        "gguf": "the base model's GGUF (collect converts it)", "eval_prompts": "held-out prompts (JSONL or text)",
        "train_seconds": "training seconds (default: what the budget leaves)",
        "procs": "cllm trajectories processes (default 2 on cuda with --collect-batch > 1, else 8)",
        "collect_batch": "prompts each process collects at once (default 64 on cuda, 1 on cpu)",
        "max_new_tokens": "new tokens per collected prompt (default 128; smoke 32)", "block": "Jacobi block size",
        "lr": "peak learning rate", "batch_size": "prompts per training step",
        "eval_n": "held-out prompts evaluated (default 100; smoke 4)", "eval_tokens": "new tokens per evaluated prompt",
        "eval_reserve": "seconds kept for evaluate", "serve_n": "prompts served (default 30; smoke 2)",
        "serve_windows": "blockwise and/or sliding", "serve_reserve": "seconds kept for serve",
        "humaneval_reserve": "seconds kept for humaneval (default 300; smoke 60)",
        "humaneval_window": "Jacobi window of humaneval", "humaneval_problems": "HumanEval JSONL (.gz or plain)",
        "smoke": "a quick check of every step at toy sizes",
        "random_model": "a random model of SmolLM2's shape instead of the GGUF",
        "python": "interpreter of the Python steps (default $PYTHON, else this one)",
        "resume": "skip the stages already done with these settings (WORK/done/)",
        "cllm_bin": "cllm executable (default $CLLM_BIN, build-gpu/cllm, build/cllm)",
    }
    for f in dataclasses.fields(Config):
        name = "--" + flag(f.name)
        default = None if f.default is dataclasses.MISSING else f.default
        if f.type in (bool, "bool"):
            p.add_argument(name, action="store_true", help=helps.get(f.name))
            continue
        kind = float if f.type in (float, Optional[float]) else int if f.type in (int, Optional[int]) else str
        p.add_argument(name, type=kind, default=default, required=f.name == "out", help=helps.get(f.name))
    return Config(**vars(p.parse_args(argv)))


# ---- running things, with a log ----

class Log:
    """recipe.log of this call; every line also on stderr, prefixed with the seconds since the start."""

    def __init__(self, path, start):
        self.path, self.start = path, start
        self.file = open(path, "w")

    def say(self, *words):
        line = f"[{int(time.time() - self.start):4d}s] {' '.join(str(w) for w in words)}"
        self.raw(line + "\n")

    def raw(self, text):
        sys.stderr.write(text)
        sys.stderr.flush()
        self.file.write(text)
        self.file.flush()

    def run(self, cmd, cwd=REPO):
        """Runs cmd with its stdout and stderr line by line into the log; raises on failure."""
        p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", bufsize=1)
        for line in p.stdout:
            self.raw(line)
        if p.wait() != 0:
            raise StageFailed(f"{' '.join(map(str, cmd[:4]))} ... failed (exit {p.returncode})", p.returncode)


class StageFailed(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def read_text(path):
    """A prompts file, gzipped or not."""
    with open(path, "rb") as f:
        data = f.read()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


class Recipe:
    def __init__(self, cfg: Config, invocation: str):
        self.cfg, self.invocation = cfg, invocation
        self.start = time.time()
        self.base = cfg.base_dir()
        self.shards_list = os.path.join(cfg.work, "shards.list")
        self.history = os.path.join(cfg.work, "recipe_history.log")
        self.log: Optional[Log] = None
        self.ran: List[str] = []  # stages run (not skipped) in this call

    def left(self):
        return self.cfg.budget - int(time.time() - self.start)

    def die(self, message):
        raise RecipeError(message)

    # ---- inputs ----

    def check_inputs(self):
        """Inputs that no stage of this call makes must be in --work already."""
        c = self.cfg
        if not c.has("collect") and not os.path.isfile(os.path.join(self.base, "config.json")):
            self.die(f"no base model in {self.base}: run --stages collect first with this --work")
        trained = os.path.isfile(os.path.join(c.work, "cllm", "config.json"))
        if c.has("train") and c.train_init == "cllm" and not trained:
            self.die(f"--train-init cllm: no trained model in {c.work}/cllm: run --stages train first with this --work")
        if c.has("train") and not c.has("collect") and not self.read_shards():
            self.die(f"no trajectories (traj_*.h5) in {c.work}: run --stages collect first with this --work")
        if (c.has("evaluate") or c.has("serve") or c.has("humaneval")) and not c.has("train") and not trained:
            self.die(f"no trained model in {c.work}/cllm: run --stages train first with this --work")
        for name, paths in (("train-prompts", c.train_prompts.split(",")), ("eval-prompts", [c.eval_prompts]),
                            ("humaneval-problems", [c.humaneval_problems] if c.has("humaneval") else [])):
            for path in paths:
                if not os.path.isfile(path):
                    self.die(f"--{name} {path}: no such file")
        if (c.has("collect") and not c.random_model and not c.hf_dir
                and not os.path.isfile(os.path.join(self.base, "config.json")) and not os.path.isfile(c.gguf)):
            self.die(f"{c.gguf} is missing (launch/fetch_model.sh, or --gguf)")

    def read_shards(self):
        """The shards of the last collection (any traj_*.h5 for a work dir from before shards.list)."""
        if os.path.isfile(self.shards_list):
            with open(self.shards_list) as f:
                return [s for s in f.read().splitlines() if s and os.path.isfile(s)]
        return sorted(os.path.join(self.cfg.work, n) for n in os.listdir(self.cfg.work)
                      if re.fullmatch(r"traj_\d+\.h5", n))

    def write_prompts(self):
        """Prompts (committed, so that every machine trains on the same ones), made again by every call."""
        c, w = self.cfg, self.cfg.work
        train_all = "".join(read_text(p) for p in c.train_prompts.split(",") if p)
        held_out = read_text(c.eval_prompts)
        if c.random_model:  # chat messages -> {"prompt": the user's text}, used as is
            plain = lambda text: "".join(json.dumps({"prompt": json.loads(line)["messages"][-1]["content"]}) + "\n"
                                         for line in text.splitlines() if line.strip())
            train_all, held_out = plain(train_all), plain(held_out)
        with open(os.path.join(w, "train_all.jsonl"), "w") as f:
            f.write(train_all)
        with open(os.path.join(w, "eval.jsonl"), "w") as f:
            f.write(held_out)
        lines = train_all.splitlines(keepends=True)
        with open(os.path.join(w, "train.jsonl"), "w") as f:
            f.write("".join(lines[:c.prompts_limit] if c.prompts_limit > 0 else lines))
        count = lambda name: sum(1 for _ in open(os.path.join(w, name)))
        return count("train.jsonl"), count("eval.jsonl")

    # ---- stages ----

    def collect(self):
        """The base model, then --procs processes, one shard file each, all stopping at the deadline.
        Returns whether every prompt is done."""
        c, log = self.cfg, self.log
        if c.collect_seconds is not None:
            seconds = c.collect_seconds
        elif c.has("train") and c.train_seconds is not None:
            seconds = self.left() - c.reserve() - c.train_seconds - 20
        elif c.has("train"):
            seconds = (self.left() - c.reserve()) // 2
        else:
            seconds = self.left() - c.reserve() - 5
        if c.collect_seconds is None and seconds < 10:
            self.die(f"budget too small: {seconds}s for the collection (--budget, --collect-seconds)")
        batch_flag = []
        if c.collect_batch > 1:
            help_text = subprocess.run([c.cllm_bin, "trajectories", "--help"], capture_output=True, text=True)
            if "--batch" not in help_text.stdout + help_text.stderr:
                self.die(f"{c.cllm_bin} trajectories has no --batch: rebuild cllm, or pass --collect-batch 1")
            batch_flag = ["--batch", c.collect_batch]
        log.say(f"collect: {c.procs} processes x {c.collect_batch} prompts at once, " +
                ("until every prompt is done (not bounded by the budget)" if seconds == 0 else f"{seconds}s"))
        keep_all = ["--max-repeat", 0] if c.random_model else []  # a random model repeats itself
        for n in os.listdir(c.work):
            if re.fullmatch(r"collect_\d+\.(out|err)", n):
                os.remove(os.path.join(c.work, n))
        procs = []
        for i in range(c.procs):
            cmd = [c.cllm_bin, "trajectories", "--model", self.base, "--prompts", os.path.join(c.work, "train.jsonl"),
                   "--out", os.path.join(c.work, f"traj_{i}.h5"), "--block", c.block, "--max-new-tokens",
                   c.max_new_tokens, "--augment", *keep_all, "--shard", f"{i}/{c.procs}", *batch_flag,
                   "--max-seconds", seconds, "--device", c.device, "--threads", 2]
            out = open(os.path.join(c.work, f"collect_{i}.out"), "w")
            err = open(os.path.join(c.work, f"collect_{i}.err"), "w")
            procs.append((subprocess.Popen([str(x) for x in cmd], stdout=out, stderr=err), out, err))
        failed = 0
        for i, (p, out, err) in enumerate(procs):
            if p.wait() != 0:
                failed += 1
                log.say(f"shard {i} failed:")
                with open(err.name) as f:
                    log.raw("".join(f.readlines()[-3:]))
            out.close()
            err.close()
        outs = [os.path.join(c.work, f"collect_{i}.out") for i in range(c.procs)]
        for path in outs:
            with open(path) as f:
                log.raw(f.read())
        shards = [os.path.join(c.work, f"traj_{i}.h5") for i, path in enumerate(outs) if os.path.getsize(path) > 0]
        if not shards:
            raise StageFailed(f"no shard finished: see {c.work}/collect_*.err")
        with open(self.shards_list, "w") as f:
            f.write("".join(s + "\n" for s in shards))
        totals = collect_totals(open(p).read() for p in outs)
        log.say(f"collect: done, {failed} shards failed; {totals['kept']} prompts kept, {totals['dropped']} dropped, "
                f"{totals['present']} already present, {totals['left']} left; base Jacobi "
                f"{totals['tokens'] / max(1, totals['iterations']):.3f} tokens/iteration over {totals['tokens']} "
                "tokens")
        return failed == 0 and totals["left"] == 0

    def train(self):
        """From the base model (or, --train-init cllm, from WORK/cllm) on every shard; the clock left minus
        the later stages' reserves and a margin to load and save, unless --train-seconds."""
        c = self.cfg
        shards = self.read_shards()
        if not shards:
            self.die(f"no trajectories in {c.work}")
        cllm = os.path.join(c.work, "cllm")
        start = cllm if c.train_init == "cllm" else self.base
        if not os.path.isfile(os.path.join(start, "config.json")):
            self.die(f"--train-init cllm: no trained model in {cllm}: run --stages train first with this --work")
        seconds = c.train_seconds if c.train_seconds is not None else max(5, self.left() - c.reserve() - 20)
        self.log.say(f"train: {seconds}s on {len(shards)} shards, from {c.train_init} ({start})")
        # bf16 autocast on the GPU only: on a CPU it is ~20x slower than fp32.
        precision = ["--device", "cuda", "--bf16"] if c.device == "cuda" else ["--device", "cpu"]
        # Into a new folder, which replaces cllm/ once complete (training from cllm/ reads it meanwhile).
        new = os.path.join(c.work, "cllm.new")
        shutil.rmtree(new, ignore_errors=True)
        self.log.run([c.python, "-m", "training.train", "--model", start, "--teacher", self.base, "--trajectories",
                      *shards, "--out", new, "--pack", "--batch-size", c.batch_size, "--micro-batch", 16,
                      "--states-per-example", c.states, "--epochs", c.epochs, "--max-seconds", seconds, "--lr", c.lr,
                      "--ar-weight", c.ar_weight, "--consistency-weight", c.consistency_weight,
                      "--distill-weight", c.distill_weight, *precision, "--log-every", 10, "--plot"])
        if c.train_init == "cllm":  # the earlier segments' losses stay beside this one's
            earlier = sorted(n for n in os.listdir(cllm) if re.fullmatch(r"loss_\d+\.csv", n))
            for n in earlier:
                shutil.copy(os.path.join(cllm, n), new)
            shutil.copy(os.path.join(cllm, "loss.csv"), os.path.join(new, f"loss_{len(earlier) + 1}.csv"))
        shutil.rmtree(cllm, ignore_errors=True)
        os.rename(new, cllm)
        return True

    def evaluate(self):
        """Each model loaded once; AR and Jacobi on the same engine; quality under the base; the CLLM also
        on training prompts."""
        c, w = self.cfg, self.cfg.work
        self.log.say(f"evaluate: {c.eval_n} held-out prompts x {c.eval_tokens} tokens ({c.windows}), the CLLM on "
                     f"{c.train_eval_n} training prompts ({self.left()}s left)")
        shutil.rmtree(os.path.join(w, "eval"), ignore_errors=True)
        train_eval = (["--train-prompts", os.path.join(w, "train.jsonl"), "--train-n", c.train_eval_n]
                      if c.train_eval_n else [])
        self.log.run([c.python, "-m", "training.evaluate", "--base", self.base, "--cllm", os.path.join(w, "cllm"),
                      "--prompts", os.path.join(w, "eval.jsonl"), "--out", os.path.join(w, "eval"), "--n", c.eval_n,
                      "--max-new-tokens", c.eval_tokens, "--block", c.block, "--windows", c.windows, "--device",
                      c.device, "--cllm-bin", c.cllm_bin, *train_eval])
        return True

    def serve(self):
        """`cllm serve` per model and window, held-out prompts one request at a time."""
        c, w = self.cfg, self.cfg.work
        self.log.say(f"serve: {c.serve_n} held-out prompts x {c.eval_tokens} tokens ({c.serve_windows}), "
                     f"max-batch 4 ({self.left()}s left)")
        shutil.rmtree(os.path.join(w, "serve"), ignore_errors=True)
        self.log.run([c.python, "-m", "training.serve_speedup", "--base", self.base, "--cllm",
                      os.path.join(w, "cllm"), "--prompts", os.path.join(w, "eval.jsonl"), "--out",
                      os.path.join(w, "serve"), "--n", c.serve_n, "--max-tokens", c.eval_tokens, "--block", c.block,
                      "--max-batch", 4, "--windows", c.serve_windows, "--device", c.device, "--cllm-bin", c.cllm_bin])
        return True

    def humaneval(self):
        """Greedy pass@1, base vs CLLM, AR and Jacobi (training/humaneval.py)."""
        c, w = self.cfg, self.cfg.work
        self.log.say(f"humaneval: {c.humaneval_n or 'all'} problems x {c.humaneval_tokens} tokens "
                     f"({c.humaneval_window}) ({self.left()}s left)")
        shutil.rmtree(os.path.join(w, "humaneval"), ignore_errors=True)
        self.log.run([c.python, "-m", "training.humaneval", "--model", f"base={self.base}", "--model",
                      f"cllm={os.path.join(w, 'cllm')}", "--out", os.path.join(w, "humaneval"), "--problems",
                      c.humaneval_problems, "--limit",
                      c.humaneval_n, "--max-new-tokens", c.humaneval_tokens, "--block", c.block, "--window",
                      c.humaneval_window, "--mode", c.humaneval_mode, "--device", c.device, "--cllm-bin", c.cllm_bin])
        return True

    # ---- resume records ----

    def done_path(self, stage):
        return os.path.join(self.cfg.work, "done", f"{stage}.json")

    def is_done(self, stage):
        if stage == "train" and self.cfg.train_init == "cllm":
            return False  # training that goes on is never done
        try:
            with open(self.done_path(stage)) as f:
                return json.load(f)["settings"] == json.loads(json.dumps(self.cfg.stage_settings(stage)))
        except (OSError, ValueError, KeyError):
            return False

    def mark(self, stage, complete):
        os.makedirs(os.path.dirname(self.done_path(stage)), exist_ok=True)
        # What this stage made is new: the records of the stages after it no longer hold.
        for later in STAGES[STAGES.index(stage) + 1:]:
            if os.path.exists(self.done_path(later)):
                os.remove(self.done_path(later))
        if complete:
            with open(self.done_path(stage), "w") as f:
                json.dump({"settings": self.cfg.stage_settings(stage), "finished": utc_now()}, f, indent=2)
        elif os.path.exists(self.done_path(stage)):
            os.remove(self.done_path(stage))

    # ---- the whole call ----

    def run(self):
        c = self.cfg
        if not os.access(c.cllm_bin, os.X_OK):
            self.die(f"{c.cllm_bin} is missing: build cllm or set CLLM_BIN")
        if c.hf_dir and not os.path.isdir(c.hf_dir):
            self.die(f"--hf-dir {c.hf_dir} is not a directory")
        # This call's results only: what an earlier call left in --out goes (its story is in the history).
        for name in ("summary.md", "eval.json", "eval.md", "eval.png", "loss.csv", "loss.png", "recipe.log",
                     "records.tar.gz", "humaneval.json"):
            if os.path.exists(os.path.join(c.out, name)):
                os.remove(os.path.join(c.out, name))
        self.log = Log(os.path.join(c.out, "recipe.log"), self.start)
        log = self.log
        log.say(f"stages {c.stages}; cllm {c.cllm_bin}, device {c.device}, budget {c.budget}s, work {c.work}, "
                f"out {c.out}")
        log.say(f"settings: procs {c.procs} x collect-batch {c.collect_batch}, prompts-limit {c.prompts_limit}, "
                f"max-new-tokens {c.max_new_tokens}, block {c.block}, lr {c.lr:g}, batch {c.batch_size} prompts, "
                f"states {c.states}, epochs <= {c.epochs:g}, consistency {c.consistency_weight:g} + "
                f"{c.ar_weight:g} x AR + {c.distill_weight:g} x distill, eval {c.eval_n} x {c.eval_tokens} tokens "
                f"({c.windows}) + {c.train_eval_n} training prompts, serve {c.serve_n} prompts ({c.serve_windows}); "
                f"reserved: {c.reserve()}s "
                f"(evaluate {c.eval_reserve}s, serve {c.serve_reserve}s, humaneval {c.humaneval_reserve}s, "
                "when run here)")
        self.check_inputs()
        if c.device == "cuda" and shutil.which("nvidia-smi"):
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
            log.raw(r.stdout + r.stderr)
        n_train, n_eval = self.write_prompts()
        if c.has("collect") and not os.path.isfile(os.path.join(self.base, "config.json")):
            if c.random_model:
                subprocess.run([c.cllm_bin, "random-model", "--shape", "135m", "--out", self.base], check=True,
                               stdout=subprocess.DEVNULL)
            else:
                log.run([c.cllm_bin, "convert", "--model", os.path.abspath(c.gguf), "--out", self.base])
        log.say(f"prompts: {n_train} training, {n_eval} held out; base model in {self.base}")
        for stage in c.stages.split(","):
            if c.resume and self.is_done(stage):
                log.say(f"{stage}: skipped, done with these settings ({self.done_path(stage)})")
                continue
            if stage != "collect" and stage != "train" and not os.path.isfile(os.path.join(c.work, "cllm",
                                                                                         "config.json")):
                self.die(f"no trained model in {c.work}/cllm")
            complete = getattr(self, stage)()
            self.ran.append(stage)
            self.mark(stage, complete)
        self.results()
        log.say(f"done: {c.out}/summary.md")
        with open(os.path.join(c.out, "summary.md")) as f:
            print(f.read(), end="")

    def results(self):
        """The files listed in the header; serve's and humaneval's results go into eval.json and eval.md."""
        c, w, out = self.cfg, self.cfg.work, self.cfg.out
        cllm = os.path.join(w, "cllm")
        if any(c.has(s) for s in ("train", "evaluate", "serve", "humaneval")) and os.path.isfile(
                os.path.join(cllm, "loss.csv")):
            for name in ("loss.csv", "loss.png"):
                if os.path.isfile(os.path.join(cllm, name)):
                    shutil.copy(os.path.join(cllm, name), out)
        if c.has("evaluate"):
            for name in ("eval.json", "eval.md", "eval.png"):
                if os.path.isfile(os.path.join(w, "eval", name)):
                    shutil.copy(os.path.join(w, "eval", name), out)
        for stage in ("serve", "humaneval"):
            path, table = f"{stage}/{stage}.json", f"{stage}/{stage}.md"
            if not c.has(stage) or not os.path.isfile(os.path.join(w, path)):
                continue
            eval_json = os.path.join(out, "eval.json")
            res = json.load(open(eval_json)) if os.path.isfile(eval_json) else {}
            full = json.load(open(os.path.join(w, path)))
            # Every request or problem: in records.tar.gz.
            res[stage] = {k: v for k, v in full.items() if k not in ("requests", "problems")}
            with open(os.path.join(out, "eval.json"), "w") as f:
                json.dump(res, f, indent=2)
            md = os.path.join(out, "eval.md")
            with open(md, "a") as f:
                f.write(("\n" if os.path.isfile(md) and os.path.getsize(md) else "")
                        + open(os.path.join(w, table)).read())
        if c.has("humaneval") and os.path.isfile(os.path.join(w, "humaneval", "humaneval.json")):
            shutil.copy(os.path.join(w, "humaneval", "humaneval.json"), out)
        records = []  # (folder, names)
        if c.has("collect"):
            records.append((w, [n for n in sorted(os.listdir(w)) if re.fullmatch(r"collect_\d+\.(out|err)", n)]))
        for stage, sub, pattern in (("evaluate", "eval", r".*\.(jsonl|log)"),
                                    ("serve", "serve", r"serve\.json|.*\.log"),
                                    ("humaneval", "humaneval", r".*\.(jsonl|log)")):
            d = os.path.join(w, sub)
            if c.has(stage) and os.path.isdir(d):
                records.append((d, [n for n in sorted(os.listdir(d)) if re.fullmatch(pattern, n)]))
        # The earlier calls' logs (this call's is appended at its end).
        if os.path.isfile(self.history) and os.path.getsize(self.history):
            records.append((w, ["recipe_history.log"]))
        if any(names for _, names in records):
            with tarfile.open(os.path.join(out, "records.tar.gz"), "w:gz") as tar:
                for folder, names in records:
                    for n in names:
                        tar.add(os.path.join(folder, n), arcname=n)
        elapsed = int(time.time() - self.start)
        if elapsed > c.budget:
            self.log.say(f"over budget: {elapsed}s of {c.budget}s")
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write(self.summary(elapsed))

    def summary(self, elapsed):
        c = self.cfg
        log = open(self.log.path).read().splitlines()
        head = re.compile(r"^\[ *\d+s\] (stages|settings|prompts|collect|train|evaluate|serve|humaneval|over budget)")
        lines = ["# CLLM recipe result", "",
                 f"This call: stages {c.stages}; {elapsed}s of a {c.budget}s budget; device {c.device}; work {c.work}.",
                 ""]
        lines += ["    " + l for l in log if head.match(l)]
        if c.has("train"):
            lines += [""] + ["    " + l for l in [l for l in log if re.match(r"^(trained|step \d+/)", l)][-3:]]
        if os.path.isfile(self.history) and os.path.getsize(self.history):
            lines += ["", f"## Earlier calls with this --work ({self.history}; also in records.tar.gz)"]
            lines += history_summary(open(self.history).read())
        text = "\n".join(lines) + "\n"
        md = os.path.join(c.out, "eval.md")
        if os.path.isfile(md):
            text += "\n## Evaluation\n\n" + open(md).read()
        return text

    # ---- history: every call's log, appended at its end ----

    def history_entry(self, rc):
        body = open(self.log.path).read() if self.log else ""
        return (f"=== {utc_now()} {os.environ.get('CLLM_RECIPE_PROG', 'recipe.py')} {self.invocation} "
                f"(stages {self.cfg.stages}, exit {rc}) ===\n{body}")

    def finish(self, rc):
        try:
            with open(self.history, "a") as f:
                f.write(self.history_entry(rc))
        except OSError:
            pass


def collect_totals(texts):
    """Sums the summary lines of `cllm trajectories` outputs."""
    keys = ("kept", "dropped", "present", "left", "tokens", "iterations")
    totals = dict.fromkeys(keys, 0)
    for text in texts:
        m = re.search(r"(\d+) kept, (\d+) dropped .*?(\d+) already present, (\d+) left .*?kept: (\d+) tokens in (\d+) "
                      r"(?:iterations|block states)", text)  # block states: a multi-block collection (--blocks)
        if m:
            for k, v in zip(keys, m.groups()):
                totals[k] += int(v)
    return totals


def history_summary(history):
    """Per earlier call: its command line, then its stage lines and its last training lines."""
    out, step, trained = [], "", ""

    def flush():
        nonlocal step, trained
        out.extend("    " + s for s in (step, trained) if s)
        step = trained = ""
    for line in history.splitlines():
        if line.startswith("=== "):
            flush()
            out += ["", f"`{line[4:-4]}`:", ""]
        elif re.match(r"^\[ *\d+s\] (stages|prompts|collect|train|evaluate|serve|humaneval|over budget)", line):
            out.append("    " + line)
        elif re.match(r"^step \d+/", line):
            step = line
        elif line.startswith("trained "):
            trained = line
    flush()
    return out


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_args(argv).resolve()
        os.makedirs(cfg.out, exist_ok=True)
        os.makedirs(cfg.work, exist_ok=True)
        cfg.out, cfg.work = os.path.abspath(cfg.out), os.path.abspath(cfg.work)
        cfg.cllm_bin = os.path.abspath(cfg.cllm_bin)
        # The Python steps run from the repository root: every path absolute.
        for name in ("gguf", "hf_dir", "eval_prompts", "humaneval_problems"):
            if getattr(cfg, name):
                setattr(cfg, name, os.path.abspath(getattr(cfg, name)))
        cfg.train_prompts = ",".join(os.path.abspath(p) for p in cfg.train_prompts.split(",") if p)
    except RecipeError as e:
        print(f"{os.environ.get('CLLM_RECIPE_PROG', 'recipe')}: {e}", file=sys.stderr)
        return 2
    recipe = Recipe(cfg, " ".join(argv))
    rc = 0
    try:
        recipe.run()
    except RecipeError as e:
        rc = 2
        (recipe.log.say if recipe.log else lambda m: print(m, file=sys.stderr))(str(e))
    except StageFailed as e:
        rc = e.code or 1
        recipe.log.say(str(e))
    except BaseException as e:  # interrupted or a bug: in the history with its status, then as usual
        rc = 130 if isinstance(e, KeyboardInterrupt) else 1
        raise
    finally:
        recipe.finish(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
