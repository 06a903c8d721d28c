#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of uffd-trace: a traced program's stdout, stderr and exit status are those of an untraced
# run; its faults, unmaps, remaps and forks are printed (text and JSON) and summed up; a process
# that uffd-trace did not start is refused; bad usage is refused in one line.
# usage: check-uffd-trace.sh PATH-TO-uffd-trace PATH-TO-trace_target [PATH-TO-libuffd.so]
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail
if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 PATH-TO-uffd-trace PATH-TO-trace_target [PATH-TO-libuffd.so]" >&2
	exit 2
fi
# shellcheck disable=SC2034 # lib is read by check-lib.sh (setup_nobody)
name=uffd-trace tool=$1 target=$2 lib=${3:-}
# shellcheck source=tests/scripts/check-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/check-lib.sh"

[[ $(id -u) -eq 0 ]] || skip "uffd-trace's full checks need root (kernel faults, fork following)"
command -v python3 >/dev/null || skip "python3 is not installed"
command -v strace >/dev/null || skip "strace (the independent witness) is not installed"

# same DESCRIPTION CMD...: CMD run plainly and under uffd-trace -o, with the same stdout,
# stderr and exit status; the trace is left in $tmp/trace.
same() {
	local what=$1 rc_plain=0 rc_traced=0
	shift
	timeout -k 5 60 "$@" >"$tmp/plain.out" 2>"$tmp/plain.err" </dev/null || rc_plain=$?
	timeout -k 5 60 "$tool" -o "$tmp/trace" "${trace_opts[@]}" -- "$@" >"$tmp/traced.out" \
		2>"$tmp/traced.err" </dev/null || rc_traced=$?
	((rc_traced != 124 && rc_traced != 137)) || fail "$what: hung under uffd-trace"
	if [[ $rc_plain -ne $rc_traced ]]; then
		echo "--- stderr untraced:" >&2
		cat "$tmp/plain.err" >&2
		echo "--- stderr traced:" >&2
		cat "$tmp/traced.err" >&2
		fail "$what: exit $rc_traced traced, $rc_plain plain"
	fi
	cmp -s "$tmp/plain.out" "$tmp/traced.out" || fail "$what: stdout differs under uffd-trace"
	cmp -s "$tmp/plain.err" "$tmp/traced.err" || { cat "$tmp/traced.err" >&2; fail "$what: stderr differs under uffd-trace"; }
	echo "ok: $what: same output and status ($rc_plain) traced and untraced"
}
# witness DESCRIPTION CMD...: CMD under uffd-trace --json, all of it under strace -f -ttt (the
# independent witness of every munmap, mremap, madvise, brk and mmap call, in the same run, so
# that addresses agree). Sound comparisons, since uffd-trace registers only private anonymous
# memory, and only from its attach and each re-scan on (a mapping made and unmapped between two
# scans is never registered, so traced <= witnessed, and equality is not expected):
#  (a) every traced unmap, remap and remove is a call of the witness in the same process with
#      the same range (unmap: munmap, brk shrink, mmap MAP_FIXED, mremap shrink or move, whose
#      kernel sends REMAP and then UNMAP of the old place; remove: one per VMA of a madvise
#      DONTNEED/FREE/REMOVE), made before uffd-trace read it, no call claimed twice;
#  (b) nothing lost: a page with a traced fault was registered then, and stays registered until
#      the first call after the fault that ends or empties it; that call must be in the trace.
#      Faults are timed before they are answered, while the faulting thread waits, so its own
#      later calls are later in strace's clock too.
# Not run on trace_target: with 4 threads reusing the same addresses within milliseconds, which
# call an event belongs to cannot be told from timestamps alone (its own log check is exact).
# The program's output and status are those of an untraced run.
witness() {
	local what=$1 rc_plain=0 rc_traced=0
	shift
	# Sanitizer runtimes use ptrace themselves (LeakSanitizer stops the world with it) and fail
	# under strace: the witness runs in the plain build's stage only.
	if [[ -n ${UFFD_TRACE_SANITIZED:-} ]]; then
		echo "note: $what: strace witness not run in a sanitizer build"
		checked=1
		return 0
	fi
	timeout -k 5 120 "$@" >"$tmp/plain.out" 2>"$tmp/plain.err" </dev/null || rc_plain=$?
	timeout -k 5 120 strace -f -qq -ttt --seccomp-bpf -o "$tmp/strace" \
		-e trace=munmap,mremap,madvise,brk,mmap,execve,clone,clone3,fork,vfork \
		"$tool" --json -o "$tmp/trace" -- "$@" >"$tmp/traced.out" 2>"$tmp/traced.err" \
		</dev/null || rc_traced=$?
	((rc_traced != 124 && rc_traced != 137)) || fail "$what: hung under strace and uffd-trace"
	[[ $rc_plain -eq $rc_traced ]] || fail "$what: exit $rc_traced traced, $rc_plain plain"
	cmp -s "$tmp/plain.out" "$tmp/traced.out" || fail "$what: stdout differs under the witness"
	python3 - "$tmp/strace" "$tmp/trace" >"$tmp/witness" <<'PY' || fail "$what: the trace and strace disagree"
import json, re, sys
from collections import defaultdict

PAGE = 4096
def up(x): return (x + PAGE - 1) & ~(PAGE - 1)
strace_path, trace_path = sys.argv[1], sys.argv[2]

# ---- the witness: strace -f -ttt, one process's calls in the order they were made ----
line_re = re.compile(r'^(\d+) +(\d+\.\d+) (\w+)\((.*)\) += (-?\w+)')
tgid, pending, calls = {}, {}, []
def num(x): return int(x, 0)
for raw in open(strace_path):
    raw = raw.rstrip('\n')
    m = re.match(r'^(\d+) +(\d+\.\d+) (.*)$', raw)
    if not m:
        continue
    tid, stamp, rest = int(m[1]), float(m[2]), m[3]
    if rest.endswith('<unfinished ...>'):
        pending[tid] = (stamp, rest[:-len('<unfinished ...>')].rstrip())
        continue
    r = re.match(r'^<\.\.\. \w+ resumed>(.*)$', rest)
    if r:
        if tid not in pending:
            continue
        stamp, head = pending.pop(tid)
        rest = head + r[1]
    m = re.match(r'^(\w+)\((.*)\) += (-?\w+)', rest)
    if not m:
        continue
    name, args, ret = m[1], m[2], m[3]
    t = tgid.setdefault(tid, tid)
    if name in ('clone', 'clone3', 'fork', 'vfork') and ret.isdigit():
        child = int(ret)
        tgid[child] = t if 'CLONE_THREAD' in args else child
        continue
    if ret.startswith('-'):
        continue
    calls.append((stamp, t, name, [a.strip() for a in args.split(',')], num(ret) if ret != '?' else None))

# Per process, in order: what each call did to memory that uffd-trace may have registered.
#   ('unmap', start, end)   munmap, brk shrink, mremap shrink or FIXED target, mmap MAP_FIXED
#   ('remap', from, to)     mremap that moved
#   ('remove', start, end)  madvise DONTNEED/FREE/REMOVE/DONTNEED_LOCKED
#   ('gone',)               execve: a new address space
acts = defaultdict(list)   # tgid -> [(stamp, kind, a, b, id)]
brk = {}
for i, (stamp, t, name, a, ret) in enumerate(calls):
    L = acts[t]
    if name == 'execve':
        L.append((stamp, 'gone', 0, 0, i)); brk.pop(t, None)
    elif name == 'munmap':
        s = num(a[0]); L.append((stamp, 'unmap', s, s + up(num(a[1])), i))
    elif name == 'brk':
        old = brk.get(t)
        if old is not None and ret < old:
            L.append((stamp, 'unmap', up(ret), up(old), i))
        brk[t] = ret
    elif name == 'mmap' and 'MAP_FIXED' in a[3] and 'MAP_FIXED_NOREPLACE' not in a[3]:
        s = num(a[0]); L.append((stamp, 'unmap', s, s + up(num(a[1])), i))
    elif name == 'mremap':
        old, oldlen, newlen = num(a[0]), up(num(a[1])), up(num(a[2]))
        if ret != old:
            if 'MREMAP_FIXED' in a[3]:
                L.append((stamp, 'unmap', ret, ret + newlen, i))
            # The kernel sends REMAP, then UNMAP for the old place (move_vma() unmaps it).
            L.append((stamp, 'remap', old, old + oldlen, i))
            L.append((stamp, 'unmap', old, old + oldlen, i))
        elif newlen < oldlen:
            L.append((stamp, 'unmap', old + newlen, old + oldlen, i))
    elif name == 'madvise' and re.fullmatch(r'MADV_(DONTNEED|FREE|REMOVE|DONTNEED_LOCKED)', a[2]):
        s = num(a[0]); L.append((stamp, 'remove', s, s + up(num(a[1])), i))

# ---- the trace ----
t0 = None
ev = []
ctx_pid = {}
for line in open(trace_path):
    o = json.loads(line)
    if o.get('summary') == 'process' and o['pid'] > 0:
        ctx_pid[o['ctx']] = o['pid']
    if 'event' not in o:
        continue
    if o['event'] == 'attach':
        t0 = o['t0_unix']
    if o.get('pid'):
        ctx_pid[o['ctx']] = o['pid']
    ev.append(o)
assert t0 is not None, 'no attach line with t0_unix'

# (a) Every traced unmap, remap and remove is a call the witness saw, in the same process, with
# the same range; no call is claimed twice (a remove may come once per VMA of one madvise).
claimed = defaultdict(list)   # call id -> ranges claimed
bad = []
last = {}   # ctx -> stamp of the call its previous event was matched with
SLACK = 0.005
def claim(e, kind, s, end):
    # The caller waits until uffd-trace has read the event (which is before it is timed), so its
    # call is before the event's time. A context's events come in the order the kernel made
    # them, so its calls are in order too, give or take threads that entered their calls in
    # another order (SLACK): the first call that fits, unclaimed, after the previous event's.
    pid = ctx_pid.get(e['ctx'])
    when = t0 + e['time']
    low = last.get(e['ctx'], 0) - SLACK
    cands = [x for p in ([pid] if pid else list(acts)) for x in acts[p]
             if x[1] == kind and low <= x[0] < when]
    for (stamp, k, a, b, i) in sorted(cands):
        if kind == 'remove':
            ok = a <= s and end <= b and all(end <= x or s >= y for x, y in claimed[i, kind])
        elif kind == 'remap':
            ok = (a, b) == (s, end) and calls[i][4] == e['to'] and not claimed[i, kind]
        else:
            ok = (a, b) == (s, end) and not claimed[i, kind]
        if ok:
            claimed[i, kind].append((s, end))
            last[e['ctx']] = max(last.get(e['ctx'], 0), stamp)
            return
    bad.append(e)
n = {'unmap': 0, 'remap': 0, 'remove': 0, 'fault': 0}
for e in ev:
    k = e['event']
    if k in ('unmap', 'remove'):
        claim(e, k, int(e['start'], 16), int(e['end'], 16)); n[k] += 1
    elif k == 'remap':
        e['to'] = int(e['to'], 16)
        claim(e, k, int(e['from'], 16), int(e['from'], 16) + e['len']); n[k] += 1
    elif k == 'fault':
        n[k] += 1
assert not bad, 'traced events no call of the witness explains: %s' % bad[:5]

# (b) Nothing lost: a page that faulted was registered, and stays so until the first call after
# the fault that ends or empties it, which must then be in the trace.
lost, required = [], set()
for e in ev:
    if e['event'] != 'fault' or not e.get('pid'):
        continue
    x, when = int(e['addr'], 16), t0 + e['time']
    for (stamp, k, a, b, i) in acts[e['pid']]:
        if stamp <= when:
            continue
        if k == 'gone':
            break
        if a <= x < b:
            if k == 'remap' and not claimed[i, k]:
                lost.append((e, calls[i]))
            required.add(i)
            k = 'unmap' if k == 'remap' else k   # its UNMAP of the old place follows
            if not any(s <= x < t for s, t in claimed[i, k]):
                lost.append((e, calls[i]))
            break
assert not lost, 'the witness saw calls on faulted pages that the trace lacks: %s' % lost[:5]
wit = {k: sum(1 for L in acts.values() for x in L if x[1] == k) for k in ('unmap', 'remap', 'remove')}
print('faults=%d unmaps=%d remaps=%d removes=%d traced; the witness saw %d unmaps, %d remaps, '
      '%d removes; checked=%d calls on faulted pages' % (n['fault'], n['unmap'], n['remap'],
      n['remove'], wit['unmap'], wit['remap'], wit['remove'], len(required)))
PY
	echo "ok: $what agrees with strace: $(cat "$tmp/witness")"
	checked=$(grep -Eo 'checked=[0-9]+' "$tmp/witness" | sed 's/.*=//')
}
total() { grep -Eo "^total: .*" "$tmp/trace" | grep -Eo "(^| )$1=[0-9]+" | sed 's/.*=//'; }

