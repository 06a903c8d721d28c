#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Man page test: install into a fresh prefix; then every function <uffd.h> declares has a
# section 3 page, every installed tool a section 1 page, and libuffd(7) exists; `man -M` finds
# each by name alone, each has the sections it must have, every page it names under SEE ALSO
# exists, and groff renders it without a warning. No page is left for a function that is gone.
# More headers after UFFD_H (uffd_http.h) add their functions.
# usage: check-man.sh CMAKE BUILD_DIR PREFIX MANDIR BINDIR UFFD_H [HEADER...]
set -euo pipefail
[[ $# -ge 6 ]] || { echo "usage: $0 CMAKE BUILD_DIR PREFIX MANDIR BINDIR UFFD_H [HEADER...]" >&2; exit 2; }
cmake=$1 build=$2 prefix=$3 mandir_rel=$4 bindir_rel=$5 header=$6
headers=("${@:6}")
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

for tool in man groff; do
	command -v "$tool" >/dev/null || { echo "SKIP: '$tool' is not installed (package man-db)"; exit 77; }
done

rm -rf "$prefix"
"$cmake" --install "$build" --prefix "$prefix" >/dev/null
mandir=$prefix/$mandir_rel
[[ -d $mandir ]] || { echo "FAIL: nothing was installed in $mandir" >&2; exit 1; }

# No user configuration, a fixed width, plain text.
export MANWIDTH=100 MANOPT='' MANPAGER=cat PAGER=cat LC_ALL=C.UTF-8
unset MANPATH
plain() { sed -e $'s/.\b//g' -e $'s/\e\\[[0-9;]*m//g'; }

# check_page SECTION NAME HEADING...: `man -M` finds it by name (and section), it has every
# heading, its NAME line reads "NAME - what", and groff has nothing to say about it.
check_page() {
	local sec=$1 name=$2 text file warnings h
	shift 2
	file=$mandir/man$sec/$name.$sec
	[[ -f $file ]] || { fail "no page $name($sec) in $mandir/man$sec"; return; }
	if ! text=$(man -M "$mandir" -P cat "$sec" "$name" 2>/dev/null | plain); then
		fail "man -M $mandir $sec $name fails"
		return
	fi
	for h in "$@"; do
		grep -qx "$h" <<<"$text" || fail "$name($sec) has no $h section"
	done
	grep -qE "^ +$name - [^ ]" <<<"$text" || fail "$name($sec): the NAME line is not '$name - ...'"
	warnings=$(groff -man -ww -z -Tutf8 "$file" 2>&1 || true)
	[[ -z $warnings ]] || fail "groff warns about $name($sec):"$'\n'"$warnings"
	# Every page SEE ALSO names in sections 1, 3 and 7 is one of ours, and installed (the
	# kernel's pages are in 2 and 5).
	local rname rsec
	while read -r rname rsec; do
		[[ $rsec != [137] || -f $mandir/man$rsec/$rname.$rsec ]] ||
			fail "$name($sec) refers to $rname($rsec), which is not installed"
	done < <(sed -n '/^\.SH SEE ALSO/,/^\.SH/p' "$file" |
		sed -nE 's/^\.BR ([A-Za-z0-9_-]+) \(([1-8])\).*/\1 \2/p' | sed 's/\\-/-/g')
}

declared=$(cat "${headers[@]}" | grep -oE 'UFFD_API_EXPORT[^(;]*[^a-zA-Z0-9_]uffd_[a-z0-9_]+\(' |
	grep -oE 'uffd_[a-z0-9_]+\($' | tr -d '(' | sort -u)
[[ -n $declared ]] || { echo "FAIL: found no UFFD_API_EXPORT declaration in $header" >&2; exit 1; }
for fn in $declared; do
	check_page 3 "$fn" NAME SYNOPSIS DESCRIPTION "RETURN VALUE" ERRORS "SEE ALSO"
done
installed3=$(find "$mandir/man3" -name '*.3' -printf '%f\n' 2>/dev/null | sed 's/\.3$//' | sort)
stale=$(comm -13 <(echo "$declared") <(echo "$installed3"))
[[ -z $stale ]] || fail "section 3 pages for functions <uffd.h> does not declare:"$'\n'"$stale"

check_page 7 libuffd NAME SYNOPSIS DESCRIPTION "SEE ALSO"

# `man uffd_on_unmap`, as a user types it: no section. grep reads to the end (no -q): under
# pipefail, man killed by SIGPIPE when grep stops early fails the pipeline on a long page.
man -M "$mandir" -P cat uffd_on_unmap 2>/dev/null | plain | grep 'set the UNMAP callback' >/dev/null ||
	fail "man -M $mandir uffd_on_unmap does not show the page"

tools=0
if [[ -d $prefix/$bindir_rel ]]; then
	for bin in "$prefix/$bindir_rel"/*; do
		[[ -f $bin && -x $bin ]] || continue
		check_page 1 "${bin##*/}" NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" "SEE ALSO"
		tools=$((tools + 1))
	done
fi

if [[ $status -eq 0 ]]; then
	echo "man pages: $(wc -l <<<"$declared") functions (section 3), libuffd(7), $tools tools (section 1)"
fi
exit $status
