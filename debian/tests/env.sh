# shellcheck shell=bash
# SPDX-License-Identifier: MIT
# Sourced by the autopkgtest scripts: where the packages are installed, and a scratch directory.
# UFFD_TEST_ROOT: a directory the packages were unpacked into (dpkg -x), instead of the system;
#   pkg-config (PKG_CONFIG_SYSROOT_DIR, PKG_CONFIG_PATH), CMake (CMAKE_PREFIX_PATH), the dynamic
#   linker (LD_LIBRARY_PATH) and PATH are pointed there.
# AUTOPKGTEST_TMP: the scratch directory (autopkgtest gives one; otherwise a new one, removed
#   at exit).
set -euo pipefail

root=${UFFD_TEST_ROOT:-}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
if [[ -n $root ]]; then
	root=$(cd "$root" && pwd)
	export PKG_CONFIG_SYSROOT_DIR=$root
	export PKG_CONFIG_PATH=$root/usr/lib/$multiarch/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
	export CMAKE_PREFIX_PATH=$root/usr
	export LD_LIBRARY_PATH=$root/usr/lib/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export PATH=$root/usr/bin:$PATH
fi
if [[ -n ${AUTOPKGTEST_TMP:-} ]]; then
	work=$AUTOPKGTEST_TMP
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# uses_installed PROGRAM LIBRARY: the program loads LIBRARY from the install root's libdir.
uses_installed() {
	local got
	got=$(ldd "$1" | awk -v lib="$2" '$1 == lib { print $3 }')
	[[ $got == "$root/usr/lib/$multiarch/$2" ]] ||
		fail "$1 loads $2 from '${got:-nowhere}', not from $root/usr/lib/$multiarch"
}
