/* SPDX-License-Identifier: MIT */
/* Tests for the resolving calls and the default fault handler on hugetlbfs memory (2 MB pages
 * reserved for the run; test_hugetlb_1g runs the defaults on 1 GiB pages). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>

#include "huge_defaults.h"
#include "internal.h"
#include "testutil.h"

#define HPS ((size_t)2 << 20)
#define NR_HUGE 8

#define TEST_FEATURES                                                                             \
	(UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_HUGETLBFS |                          \
	 UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_POISON | \
	 UFFD_FEATURE_MOVE)

/* A fault on hugetlbfs is reported at its huge page's start: tu_expect_fault() is given that. */
static char *map_huge(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		       -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_uint_eq((uintptr_t)p % HPS, 0);
	return p;
}

static char *pattern(size_t len, char seed)
{
	char *p = malloc(len);

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)(seed + (char)(i * 13) + (char)(i >> 12));
	return p;
}

START_TEST(huge_copy)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MISSING_HUGETLBFS);
	char *area = map_huge(2 * HPS);
	char *src = pattern(2 * HPS, 'h');
	struct tu_toucher t;

	tu_kernel_register(u, area, 2 * HPS, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, area + HPS + 12345, false, 0);
	tu_expect_fault(u, area + HPS, 0);
	ck_assert_int_eq(uffd_copy(u, area + HPS, src + HPS, HPS, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[HPS + 12345]);
	ck_assert_int_eq(memcmp(area + HPS, src + HPS, HPS), 0);

	/* A base-page length or address is not a huge page: the kernel's EINVAL. */
	ck_assert_int_eq(uffd_copy(u, area, src, 4096, 0), -EINVAL);
	ck_assert_int_eq(uffd_copy(u, area + 4096, src, HPS, 0), -EINVAL);
	ck_assert_uint_eq(uffd_last_done(), 0);
	/* No zero page on hugetlbfs: the kernel's EINVAL. */
	ck_assert_int_eq(uffd_zeropage(u, area, HPS, 0), -EINVAL);
	uffd_close(u);
	free(src);
	munmap(area, 2 * HPS);
}
END_TEST

