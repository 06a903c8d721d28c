#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of uffd-serve against a VMM that follows Firecracker's handler protocol with raw system
# calls (tests/fc_vmm.c): every byte a VMM reads is the image's, pages its balloon discards read
# as zero, a 2 MiB hugetlbfs region is served, and the handler exits 0 soon after its VMM;
# --record then --prefetch removes faults; with --multi, each attack on the socket gets one line
# on stderr, is refused, leaks no fd and leaves the other VMMs served.
# usage: check-uffd-serve.sh PATH-TO-uffd-serve PATH-TO-fc_vmm [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 PATH-TO-uffd-serve PATH-TO-fc_vmm [PATH-TO-libuffd.so]" >&2
	exit 2
fi
name=uffd-serve tool=$1 vmm=$2 lib=${3:-}
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"
# shellcheck source=tests/scripts/nginx.sh
. "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"


handler='' old_huge=''
cleanup() {
	[[ -z $handler ]] || kill "$handler" 2>/dev/null || true
	[[ -z $old_huge ]] || echo "$old_huge" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	nginx_stop
	rm -rf "$tmp"
}
trap cleanup EXIT

# Huge pages for the 2 MiB regions: reserved here, the old count restored at the end.
huge=()
hp=/proc/sys/vm/nr_hugepages
if [[ -w $hp && -d /sys/kernel/mm/hugepages/hugepages-2048kB ]]; then
	old_huge=$(cat $hp)
	echo $((old_huge + 8)) >$hp || true
	if (($(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages) >= 8)); then
		huge=(--huge)
	else
		note "could not reserve 8 huge pages of 2 MiB: no hugetlbfs region tested"
	fi
else
	note "no 2 MiB huge pages here (or not root): no hugetlbfs region tested"
fi

head -c $((16 << 20)) /dev/urandom >"$tmp/img"
sock=$tmp/sock

# start ARGS...: the handler in the background, its output in $tmp/h.out and h.err; waits for
# the socket.
start() {
	rm -f "$tmp/h.out" "$tmp/h.err"
	"$tool" --listen "$sock" --image "$tmp/img" "$@" >"$tmp/h.out" 2>"$tmp/h.err" </dev/null &
	handler=$!
	for _ in $(seq 500); do
		[[ -S $sock ]] && grep -q "^uffd-serve: listening" "$tmp/h.out" 2>/dev/null && return
		kill -0 "$handler" 2>/dev/null || { cat "$tmp/h.err" >&2; fail "uffd-serve $* did not start"; }
		sleep 0.01
	done
	fail "uffd-serve $* made no socket"
}
# stopped WHAT MAX-SECONDS: the handler exits 0 within MAX-SECONDS.
stopped() {
	local rc=0 i
	for ((i = 0; i < $2 * 100; i++)); do
		kill -0 "$handler" 2>/dev/null || break
		sleep 0.01
	done
	kill -0 "$handler" 2>/dev/null && fail "$1: uffd-serve still runs after $2 s"
	wait "$handler" || rc=$?
	handler=
	((rc == 0)) || { cat "$tmp/h.err" >&2; fail "$1: uffd-serve exited $rc"; }
}
run_vmm() { timeout -k 5 60 "$vmm" "$sock" "$tmp/img" "$@"; }
hfield() { grep -Eo "(^| )$1=[0-9]+" "$tmp/h.out" | tail -n 1 | sed 's/.*=//'; }

# ---- one VMM: served, balloon, huge pages, exit 0 soon after the VMM ----
start --record "$tmp/rec"
[[ $(stat -c %a "$sock") == 600 ]] || fail "the socket is mode $(stat -c %a "$sock"), not 600"
run_vmm --threads 4 "${huge[@]}" >"$tmp/vmm.out" || fail "the VMM saw wrong bytes (above)"
stopped "one VMM" 2
grep -q "^vmm [0-9]* exited: faults=" "$tmp/h.out" || fail "no exit line: $(cat "$tmp/h.out")"
[[ ! -s $tmp/h.err ]] || fail "uffd-serve wrote to stderr: $(cat "$tmp/h.err")"
faults=$(hfield faults)
[[ $(head -n 1 "$tmp/rec") == "uffd-order 1" && -s $tmp/rec.pages ]] || fail "--record wrote no order"
echo "ok: one VMM ($(cat "$tmp/vmm.out")), $faults faults; exited 0 after it"

# ---- recorded prefetch: the same VMM again faults far less ----
start --prefetch "$tmp/rec"
run_vmm --threads 4 --delay-ms 500 "${huge[@]}" >/dev/null || fail "prefetch: the VMM saw wrong bytes"
stopped "prefetch" 2
pf=$(hfield faults)
((pf * 4 <= faults)) || fail "--prefetch left $pf faults of $faults"
(($(hfield prefetched) > 0)) || fail "--prefetch installed nothing"
echo "ok: --prefetch: $pf faults instead of $faults"

