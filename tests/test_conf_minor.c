/* SPDX-License-Identifier: MIT */
/* Kernel conformance: minor, minor-wp and minor-collapse (the kernel selftests' scenarios):
 * MINOR faults resolved with UFFDIO_CONTINUE on shmem and hugetlbfs, through libuffd. */
#include "conf.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older C libraries lack it */
#endif

static bool huge_ok;

struct minor_server {
	struct area *a;
	bool wp;
	_Atomic int minor, wp_faults, missing;
	_Atomic int err;
};

/*
 * A minor fault: the page is in the page cache but not mapped here. To show that the monitor
 * decides what gets mapped, it flips every bit of the page (through the alias, which is not
 * registered) before UFFDIO_CONTINUE maps it. A second CONTINUE must then find it mapped.
 */
static int minor_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct minor_server *ms = arg;
	struct area *a = ms->a;
	size_t off = (size_t)((char *)pf->address - a->p) & ~(a->ps - 1);
	int r;

	cov_event(UFFD_EVT_PAGEFAULT, a->mem);
	if (pf->flags & UFFD_PAGEFAULT_FLAG_WP) {
		atomic_fetch_add(&ms->wp_faults, 1);
		return uffd_writeprotect(u, a->p + off, a->ps, false, 0);
	}
	if (!(pf->flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
		atomic_fetch_add(&ms->missing, 1);
		return -EPROTO;
	}
	atomic_fetch_add(&ms->minor, 1);
	for (size_t i = 0; i < a->ps; i += sizeof(uint64_t))
		*(uint64_t *)(a->alias + off + i) = ~*(uint64_t *)(a->alias + off + i);
	r = uffd_continue(u, a->p + off, a->ps, ms->wp ? UFFDIO_CONTINUE_MODE_WP : 0);
	if (r == 0 && uffd_continue(u, a->p + off, a->ps, 0) != -EEXIST)
		r = -EPROTO;
	if (r)
		atomic_store(&ms->err, r);
	return r;
}

static uint8_t page_byte(size_t i)
{
	return (uint8_t)(i % 255);
}

/* Every byte of every page reads as the flipped pattern through the registered mapping. */
static void check_contents(struct area *a)
{
	for (size_t i = 0; i < a->npages; i++) {
		const volatile uint8_t *p = (const volatile uint8_t *)area_page(a, i);
		uint8_t want = (uint8_t)~page_byte(i);

		for (size_t k = 0; k < a->ps; k += 256)
			if (p[k] != want)
				ck_abort_msg("page %zu byte %zu: 0x%x, want 0x%x", i, k, p[k],
					     want);
	}
}

static void minor_common(enum mem m, bool wp, bool collapse, const char *scenario)
{
	uint64_t features = mem_minor_feature(m) | (wp ? mem_wp_features(m) : 0);
	struct uffd *u = conf_open(m, features);
	struct minor_server ms = { .wp = wp };
	size_t npages = collapse ? 1024 : (mem_huge(m) ? 4 : 64);
	struct server s;
	struct area a;

	cov_scenario = scenario;
	area_init_aligned(&a, m, npages, collapse ? (size_t)2 << 20 : 0, 0);
	ms.a = &a;
	conf_register(u, m, a.p, a.len,
		      UFFDIO_REGISTER_MODE_MINOR | (wp ? UFFDIO_REGISTER_MODE_WP : 0), NULL);
	/* Fill the page cache through the mapping that is not registered: no fault anywhere. */
	for (size_t i = 0; i < npages; i++)
		memset(a.alias + i * a.ps, page_byte(i), a.ps);
	uffd_on_pagefault(u, minor_fault, &ms);
	server_start(&s, u);

	check_contents(&a); /* each first read is a minor fault */
	ck_assert_int_eq(atomic_load(&ms.err), 0);
	ck_assert_int_eq(atomic_load(&ms.minor), (int)npages);
	ck_assert_int_eq(atomic_load(&ms.missing), 0);
	ck_assert_int_eq(atomic_load(&ms.wp_faults), 0);
	cov_ioctl(_UFFDIO_CONTINUE, m);
	cov_feature(mem_minor_feature(m), m);

	if (wp) {
		/* CONTINUE_MODE_WP mapped the pages write-protected: a write faults, is let through. */
		ck_assert(pagemap_entry(a.p) & PM_UFFD_WP);
		for (size_t i = 0; i < npages; i++)
			*(volatile uint8_t *)area_page(&a, i) = (uint8_t)~page_byte(i);
		ck_assert_int_eq(atomic_load(&ms.wp_faults), (int)npages);
		ck_assert(!(pagemap_entry(a.p) & PM_UFFD_WP));
		check_contents(&a);
		cov_feature(UFFD_FEATURE_PAGEFAULT_FLAG_WP, m);
		cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
		cov_ioctl(_UFFDIO_WRITEPROTECT, m);
	}
	ck_assert_int_eq(server_stop(&s), 0);

	if (collapse) {
		/* Collapse the registered mapping into huge pages: no fault, no corruption. */
		int r = madvise(a.p, a.len, MADV_COLLAPSE);

		ck_assert_msg(r == 0, "MADV_COLLAPSE: %s", strerror(errno));
		ck_assert_int_eq(smaps_bytes(a.p, "ShmemPmdMapped"), (long)a.len);
		server_start(&s, u);
		check_contents(&a);
		ck_assert_int_eq(server_stop(&s), 0);
		ck_assert_int_eq(atomic_load(&ms.minor), (int)npages);
	}
	uffd_close(u);
	area_free(&a);
	cov_pass(scenario, m);
}

/* shmem, shmem-private, hugetlb, hugetlb-private */
START_TEST(minor)
{
	minor_common((enum mem)(_i + 1), false, false, "minor");
}
END_TEST

START_TEST(minor_wp)
{
	minor_common((enum mem)(_i + 1), true, false, "minor-wp");
}
END_TEST

/* MADV_COLLAPSE works on shmem only. */
START_TEST(minor_collapse)
{
	minor_common(MEM_SHMEM, false, true, "minor-collapse");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_minor");
	TCase *mi = tcase_create("minor"), *co = tcase_create("minor_collapse");

	huge_ok = conf_start("test_conf_minor", false);

	tcase_set_timeout(mi, 30);
	tcase_add_loop_test(mi, minor, 0, conf_mem_end(huge_ok) - 1);
	tcase_add_loop_test(mi, minor_wp, 0, conf_mem_end(huge_ok) - 1);
	tcase_set_timeout(co, 60);
	tcase_add_test(co, minor_collapse);
	suite_add_tcase(s, mi);
	suite_add_tcase(s, co);
	return tu_run(s);
}
