# shellcheck shell=bash disable=SC2154 # name, tool and lib are set by the sourcing script
# SPDX-License-Identifier: MIT
# Sourced by the checks of the example tools (check-<tool>.sh): runs a tool with a time limit,
# as this user or as user nobody, and asserts what every tool must do: a usage line, --help,
# --version, and a one-line error naming the problem, with a non-zero exit, for bad input.
# Before sourcing, set: name (the tool's name), tool (its path), lib (libuffd.so, may be empty).

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
skip() {
	if [[ -n ${LIBUFFD_TEST_STRICT:-} && ${LIBUFFD_TEST_STRICT} != 0 ]]; then
		fail "(skip not allowed, LIBUFFD_TEST_STRICT=1) $*"
	fi
	echo "SKIP: $*" >&2
	exit 77
}
note() { echo "note: $*" >&2; }

# run [ARGS...]: the tool, killed after 60 s; stdout, stderr and status in $tmp/out, err, rc.
# A hang or a crash fails the check at once.
run() { run_cmd "$tool" "$@"; }
run_cmd() {
	local rc=0
	timeout -k 5 60 "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
	echo "$rc" >"$tmp/rc"
	((rc != 124 && rc != 137)) || fail "'${*##*/}' hung (killed after 60 s)"
	((rc < 128)) || { cat "$tmp/err" >&2; fail "'${*##*/}' died of signal $((rc - 128))"; }
}
rc() { cat "$tmp/rc"; }
out() { cat "$tmp/out"; }
show() {
	echo "--- stdout" >&2
	cat "$tmp/out" >&2
	echo "--- stderr" >&2
	cat "$tmp/err" >&2
}

# expect_ok DESCRIPTION: the last run exited 0 and printed nothing on stderr.
expect_ok() {
	[[ $(rc) -eq 0 ]] || { show; fail "$1: exited $(rc)"; }
	[[ ! -s $tmp/err ]] || { show; fail "$1: wrote to stderr"; }
}
# expect_line REGEX DESCRIPTION: some line of the last run's stdout matches.
expect_line() {
	grep -Eq -- "$1" "$tmp/out" || { show; fail "no line matching '$1' ($2)"; }
}
# field KEY: the number after KEY= in the last run's stdout.
field() { grep -Eo "(^|[ ])$1=[0-9]+" "$tmp/out" | head -n 1 | sed 's/.*=//'; }

# expect_error STATUS WORD ARGS...: running with ARGS exits STATUS with exactly one line on
# stderr, "name: ...", that contains WORD, and nothing on stdout.
expect_error() {
	local want=$1 word=$2
	shift 2
	run "$@"
	check_error "$want" "$word" "$name $*"
}
check_error() {
	local want=$1 word=$2 what=$3
	[[ $(rc) -eq $want ]] || { show; fail "'$what' exited $(rc), not $want"; }
	[[ ! -s $tmp/out ]] || { show; fail "'$what' wrote to stdout"; }
	[[ $(wc -l <"$tmp/err") -eq 1 ]] || { show; fail "'$what': the error is not one line"; }
	grep -q "^$name: " "$tmp/err" || { show; fail "'$what': the error does not start with '$name: '"; }
	grep -qF -- "$word" "$tmp/err" || { show; fail "'$what': the error does not say '$word'"; }
	echo "ok: '$what' -> $(cat "$tmp/err")"
}

# check_usage NUMERIC-OPTION: --help, --version, and the usage errors every tool shares.
check_usage() {
	local opt=$1
	run --help
	expect_ok "--help"
	head -n 1 "$tmp/out" | grep -q "^usage: $name " || fail "--help does not start with a usage line"
	grep -q -- "$opt" "$tmp/out" || fail "--help does not explain $opt"
	run --version
	expect_ok "--version"
	grep -q "^$name (libuffd [0-9.]*)$" "$tmp/out" || fail "--version printed: $(out)"
	expect_error 2 "'--no-such-option'" --no-such-option
	expect_error 2 "'-Z'" -Z
	expect_error 2 "'$opt' needs a value" "$opt"
	expect_error 2 "'abc' for $opt" "$opt" abc
	expect_error 2 "'-1' for $opt" "$opt" -1
	expect_error 2 "'99999999999999999999' for $opt" "$opt" 99999999999999999999
	expect_error 2 "'--help' takes no value" --help=1
	grep -q "usage: $name " "$tmp/err" || fail "a usage error does not repeat the usage line"
}

# As user nobody: a world-readable copy of the tool (and the library) in $tmp/bin, since the
# build tree may sit where nobody cannot go. Returns 1 when that cannot be arranged.
nobody_ready=
setup_nobody() {
	[[ -n $nobody_ready ]] && return "$nobody_ready"
	nobody_ready=1
	[[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1 || return 1
	chmod 755 "$tmp"
	mkdir -m 755 "$tmp/bin"
	install -m 755 "$tool" "$tmp/bin/$name"
	if [[ -n $lib ]]; then
		install -m 755 "$lib" "$tmp/bin/libuffd.so.0"
	fi
	as_nobody "$tmp/bin/$name" --version >/dev/null 2>&1 || return 1
	nobody_ready=0
}
as_nobody() {
	LD_LIBRARY_PATH=$tmp/bin setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
		--inh-caps=-all "$@"
}
run_nobody() { run_cmd env LD_LIBRARY_PATH="$tmp/bin" setpriv --reuid=nobody \
	--regid="$(id -g nobody)" --clear-groups --inh-caps=-all "$tmp/bin/$name" "$@"; }

# check_no_permission ARGS...: with --kernel-faults, a user without privilege may not open a
# userfaultfd (unless vm.unprivileged_userfaultfd=1): one line that says what to change.
check_no_permission() {
	local sysctl
	sysctl=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo 0)
	if [[ $sysctl != 0 ]]; then
		note "vm.unprivileged_userfaultfd=$sysctl: every user may trap kernel faults; no EPERM to see"
		return 0
	fi
	if [[ $(id -u) -eq 0 ]]; then
		setup_nobody || { note "cannot run as user nobody here: permission check not run"; return 0; }
		run_nobody --kernel-faults "$@"
	else
		run --kernel-faults "$@"
		if [[ $(rc) -eq 0 ]]; then
			note "this user may trap kernel faults (CAP_SYS_PTRACE?): no EPERM to see"
			return 0
		fi
	fi
	check_error 1 "cannot open a userfaultfd: Not permitted" "$name --kernel-faults (unprivileged)"
	grep -q "vm.unprivileged_userfaultfd" "$tmp/err" ||
		fail "the EPERM error does not say what to change"
}