# ---- the image over HTTP, fetching 4 chunks ahead of each fault ----
if ! command -v nginx >/dev/null; then
	note "nginx is not installed: no image over HTTP tested"
elif "$tool" --listen "$tmp/nosock" --image http://127.0.0.1:9/x 2>&1 | grep -q "no HTTP support"; then
	note "uffd-serve was built without libuffd-http: no image over HTTP tested"
else
	nginx_start "$tmp/srv" || fail "cannot start nginx"
	ln "$tmp/img" "$tmp/srv/www/img"
	start --image "$NGINX_URL/img" --ahead 4
	run_vmm --threads 4 "${huge[@]}" >/dev/null || fail "--ahead over HTTP: the VMM saw wrong bytes"
	stopped "--ahead over HTTP" 5
	[[ ! -s $tmp/h.err ]] || fail "--ahead over HTTP: uffd-serve wrote to stderr: $(cat "$tmp/h.err")"
	echo "ok: the image over HTTP with --ahead 4: $(hfield faults) faults (a file: $faults)"
	nginx_stop
fi
expect_error 2 "--ahead and --record" --listen "$sock" --image "$tmp/img" --ahead 2 --record "$tmp/r"

# ---- a file of uffd-trace --order, with regions, is refused ----
printf 'uffd-order 1\n0x0 0x1000 anon@0x7f0000000000\n' >"$tmp/trace-order"
expect_error 1 "names regions" --listen "$sock" --image "$tmp/img" --prefetch "$tmp/trace-order"
printf 'uffd-order 1\n0x%x 0x1000\n' $((16 << 20)) >"$tmp/past-order"
expect_error 1 "past the image's end" --listen "$sock" --image "$tmp/img" --prefetch "$tmp/past-order"

# ---- --multi: attacks, while another VMM is served ----
nobody=$(id -u nobody 2>/dev/null || echo 65534)
chmod 711 "$tmp" # another uid reaches the socket (its own mode guards it)
start --multi --allow-uid "$nobody" --record "$tmp/multi"
[[ $(stat -c %a "$sock") == 666 ]] || fail "with --allow-uid the socket is mode $(stat -c %a "$sock")"
run_vmm --threads 2 --hold "$tmp/go" "${huge[@]}" >"$tmp/held.out" &
held=$!
for _ in $(seq 500); do
	grep -q "^vmm [0-9]* (uid" "$tmp/h.out" && break
	sleep 0.01
