#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# coverage.sh fails (exit 1, with a diff) when the committed COVERAGE.md differs from the table a
# complete run produces, passes when only the kernel line differs, and updates the committed
# table under LIBUFFD_UPDATE_COVERAGE=1. It runs coverage.sh on made-up rows, not on a real run.
# usage: check-coverage-script.sh COVERAGE_SH WORK_DIR
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 COVERAGE_SH WORK_DIR" >&2; exit 2; }
script=$1 work=$2
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

# The lists of what the table must show, as coverage.sh itself has them.
eval "$(awk '/^(features|ioctls|events|scenarios)="/ { on = 1 } on { print } on && /"$/ { on = 0 }' \
	"$script")"
[[ -n ${features:-} && -n ${ioctls:-} && -n ${events:-} && -n ${scenarios:-} ]] ||
	{ echo "cannot read the lists in $script" >&2; exit 2; }

rm -rf "$work"
mkdir -p "$work/rows"
# Every feature, ioctl, event and scenario exercised on every memory type: a complete run.
for mem in anon shmem shmem-private hugetlb hugetlb-private; do
	for f in $features; do printf 'feature\t%s\t%s\tok\t-\t-\tapi\n' "$f" "$mem"; done
	for i in $ioctls; do printf 'ioctl\t%s\t%s\tok\t-\t-\tapi\n' "$i" "$mem"; done
	for e in $events; do printf 'event\t%s\t%s\tok\t-\t-\tevents\n' "$e" "$mem"; done
	for s in $scenarios; do printf 'scenario\t%s\t%s\tok\t-\t-\t%s\n' "$s" "$mem" "$s"; done
done >"$work/rows/all.tsv"

run() { # expected-status, then coverage.sh's arguments; its stderr goes to $work/err
	local want=$1 rc=0
	shift
	"$script" "$@" 2>"$work/err" || rc=$?
	[[ $rc == "$want" ]] || { fail "coverage.sh $* exited $rc, expected $want"; cat "$work/err" >&2; }
}

# No committed table: a complete run passes.
run 0 "$work/rows" "$work/out.md"
# The same table committed, generated on another kernel: still passes.
sed 's/^Last generated on Linux .*/Last generated on Linux 0.0.0-elsewhere./' "$work/out.md" \
	>"$work/committed.md"
run 0 "$work/rows" "$work/out.md" "$work/committed.md"
# A stale committed table: fails, and shows the difference.
sed 's/^| EVENT_FORK |.*/| EVENT_FORK | ✗ | ✗ | ✗ | ✗ | ✗ |/' "$work/committed.md" >"$work/stale.md"
cmp -s "$work/stale.md" "$work/committed.md" && fail "the stale table is not stale"
run 1 "$work/rows" "$work/out.md" "$work/stale.md"
grep -q '^-| EVENT_FORK | ✗' "$work/err" || fail "no diff printed for a stale table"
# Asked to update it: the committed table is replaced and the run passes.
LIBUFFD_UPDATE_COVERAGE=1 run 0 "$work/rows" "$work/out.md" "$work/stale.md"
cmp -s "$work/stale.md" "$work/out.md" || fail "LIBUFFD_UPDATE_COVERAGE=1 did not update it"

((status == 0)) && echo "check-coverage-script: ok"
exit $status
