#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of the README's first command, scripts/demo: it builds libuffd from scratch in its own
# directory and restores a 64 MiB image with lazy-load, in well under the time it promises, and
# its output says what happened and that the SHA-256 matches; bad arguments fail in one line.
# usage: check-demo.sh SOURCE-DIR BUILD-DIR
# Environment: LIBUFFD_DEMO_MAX_SECONDS (default 30): the demo's time limit, build included.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 SOURCE-DIR BUILD-DIR" >&2; exit 2; }
demo=$1/scripts/demo dir=$2
max=${LIBUFFD_DEMO_MAX_SECONDS:-30}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

rc=0
start=$(date +%s.%N)
LIBUFFD_DEMO_BUILD_DIR=$dir timeout -k 5 120 "$demo" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
cat "$tmp/err" "$tmp/out"
((rc != 124 && rc != 137)) || fail "scripts/demo hung (killed after 120 s)"
((rc == 0)) || fail "scripts/demo exited $rc"
expect_line() {
	grep -Eq -- "$1" "$tmp/out" || fail "no line matching '$1' ($2)"
}

# What a newcomer is told, and the numbers.
expect_line '^What you will see: a program restores its memory from that image \*lazily\*' \
	"the explanation"
expect_line "^lazy-load: restoring $dir/demo.img \(64\.0 MiB, [0-9]+ pages\)$" "what is restored"
for what in moved unmapped replaced discarded; do
	expect_line "^  $what +[0-9]+ pages" "the workload's '$what' changes, as they happen"
done
expect_line '^restored: 64\.0 MiB in [0-9.]+ s, [0-9.]+ MiB/s: [0-9]+ faults, [0-9]+ pages served' \
	"the numbers"
want=$(sha256sum "$dir/demo.img" | cut -d ' ' -f 1)
expect_line "^image:    SHA-256 $want\$" "the image's real SHA-256"
expect_line '^verified: SHA-256 matches: [0-9a-f]{64}$' "the check: the memory as expected"
expect_line '^Demo done in [0-9.]+ s \(build included\)' "how long it took"
awk -v s="$secs" -v m="$max" 'BEGIN { exit !(s < m) }' ||
	fail "the demo took ${secs} s, more than ${max} s"
echo "ok: the demo ran in ${secs} s"

# Bad arguments: one line, non-zero, before building anything.
for bad in --bogus "--size 0" "--size x" --json; do
	rc=0
	# shellcheck disable=SC2086 # split "--size 0" into two arguments
	"$demo" $bad >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
	((rc != 0)) || fail "'scripts/demo $bad' exited 0"
	[[ $(wc -l <"$tmp/err") -eq 1 ]] || fail "'scripts/demo $bad': not one line: $(cat "$tmp/err")"
	grep -q '^demo: ' "$tmp/err" || fail "'scripts/demo $bad' error: $(cat "$tmp/err")"
	echo "ok: 'scripts/demo $bad' -> $(cat "$tmp/err")"
done
"$demo" --help | head -n 1 | grep -q '^usage: scripts/demo ' || fail "--help has no usage line"
echo "demo checks passed"