/* Huge page 2 of 2 present: page 1 is copied, then -EEXIST, with last_done at 2 MB. */
START_TEST(huge_copy_partial)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MISSING_HUGETLBFS);
	char *area = map_huge(2 * HPS);
	char *src = pattern(2 * HPS, 'P');
	char *other = pattern(HPS, 'O');

	tu_kernel_register(u, area, 2 * HPS, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_copy(u, area + HPS, other, HPS, 0), 0);
	ck_assert_int_eq(uffd_copy(u, area, src, 2 * HPS, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	ck_assert_int_eq(memcmp(area, src, HPS), 0);
	ck_assert_int_eq(memcmp(area + HPS, other, HPS), 0);
	uffd_close(u);
	free(src);
	free(other);
	munmap(area, 2 * HPS);
}
END_TEST

START_TEST(huge_minor_continue)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MINOR_HUGETLBFS);
	int memfd = memfd_create("libuffd-huge", MFD_CLOEXEC | MFD_HUGETLB);
	char *src = pattern(2 * HPS, 'C');
	char *fill, *area;
	struct tu_toucher t;

	ck_assert_int_ge(memfd, 0);
	ck_assert_int_eq(ftruncate(memfd, 2 * HPS), 0);
	/* hugetlbfs has no write(): the page cache is filled through a second mapping. */
	fill = mmap(NULL, 2 * HPS, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	area = mmap(NULL, 2 * HPS, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ck_assert_ptr_ne(fill, MAP_FAILED);
	ck_assert_ptr_ne(area, MAP_FAILED);
	memcpy(fill, src, 2 * HPS);
	tu_kernel_register(u, area, 2 * HPS, UFFDIO_REGISTER_MODE_MINOR);

	tu_touch_start(&t, area + HPS + 99, false, 0);
	tu_expect_fault(u, area + HPS, UFFD_PAGEFAULT_FLAG_MINOR);
	ck_assert_int_eq(uffd_continue(u, area + HPS, HPS, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[HPS + 99]);
	/* Partial: huge page 2 is mapped already. */
	ck_assert_int_eq(uffd_continue(u, area, 2 * HPS, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	ck_assert_int_eq(memcmp(area, src, 2 * HPS), 0);
	uffd_close(u);
	free(src);
	munmap(fill, 2 * HPS);
	munmap(area, 2 * HPS);
	close(memfd);
}
END_TEST

START_TEST(huge_writeprotect)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				 UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	char *area = map_huge(HPS);
	char *src = pattern(HPS, 'W');
	struct tu_toucher t;

	tu_kernel_register(u, area, HPS, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(uffd_copy(u, area, src, HPS, UFFDIO_COPY_MODE_WP), 0);
	tu_touch_start(&t, area + 4096 * 3 + 1, true, 'z');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE);
	ck_assert_int_eq(uffd_writeprotect(u, area, HPS, false, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	tu_touch_join(&t);
	ck_assert_int_eq(area[4096 * 3 + 1], 'z');
	ck_assert_int_eq(area[0], src[0]);
	/* Protect again: a second write faults again. */
	ck_assert_int_eq(uffd_writeprotect(u, area, HPS, true, 0), 0);
	tu_touch_start(&t, area, true, 'y');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(uffd_writeprotect(u, area, HPS, false, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(area[0], 'y');
	uffd_close(u);
	free(src);
	munmap(area, HPS);
}
END_TEST

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

START_TEST(huge_poison_and_move)
{
	struct uffd *u =
		tu_open(UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE);
	char *area = map_huge(2 * HPS);
	char *src = tu_map_anon(HPS);
	struct sigaction sa = { .sa_handler = on_sigbus };
	volatile bool bus = false;

	tu_kernel_register(u, area, 2 * HPS, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_poison(u, area, HPS, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), HPS);
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGBUS, &sa, NULL), 0);
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)*(volatile char *)(area + 5000);
	else
		bus = true;
	ck_assert(bus);
	/* A poison marker counts as empty to a hugetlbfs COPY (pte "none mostly"): it replaces it. */
	memset(src, 7, HPS);
	ck_assert_int_eq(uffd_copy(u, area, src, HPS, 0), 0);
	ck_assert_int_eq(area[5000], 7);

	/* MOVE is for private anonymous memory only: the kernel's EINVAL on hugetlbfs. */
	ck_assert_int_eq(uffd_move(u, area + HPS, src, HPS, 0), -EINVAL);
	ck_assert_int_eq(src[0], 7);
	uffd_close(u);
	munmap(area, 2 * HPS);
	munmap(src, HPS);
}
END_TEST

/*
 * The default fault handler (no callback) on 2 MB pages, memfd mapped shared and private: the
 * writer finishes and the page holds zeros (missing), the old bytes (write-protect) or the page
 * cache's (minor). A base-page handler returns -EINVAL here and the fault comes back for ever.
 */
START_TEST(default_missing_shared)
{
	hd_run(HPS, HD_MISSING, HD_SHARED);
}
END_TEST

START_TEST(default_missing_private)
{
	hd_run(HPS, HD_MISSING, 0);
}
END_TEST

START_TEST(default_wp_shared)
{
	hd_run(HPS, HD_WP, HD_SHARED);
}
END_TEST

START_TEST(default_wp_private)
{
	hd_run(HPS, HD_WP, 0);
}
END_TEST

/* MINOR faults need a page cache to map from: shared only. */
START_TEST(default_minor_shared)
{
	hd_run(HPS, HD_MINOR, HD_SHARED);
}
END_TEST

/* An adopted fd's process is unknown: the handler learns the page size by trying sizes. */
START_TEST(default_missing_private_adopted)
{
	hd_run(HPS, HD_MISSING, HD_ADOPTED);
}
END_TEST

START_TEST(default_wp_shared_adopted)
{
	hd_run(HPS, HD_WP, HD_SHARED | HD_ADOPTED);
}
END_TEST

START_TEST(default_minor_shared_adopted)
{
	hd_run(HPS, HD_MINOR, HD_SHARED | HD_ADOPTED);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hugetlb");
	TCase *tc = tcase_create("hugetlb");
	uint64_t f = 0;
	long old;
	int ret;

	hd_cov_init("test_hugetlb");
	ret = uffd_probe(&f, NULL);
	if (ret < 0)
		tu_skip("no userfaultfd: %s", uffd_strerror(ret));
	if ((f & TEST_FEATURES) != TEST_FEATURES)
		tu_skip("the kernel lacks hugetlbfs userfaultfd features (have 0x%llx)",
			(unsigned long long)f);
	if (getuid() != 0)
		tu_skip("reserving huge pages needs root");
	old = tu_hugepages_reserve(NR_HUGE);
	if (old < 0)
		tu_skip("cannot reserve %d free 2 MB huge pages through /proc/sys/vm/nr_hugepages",
			NR_HUGE);

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, huge_copy);
	tcase_add_test(tc, huge_copy_partial);
	tcase_add_test(tc, huge_minor_continue);
	tcase_add_test(tc, huge_writeprotect);
	tcase_add_test(tc, huge_poison_and_move);
	suite_add_tcase(s, tc);
	tc = tu_tcase("defaults", 30, NULL, NULL);
	tcase_add_test(tc, default_missing_shared);
	tcase_add_test(tc, default_missing_private);
	tcase_add_test(tc, default_wp_shared);
	tcase_add_test(tc, default_wp_private);
	tcase_add_test(tc, default_minor_shared);
	tcase_add_test(tc, default_missing_private_adopted);
	tcase_add_test(tc, default_wp_shared_adopted);
	tcase_add_test(tc, default_minor_shared_adopted);
	suite_add_tcase(s, tc);
	ret = tu_run(s);
	tu_hugepages_restore(old);
	return ret;
}
