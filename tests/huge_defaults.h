/* SPDX-License-Identifier: MIT */
/*
 * The default fault handler on hugetlbfs, at any huge page size: one scenario, run by
 * test_hugetlb (2 MiB) and test_hugetlb_1g (1 GiB). A thread writes one byte near the END of a
 * huge page (a base-page handler would pick the wrong page there) while the test dispatches with
 * no fault callback; the writer must finish and the page must hold what the default promises.
 */
#ifndef UFFD_HUGE_DEFAULTS_H
#define UFFD_HUGE_DEFAULTS_H

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uffd.h>

#include "testutil.h"

#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26
#endif

enum hd_kind { HD_MISSING, HD_WP, HD_MINOR };
/* How: the memfd mapped shared (else private); the context adopted from a raw fd, so that its
 * process is unknown and the handler must find the page size by trying (else uffd_open(), which
 * asks the kernel with PROCMAP_QUERY). */
enum { HD_SHARED = 1, HD_ADOPTED = 2 };

/* A hugetlbfs memfd of one @hps page (MFD_HUGE_*: log2 of the size at MFD_HUGE_SHIFT). */
static inline int hd_memfd(size_t hps)
{
	unsigned flags = MFD_CLOEXEC | MFD_HUGETLB |
			 ((unsigned)__builtin_ctzll((unsigned long long)hps) << MFD_HUGE_SHIFT);
	int fd = memfd_create("libuffd-huge-default", flags);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)hps), 0);
	return fd;
}

static inline char *hd_map(int fd, size_t hps, bool shared)
{
	char *p = mmap(NULL, hps, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_uint_eq((uintptr_t)p % hps, 0);
	return p;
}

/*
 * The page sizes the defaults ran on, for tests/COVERAGE.md: rows "pagesize SIZE MEMORY ok -
 * KIND -" (or "n/a-hardware" with the reason) in $LIBUFFD_COVERAGE_DIR/PROGRAM.tsv, the format
 * of tests/conf.h, which tests/scripts/coverage.sh reads. Each row is one O_APPEND write.
 */
static char hd_cov_path[512];

static inline void hd_cov_init(const char *program)
{
	const char *dir = getenv("LIBUFFD_COVERAGE_DIR");
	int fd;

	if (!dir || !*dir)
		return;
	mkdir(dir, 0755);
	snprintf(hd_cov_path, sizeof(hd_cov_path), "%s/%s.tsv", dir, program);
	fd = open(hd_cov_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		hd_cov_path[0] = '\0';
	else
		close(fd);
}

static inline void hd_cov(size_t hps, bool shared, const char *status, const char *what)
{
	char line[400];
	int fd, n;

	if (!hd_cov_path[0])
		return;
	n = snprintf(line, sizeof(line), "pagesize\t%zu%s\t%s\t%s\t-\t%s\t-\n",
		     hps >= ((size_t)1 << 30) ? hps >> 30 : hps >> 20,
		     hps >= ((size_t)1 << 30) ? "G" : "M", shared ? "hugetlb" : "hugetlb-private",
		     status, what);
	fd = open(hd_cov_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || n <= 0 || (size_t)n >= sizeof(line))
		return;
	if (write(fd, line, (size_t)n) != n) {
		/* a lost row shows as a size that did not run */
	}
	close(fd);
}

static inline struct uffd *hd_open(uint64_t features, bool adopted)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u = NULL;
	int fd;

	if (!adopted)
		return tu_open(features);
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	return u;
}

/* Dispatch (default handler) until the writer is through: 0, a dispatch error, or -ETIMEDOUT. */
static inline int hd_serve(struct uffd *u, struct tu_toucher *t, double seconds)
{
	double end = tu_now() + seconds;

	while (!atomic_load(&t->done)) {
		int r;

		if (tu_now() > end)
			return -ETIMEDOUT;
		r = uffd_dispatch(u, 50);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Whether [p, p + len) holds only @c. */
static inline bool hd_all(const char *p, size_t len, char c)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != c)
			return false;
	return true;
}

static inline void hd_run(size_t hps, enum hd_kind kind, unsigned how)
{
	static const uint64_t features[] = {
		[HD_MISSING] = UFFD_FEATURE_MISSING_HUGETLBFS,
		[HD_WP] = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
		[HD_MINOR] = UFFD_FEATURE_MINOR_HUGETLBFS,
	};
	static const uint64_t modes[] = {
		[HD_MISSING] = UFFDIO_REGISTER_MODE_MISSING,
		[HD_WP] = UFFDIO_REGISTER_MODE_WP,
		[HD_MINOR] = UFFDIO_REGISTER_MODE_MINOR,
	};
	/* What the page holds apart from the written byte: zeros, or what was there before. */
	static const char before[] = { [HD_MISSING] = 0, [HD_WP] = 'a', [HD_MINOR] = 'm' };
	const size_t off = hps - 3 * tu_page() + 5;
	struct uffd *u = hd_open(features[kind], how & HD_ADOPTED);
	int fd = hd_memfd(hps);
	char *area = hd_map(fd, hps, how & HD_SHARED);
	char *fill = NULL;
	struct uffd_stats st;
	struct tu_toucher t;
	int r;

	if (kind == HD_WP)
		memset(area, 'a', hps); /* present (private: our own copy), then protected */
	if (kind == HD_MINOR) {
		fill = hd_map(fd, hps, true); /* hugetlbfs has no write(): fill the page cache */
		memset(fill, 'm', hps);
	}
	ck_assert_int_eq(uffd_register(u, area, hps, modes[kind], NULL), 0);
	if (kind == HD_WP)
		ck_assert_int_eq(uffd_writeprotect(u, area, hps, true, 0), 0);

	tu_touch_start(&t, area + off, true, 'x');
	r = hd_serve(u, &t, 20.0);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	if (r) {
		/* Closing the fd wakes the writer whatever went wrong: the thread always ends. */
		uffd_close(u);
		u = NULL;
	}
	tu_touch_join(&t);
	ck_assert_msg(r == 0, "the default handler did not resolve the fault: %s",
		      uffd_strerror(r));
	/* Resolved, not woken to fault again. */
	ck_assert_uint_ge(st.faults, 1);
	ck_assert_uint_eq(st.faults_woken, 0);

	ck_assert_int_eq(area[off], 'x');
	ck_assert_msg(hd_all(area, off, before[kind]) &&
			      hd_all(area + off + 1, hps - off - 1, before[kind]),
		      "the huge page does not hold what the default promises");
	if (fill)
		ck_assert_int_eq(fill[off], 'x'); /* CONTINUE mapped the page cache's page */

	hd_cov(hps, how & HD_SHARED, "ok", (const char *[]){ "missing", "wp", "minor" }[kind]);
	uffd_close(u);
	if (fill)
		munmap(fill, hps);
	munmap(area, hps);
	close(fd);
}

#endif /* UFFD_HUGE_DEFAULTS_H */
