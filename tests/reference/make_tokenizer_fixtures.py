#!/usr/bin/env python3
"""Writes the tokenizer and chat-template fixtures in tests/fixtures/tokenizer/ that
tests/unit/test_tokenizer.cpp and tests/unit/test_chat_template.cpp compare cllm against.

Needs: pip install tokenizers transformers sentencepiece gguf numpy jinja2  (no torch)
Run from the repo root, with the default model fetched into models/:
    python3 tests/reference/make_tokenizer_fixtures.py
    python3 tests/reference/make_tokenizer_fixtures.py --check-export build/tokenizer_export/tokenizer.json

Outputs (all small, committed):
  strings.json            the test strings (shared by every tokenizer below)
  smollm2_ids.json        SmolLM2-135M ids from HF `tokenizers`
  gpt2_tiny.json          a ~500-token byte-level BPE with the GPT-2 pre-tokenizer, trained here
  llama3_tiny.json        the same with LLaMA-3's Split regex + ByteLevel(use_regex=false)
  tiny_ids.json           ids of both tiny tokenizers on the strings
  tiny_sp.model           a small sentencepiece BPE model with byte fallback, trained here
  tiny_sp_ids.json        its ids from python sentencepiece
  chat_templates.json     jinja templates, conversations and transformers' rendering
  chat_ids.json           prompt ids of apply_chat_template(tokenize=True, add_generation_prompt=True):
                          SmolLM2 with its own GGUF template, and LLaMA-3's template on llama3_tiny

SmolLM2 reference: transformers can only read GGUF with torch installed, so the HF tokenizer
is built from the GGUF vocab/merges with the pre-tokenizer of SmolLM2's published
tokenizer.json: Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false)],
ByteLevel decoder, the 17 control tokens as special added tokens.

--check-export PATH: loads a tokenizer.json that cllm's write_hf_tokenizer_json exported
from the GGUF with HF `tokenizers` and checks it gives the SmolLM2 fixture ids.
"""
import argparse
import json
import os
import random
import sys
import tempfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from byte_level import byte_level_chars

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
GGUF = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_strings():
    s = [
        "", "a", " ", "\n", "\t", "0", "é", "中", "😀", "'", "Hello", "Hello world", " Hello world",
        "Hello, world! How are you?", "hello  world", "hello   world  ", "  leading", "trailing  ",
        "a\tb", "a \tb", "a\t\tb", "line1\nline2", "line1\r\nline2", "a\n\nb", "a \n b", " \n \n ",
        "\n\n\n", "\t\t\t", "     ", "x     y", "end\n", "  \n\tmixed\r\n  whitespace\t \n",
        "I'm", "you're", "they've", "she'll", "he'd", "it's", "don't", "I'M", "YOU'RE", "THEY'VE",
        "SHE'LL", "HE'D", "IT'S", "DON'T", "'s'", "''", "rock'n'roll", "o'clock", "' s", " 's", "x's",
        "!!'s", "1'2", "\"quoted\"", "(parens)", "[brackets]", "{braces}", "a.b.c", "a...b", "?!?!",
        "user@example.com", "https://example.com/path?q=1&r=2#frag", "C:\\Windows\\System32",
        "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "-42", "+1e-10", "1,000,000",
        "0x1F", "2024-06-01", "12:30:45", "v1.2.3", "abc123def", "123abc", " 123", "  456", "a1b2c3",
        "٣٤٥", "۱۲۳", "१२३", "Ⅻ", "½", "²³", "①②③", "一二三",
        "café", "naïve", "résumé", "Ångström", "über", "façade", "Straße", "crème brûlée",
        "e\u0301", "a\u0300\u0301\u0302", "n\u0303o", "\u0301", "Zalgo: Z\u0351\u0352\u0353a\u0354l\u0355g\u0356o",
        "日本語のテキスト", "中文文本测试", "한국어 텍스트", "こんにちは、世界！", "你好，世界。",
        "עברית", "שלום עולם", "العربية", "مرحبا بالعالم", "mixed English עברית text",
        "Ελληνικά", "Русский текст", "Привет, мир!", "ไทย", "हिन्दी", "தமிழ்", "ქართული", "Ꭰ Ꭱ Ꭲ",
        "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "☃", "✓ ✗", "→ ← ↑ ↓", "∑∫∂√∞", "≤≥≠", "€£¥₹",
        "©®™", "§¶†‡", "«guillemets»", "„Anführungszeichen“", "‘single’ “double”", "—em dash—", "…",
        "non\u00a0breaking", "zero\u200bwidth", "ideo\u3000space", "en\u2002space", "thin\u2009space",
        "line\u2028sep", "para\u2029sep", "nel\u0085x", "\u000bvt\u000cff", "\u001c\u001d\u001e\u001f",
        "\u0000nul", "\u007fdel", "tab\tand space", "\ufeffbom", "\ufffd", "\U0001F600\U0001F601",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "ǅ", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ", "ｶﾀｶﾅ", "ſ's", "'ſ", "K's",
        "def f(x):\n    return x * 2\n", "for i in range(10):\n\tprint(i)\n",
        "class Foo:\n    def __init__(self):\n        self.x = 1\n\n\n",
        "#include <vector>\nint main() {\n  std::vector<int> v{1, 2, 3};\n  return v[0];\n}\n",
        "template <typename T>\nT add(T a, T b) { return a + b; }",
        "if (a && b || !c) { x += 1; } else { y -= 2; }", "ptr->field = &obj; // comment",
        "/* block\n   comment */", "#define MAX(a,b) ((a)>(b)?(a):(b))",
        "{\"key\": \"value\", \"n\": 42, \"list\": [1, 2.5, null, true]}",
        "{\n  \"nested\": {\n    \"a\": [\n      1,\n      2\n    ]\n  }\n}",
        "SELECT * FROM users WHERE id = 1;", "<html><body class=\"x\">Hi</body></html>",
        "$ ls -la | grep foo > out.txt 2>&1", "x = [i**2 for i in range(5) if i % 2 == 0]",
        "    indented four", "\tindented tab", "        eight spaces", "a = 1  # trailing comment   ",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHello<|im_end|>\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "text<|im_end|>text", " <|im_start|> ", "<|im_start|><|im_end|>", "<|im_start", "im_start|>",
        "<|im_start|", "<|endoftext|><|endoftext|>", "<repo_name>cllm<file_sep>main.cpp",
        "<s>", "</s>", "<s>hello</s>", "<unk>", "<|begin_of_text|>Hi<|eot_id|>", "<mask>", " <mask> x",
        "a<mask>b", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
        "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "CamelCaseIdentifier",
        "snake_case_identifier", "kebab-case-identifier", "ALLCAPS", "MiXeD cAsE", "a-b_c.d/e\\f",
        "Mr. Smith's car", "e.g., i.e., etc.", "$100.00", "50%", "#hashtag", "@mention", "~tilde~",
        "`backticks`", "```python\nprint('hi')\n```", "| a | b |\n|---|---|\n| 1 | 2 |", "- item\n- item",
        "1. first\n2. second", "> quote", "**bold** _italic_", "x^2 + y^2 = z^2", "f(x) = ax² + bx + c",
        "α β γ δ", "∀x∈ℝ: x²≥0", "H₂O", "E=mc²",
    ]
    rng = random.Random(1234)
    words = ("the of and to in is that for it as with was on be by this are at from an have or not "
             "token model decode jacobi iteration consistency café naïve 中文 日本 😀 42 3.14 x_1 "
             "def return {} () [] ; , . ! ? \" ' -").split()
    seps = [" ", " ", " ", " ", "  ", "\n", "\t", ", ", ". ", "\n\n", ""]
    while len(s) < 260:
        n = rng.randint(3, 40)
        s.append("".join(rng.choice(words) + rng.choice(seps) for _ in range(n)))
    # Random code points from many scripts, to catch category-table mistakes.
    for _ in range(10):
        cps = [rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FF), rng.randint(0x370, 0x10FF),
                           rng.randint(0x2000, 0x2BFF), rng.randint(0x3000, 0x9FFF), rng.randint(0xAC00, 0xD7A3),
                           rng.randint(0x1F300, 0x1FAFF), rng.randint(0x10000, 0x1D7FF)]) for _ in range(40)]
        s.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF))
    para = ("Consistency large language models decode with Jacobi iterations: each step refines a block "
            "of n guessed tokens in parallel until it reaches a fixed point. ")
    s.append((para * 12) + "\n" + "日本語 " * 40 + "\n" + "    code = [1, 2, 3]\n" * 20)
    s.append(" ".join(str(rng.randint(0, 10**6)) for _ in range(200)))
    s.append("".join(rng.choice(" \t\n\r") for _ in range(200)))
    return s


