"""Consistency training: python3 -m training.train --model HF_DIR --trajectories FILE.h5 [FILE.h5 ...] --out OUT_DIR

Loss per block example (training/losses.py): L = L_consistency + ar_weight * L_AR. The CLLM code
(cllm_trainer_global.py) multiplies the AR loss by 10 and adds the global consistency loss with
weight 1, so --ar-weight defaults to 10. Optimiser AdamW, cosine schedule with 3% linear warm-up,
gradient clipping 1.0, one epoch by default (the paper's recipe: lr 2e-5, bf16, 1 epoch; a 135M
model on a few thousand prompts needs more: docs/training.md gives the GPU recipe's settings).
Each step takes --batch-size units per rank, forwarded as real batches (training/batching.py):
a unit is one block example, or with --pack all blocks of one prompt in one sequence; lengths are
bucketed (--sort-buffer) to limit padding; --micro-batch bounds the units per forward.
Several GPUs: torchrun --nproc_per_node N -m training.train (torch.distributed starts only when
WORLD_SIZE > 1; each global batch is split across ranks)."""
import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from . import batching, data, losses
from .model import load_model, save_model


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="HF checkpoint dir (config.json + safetensors), e.g. from cllm convert")
    p.add_argument("--trajectories", required=True, nargs="+",
                   help="HDF5 file(s) written by `cllm trajectories` (several: the shards of one collection)")
    p.add_argument("--out", required=True, help="output dir: HF checkpoint + loss.csv (+ loss.png with --plot)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: --epochs over the examples)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the units (block examples or, with --pack, prompts) when --steps is 0")
    p.add_argument("--batch-size", type=int, default=1,
                   help="units per step and rank: block examples, or prompts with --pack")
    p.add_argument("--pack", action="store_true",
                   help="one sequence per prompt holding all its blocks and their states (far fewer tokens)")
    p.add_argument("--states-per-example", type=int, default=1,
                   help="distinct intermediate states of each block example trained per epoch")
    p.add_argument("--micro-batch", type=int, default=0, help="units per forward pass (0: the whole batch)")
    p.add_argument("--sort-buffer", type=int, default=32,
                   help="batches sorted by length together before shuffling them (1: no bucketing)")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="stop after this many seconds of training; the cosine schedule follows the time")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (torch >= 2)")
    p.add_argument("--lr", type=float, default=2e-5,
                   help="peak learning rate (paper: 2e-5 for 7B; the SmolLM2-135M GPU recipe uses 2e-4)")
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of the steps")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ar-weight", type=float, default=10.0, help="w in L = L_consistency + w * L_AR")
    p.add_argument("--consistency-weight", type=float, default=1.0)
    p.add_argument("--distill-weight", type=float, default=0.0,
                   help="d in L = ... + d * KL(base || model) on the next-token distributions of the fixed "
                        "points' tokens (the base: --teacher, frozen; one more forward per step, no backward)")
    p.add_argument("--teacher", default="",
                   help="the base that --distill-weight distills from (default: --model; give the base when "
                        "--model is a CLLM whose training goes on)")
    p.add_argument("--loss", choices=("global", "local"), default="global",
                   help="global: target is the fixed point; local: the next Jacobi state")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--save-dtype", choices=("same", "F32", "F16", "BF16"), default="same",
                   help="dtype of the saved weights (same: as in --model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--collective-timeout", type=float, default=600.0,
                   help="with several ranks (torchrun): seconds any collective may wait for the others before the "
                        "run stops with an error")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--plot", action="store_true", help="also write loss.png (needs matplotlib)")
    return p.parse_args(argv)


def cosine_with_warmup(step, total, warmup):
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> 0 (HF's schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def example_loss(model, ex, rng, args, device):
    """(total, consistency, ar) for one block example, from one forward over 2-3 rows: the reference
    that the batched path (training/batching.py) is tested against, and what mean_loss uses."""
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


def lr_multiplier(step, total, warmup, time_fraction=0.0):
    """cosine_with_warmup over the progress max(step / total, time_fraction): with --max-seconds the
    schedule (warm-up included) follows whichever is further along, the steps or the clock, so a run
    cut short by its time budget still warms up briefly and ends near lr 0."""
    if time_fraction <= 0:
        return cosine_with_warmup(step, total, warmup)
    progress, warm = max(step / total, time_fraction), warmup / total
    if progress < warm:
        return min(1.0, max((step + 1) / warmup, time_fraction / warm))
    if progress >= 1.0:  # the end (also when warm == 1: a one-step run, where 1 - warm would be 0)
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * (progress - warm) / (1.0 - warm)))


