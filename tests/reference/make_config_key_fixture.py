#!/usr/bin/env python3
"""Every top-level config.json field of transformers' LlamaConfig and MistralConfig, with its default.

  python3 tests/reference/make_config_key_fixture.py --out tests/fixtures/config/transformers_config_keys.json

tests/unit/test_config_fields.cpp holds each field to "honoured" or "refused by name" (hf_config_field).
Needs only transformers (configs do not import torch).
"""
import argparse
import json

import transformers
from transformers import LlamaConfig, MistralConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = {"transformers_version": transformers.__version__}
    for arch, cls in [("LlamaForCausalLM", LlamaConfig), ("MistralForCausalLM", MistralConfig)]:
        d = cls().to_dict()
        d["architectures"] = [arch]
        out[arch] = d
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
