"""Batched CLLM losses: many block examples in one forward pass, each state in the same sequence as
its fixed point instead of a row of its own.

A unit is one packed sequence. Its main part is prompt + fixed points (the longest prefix + fixed
point among its examples). Each student state of a block example whose prefix has length P is
appended as a segment of n tokens at RoPE positions P..P+n-1 that attends to main[0:P] and
causally to itself, so it sees exactly what the row prefix + state of the per-example loss
(train.example_loss) sees. One unit per block example reproduces that loss; --pack puts all blocks
of a prompt into one unit: the prompt and the fixed points are then forwarded once instead of once
per block and state (the main part is also every block's AR input and global target, as causal
attention makes main[:P+n] identical to the row prefix + fixed point).

Logits are computed only where a loss needs them: block token j of an example is predicted at
main position P-1+j (AR, global target) or, for a state, at main P-1 (j = 0) and at the state's
slot j-1 (j >= 1). Units are right-padded; pad queries attend to themselves only (never a fully
masked row, whose softmax would be NaN) and no real token attends to a pad."""
import random

import numpy as np
import torch
import torch.nn.functional as F

from training.acceptance import first_mismatch


class Batch:
    """Tensors of one forward: ids, positions, see_prefix, start [b, t] (see attention_mask()); rows,
    cols of the logits to compute; per-example AR indices/tokens/mask [E, n]; per-state student and
    target indices and mask [S, n], the example each state belongs to [S]. Indices point into the
    computed logits."""

    def to(self, device):
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(device, non_blocking=True))
        return self


def unit_tokens(unit, local=False):
    """Tokens a unit forwards: main part + one n-token segment per state (two for local)."""
    main = max(len(ex.prefix) + len(ex.fixed) for ex, _ in unit)
    n = len(unit[0][0].fixed)
    return main + n * sum(len(states) for _, states in unit) * (2 if local else 1)


def build(units, local=False, pad_id=0):
    """units: list of lists of (BlockExample, state indices); the examples of a unit must share
    their main sequence (one prompt). Returns a Batch (on the CPU)."""
    n = len(units[0][0][0].fixed)
    # A multiple of 16: fused attention kernels want aligned mask rows (else a slow fallback).
    T = -(-max(unit_tokens(u, local) for u in units) // 16) * 16
    B = len(units)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int64)
    # The attention mask, as two numbers per query q (attention_mask() expands them on the device):
    # q sees keys k < see_prefix[q] and keys start[q] <= k <= q. Main tokens: (0, 0); a segment at
    # offset o after a prefix of P: (P, o); pads: (0, q), themselves only.
    see_prefix = np.zeros((B, T), dtype=np.int64)
    start = np.tile(np.arange(T, dtype=np.int64), (B, 1))
    rows, cols = [], []
    ar_idx, ar_tok, ar_mask = [], [], []
    st_idx, tg_idx, st_mask, st_ex = [], [], [], []

    def logit_at(b, c):  # index of the computed logit at ids[b, c]
        rows.append(b)
        cols.append(c)
        return len(rows) - 1

    for b, unit in enumerate(units):
        ex_main = max((ex for ex, _ in unit), key=lambda ex: len(ex.prefix))
        main = np.concatenate([ex_main.prefix, ex_main.fixed])
        L = len(main)
        ids[b, :L] = main
        pos[b, :L] = np.arange(L)
        start[b, :L] = 0
        off = L
        for ex, states in unit:
            P = len(ex.prefix)
            main_idx = [logit_at(b, P - 1 + j) for j in range(n)]
            e = len(ar_idx)
            ar_idx.append(main_idx)
            ar_tok.append(ex.fixed)
            ar_mask.append(np.arange(n) < ex.valid)
            for i in states:
                segs = [ex.states[i]] + ([ex.next_states[i]] if local else [])
                slots = []
                for seg in segs:
                    ids[b, off:off + n] = seg
                    pos[b, off:off + n] = P + np.arange(n)
                    see_prefix[b, off:off + n] = P
                    start[b, off:off + n] = off
                    slots.append([main_idx[0]] + [logit_at(b, off + j) for j in range(n - 1)])
                    off += n
                target_tokens = ex.next_states[i] if local else ex.fixed
                # As losses.consistency_loss: positions from the first token that differs from the target.
                k = first_mismatch(ex.states[i], target_tokens)
                k = n if k is None else k
                st_idx.append(slots[0])
                tg_idx.append(slots[1] if local else main_idx)
                st_mask.append((np.arange(n) >= k) & (np.arange(n) < ex.valid))
                st_ex.append(e)

    out = Batch()
    out.ids, out.positions = torch.from_numpy(ids), torch.from_numpy(pos)
    out.see_prefix, out.start = torch.from_numpy(see_prefix), torch.from_numpy(start)
    out.rows, out.cols = torch.tensor(rows), torch.tensor(cols)
    out.ar_idx = torch.tensor(ar_idx).reshape(-1, n)
    out.ar_tok = torch.from_numpy(np.stack(ar_tok).astype(np.int64))
    out.ar_mask = torch.from_numpy(np.stack(ar_mask))
    out.st_idx = torch.tensor(st_idx, dtype=torch.int64).reshape(-1, n)
    out.tg_idx = torch.tensor(tg_idx, dtype=torch.int64).reshape(-1, n)
    out.st_mask = torch.from_numpy(np.stack(st_mask)) if st_mask else torch.zeros(0, n, dtype=torch.bool)
    out.st_ex = torch.tensor(st_ex, dtype=torch.int64)
    out.examples = len(ar_idx)
    out.real_tokens = int(sum(unit_tokens(u, local) for u in units))
    out.padded_tokens = B * T
    return out


