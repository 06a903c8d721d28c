#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's example must stay a program that compiles, warning-free, against the library:
# extract the ```c block that holds main() and build it against the static library.
# usage: check-readme-example.sh README CC INCLUDE_DIR LIBUFFD_A OUT_DIR [FLAGS]
set -euo pipefail
[[ $# -ge 5 ]] || { echo "usage: $0 README CC INCLUDE_DIR LIBUFFD_A OUT_DIR [FLAGS]" >&2; exit 2; }
readme=$1 cc=$2 include=$3 archive=$4 out=$5
read -r -a flags <<<"${6:-}"
mkdir -p "$out"

# Each fenced C block in turn; keep the one that defines main().
awk -v out="$out" '
	/^```c$/ { inblock = 1; n++; file = out "/block" n ".c"; printf "" > file; next }
	/^```$/ && inblock { inblock = 0; close(file); next }
	inblock { print >> file }
' "$readme"
src=
for f in "$out"/block*.c; do
	if grep -q '^int main(' "$f"; then
		src=$f
		break
	fi
done
[[ -n $src ]] || { echo "FAIL: no \`\`\`c block with main() in $readme" >&2; exit 1; }
cp "$src" "$out/example.c"

# As the README says to build it (the compiler's default C dialect), with warnings as errors.
echo "+ $cc ${flags[*]} -Wall -Wextra -Werror -I$include example.c $archive -pthread"
"$cc" "${flags[@]}" -Wall -Wextra -Werror -I"$include" "$out/example.c" \
	-o "$out/example" "$archive" -pthread
echo "the README example ($(wc -l <"$out/example.c") lines) compiles and links"
