#!/usr/bin/env bash
# The CLLM experiment in stages (docs/training.md): training/recipe.py; --help lists the flags.
CLLM_RECIPE_PROG=gpu_recipe.sh PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m training.recipe "$@"