def attention_mask(see_prefix, start):
    """[b, t] x [b, t] -> [b, t, t] bool: query q may attend to key k (see build())."""
    k = torch.arange(start.shape[1], device=start.device)
    q = k[:, None]
    return (k < see_prefix[..., None]) | ((k >= start[..., None]) & (k <= q))


def example_losses(model, batch, smoothing=0.1, teacher=None):
    """(consistency [E], ar [E]) per block example of the batch: the per-example losses of
    training/losses.py, the consistency averaged over the example's states (0 without states).
    With a teacher model, also distill [E]: KL(teacher || model) of the next-token distributions that
    predict the fixed point's valid tokens (the AR positions), averaged over them; the teacher's
    forward (same ids, positions and mask) has no gradient."""
    mask = attention_mask(batch.see_prefix, batch.start)
    logits = model(batch.ids, positions=batch.positions, mask=mask, gather=(batch.rows, batch.cols))
    cons, ar = _losses(logits, batch, smoothing)
    if teacher is None:
        return cons, ar
    E, n = batch.ar_idx.shape
    rows = batch.ar_idx.reshape(-1)
    with torch.no_grad():
        # Only the rows the AR loss uses: the states' rows are not needed.
        t_logits = teacher(batch.ids, positions=batch.positions, mask=mask, gather=(batch.rows, batch.cols))[rows]
    t_log = torch.log_softmax(t_logits.float(), dim=-1)
    kl = (t_log.exp() * (t_log - torch.log_softmax(logits[rows].float(), dim=-1))).sum(-1).reshape(E, n)
    m = batch.ar_mask.to(kl.dtype)
    return cons, ar, (kl * m).sum(1) / m.sum(1).clamp(min=1)


