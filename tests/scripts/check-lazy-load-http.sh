#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of lazy-load over HTTP, against a real nginx this script starts on 127.0.0.1 (a private
# configuration in the build directory, a free port) and ends: every byte restored from a URL is
# the file's (lazy-load's SHA-256 is sha256sum's and its check passes), with chunks and with a
# recorded prefetch; and a server stopped or stalled mid-restore ends the restore with a clear
# error (the failed fetch, and the SIGBUS of a poisoned page) within a bounded time: never a
# hang, never wrong bytes.
# usage: check-lazy-load-http.sh PATH-TO-lazy-load WORK-DIR [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 PATH-TO-lazy-load WORK-DIR [PATH-TO-libuffd.so]" >&2
	exit 2
fi
name=lazy-load tool=$1 work=$2 lib=${3:-}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/scripts/check-lib.sh
. "$here/check-lib.sh"
# shellcheck source=tests/scripts/nginx.sh
. "$here/nginx.sh"
command -v sha256sum >/dev/null || skip "sha256sum (coreutils) is not installed"
command -v nginx >/dev/null || skip "nginx is not installed (apt-get install nginx-light)"
run http://127.0.0.1:9/x
if grep -q "no HTTP support" "$tmp/err"; then
	skip "lazy-load was built without libuffd-http (libcurl)"
fi

mkdir -p "$work"
srv=$(mktemp -d "$work/lazy-load-http-XXXXXX")
# Every process this script starts ends with it: nginx here, lazy-load under timeout(1).
trap 'nginx_stop; rm -rf "$tmp" "$srv"' EXIT
trap 'exit 143' TERM INT HUP
nginx_start "$srv" || fail "cannot start nginx"
echo "ok: nginx on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID), configuration in $srv"

# verified FILE: the last run said the memory matches, with the hash sha256sum gives FILE.
verified() {
	local want
	want=$(sha256sum "$1" | cut -d ' ' -f 1)
	expect_line "^image:    SHA-256 $want\$" "the SHA-256 of $(stat -c %s "$1") bytes over HTTP"
	expect_line "^verified: SHA-256 matches: [0-9a-f]{64}\$" "the memory as expected"
}

# An image of no whole number of pages: the last page's tail reads as zero.
img=$srv/www/image
head -c $(((8 << 20) + 12345)) /dev/urandom >"$img"
url=$NGINX_URL/image

run --quiet "$url"
expect_ok "lazy-load $url"
verified "$img"
echo "ok: default chunk: every byte as sha256sum says"

run --quiet --chunk 64K --threads 4 "$url"
expect_ok "lazy-load --chunk 64K $url"
verified "$img"
# 64 KiB a fault: at most 16 pages served per fault, and every fetch is at most 64 KiB.
(($(field faults) * 16 >= $(field served) && $(field fetched) <= $(field fetches) * 65536)) ||
	fail "--chunk 64K: faults=$(field faults) served=$(field served) fetches=$(field fetches) fetched=$(field fetched)"
echo "ok: --chunk 64K over HTTP: faults=$(field faults) fetches=$(field fetches)"
plain=$(field faults)

# The next 4 chunks fetched ahead of each fault that fetches. How many faults that saves depends
# on timing (a fault on a chunk in flight still counts, joined): bench/reap.sh measures it; here
# the fetches ahead happen and every byte is right.
run --quiet --chunk 64K --ahead 4 --threads 4 "$url"
expect_ok "lazy-load --chunk 64K --ahead 4 $url"
verified "$img"
(($(field ahead) > 0)) || fail "--ahead 4: nothing fetched ahead: $(grep '^counts:' "$tmp/out")"
echo "ok: --chunk 64K --ahead 4 over HTTP: faults=$(field faults) ($plain without), ahead=$(field ahead)"
expect_error 2 "--ahead and --record" --ahead 2 --record "$tmp/rec" "$url"