# check_svg FILE WHAT [one-per-cell]: FILE is a valid SVG of the trace ($tmp/trace, with
# --summary) that a person can read: a legend naming every kind of mark; a time axis in seconds
# with labelled ticks at 0 and 1, 2 or 5 times a power of ten apart; each region's addresses
# and name, with a break between regions; marks that count exactly the summary's faults,
# unmaps, remaps and removes (with one-per-cell: a mark per fault); no two labels overlapping;
# under 1,000,000 bytes.
check_svg() {
	python3 - "$1" "$(total faults)" "$(total unmaps)" "$(total remaps)" "$(total removes)" \
		"${3:-}" >"$tmp/svgcheck" <<'PY' || { cat "$tmp/svgcheck" >&2; fail "--svg of $2: not a readable picture of the trace"; }
import math, os, re, sys, xml.etree.ElementTree as ET
path = sys.argv[1]
want = dict(zip(('fault', 'unmap', 'remap', 'remove'), map(int, sys.argv[2:6])))
size = os.path.getsize(path)
assert size < 1_000_000, ('too large', size)
ns = '{http://www.w3.org/2000/svg}'
root = ET.parse(path).getroot()
assert root.tag == ns + 'svg', root.tag
def by_id(i):
    g = [e for e in root.iter() if e.get('id') == i]
    assert len(g) == 1, ('no single element', i)
    return g[0]
def texts(e):
    return [''.join(t.itertext()) for t in e.iter(ns + 'text')]
legend = ' '.join(texts(by_id('legend')))
for word in ('faults', 'per cell', 'unmap', 'remove', 'remap', 'break'):
    assert word in legend, ('the legend lacks', word, legend)
# The marks add up to the summary's counts, and there are not too many of them.
got, marks, nfault = dict.fromkeys(want, 0), 0, 0
for e in by_id('marks'):
    kind = e.get('class').split()[0]
    got[kind] += int(e.get('data-n'))
    marks += 1
    nfault += kind == 'fault'
assert got == want, ('marks', got, 'summary', want)
assert marks <= 6500, marks
if sys.argv[6] == 'one-per-cell':
    assert nfault == want['fault'], ('faults of a small trace share cells', nfault, want['fault'])
# The time axis: seconds, labelled ticks at round values from 0.
axis = by_id('time-axis')
ticks = [float(t) for t in texts(axis) if re.fullmatch(r'[0-9]+(\.[0-9]+)?', t)]
assert len(ticks) >= 3 and ticks[0] == 0, ticks
step = ticks[1] - ticks[0]
assert all(abs(b - a - step) < 1e-9 for a, b in zip(ticks, ticks[1:])), ticks
mant = step / 10 ** math.floor(math.log10(step) + 1e-12)
assert any(abs(mant - m) < 1e-6 for m in (1, 2, 5)), ('not a 1-2-5 step', step)
assert any('(s)' in t for t in texts(axis)), 'the time axis does not say seconds'
# The address axis: every region with its two addresses and name, breaks between them.
addr = by_id('address-axis')
hexes = [t for t in texts(addr) if re.fullmatch(r'0x[0-9a-f]+', t)]
names = [''.join(e.itertext()) for e in addr.iter(ns + 'text') if e.get('class') == 'region']
assert names and len(hexes) == 2 * len(names), (hexes, names)
assert all(re.search(r'anon|\[heap\]|regions|unregistered', n) for n in names), names
assert sum(1 for e in addr.iter() if e.get('class') == 'break') == len(names) - 1
# No two labels overlap, nor leave the picture: each text's box from its position, font size
# and anchor (a character 0.62 of the font size wide, generous for sans-serif and monospace).
boxes = []
def walk(e, dx, dy):
    m = re.match(r'translate\(([-0-9.]+),([-0-9.]+)\)', e.get('transform', ''))
    if m:
        dx, dy = dx + float(m[1]), dy + float(m[2])
    if e.tag == ns + 'text':
        fs, s = float(e.get('font-size')), ''.join(e.itertext())
        w = 0.62 * fs * len(s)
        x = dx + float(e.get('x', 0)) - {'middle': w / 2, 'end': w}.get(e.get('text-anchor'), 0)
        y = dy + float(e.get('y', 0))
        boxes.append((x, y - 0.75 * fs, x + w, y + 0.2 * fs, s))
    for c in e:
        walk(c, dx, dy)
walk(root, 0, 0)
W, H = float(root.get('width')), float(root.get('height'))
for i, a in enumerate(boxes):
    assert a[0] >= -1 and a[1] >= -1 and a[2] <= W + 1 and a[3] <= H + 1, ('outside', a, W, H)
    for b in boxes[i + 1:]:
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], ('overlap', a, b)
print('%d bytes, %d marks for %s, %d regions, ticks every %g s, %d labels apart' %
      (size, marks, want, len(names), step, len(boxes)))
