#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# ABI test of libuffd-http: libuffd-http.so.MAJOR exports exactly the functions <uffd_http.h>
# declares, each under LIBUFFD_HTTP_0.2, and links libuffd.so for the source object; its archive
# defines no global outside uffd_http_; libuffd.so itself does not need libcurl.
# usage: check-exports-http.sh LIBUFFD_HTTP_SO LIBUFFD_HTTP_A UFFD_HTTP_H LIBUFFD_SO NM READELF MAJOR
set -euo pipefail
[[ $# -eq 7 ]] ||
	{ echo "usage: $0 LIBUFFD_HTTP_SO LIBUFFD_HTTP_A UFFD_HTTP_H LIBUFFD_SO NM READELF MAJOR" >&2; exit 2; }
so=$1 archive=$2 header=$3 core=$4 nm=$5 readelf=$6 major=$7
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

soname=$("$readelf" -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[[ $soname == "libuffd-http.so.$major" ]] || fail "SONAME is '$soname', expected libuffd-http.so.$major"
"$readelf" -d "$so" | grep -q "NEEDED.*\[libuffd.so.$major\]" || fail "$so does not link libuffd.so.$major"
if "$readelf" -d "$core" | grep -q 'NEEDED.*libcurl'; then
	fail "libuffd.so needs libcurl"
fi

exported=$("$nm" -D --defined-only "$so" | awk '$2 != "A" { print $3 }' | sort)
wrong=$(grep -v '@@LIBUFFD_HTTP_0\.2$' <<<"$exported" || true)
[[ -z $wrong ]] || fail "exported outside the LIBUFFD_HTTP_0.2 node:"$'\n'"$wrong"
names=$(cut -d@ -f1 <<<"$exported" | sort -u)
declared=$(grep -oE 'UFFD_API_EXPORT[^(;]*[^a-zA-Z0-9_]uffd_http_[a-z0-9_]+\(' "$header" |
	grep -oE 'uffd_http_[a-z0-9_]+\($' | tr -d '(' | sort -u)
[[ -n $declared ]] || fail "found no UFFD_API_EXPORT declaration in $header"
[[ $names == "$declared" ]] ||
	fail "exported and declared differ:"$'\n'"$(diff <(echo "$declared") <(echo "$names") || true)"

globals=$("$nm" --defined-only "$archive" 2>/dev/null |
	awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ { print $3 }' | sort -u)
polluting=$(grep -v '^uffd_http_' <<<"$globals" || true)
[[ -z $polluting ]] || fail "libuffd-http.a defines globals outside uffd_http_:"$'\n'"$polluting"

if [[ $status -eq 0 ]]; then
	echo "libuffd-http.so ($soname) exports exactly the $(wc -l <<<"$declared") functions uffd_http.h declares"
fi
exit $status