# Record page by page, then prefetch: from the compacted file, and from the URL itself.
run --quiet --readahead 1 --record "$tmp/rec" "$url"
expect_ok "--record over HTTP"
verified "$img"
recorded=$(field faults)
[[ $(head -n 1 "$tmp/rec") == "uffd-order 1" && -s $tmp/rec.pages ]] || fail "--record wrote no order"
run --quiet --readahead 1 --prefetch "$tmp/rec" --wait-prefetch "$url"
expect_ok "--prefetch (FILE.pages) over HTTP"
verified "$img"
(($(field faults) * 4 < recorded)) || fail "--prefetch: faults=$(field faults), $recorded without"
prefetched=$(field faults)
rm "$tmp/rec.pages"
run --quiet --readahead 1 --prefetch "$tmp/rec" --wait-prefetch "$url"
expect_ok "--prefetch (from the URL) over HTTP"
verified "$img"
expect_line "^prefetch: .* \\(no .pages: from the image\\)" "a prefetch from the URL"
(($(field faults) * 4 < recorded)) || fail "--prefetch from the URL: faults=$(field faults), $recorded without"
echo "ok: --record, then --prefetch over HTTP: $recorded on-demand faults, then $prefetched and $(field faults)"

expect_error 1 "cannot tell the length of '$NGINX_URL/missing'" "$NGINX_URL/missing"
expect_error 2 "'50' for --timeout" --timeout 50 "$url"

# A server that goes away mid-restore. /slow/ sends 32 KiB/s a connection (nginx sends the
# first second's worth at once), so each 64 KiB fetch takes about a second and the restore of
# 16 MiB with 4 threads about a minute: the server is sure to go while it runs.
# interrupted SIGNAL TIMEOUT-MS BOUND-S: start a restore, send nginx SIGNAL a second in, and
# check that lazy-load ended within BOUND-S of it, exit 1 with the failed fetch and the SIGBUS
# reported, and never claimed a verified (or any) memory.
head -c $((16 << 20)) /dev/urandom >"$srv/www/slow/image"
interrupted() {
	local sig=$1 ms=$2 bound=$3 slow=$NGINX_URL/slow/image pid rc=0 t0 t1
	timeout -k 5 60 "$tool" --quiet --chunk 64K --timeout "$ms" "$slow" \
		>"$tmp/out" 2>"$tmp/err" </dev/null &
	pid=$!
	sleep 1
	kill -0 "$pid" 2>/dev/null || { show; fail "the restore ended before the server was stopped"; }
	kill "-$sig" "$NGINX_PID"
	t0=$(date +%s%N)
	wait "$pid" || rc=$?
	t1=$(date +%s%N)
	nginx_stop
	((rc != 124 && rc != 137)) || { show; fail "SIG$sig: lazy-load hung (killed after 60 s)"; }
	[[ $rc -eq 1 ]] || { show; fail "SIG$sig: lazy-load exited $rc, not 1"; }
	grep -q "^lazy-load: cannot fetch 0x[0-9a-f]* ([0-9]* bytes) of '$slow': .*: its pages are poisoned" "$tmp/err" ||
		{ show; fail "SIG$sig: no line on the failed fetch"; }
	grep -q "^lazy-load: a worker touched a page that could not be fetched from '$slow' (SIGBUS at 0x[0-9a-f]*): the restore failed\$" "$tmp/err" ||
		{ show; fail "SIG$sig: no line on the SIGBUS"; }
	[[ $(wc -l <"$tmp/err") -eq 2 ]] || { show; fail "SIG$sig: more than these two lines on stderr"; }
	! grep -Eq "^(verified|MISMATCH|restored):" "$tmp/out" || { show; fail "SIG$sig: lazy-load reported memory"; }
	(((t1 - t0) / 1000000 < bound * 1000)) ||
		fail "SIG$sig: lazy-load took $(((t1 - t0) / 1000000)) ms to end, more than $bound s"
	echo "ok: nginx SIG$sig mid-restore: lazy-load exited 1 in $(((t1 - t0) / 1000000)) ms: $(head -n 1 "$tmp/err")"
}
# Stopped: nothing listens; the retries (50 + 100 + 200 ms) are refused at once.
interrupted KILL 2000 5
# Stalled: the port still accepts, nothing answers: 4 attempts of 1.5 s and the back-off.
nginx_start "$srv" || fail "cannot start nginx again"
interrupted STOP 1500 10
echo "lazy-load over HTTP checks passed"
