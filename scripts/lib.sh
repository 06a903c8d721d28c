# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts
# SPDX-License-Identifier: MIT
# Shared by scripts/test and scripts/demo (sourced, not run): logging, and making sure the tools
# and packages the build needs are there, installing them with apt-get when running as root.

LIBUFFD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\n==> %s\n' "$*" >&2; }
die() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

jobs_default() { nproc 2>/dev/null || echo 2; }

# CMake must be at least 3.25 (Debian 12 has 3.25.1).
cmake_ok() {
	local v
	v=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
	[[ -n $v ]] || return 1
	read -r major minor <<<"$v"
	((major > 3 || (major == 3 && minor >= 25)))
}

# clang can link programs with ThreadSanitizer and libFuzzer (the compiler-rt runtimes).
clang_rt_ok() {
	local dir ok=0
	command -v clang >/dev/null || return 1
	dir=$(mktemp -d) || return 1
	printf 'int main(void) { return 0; }\n' >"$dir/t.c"
	printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$dir/f.c"
	clang -fsanitize=thread -o "$dir/t" "$dir/t.c" 2>/dev/null &&
		clang -fsanitize=fuzzer,address,undefined -o "$dir/f" "$dir/f.c" 2>/dev/null || ok=1
	rm -rf "$dir"
	return $ok
}

# Each requirement is "what:package": what is a command name, "pc=<module>" for a pkg-config
# module, "file=<path>" for a header or library, or "clang-rt" for clang's sanitizer runtimes.
have() {
	case $1 in
	cmake) cmake_ok ;;
	clang-rt) clang_rt_ok ;;
	pc=*) command -v pkg-config >/dev/null && pkg-config --exists "${1#pc=}" ;;
	file=*) [[ -e ${1#file=} ]] ;;
	*) command -v "$1" >/dev/null ;;
	esac
}

# ensure_packages REQUIREMENT...: install what is missing (root with apt-get), or print the
# command to run and fail.
ensure_packages() {
	local req missing=() pkgs=()
	for req; do
		if ! have "${req%:*}"; then
			missing+=("${req%:*}")
			[[ " ${pkgs[*]} " == *" ${req##*:} "* ]] || pkgs+=("${req##*:}")
		fi
	done
	((${#pkgs[@]})) || return 0

	local line="apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
	echo "missing: ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then
		die "run this as root first (or run this script as root), then try again:
    sudo sh -c '$line'"
	fi
	command -v apt-get >/dev/null ||
		die "no apt-get on this system: install the equivalent of: ${pkgs[*]}"
	echo "+ $line"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null || die "apt-get update failed"
	apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${pkgs[@]}" </dev/null ||
		die "apt-get install failed: ${pkgs[*]}"

	for req; do
		have "${req%:*}" || die "still missing after installing: ${req%:*} (package ${req##*:})"
	done
}

# What building the library and the demo needs.
BASE_REQUIREMENTS=(
	cmake:cmake make:make gcc:gcc pkg-config:pkg-config
	file=/usr/include/linux/userfaultfd.h:linux-libc-dev
	file=/usr/include/stdio.h:libc6-dev
)
# What the test suite needs on top.
TEST_REQUIREMENTS=(
	"${BASE_REQUIREMENTS[@]}"
	g++:g++ doxygen:doxygen python3:python3 pc=check:check setpriv:util-linux
	nm:binutils readelf:binutils
	man:man-db groff:groff-base strace:strace valgrind:valgrind
	# libuffd-http and its tests: libcurl, and a real server with a certificate made per run.
	pc=libcurl:libcurl4-openssl-dev nginx:nginx-light openssl:openssl
	# The ABI tests (abi_baseline*): abidw and abidiff.
	abidw:abigail-tools abidiff:abigail-tools
)

print_machine() {
	echo "kernel:   $(uname -srm)"
	echo "user:     $(id -un 2>/dev/null || id -u) (uid $(id -u))"
	echo "cmake:    $(cmake --version | head -n 1)"
	echo "cc:       $(gcc --version | head -n 1)"
	if command -v clang >/dev/null; then echo "clang:    $(clang --version | head -n 1)"; fi
	if command -v doxygen >/dev/null; then echo "doxygen:  $(doxygen --version)"; fi
	if command -v valgrind >/dev/null; then echo "valgrind: $(valgrind --version)"; fi
	echo "sysctl:   vm.unprivileged_userfaultfd=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo '?')"
}
