"""GPT-2's byte -> printable character table: the text of byte-level BPE tokens ("Ġ" is the space).

Shared by the fixture scripts (make_tokenizer_fixtures.py) and the fuzz seeds (tests/fuzz/make_seeds.py);
no dependencies.
"""


def byte_level_chars():
    """{byte: its one-character token text}, for all 256 bytes."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