def smollm2_tokenizer():
    from gguf import GGUFReader
    r = GGUFReader(GGUF)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"].contents()]
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in range(len(tokens)) if types[i] == 3])
    return tok, f["tokenizer.chat_template"].contents()


def decoded(tok, ids):
    return [tok.decode(i, skip_special_tokens=True) for i in ids]


def ids_of(tok, strings):
    return [tok.encode(x, add_special_tokens=False).ids for x in strings]


def check_decode(tok, strings, ids, name):
    vocab = tok.get_vocab()
    missing = {b for b, c in byte_level_chars().items() if c not in vocab}  # HF drops these bytes
    for x, i in zip(strings, ids):
        d = tok.decode(i, skip_special_tokens=True)
        x = bytes(b for b in x.encode() if b not in missing).decode(errors="replace")
        # Special tokens are skipped by decode, and <mask> swallows the spaces around it.
        special = any(t in x for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
                                       "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                                       "<mask>"))
        assert special or d == x, f"{name}: HF does not round-trip {x!r}: {d!r}"


def train_tiny(strings, kind):
    corpus = strings * 3 + [open(__file__, encoding="utf-8").read()]
    tok = Tokenizer(models.BPE())
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if kind == "gpt2":  # a non-special added token that swallows whitespace on both sides
        tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=False, normalized=False)])
    j = json.loads(tok.to_str())
    if kind == "llama3":
        j["model"]["ignore_merges"] = True  # as Meta's LLaMA-3 tokenizer.json
        tok = Tokenizer.from_str(json.dumps(j))
    return tok, j