PY
	echo "ok: --svg of $2: $(cat "$tmp/svgcheck")"
}

# check_target LOG faults|events: the trace ($tmp/trace, JSON) of trace_target, which wrote LOG
# and what a tracer should count on stdout ($tmp/traced.out), holds exactly its faults (by the
# thread that touched the page; none with "events", a registration for events only), removes,
# remaps and unmaps, and nothing else at those addresses.
check_target() {
	python3 - "$1" "$tmp/trace" "$tmp/traced.out" "$2" <<'PY' || fail "trace_target: the trace is not what it did"
import collections, json, os, re, sys
PAGE, EMPTIED = 4096, 16
first_touches = sys.argv[4] == 'faults'   # else registered for events only: no fault at all
want, spans = collections.Counter(), []
for line in open(sys.argv[1]):
    k, tid, *v = line.split()
    tid, v = int(tid), [int(x, 16) for x in v]
    if k == 'map':
        spans.append((v[0], v[1]))
        if first_touches:
            want.update(('fault', tid, a) for a in range(v[0], v[1], PAGE))
    elif k == 'remove':
        want[('remove', v[0], v[1])] += 1
        if first_touches:  # written again
            want.update(('fault', tid, a) for a in range(v[0], v[1], PAGE))
    elif k == 'remap':
        spans.append((v[1], v[1] + v[2]))
        want[('remap', v[0], v[1], v[2])] += 1
        want[('unmap', v[0], v[0] + v[2])] += 1  # the kernel's UNMAP of the old place
    elif k == 'unmap':
        want[('unmap', v[0], v[1])] += 1
def ours(a, b):
    return any(a < e and s < b for s, e in spans)
got, total = collections.Counter(), None
for line in open(sys.argv[2]):
    o = json.loads(line)
    k = o.get('event')
    if k == 'fault' and ours(int(o['addr'], 16), int(o['addr'], 16) + 1):
        got[('fault', o['tid'], int(o['addr'], 16))] += 1
    elif k in ('remove', 'unmap') and ours(int(o['start'], 16), int(o['end'], 16)):
        got[(k, int(o['start'], 16), int(o['end'], 16))] += 1
    elif k == 'remap' and ours(int(o['from'], 16), int(o['from'], 16) + o['len']):
        got[('remap', int(o['from'], 16), int(o['to'], 16), o['len'])] += 1
missing, extra = want - got, got - want
# In a sanitizer build the runtime's allocator maps and unmaps memory of its own (14 pages at a
# time) at places trace_target used before or will use: its events overlap the logged spans
# without being trace_target's. There, only an extra event with a logged range is an error
# (a duplicate); anything missing is one everywhere.
if os.environ.get('UFFD_TRACE_SANITIZED'):
    extra = collections.Counter({k: c for k, c in extra.items() if k in want})
    for k in list(got):
        if k not in want:
            del got[k]
assert not missing and not extra, ('missing', list(missing)[:5], 'extra', list(extra)[:5])
said = dict(re.findall(r'(\w+)=(\d+)', open(sys.argv[3]).read()))
if not first_touches:
    said['faults'] = '0'
for k in ('fault', 'unmap', 'remap', 'remove'):
    n = sum(c for key, c in got.items() if key[0] == k)
    assert n == int(said[k + 's']), (k, n, said)
print('ok: trace_target: exactly its', ', '.join('%ss=%s' % (k, said[k + 's'])
      for k in ('fault', 'unmap', 'remap', 'remove')), 'traced, by the threads that made them')
# Peak registered bytes: each mapping is registered once, in a region of its own, and its range
# moves with its pages (never counted at both places, nor for the place it moved to), so its
# region's peak is exactly its size; a region at a place where a mapping of it was or moved to
# peaks at 0 or that size. A process's peak lies between its largest region's and the sum of its
# regions' peaks; the total's (all processes at once) between the largest process's and the sum
# of theirs.
summ = [o for o in map(json.loads, open(sys.argv[2])) if 'summary' in o]
sizes = collections.defaultdict(set)
maps = 0
for line in open(sys.argv[1]):
    k, tid, *v = line.split()
    if k == 'map':
        sizes[int(v[0], 16)].add(int(v[1], 16) - int(v[0], 16))
        maps += 1
    elif k == 'remap':
        sizes[int(v[1], 16)].add(int(v[2], 16))
mine = [o for o in summ if o['summary'] == 'region' and int(o['start'], 16) in sizes]
bad = [o for o in mine if o['peak_registered'] not in sizes[int(o['start'], 16)] | {0}]
full = [o for o in mine if o['peak_registered']]
assert not bad and len(full) >= maps, ('mapping peaks', len(full), maps, bad[:3])
procs = [o for o in summ if o['summary'] == 'process']
total = [o for o in summ if o['summary'] == 'total'][0]['peak_registered']
for p in procs:
    peaks = [o['peak_registered'] for o in summ if o['summary'] == 'region' and o['ctx'] == p['ctx']]
    assert max(peaks) <= p['peak_registered'] <= sum(peaks), ('process peak', p, max(peaks), sum(peaks))
assert max(p['peak_registered'] for p in procs) <= total <= sum(p['peak_registered'] for p in procs)
print('ok: trace_target: each of its %d mappings peaked at exactly %s bytes registered; process %s,'
      ' total %d' % (maps, '/'.join(str(x) for x in sorted(set().union(*sizes.values()))),
      ', '.join(str(p['peak_registered']) for p in procs), total))
PY
}

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
(($(total peak_registered) >= 24000000)) || fail "python3: a peak of $(total peak_registered) bytes registered, for a list of 3 million"
grep -qE '^  ctx 0 +pid [0-9]+ +(\[heap\]|anon) +0x[0-9a-f]+ +faults=[0-9]+ unmaps=[0-9]+ remaps=[0-9]+ removes=[0-9]+ peak_registered=[1-9][0-9]*$' "$tmp/trace" ||
	fail "python3: no summary line of a region with its peak registered bytes"
