/* SPDX-License-Identifier: MIT */
/*
 * The default fault handler on 1 GiB huge pages, wherever the machine has them: one page is
 * reserved for the run through /sys/kernel/mm/hugepages/hugepages-1048576kB and the old count
 * put back afterwards. A machine without them (no such size, or no free contiguous GiB to make
 * one) is "not applicable on this hardware" (tests/hardware-only.txt), not a skipped kernel
 * feature. A handler that assumes 2 MiB pages fails every case here.
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <uffd.h>

#include "huge_defaults.h"
#include "testutil.h"

#define GIB ((size_t)1 << 30)
#define GIB_KB (1UL << 20)

#define TEST_FEATURES                                                    \
	(UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_HUGETLBFS | \
	 UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

START_TEST(default_missing_shared_1g)
{
	hd_run(GIB, HD_MISSING, HD_SHARED);
}
END_TEST

START_TEST(default_missing_private_1g)
{
	hd_run(GIB, HD_MISSING, 0);
}
END_TEST

START_TEST(default_wp_shared_1g)
{
	hd_run(GIB, HD_WP, HD_SHARED);
}
END_TEST

START_TEST(default_wp_private_1g)
{
	hd_run(GIB, HD_WP, 0);
}
END_TEST

START_TEST(default_minor_shared_1g)
{
	hd_run(GIB, HD_MINOR, HD_SHARED);
}
END_TEST

/* An adopted fd: the handler tries 2 MiB first (refused), then 1 GiB. */
START_TEST(default_missing_private_1g_adopted)
{
	hd_run(GIB, HD_MISSING, HD_ADOPTED);
}
END_TEST

START_TEST(default_wp_shared_1g_adopted)
{
	hd_run(GIB, HD_WP, HD_SHARED | HD_ADOPTED);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("hugetlb_1g");
	TCase *tc;
	uint64_t f = 0;
	long old;
	int ret;

	hd_cov_init("test_hugetlb_1g");
	ret = uffd_probe(&f, NULL);
	if (ret < 0)
		tu_skip("no userfaultfd: %s", uffd_strerror(ret));
	if ((f & TEST_FEATURES) != TEST_FEATURES)
		tu_skip("the kernel lacks hugetlbfs userfaultfd features (have 0x%llx)",
			(unsigned long long)f);
	if (getuid() != 0)
		tu_skip("reserving huge pages needs root");
	/* Every case uses one page at a time (Check runs them one after the other). */
	old = tu_hugepages_reserve_kb(GIB_KB, 1);
	if (old < 0) {
		const char *why = old == -2 ?
					  "this machine has no 1 GiB huge pages (no "
					  "/sys/kernel/mm/hugepages/hugepages-1048576kB)" :
					  "cannot reserve a 1 GiB huge page: no free contiguous "
					  "GiB of memory";

		hd_cov(GIB, true, "n/a-hardware", why);
		hd_cov(GIB, false, "n/a-hardware", why);
		tu_not_applicable("hugetlb-1g", "%s", why);
	}

	tc = tu_tcase("defaults_1g", 120, NULL, NULL);
	tcase_add_test(tc, default_missing_shared_1g);
	tcase_add_test(tc, default_missing_private_1g);
	tcase_add_test(tc, default_wp_shared_1g);
	tcase_add_test(tc, default_wp_private_1g);
	tcase_add_test(tc, default_minor_shared_1g);
	tcase_add_test(tc, default_missing_private_1g_adopted);
	tcase_add_test(tc, default_wp_shared_1g_adopted);
	suite_add_tcase(s, tc);
	ret = tu_run(s);
	tu_hugepages_restore_kb(GIB_KB, old);
	printf("hugetlb_1g: ran on 1 GiB pages\n");
	return ret;
}
