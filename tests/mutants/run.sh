#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mutation check: every tests/mutants/NN-name.patch is a bug that the test named on its first line
# ("# must fail: <ctest test name>") must catch. For each patch, in a scratch copy of the source
# tree (the real tree is never touched): apply it, build uffd_testing and that test, run the test
# with a timeout, and report KILLED (the test failed, or hung) or SURVIVED. Exit status 0 only
# when every mutant was killed; a patch that no longer applies, a mutant that does not build,
# a test that does not pass unmutated or that skips fails the run too, loudly.
#
# usage: tests/mutants/run.sh [BUILD-DIR]   (default: build/mutants; it is emptied first)
# Environment: MUTANT_TIMEOUT (seconds per test run, default 120), MUTANT_JOBS (default 2),
# MUTANT_FUZZ (patch's --fuzz, default 3: patches may re-anchor after the code moves).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-$root/build/mutants}
timeout_s=${MUTANT_TIMEOUT:-120}
jobs=${MUTANT_JOBS:-2}
fuzz=${MUTANT_FUZZ:-3}

die() {
	printf 'mutants: %s\n' "$*" >&2
	exit 1
}

command -v patch >/dev/null || die "needs patch(1)"
shopt -s nullglob
patches=("$here"/[0-9]*.patch)
((${#patches[@]})) || die "no patch in $here"

case $work in
"" | / | "$root" | "$root/") die "refusing to use '$work' as the scratch directory" ;;
esac
rm -rf "$work"
mkdir -p "$work/tree" "$work/pristine" "$work/logs"
work=$(cd "$work" && pwd)

# The source tree as it is now (tracked and untracked files, uncommitted edits included), twice:
# one copy to mutate, one to restore from.
copy_tree() {
	if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		local f files=()
		while IFS= read -r -d '' f; do
			[[ -e $root/$f ]] && files+=("$f") # not a tracked file deleted since
		done < <(git -C "$root" ls-files -z --cached --others --exclude-standard)
		printf '%s\0' "${files[@]}" | tar -C "$root" --null -T - -cf - | tar -xf - -C "$1"
	else
		tar -C "$root" --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$1"
	fi
}
copy_tree "$work/tree"
copy_tree "$work/pristine"

# The test a patch must make fail, from its first line.
must_fail() {
	sed -n '1s/^# must fail: *\([A-Za-z0-9_.-]*\) *$/\1/p' "$1"
}

# The files a patch changes (its +++ lines, without the b/ prefix).
patched_files() {
	sed -n 's|^+++ [ab]/\([^[:space:]]*\).*|\1|p' "$1"
}

build="$work/build"
cmake -S "$work/tree" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIBUFFD_BUILD_TESTS=ON \
	-DLIBUFFD_BUILD_EXAMPLES=OFF -DLIBUFFD_BUILD_DOCS=OFF -DLIBUFFD_WERROR=OFF \
	-DLIBUFFD_INSTALL=OFF >"$work/logs/configure.log" 2>&1 ||
	{ cat "$work/logs/configure.log"; die "configuring the scratch tree failed"; }

# run_test NAME LOG: 0 passed, 1 failed (or timed out), 2 skipped.
run_test() {
	local rc=0
	ctest --test-dir "$build" -R "^$1\$" --timeout "$timeout_s" --output-on-failure \
		--no-tests=error </dev/null >"$2" 2>&1 || rc=$?
	if grep -qE '\*\*\*Skipped|\*\*\*Not Run' "$2"; then
		return 2
	fi
	((rc == 0)) || return 1
	return 0
}

build_targets() {
	cmake --build "$build" --parallel "$jobs" --target uffd_testing "$1" >"$2" 2>&1
}

# Each named test must pass on the unmutated tree, or a failure would prove nothing.
declare -A baseline=()
for p in "${patches[@]}"; do
	t=$(must_fail "$p")
	[[ -n $t ]] || die "${p##*/}: the first line must be '# must fail: <ctest test name>'"
	[[ -n ${baseline[$t]:-} ]] && continue
	build_targets "$t" "$work/logs/baseline-$t.build.log" ||
		{ tail -n 30 "$work/logs/baseline-$t.build.log"; die "the unmutated tree does not build $t"; }
	rc=0
	run_test "$t" "$work/logs/baseline-$t.log" || rc=$?
	((rc == 0)) || { cat "$work/logs/baseline-$t.log"; die "$t does not pass on the unmutated tree"; }
	baseline[$t]=1
done

killed=0 bad=()
for p in "${patches[@]}"; do
	name=${p##*/}
	name=${name%.patch}
	t=$(must_fail "$p")
	log=$work/logs/$name
	if ! patch -p1 -d "$work/tree" --dry-run --fuzz="$fuzz" -s <"$p" >"$log.patch.log" 2>&1; then
		cat "$log.patch.log"
		printf '%-32s DOES NOT APPLY (regenerate it against the current src/)\n' "$name"
		bad+=("$name: does not apply")
		continue
	fi
	patch -p1 -d "$work/tree" --fuzz="$fuzz" --no-backup-if-mismatch -s <"$p" >>"$log.patch.log" 2>&1
	if ! build_targets "$t" "$log.build.log"; then
		tail -n 20 "$log.build.log"
		printf '%-32s DOES NOT BUILD\n' "$name"
		bad+=("$name: does not build")
	else
		rc=0
		run_test "$t" "$log.test.log" || rc=$?
		case $rc in
		0)
			printf '%-32s SURVIVED (%s passed)\n' "$name" "$t"
			bad+=("$name: survived $t")
			;;
		1)
			printf '%-32s KILLED by %s\n' "$name" "$t"
			killed=$((killed + 1))
			;;
		*)
			printf '%-32s SKIPPED (%s skipped: cannot tell)\n' "$name" "$t"
			bad+=("$name: $t skipped")
			;;
		esac
	fi
	# Restore what the patch changed (fresh mtimes, so the next build recompiles them).
	while IFS= read -r f; do
		if [[ -e $work/pristine/$f ]]; then
			cp "$work/pristine/$f" "$work/tree/$f"
		else
			rm -f "$work/tree/$f"
		fi
	done < <(patched_files "$p")
done

echo "mutants: $killed of ${#patches[@]} killed (logs: $work/logs)"
if ((${#bad[@]})); then
	printf 'mutants: %s\n' "${bad[@]}" >&2
	exit 1
fi