def train_sentencepiece(strings):
    import sentencepiece as spm
    with tempfile.TemporaryDirectory() as d:
        corpus = os.path.join(d, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as fh:
            for x in strings * 3:
                fh.write(x.replace("\r", " ").replace("\n", " ") + "\n")
        prefix = os.path.join(d, "tiny_sp")
        spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=1000, model_type="bpe",
                                       byte_fallback=True, character_coverage=0.98, bos_id=1, eos_id=2,
                                       unk_id=0, pad_id=-1, minloglevel=2,
                                       normalization_rule_name="identity", remove_extra_whitespaces=False)  # as LLaMA; keeps the file small
        data = open(prefix + ".model", "rb").read()
    sp = spm.SentencePieceProcessor(model_proto=data)
    return sp, data


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
# FastChat's vicuna_v1.1 conversation format written as a template.
VICUNA = ("{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
          "{% set loop_messages = messages[1:] %}{% else %}{% set system_message = 'A chat between a curious user "
          "and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to "
          "the user\\'s questions.' %}{% set loop_messages = messages %}{% endif %}{{ system_message }}"
          "{{ ' ' }}{% for message in loop_messages %}{% if message['role'] == 'user' %}"
          "{{ 'USER: ' + message['content'] + ' ' }}{% elif message['role'] == 'assistant' %}"
          "{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."},
     {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "  Hi there!  \n"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about Jacobi 😀"}],
]


