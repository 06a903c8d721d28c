#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Consumer tests: install the built libuffd into a temporary prefix, then build programs against
# that installed copy only, the way users do: with pkg-config (C, C++, fully static C) and with
# find_package(uffd CONFIG). Each program prints uffd_version() and which libuffd it loaded.
#
# usage: run.sh --build-dir=DIR --prefix=DIR --libdir=REL --includedir=REL --work=DIR
#               --cmake=PATH --pkg-config=PATH --cc=PATH [--cxx=PATH] [--flags=FLAGS]
#               --version=X.Y.Z STEP
# STEP: install | c | c_static | cxx | headers | cmake | http
# Exit: 0 pass, 1 fail, 77 skipped (1 instead under LIBUFFD_TEST_STRICT=1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build_dir='' prefix='' libdir='' includedir='' work='' cmake='' pkg_config='' cc='' cxx='' flags=''
version='' step=''

for arg; do
	case $arg in
	--build-dir=*) build_dir=${arg#*=} ;;
	--prefix=*) prefix=${arg#*=} ;;
	--libdir=*) libdir=${arg#*=} ;;
	--includedir=*) includedir=${arg#*=} ;;
	--work=*) work=${arg#*=} ;;
	--cmake=*) cmake=${arg#*=} ;;
	--pkg-config=*) pkg_config=${arg#*=} ;;
	--cc=*) cc=${arg#*=} ;;
	--cxx=*) cxx=${arg#*=} ;;
	--flags=*) flags=${arg#*=} ;;
	--version=*) version=${arg#*=} ;;
	-*) echo "run.sh: unknown option '$arg'" >&2; exit 2 ;;
	*) step=$arg ;;
	esac
done
for v in build_dir prefix libdir includedir work cmake pkg_config cc version step; do
	[[ -n ${!v} ]] || { echo "run.sh: missing --${v//_/-}" >&2; exit 2; }
done

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() {
	if [[ -n ${LIBUFFD_TEST_STRICT:-} && ${LIBUFFD_TEST_STRICT} != 0 ]]; then
		echo "FAIL (skip not allowed, LIBUFFD_TEST_STRICT=1): $*" >&2
		exit 1
	fi
	echo "SKIP: $*" >&2
	exit 77
}
run() { echo "+ $*" >&2; "$@"; }