def train_step(model, units, n_global, args, device, autocast, teacher=None):
    """Forward + backward of this rank's units of one global batch; returns (loss, consistency, ar,
    distill) summed over its block examples / n_global (all_reduce makes them the global batch's
    means), block examples and real tokens. `teacher`: the frozen base, with --distill-weight."""
    units = sorted(units, key=lambda u: batching.unit_tokens(u, args.loss == "local"))
    m = args.micro_batch or len(units)
    chunks = [units[i:i + m] for i in range(0, len(units), m)]
    sums, examples, tokens = torch.zeros(4), 0, 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    for c, chunk in enumerate(chunks):
        batch = batching.build(chunk, local=args.loss == "local").to(device)
        sync = c == len(chunks) - 1 or not hasattr(model, "no_sync")
        with (model.no_sync() if not sync else contextlib.nullcontext()):
            with autocast():
                losses_ = batching.example_losses(model, batch, args.label_smoothing, teacher)
            cons, ar = losses_[:2]
            dist = losses_[2] if teacher is not None else torch.zeros_like(ar)
            total = args.consistency_weight * cons + args.ar_weight * ar + args.distill_weight * dist
            # DDP averages gradients over ranks: scale so that the result is the global mean.
            (total.sum() * (world / n_global)).backward()
        sums += torch.stack([total.detach().sum(), cons.detach().sum(), ar.detach().sum(),
                             dist.detach().sum()]).float().cpu() / n_global
        examples += batch.examples
        tokens += batch.real_tokens
    return sums, examples, tokens


def setup(args):
    """Device, world size and rank (torch.distributed starts only when WORLD_SIZE > 1); seeds."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if world > 1:
        if not args.collective_timeout > 0:
            raise SystemExit(f"--collective-timeout must be positive seconds, got {args.collective_timeout}")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        # Every collective gets a deadline: a rank that died or stalls stops the others with an
        # error instead of leaving them waiting (gloo and NCCL default to 30 minutes).
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=args.collective_timeout))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts (norms, loss) need no more
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.pack and args.loss == "local":
        raise SystemExit("--pack supports --loss global only")
    return device, world, rank


def load_data(args, world):
    """(file info, block examples, training units) of the trajectory files."""
    info = data.read_info(args.trajectories)
    examples = data.block_examples(data.read_samples(args.trajectories))
    units = batching.units_of(examples, args.pack)
    if len(units) < world:
        raise SystemExit(f"{args.trajectories}: {len(units)} units, fewer than the {world} ranks")
    return info, examples, units


def prepare_model(args, info, device, world):
    """(model, its dtypes, the module that trains: DDP- and compile-wrapped as asked, the frozen base
    with --distill-weight, else None)."""
    model, dtypes = load_model(args.model)
    if info.get("vocab_size") and info["vocab_size"] > model.cfg.vocab_size:
        raise SystemExit(f"{args.trajectories} was collected with a vocabulary of {info['vocab_size']} tokens; "
                         f"{args.model} has {model.cfg.vocab_size}")
    model.to(device)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        if not hasattr(torch, "compile"):
            raise SystemExit(f"--compile needs torch >= 2 (this is {torch.__version__})")
        train_model = torch.compile(train_model, dynamic=True)
    teacher = None
    if args.distill_weight > 0:  # the base, frozen
        teacher = load_model(args.teacher or args.model)[0].to(device).eval()
        if teacher.cfg.vocab_size != model.cfg.vocab_size:
            raise SystemExit(f"--teacher {args.teacher}: vocabulary of {teacher.cfg.vocab_size} tokens, "
                             f"--model {args.model} has {model.cfg.vocab_size}")
        teacher.requires_grad_(False)
    return model, dtypes, train_model, teacher


def make_optimizer(args, model, device, total):
    """AdamW and the warm-up + cosine schedule over `total` steps; the returned clock dict's "fraction"
    (elapsed / --max-seconds) makes the schedule follow the time."""
    try:  # one fused kernel per step on the GPU (torch 2.x); the plain loop elsewhere
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                **({"fused": True} if device.type == "cuda" else {}))
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, math.ceil(args.warmup * total))
    clock = {"fraction": 0.0}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, total, warmup, clock["fraction"]))
    return opt, sched, clock


def announce(args, info, examples, units, total, per_step, device, world, load_seconds):
    """The run's line on stderr and training_args.json (rank 0)."""
    local = args.loss == "local"
    mean_tokens = sum(batching.unit_tokens([(examples[i], [0] * min(args.states_per_example, len(examples[i].states)))
                                            for i in u], local) for u in units) / len(units)
    print(f"{len(examples)} block examples in {len(units)} units (block {info.get('block')}, "
          f"{len(args.trajectories)} files and the model read in {load_seconds:.1f} s, "
          f"~{mean_tokens:.0f} tokens each), {total} steps of {per_step} units"
          f"{f' or {args.max_seconds:.0f} s' if args.max_seconds else ''}, {args.loss} consistency "
          f"{args.consistency_weight:g} + {args.ar_weight:g} x AR"
          f"{f' + {args.distill_weight:g} x distill' if args.distill_weight else ''}, lr {args.lr:g}, device {device}, "
          f"world {world}",
          file=sys.stderr)
    with open(os.path.join(args.out, "training_args.json"), "w") as f:
        json.dump(vars(args), f, indent=2)