echo "ok: python3: faults=$f unmaps=$u remaps=$(total remaps) peak_registered=$(total peak_registered)"
witness "python3 building and freeing lists" python3 -c "$prog"
((checked > 0)) || fail "python3: no unmap of a faulted page to check against strace"

# sort and gzip -9 of a 50 MB file: the same bytes out, and sort's buffers first-touched.
seq 1 2800000 | sed 's/$/ uffd-trace/' >"$tmp/big"
truncate -s 50000000 "$tmp/big"
same "sort of a 50 MB file" sort "$tmp/big"
(($(total faults) > 5000)) || fail "sort: only $(total faults) first-touch faults traced"
same "gzip -9 of a 50 MB file" gzip -9 -c "$tmp/big"
witness "sort of a 50 MB file" sort "$tmp/big"
((checked > 0)) || fail "sort: no unmap of a faulted page to check against strace"
witness "gzip -9 of a 50 MB file" gzip -9 -c "$tmp/big"

# A pipeline that forks: the children's contexts come through FORK events, and the programs
# they exec call in themselves.
same "an sh -c pipeline" sh -c 'seq 1 20000 | sort -r | head -n 3; echo done'
(($(total forks) >= 1)) || fail "the pipeline: no fork traced"
(($(grep -c ' attach ' "$tmp/trace") >= 4)) || fail "the pipeline: fewer than 4 programs attached"
witness "an sh -c pipeline" sh -c 'seq 1 20000 | sort -r | head -n 3; echo done'

