#!/usr/bin/env bash
# Documentation speaks about the project alone: no paths of the machines it was developed on, no
# internal names of test machines or of how they were obtained, no issue numbers of a tracker
# outside the repository, no limits of those machines. Fails naming file:line for each hit.
# Run by ctest (docs_about_the_project) and so by tests/run.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# Everywhere (documentation, scripts, source comments): machine names, paths and provenance.
everywhere='/work/|\.library/|nvidia-h100|nvidia-h200|H[12]00x[0-9] kind|\blent\b|\blease\b|device time|machines'"'"' image|\bissue[ -][0-9]'
# Documentation and the training and cluster scripts also may not assume those machines' limits.
docs_only='600 s command|64 MiB|at most 8 files'

doc_files=(README.md cluster training docs)
src_dirs=(kernels loaders runtime parallel launch tests)
# Recorded outputs (logs, JSON) in docs/results are kept as they were written; their names are checked.
fail=0
report() { [ -z "$1" ] || { echo "$1"; fail=1; }; }
report "$(grep -rnIiE "$everywhere|$docs_only" --exclude-dir=results --exclude-dir=__pycache__ "${doc_files[@]}")"
report "$(grep -rnIiE "$everywhere" --exclude=check_docs.sh --exclude-dir=fixtures --exclude-dir=corpus "${src_dirs[@]}")"
report "$(ls docs/results docs/img | grep -iE 'issue[-_ ]?[0-9]' | sed 's/^/docs: file name with an issue number: /')"
if [ $fail -ne 0 ]; then
  echo "check_docs: the lines above name machines, paths or trackers outside the project (tests/docs/check_docs.sh)" >&2
  exit 1
fi
echo "check_docs: ok"
