"""training/gpu_recipe.sh end to end on the CPU at toy sizes: tiny random model, plain prompts."""
import json
import os
import subprocess
import sys

from .conftest import REPO, cllm_bin


def test_recipe_runs_every_step_and_returns_few_files(tiny_model, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("The sea is\nOnce upon a time\n1, 2, 3,\nHello there\nA B C\n")
    held_out = tmp_path / "eval.txt"
    held_out.write_text("Far away\nIn the\n")
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = ["bash", os.path.join(REPO, "training", "gpu_recipe.sh"), "--out", str(out), "--work", str(work),
           "--hf-dir", tiny_model, "--train-prompts", str(train), "--eval-prompts", str(held_out), "--device", "cpu",
           "--procs", "2", "--max-new-tokens", "16", "--block", "4", "--eval-n", "2", "--eval-tokens", "12",
           "--budget", "200", "--eval-reserve", "40", "--batch-size", "2", "--states", "2", "--epochs", "1",
           "--lr", "1e-3", "--ar-weight", "5", "--distill-weight", "2"]
    env = dict(os.environ, CLLM_BIN=cllm_bin(), PYTHON=sys.executable)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 prompts kept" in r.stderr, r.stderr
    assert "global consistency 1 + 5 x AR + 2 x distill" in r.stderr  # the trainer got the weights
    files = sorted(os.listdir(out))
    assert {"summary.md", "eval.json", "eval.md", "loss.csv", "recipe.log", "records.tar.gz"} <= set(files), files
    res = json.loads((out / "eval.json").read_text())
    # The full run's defaults: both windows and sliding with lookahead, the CLLM on training prompts
    # too, and the serve stage.
    assert set(res["models"]) == {"base", "cllm"} and res["windows"] == ["blockwise", "sliding", "sliding+4x3"]
    assert res["training_prompts"]["prompts_decoded"] == 5 and set(res["serve"]["models"]) == {"base", "cllm"}
    assert sorted(os.path.basename(p) for p in work.glob("traj_*.h5")) == ["traj_0.h5", "traj_1.h5"]
    # Collect again: the shards are complete, so the collection only skips (resume).
    r = subprocess.run(cmd + ["--stages", "collect"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "5 already present" in r.stderr, r.stderr
