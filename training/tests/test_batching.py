"""Batched and packed losses equal the per-example reference (train.example_loss), padding and
packing change nothing, and the batch stream is what the old one-by-one loop trained on."""
import random

import numpy as np
import pytest
import torch

from training import batching, data, train
from training.model import load_model


class Fixed:
    """An rng whose randrange returns a chosen state: drives example_loss to that state."""

    def __init__(self, i):
        self.i = i

    def randrange(self, _):
        return self.i


def reference(model, ex, states, args):
    """(consistency, ar) of one example by the per-example path, averaged over `states`."""
    cons, ar = [], None
    for i in states or [None]:
        if i is None:
            _, c, a = train.example_loss(model, ex, random.Random(0), args, torch.device("cpu"))
        else:
            _, c, a = train.example_loss(model, ex, Fixed(i), args, torch.device("cpu"))
        cons.append(float(c))
        ar = float(a)
    return sum(cons) / len(cons), ar


@pytest.fixture(scope="module")
def setup(tiny_model, trajectories):
    torch.manual_seed(0)
    model = load_model(tiny_model)[0].eval()
    with torch.no_grad():  # move off the random init a little so that the losses are not uniform
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    examples = data.block_examples(data.read_samples(trajectories))
    return model, examples


@pytest.mark.parametrize("loss", ["global", "local"])
@pytest.mark.parametrize("k", [1, 3])
def test_batched_loss_equals_per_example_loss(setup, tiny_model, trajectories, loss, k):
    model, examples = setup
    args = train.parse_args(["--model", tiny_model, "--trajectories", trajectories, "--out", "x", "--loss", loss])
    rng = random.Random(5)
    units = [[(ex, rng.sample(range(len(ex.states)), min(k, len(ex.states))))] for ex in examples]
    with torch.no_grad():
        cons, ar = batching.example_losses(model, batching.build(units, local=loss == "local"))
        for e, unit in enumerate(units):
            ex, states = unit[0]
            ref_c, ref_a = reference(model, ex, states, args)
            assert cons[e].item() == pytest.approx(ref_c, abs=1e-5), e
            assert ar[e].item() == pytest.approx(ref_a, abs=1e-5), e
            # Alone in its batch (no padding): the same again.
            c1, a1 = batching.example_losses(model, batching.build([unit], local=loss == "local"))
            assert c1[0].item() == pytest.approx(cons[e].item(), abs=1e-5)
            assert a1[0].item() == pytest.approx(ar[e].item(), abs=1e-5)


def test_packing_a_prompt_into_one_sequence_changes_nothing(setup):
    model, examples = setup
    rng = random.Random(1)
    chosen = [rng.sample(range(len(ex.states)), min(2, len(ex.states))) for ex in examples]
    single = [[(ex, s)] for ex, s in zip(examples, chosen)]
    packed = {}
    for ex, s in zip(examples, chosen):
        packed.setdefault(ex.prompt_index, []).append((ex, s))
    packed = list(packed.values())
    assert len(packed) < len(single)
    with torch.no_grad():
        c1, a1 = batching.example_losses(model, batching.build(single))
        batch = batching.build(packed)
        c2, a2 = batching.example_losses(model, batch)
    assert torch.allclose(c1, c2, atol=1e-5) and torch.allclose(a1, a2, atol=1e-5)
    assert batch.real_tokens < batching.build(single).real_tokens  # the point of packing


def test_gradients_match_the_per_example_loss(setup, tiny_model, trajectories):
    model, examples = setup
    args = train.parse_args(["--model", tiny_model, "--trajectories", trajectories, "--out", "x"])
    exs = [ex for ex in examples if len(ex.states)][:3]
    model.zero_grad()
    total = 0
    for ex in exs:
        total = total + train.example_loss(model, ex, Fixed(0), args, torch.device("cpu"))[0] / len(exs)
    total.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    cons, ar = batching.example_losses(model, batching.build([[(ex, [0])] for ex in exs]))
    (cons + 10 * ar).mean().backward()
    for r, p in zip(ref, model.parameters()):
        assert torch.allclose(r, p.grad, atol=1e-5, rtol=1e-4)


def test_stream_draws_states_like_the_one_by_one_loop(setup):
    _, examples = setup
    units = batching.units_of(examples, pack=False)
    stream = batching.global_batches(examples, units, 2, seed=3, states_per_example=1, sort_buffer=1)
    order = list(range(len(examples)))
    random.Random(3 * 7919).shuffle(order)
    got = [u for _ in range(len(examples) // 2) for u in next(stream)]
    for index, unit in zip(order, got):  # the first epoch, in the old loop's order and draws
        ex, states = unit[0]
        assert ex is examples[index]
        rng = random.Random(f"3/1/{index}")
        assert states == ([rng.randrange(len(ex.states))] if len(ex.states) else [])
    # Bucketing keeps every batch the same size and covers each unit once per epoch.
    stream = batching.global_batches(examples, units, 2, seed=3, states_per_example=2, sort_buffer=4)
    batches = [next(stream) for _ in range(4 * 3)]
    assert all(len(b) == 2 for b in batches)
    # Chunks span epoch boundaries (4 batches of 2 over an odd number of units): still no batch
    # holds the same unit twice.
    for b in batches:
        firsts = [id(unit[0][0]) for unit in b]
        assert len(set(firsts)) == len(firsts)
    packed = batching.units_of(examples, pack=True)
    assert sorted(i for u in packed for i in u) == list(range(len(examples)))
    assert all(len({examples[i].prompt_index for i in u}) == 1 for u in packed)


def test_distill_loss_is_the_kl_to_the_teacher_at_the_ar_positions(setup, tiny_model):
    model, examples = setup
    teacher = load_model(tiny_model)[0].eval()  # the unperturbed weights
    units = [[(ex, [0] if len(ex.states) else [])] for ex in examples[:6]]
    with torch.no_grad():
        cons, ar, dist = batching.example_losses(model, batching.build(units), teacher=teacher)
        ref_cons, ref_ar = batching.example_losses(model, batching.build(units))
        assert torch.equal(cons, ref_cons) and torch.equal(ar, ref_ar)
        for e, unit in enumerate(units):
            ex = unit[0][0]
            ids = torch.from_numpy(np.concatenate([ex.prefix, ex.fixed]))[None]
            rows = slice(len(ex.prefix) - 1, len(ex.prefix) + ex.valid - 1)
            s = torch.log_softmax(model(ids)[0, rows].float(), -1)
            t = torch.log_softmax(teacher(ids)[0, rows].float(), -1)
            ref = (t.exp() * (t - s)).sum(-1).mean()
            assert ref > 1e-4 and dist[e].item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-6), e
        # The model as its own teacher: nothing to distill.
        _, _, zero = batching.example_losses(model, batching.build(units), teacher=model)
        assert zero.abs().max() < 1e-5