# A multi-threaded C program with a log of what it did: exactly its faults (by the thread that
# touched the page), removes, remaps and unmaps are traced, and nothing else at those addresses.
trace_opts=(--json --summary)
# In a sanitizer build trace_target carries the ASan runtime, which insists on coming first in
# the library list, before uffd-trace's preload library.
if [[ -n ${UFFD_TRACE_SANITIZED:-} ]]; then
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
fi
same "trace_target (4 threads)" "$target" "$tmp/log"
check_target "$tmp/log" faults

# Heavy forking: 2 threads fork 300 children between them, each of which first-touches the 4
# pages of its own slot of memory registered before, empties them and exits. Every child comes
# through a FORK event, and exactly its faults (by itself) and its remove are traced in its own
# context, which is closed when it exits; nothing is left blocked.
stress=$(dirname "$target")/trace_stress
[[ -x $stress ]] || fail "no trace_stress next to $target"
same "trace_stress forking 300 children from 2 threads" "$stress" fork 300 "$tmp/flog"
python3 - "$tmp/flog" "$tmp/trace" <<'PY' || fail "trace_stress fork: the trace is not what it did"
import collections, json, sys
PAGE = 4096
kids = {}
for line in open(sys.argv[1]):
    k, pid, a, b = line.split()
    kids[int(pid)] = (int(a, 16), int(b, 16))
