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
	expect_line "^image:    SHA-256 $want\$" "the SHA-256 of $(stat -c %s "$1") bytes"
	expect_line "^verified: SHA-256 matches: [0-9a-f]{64}\$" "the memory as expected"
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
# The discarded chunks read as zero: the expected SHA-256 is the image's with them zeroed.
cp "$tmp/big" "$tmp/zeroed"
while read -r off; do
	dd if=/dev/zero of="$tmp/zeroed" bs="$page" seek=$((off / page)) count=$chunk conv=notrunc status=none
done < <(sed -nE 's/^  discarded .* image offset (0x[0-9a-f]+)$/\1/p' "$tmp/out")
want=$(sha256sum "$tmp/zeroed" | cut -d ' ' -f 1)
expect_line "^expected: SHA-256 $want: " "the image with the discarded chunks zeroed"
expect_line "^verified: SHA-256 matches: $want\$" "discarded memory reads as zero"
expect_line "^discards: a discarded page reads as zero" "which discard semantics it runs"
echo "ok: discarded chunks read as zero, and the expected SHA-256 says so"
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
expect_line "^  moved +64 pages $hex -> $hex: the map follows, image offset $hex\$" \
	"a moved line with the file offset the map gives"

# Readahead 1: one page per fault (a fault woken without being served comes back).
run --quiet --readahead 1 --threads 2 "$tmp/big"
expect_ok "lazy-load --readahead 1"
verified "$tmp/big"
# One page per fault: every page served took a fault of its own.
(($(field served) <= $(field faults) && $(field fetches) <= $(field faults))) ||
	fail "readahead 1: faults=$(field faults) fetches=$(field fetches) served=$(field served)"
# Readahead larger than a chunk, and one thread.
run --quiet --readahead 1024 --threads 1 "$tmp/big"
expect_ok "lazy-load --readahead 1024 --threads 1"
verified "$tmp/big"
echo "ok: readahead 1, 16 and 1024, 1 to 4 threads"

# Record, then prefetch: the working set is installed before the workload, which faults far less.
head -c $((32 << 20)) /dev/urandom >"$tmp/img"
run --quiet --record "$tmp/rec" "$tmp/img"
expect_ok "--record"
recorded=$(field faults)
[[ $(head -n 1 "$tmp/rec") == "uffd-order 1" && -s $tmp/rec.pages ]] || fail "--record wrote no order"
run --quiet --prefetch "$tmp/rec" --wait-prefetch "$tmp/img"
expect_ok "--prefetch --wait-prefetch"
verified "$tmp/img"
(($(field faults) * 2 < recorded)) || fail "--prefetch: faults=$(field faults), $recorded without"
run --quiet --prefetch "$tmp/rec" "$tmp/img"
expect_ok "--prefetch while the workload runs"
verified "$tmp/img"
echo "ok: --record then --prefetch: $recorded faults, then fewer"
printf 'uffd-order 1\n0x0 0x1000 anon@0x7f0000000000\n' >"$tmp/trace-order"
expect_error 1 "names regions" --prefetch "$tmp/trace-order" "$tmp/img"
expect_error 1 "'http://127.0.0.1:9/x'" http://127.0.0.1:9/x

# Usage and bad input.
check_usage --readahead
expect_error 2 "no SOURCE given"
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
