#!/usr/bin/env bash
# Runs the training tests with Debian's python3 (torch 1.13, h5py, numpy, pytest: the CI setup);
# exits non-zero on any failure. Needs the cllm binary: $CLLM_BIN or <repo>/build/cllm.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exec "${PYTHON:-/usr/bin/python3}" -m pytest -q -p no:cacheprovider training/tests "$@"
