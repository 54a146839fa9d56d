"""training/pipeline.sh end to end on CPU: tiny random model, two prompts, a few steps."""
import os
import subprocess
import sys

from .conftest import REPO, cllm_bin


def test_pipeline_runs_end_to_end(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The sea is"}\n{"messages": [{"role": "user", "content": "skipped in eval"}]}\n'
                       '{"prompt": "Once upon"}\n')
    work = tmp_path / "work"
    env = dict(os.environ, CLLM_BIN=cllm_bin(), PYTHON=sys.executable)
    cmd = ["bash", os.path.join(REPO, "training", "pipeline.sh"), "--hf-dir", tiny_model, "--prompts", str(prompts),
           "--work", str(work), "--block", "4", "--max-new-tokens", "16", "--steps", "3", "--lr", "1e-3",
           "--eval-n", "2", "--eval-tokens", "12"]
    # The random model has no chat template, so the "messages" prompt makes collection fail loudly.
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "chat" in r.stderr.lower(), r.stderr

    prompts.write_text("The sea is\nOnce upon a time\n")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(work / "trajectories.h5") and os.path.exists(work / "cllm" / "model.safetensors")
    rows = (work / "eval.tsv").read_text().strip().split("\n")
    assert len(rows) == 1 + 2 * 2
    lines = r.stdout.strip().split("\n")
    assert lines[-2].startswith("base: ") and lines[-1].startswith("cllm: "), r.stdout