def train_loop(args, model, train_model, teacher, opt, sched, clock, stream, total, device, world, rank, writer,
               log):
    """Runs the steps (until `total` or --max-seconds); returns (steps done, block examples seen, seconds)."""
    autocast = ((lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if args.bf16
                else contextlib.nullcontext)
    t0 = time.time()
    seen = tokens_seen = 0
    model.train()
    for step in range(total):
        batch = next(stream)
        n_global = sum(len(u) for u in batch)
        opt.zero_grad(set_to_none=True)
        sums, n_ex, n_tok = train_step(train_model, batch[rank::world], n_global, args, device, autocast, teacher)
        stats = torch.cat([sums, torch.tensor([float(n_ex), float(n_tok)])])
        elapsed = torch.tensor([time.time() - t0])
        if world > 1:
            stats, elapsed = stats.to(device), elapsed.to(device)
            torch.distributed.all_reduce(stats)
            torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)  # ranks stop together
            stats, elapsed = stats.cpu(), elapsed.cpu()
        seen += int(stats[4])
        tokens_seen += int(stats[5])
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        seconds = float(elapsed[0])
        clock["fraction"] = seconds / args.max_seconds if args.max_seconds else 0.0
        sched.step()
        last = step + 1 == total or clock["fraction"] >= 1.0
        if writer:
            writer.writerow([step + 1, f"{lr:.6g}", f"{stats[0]:.6f}", f"{stats[1]:.6f}", f"{stats[2]:.6f}",
                             f"{seconds:.2f}", seen, f"{stats[3]:.6f}"])
            log.flush()
            if (step + 1) % args.log_every == 0 or last:
                distill = f" distill {stats[3]:.4f}" if teacher is not None else ""
                print(f"step {step + 1}/{total} lr {lr:.3g} loss {stats[0]:.4f} consistency {stats[1]:.4f} "
                      f"ar {stats[2]:.4f}{distill} ({seconds:.1f} s, {seen / max(seconds, 1e-9):.1f} examples/s, "
                      f"{tokens_seen / max(seconds, 1e-9):.0f} tokens/s)", file=sys.stderr)
        if last:
            break
    return step + 1, seen, time.time() - t0


def main(argv=None):
    args = parse_args(argv)
    device, world, rank = setup(args)
    t_load = time.time()
    info, examples, units = load_data(args, world)
    model, dtypes, train_model, teacher = prepare_model(args, info, device, world)
    per_step = args.batch_size * world
    total = args.steps or max(1, math.ceil(len(units) * args.epochs / per_step))
    opt, sched, clock = make_optimizer(args, model, device, total)

    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        announce(args, info, examples, units, total, per_step, device, world, time.time() - t_load)
    csv_path = os.path.join(args.out, "loss.csv")
    log = open(csv_path, "w", newline="") if rank == 0 else None
    writer = csv.writer(log) if log else None
    if writer:
        writer.writerow(["step", "lr", "loss", "consistency", "ar", "seconds", "examples", "distill"])
    stream = batching.global_batches(examples, units, per_step, args.seed, args.states_per_example,
                                     args.sort_buffer, args.loss == "local")
    steps, seen, seconds = train_loop(args, model, train_model, teacher, opt, sched, clock, stream, total, device,
                                      world, rank, writer, log)
    if rank == 0:
        log.close()
        print(f"trained {steps} steps, {seen} block examples ({seen / len(examples):.2f} epochs) in {seconds:.1f} s: "
              f"{seen / max(seconds, 1e-9):.1f} examples/s", file=sys.stderr)
        save_model(model, dtypes, args.model, args.out, None if args.save_dtype == "same" else args.save_dtype)
        if args.plot:
            plot(csv_path, os.path.join(args.out, "loss.png"))
        print(f"wrote {args.out}", file=sys.stderr)
    if world > 1:
        # DDP's reducer holds gloo state: free it while every rank is still in the group, and leave
        # together (a rank tearing down after its peer has exited could wait forever).
        del train_model
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
