"""A self-contained LLaMA-family causal LM in PyTorch (runs on torch 1.13 and 2.x): the forward that
cllm serves (RMSNorm, RoPE with default/linear/llama3 scaling, GQA attention, SwiGLU MLP, tied or
untied head). Parameter names are the HF names, so state_dict() maps 1:1 onto safetensors files.
Loads and saves HF checkpoint directories (config.json + safetensors [+ index])."""
import json
import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import safetensors_io

# Copied next to the trained weights so that `cllm generate --model OUT_DIR` finds the tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


class LlamaConfig:
    """The config.json fields the forward needs (defaults as transformers' LlamaConfig)."""

    def __init__(self, d):
        arch = (d.get("architectures") or ["LlamaForCausalLM"])[0]
        if arch not in ("LlamaForCausalLM", "MistralForCausalLM"):
            raise ValueError(f"config.json: unsupported architecture {arch}")
        self.vocab_size = d["vocab_size"]
        self.hidden_size = d["hidden_size"]
        self.intermediate_size = d["intermediate_size"]
        self.num_layers = d["num_hidden_layers"]
        self.num_heads = d["num_attention_heads"]
        self.num_kv_heads = d.get("num_key_value_heads") or self.num_heads
        self.head_dim = d.get("head_dim") or self.hidden_size // self.num_heads
        self.rms_norm_eps = d.get("rms_norm_eps", 1e-6)
        self.tie_word_embeddings = d.get("tie_word_embeddings", False)
        # transformers >= 5 nests RoPE settings in rope_parameters; older files use top-level keys.
        rope = d.get("rope_parameters") or {}
        self.rope_theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = rope if "rope_parameters" in d else (d.get("rope_scaling") or {})
        self.rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        self.rope_scaling = scaling


def rope_inv_freq(cfg):
    """[head_dim / 2] radians per position, as HF computes them (runtime/rope.cpp does the same)."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    if cfg.rope_type == "default":
        return inv
    factor = cfg.rope_scaling["factor"]
    if cfg.rope_type == "linear":
        return inv / factor
    if cfg.rope_type != "llama3":
        raise ValueError(f"rope type {cfg.rope_type} is not supported (default, linear, llama3)")
    # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
    low, high = cfg.rope_scaling["low_freq_factor"], cfg.rope_scaling["high_freq_factor"]
    old_ctx = cfg.rope_scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv / factor + smooth * inv
    out = torch.where(wavelen > old_ctx / low, inv / factor, inv)
    mid = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return torch.where(mid, blended, out)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv, bias=False)
        self.o_proj = nn.Linear(q, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask=None):
        """mask: None (causal) or [b, 1, t, t] bool, True where a query may attend to a key."""
        b, t, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, t, c.num_heads, c.head_dim).transpose(1, 2)  # [b, heads, t, hd]
        k = self.k_proj(x).view(b, t, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = c.num_heads // c.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0: fused kernels
            if mask is None:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim)
            if mask is None:
                mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            scores = scores.float().masked_fill(~mask, float("-inf"))
            out = torch.softmax(scores, dim=-1).to(v.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def forward(self, ids, positions=None, mask=None, gather=None):
        """ids [b, t] int64 -> logits [b, t, vocab] float32.
        Packed sequences (training/batching.py) pass positions [b, t] (RoPE positions; default
        0..t-1), mask [b, t, t] bool (True where a query may attend to a key; default causal) and
        gather = (rows, cols): then only the logits at ids[rows, cols] are computed, [N, vocab]
        (the head over every position of a long batch would cost more than the layers)."""
        if positions is None:
            pos = torch.arange(ids.shape[1], device=ids.device, dtype=torch.float32)
            freqs = torch.outer(pos, self.inv_freq)  # [t, head_dim / 2]
        else:
            freqs = positions.float()[..., None] * self.inv_freq  # [b, t, head_dim / 2]
            freqs = freqs[:, None]  # broadcast over heads: [b, 1, t, head_dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)  # HF's rotate_half layout
        x = self.model.embed_tokens(ids)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        if mask is not None:
            mask = mask[:, None]  # [b, 1, t, t]: the same for every head
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        if gather is not None:
            x = x[gather[0], gather[1]]
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head).float()


def _weight_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        return ["model.safetensors"]
    raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def load_model(model_dir):
    """(model in fp32 on the CPU, {tensor name: dtype on disk}). Refuses missing or mis-shaped tensors."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = LlamaConfig(json.load(f))
    model = LlamaForCausalLM(cfg)
    params = dict(model.named_parameters())
    dtypes = {}
    with torch.no_grad():
        for file in _weight_files(model_dir):
            for name, (values, dtype) in safetensors_io.load(os.path.join(model_dir, file)).items():
                if name not in params:
                    if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_word_embeddings):
                        continue
                    raise ValueError(f"{model_dir}/{file}: unexpected tensor {name}")
                p = params[name]
                if tuple(values.shape) != tuple(p.shape):
                    raise ValueError(f"{model_dir}/{file}: tensor {name} has shape {list(values.shape)}, "
                                     f"expected {list(p.shape)}")
                p.copy_(torch.from_numpy(np.array(values)))
                dtypes[name] = dtype
    missing = sorted(set(params) - set(dtypes))
    if missing:
        raise ValueError(f"{model_dir}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return model, dtypes


def save_model(model, dtypes, source_dir, out_dir, dtype=None):
    """Writes out_dir/model.safetensors (each tensor in its source dtype, or `dtype` if given: F32,
    F16, BF16), and copies config.json and the tokenizer files from source_dir."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = [(name, p.detach().float().cpu().numpy(), dtype or dtypes[name])
               for name, p in model.named_parameters()]
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    safetensors_io.save(tmp, tensors)
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    for name in ("config.json",) + TOKENIZER_FILES:
        src = os.path.join(source_dir, name)
        if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(out_dir, name)):
            shutil.copyfile(src, os.path.join(out_dir, name))
