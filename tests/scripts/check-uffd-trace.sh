#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of uffd-trace: a traced program's stdout, stderr and exit status are those of an untraced
# run; its faults, unmaps, remaps and forks are printed (text and JSON) and summed up; a process
# that uffd-trace did not start is refused; bad usage is refused in one line.
# usage: check-uffd-trace.sh PATH-TO-uffd-trace
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -ne 1 ]]; then
	echo "usage: $0 PATH-TO-uffd-trace" >&2
	exit 2
fi
name=uffd-trace tool=$1 lib=
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"

[[ $(id -u) -eq 0 ]] || skip "uffd-trace's full checks need root (kernel faults, fork following)"
command -v python3 >/dev/null || skip "python3 is not installed"

# same DESCRIPTION CMD...: CMD run plainly and under uffd-trace -o, with the same stdout,
# stderr and exit status; the trace is left in $tmp/trace.
same() {
	local what=$1 rc_plain=0 rc_traced=0
	shift
	timeout -k 5 60 "$@" >"$tmp/plain.out" 2>"$tmp/plain.err" </dev/null || rc_plain=$?
	timeout -k 5 60 "$tool" -o "$tmp/trace" "${trace_opts[@]}" -- "$@" >"$tmp/traced.out" \
		2>"$tmp/traced.err" </dev/null || rc_traced=$?
	((rc_traced != 124 && rc_traced != 137)) || fail "$what: hung under uffd-trace"
	[[ $rc_plain -eq $rc_traced ]] || { cat "$tmp/traced.err" >&2; fail "$what: exit $rc_traced traced, $rc_plain plain"; }
	cmp -s "$tmp/plain.out" "$tmp/traced.out" || fail "$what: stdout differs under uffd-trace"
	cmp -s "$tmp/plain.err" "$tmp/traced.err" || { cat "$tmp/traced.err" >&2; fail "$what: stderr differs under uffd-trace"; }
	echo "ok: $what: same output and status ($rc_plain) traced and untraced"
}
total() { grep -Eo "^total: .*" "$tmp/trace" | grep -Eo "(^| )$1=[0-9]+" | sed 's/.*=//'; }

# A shell that writes to both streams and exits with a status of its own.
trace_opts=(--summary)
same "sh -c with status 3" sh -c 'echo out; echo err >&2; exit 3'
grep -qE '^ *[0-9]+\.[0-9]{6} [0-9]+ +attach +/' "$tmp/trace" || fail "no attach line in the trace"
# Killed by a signal: uffd-trace dies of the same one.
same "a program killed by SIGTERM" sh -c 'kill -TERM $$'
# Not found: status 127 and one line, as a shell says it.
expect_error 127 "cannot run '/nonexistent/program'" -- /nonexistent/program

# python3 building and freeing large lists: first touches of the heap and anonymous mappings,
# and the munmaps of what it gives back.
prog='a = [i for i in range(3000000)]
b = [str(i) for i in range(200000)]
del a
print(len(b), b[-1])'
same "python3 building and freeing lists" python3 -c "$prog"
f=$(total faults) u=$(total unmaps)
((f > 1000)) || fail "python3: only $f first-touch faults traced"
((u > 0)) || fail "python3: no unmap traced"
grep -qE ' fault +0x[0-9a-f]+ (read|write) +(\[heap\]|anon)$' "$tmp/trace" ||
	fail "no fault line naming its region"
lines=$(grep -cE ' fault ' "$tmp/trace")
[[ $lines -eq $f ]] || fail "python3: $lines fault lines but the total says $f"
echo "ok: python3: faults=$f unmaps=$u remaps=$(total remaps)"

# sort and gzip -9 of a 50 MB file: the same bytes out, and sort's buffers first-touched.
seq 1 2800000 | sed 's/$/ uffd-trace/' >"$tmp/big"
truncate -s 50000000 "$tmp/big"
same "sort of a 50 MB file" sort "$tmp/big"
(($(total faults) > 5000)) || fail "sort: only $(total faults) first-touch faults traced"
same "gzip -9 of a 50 MB file" gzip -9 -c "$tmp/big"
rm -f "$tmp/big"

