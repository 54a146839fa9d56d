"""A tiny pure-Python safetensors reader/writer (numpy), so training needs no `safetensors` package
(Debian 12 has none). Format: 8-byte little-endian header length N, N bytes of JSON
{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw
little-endian tensor bytes; offsets count from the first byte after the JSON. F32, F16 and BF16
only (what cllm serves); BF16 has no numpy dtype and travels as its upper 16 bits of an fp32."""
import json
import struct

import numpy as np

_NUMPY = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def bf16_bits_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> uint16 bfloat16 bit patterns, rounded to nearest even (as torch and cllm round)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + np.uint32(0x7FFF)
    return ((u + rounding) >> 16).astype(np.uint16)


def read_header(path):
    """(header dict without __metadata__, metadata dict, data offset)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {}) or {}
    return header, meta, 8 + n


def load(path):
    """{name: (float32 ndarray, dtype string)} for every tensor in the file."""
    header, _, offset = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _NUMPY:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}; only F32, F16, BF16 are supported")
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - begin != count * _NUMPY[dtype].itemsize or offset + end > data.size:
            raise ValueError(f"{path}: tensor {name}: byte range {begin}..{end} does not fit shape {info['shape']}")
        raw = np.frombuffer(data, dtype=_NUMPY[dtype], count=count, offset=offset + begin)
        values = bf16_bits_to_f32(raw) if dtype == "BF16" else raw.astype(np.float32)
        out[name] = (values.reshape(info["shape"]), dtype)
    return out


def save(path, tensors, metadata=None):
    """tensors: list of (name, float32 ndarray, dtype string), written in order."""
    header, blobs, pos = {}, [], 0
    for name, values, dtype in tensors:
        values = np.ascontiguousarray(values, dtype=np.float32)
        if dtype == "BF16":
            blob = f32_to_bf16_bits(values).tobytes()
        elif dtype in ("F32", "F16"):
            blob = values.astype(_NUMPY[dtype]).tobytes()
        else:
            raise ValueError(f"tensor {name}: cannot write dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    header["__metadata__"] = metadata or {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