assert len(kids) == 300, len(kids)
ev = [json.loads(l) for l in open(sys.argv[2])]
forks = [e for e in ev if e.get('event') == 'fork']
attach = [e for e in ev if e.get('event') == 'attach']
assert len(attach) == 1 and len(forks) == 300, (len(attach), len(forks))
parent = attach[0]['ctx']
assert all(e['ctx'] == parent for e in forks)
child_ctx = {e['child_ctx'] for e in forks}
# The slots are one mapping; a child faults elsewhere too (its stack, a sanitizer's shadow).
lo, hi = min(a for a, b in kids.values()), max(b for a, b in kids.values())
faults, removes, exits, ctx_of = collections.defaultdict(set), collections.Counter(), set(), {}
for e in ev:
    k = e.get('event')
    if k == 'fault' and lo <= int(e['addr'], 16) < hi:
        faults[e['pid']].add((e['tid'], int(e['addr'], 16)))
        ctx_of[e['pid']] = e['ctx']
    elif k == 'remove':
        removes[(e['pid'], int(e['start'], 16), int(e['end'], 16))] += 1
    elif k == 'exit':
        exits.add(e['ctx'])
for pid, (a, b) in kids.items():
    want = {(pid, x) for x in range(a, b, PAGE)}
    assert faults.get(pid) == want, ('faults of child', pid, sorted(faults.get(pid, ())), sorted(want))
    assert ctx_of[pid] in child_ctx, ('child', pid, 'faulted in a context no FORK made')
    assert removes[(pid, a, b)] == 1, ('remove of child', pid)
    assert ctx_of[pid] in exits, ('no exit for child', pid)
stray = set(faults) - set(kids)
assert not stray, ('faults in the slots not by a child', stray)
total = [e for e in ev if e.get('summary') == 'total'][0]
assert total['contexts'] == 301 and total['forks'] == 300, total
print('ok: trace_stress: 300 fork children, each with its 4 faults, 1 remove and an exit in its '
      'own context')
PY

# A shell forking 200 short children (subshells, since a plain command may be started with
# vfork, which makes no address space) that exec a program: each fork child comes through a FORK
# event and each exec'd program calls in itself; every address space is seen gone.
trace_opts=(--summary)
# shellcheck disable=SC2016 # expanded by the traced shell
same "sh -c forking 200 children" sh -c 'i=0; while [ $i -lt 200 ]; do (/bin/true); i=$((i + 1)); done; echo done'
(($(total forks) == 200)) || fail "sh forking: $(total forks) forks traced, 200 made"
(($(grep -c ' attach ' "$tmp/trace") == 201)) || fail "sh forking: $(grep -c ' attach ' "$tmp/trace") programs attached, 201 ran"
(($(total contexts) == 401)) || fail "sh forking: $(total contexts) contexts, 401 expected"
(($(grep -c ' exit ' "$tmp/trace") == 401)) || fail "sh forking: $(grep -c ' exit ' "$tmp/trace") address spaces seen gone, 401 expected"
echo "ok: sh forking: 200 forks, 201 programs attached, every context seen gone"

# now_ms: a monotonic clock in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# A program killed by SIGKILL while its 4 threads fault: uffd-trace ends at once, dying of the
# same signal, with its summary written, and leaves no process behind.
rm -f "$tmp/pid"
t0=$(now_ms)
timeout -k 5 30 "$tool" -o "$tmp/trace" --summary -- "$stress" spin "$tmp/pid" 0 \
	>"$tmp/traced.out" 2>"$tmp/traced.err" </dev/null &
tracer=$!
for _ in $(seq 200); do [[ -s $tmp/pid ]] && break; sleep 0.05; done
[[ -s $tmp/pid ]] || { kill -KILL "$tracer"; cat "$tmp/traced.err" >&2; fail "trace_stress spin did not start faulting under uffd-trace"; }
pid=$(cat "$tmp/pid")
sleep 0.3
kill -KILL "$pid"
t1=$(now_ms)
rc=0
wait "$tracer" || rc=$?
t2=$(now_ms)
((t2 - t0 < 25000)) || fail "a killed program: uffd-trace did not end (killed by timeout)"
((rc == 137)) || { cat "$tmp/traced.err" >&2; fail "a killed program: uffd-trace exited $rc, not 137 (SIGKILL)"; }
((t2 - t1 < 5000)) || fail "a killed program: uffd-trace took $((t2 - t1)) ms to end"
! kill -0 "$pid" 2>/dev/null || fail "a killed program: process $pid is still there"
[[ -z $(ps -o pid= --ppid "$pid") ]] || fail "a killed program: it left children behind"
(($(total faults) >= 256)) || fail "a killed program: only $(total faults) faults traced before it was killed"
echo "ok: a program killed by SIGKILL while faulting: uffd-trace ended in $((t2 - t1)) ms with status $rc, $(total faults) faults traced, nothing left behind"