# A pipeline that forks: the children's contexts come through FORK events, and the programs
# they exec call in themselves.
same "an sh -c pipeline" sh -c 'seq 1 20000 | sort -r | head -n 3; echo done'
(($(total forks) >= 1)) || fail "the pipeline: no fork traced"
(($(grep -c ' attach ' "$tmp/trace") >= 4)) || fail "the pipeline: fewer than 4 programs attached"

# --json: every line is a JSON object, and the summary is there too.
trace_opts=(--json --summary)
same "python3 with --json" python3 -c "$prog"
python3 - "$tmp/trace" <<'PY' || fail "--json wrote a line that is not a JSON object"
import json, sys
kinds = set()
for line in open(sys.argv[1]):
    o = json.loads(line)
    kinds.add(o.get("event") or o.get("summary"))
for k in ("attach", "fault", "unmap", "total"):
    assert k in kinds, k
PY
echo "ok: --json lines parse, with attach, fault, unmap and total"

# --order and --svg: one first touch per line, and a picture whose dots and bands are the
# faults and unmaps the summary counts.
trace_opts=(--summary --quiet --order "$tmp/order" --svg "$tmp/svg")
same "python3 with --order and --svg" python3 -c "$prog"
f=$(total faults)
[[ $(wc -l <"$tmp/order") -eq $f ]] || fail "--order has $(wc -l <"$tmp/order") lines, faults=$f"
grep -qvE '^(\[heap\]|anon|unregistered)@0x[0-9a-f]+ 0x[0-9a-f]+$' "$tmp/order" &&
	fail "--order has a line that is not 'REGION@START OFFSET'"
python3 - "$tmp/svg" "$f" "$(total unmaps)" "$(total removes)" <<'PY' || fail "--svg does not show what the summary counts"
import sys, xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
faults = [e for e in root.iter(ns + "circle") if e.get("class") == "fault"]
bands = [e.get("class") for e in root.iter(ns + "rect") if e.get("class") in ("unmap", "remove")]
assert len(faults) == int(sys.argv[2]), (len(faults), sys.argv[2])
assert bands.count("unmap") == int(sys.argv[3]), (bands.count("unmap"), sys.argv[3])
assert bands.count("remove") == int(sys.argv[4])
assert all(int(e.get("data-tid")) > 0 for e in faults)
PY
echo "ok: --order has $f lines, --svg $f fault dots and $(total unmaps) unmap bands"

# A process uffd-trace did not start is refused, however it found the socket.
trace_opts=(--summary)
rm -f "$tmp/sockpath"
# shellcheck disable=SC2016 # expanded by the traced shell
timeout -k 5 60 "$tool" -o "$tmp/trace" --summary -- \
	sh -c 'echo "$UFFD_TRACE_SOCKET" >"$1"; sleep 2' sh "$tmp/sockpath" &
tracer=$!
for _ in $(seq 100); do [[ -s $tmp/sockpath ]] && break; sleep 0.05; done
[[ -s $tmp/sockpath ]] || fail "the traced program did not see the socket path"
sock=$(cat "$tmp/sockpath")
[[ $(stat -c %a "$(dirname "$sock")") == 700 ]] || fail "the socket's directory is not 0700"
python3 - "$sock" <<'PY' || fail "a foreign process was not turned away"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(10)
assert s.recv(1) == b""
PY
wait "$tracer" || fail "uffd-trace with a refused connection exited $?"
(($(total refused) == 1)) || fail "refused=$(total refused), expected 1"
grep -q ' refused ' "$tmp/trace" || fail "the refusal is not in the trace"
echo "ok: a foreign connection is refused and reported"

# Usage.
run --help
expect_ok "--help"
head -n 1 "$tmp/out" | grep -q "^usage: $name " || fail "--help does not start with a usage line"
run --version
expect_ok "--version"
grep -q "^$name (libuffd [0-9.]*)$" "$tmp/out" || fail "--version printed: $(out)"
expect_error 2 "no program to run"
expect_error 2 "'--no-such-option'" --no-such-option -- true
expect_error 2 "'-o' needs a value" -o
expect_error 1 "cannot open '/nonexistent/dir/f'" -o /nonexistent/dir/f -- true
echo "uffd-trace checks passed"
