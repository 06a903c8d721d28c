#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Which skipped tests of a ctest run are allowed under LIBUFFD_TEST_STRICT=1: only those that
# skipped because this machine lacks hardware, as tests/hardware-only.txt lists them. Such a test
# exited 77 after printing "NOT APPLICABLE on this hardware [ID]: why" (testutil's
# tu_not_applicable()), and the list has a line "ID TEST" for it. Anything else that ctest marks
# "***Skipped" or "***Not Run" is a real skip.
#
# usage: hardware-skips.sh CTEST_OUTPUT LAST_TEST_LOG LIST
#   CTEST_OUTPUT   what ctest printed (the "***Skipped" lines)
#   LAST_TEST_LOG  Testing/Temporary/LastTest.log of that run (each test's output)
#   LIST           tests/hardware-only.txt
# Prints "hardware: TEST [ID]: why" for each allowed skip and "not allowed: TEST" for each other
# one; exit status 0 when every skip is allowed, 1 otherwise, 2 on bad usage.
set -euo pipefail
(($# == 3)) || { echo "usage: $0 CTEST_OUTPUT LAST_TEST_LOG LIST" >&2; exit 2; }
out=$1 last=$2 list=$3
status=0

while read -r name; do
	[[ -n $name ]] || continue
	# The test's output: from its "N/M Test: NAME" line to "<end of output>".
	marker=$(awk -v name="$name" '
		$0 ~ /^[0-9]+\/[0-9]+ Test: / && $NF == name { inside = 1; next }
		inside && /^<end of output>$/ { exit }
		inside && /^NOT APPLICABLE on this hardware \[[A-Za-z0-9_.-]+\]: / { print; exit }
	' "$last" 2>/dev/null || true)
	id=$(sed -nE 's/^NOT APPLICABLE on this hardware \[([^]]+)\]: .*/\1/p' <<<"$marker")
	if [[ -n $id ]] && grep -v '^#' "$list" |
		awk -v id="$id" -v name="$name" '$1 == id && $2 == name { found = 1 } END { exit !found }'; then
		echo "hardware: $name [$id]: ${marker#*]: }"
	else
		echo "not allowed: $name"
		status=1
	fi
done < <(grep -E '\*\*\*Skipped|\*\*\*Not Run' "$out" | sed -nE 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/p')
exit $status
