#!/usr/bin/env bash
# expect_abort.sh MAX_SECONDS REGEX COMMAND...   (MAX_SECONDS: an integer)
# Passes when COMMAND exits non-zero within MAX_SECONDS and its output (stdout + stderr) matches
# the extended REGEX: how ctest checks that a failed rank stops the whole group, promptly and
# with a message naming the rank and the phase.
set -uo pipefail
max_s="$1"; regex="$2"; shift 2
start_ms=$(( $(date +%s%N) / 1000000 ))
output="$(timeout $((max_s + 30)) "$@" 2>&1)"
rc=$?
elapsed_ms=$(( $(date +%s%N) / 1000000 - start_ms ))
echo "$output"
echo "expect_abort: exit status $rc after ${elapsed_ms} ms"
fail=0
if [ "$rc" -eq 0 ]; then echo "expect_abort: FAIL: the command succeeded; a failure was expected"; fail=1; fi
if [ "$elapsed_ms" -gt $((max_s * 1000)) ]; then echo "expect_abort: FAIL: took more than $max_s s"; fail=1; fi
if ! grep -Eq -- "$regex" <<<"$output"; then echo "expect_abort: FAIL: no line matches /$regex/"; fail=1; fi
exit $fail
