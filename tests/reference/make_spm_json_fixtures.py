#!/usr/bin/env python3
"""tokenizer.json versions of tests/fixtures/tokenizer/tiny_sp.model, as transformers converts a
sentencepiece model for its fast tokenizer (the LLaMA-2 / Mistral / TinyLlama layout ships both files,
and AutoTokenizer loads tokenizer.json), with their ids from HF `tokenizers`.

Needs: pip install transformers tokenizers sentencepiece protobuf  (no torch)
    python3 tests/reference/make_spm_json_fixtures.py

Outputs (small, committed) in tests/fixtures/tokenizer/:
  tiny_sp_always.json   LlamaTokenizer(legacy=True): Metaspace(prepend_scheme "always", split false)
  tiny_sp_first.json    LlamaTokenizer(legacy=False): Metaspace(prepend_scheme "first", split false)
  tiny_sp_prepend.json  the form of the LLaMA-2 / TinyLlama tokenizer.json files on the Hub (older
                        converters): normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer
  tiny_sp_json_ids.json per variant: ids and skip-special decode of strings.json, and of extra
                        strings with special tokens written in the text

It also checks what cllm relies on: AutoTokenizer on a directory with the Prepend-form tokenizer.json
and a tokenizer_config.json naming tokenizer_class LlamaTokenizer gives the "first" ids (legacy false,
transformers 5's default) or the "always" ids (legacy true): transformers rebuilds the space handling.
"""
import json
import os
import shutil
import tempfile

from tokenizers import Tokenizer
from transformers import AutoTokenizer, LlamaTokenizer

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "tokenizer")
EXTRA = ["<s>Hello", "Hello</s>", "a<s>b", "a <s> b", "<s> Hello</s> world", "</s></s>x", "x<unk>y",
         "<s>\n</s>", "  <s>  ", "Hello world<s>", "<s>", "</s> Hi", "Hello world <s>a b"]
PREPEND = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                               {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}


def converted(legacy):
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(os.path.join(OUT, "tiny_sp.model"), os.path.join(d, "tokenizer.model"))
        tok = LlamaTokenizer.from_pretrained(d, legacy=legacy)
        return json.loads(tok.backend_tokenizer.to_str())


def main():
    strings = json.load(open(os.path.join(OUT, "strings.json")))
    out = {}
    first = converted(False)
    prepend = dict(first, normalizer=PREPEND, pre_tokenizer=None)
    for name, tj in [("tiny_sp_always", converted(True)), ("tiny_sp_first", first), ("tiny_sp_prepend", prepend)]:
        path = os.path.join(OUT, name + ".json")
        with open(path, "w") as f:
            json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))
        tok = Tokenizer.from_file(path)
        rec = {"normalizer": tj["normalizer"], "pre_tokenizer": tj["pre_tokenizer"]}
        for key, texts in [("", strings), ("extra_", EXTRA)]:
            ids = [tok.encode(x, add_special_tokens=False).ids for x in texts]
            rec[key + "ids"] = ids
            rec[key + "decoded"] = [tok.decode(i, skip_special_tokens=True) for i in ids]
        rec["extra_strings"] = EXTRA
        out[name] = rec
    for legacy, variant in [(False, "tiny_sp_first"), (True, "tiny_sp_always")]:
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(os.path.join(OUT, "tiny_sp_prepend.json"), os.path.join(d, "tokenizer.json"))
            shutil.copy(os.path.join(OUT, "tiny_sp.model"), os.path.join(d, "tokenizer.model"))
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": "LlamaTokenizer", "legacy": legacy}, f)
            auto = AutoTokenizer.from_pretrained(d)
            got = [auto.encode(x, add_special_tokens=False) for x in EXTRA]
            assert got == out[variant]["extra_ids"], (legacy, got)
    with open(os.path.join(OUT, "tiny_sp_json_ids.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
