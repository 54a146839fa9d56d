"""A few training steps lower the loss, with both consistency variants, and the result is served."""
import csv
import math
import os
import socket
import subprocess
import sys
import time

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
    # Every rank must finish: on a deadline or a failed rank, the others are stopped and every
    # rank's output is shown (a rank left waiting on a dead peer would otherwise hang the suite).
    deadline = time.monotonic() + 300
    while any(p.poll() is None for p in ranks) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in ranks):
            break
        time.sleep(0.1)
    for p in ranks:
        if p.poll() is None:
            p.kill()
    outputs = [p.communicate()[0] for p in ranks]
    for r, (p, out) in enumerate(zip(ranks, outputs)):
        assert p.returncode == 0, f"rank {r} (exit {p.returncode}):\n{out}\nother rank:\n{outputs[1 - r]}"
    # --micro-batch 1: one example per forward as on each rank. Batched, the padded GEMMs round
    # differently (~1e-7), which Adam's first steps can blow up past the tolerance on a few weights.
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one"), "--batch-size", "2",
                             "--micro-batch", "1"], cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    a, b = load_model(str(tmp_path / "ddp"))[0], load_model(str(tmp_path / "one"))[0]
    base = load_model(tiny_model)[0]
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), base.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), base.state_dict().values()))


def test_collective_timeout_must_be_positive(tiny_model, trajectories, tmp_path):
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    r = subprocess.run([sys.executable, "-m", "training.train", "--model", tiny_model, "--trajectories", trajectories,
                        "--out", str(tmp_path / "o"), "--device", "cpu", "--collective-timeout", "0"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--collective-timeout must be positive seconds, got 0.0" in r.stderr, r.stderr


def test_packed_batches_with_several_states_lower_the_loss(tiny_model, trajectories, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", tiny_model, "--trajectories", trajectories, "--out", str(out), "--steps", "16",
            "--lr", "3e-3", "--batch-size", "2", "--pack", "--states-per-example", "3", "--micro-batch", "1",
            "--log-every", "8", "--device", "cpu"]
    args = train.parse_args(argv)
    examples = data.block_examples(data.read_samples(trajectories))
    before = train.mean_loss(load_model(tiny_model)[0], examples, args, torch.device("cpu"))
    train.main(argv)
    after = train.mean_loss(load_model(str(out))[0], examples, args, torch.device("cpu"))
    assert after[1] < before[1] and after[2] < before[2], (before, after)
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and int(rows[-1]["examples"]) > 16 * 2  # a prompt packs several blocks


def test_time_budget_ends_training_early_with_lr_near_zero(tiny_model, trajectories, tmp_path):
    out = tmp_path / "out"
    train.main(["--model", tiny_model, "--trajectories", trajectories, "--out", str(out), "--steps", "100000",
                "--lr", "1e-3", "--max-seconds", "2", "--device", "cpu", "--log-every", "1000"])
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert 2 < len(rows) < 100000 and float(rows[-1]["seconds"]) >= 2
    # 100000 steps would warm up for 3000: the clock ends the warm-up and then drives the cosine.
    lr, previous = float(rows[-1]["lr"]), float(rows[-2]["seconds"]) / 2
    # (seconds are logged to 0.01 s: 1e-5 covers the rounding)
    assert lr == pytest.approx(1e-3 * train.lr_multiplier(len(rows) - 1, 100000, 3000, previous), abs=1e-5)
    assert lr < 0.5e-3 < max(float(r["lr"]) for r in rows)
    assert os.path.exists(out / "model.safetensors")


def test_lr_multiplier_follows_steps_or_time():
    assert train.lr_multiplier(5, 100, 3) == train.cosine_with_warmup(5, 100, 3)
    assert train.lr_multiplier(0, 100, 3, 0.01) == pytest.approx(1 / 3)  # warming up, by the clock
    assert train.lr_multiplier(2, 100, 3, 0.01) == pytest.approx(1.0)  # warm-up over, by the steps
    assert train.lr_multiplier(1, 100, 3, 0.5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.47 / 0.97)))
    assert train.lr_multiplier(50, 100, 3, 0.2) == pytest.approx(train.cosine_with_warmup(50, 100, 3))  # steps ahead
    assert train.lr_multiplier(5, 100, 3, 1.0) == pytest.approx(0.0)
    # A one-step run under --max-seconds: warm-up is the whole schedule; it ends at 0, no ZeroDivisionError.
    assert train.lr_multiplier(1, 1, 1, 0.5) == pytest.approx(0.0)


def test_distillation_keeps_the_model_closer_to_its_base(tiny_model, trajectories, tmp_path):
    """--distill-weight: the same run with a large weight ends nearer the base (KL on the fixed points)."""
    from training import batching
    examples = data.block_examples(data.read_samples(trajectories))
    base = load_model(tiny_model)[0].eval()
    kls = {}
    for weight in ("0", "20"):
        out = tmp_path / f"d{weight}"
        train.main(["--model", tiny_model, "--trajectories", trajectories, "--out", str(out), "--steps", "12",
                    "--lr", "3e-3", "--batch-size", "2", "--pack", "--device", "cpu", "--log-every", "100",
                    "--ar-weight", "1", "--distill-weight", weight])
        with open(out / "loss.csv") as f:
            rows = list(csv.DictReader(f))
        # Logged only when distilling; 0 at step 1 (the model starts as its base), then above.
        assert (float(rows[-1]["distill"]) > 0) == (weight != "0") and float(rows[0]["distill"]) < 1e-6
        units = [[(ex, [])] for ex in examples]
        with torch.no_grad():
            kls[weight] = float(batching.example_losses(load_model(str(out))[0].eval(), batching.build(units),
                                                        teacher=base)[2].mean())
    assert kls["20"] < 0.5 * kls["0"], kls
