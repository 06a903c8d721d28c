/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check test programs. */
#include "testutil.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

bool tu_strict(void)
{
	const char *s = getenv("LIBUFFD_TEST_STRICT");

	return s && *s && strcmp(s, "0") != 0;
}

void tu_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr,
		tu_strict() ? "FAIL (skip not allowed, LIBUFFD_TEST_STRICT=1): " : "SKIP: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(tu_strict() ? 1 : 77);
}

int tu_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

int tu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

size_t tu_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

void *tu_map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	return p;
}

void *tu_map_shmem(size_t len, bool shared, int *memfd_out)
{
	int fd = memfd_create("libuffd-test", MFD_CLOEXEC);
	void *p;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	if (memfd_out)
		*memfd_out = fd;
	else
		close(fd);
	return p;
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%ld\n", v) > 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

long tu_hugepages_reserve(long n)
{
	const char *nr = "/proc/sys/vm/nr_hugepages";
	long old = read_long(nr);
	long fr = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");

	if (old < 0)
		return -1;
	if (fr >= n)
		return old;
	if (write_long(nr, old + (n - (fr < 0 ? 0 : fr))) != 0)
		return -1;
	fr = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
	if (fr < n) {
		write_long(nr, old);
		return -1;
	}
	return old;
}

void tu_hugepages_restore(long old)
{
	if (old >= 0)
		write_long("/proc/sys/vm/nr_hugepages", old);
}
