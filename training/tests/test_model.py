"""The self-contained LLaMA forward reproduces cllm's greedy output, and checkpoints round-trip."""
import numpy as np
import pytest
import torch

from training import data, safetensors_io
from training.model import load_model, save_model

from .conftest import run_cllm


def test_greedy_continuation_matches_cllm(tiny_model, trajectories):
    # cllm's fixed points are its greedy AR continuation; the Python model must agree.
    model, _ = load_model(tiny_model)
    samples = data.read_samples(trajectories)
    assert samples
    with torch.no_grad():
        for s in samples.values():
            gen = s["fixed_points"].reshape(-1)[:s["num_tokens"]]
            seq = torch.from_numpy(np.concatenate([s["prompt"], gen]).astype(np.int64))[None]
            pred = model(seq)[0].argmax(-1)
            P = len(s["prompt"])
            assert pred[P - 1:P - 1 + len(gen)].tolist() == gen.tolist()


def test_matches_transformers_logits_when_installed(tiny_model):
    transformers = pytest.importorskip("transformers")
    ref = transformers.LlamaForCausalLM.from_pretrained(tiny_model).float().eval()
    model, _ = load_model(tiny_model)
    ids = torch.tensor([[0, 72, 101, 108, 108, 111, 44, 32, 200, 13]])
    with torch.no_grad():
        assert torch.allclose(model(ids), ref(ids).logits, atol=1e-4, rtol=1e-4)


def test_bf16_conversion_rounds_like_torch():
    x = torch.randn(1000) * 100
    x[:3] = torch.tensor([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -0.0])  # ties round to even
    bits = safetensors_io.f32_to_bf16_bits(x.numpy())
    assert torch.equal(torch.from_numpy(safetensors_io.bf16_bits_to_f32(bits)), x.to(torch.bfloat16).float())


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_saved_checkpoint_loads_back_identically(tiny_model, tmp_path, dtype):
    model, dtypes = load_model(tiny_model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_model(model, dtypes, tiny_model, str(tmp_path), dtype)
    back, back_dtypes = load_model(str(tmp_path))
    assert set(back_dtypes.values()) == {dtype}
    cast = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[dtype]
    for (name, a), (name_b, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert name == name_b
        assert torch.equal(a.to(cast).float(), b), name
    # cllm serves it: AR and Jacobi agree (exit code 3 otherwise).
    run_cllm("generate", "--model", tmp_path, "--prompt", "hi", "--max-new-tokens", 8, "--decode", "both",
             "--quiet")


def test_missing_or_misshaped_tensors_are_refused(tiny_model, tmp_path):
    model, dtypes = load_model(tiny_model)
    save_model(model, dtypes, tiny_model, str(tmp_path))
    tensors = safetensors_io.load(str(tmp_path / "model.safetensors"))
    name = "model.norm.weight"
    bad = [(n, v if n != name else v[:-1], d) for n, (v, d) in tensors.items()]
    safetensors_io.save(str(tmp_path / "model.safetensors"), bad)
    with pytest.raises(ValueError, match="model.norm.weight"):
        load_model(str(tmp_path))
    safetensors_io.save(str(tmp_path / "model.safetensors"), [t for t in bad if t[0] != name])
    with pytest.raises(ValueError, match="missing tensors"):
        load_model(str(tmp_path))
