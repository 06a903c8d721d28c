#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Assemble tests/COVERAGE.md from the rows the conformance tests (tests/test_conf_*.c) recorded.
#
# usage: coverage.sh ROWS_DIR OUT.md [COMMITTED.md]
#
# ROWS_DIR holds one <program>.tsv per test program (tests/conf.h, cov_row()): kind, name,
# memory type, ok|refused, errno, what, scenario. The table lists every feature bit, ioctl and
# event of Linux 6.18 against the five memory types. Exit status: 0 when every feature, ioctl and
# event was exercised on at least one memory type; 1 when one was not; 77 (skipped) when no rows
# were recorded at all. With COMMITTED.md, a difference from it (other than the kernel named in
# the generation line) is printed as a diff and fails the run (exit 1), since the committed table
# would no longer say what the tests exercise: set LIBUFFD_UPDATE_COVERAGE=1 to copy the new
# table over it instead. An incomplete run (exit 77) is not compared.
set -euo pipefail

die() {
	echo "coverage.sh: $*" >&2
	exit 2
}

(($# >= 2)) || die "usage: coverage.sh ROWS_DIR OUT.md [COMMITTED.md]"
rows_dir=$1
out=$2
committed=${3:-}

shopt -s nullglob
files=("$rows_dir"/*.tsv)
if ((${#files[@]} == 0)); then
	echo "coverage.sh: no rows in $rows_dir: run the test_conf_* programs first" >&2
	exit 77
fi

features="PAGEFAULT_FLAG_WP EVENT_FORK EVENT_REMAP EVENT_REMOVE MISSING_HUGETLBFS MISSING_SHMEM
EVENT_UNMAP SIGBUS THREAD_ID MINOR_HUGETLBFS MINOR_SHMEM EXACT_ADDRESS WP_HUGETLBFS_SHMEM
WP_UNPOPULATED POISON WP_ASYNC MOVE"
ioctls="API REGISTER UNREGISTER WAKE COPY ZEROPAGE MOVE WRITEPROTECT CONTINUE POISON"
events="PAGEFAULT FORK REMAP REMOVE UNMAP"
scenarios="api register-ioctls zeropage move move-pmd move-pmd-split poison wp-fork
wp-fork-with-event wp-unpopulated wp-async minor minor-wp minor-collapse sigbus sigbus-wp events
events-wp fault-details mmap-changing eagain-redelivery stress"
kernel=$(uname -r)

tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.skipped"' EXIT

# Everything is sorted and de-duplicated so that the table depends only on what ran.
cat "${files[@]}" | LC_ALL=C sort -u |
	awk -F'\t' -v features="$features" -v ioctls="$ioctls" -v events="$events" \
		-v scenarios="$scenarios" -v kernel="$kernel" -v out_missing="$tmp" \
		-v out_skipped="$tmp.skipped" '
function na(kind, name, mem,    file, huge) {
	# What cannot apply: the memory-type-specific feature bits on other memory, and
	# WP_UNPOPULATED, which changes only anonymous memory (shmem and hugetlbfs always
	# place write-protect markers on empty entries).
	file = mem != "anon"
	huge = mem ~ /^hugetlb/
	if (kind != "feature")
		return 0
	if (name == "MISSING_HUGETLBFS" || name == "MINOR_HUGETLBFS")
		return !huge
	if (name == "MISSING_SHMEM" || name == "MINOR_SHMEM")
		return !file || huge
	if (name == "WP_HUGETLBFS_SHMEM")
		return !file
	if (name == "WP_UNPOPULATED")
		return file
	return 0
}
function cell(kind, name, mem,    k, s) {
	k = kind SUBSEP name SUBSEP mem
	if (k in ok) {
		s = "✔"
		if (k in rerr)
			s = s " ✘ " rerr[k]
		return s
	}
	if (k in rerr)
		return "✘ " rerr[k]
	if (na(kind, name, mem))
		return "n/a"
	return "✗"
}
# The two head lines of a table: @first, then one column per memory type.
function table_head(first,    j) {
	printf "| %s |", first
	for (j = 1; j <= nmem; j++)
		printf " %s |", mems[j]
	printf "\n|---|"
	for (j = 1; j <= nmem; j++)
		printf "---|"
	printf "\n"
}
function section(title, kind, names,    n, list, i, j, row, hit, total) {
	n = split(names, list, /[ \n]+/)
	hit = 0
	for (i = 1; i <= n; i++)
		for (j = 1; j <= nmem; j++)
			if ((kind SUBSEP list[i] SUBSEP mems[j]) in ok) {
				hit++
				break
			}
	printf "## %s: %d/%d exercised\n\n", title, hit, n
	table_head(kind)
	for (i = 1; i <= n; i++) {
		row = "| " list[i] " |"
		for (j = 1; j <= nmem; j++)
			row = row " " cell(kind, list[i], mems[j]) " |"
		print row
		total = 0
		for (j = 1; j <= nmem; j++)
			if ((kind SUBSEP list[i] SUBSEP mems[j]) in ok)
				total++
		if (!total)
			print kind " " list[i] >> out_missing
	}
	printf "\n"
}
# Scenarios that the kernel selftests run on some memory types only.
function scenario_na(name, mem) {
	if (name ~ /^move/ || name == "wp-unpopulated")
		return mem != "anon"
	if (name == "minor" || name == "minor-wp")
		return mem == "anon"
	if (name == "minor-collapse")
		return mem != "shmem"
	return 0
}
function scell(name, mem,    k) {
	k = "scenario" SUBSEP name SUBSEP mem
	if (k in ok)
		return "✔"
	if (k in rerr)
		return "✘ " rerr[k]
	return scenario_na(name, mem) ? "n/a" : "✗"
}
BEGIN {
	nmem = split("anon shmem shmem-private hugetlb hugetlb-private", mems, " ")
}
$1 == "pagesize" {
	# The default fault handler on one huge page size (tests/huge_defaults.h): $6 is the fault
	# kind, or why the size is not applicable on this machine. Informational: the size a
	# machine lacks is not a gap.
	k = $2 SUBSEP $3
	if (!($2 in psize)) {
		psize[$2] = 1
		if ($2 != "2M" && $2 != "1G")
			pextra = pextra " " $2
	}
	if ($4 == "ok") {
		if (!(k in pok))
			pok[k] = $6
		else if (index(", " pok[k] ", ", ", " $6 ", ") == 0)
			pok[k] = pok[k] ", " $6
	} else {
		pna[k] = $6
	}
	next
}
$1 == "skip" {
	# A program that skipped, or memory it could not get: the table cannot be complete.
	print "skipped: " $2 ": " $6 >> out_skipped
	next
}
{
	k = $1 SUBSEP $2 SUBSEP $3
	if ($4 == "ok") {
		ok[k] = 1
	} else {
		if (!(k in rerr))
			rerr[k] = $5
		else if (index(rerr[k], $5) == 0)
			rerr[k] = rerr[k] ", " $5
		# one line per (kind, name, errno, what), listing the memory types
		r = $1 " " $2 ": " $5 ($6 != "-" ? ", " $6 : "")
		if (!(r in rmem)) {
			rorder[++nr] = r
			rmem[r] = $3
		} else if (index(" " rmem[r] " ", " " $3 " ") == 0) {
			rmem[r] = rmem[r] " " $3
		}
	}
}
END {
	print "# Kernel conformance coverage"
	print ""
	print "Generated by the test run (`ctest -R conformance_coverage`, which runs the"
	print "`test_conf_*` programs first and then `tests/scripts/coverage.sh`); do not edit."
	print "Every feature bit, ioctl and event of Linux 6.18 against the memory types the kernel\x27s"
	print "own userfaultfd tests use: anonymous, shmem (a memfd mapped shared, and private) and"
	print "hugetlbfs (a MFD_HUGETLB memfd mapped shared, and private). Each scenario drives the"
	print "kernel only through libuffd (see tests/test_conf_*.c)."
	print ""
	print "Last generated on Linux " kernel "."
	print ""
	print "Legend: ✔ exercised; ✘ ERRNO refused by the kernel with that errno, as the test"
	print "expects (see \"Refusals\" for what was refused); n/a not applicable to that memory;"
	print "✗ not exercised."
	print ""
	section("Feature bits", "feature", features)
	section("ioctls", "ioctl", ioctls)
	section("Events", "event", events)
	print "## Refusals"
	print ""
	print "What the kernel refused, with the errno libuffd returned, and on which memory."
	print ""
	for (i = 1; i <= nr; i++) {
		list = ""
		for (j = 1; j <= nmem; j++)
			if (index(" " rmem[rorder[i]] " ", " " mems[j] " "))
				list = list (list == "" ? "" : ", ") mems[j]
		print "- " rorder[i] " (" list ")"
	}
	print ""
	n = split(scenarios, sl, /[ \n]+/)
	for (i = 1; i <= n; i++)
		for (j = 1; j <= nmem; j++)
			if (scell(sl[i], mems[j]) == "✗")
				print "scenario " sl[i] " on " mems[j] >> out_missing
	print "## Scenarios that ran to the end"
	print ""
	table_head("scenario")
	for (i = 1; i <= n; i++) {
		row = "| " sl[i] " |"
		for (j = 1; j <= nmem; j++)
			row = row " " scell(sl[i], mems[j]) " |"
		print row
	}
	print ""
	print "✘ ERRNO: the scenario checked that the kernel refuses it there; n/a: the kernel\x27s"
	print "test does not run it on that memory; ✗: it did not run to its end."
	print ""
	print "## Huge page sizes the default fault handler ran on"
	print ""
	print "The faults uffd_default_pagefault() resolved on each hugetlbfs page size (test_hugetlb:"
	print "2 MiB; test_hugetlb_1g: 1 GiB, wherever the machine has them). n/a: this machine lacks"
	print "the page size (tests/hardware-only.txt); ✗: the test did not run."
	print ""
	print "| page size | hugetlb | hugetlb-private |"
	print "|---|---|---|"
	n = split("2M 1G" pextra, sizes, " ")
	for (i = 1; i <= n; i++) {
		row = "| " sizes[i] " |"
		for (j = 4; j <= 5; j++) {
			k = sizes[i] SUBSEP mems[j]
			row = row " " ((k in pok) ? "✔ " pok[k] : (k in pna) ? "n/a: " pna[k] : "✗") " |"
		}
		print row
	}
}' >"$out"

echo "coverage.sh: wrote $out" >&2
grep -E '^## ' "$out" | sed 's/^## /coverage.sh: /' >&2
status=0
if [[ -s $tmp ]]; then
	echo "coverage.sh: not exercised:" >&2
	sed 's/^/  /' "$tmp" >&2
	status=1
	# Incomplete because this machine could not run everything: skipped, not failed (unless
	# LIBUFFD_TEST_STRICT says a skip is a failure).
	if [[ -s $tmp.skipped ]]; then
		sort -u "$tmp.skipped" | sed 's/^/coverage.sh: /' >&2
		[[ -n ${LIBUFFD_TEST_STRICT:-} && ${LIBUFFD_TEST_STRICT} != 0 ]] || status=77
	fi
fi

if [[ -n $committed && $status != 77 ]]; then
	# The generation line names the kernel: compare everything else.
	if ! diff -q <(grep -v '^Last generated on' "$out") \
		<(grep -v '^Last generated on' "$committed" 2>/dev/null || true) >/dev/null; then
		if [[ ${LIBUFFD_UPDATE_COVERAGE:-0} != 0 ]]; then
			cp "$out" "$committed"
			echo "coverage.sh: updated $committed" >&2
		else
			echo "coverage.sh: $committed differs from this run's table; to update it:" >&2
			echo "  LIBUFFD_UPDATE_COVERAGE=1 ctest -R conformance_coverage" >&2
			diff -u "$committed" "$out" >&2 || true
			status=1
		fi
	fi
fi
exit $status
