#!/usr/bin/env bash
# file_size_limit.sh KIB REGEX COMMAND...
# Runs COMMAND with files limited to KIB KiB (ulimit -f; SIGXFSZ ignored, so a write past it fails
# with EFBIG as it would on a full disk) and passes when COMMAND exits with status 1 (a reported
# error: not a crash, whose status would be 128 + the signal) and its output matches REGEX.
set -uo pipefail
kib="$1"; regex="$2"; shift 2
output="$(trap '' XFSZ; ulimit -f "$kib"; timeout 60 "$@" 2>&1)"
rc=$?
echo "$output" | tail -n 20
echo "file_size_limit: exit status $rc"
fail=0
[ "$rc" -eq 1 ] || { echo "file_size_limit: FAIL: exit status $rc, expected 1 (a reported error)"; fail=1; }
grep -Eq -- "$regex" <<<"$output" || { echo "file_size_limit: FAIL: no line matches /$regex/"; fail=1; }
exit $fail
