#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# uffd-trace's overhead: the wall time of real programs traced against untraced, as interleaved
# pairs (untraced, traced, untraced, traced, ...), with the median ratio and its min and max.
set -euo pipefail

usage_line="usage: bench/trace-overhead.sh [--pairs N] [--size MB] [--smoke] [BUILD-DIR]"
usage() {
	cat <<EOF
$usage_line

Runs each program untraced (A) and under uffd-trace (B, the full trace written to a file),
A B A B ... over N pairs (default 5, at least 1), and prints per program the median untraced
and traced wall time and the median traced/untraced ratio with its min and max. The programs:
python3 -c building and freeing large lists, sort of a MB-sized file (default 50), gzip -9 of
it, tests' trace_target (4 threads mapping, touching, moving, unmapping) and an sh -c pipeline
that forks. A traced run must exit as the untraced one did, with the same stdout.

BUILD-DIR (default build/bench, as scripts/bench makes it) must hold examples/uffd-trace, its
preload library and tests/trace_target; if it lacks them they are configured and built there
(Release for a new directory). --smoke: tiny inputs and one pair, for the test suite (it
asserts no time). Run it as root to trace kernel-mode faults and fork children too.
EOF
}

die() {
	echo "trace-overhead: $*" >&2
	exit 1
}

pairs=5 size=50 smoke=0 dir=
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--pairs)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$usage_line" >&2; exit 2; }
		pairs=$2
		shift
		;;
	--size)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$usage_line" >&2; exit 2; }
		size=$2
		shift
		;;
	--smoke) smoke=1 ;;
	-*)
		echo "trace-overhead: unknown option '$1'" >&2
		echo "$usage_line" >&2
		exit 2
		;;
	*)
		[[ -z $dir ]] || { echo "$usage_line" >&2; exit 2; }
		dir=$1
		;;
	esac
	shift
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${dir:-$root/build/bench}
if ((smoke)); then
	pairs=1 size=1
fi

tool=$dir/examples/uffd-trace target=$dir/tests/trace_target
if [[ ! -x $tool || ! -x $target || ! -e $dir/examples/libuffd-trace-preload.so ]]; then
	# scripts/bench builds only bench/: add the tool and the test program to its directory.
	echo "trace-overhead: building uffd-trace and trace_target in $dir" >&2
	cfg=(-DLIBUFFD_BUILD_EXAMPLES=ON -DLIBUFFD_BUILD_TESTS=ON -DLIBUFFD_BUILD_DOCS=OFF)
	[[ -e $dir/CMakeCache.txt ]] || cfg+=(-DCMAKE_BUILD_TYPE=Release)
	mkdir -p "$dir"
	{ cmake -S "$root" -B "$dir" "${cfg[@]}" &&
		cmake --build "$dir" --parallel 2 --target uffd-trace uffd-trace-preload trace_target; } \
		>"$dir/trace-overhead-build.log" 2>&1 ||
		{ cat "$dir/trace-overhead-build.log" >&2; die "building in $dir failed"; }
fi
command -v python3 >/dev/null || die "python3 is not installed"
# The interpreter itself, not a wrapper (a pyenv shim is a shell script that forks dozens of
# times before it runs python).
python=$(python3 -c 'import sys; print(sys.executable)')
[[ -x $python ]] || die "cannot find the python3 interpreter"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# An instrumented trace_target (a sanitizer build) must accept the preload library first.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

if ((smoke)); then
	list=100000 strs=10000 lines=30000 seqn=2000
else
	list=3000000 strs=200000 lines=$((size * 56000)) seqn=200000
fi
seq 1 "$lines" | sed 's/$/ uffd-trace overhead/' >"$tmp/big"
truncate -s "$((size * 1000000))" "$tmp/big"

names=(python3 sort gzip trace_target pipeline)
declare -A what
what[python3]="python3 -c: $list ints, $strs strs, freed"
what[sort]="sort of a $size MB file"
what[gzip]="gzip -9 of the $size MB file"
what[trace_target]="trace_target (4 threads)"
what[pipeline]="sh -c 'seq 1 $seqn | sort -r | head -n 3'"
# cmd NAME: sets the array c to the program's command line.
cmd() {
	case $1 in
	python3)
		c=("$python" -c "a = [i for i in range($list)]
b = [str(i) for i in range($strs)]
del a
print(len(b), b[-1])")
		;;
	sort) c=(sort "$tmp/big") ;;
	gzip) c=(gzip -9 -c "$tmp/big") ;;
	trace_target) c=("$target" "$tmp/log") ;;
	pipeline) c=(sh -c "seq 1 $seqn | sort -r | head -n 3") ;;
	esac
}

# timed SIDE CMD...: runs CMD, its stdout in $tmp/SIDE.out; prints "STATUS NANOSECONDS".
timed() {
	local side=$1 t0 t1 rc=0
	shift
	t0=$(date +%s%N)
	"$@" >"$tmp/$side.out" 2>"$tmp/$side.err" </dev/null || rc=$?
	t1=$(date +%s%N)
	echo "$rc $((t1 - t0))"
}

declare -A plain traced ratio
# One pair first that is not counted (page cache, the dynamic loader's caches), unless --smoke.
for ((p = 1 - (smoke ? 0 : 1); p <= pairs; p++)); do
	for n in "${names[@]}"; do
		cmd "$n"
		read -r rca ta < <(timed A "${c[@]}")
		read -r rcb tb < <(timed B "$tool" -o "$tmp/trace" -- "${c[@]}")
		[[ $rca == "$rcb" ]] || { cat "$tmp/B.err" >&2; die "$n: exit $rcb traced, $rca untraced"; }
		cmp -s "$tmp/A.out" "$tmp/B.out" || die "$n: stdout differs under uffd-trace"
		((p >= 1)) || continue
		plain[$n]+="$ta " traced[$n]+="$tb "
		ratio[$n]+="$(awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.4f", b / a }') "
	done
done

# median of the numbers given
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minof() { printf '%s\n' "$@" | sort -g | head -n 1; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }

printf 'uffd-trace overhead: %d pair%s (untraced, traced) per program, interleaved; wall time\n' \
	"$pairs" "$([[ $pairs -eq 1 ]] || echo s)"
printf 'python3: %s; %s\n' "$python" "$(uname -sr)"
printf '%-46s %10s %10s %6s %6s %6s\n' program "untraced s" "traced s" ratio min max
for n in "${names[@]}"; do
	# shellcheck disable=SC2086 # word splitting of the lists of figures is meant
	printf '%-46s %10.3f %10.3f %6.2f %6.2f %6.2f\n' "${what[$n]}" \
		"$(awk -v x="$(median ${plain[$n]})" 'BEGIN { print x / 1e9 }')" \
		"$(awk -v x="$(median ${traced[$n]})" 'BEGIN { print x / 1e9 }')" \
		"$(median ${ratio[$n]})" "$(minof ${ratio[$n]})" "$(maxof ${ratio[$n]})"
done
