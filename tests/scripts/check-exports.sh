#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# ABI test: libuffd.so exports exactly the functions <uffd.h> declares with UFFD_API_EXPORT, each
# under a LIBUFFD_ version node, and its SONAME is libuffd.so.MAJOR; libuffd.a defines no global
# symbol outside the uffd_ namespace, so static linking cannot clash with a user's names.
# With the version script MAP, every name it lists by itself (not through a wildcard) is
# exported under the node that lists it: a function added in 0.2 carries @@LIBUFFD_0.2.
# usage: check-exports.sh LIBUFFD_SO LIBUFFD_A UFFD_H NM READELF MAJOR [MAP]
set -euo pipefail
[[ $# -eq 6 || $# -eq 7 ]] ||
	{ echo "usage: $0 LIBUFFD_SO LIBUFFD_A UFFD_H NM READELF MAJOR [MAP]" >&2; exit 2; }
so=$1 archive=$2 header=$3 nm=$4 readelf=$5 major=$6 map=${7:-}
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

soname=$("$readelf" -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[[ $soname == "libuffd.so.$major" ]] || fail "SONAME is '$soname', expected libuffd.so.$major"

# Defined dynamic symbols, without the version node itself (type A).
exported=$("$nm" -D --defined-only "$so" | awk '$2 != "A" { print $3 }' | sort)
unversioned=$(grep -v '@@LIBUFFD_' <<<"$exported" || true)
[[ -z $unversioned ]] || fail "exported without a LIBUFFD_ version node:"$'\n'"$unversioned"
names=$(cut -d@ -f1 <<<"$exported" | sort -u)
foreign=$(grep -v '^uffd_' <<<"$names" || true)
[[ -z $foreign ]] || fail "exported outside the uffd_ namespace:"$'\n'"$foreign"

declared=$(grep -oE 'UFFD_API_EXPORT[^(;]*[^a-zA-Z0-9_]uffd_[a-z0-9_]+\(' "$header" |
	grep -oE 'uffd_[a-z0-9_]+\($' | tr -d '(' | sort -u)
[[ -n $declared ]] || fail "found no UFFD_API_EXPORT declaration in $header"
missing=$(comm -23 <(echo "$declared") <(echo "$names"))
extra=$(comm -13 <(echo "$declared") <(echo "$names"))
[[ -z $missing ]] || fail "declared in uffd.h but not exported:"$'\n'"$missing"
[[ -z $extra ]] || fail "exported but not declared in uffd.h:"$'\n'"$extra"

# The names the version script places in a node by name, each with the node: "NAME NODE".
if [[ -n $map ]]; then
	placed=$(sed -e 's,/\*.*\*/,,g' "$map" | awk '
		/^[A-Za-z0-9_.]+[ \t]*\{/ { node = $1; next }
		/^[ \t]*(global|local):/ { next }
		/^[ \t]*[a-z0-9_]+;/ { gsub(/[ \t;]/, ""); print $0, node }')
	while read -r name node; do
		[[ -n $name ]] || continue
		grep -qx "$name@@$node" <<<"$exported" ||
			fail "$name is listed under $node in $map but exported as:"$'\n'"$(grep "^$name@" <<<"$exported" || echo '(not exported)')"
	done <<<"$placed"
fi

# Global symbols the archive defines (upper-case nm types other than U).
globals=$("$nm" --defined-only "$archive" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ { print $3 }' |
	sort -u)
polluting=$(grep -v '^uffd_' <<<"$globals" || true)
[[ -z $polluting ]] || fail "libuffd.a defines globals outside the uffd_ namespace:"$'\n'"$polluting"

if [[ $status -eq 0 ]]; then
	echo "libuffd.so ($soname) exports exactly the $(wc -l <<<"$declared") functions uffd.h declares;"
	echo "libuffd.a defines $(wc -l <<<"$globals") globals, all uffd_*"
fi
exit $status
