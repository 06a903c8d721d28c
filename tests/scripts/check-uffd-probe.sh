#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of the uffd-probe demo tool: it runs, names the kernel's features and ioctls, reports each
# way of opening a userfaultfd, prints JSON that parses, and rejects bad usage in one line.
# With --unprivileged it runs the tool as user nobody (needs root) and checks that the privileged
# ways fail with an explanation while the default still works.
# usage: check-uffd-probe.sh [--unprivileged] PATH-TO-uffd-probe [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
shopt -s extglob

unpriv=0
if [[ ${1:-} == --unprivileged ]]; then
	unpriv=1
	shift
fi
[[ $# -ge 1 && $# -le 2 ]] ||
	{ echo "usage: $0 [--unprivileged] PATH-TO-uffd-probe [PATH-TO-libuffd.so]" >&2; exit 2; }
tool=$1 lib=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() {
	if [[ -n ${LIBUFFD_TEST_STRICT:-} && ${LIBUFFD_TEST_STRICT} != 0 ]]; then
		echo "FAIL (skip not allowed, LIBUFFD_TEST_STRICT=1): $*" >&2
		exit 1
	fi
	echo "SKIP: $*" >&2
	exit 77
}
# Run the tool (as nobody with --unprivileged); stdout, stderr, status into $tmp.
probe() {
	local rc=0
	if ((unpriv)); then
		setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --inh-caps=-all \
			"$tool" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	else
		"$tool" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	fi
	echo "$rc" >"$tmp/rc"
}
rc() { cat "$tmp/rc"; }
# The lines of one failed attempt: its FAIL line and the explanation indented below it.
failure() {
	awk -v m="  FAIL  $1" 'index($0, m) == 1 { p = 1; print; next }
		p && /^        / { print; next } { p = 0 }' "$tmp/out" | tr '\n' ' '
}
expect_line() { # regex description
	grep -Eq -- "$1" "$tmp/out" || { cat "$tmp/out" >&2; fail "no line matching '$1' ($2)"; }
}

if ((unpriv)); then
	[[ $(id -u) -eq 0 ]] || skip "the unprivileged check needs root to switch to user nobody"
	command -v setpriv >/dev/null || skip "setpriv (util-linux) is not installed"
	id nobody >/dev/null 2>&1 || skip "there is no user nobody"
	# The build tree may sit below a directory nobody cannot enter: run a copy of the tool and
	# its library from a world-readable directory instead.
	chmod 755 "$tmp"
	mkdir -m 755 "$tmp/bin"
	install -m 755 "$tool" "$tmp/bin/uffd-probe"
	if [[ -n $lib ]]; then
		install -m 755 "$lib" "$tmp/bin/libuffd.so.0"
		export LD_LIBRARY_PATH=$tmp/bin
	fi
	tool=$tmp/bin/uffd-probe
	setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$tool" --version >/dev/null 2>&1 ||
		skip "user nobody cannot run a copy of uffd-probe in $tmp/bin"
fi

# Plain text report.
probe
cat "$tmp/out"
[[ $(rc) -eq 0 ]] || fail "uffd-probe exited $(rc): $(cat "$tmp/err")"
[[ ! -s $tmp/err ]] || fail "uffd-probe wrote to stderr: $(cat "$tmp/err")"
expect_line '^libuffd [0-9]+\.[0-9]+\.[0-9]+ on Linux ' "the header line"
expect_line '^  yes  EVENT_UNMAP +since 4\.11$' "EVENT_UNMAP offered, with its release"
expect_line '^  yes  PAGEFAULT_FLAG_WP ' "the first feature bit"
expect_line '^  yes  (REGISTER|COPY) +since 4\.3$' "ioctls by name, with their release"
expect_line '^  yes  COPY +since 4\.3$' "COPY offered"
expect_line '^  (yes|no )  WRITEPROTECT +since 5\.7$' "WRITEPROTECT with its release"
expect_line '^  OK    default ' "the default open works for every user"
expect_line '^  OK    UFFD_OPEN_SYSCALL_ONLY ' "the syscall works for every user (user-mode only)"
for mode in 'UFFD_OPEN_KERNEL_FAULTS' 'UFFD_OPEN_DEVICE_ONLY' 'EVENT_FORK required' \
	'every known feature optional'; do
	expect_line "^  (OK  |FAIL)  $mode" "a line for $mode"
done

sysctl_value=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo 0)
if ((unpriv)); then
	# Without privilege the ways that need it fail, and the explanation names what to change.
	if [[ $sysctl_value == 0 ]]; then
		[[ $(failure UFFD_OPEN_KERNEL_FAULTS) == *'EPERM:'* ]] ||
			fail "UFFD_OPEN_KERNEL_FAULTS should fail with EPERM for nobody"
		[[ $(failure UFFD_OPEN_KERNEL_FAULTS) == *unprivileged_userfaultfd* ]] ||
			fail "the EPERM explanation does not name vm.unprivileged_userfaultfd"
	fi
	[[ $(failure 'EVENT_FORK required') == *'EPERM:'* ]] ||
		fail "EVENT_FORK required should fail with EPERM for nobody"
	# As an optional feature EVENT_FORK is dropped, not fatal.
	expect_line '^  OK    every known feature optional: granted 0x' "optional features granted"
	granted=$(sed -n 's/^  OK    every known feature optional: granted \(0x[0-9a-f]*\)$/\1/p' \
		"$tmp/out")
	(((granted & 0x2) == 0)) || fail "nobody was granted EVENT_FORK ($granted)"
	if [[ -e /dev/userfaultfd ]] && ! setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
		test -r /dev/userfaultfd -a -w /dev/userfaultfd; then
		[[ $(failure UFFD_OPEN_DEVICE_ONLY) == *E@(PERM|ACCES):* ]] ||
			fail "UFFD_OPEN_DEVICE_ONLY should fail for nobody"
	fi
elif [[ $(id -u) -eq 0 ]]; then
	# root may use every way the kernel has.
	expect_line '^  OK    UFFD_OPEN_KERNEL_FAULTS' "root may trap kernel-mode faults"
	expect_line '^  OK    EVENT_FORK required' "root may have EVENT_FORK"
	if [[ -e /dev/userfaultfd ]]; then
		expect_line '^  OK    UFFD_OPEN_DEVICE_ONLY' "root may use /dev/userfaultfd"
	fi
fi

# JSON report.
probe --json
[[ $(rc) -eq 0 ]] || fail "uffd-probe --json exited $(rc): $(cat "$tmp/err")"
if command -v python3 >/dev/null; then
	python3 -m json.tool "$tmp/out" >/dev/null || fail "--json output does not parse: $(cat "$tmp/out")"
	python3 - "$tmp/out" <<'PY' || fail "--json output lacks what the text report shows"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["probe"]["ok"] is True, r["probe"]
names = {f["name"]: f for f in r["features"]}
assert names["EVENT_UNMAP"]["offered"] and names["EVENT_UNMAP"]["since"] == "4.11", names
assert any(i["name"] == "COPY" and i["offered"] and i["since"] == "4.3"
           for i in r["ioctls"]), r["ioctls"]
assert all(i["since"] for i in r["ioctls"] if i["name"]), r["ioctls"]
modes = [o["mode"] for o in r["open"]]
assert modes == ["default", "syscall_only", "device_only", "kernel_faults", "event_fork",
                 "all_optional"], modes
assert r["open"][0]["ok"] is True, r["open"][0]
for o in r["open"]:
    assert o["ok"] == (o["error"] is None), o
PY
else
	grep -q '"EVENT_UNMAP"' "$tmp/out" || fail "--json output lacks EVENT_UNMAP"
fi

# Usage.
probe --help
[[ $(rc) -eq 0 ]] || fail "--help exited $(rc)"
head -n 1 "$tmp/out" | grep -q '^usage: uffd-probe ' || fail "--help does not start with a usage line"
probe --version
[[ $(rc) -eq 0 ]] || fail "--version exited $(rc)"
grep -q '^uffd-probe (libuffd [0-9.]*)$' "$tmp/out" || fail "--version printed: $(cat "$tmp/out")"
for bad in --no-such-option -x extra-argument --json=1; do
	probe "$bad"
	[[ $(rc) -ne 0 ]] || fail "'uffd-probe $bad' exited 0"
	[[ ! -s $tmp/out ]] || fail "'uffd-probe $bad' wrote to stdout"
	[[ $(wc -l <"$tmp/err") -eq 1 ]] || fail "'uffd-probe $bad' error is not one line: $(cat "$tmp/err")"
	grep -q "^uffd-probe: .*'${bad%=*}'" "$tmp/err" || fail "'uffd-probe $bad' error does not name it"
done
echo "uffd-probe checks passed$( ((unpriv)) && echo ' (as user nobody)')"
