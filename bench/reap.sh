#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# REAP's experiment (ASPLOS 2021) on this machine: a process whose memory is a 1 GiB image
# restored lazily runs a workload touching a quarter of it in runs of 1-8 pages scattered over the
# image; the time to the workload's end, its faults and the bytes fetched, for eager, on-demand
# (page by page and in chunks) and recorded-prefetch restores, from a file and from nginx.
set -euo pipefail

usage_line="usage: bench/reap.sh [--runs N] [--size MB] [--ahead N] [--smoke] [BUILD-DIR]"
usage() {
	cat <<EOF
$usage_line

Makes a SIZE MB image (default 1024) in BUILD-DIR/reap, records the workload's first touches
once (a page per fault: the order and its compacted pages, IMAGE.order and IMAGE.order.pages),
then runs every row N times (default 3), round robin, each after dropping the page cache
(sync; echo 3 > /proc/sys/vm/drop_caches: run it as root), from the file and from an nginx it
starts on 127.0.0.1 (when nginx is installed and libuffd-http was built). It prints each row's
median time to the workload's end [min max], faults, bytes fetched, and the targets, met or
missed. BUILD-DIR (default build/bench, as scripts/bench makes it) must hold
bench/uffd-bench-reap; it is built there when the directory is configured. --smoke: a 16 MB
image, one run, no cache dropping, for the test suite (it asserts no time). --ahead N adds
the rows 64K+aN and 4M+aN: on demand with uffd_serve_config::ahead = N. See bench/README.md.
EOF
}

die() {
	echo "reap: $*" >&2
	exit 1
}

runs=3 size=1024 smoke=0 ahead=0 dir=
while (($#)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--runs)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$usage_line" >&2; exit 2; }
		runs=$2
		shift
		;;
	--size)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$usage_line" >&2; exit 2; }
		size=$2
		shift
		;;
	--ahead)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$usage_line" >&2; exit 2; }
		ahead=$2
		shift
		;;
	--smoke)
		smoke=1
		;;
	-*)
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
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${dir:-$here/../build/bench}
((smoke)) && size=16 runs=1
bin=$dir/bench/uffd-bench-reap
if [[ ! -x $bin && -f $dir/CMakeCache.txt ]]; then
	cmake --build "$dir" --target uffd-bench-reap >/dev/null || die "cannot build $bin"
fi
[[ -x $bin ]] || die "no $bin: build it (cmake --build $dir --target uffd-bench-reap)"
dir=$(cd "$dir" && pwd)

# shellcheck source=tests/scripts/nginx.sh
. "$here/../tests/scripts/nginx.sh"
work=$dir/reap
srv=$work/srv
mkdir -p "$srv/www"
out=$(mktemp -d)
trap 'nginx_stop; rm -rf "$out"' EXIT
trap 'exit 143' TERM INT HUP

cold=1
if ((smoke)); then
	cold=0
elif [[ $(id -u) -ne 0 ]]; then
	echo "reap: not root: the page cache cannot be dropped, every run is warm" >&2
	cold=0
fi
drop() {
	if ((cold)); then
		sync
		echo 3 >/proc/sys/vm/drop_caches
	fi
}

img=$srv/www/image
if [[ ! -f $img || $(stat -c %s "$img") -ne $((size << 20)) ]]; then
	echo "making a $size MB image in $img"
	"$bin" make "$img" "$size"
fi

sources=(file)
if ! command -v nginx >/dev/null; then
	echo "reap: nginx is not installed: the HTTP rows are not run" >&2
elif "$bin" run http://127.0.0.1:9/x page 2>&1 | grep -q "without libuffd-http"; then
	echo "reap: built without libuffd-http: the HTTP rows are not run" >&2
else
	nginx_start "$srv" || die "cannot start nginx"
	sources+=(http)
fi
spec() { if [[ $1 == file ]]; then echo "$img"; else echo "$NGINX_URL/image"; fi; }

# One run: "SOURCE ROW key=value..." appended to $out/runs.
one() {
	local src=$1 row=$2 line
	shift 2
	drop
	line=$("$bin" run "$(spec "$src")" "$@") || die "$src $row failed"
	echo "$src $row $line" >>"$out/runs"
}

# A cold sequential read of the image, as dd does it: what this machine's storage gives.
for ((i = 0; i < (smoke ? 1 : 3); i++)); do
	drop
	t0=$(date +%s%N)
	dd if="$img" of=/dev/null bs=4M status=none
	echo $(((size << 20) * 1000 / ($(date +%s%N) - t0 + 1))) >>"$out/dd" # MB/s
done

# Record once, page by page: the order and the compacted working set, which nginx serves too.
"$bin" run "$img" page --record "$img.order" >"$out/record"