done
grep -q "^vmm [0-9]* (uid" "$tmp/h.out" || fail "the held VMM was not served"
fds() { find "/proc/$handler/fd" -mindepth 1 | wc -l; }
# settled: the handler's fds are back to $before (a context is closed just after its exit
# line), within 2 s.
settled() {
	for _ in $(seq 200); do
		[[ $(fds) -eq $before ]] && return 0
		sleep 0.01
	done
	return 1
}
before=$(fds)
lines=0
# attack WORDS ARGS...: fc_vmm ARGS is refused; one more line on stderr saying WORDS; no fd left.
attack() {
	local words=$1 n
	shift
	run_vmm "$@" >/dev/null 2>"$tmp/vmm.err" || fail "attack $*: $(cat "$tmp/vmm.err")"
	n=$(wc -l <"$tmp/h.err")
	((n == lines + 1)) || fail "attack $*: $((n - lines)) lines on stderr: $(tail -n +$((lines + 1)) "$tmp/h.err")"
	lines=$n
	tail -n 1 "$tmp/h.err" | grep -q "^uffd-serve: connection of pid [0-9]* (uid [0-9]*) refused: .*$words" ||
		fail "attack $*: the error does not say '$words': $(tail -n 1 "$tmp/h.err")"
	settled || fail "attack $*: the handler has $(fds) fds, $before before"
	kill -0 "$handler" || fail "attack $*: the handler died"
	echo "ok: $(tail -n 1 "$tmp/h.err")"
}
r0='"base_host_virt_addr":%B0'
attack "truncated JSON" --attack "json:[{$r0,\"size\":4096"
attack "malformed JSON" --attack "json:[{$r0,\"size\":4096,\"offset\":0,\"page_size\":4096,}]"
attack "malformed JSON" --attack "json:hello"
attack "malformed JSON" --attack "json:[{$r0,\"size\":4096,\"offset\":0,\"page_size\":4096}] x"
attack "unknown key" --attack "json:[{$r0,\"size\":4096,\"offset\":0,\"page_size\":4096,\"x\":1}]"
attack "appears twice" --attack "json:[{$r0,\"size\":4096,\"size\":4096,\"offset\":0,\"page_size\":4096}]"
attack "unsigned integer" --attack "json:[{$r0,\"size\":-4096,\"offset\":0,\"page_size\":4096}]"
attack "unsigned integer" --attack "json:[{$r0,\"size\":4096.0,\"offset\":0,\"page_size\":4096}]"
attack "unsigned integer" --attack "json:[{$r0,\"size\":\"4096\",\"offset\":0,\"page_size\":4096}]"
attack "no \"page_size\"" --attack "json:[{$r0,\"size\":4096,\"offset\":0}]"
attack "page_size_kib" --attack "json:[{$r0,\"size\":4096,\"offset\":0,\"page_size\":4096,\"page_size_kib\":4}]"
attack "no region" --attack "json:[]"
attack "over 65536 bytes" --attack big
attack "overlap" --attack "json:[{$r0,\"size\":8192,\"offset\":0,\"page_size\":4096},{$r0,\"size\":4096,\"offset\":8192,\"page_size\":4096}]"
attack "past the image's end" --attack "json:[{$r0,\"size\":8192,\"offset\":$(((16 << 20) - 4096)),\"page_size\":4096}]"
attack "size 0" --attack "json:[{$r0,\"size\":0,\"offset\":0,\"page_size\":4096}]"
attack "not aligned" --attack "json:[{$r0,\"size\":4095,\"offset\":0,\"page_size\":4096}]"
attack "not aligned" --attack "json:[{$r0,\"size\":4096,\"offset\":100,\"page_size\":4096}]"
attack "overflows the address space" --attack "json:[{\"base_host_virt_addr\":18446744073709547520,\"size\":8192,\"offset\":0,\"page_size\":4096}]"
attack "overflows 64 bits" --attack "json:[{$r0,\"size\":99999999999999999999,\"offset\":0,\"page_size\":4096}]"
attack "neither" --attack "json:[{$r0,\"size\":8192,\"offset\":0,\"page_size\":8192}]"
attack "no fd" --attack nofd
attack "more than one" --attack twofds
attack "not a userfaultfd" --attack notuffd
attack "lacks a feature" --attack nofeature
attack "may not connect" --as-uid 12345
# A second message: refused, and the VMM it came from is still served to the end.
run_vmm --attack second >/dev/null || fail "after a second message the VMM was not served"
for _ in $(seq 300); do
	[[ $(grep -c "exited: faults" "$tmp/h.out") -ge 1 ]] && break
	sleep 0.01
done
tail -n 1 "$tmp/h.err" | grep -q "second message on its connection refused" ||
	fail "no error for a second message: $(tail -n 1 "$tmp/h.err")"
lines=$(wc -l <"$tmp/h.err")
settled || fail "after the second-message VMM: $(fds) fds, $before before"
echo "ok: $(tail -n 1 "$tmp/h.err")"
# The held VMM finishes, and a new one is served, then SIGTERM ends the handler with 0.
touch "$tmp/go"
wait "$held" || fail "the held VMM saw wrong bytes after the attacks"
run_vmm --threads 2 >/dev/null || fail "a VMM after the attacks was not served"
kill -TERM "$handler"
stopped "--multi, SIGTERM" 5
[[ $(wc -l <"$tmp/h.err") -eq $lines ]] || fail "more on stderr: $(tail -n +$((lines + 1)) "$tmp/h.err")"
n=$(find "$tmp" -maxdepth 1 -name 'multi.[0-9]*' ! -name '*.pages' | wc -l)
((n == 3)) || fail "--multi --record wrote $n files, not 3 (FILE.PID per VMM)"
echo "ok: --multi served 3 VMMs through $((lines)) refused attacks, with no fd leaked; SIGTERM -> 0"

# ---- without --allow-uid, another user cannot even connect ----
if [[ $(id -u) -eq 0 ]]; then
	start
	if run_vmm --as-uid 12345 2>"$tmp/vmm.err"; then fail "uid 12345 connected to a 0600 socket"; fi
	grep -q "Permission denied" "$tmp/vmm.err" || fail "uid 12345: $(cat "$tmp/vmm.err")"
	kill -TERM "$handler"
	stopped "SIGTERM before any VMM" 5
	echo "ok: uid 12345 cannot connect to the 0600 socket"
fi

# ---- usage ----
check_usage --chunk
expect_error 2 "no --listen SOCKET given" --image "$tmp/img"
expect_error 2 "no --image SOURCE given" --listen "$sock"
expect_error 2 "'x' for --allow-uid" --listen "$sock" --image "$tmp/img" --allow-uid x
expect_error 2 "power of two" --listen "$sock" --image "$tmp/img" --chunk 12K
expect_error 1 "cannot open '$tmp/missing'" --listen "$sock" --image "$tmp/missing"
: >"$tmp/plain"
expect_error 1 "exists and is not a socket" --listen "$tmp/plain" --image "$tmp/img"
echo "uffd-serve checks passed"
