#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The ABI of a freshly built library against its stored baseline (abi/<soname>.abi, written by
# scripts/abi). Compatible changes pass: new functions in a version node the baseline does not
# have (or one still open before its release), fields carved out of the reserved room of the
# structs made for it. Anything else abidiff calls a change (a removed or changed function or
# variable, a changed type) fails, unless the soname changed with it: then the baseline is for
# an older ABI and the test passes, asking for a new one. Exit 77 when abigail-tools is missing.
#
# usage: check-abi.sh LIBRARY HEADERS-DIR PROJECT-VERSION ABI-DIR WORK-DIR
#        check-abi.sh --dump LIBRARY HEADERS-DIR OUT   (what scripts/abi uses: one abidw call)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The structs whose reserved room new fields may take (README/CONTRIBUTING: ABI policy).
RESERVED_STRUCTS=(uffd_config uffd_stats uffd_serve_config uffd_serve_stats uffd_http_config)

for tool in abidw abidiff; do
	command -v "$tool" >/dev/null || {
		echo "SKIP: $tool not found: install abigail-tools to check the ABI"
		exit 77
	}
done

# dump LIBRARY HEADERS-DIR OUT: the public interface only (types of the headers in
# HEADERS-DIR), without build paths, with type ids that depend on the types alone.
dump() {
	abidw --headers-dir "$2" --drop-private-types --no-corpus-path --no-comp-dir-path \
		--short-locs --type-id-style hash --out-file "$3" "$1"
}

if [[ ${1:-} == --dump ]]; then
	dump "$2" "$3" "$4"
	exit 0
fi
(($# == 5)) || { echo "usage: $0 LIBRARY HEADERS-DIR PROJECT-VERSION ABI-DIR WORK-DIR" >&2; exit 2; }
lib=$1 headers=$2 version=$3 abidir=$4 work=$5

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[[ -n $soname ]] || { echo "FAIL: $lib has no SONAME"; exit 1; }
baseline=$abidir/$soname.abi
if [[ ! -f $baseline ]]; then
	olds=$(compgen -G "$abidir/${soname%.so.*}.so.*.abi" || true)
	if [[ -n $olds ]]; then
		echo "PASS: the soname is now $soname; the baselines ($olds) are for an older ABI:"
		echo "      store one for $soname with scripts/abi"
		exit 0
	fi
	echo "FAIL: no baseline $baseline (store one with scripts/abi)"
	exit 1
fi

mkdir -p "$work"
new=$work/$soname.abi
dump "$lib" "$headers" "$new"
echo "baseline: $baseline"
echo "new:      $new ($lib)"

structs=()
for s in "${RESERVED_STRUCTS[@]}"; do
	grep -q "<class-decl name='$s' " "$baseline" && structs+=(--struct "$s")
done
fail=0
python3 "$here/abi-policy.py" "$baseline" "$new" "$version" "${structs[@]}" || fail=1

# Additions are judged above (abi-policy.py); abidiff judges the rest. Its exit status is a
# bit mask: 1 error, 2 usage, 4 ABI change, 8 incompatible change.
rc=0
abidiff --no-added-syms --suppressions "$abidir/reserved.suppr" "$baseline" "$new" \
	>"$work/$soname.abidiff" 2>&1 || rc=$?
if ((rc & 3)); then
	cat "$work/$soname.abidiff"
	echo "FAIL: abidiff could not compare (exit $rc)"
	exit 1
fi
if ((rc & 12)); then
	cat "$work/$soname.abidiff"
	echo "FAIL: the ABI of $soname changed incompatibly (abidiff exit $rc); keep it, or change the"
	echo "      soname with it (see CONTRIBUTING.md, ABI policy)"
	fail=1
fi
# What was added, for the log.
abidiff --suppressions "$abidir/reserved.suppr" "$baseline" "$new" 2>&1 |
	sed -n "s/^  \[A\] /added: /p" || true
((fail == 0)) || exit 1
echo "PASS: $soname keeps the ABI of its baseline"
