"""training/gpu_recipe.sh split over two calls that share --work (for a machine where one job has a
short time limit): --stages collect,train, then --stages evaluate,serve; --smoke on the CPU with the
tiny random model and plain prompts."""
import json
import math
import os
import subprocess
import sys
import tarfile

from .conftest import REPO, cllm_bin


def recipe(tiny_model, tmp_path, out, *extra):
    train = tmp_path / "train.txt"
    if not train.exists():
        train.write_text("The sea is\nOnce upon a time\n1, 2, 3,\nHello there\nA B C\n")
        (tmp_path / "eval.txt").write_text("Far away\nIn the\nNot served\n")
    cmd = ["bash", os.path.join(REPO, "training", "gpu_recipe.sh"), "--smoke", "--device", "cpu",
           "--out", str(tmp_path / out), "--work", str(tmp_path / "work"), "--hf-dir", tiny_model,
           "--train-prompts", str(train), "--eval-prompts", str(tmp_path / "eval.txt"), "--procs", "2",
           "--max-new-tokens", "16", "--block", "4", "--eval-tokens", "12", "--batch-size", "2", "--states", "2",
           "--epochs", "1", "--lr", "1e-3", *extra]
    env = dict(os.environ, CLLM_BIN=cllm_bin(), PYTHON=sys.executable)
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_two_calls_share_the_work_dir(tiny_model, tmp_path):
    # Each of the 2 processes collects 2 prompts at once (cllm trajectories --batch 2).
    r = recipe(tiny_model, tmp_path, "a", "--stages", "collect,train", "--collect-seconds", "60",
               "--train-seconds", "30", "--collect-batch", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "collect: 2 processes x 2 prompts at once, 60s" in r.stderr
    assert "train: 30s on 2 shards, from base" in r.stderr
    assert "5 prompts kept, 0 dropped, 0 already present, 0 left" in r.stderr
    a = tmp_path / "a"
    assert set(os.listdir(a)) - {"loss.png"} == {"loss.csv", "recipe.log", "records.tar.gz", "summary.md"}
    assert "] evaluate:" not in (a / "recipe.log").read_text() and "] serve:" not in (a / "recipe.log").read_text()
    work = tmp_path / "work"
    made = {p: os.stat(work / p).st_mtime_ns for p in ("traj_0.h5", "traj_1.h5", "cllm/model.safetensors")}

    # Two made-up problems in HumanEval's format: the real ones do not fit the tiny model's 256 positions.
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"task_id": f"T/{i}", "prompt": f"def f{i}():\n", "entry_point": f"f{i}",
                                            "test": f"def check(f):\n    assert f() == {i}\n"}) + "\n"
                                for i in range(3)))
    r = recipe(tiny_model, tmp_path, "b", "--stages", "humaneval,serve,evaluate",  # run in the canonical order
               "--humaneval-problems", str(problems), "--humaneval-mode", "complete", "--humaneval-tokens", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    b = tmp_path / "b"
    log = (b / "recipe.log").read_text()
    assert "stages evaluate,serve,humaneval;" in log and "] collect:" not in log and "] train:" not in log
    assert log.index("] evaluate:") < log.index("] serve:") < log.index("] humaneval:")
    # The first call's shards and model were used, not made again.
    assert made == {p: os.stat(work / p).st_mtime_ns for p in made}
    files = set(os.listdir(b))
    assert {"summary.md", "eval.json", "eval.md", "loss.csv", "recipe.log", "records.tar.gz"} <= files, files
    # The whole story in the last call's folder: the first call's collection and training, from the history.
    summary = (b / "summary.md").read_text()
    assert "5 prompts kept" in summary and "trained 3 steps" in summary and "--stages collect,train" in summary
    assert "| cllm (training prompts) | blockwise |" in summary and "| cllm | blockwise |" in summary

    res = json.loads((b / "eval.json").read_text())
    assert set(res["models"]) == {"base", "cllm"} and res["windows"] == ["blockwise"]
    train = res["training_prompts"]
    assert train["prompts"].endswith("train.jsonl") and train["prompts_decoded"] == 2
    assert train["models"]["cllm"]["blockwise"]["tokens_per_iteration"] >= 1.0
    serve = res["serve"]
    assert serve["n"] == 2 and serve["max_tokens"] == 12 and serve["max_batch"] == 4 and "requests" not in serve
    for name in ("base", "cllm"):
        s = serve["models"][name]["blockwise"]
        assert s["prompts"] == 2 and s["identical"] == 1.0 and 1.0 <= s["tokens_per_iteration"] <= 12
        assert all(math.isfinite(s[k]) and s[k] > 0 for k in ("ar_tokens_per_s", "jacobi_tokens_per_s", "speedup",
                                                              "ar_client_tokens_per_s", "jacobi_client_tokens_per_s"))
        assert serve["servers"][f"{name}_blockwise"]["exit_code"] == 0
    assert "Served by `cllm serve`" in (b / "eval.md").read_text()
    # HumanEval (--smoke: the first 2 problems), both models, AR and Jacobi; every problem in humaneval.json.
    he = res["humaneval"]
    assert he["n"] == 2 and he["mode"] == "complete" and "problems" not in he
    for name in ("base", "cllm"):
        m = he["models"][name]
        assert m["ar"]["n"] == m["jacobi"]["n"] == 2 and m["jacobi_equals_ar"] == 2
    assert len(json.loads((b / "humaneval.json").read_text())["problems"]) == 8  # 2 models x 2 problems x 2
    assert "| cllm | 0/2 |" in summary or "| cllm | 1/2 |" in summary or "| cllm | 2/2 |" in summary

    with tarfile.open(b / "records.tar.gz") as tar:
        names = set(tar.getnames())
        assert {"serve.json", "base_blockwise.jsonl", "cllm_train_blockwise.jsonl", "recipe_history.log"} <= names
        full = json.load(tar.extractfile("serve.json"))
    assert len(full["requests"]) == 8  # 2 models x 2 prompts x (AR, Jacobi)
    assert all(1 <= q["completion_tokens"] <= 12 and q["iterations"] >= 1 for q in full["requests"])
    history = (work / "recipe_history.log").read_text()
    assert history.count("=== ") == 2 and "(stages collect,train, exit 0)" in history

    # --resume: the stages done with the same settings are skipped; a changed setting runs its stage again
    # and the stages after it.
    first = ("--collect-seconds", "60", "--train-seconds", "30", "--collect-batch", "2", "--budget", "200")
    r = recipe(tiny_model, tmp_path, "c", "--stages", "collect,train,evaluate", "--resume", *first)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ("collect", "train", "evaluate"):
        assert f"] {stage}: skipped, done with these settings" in r.stderr, r.stderr
    assert made == {p: os.stat(work / p).st_mtime_ns for p in made}
    assert json.loads((tmp_path / "c" / "eval.json").read_text())["models"]  # the results of the skipped stage
    r = recipe(tiny_model, tmp_path, "d", "--stages", "collect,train,evaluate", "--resume", *first, "--lr", "2e-3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "] collect: skipped" in r.stderr and "] train: 30s on 2 shards, from base" in r.stderr
    assert "] evaluate: 4 held-out prompts" in r.stderr and "evaluate: skipped" not in r.stderr
    assert os.stat(work / "cllm/model.safetensors").st_mtime_ns != made["cllm/model.safetensors"]

    # --train-init cllm: training goes on from cllm/ (never skipped by --resume), distilling from the base;
    # the earlier segment's losses stay as loss_1.csv.
    trained = (work / "cllm/model.safetensors").read_bytes()
    r = recipe(tiny_model, tmp_path, "e", "--stages", "train", "--resume", *first, "--lr", "2e-3",
               "--train-init", "cllm", "--distill-weight", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"] train: 30s on 2 shards, from cllm ({work}/cllm)" in r.stderr and "+ 1 x distill" in r.stderr
    assert (work / "cllm/model.safetensors").read_bytes() != trained
    assert (work / "cllm/loss_1.csv").is_file() and (work / "cllm/loss.csv").is_file()
    assert not (work / "cllm.new").exists()


def test_a_stage_without_its_input_is_refused(tiny_model, tmp_path):
    r = recipe(tiny_model, tmp_path, "o", "--stages", "evaluate")
    assert r.returncode == 2 and "no trained model in" in r.stderr and "run --stages train first" in r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--stages", "train")
    assert r.returncode == 2 and "no trajectories" in r.stderr and "run --stages collect first" in r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--stages", "collect,train", "--collect-seconds", "100",
               "--train-seconds", "50", "--budget", "150")
    assert r.returncode == 2 and "more than --budget 150s" in r.stderr, r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--stages", "collect,lunch")
    assert r.returncode == 2 and "unknown stage 'lunch'" in r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--stages", "train", "--train-init", "cllm")
    assert r.returncode == 2 and "--train-init cllm: no trained model in" in r.stderr, r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--stages", "collect", "--eval-prompts", str(tmp_path / "none.jsonl"))
    assert r.returncode == 2 and f"--eval-prompts {tmp_path}/none.jsonl: no such file" in r.stderr, r.stderr
    r = recipe(tiny_model, tmp_path, "o", "--train-init", "nothing")
    assert r.returncode == 2 and "--train-init must be base or cllm" in r.stderr, r.stderr
