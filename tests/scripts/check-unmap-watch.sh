#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of unmap-watch: every UNMAP, REMAP and REMOVE its workload causes arrives, each callback
# sees the range map already updated, the counts match what the workload did, and bad usage is
# refused in one line.
# usage: check-unmap-watch.sh PATH-TO-unmap-watch [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: $0 PATH-TO-unmap-watch [PATH-TO-libuffd.so]" >&2
	exit 2
fi
name=unmap-watch tool=$1 lib=${2:-}
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"

page=$(getconf PAGESIZE)

# One round per thread, every event printed: each is followed by the map its callback saw.
run --threads 1 --rounds 1
expect_ok "unmap-watch --threads 1 --rounds 1"
out
mapfile -t ev < <(grep -E '^#[0-9]+ ' "$tmp/out" | awk '{print $2}')
[[ "${ev[*]}" == "unmap remap unmap remove unmap unmap" ]] ||
	fail "events of one round: '${ev[*]}', expected 'unmap remap unmap remove unmap unmap'"
! grep -q 'MAP CHECK FAILED' "$tmp/out" || fail "a callback saw a stale map"

# The remap: the moved pages are in the map at their new address, at offset 4 pages of the
# registration (the workload moves pages 4 and 5), the old place still there until the UNMAP.
to=$(awk '$2 == "remap" { print $5; exit }' "$tmp/out")
from=$(awk '$2 == "remap" { print $3; exit }' "$tmp/out")
awk -v to="$to" -v off="$(printf '0x%x' $((4 * page)))" '
	$2 == "remap" { on = 1; next }
	on && /^#/ { exit }
	on && index($0, to "-") && $NF == off { found = 1 }
	END { exit !found }' "$tmp/out" ||
	fail "after the remap to $to, the map does not show the moved pages at $to with offset 4 pages"
# The unmap that follows the remap cuts the old place: no piece starts at $from afterwards.
awk -v from="$from" '
	$2 == "remap" { r = 1; next }
	r && $2 == "unmap" { u = 1; next }
	u && /^#/ { exit }
	u && index($0, from "-") { bad = 1 }
	END { exit bad }' "$tmp/out" || fail "after the unmap of $from, the map still has it"
# The last unmap empties the map.
[[ $(tail -n 6 "$tmp/out" | grep -c '(empty)') -eq 1 ]] || fail "the map is not empty at the end"

# Several threads and rounds: the counts are exactly what the workload did. Per round: unmaps
# of one page, of the moved pages' old place, of the rest, of the moved pages; one REMAP; one
# REMOVE; 8 + 2 first touches. A fault woken without being served is raised again.
threads=4 rounds=25
run --threads $threads --rounds $rounds --quiet
expect_ok "unmap-watch --quiet"
out
! grep -qE '^#[0-9]+ ' "$tmp/out" || fail "--quiet still printed events"
n=$((threads * rounds))
[[ $(field unmap) -eq $((4 * n)) ]] || fail "unmap=$(field unmap), expected $((4 * n))"
[[ $(field remap) -eq $n ]] || fail "remap=$(field remap), expected $n"
[[ $(field remove) -eq $n ]] || fail "remove=$(field remove), expected $n"
[[ $(($(field pagefault) - $(field woken))) -eq $((10 * n)) ]] ||
	fail "pagefault - woken = $(($(field pagefault) - $(field woken))), expected $((10 * n))"
[[ $(field munmap) -eq $((3 * n)) && $(field mremap) -eq $n && $(field madvise) -eq $n &&
	$(field touches) -eq $((10 * n)) ]] || fail "the workload's own counts are off"
[[ $(field passed) -eq $((6 * n)) && $(field failed) -eq 0 ]] ||
	fail "map checks: passed=$(field passed) failed=$(field failed), expected $((6 * n)) and 0"
expect_line '^result: +OK' "the tool's own verdict"

# Usage and bad input.
check_usage --threads
expect_error 2 "'0' for --rounds" --rounds 0
expect_error 2 "'65' for --threads" --threads 65
expect_error 2 "unexpected argument 'extra'" extra
check_no_permission --rounds 1
echo "unmap-watch checks passed"
