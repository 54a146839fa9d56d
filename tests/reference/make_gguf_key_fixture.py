#!/usr/bin/env python3
"""Every GGUF metadata key the `gguf` package defines, spelled for a `llama` file.

  python3 tests/reference/make_gguf_key_fixture.py --out tests/fixtures/config/gguf_keys.json

tests/unit/test_gguf_keys.cpp holds each key to "honoured", "no effect" or "refused by name"
(gguf_key_field): none may fall through as unknown.
"""
import argparse
import json
from importlib.metadata import version

from gguf.constants import Keys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    keys = set()
    for family_name, family in vars(Keys).items():
        if family_name.startswith("_") or not isinstance(family, type):
            continue
        for name, key in vars(family).items():
            if name.startswith("_") or not isinstance(key, str):
                continue
            # Templated parts other than the architecture get a sample value.
            keys.add(key.format(arch="llama", name="tool_use", dense="dense_2", id=0))
    with open(a.out, "w") as f:
        json.dump({"gguf_version": version("gguf"), "keys": sorted(keys)}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
