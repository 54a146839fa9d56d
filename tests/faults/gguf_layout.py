"""Byte offsets of a GGUF file's fields, so a fault campaign can corrupt one field at a time.

parse(path) -> Layout with the header fields, each metadata entry (key, type, value and where its
type, value and, for arrays, element type and count sit) and each tensor info (name, dims, type,
offset field), plus where the data section starts. Read-only; numpy is not needed.
"""
import struct
from dataclasses import dataclass, field

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass
class Entry:
    key: str
    type: int
    type_at: int          # offset of the u32 value type
    value_at: int         # offset of the value (scalar bytes, string length, or array element type)
    value: object = None  # scalars and strings; arrays: None
    elem_type: int = -1   # arrays
    count_at: int = -1    # arrays: offset of the u64 element count
    items_at: int = -1    # arrays: offset of the first element
    count: int = 0


@dataclass
class TensorInfo:
    name: str
    name_at: int
    n_dims_at: int
    dims: list
    dims_at: int
    type: int
    type_at: int
    offset: int
    offset_at: int


@dataclass
class Layout:
    version: int
    n_tensors: int
    n_kv: int
    entries: dict = field(default_factory=dict)
    tensors: list = field(default_factory=list)
    infos_at: int = 0      # first tensor info
    data_at: int = 0       # data section (after alignment)
    alignment: int = 32
    size: int = 0


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.b[self.p:self.p + n].decode("utf-8", "replace")
        self.p += n
        return s

    def skip_value(self, t):
        if t in SCALAR:
            self.p += struct.calcsize(SCALAR[t])
        elif t == STRING:
            self.string()
        elif t == ARRAY:
            et, n = self.take("<I"), self.take("<Q")
            if et in SCALAR:
                self.p += n * struct.calcsize(SCALAR[et])
            else:
                for _ in range(n):
                    self.skip_value(et)
        else:
            raise ValueError(f"type {t}")


def parse(path):
    b = open(path, "rb").read()
    r = Reader(b)
    assert r.take("<I") == 0x46554747, "not a GGUF file"
    lay = Layout(version=r.take("<I"), n_tensors=r.take("<Q"), n_kv=r.take("<Q"), size=len(b))
    for _ in range(lay.n_kv):
        key = r.string()
        type_at = r.p
        t = r.take("<I")
        e = Entry(key, t, type_at, r.p)
        if t in SCALAR:
            e.value = r.take(SCALAR[t])
        elif t == STRING:
            e.value = r.string()
        else:
            e.elem_type = r.take("<I")
            e.count_at = r.p
            e.count = r.take("<Q")
            e.items_at = r.p
            r.p = e.value_at
            r.skip_value(t)
        lay.entries[key] = e
    lay.infos_at = r.p
    for _ in range(lay.n_tensors):
        name_at = r.p
        name = r.string()
        n_dims_at = r.p
        nd = r.take("<I")
        dims_at = r.p
        dims = [r.take("<Q") for _ in range(nd)]
        type_at = r.p
        t = r.take("<I")
        offset_at = r.p
        lay.tensors.append(TensorInfo(name, name_at, n_dims_at, dims, dims_at, t, type_at, r.take("<Q"), offset_at))
    if "general.alignment" in lay.entries:
        lay.alignment = lay.entries["general.alignment"].value
    lay.data_at = (r.p + lay.alignment - 1) // lay.alignment * lay.alignment
    return lay