rows=(eager page 64K 256K 1M 4M prefetch)
((ahead)) && rows+=("64K+a$ahead" "4M+a$ahead")
t_start=$(date +%s)
for ((r = 1; r <= runs; r++)); do
	for src in "${sources[@]}"; do
		for row in "${rows[@]}"; do
			if [[ $row == prefetch ]]; then
				pages=$img.order.pages
				[[ $src == file ]] || pages=$NGINX_URL/image.order.pages
				one "$src" "$row" prefetch --order "$img.order" --pages "$pages"
			elif [[ $row == *+a* ]]; then
				one "$src" "$row" "${row%+a*}" --ahead "$ahead"
			else
				one "$src" "$row" "$row"
			fi
		done
	done
done
t_end=$(date +%s)

# The table: medians per source and row; then the targets.
dd_mbs=$(sort -n "$out/dd" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
echo
echo "REAP's experiment: $(uname -r), $(nproc) CPUs, load $(cut -d ' ' -f 1-3 /proc/loadavg)"
echo "image $size MB; workload: $(sed -E 's/.*touched=([0-9]+) runs=([0-9]+).*/\1 pages touched in \2 runs of 1-8 pages/' "$out/record")"
echo "$runs run(s) a row, $( ((cold)) && echo "page cache dropped before each" || echo "warm page cache")"
echo "cold sequential read (dd bs=4M): $dd_mbs MB/s; the whole benchmark took $((t_end - t_start)) s"
echo
awk -v smoke="$smoke" '
function med(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	k = $1 " " $2
	if (!(k in n)) order[++nk] = k
	n[k]++
	for (i = 3; i <= NF; i++) { split($i, kv, "="); v[k, kv[1], n[k]] = kv[2] }
}
END {
	printf "%-5s %-9s %9s %17s %8s %12s %9s %9s\n", "src", "row", "time s", "[min max]", "faults", "fetched MiB", "pre s", "x page"
	for (o = 1; o <= nk; o++) {
		k = order[o]; split(k, sr, " ")
		m = n[k]; lo = 1e9; hi = 0
		for (i = 1; i <= m; i++) { t[i] = v[k, "secs", i]; if (t[i] < lo) lo = t[i]; if (t[i] > hi) hi = t[i] }
		T[k] = med(t, m)
		for (i = 1; i <= m; i++) t[i] = v[k, "faults", i]; F[k] = med(t, m)
		for (i = 1; i <= m; i++) t[i] = v[k, "fetched", i]; B[k] = med(t, m)
		for (i = 1; i <= m; i++) t[i] = v[k, "pre_secs", i]; P[k] = med(t, m)
	}
	for (o = 1; o <= nk; o++) {
		k = order[o]; split(k, sr, " ")
		m = n[k]; lo = 1e9; hi = 0
		for (i = 1; i <= m; i++) { x = v[k, "secs", i]; if (x < lo) lo = x; if (x > hi) hi = x }
		printf "%-5s %-9s %9.3f   [%6.3f %6.3f] %8d %12.1f %9.3f %9.2f\n", sr[1], sr[2], T[k], lo, hi, F[k], B[k] / 1048576, P[k], T[sr[1] " page"] / T[k]
	}
	print ""
	print "Targets (medians):"
	for (s = 1; s <= 2; s++) {
		src = s == 1 ? "file" : "http"
		if (!((src " prefetch") in T)) continue
		pf = T[src " prefetch"]
		r = T[src " page"] / pf; tgt(r >= 3.7, sprintf("%.2fx", r), ">= 3.7x", src ": prefetch faster than page by page")
		r = T[src " eager"] / pf; tgt(r >= 2, sprintf("%.2fx", r), ">= 2x", src ": prefetch faster than eager")
		r = F[src " page"] ? 100 * (1 - F[src " prefetch"] / F[src " page"]) : 0
		tgt(r >= 95, sprintf("%.1f%%", r), ">= 95%", src ": on-demand faults removed (" F[src " prefetch"] " of " F[src " page"] " left)")
	}
	if (("http prefetch") in T) {
		split("prefetch 64K 256K 1M 4M", hr, " ")
		for (i = 1; i <= 5; i++) {
			r = T["http " hr[i]] / T["file " hr[i]]
			tgt(r <= 1.5, sprintf("%.2fx", r), "<= 1.5x", "http/file: " hr[i])
		}
		r = T["http page"] / T["file page"]
		printf "  report %-8s %-8s %s\n", sprintf("%.2fx", r), "", "http/file: page (not gated)"
		for (o = 1; o <= nk; o++) {
			k = order[o]; split(k, sr, " ")
			if (sr[1] != "http" || sr[2] !~ /\+a/) continue
			c = sr[2]; sub(/\+a.*/, "", c)
			printf "  report %-8s %-8s %s\n", sprintf("%.2fx", T[k] / T["file " c]), "", "http " sr[2] " / file " c " (fetching ahead; not gated)"
			printf "  report %-8s %-8s %s\n", sprintf("%.2fx", T[k] / T["file " sr[2]]), "", "http " sr[2] " / file " sr[2] " (both fetching ahead; not gated)"
		}
	}
	if (smoke) print "(smoke run: a tiny image, one warm run: the figures mean nothing)"
}
function tgt(ok, val, want, what) { printf "  %-6s %-8s %-8s %s\n", ok ? "met" : "MISSED", val, want, what }
' "$out/runs"