# uffd-trace itself killed while the program's threads fault: the userfaultfd goes with it, and
# the program runs on untraced to its normal end, with its own output.
rm -f "$tmp/pid"
timeout -k 5 30 "$tool" -o "$tmp/trace" -- "$stress" spin "$tmp/pid" 1500 \
	>"$tmp/spin.out" 2>"$tmp/spin.err" </dev/null &
tracer=$!
for _ in $(seq 200); do [[ -s $tmp/pid ]] && break; sleep 0.05; done
[[ -s $tmp/pid ]] || { kill -KILL "$tracer"; cat "$tmp/spin.err" >&2; fail "trace_stress spin did not start faulting under uffd-trace"; }
pid=$(cat "$tmp/pid")
monitor=$(ps -o ppid= -p "$pid" | tr -d ' ')
[[ $(cat "/proc/$monitor/comm") == uffd-trace ]] || fail "the parent of trace_stress is not uffd-trace"
kill -KILL "$monitor"
wait "$tracer" || true
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$pid" 2>/dev/null || { kill -KILL "$pid"; fail "the program did not end once uffd-trace was killed"; }
[[ $(cat "$tmp/spin.out") == "spin: threads=4 ok" && ! -s $tmp/spin.err ]] ||
	{ cat "$tmp/spin.err" >&2; fail "the program did not end normally once uffd-trace was killed"; }
echo "ok: uffd-trace killed while its program faults: the program ran on to its normal end"

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

# --order and --svg: one first touch per line, and a picture whose marks count what the
# summary counts.
trace_opts=(--summary --quiet --order "$tmp/order" --svg "$tmp/svg")
same "python3 with --order and --svg" python3 -c "$prog"
f=$(total faults)
# The order format (struct uffd_order): a header, then runs whose pages add up to the faults,
# each 'OFFSET LENGTH REGION', page-aligned, with consecutive pages of a region merged.
[[ $(head -n 1 "$tmp/order") == "uffd-order 1" ]] || fail "--order has no 'uffd-order 1' header"
page=$(getconf PAGESIZE)
runs=$(grep -vE '^(#|$)' "$tmp/order" | tail -n +2)
grep -qvE '^0x[0-9a-f]+ 0x[0-9a-f]+ ((\[heap\]|anon)@0x[0-9a-f]+|unregistered)$' <<<"$runs" &&
	fail "--order has a line that is not 'OFFSET LENGTH REGION': $(grep -vE '^0x[0-9a-f]+ 0x' <<<"$runs" | head -n 1)"
pages=0 prev=
while read -r off len region; do
	((off % page == 0 && len % page == 0 && len > 0)) || fail "--order run '$off $len' is not page-aligned"
	[[ $prev != "$region $((off))" ]] || fail "--order did not merge the run at $off in $region"
	pages=$((pages + len / page)) prev="$region $((off + len))"
done <<<"$runs"
[[ $pages -eq $f ]] || fail "--order runs hold $pages pages, faults=$f"
[[ $(wc -l <<<"$runs") -lt $f ]] || note "--order merged no runs ($f faults)"
check_svg "$tmp/svg" "python3"
echo "ok: --order runs hold $f pages"

# --svg of about 10 events (2 fork children: 3 address spaces) and of over 100,000 (4 threads
# faulting and emptying their pages 400 times): readable and bounded either way.
trace_opts=(--summary --quiet --svg "$tmp/svg")
same "trace_stress forking 2 children, with --svg" "$stress" fork 2 "$tmp/flog"
# In a sanitizer build the runtime's own allocator faults too (thousands of pages): the small
# picture is checked in the plain build's stage only; the large one below everywhere.
if [[ -z ${UFFD_TRACE_SANITIZED:-} ]]; then
	(($(total faults) + $(total removes) <= 30)) || fail "a small trace: $(total faults) faults"
	check_svg "$tmp/svg" "a small trace" one-per-cell
else
	check_svg "$tmp/svg" "a small trace (sanitizer build: the runtime's faults too)"
fi
same "trace_stress faulting 100k pages, with --svg" "$stress" rounds 400
(($(total faults) >= 102400)) || fail "trace_stress rounds: $(total faults) faults traced"
check_svg "$tmp/svg" "a 100k-event trace"

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

