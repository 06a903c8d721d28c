#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The guide shows code only by including the files under docs/snippets, which the tests build
# and run: no page or header comment holds a copy. Every fenced block names its language, and
# none is C; every file a page includes exists, with its markers; every snippet is shown.
# usage: check-guide.sh SOURCE_DIR
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 SOURCE_DIR" >&2; exit 2; }
src=$1
status=0
fail() { echo "FAIL: $*" >&2; status=1; }

pages=("$src"/docs/*.md)
headers=("$src"/include/*.h)

# Fences: ``` or ~~~ must name a language that is not C.
while IFS=: read -r file line text; do
	lang=$(sed -E 's/^[[:space:]]*(```|~~~)[[:space:]]*//; s/[{}.]//g; s/[[:space:]].*//' <<<"$text")
	case ${lang,,} in
	'') fail "$file:$line: a fenced block without a language (C belongs in docs/snippets)" ;;
	c | h | cpp | c++ | cxx) fail "$file:$line: C code in a page: put it in docs/snippets and \\snippet it" ;;
	esac
done < <(grep -nHE '^[[:space:]]*(```|~~~)' "${pages[@]}" | awk -F: '{ if (++n[$1] % 2 == 1) print }')

# Doxygen's own code blocks.
if grep -nHE '(^|[^[:alnum:]])[@\\](code|verbatim)([^[:alnum:]]|$)' "${pages[@]}" "${headers[@]}"; then
	fail "a @code or @verbatim block: put the code in docs/snippets and \\snippet it"
fi

# Every include of a snippet names a file that exists, and its markers appear exactly twice.
declare -A shown=()
while IFS= read -r ref; do
	read -r cmd file marker <<<"$ref"
	path=$src/docs/snippets/$file
	if [[ ! -f $path ]]; then
		fail "$cmd $file: no such file in docs/snippets"
		continue
	fi
	shown[$file]=1
	if [[ $cmd == *snippet* ]]; then
		n=$(grep -cF "[$marker]" "$path" || true)
		[[ $n -eq 2 ]] || fail "$cmd $file $marker: the marker [$marker] appears $n times in $file, not 2"
	fi
done < <(grep -hoE '[@\\](snippet|include)(\{[a-z]+\})?[[:space:]]+[A-Za-z0-9_.-]+([[:space:]]+[A-Za-z0-9_-]+)?' \
	"${pages[@]}" "${headers[@]}" || true)

for path in "$src"/docs/snippets/*.c; do
	file=${path##*/}
	[[ -n ${shown[$file]:-} ]] || fail "docs/snippets/$file is shown by no page: show it or remove it"
done

if [[ $status -eq 0 ]]; then
	echo "guide: ${#shown[@]} snippet files shown, no code copied into ${#pages[@]} pages"
fi
exit $status