def _losses(logits, batch, smoothing):
    E, n = batch.ar_idx.shape
    ce = F.cross_entropy(logits[batch.ar_idx.reshape(-1)], batch.ar_tok.reshape(-1), reduction="none",
                         label_smoothing=smoothing).reshape(E, n)
    m = batch.ar_mask.to(ce.dtype)
    ar = (ce * m).sum(1) / m.sum(1).clamp(min=1)

    cons = logits.new_zeros(E) + logits.sum() * 0.0  # keeps the graph connected when no state counts
    S = batch.st_idx.shape[0]
    pairs = batch.st_mask.nonzero()  # (state, j) positions that count: only their [V] rows are built
    if S and len(pairs):
        s, j = pairs[:, 0], pairs[:, 1]
        target = torch.softmax(logits[batch.tg_idx[s, j]].detach(), dim=-1)
        per_pos = -(target * torch.log_softmax(logits[batch.st_idx[s, j]], dim=-1)).sum(-1)
        per_state = logits.new_zeros(S).index_add(0, s, per_pos)
        per_state = per_state / batch.st_mask.sum(1).clamp(min=1).to(per_state.dtype)
        states_of = torch.zeros(E, dtype=per_state.dtype, device=logits.device).index_add(
            0, batch.st_ex, torch.ones_like(per_state))
        cons = cons + logits.new_zeros(E).index_add(0, batch.st_ex, per_state) / states_of.clamp(min=1)
    return cons, ar


def units_of(examples, pack):
    """Example indices per unit: one each, or (pack) all blocks of a prompt together."""
    if not pack:
        return [[i] for i in range(len(examples))]
    by_prompt = {}
    for i, ex in enumerate(examples):
        by_prompt.setdefault(ex.prompt_index, []).append(i)
    return list(by_prompt.values())


def draw_states(examples, index, epoch, seed, k):
    """States of example `index` that train in this epoch: k distinct ones (all if fewer), drawn
    from (seed, epoch, index) alone, so the rank layout and the packing do not change the draw."""
    m = len(examples[index].states)
    rng = random.Random(f"{seed}/{epoch}/{index}")
    if m == 0:
        return []
    return [rng.randrange(m)] if k == 1 else rng.sample(range(m), min(k, m))


def global_batches(examples, units, batch_units, seed, states_per_example, sort_buffer, local=False):
    """Endless stream of global batches (lists of units, each a list of (example, states)), epoch
    after epoch, every batch exactly `batch_units` units. Each run of sort_buffer batches is sorted
    by length before it is cut (less padding: similar lengths share a batch), then the batches are
    shuffled. Depends on the global batch size alone, not on how many ranks share it."""
    def stream():  # (unit index, unit) pairs, epoch after epoch
        epoch = 0
        while True:
            order = list(range(len(units)))
            random.Random(seed * 7919 + epoch).shuffle(order)
            for u in order:
                yield u, [(examples[i], draw_states(examples, i, epoch + 1, seed, states_per_example)) for i in units[u]]
            epoch += 1

    it, round_ = stream(), 0
    while True:
        chunk = [next(it) for _ in range(batch_units * max(1, sort_buffer))]
        if sort_buffer > 1:
            chunk.sort(key=lambda pair: unit_tokens(pair[1], local))
        cut = [chunk[i:i + batch_units] for i in range(0, len(chunk), batch_units)]
        separate_epoch_copies(cut)
        if sort_buffer > 1:
            random.Random(f"{seed}/batches/{round_}").shuffle(cut)
        round_ += 1
        yield from ([unit for _, unit in batch] for batch in cut)


def separate_epoch_copies(batches):
    """A chunk that spans an epoch boundary holds two copies of some units, and sorting by length puts
    them side by side. Swaps the second copy with a unit of another batch that holds neither, so no
    batch trains one prompt twice (batch sizes and the chunk's contents stay the same)."""
    for b, batch in enumerate(batches):
        seen = set()
        for k, (u, _) in enumerate(batch):
            if u not in seen:
                seen.add(u)
                continue
            for other in batches[b + 1:] + batches[:b]:
                ids = {v for v, _ in other}
                j = next((j for j, (v, _) in enumerate(other) if v not in seen and u not in ids), None)
                if j is not None:
                    batch[k], other[j] = other[j], batch[k]
                    seen.add(batch[k][0])
                    break