# Without privilege (user nobody, from world-readable copies): two lines at the start say that
# only user-mode faults could be trapped, so first touches are not traced (unless --user-faults),
# and that fork children are not followed. The program's stdout, stderr (after those two lines)
# and status are unchanged, also for sort and gzip, which read() into memory they have not
# touched yet (trapped by a user-mode-only userfaultfd, that read would fail with EFAULT): the
# memory is registered for its events only. Its unmaps, remaps and removes are still traced, and
# its exec'd programs too.
setup_nobody || skip "cannot run a copy of uffd-trace as user nobody"
install -m 755 "$(dirname "$tool")/libuffd-trace-preload.so" "$target" "$tmp/bin/"
mkdir -m 777 "$tmp/nobody"
nobody_opts=(--summary)
same_nobody() {
	local what=$1 rc_plain=0 rc_traced=0
	shift
	timeout -k 5 60 env LD_LIBRARY_PATH="$tmp/bin" setpriv --reuid=nobody \
		--regid="$(id -g nobody)" --clear-groups --inh-caps=-all "$@" >"$tmp/plain.out" \
		2>"$tmp/plain.err" </dev/null || rc_plain=$?
	rm -f "$tmp/nobody/trace"
	timeout -k 5 60 env LD_LIBRARY_PATH="$tmp/bin" setpriv --reuid=nobody \
		--regid="$(id -g nobody)" --clear-groups --inh-caps=-all "$tmp/bin/$name" \
		-o "$tmp/nobody/trace" "${nobody_opts[@]}" -- "$@" >"$tmp/traced.out" \
		2>"$tmp/traced.err" </dev/null || rc_traced=$?
	((rc_traced != 124 && rc_traced != 137)) || fail "$what: hung under uffd-trace as nobody"
	[[ $rc_plain -eq $rc_traced ]] ||
		{ cat "$tmp/traced.err" >&2; fail "$what: exit $rc_traced traced, $rc_plain plain (nobody)"; }
	cmp -s "$tmp/plain.out" "$tmp/traced.out" || fail "$what: stdout differs under uffd-trace (nobody)"
	if [[ $(cat /proc/sys/vm/unprivileged_userfaultfd) == 0 ]]; then
		local first="so first touches are not traced "
		[[ " ${nobody_opts[*]} " == *" --user-faults "* ]] && first="(--user-faults): "
		head -n 1 "$tmp/traced.err" | grep -qF "$name: note: user-mode faults only, $first" ||
			head -n 1 "$tmp/traced.err" | grep -qF "$name: note: user-mode faults only $first" ||
			{ cat "$tmp/traced.err" >&2; fail "$what: no 'user-mode faults only' line (nobody)"; }
		sed -n 2p "$tmp/traced.err" | grep -q "^$name: note: fork children are not followed " ||
			{ cat "$tmp/traced.err" >&2; fail "$what: no 'fork children are not followed' line (nobody)"; }
		tail -n +3 "$tmp/traced.err" | cmp -s - "$tmp/plain.err" ||
			fail "$what: stderr differs under uffd-trace (nobody)"
	else
		grep -q "^$name: note: fork children are not followed " "$tmp/traced.err" ||
			fail "$what: no 'fork children are not followed' line (nobody)"
		note "vm.unprivileged_userfaultfd=1: kernel faults are trapped for nobody too"
	fi
	cp "$tmp/nobody/trace" "$tmp/trace"
	echo "ok: $what as nobody (${nobody_opts[*]}): same output and status ($rc_plain), $(grep -E '^total:|"summary":"total"' "$tmp/trace")"
}
# Whether nobody's processes were given user-mode-only contexts: then, without --user-faults, no
# fault at all may be traced; else (vm.unprivileged_userfaultfd=1) they trap first touches.
user_only=$([[ $(cat /proc/sys/vm/unprivileged_userfaultfd) == 0 ]] && echo 1 || echo 0)
same_nobody "/usr/bin/python3 building and freeing lists" /usr/bin/python3 -c "$prog"
((user_only == 0 || $(total faults) == 0)) || fail "python3 as nobody: $(total faults) faults traced without --user-faults"
(($(total unmaps) > 0)) || fail "python3 as nobody: no unmap traced"
grep -q ' attach .*(events only: first touches not traced)$' "$tmp/trace" || ((user_only == 0)) ||
	fail "python3 as nobody: the attach line does not say first touches are not traced"
same_nobody "sort of a 50 MB file" sort "$tmp/big"
((user_only == 0 || $(total faults) == 0)) || fail "sort as nobody: faults traced without --user-faults"
(($(total unmaps) + $(total removes) > 0)) || fail "sort as nobody: no unmap or remove traced"
same_nobody "gzip -9 of a 50 MB file" gzip -9 -c "$tmp/big"
rm -f "$tmp/big"
nobody_opts=(--json --summary)
same_nobody "trace_target (4 threads)" "$tmp/bin/trace_target" "$tmp/nobody/log"
check_target "$tmp/nobody/log" "$( ((user_only)) && echo events || echo faults)"
nobody_opts=(--summary)
same_nobody "an sh -c pipeline" sh -c 'seq 1 20000 | sort -r | head -n 3; echo done'
(($(total forks) == 0)) || fail "the pipeline as nobody: forks followed without EVENT_FORK"
(($(grep -c ' attach ' "$tmp/trace") >= 3)) || fail "the pipeline as nobody: its exec'd programs were not traced"
# --user-faults: first touches are traced anyway. Only trace_target, which touches every buffer
# before a system call writes into it: python3 reads files into fresh buffers, and then fails
# with EFAULT at random (when its buffer was registered first), as --help warns.
nobody_opts=(--json --summary --user-faults)
same_nobody "trace_target (4 threads)" "$tmp/bin/trace_target" "$tmp/nobody/log"
check_target "$tmp/nobody/log" faults

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
