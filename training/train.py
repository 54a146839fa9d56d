"""Consistency training: python3 -m training.train --model HF_DIR --trajectories FILE.h5 --out OUT_DIR

Loss per block example (training/losses.py): L = L_consistency + ar_weight * L_AR. The CLLM code
(cllm_trainer_global.py) multiplies the AR loss by 10 and adds the global consistency loss with
weight 1, so --ar-weight defaults to 10. Optimiser AdamW, cosine schedule with 3% linear warm-up,
gradient clipping 1.0, one epoch by default (the paper's recipe: lr 2e-5, bf16, 1 epoch).
Each step takes --batch-size block examples per rank (one forward + backward each, gradients
accumulated: examples differ in length). Several GPUs: torchrun --nproc_per_node N -m training.train
(torch.distributed starts only when WORLD_SIZE > 1; examples are split across ranks)."""
import argparse
import contextlib
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from . import data, losses
from .model import load_model, save_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="HF checkpoint dir (config.json + safetensors), e.g. from cllm convert")
    p.add_argument("--trajectories", required=True, help="HDF5 file written by `cllm trajectories`")
    p.add_argument("--out", required=True, help="output dir: HF checkpoint + loss.csv (+ loss.png with --plot)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: --epochs over the examples)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the block examples when --steps is 0")
    p.add_argument("--batch-size", type=int, default=1, help="block examples per step and rank")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of the steps")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ar-weight", type=float, default=10.0, help="w in L = L_consistency + w * L_AR")
    p.add_argument("--consistency-weight", type=float, default=1.0)
    p.add_argument("--loss", choices=("global", "local"), default="global",
                   help="global: target is the fixed point; local: the next Jacobi state")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--save-dtype", choices=("same", "F32", "F16", "BF16"), default="same",
                   help="dtype of the saved weights (same: as in --model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--plot", action="store_true", help="also write loss.png (needs matplotlib)")
    return p.parse_args(argv)


def cosine_with_warmup(step, total, warmup):
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 (HF's schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def example_loss(model, ex, rng, args, device):
    """(total, consistency, ar) for one block example, from one forward over 2-3 rows."""
    i = rng.randrange(len(ex.states)) if len(ex.states) else None
    rows = [np.concatenate([ex.prefix, ex.fixed])]  # AR input, and the global consistency target
    if i is not None:
        rows.append(np.concatenate([ex.prefix, ex.states[i]]))
        if args.loss == "local":
            rows.append(np.concatenate([ex.prefix, ex.next_states[i]]))
    ids = torch.from_numpy(np.stack(rows)).to(device)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if args.bf16
                else contextlib.nullcontext())
    with autocast:
        logits = model(ids)
    P = len(ex.prefix)
    ar = losses.ar_loss(logits[0], ids[0], P, ex.valid, args.label_smoothing)
    if i is None:  # converged in one iteration: nothing to make consistent
        cons = logits.sum() * 0.0
    else:
        t = 2 if args.loss == "local" else 0
        cons = losses.consistency_loss(logits[1], logits[t], ids[1, P:], ids[t, P:], P, ex.valid)
    return args.consistency_weight * cons + args.ar_weight * ar, cons.detach(), ar.detach()


@torch.no_grad()
def mean_loss(model, examples, args, device, seed=0):
    """(total, consistency, ar) averaged over `examples`, with states drawn by a fixed-seed rng: a
    deterministic measure for comparing weights (tests, before/after training)."""
    rng = random.Random(seed)
    sums = torch.zeros(3)
    for ex in examples:
        sums += torch.stack([x.detach().float().cpu() for x in example_loss(model, ex, rng, args, device)])
    return tuple((sums / len(examples)).tolist())


def plot(csv_path, png_path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed; loss.csv only", file=sys.stderr)
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "consistency", "ar"):
        ax.plot(steps, [float(r[key]) for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(png_path, dpi=120, bbox_inches="tight")


def main(argv=None):
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    info = data.read_info(args.trajectories)
    examples = data.block_examples(data.read_samples(args.trajectories))
    if len(examples) < world:
        raise SystemExit(f"{args.trajectories}: {len(examples)} block examples, fewer than the {world} ranks")
    model, dtypes = load_model(args.model)
    if info.get("vocab_size") and info["vocab_size"] > model.cfg.vocab_size:
        raise SystemExit(f"{args.trajectories} was collected with a vocabulary of {info['vocab_size']} tokens; "
                         f"{args.model} has {model.cfg.vocab_size}")
    model.to(device)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    per_step = args.batch_size * world
    total = args.steps or max(1, math.ceil(len(examples) * args.epochs / per_step))
    warmup = max(1, math.ceil(args.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, warmup))

    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        print(f"{len(examples)} block examples (block {info.get('block')}), {total} steps of {per_step}, "
              f"{args.loss} consistency + {args.ar_weight} x AR, device {device}, world {world}", file=sys.stderr)
        with open(os.path.join(args.out, "training_args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)
    csv_path = os.path.join(args.out, "loss.csv")
    log = open(csv_path, "w", newline="") if rank == 0 else None
    writer = csv.writer(log) if log else None
    if writer:
        writer.writerow(["step", "lr", "loss", "consistency", "ar", "seconds"])

    order, cursor, epoch = [], 0, 0
    t0 = time.time()
    model.train()
    for step in range(total):
        opt.zero_grad(set_to_none=True)
        sums = torch.zeros(3)
        for micro in range(args.batch_size):
            if cursor == len(order):  # a new epoch: one permutation on every rank, this rank's share
                order = list(range(len(examples)))
                random.Random(args.seed * 7919 + epoch).shuffle(order)
                order, cursor, epoch = order[rank::world], 0, epoch + 1
            index = order[cursor]
            cursor += 1
            # The state drawn depends only on (seed, epoch, example), not on the rank layout: N ranks
            # of batch b train exactly as one rank of batch N * b.
            rng = random.Random(f"{args.seed}/{epoch}/{index}")
            sync = micro == args.batch_size - 1 or world == 1
            with (train_model.no_sync() if not sync else contextlib.nullcontext()):
                loss, cons, ar = example_loss(train_model, examples[index], rng, args, device)
                (loss / args.batch_size).backward()
            sums += torch.stack([loss.detach().float().cpu(), cons.float().cpu(), ar.float().cpu()]) / args.batch_size
        if world > 1:
            sums = sums.to(device)
            torch.distributed.all_reduce(sums)
            sums = sums.cpu() / world
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        if writer:
            writer.writerow([step + 1, f"{lr:.6g}", f"{sums[0]:.6f}", f"{sums[1]:.6f}", f"{sums[2]:.6f}",
                             f"{time.time() - t0:.2f}"])
            log.flush()
            if (step + 1) % args.log_every == 0 or step + 1 == total:
                print(f"step {step + 1}/{total} lr {lr:.3g} loss {sums[0]:.4f} consistency {sums[1]:.4f} "
                      f"ar {sums[2]:.4f} ({time.time() - t0:.1f} s)", file=sys.stderr)
    if rank == 0:
        log.close()
        save_model(model, dtypes, args.model, args.out, None if args.save_dtype == "same" else args.save_dtype)
        if args.plot:
            plot(csv_path, os.path.join(args.out, "loss.png"))
        print(f"wrote {args.out}", file=sys.stderr)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
