"""Reads `cllm trajectories` HDF5 files (layout: loaders/trajectory_h5.h, training/README.md) into
training examples, one per (prompt, block), as in the CLLM paper's data: the block's prefix (prompt
plus the fixed points of the blocks before it), its fixed point, and the states to learn from."""
import h5py
import numpy as np


class BlockExample:
    """One n-token block of one prompt.
    prefix [P] int64: prompt + earlier fixed points; prompt_len: its prompt part.
    fixed [n]: the block's fixed point; valid: tokens of it that count (the rest follow EOS).
    states [k, n]: intermediate states that are not yet the fixed point (then augmented ones).
    next_states [k, n]: the state one Jacobi iteration later (the fixed point for augmented rows),
    the target of the local consistency loss.
    prompt_index, block: where it comes from (examples of one prompt pack into one sequence)."""

    def __init__(self, prefix, prompt_len, fixed, valid, states, next_states, prompt_index=None, block=None):
        self.prefix, self.prompt_len, self.fixed, self.valid = prefix, prompt_len, fixed, valid
        self.states, self.next_states = states, next_states
        self.prompt_index, self.block = prompt_index, block


def _paths(path_or_paths):
    return [path_or_paths] if isinstance(path_or_paths, str) else list(path_or_paths)


def read_info(path):
    """The root attributes (model, block, seed, vocab_size, ...) as a dict of Python values. Given
    several files (the shards of one collection), those of the first, after checking that the
    settings that shape the examples agree."""
    infos = []
    for p in _paths(path):
        with h5py.File(p, "r") as f:
            infos.append({k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                          for k, v in f.attrs.items()})
    for info in infos:
        info.setdefault("blocks", 1)  # files from before multi-block collection (--blocks)
        info.setdefault("init", "random")  # files from before the init attribute
    for p, info in zip(_paths(path)[1:], infos[1:]):
        for key in ("block", "vocab_size", "max_new_tokens", "seed", "augment", "blocks", "init"):
            if info.get(key) != infos[0].get(key):
                raise ValueError(f"{p}: {key} {info.get(key)} differs from {_paths(path)[0]}'s {infos[0].get(key)}")
    return infos[0]


def read_samples(path):
    """{prompt index: dict of numpy arrays + num_tokens/stopped} for every kept sample. Several files
    (`cllm trajectories --shard I/K` writes one per shard) merge; a prompt in two of them is refused."""
    if not isinstance(path, str):
        out, where = {}, {}
        for p in _paths(path):
            for index, s in read_samples(p).items():
                if index in out:
                    raise ValueError(f"prompt {index} is in both {where[index]} and {p}: "
                                     "give each shard's file once")
                out[index], where[index] = s, p
        return out
    out = {}
    with h5py.File(path, "r") as f:
        if f.attrs.get("format_version") != 1:
            raise ValueError(f"{path}: not a cllm trajectory file (format_version {f.attrs.get('format_version')})")
        for name, g in f["samples"].items():
            if name.startswith("."):
                continue  # an incomplete sample from an interrupted run
            s = {k: g[k][()] for k in ("prompt", "states", "fixed_points", "iterations", "augmented", "augmented_block")}
            s["num_tokens"] = int(g.attrs["num_tokens"])
            s["stopped"] = bool(g.attrs["stopped"])
            out[int(g.attrs["prompt_index"])] = s
    return out


def block_examples(samples):
    """Flattens samples into BlockExamples (ascending prompt index, then block)."""
    examples = []
    for index in sorted(samples):
        s = samples[index]
        fixed, states, iters = s["fixed_points"].astype(np.int64), s["states"].astype(np.int64), s["iterations"]
        n = fixed.shape[1]
        prompt = s["prompt"].astype(np.int64)
        first = np.concatenate([[0], np.cumsum(iters)]).astype(np.int64)
        for b in range(fixed.shape[0]):
            valid = min(n, s["num_tokens"] - b * n)
            if valid <= 0:
                break
            rows = states[first[b]:first[b + 1]]
            nexts = np.concatenate([rows[1:], fixed[b:b + 1]])
            keep = ~np.all(rows == fixed[b], axis=1)
            aug = s["augmented"][s["augmented_block"] == b].astype(np.int64)
            examples.append(BlockExample(
                prefix=np.concatenate([prompt, fixed[:b].reshape(-1)]), prompt_len=len(prompt), fixed=fixed[b],
                valid=valid, states=np.concatenate([rows[keep], aug]).reshape(-1, n),
                next_states=np.concatenate([nexts[keep], np.repeat(fixed[b:b + 1], len(aug), axis=0)]).reshape(-1, n),
                prompt_index=index, block=b))
    return examples
