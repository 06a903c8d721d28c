#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of dirty-track: in every interval, the dirty count it prints is the number of distinct
# pages its workload wrote, as the workload's own log says; with and without WP_UNPOPULATED;
# the same seed gives the same pages; bad input gets a one-line error.
# usage: check-dirty-track.sh PATH-TO-dirty-track [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: $0 PATH-TO-dirty-track [PATH-TO-libuffd.so]" >&2
	exit 2
fi
name=dirty-track tool=$1 lib=${2:-}
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"

# check_against_log INTERVALS LOG: each "interval N: D pages dirty" line has D = the distinct
# pages the log shows written in interval N, and says "match"; the fault count is their sum.
check_against_log() {
	local intervals=$1 log=$2 n want got total=0
	for ((n = 1; n <= intervals; n++)); do
		want=$(awk -v n="$n" '$1 == n { print $2 }' "$log" | sort -u | wc -l)
		got=$(sed -n "s/^interval $n: \([0-9]*\) pages dirty .*: match\b.*/\1/p" "$tmp/out")
		[[ -n $got ]] || { show; fail "no matching line for interval $n"; }
		[[ $got -eq $want ]] || fail "interval $n: $got pages dirty, the log shows $want written"
		((total += got))
	done
	[[ $(grep -c '^interval ' "$tmp/out") -eq $intervals ]] || fail "not $intervals interval lines"
	[[ $(field faults) -eq $total && $(field dirty) -eq $total ]] ||
		fail "faults=$(field faults) dirty=$(field dirty), the log says $total"
	expect_line '^result: OK' "the tool's own verdict"
}

# With WP_UNPOPULATED where the kernel offers it: empty pages are tracked without populating.
run --intervals 6 --pages 512 --writes 300 --seed 42 --log "$tmp/log"
expect_ok "dirty-track --log"
out
check_against_log 6 "$tmp/log"
[[ $(wc -l <"$tmp/log") -eq $((6 * 300)) ]] || fail "the log does not have 6 x 300 writes"
offered=$(grep -c '^WP_UNPOPULATED: granted' "$tmp/out" || true)
if [[ $offered -eq 0 ]]; then
	expect_line '^WP_UNPOPULATED: not offered by this kernel' "why pages were populated first"
fi
cp "$tmp/out" "$tmp/first"

# The same seed: the same pages. Another seed: other pages.
run --intervals 6 --pages 512 --writes 300 --seed 42 --log "$tmp/log2"
expect_ok "dirty-track, same seed"
cmp -s "$tmp/log" "$tmp/log2" || fail "the same seed wrote other pages"
diff <(grep '^interval' "$tmp/first") <(grep '^interval' "$tmp/out") >/dev/null ||
	fail "the same seed gave other dirty counts"
run --intervals 6 --pages 512 --writes 300 --seed 43 --log "$tmp/log3"
expect_ok "dirty-track, another seed"
! cmp -s "$tmp/log" "$tmp/log3" || fail "another seed wrote the same pages"
check_against_log 6 "$tmp/log3"

# Without WP_UNPOPULATED every page is populated first, and the counts are the same.
run --intervals 4 --pages 300 --seed 7 --no-unpopulated --log "$tmp/log4"
expect_ok "dirty-track --no-unpopulated"
expect_line '^WP_UNPOPULATED: not asked for' "the tool says it populated the pages"
check_against_log 4 "$tmp/log4"

# Edge cases: no writes at all; a single page written over and over.
run --intervals 3 --pages 64 --writes 0
expect_ok "dirty-track --writes 0"
[[ $(grep -c '^interval [0-9]*: 0 pages dirty (the workload wrote 0 distinct pages): match' \
	"$tmp/out") -eq 3 && $(field faults) -eq 0 ]] || fail "--writes 0 dirtied pages"
run --intervals 3 --pages 1 --writes 50 --log "$tmp/log5"
expect_ok "dirty-track --pages 1"
check_against_log 3 "$tmp/log5"
[[ $(field faults) -eq 3 ]] || fail "one page written 50 times should fault once per interval"
echo "ok: per-interval dirty counts match the workload's log"

# Usage and bad input.
check_usage --pages
expect_error 2 "'0' for --intervals" --intervals 0
expect_error 2 "'0' for --pages" --pages 0
expect_error 2 "'x' for --seed" --seed x
expect_error 2 "'--log' needs a value" --log
expect_error 1 "cannot write the log '$tmp/no/such/dir': No such file or directory" \
	--log "$tmp/no/such/dir"
expect_error 2 "unexpected argument 'extra'" extra
check_no_permission --intervals 1
echo "dirty-track checks passed"
