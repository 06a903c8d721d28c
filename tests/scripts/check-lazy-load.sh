#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of lazy-load: it restores files of every awkward size into lazily served memory, and the
# SHA-256 it prints (its own implementation) is sha256sum's; the pages it serves and the layout
# events match what its workload did; bad input gets a one-line error, never a hang or a crash.
# usage: check-lazy-load.sh PATH-TO-lazy-load [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: $0 PATH-TO-lazy-load [PATH-TO-libuffd.so]" >&2
	exit 2
fi
name=lazy-load tool=$1 lib=${2:-}
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"
command -v sha256sum >/dev/null || skip "sha256sum (coreutils) is not installed"

page=$(getconf PAGESIZE)
chunk=64 # pages: the workload moves, replaces and discards whole chunks

# verified FILE: the last run said the memory matches, with the hash sha256sum gives FILE.
verified() {
	local want
	want=$(sha256sum "$1" | cut -d ' ' -f 1)
	expect_line "^verified: SHA-256 matches: $want\$" "the SHA-256 of $(stat -c %s "$1") bytes"
}

# Sizes around SHA-256's 64-byte blocks and its 56-byte padding limit, and around pages.
for size in 1 55 56 63 64 65 119 120 $((page - 1)) $page $((page + 1)) 1234567; do
	head -c "$size" /dev/urandom >"$tmp/f"
	run --quiet "$tmp/f"
	expect_ok "lazy-load of $size bytes"
	verified "$tmp/f"
done
echo "ok: SHA-256 of 1 to 1234567 bytes as sha256sum says"

# Big enough that each of 4 threads moves, replaces and discards one chunk of its share.
size=$((4 * 5 * chunk * page + 12345))
pages=$(((size + page - 1) / page))
threads=4
head -c "$size" /dev/urandom >"$tmp/big"
run --threads $threads "$tmp/big"
expect_ok "lazy-load of $size bytes"
out
verified "$tmp/big"
expect_line "^restored: .* [0-9.]+ MiB/s: [0-9]+ faults, [0-9]+ pages served" \
	"faults, pages and speed"
for k in moved:$threads unmapped:$((2 * threads)) replaced:$threads discarded:$threads; do
	n=$(grep -c "^  ${k%:*} " "$tmp/out" || true)
	[[ $n -eq ${k#*:} ]] || fail "$n '${k%:*}' lines, expected ${k#*:}"
done
[[ $(field moved) -eq $threads && $(field replaced) -eq $threads &&
	$(field discarded) -eq $threads ]] || fail "the workload did not do one of each per thread"
# A move is a REMAP and an UNMAP of the old place; a replacement (mmap over) an UNMAP; a
# discard (madvise) a REMOVE.
[[ $(field remap) -eq $threads && $(field unmap) -eq $((2 * threads)) &&
	$(field remove) -eq $threads ]] || fail "remap/unmap/remove counts do not match the workload"
# Every page is served once, and the replaced and discarded chunks once more.
[[ $(field served) -eq $((pages + 2 * threads * chunk)) ]] ||
	fail "served=$(field served), expected $((pages + 2 * threads * chunk))"
# Readahead 16: a fault serves up to 16 pages.
(($(field faults) * 16 >= $(field served) && $(field faults) * 4 < $(field served))) ||
	fail "faults=$(field faults) for served=$(field served) with readahead 16"
# The moved chunk is served at its new place: the map's offset there is its place in the file.
hex='0x[0-9a-f]+'
expect_line "^  moved +64 pages $hex -> $hex: the map follows, file offset $hex\$" \
	"a moved line with the file offset the map gives"

# Readahead 1: one page per fault (a fault woken without being served comes back).
run --quiet --readahead 1 --threads 2 "$tmp/big"
expect_ok "lazy-load --readahead 1"
verified "$tmp/big"
[[ $(($(field faults) - $(field woken))) -eq $(field served) ]] ||
	fail "readahead 1: faults=$(field faults) woken=$(field woken) served=$(field served)"
# Readahead larger than a chunk, and one thread.
run --quiet --readahead 1024 --threads 1 "$tmp/big"
expect_ok "lazy-load --readahead 1024 --threads 1"
verified "$tmp/big"
echo "ok: readahead 1, 16 and 1024, 1 to 4 threads"

# Usage and bad input.
check_usage --readahead
expect_error 2 "no FILE given"
expect_error 2 "'0' for --readahead" --readahead 0 "$tmp/f"
expect_error 2 "'1025' for --readahead" --readahead 1025 "$tmp/f"
expect_error 2 "'0' for --threads" --threads 0 "$tmp/f"
expect_error 2 "unexpected argument" "$tmp/f" "$tmp/f"
expect_error 1 "cannot open '$tmp/missing': No such file or directory" "$tmp/missing"
: >"$tmp/empty"
expect_error 1 "'$tmp/empty' is empty" "$tmp/empty"
expect_error 1 "'$tmp' is not a regular file" "$tmp"
expect_error 1 "'/dev/null' is not a regular file" /dev/null
mkfifo "$tmp/fifo"
expect_error 1 "'$tmp/fifo' is not a regular file" "$tmp/fifo"
head -c 100 /dev/urandom >"$tmp/secret"
chmod 000 "$tmp/secret"
if [[ $(id -u) -ne 0 ]]; then
	expect_error 1 "cannot open '$tmp/secret': Permission denied" "$tmp/secret"
elif setup_nobody; then
	run_nobody "$tmp/secret"
	check_error 1 "cannot open '$tmp/secret': Permission denied" "lazy-load UNREADABLE (as nobody)"
else
	note "root reads every file, and user nobody is not available: unreadable-file check not run"
fi
check_no_permission "$tmp/f"
echo "lazy-load checks passed"
