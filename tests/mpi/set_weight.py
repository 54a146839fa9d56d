#!/usr/bin/env python3
"""set_weight.py SRC_DIR DST_DIR TENSOR ROW COL VALUE: copies the HF checkpoint SRC_DIR to DST_DIR
with one element of one F32 tensor of model.safetensors set to VALUE ("nan", "inf", or a number):
the corrupted weights of the finiteness tests. ROW, COL index the tensor as [rows, cols]."""
import json
import shutil
import struct
import sys

src, dst, tensor, row, col, value = sys.argv[1:7]
shutil.copytree(src, dst, dirs_exist_ok=True)
path = f"{dst}/model.safetensors"
with open(path, "r+b") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
    t = header[tensor]
    assert t["dtype"] == "F32", f"{tensor} is {t['dtype']}; only F32 tensors are patched"
    cols = t["shape"][1] if len(t["shape"]) == 2 else 1
    f.seek(8 + header_len + t["data_offsets"][0] + 4 * (int(row) * cols + int(col)))
    f.write(struct.pack("<f", float(value)))
