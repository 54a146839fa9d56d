"""Reading a file written by `cllm trajectories` into block examples."""
import numpy as np

from training import data

from .conftest import PROMPTS


def test_reads_cllm_trajectories(tiny_model, trajectories):
    info = data.read_info(trajectories)
    assert info["block"] == 8 and info["vocab_size"] == 320 and info["model"] == tiny_model
    assert info["max_new_tokens"] == 32 and info["augment"] == 1 and info["seed"] == 3
    samples = data.read_samples(trajectories)
    assert sorted(samples) == list(range(len(PROMPTS)))
    blocks = 0
    for s in samples.values():
        assert s["prompt"][0] == 0  # BOS of the tiny byte-level tokenizer
        fixed, states, iters = s["fixed_points"], s["states"], s["iterations"]
        assert fixed.shape[1] == 8 and states.shape == (iters.sum(), 8)
        assert s["num_tokens"] <= fixed.size
        ends = np.cumsum(iters) - 1
        assert (states[ends] == fixed).all()  # each block's last state is its fixed point
        blocks += int(np.ceil(s["num_tokens"] / 8))
        assert s["augmented"].shape == (len(s["augmented_block"]), 8)

    examples = data.block_examples(samples)
    assert len(examples) == blocks
    i = 0
    for index in sorted(samples):  # examples come in prompt order, then block order
        s = samples[index]
        for b in range(int(np.ceil(s["num_tokens"] / 8))):
            e = examples[i]
            assert (e.prefix == np.concatenate([s["prompt"], s["fixed_points"][:b].reshape(-1)])).all()
            assert (e.fixed == s["fixed_points"][b]).all() and e.prompt_len == len(s["prompt"])
            assert e.valid == min(8, s["num_tokens"] - 8 * b)
            i += 1
    for e in examples:
        assert e.states.shape == e.next_states.shape
        assert not (e.states == e.fixed).all(axis=1).any()  # converged states teach nothing
