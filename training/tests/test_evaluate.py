"""training/evaluate.py: its metrics on toy records, and one end-to-end run on the tiny model."""
import json
import math
import os
import re

import pytest
import torch

from training import evaluate
from training.model import load_model, save_model


def rec(tokens, iterations, seconds, key="jacobi"):
    return {key: {"tokens": tokens, "iterations": iterations, "decode_seconds": seconds}}


def test_tokens_per_iteration_counts_all_tokens_and_iterations():
    recs = [rec(10, 5, 0), rec(30, 5, 0)]
    tpi, decode_tpi = evaluate.tokens_per_iteration(recs)
    assert tpi == 4.0  # 40 / 10, not the mean of 2 and 6
    assert decode_tpi == pytest.approx(38 / 8)  # without the prefill's token and iteration


def test_speedup_is_a_ratio_of_decode_rates():
    ar = [rec(1, 1, 2.0, "ar"), rec(1, 1, 4.0, "ar")]
    jac = [rec(1, 1, 1.0), rec(1, 1, 2.0)]
    assert evaluate.speedup(ar, jac) == 2.0
    assert math.isnan(evaluate.speedup(ar, [rec(1, 1, 0.0)]))
    # Jacobi stopping at half the length in 0.6 of the time is slower per token, not faster.
    assert evaluate.speedup([rec(128, 128, 1.0, "ar")], [rec(64, 40, 0.6)]) == pytest.approx((64 / 0.6) / 128)


def test_agreement_positions_exact_matches_and_common_prefix():
    refs = [[1, 2, 3, 4], [5, 6], [7, 8, 9]]
    outs = [[1, 2, 3, 4], [5, 0], [7, 8]]
    tok, exact, prefix = evaluate.agreement(outs, refs)
    assert tok == pytest.approx((4 + 1 + 2) / (4 + 2 + 3))
    assert exact == pytest.approx(1 / 3)
    assert prefix == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert evaluate.agreement([[]], [[1]]) == (0.0, 0.0, 0.0)


def test_perplexity_of_a_model_on_its_own_greedy_output_is_low(tiny_model):
    model = load_model(tiny_model)[0].eval()
    prompt = [0, 72, 101, 108]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    nll, count = evaluate.output_nll(model, [prompt], [ids[len(prompt):]], torch.device("cpu"))
    greedy = evaluate.perplexity(nll, count)
    nll_r, _ = evaluate.output_nll(model, [prompt], [[5, 300, 17, 99, 250, 3, 8, 111]], torch.device("cpu"))
    assert count == 8 and greedy < evaluate.perplexity(nll_r, 8)
    assert evaluate.perplexity(0.0, 0) != evaluate.perplexity(0.0, 0)  # nan without tokens


@pytest.fixture(scope="module")
def perturbed_model(tiny_model, tmp_path_factory):
    """The tiny model with noise added to its last MLP: a "CLLM" that agrees with its base on some
    tokens and not on others."""
    model, dtypes = load_model(tiny_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = model.model.layers[-1].mlp.down_proj.weight
        w.add_(torch.randn(w.shape, generator=gen) * w.std() * 2)
    out = tmp_path_factory.mktemp("perturbed")
    save_model(model, dtypes, tiny_model, str(out))
    return str(out)


def greedy(model_dir, prompt_ids, n):
    """Greedy AR in PyTorch (training/model.py), up to n tokens, stopping before an EOS."""
    model = load_model(model_dir)[0].eval()
    with open(os.path.join(model_dir, "generation_config.json")) as f:
        eos = json.load(f).get("eos_token_id", [])
    eos = set(eos if isinstance(eos, list) else [eos])
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            t = int(model(torch.tensor([ids]))[0, -1].argmax())
            if t in eos:
                break
            ids.append(t)
    return ids[len(prompt_ids):]


def test_evaluate_end_to_end_on_the_tiny_model(tiny_model, perturbed_model, tmp_path):
    from .conftest import cllm_bin
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The sea is"}\n{"prompt": "Once upon a time"}\n{"prompt": "1, 2, 3"}\n')
    out = tmp_path / "eval"
    res = evaluate.main(["--base", tiny_model, "--cllm", perturbed_model, "--prompts", str(prompts),
                         "--out", str(out), "--n", "3", "--max-new-tokens", "12", "--block", "4",
                         "--windows", "blockwise,sliding,sliding+2x2", "--cllm-bin", cllm_bin(), "--ppl-device", "cpu"])
    for name in ("base", "cllm"):
        for window in ("blockwise", "sliding", "sliding+2x2"):
            r = res["models"][name][window]
            assert r["prompts"] == 3 and r["tokens_per_iteration"] > 0 and r["identical"] == 1.0
    # The lookahead window ran cllm with its candidates: its log holds the command line.
    assert "--window sliding" in (out / "cllm_sliding+2x2.log").read_text()
    assert "--candidates 2 --ngram 3" in (out / "cllm_sliding+2x2.log").read_text()
    # The quality compares the CLLM's Jacobi output with the base's AR output: the same figures
    # from greedy decoding of each model in PyTorch.
    with open(out / "base_blockwise.jsonl") as f:
        prompt_ids = [json.loads(line)["prompt_ids"] for line in f if line.strip()]
    base = [greedy(tiny_model, p, 12) for p in prompt_ids]
    cllm = [greedy(perturbed_model, p, 12) for p in prompt_ids]
    want = evaluate.agreement(cllm, base)
    assert 0 < want[0] < 1, "the fixture's models should agree on some tokens, not all"
    q = res["quality"]
    assert (q["token_agreement"], q["exact_match"], q["common_prefix"]) == pytest.approx(want)
    ppl = res["quality"]["perplexity"]
    # Under the base model its own greedy output is likelier than the CLLM's.
    assert ppl["base AR outputs"] < ppl["CLLM Jacobi outputs"]
    assert ppl["CLLM AR outputs"] == pytest.approx(ppl["CLLM Jacobi outputs"])  # Jacobi == AR
    saved = json.loads((out / "eval.json").read_text())
    assert saved["windows"] == ["blockwise", "sliding", "sliding+2x2"]
    assert "| base | blockwise |" in (out / "eval.md").read_text()


def test_windows_with_lookahead_parse_and_bad_ones_are_refused():
    from ..windows import parse_window
    assert parse_window("blockwise") == ("blockwise", 0, 0)
    assert parse_window("sliding+4x3") == ("sliding", 4, 4)
    for bad in ("slide", "sliding+0x3", "sliding+4x", "sliding+4x3x", "+4x3", ""):
        with pytest.raises(ValueError, match="is not blockwise or sliding"):
            parse_window(bad)
    with pytest.raises(SystemExit, match=re.escape("--windows: window 'sliding+x'")):
        evaluate.main(["--base", "b", "--cllm", "c", "--prompts", "p", "--out", "/nonexistent/never_made",
                       "--windows", "blockwise,sliding+x"])
