"""Shared fixtures. The cllm binary comes from $CLLM_BIN, else <repo>/build/cllm; tests that need it
fail (not skip) when it is missing, naming the build command."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["The sea is", "Once upon a time", "1, 2, 3,"]


def cllm_bin():
    path = os.environ.get("CLLM_BIN", os.path.join(REPO, "build", "cllm"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it (cmake -S . -B build -G Ninja && ninja -C build cllm) or set CLLM_BIN")
    return path


def run_cllm(*args):
    r = subprocess.run([cllm_bin(), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"cllm {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random tiny LLaMA (vocab 320, 2 layers, GQA, llama3 RoPE) in HF format."""
    out = tmp_path_factory.mktemp("tiny")
    run_cllm("random-model", "--shape", "tiny", "--out", out)
    return str(out)


@pytest.fixture(scope="session")
def trajectories(tiny_model, tmp_path_factory):
    """Trajectories of PROMPTS on the tiny model: block 8, 32 tokens, with augmentation."""
    d = tmp_path_factory.mktemp("traj")
    prompts = d / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = d / "t.h5"
    run_cllm("trajectories", "--model", tiny_model, "--prompts", prompts, "--out", out, "--block", 8,
             "--max-new-tokens", 32, "--augment", "--max-repeat", 0, "--seed", 3)
    return str(out)