def chat_fixtures(smollm2_template):
    from transformers import PreTrainedTokenizerFast
    base = Tokenizer(models.BPE())
    hf = PreTrainedTokenizerFast(tokenizer_object=base)
    specials = {"smollm2": {}, "chatml": {}, "llama-2": {"bos_token": "<s>", "eos_token": "</s>"},
                "llama-3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                "vicuna": {"bos_token": "<s>", "eos_token": "</s>"}}
    templates = {"smollm2": smollm2_template, "chatml": CHATML, "llama-2": LLAMA2, "llama-3": LLAMA3,
                 "vicuna": VICUNA}
    cases = []
    for name, tmpl in templates.items():
        for conv in CONVERSATIONS:
            for gen in (False, True):
                out = hf.apply_chat_template(conv, chat_template=tmpl, tokenize=False, add_generation_prompt=gen,
                                             **specials[name])
                cases.append({"template": name, "messages": conv, "add_generation_prompt": gen, "expected": out})
    return {"templates": templates, "cases": cases}


def chat_id_fixtures(smollm2_tok, smollm2_template):
    """What a server must feed the model for a chat request: transformers tokenizes the rendered
    template with add_special_tokens=False, so a BOS comes only from the template itself."""
    from transformers import PreTrainedTokenizerFast
    tokenizers_ = {
        "smollm2": (PreTrainedTokenizerFast(tokenizer_object=smollm2_tok), smollm2_template),
        "llama3_tiny": (PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "llama3_tiny.json"),
                                                bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"), LLAMA3),
    }
    cases = []
    for name, (hf, tmpl) in tokenizers_.items():
        for conv in CONVERSATIONS + [[{"role": "user", "content": "Say hi"}]]:
            out = hf.apply_chat_template(conv, chat_template=tmpl, tokenize=True, add_generation_prompt=True)
            ids = out if isinstance(out, list) else out["input_ids"]
            cases.append({"tokenizer": name, "template": tmpl, "messages": conv, "ids": ids})
    return {"cases": cases}


def dump(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))
    print(f"wrote {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export", help="tokenizer.json exported by cllm to compare with the fixture ids")
    ap.add_argument("--chat-ids-only", action="store_true", help="rewrite chat_ids.json only")
    args = ap.parse_args()
    if args.chat_ids_only:
        dump("chat_ids.json", chat_id_fixtures(*smollm2_tokenizer()))
        return
    if args.check_export:
        strings = json.load(open(os.path.join(OUT, "strings.json"), encoding="utf-8"))
        want = json.load(open(os.path.join(OUT, "smollm2_ids.json")))["ids"]
        got = ids_of(Tokenizer.from_file(args.check_export), strings)
        bad = [i for i in range(len(strings)) if got[i] != want[i]]
        print(f"exported tokenizer: {len(strings) - len(bad)}/{len(strings)} strings agree")
        sys.exit(1 if bad else 0)

    os.makedirs(OUT, exist_ok=True)
    strings = test_strings()
    dump("strings.json", strings)

    tok, template = smollm2_tokenizer()
    ids = ids_of(tok, strings)
    check_decode(tok, strings, ids, "smollm2")
    dump("smollm2_ids.json", {"ids": ids, "decoded": decoded(tok, ids)})

    tiny = {}
    for kind in ("gpt2", "llama3"):
        t, j = train_tiny(strings, kind)
        dump(f"{kind}_tiny.json", j)
        ids = ids_of(t, strings)
        check_decode(t, strings, ids, kind)
        tiny[kind] = {"ids": ids, "decoded": decoded(t, ids)}
    dump("tiny_ids.json", tiny)

    sp, data = train_sentencepiece(strings)
    with open(os.path.join(OUT, "tiny_sp.model"), "wb") as fh:
        fh.write(data)
    print(f"wrote tiny_sp.model: {len(data)} bytes")
    # Control pieces in the text are cllm's added-token split, not sentencepiece's: left out here.
    controls = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)]
    ids = [None if any(c in x for c in controls) else sp.encode(x) for x in strings]
    dump("tiny_sp_ids.json", {"ids": ids, "decoded": [None if i is None else sp.decode(i) for i in ids]})

    dump("chat_templates.json", chat_fixtures(template))
    dump("chat_ids.json", chat_id_fixtures(tok, template))


if __name__ == "__main__":
    main()
