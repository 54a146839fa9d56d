"""A few training steps lower the loss, with both consistency variants, and the result is served."""
import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from training import data, train
from training.model import load_model

from .conftest import REPO, run_cllm


@pytest.mark.parametrize("loss", ["global", "local"])
def test_training_lowers_the_loss(tiny_model, trajectories, tmp_path, loss):
    out = tmp_path / "out"
    argv = ["--model", tiny_model, "--trajectories", trajectories, "--out", str(out), "--steps", "24",
            "--lr", "3e-3", "--batch-size", "2", "--loss", loss, "--log-every", "8", "--device", "cpu"]
    args = train.parse_args(argv)
    examples = data.block_examples(data.read_samples(trajectories))
    before = train.mean_loss(load_model(tiny_model)[0], examples, args, torch.device("cpu"))
    train.main(argv)
    after = train.mean_loss(load_model(str(out))[0], examples, args, torch.device("cpu"))
    assert after[0] < 0.9 * before[0], (before, after)
    assert after[1] < before[1] and after[2] < before[2], (before, after)

    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < lrs[1]  # 1-step warm-up, then cosine decay
    for name in ("config.json", "generation_config.json", "tokenizer.json", "model.safetensors"):
        assert os.path.exists(out / name), name
    run_cllm("generate", "--model", out, "--prompt", "The sea", "--max-new-tokens", 16, "--decode", "both",
             "--block", 4, "--quiet")


def test_schedule_warms_up_then_decays_to_zero():
    total, warmup = 100, 3
    f = [train.cosine_with_warmup(s, total, warmup) for s in range(total)]
    assert f[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a >= b for a, b in zip(f[2:], f[3:])) and f[-1] < 1e-3


def test_two_ranks_train_like_one_rank_with_twice_the_batch(tiny_model, trajectories, tmp_path):
    # DDP on CPU (gloo), started by hand as torchrun would: WORLD_SIZE, RANK, MASTER_ADDR/PORT.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["-m", "training.train", "--model", tiny_model, "--trajectories", trajectories, "--steps", "3",
              "--lr", "1e-3", "--device", "cpu"]
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE="2")
    ranks = [subprocess.Popen([sys.executable, *common, "--out", str(tmp_path / "ddp"), "--batch-size", "1"],
                              cwd=REPO, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for p in ranks:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one"), "--batch-size", "2"],
                            cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    a, b = load_model(str(tmp_path / "ddp"))[0], load_model(str(tmp_path / "one"))[0]
    base = load_model(tiny_model)[0]
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), base.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), base.state_dict().values()))
