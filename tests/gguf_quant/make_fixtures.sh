#!/usr/bin/env bash
# Writes the GGUF quantization fixtures into $1 with fresh random blocks (the seed is printed).
# The gguf package (and numpy) come from PyPI when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -c "import gguf, numpy" 2>/dev/null || python3 -m pip install --quiet gguf numpy
rm -rf "$1"
python3 "$here/../reference/make_gguf_quant_fixtures.py" --out "$1"
# SmolLM2 requantized (about a minute each on 2 cores).
model="$here/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
for scheme in Q4_K_M Q8_0 Q4_0; do
  python3 "$here/../reference/requantize_gguf.py" --src "$model" --scheme "$scheme" --out "$1/smollm2_$scheme.gguf"
done
# The logits fixture of the Q4_K_M file was made from these exact bytes (the test compares hashes).
sha256sum "$1/smollm2_Q4_K_M.gguf" | cut -d' ' -f1 > "$1/smollm2_Q4_K_M.gguf.sha256"
