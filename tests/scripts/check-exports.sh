#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# ABI test: libuffd.so exports exactly the functions <uffd.h> declares with UFFD_API_EXPORT, each
# under a LIBUFFD_ version node, and its SONAME is libuffd.so.MAJOR; libuffd.a defines no global
# symbol outside the uffd_ namespace, so static linking cannot clash with a user's names.
# usage: check-exports.sh LIBUFFD_SO LIBUFFD_A UFFD_H NM READELF MAJOR
set -euo pipefail
[[ $# -eq 6 ]] || { echo "usage: $0 LIBUFFD_SO LIBUFFD_A UFFD_H NM READELF MAJOR" >&2; exit 2; }
so=$1 archive=$2 header=$3 nm=$4 readelf=$5 major=$6
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
