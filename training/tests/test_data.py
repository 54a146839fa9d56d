"""Reading a file written by `cllm trajectories` into block examples."""
import subprocess

import numpy as np
import pytest

from training import data

from .conftest import PROMPTS, cllm_bin, run_cllm


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


def test_shard_files_merge_into_the_whole_collection(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS + ["A fourth", "and a fifth"]) + "\n")
    common = ["trajectories", "--model", tiny_model, "--prompts", prompts, "--block", 8, "--max-new-tokens", 16,
              "--max-repeat", 0]
    run_cllm(*common, "--out", tmp_path / "whole.h5")
    shards = [str(tmp_path / f"s{i}.h5") for i in range(3)]
    for i, path in enumerate(shards):
        run_cllm(*common, "--out", path, "--shard", f"{i}/3")
        assert all(index % 3 == i for index in data.read_samples(path))  # --shard I/K: index % K == I
    whole, merged = data.read_samples(str(tmp_path / "whole.h5")), data.read_samples(shards)
    assert sorted(merged) == sorted(whole) == list(range(5))
    for index, s in whole.items():
        assert all((s[k] == merged[index][k]).all() for k in ("prompt", "states", "fixed_points", "iterations"))
    assert data.read_info(shards)["block"] == 8
    for bad in ("3/3", "1", "a/2", "1/0"):
        r = subprocess.run([cllm_bin(), *map(str, common), "--out", str(tmp_path / "bad.h5"), "--shard", bad],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "--shard must be I/K" in r.stderr, (bad, r.stderr)
    with pytest.raises(ValueError, match="prompt 0 is in both"):
        data.read_samples([shards[0], str(tmp_path / "whole.h5")])
    run_cllm(*common[:5], "--block", 4, "--max-new-tokens", 16, "--max-repeat", 0, "--out", tmp_path / "b4.h5")
    with pytest.raises(ValueError, match="block"):
        data.read_info([shards[0], str(tmp_path / "b4.h5")])
    # A multi-block collection: the same layout and fixed points; its shards do not mix with others.
    run_cllm(*common, "--out", tmp_path / "k2.h5", "--blocks", 2)
    assert data.read_info(str(tmp_path / "k2.h5"))["blocks"] == 2 and data.read_info(shards)["blocks"] == 1
    for index, s in data.read_samples(str(tmp_path / "k2.h5")).items():
        assert (s["fixed_points"] == whole[index]["fixed_points"]).all()
        assert s["states"].shape[0] == s["iterations"].sum()
    with pytest.raises(ValueError, match="blocks"):
        data.read_info([shards[0], str(tmp_path / "k2.h5")])