# The absolute libdir as the installed files name it (a relative one lives under the prefix).
case $libdir in /*) full_libdir=$libdir ;; *) full_libdir=$prefix/$libdir ;; esac
case $includedir in /*) full_includedir=$includedir ;; *) full_includedir=$prefix/$includedir ;; esac
export PKG_CONFIG_PATH=$full_libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
read -r -a flag_array <<<"$flags"
step_dir=$work/$step

# Check a program's two lines: the version, then where libuffd came from.
check_output() { # program expected-origin
	local out
	out=$("$1") || fail "$1 exited with $?"
	printf '%s\n' "$out"
	[[ $(sed -n 1p <<<"$out") == "libuffd $version" ]] ||
		fail "$1 printed '$(sed -n 1p <<<"$out")', expected 'libuffd $version'"
	local origin
	origin=$(sed -n 2p <<<"$out")
	case $2 in
	static) [[ $origin == "loaded static" ]] || fail "$1 should be static, but $origin" ;;
	*) [[ $origin == "loaded $(realpath "$full_libdir")/libuffd.so."* ]] ||
		fail "$1 did not load the installed library from $full_libdir: $origin" ;;
	esac
}

pc() { "$pkg_config" "$@" libuffd; }

install_components() { # prefix logfile
	local component
	for component in Runtime Development; do
		echo "+ $cmake --install $build_dir --prefix $1 --component $component" >&2
		"$cmake" --install "$build_dir" --prefix "$1" --component "$component" >>"$2" 2>&1 ||
			{ cat "$2" >&2; fail "cmake --install (component $component) failed"; }
	done
}

step_install() {
	rm -rf "$prefix" "$step_dir"
	mkdir -p "$step_dir"
	# The library's own components; the optional API reference is not needed here.
	install_components "$prefix" "$step_dir/install.log"

	local f
	for f in "$full_includedir/uffd.h" "$full_includedir/uffd_kernel.h" \
		"$full_libdir/libuffd.so.$version" "$full_libdir/libuffd.a" \
		"$full_libdir/pkgconfig/libuffd.pc" \
		"$full_libdir/cmake/uffd/uffdConfig.cmake" \
		"$full_libdir/cmake/uffd/uffdConfigVersion.cmake" \
		"$full_libdir/cmake/uffd/uffdTargets.cmake"; do
		[[ -f $f ]] || fail "not installed: $f"
	done
	[[ $(readlink "$full_libdir/libuffd.so.0") == "libuffd.so.$version" ]] ||
		fail "libuffd.so.0 does not point at libuffd.so.$version"
	[[ $(readlink "$full_libdir/libuffd.so") == libuffd.so.0 ]] ||
		fail "libuffd.so does not point at libuffd.so.0"

	# The .pc names the prefix installed to, not the one chosen when configuring.
	[[ $(pc --modversion) == "$version" ]] || fail "pkg-config --modversion: $(pc --modversion)"
	[[ $(pc --variable=libdir) == "$full_libdir" ]] ||
		fail "libuffd.pc libdir is $(pc --variable=libdir), expected $full_libdir"
	[[ $(pc --variable=includedir) == "$full_includedir" ]] ||
		fail "libuffd.pc includedir is $(pc --variable=includedir)"
	[[ " $(pc --static --libs) " == *" -pthread "* ]] ||
		fail "pkg-config --static --libs lacks -pthread: $(pc --static --libs)"

	# A staged install (DESTDIR) still names the final prefix inside the .pc.
	local stage=$step_dir/destdir final=/opt/libuffd-consumer-test
	DESTDIR=$stage install_components "$final" "$step_dir/install-destdir.log"
	local staged
	staged=$(find "$stage$final" -name libuffd.pc | head -n 1)
	[[ -n $staged ]] || fail "DESTDIR install wrote no libuffd.pc under $stage$final"
	grep -qx "prefix=$final" "$staged" || fail "DESTDIR leaked into $staged: $(cat "$staged")"

	# The installed tool finds the installed library through its $ORIGIN rpath.
	if [[ -x $prefix/bin/uffd-probe ]]; then
		local out
		out=$(env -u LD_LIBRARY_PATH "$prefix/bin/uffd-probe" --version) ||
			fail "installed uffd-probe does not run"
		[[ $out == *"libuffd $version"* ]] || fail "installed uffd-probe says: $out"
	fi
	echo "installed libuffd $version into $prefix"
}

step_c() {
	mkdir -p "$step_dir"
	# shellcheck disable=SC2046 # pkg-config output is meant to be split
	run "$cc" "${flag_array[@]}" -std=c11 -Wall -Wextra -Werror -pedantic $(pc --cflags) \
		"$here/consumer.c" -o "$step_dir/app" $(pc --libs) -Wl,-rpath,"$full_libdir"
	check_output "$step_dir/app" shared
}

step_c_static() {
	mkdir -p "$step_dir"
	# shellcheck disable=SC2046
	run "$cc" "${flag_array[@]}" -static -std=c11 -Wall -Wextra -Werror $(pc --static --cflags) \
		"$here/consumer.c" -o "$step_dir/app" $(pc --static --libs)
	check_output "$step_dir/app" static
}

step_cxx() {
	[[ -n $cxx ]] || skip "no C++ compiler found (install g++)"
	mkdir -p "$step_dir"
	# shellcheck disable=SC2046
	run "$cxx" "${flag_array[@]}" -std=c++11 -Wall -Wextra -Werror -pedantic $(pc --cflags) \
		"$here/consumer.cpp" -o "$step_dir/app" $(pc --libs) -Wl,-rpath,"$full_libdir"
	check_output "$step_dir/app" shared
}

step_headers() {
	mkdir -p "$step_dir"
	local src
	for src in headers_uffd_first headers_linux_first; do
		# shellcheck disable=SC2046
		run "$cc" -std=c11 -Wall -Wextra -Werror -pedantic $(pc --cflags) \
			-c "$here/$src.c" -o "$step_dir/$src.o"
		if [[ -n $cxx ]]; then
			# shellcheck disable=SC2046
			run "$cxx" -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic $(pc --cflags) \
				-c "$here/$src.c" -o "$step_dir/$src.cxx.o"
		fi
	done
	[[ -n $cxx ]] || skip "C headers compile in both orders; no C++ compiler to check C++"
	echo "<uffd.h> and <linux/userfaultfd.h> compile together in both orders, as C and C++"
}

step_cmake() {
	rm -rf "$step_dir"
	mkdir -p "$step_dir"
	local major=${version%%.*} rest=${version#*.}
	local minor=${rest%%.*}
	local common=(-DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc"
		-DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags")

	run "$cmake" -S "$here/cmake" -B "$step_dir/build" "${common[@]}" \
		-DUFFD_REQUIRE_VERSION="$major.$minor"
	run "$cmake" --build "$step_dir/build"
	check_output "$step_dir/build/app" shared
	check_output "$step_dir/build/app_static" static

	# SameMajorVersion: a newer minor (or another major) than installed must not be found.
	local want
	for want in "$major.$((minor + 1))" "$((major + 1)).0"; do
		if "$cmake" -S "$here/cmake" -B "$step_dir/build-$want" "${common[@]}" \
			-DUFFD_REQUIRE_VERSION="$want" >"$step_dir/build-$want.log" 2>&1; then
			fail "find_package(uffd $want) accepted the installed $version"
		fi
		echo "find_package(uffd $want) rejects $version, as it should"
	done
}

# libuffd-http, when built: its files, its .pc (libcurl private: libuffd.so must not need it),
# a program built with pkg-config, and the CMake component `http`, shared and static.
step_http() {
	rm -rf "$step_dir"
	mkdir -p "$step_dir"
	local f
	for f in "$full_includedir/uffd_http.h" "$full_libdir/libuffd-http.so.$version" \
		"$full_libdir/libuffd-http.a" "$full_libdir/pkgconfig/libuffd-http.pc" \
		"$full_libdir/cmake/uffd/uffdHttpTargets.cmake"; do
		[[ -f $f ]] || fail "not installed: $f"
	done
	[[ $(readlink "$full_libdir/libuffd-http.so.0") == "libuffd-http.so.$version" ]] ||
		fail "libuffd-http.so.0 does not point at libuffd-http.so.$version"
	if readelf -d "$full_libdir/libuffd.so.$version" | grep -q 'NEEDED.*libcurl'; then
		fail "libuffd.so depends on libcurl"
	fi
	[[ $("$pkg_config" --libs libuffd-http) != *-lcurl* ]] ||
		fail "pkg-config --libs libuffd-http names libcurl: it is private"
	[[ $("$pkg_config" --static --libs libuffd-http) == *-lcurl* ]] ||
		fail "pkg-config --static --libs libuffd-http lacks libcurl"

	# shellcheck disable=SC2046
	run "$cc" "${flag_array[@]}" -std=c11 -Wall -Wextra -Werror -pedantic \
		$("$pkg_config" --cflags libuffd-http) "$here/consumer_http.c" -o "$step_dir/app" \
		$("$pkg_config" --libs libuffd-http) -Wl,-rpath,"$full_libdir"
	"$step_dir/app" | grep -q "loaded $(realpath "$full_libdir")/libuffd-http.so" ||
		fail "the pkg-config program did not run against the installed libuffd-http"

	run "$cmake" -S "$here/cmake-http" -B "$step_dir/build" -DCMAKE_PREFIX_PATH="$prefix" \
		-DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags"
	run "$cmake" --build "$step_dir/build"
	"$step_dir/build/app_http" | grep -q "loaded $(realpath "$full_libdir")/libuffd-http.so" ||
		fail "app_http did not run against the installed libuffd-http"
	"$step_dir/build/app_http_static" | grep -q "loaded static" ||
		fail "app_http_static is not static"
	echo "libuffd-http: pkg-config and find_package(uffd COMPONENTS http) work"
}

case $step in
install | c | c_static | cxx | headers | cmake | http) "step_$step" ;;
*) echo "run.sh: unknown step '$step'" >&2; exit 2 ;;
esac
