/* SPDX-License-Identifier: MIT */
/* Kernel conformance: sigbus and sigbus-wp (the kernel selftests' scenarios): with
 * UFFD_FEATURE_SIGBUS every fault raises SIGBUS, in a fork child too, and none reaches the
 * monitor. Through libuffd, on every memory type. */
#include <sys/wait.h>

#include "conf.h"

static bool huge_ok;

struct sb_monitor {
	enum mem m;
	struct uffd *child;
	_Atomic int forks, faults;
};

static int sb_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct sb_monitor *sb = arg;

	(void)u;
	(void)pf;
	atomic_fetch_add(&sb->faults, 1);
	return -EPROTO; /* a fault must never get here */
}

static int sb_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	struct sb_monitor *sb = arg;

	/* The child context inherits SIGBUS: its faults raise signals too. */
	if (!(uffd_features(child) & UFFD_FEATURE_SIGBUS) ||
	    uffd_features(child) != uffd_features(parent))
		return -EPROTO;
	sb->child = child;
	atomic_fetch_add(&sb->forks, 1);
	cov_event(UFFD_EVT_FORK, sb->m);
	return 0;
}

/*
 * Fault in the first half of the area, in this process. Each missing page raises SIGBUS, and the
 * signalled code resolves it with uffd_copy() and tries again; with @wp the copy leaves the page
 * write-protected, so writing the value back raises a second SIGBUS, resolved by un-protecting.
 * Returns the number of pages that signalled once and were then resolved, or -1 on a repeated
 * signal or a wrong value.
 */
static long fault_resolving(struct uffd *u, struct area *a, const char *src, bool wp)
{
	const size_t half = (a->npages + 1) / 2;
	volatile size_t nr, lastnr = (size_t)-1;
	volatile long signalled = 0;
	sigjmp_buf jb;

	bus_catch();
	for (nr = 0; nr < half; nr++) {
		volatile int steps = 1;
		char *page = area_page(a, nr);

		bus_jmp = &jb;
		if (sigsetjmp(jb, 1)) {
			if (steps == 1 && nr == lastnr)
				return -1; /* the same missing page signalled twice */
			lastnr = nr;
			if (steps == 1) {
				steps = 2;
				if (uffd_copy(u, page, src + nr * a->ps, a->ps,
					      wp ? UFFDIO_COPY_MODE_WP : 0))
					return -1;
				signalled++;
			} else if (!wp) {
				return -1; /* a second signal on a page that is there */
			} else if (uffd_writeprotect(u, page, a->ps, false, 0)) {
				return -1;
			}
		}
		if (*(volatile uint64_t *)page != nr + 1)
			return -1;
		*(volatile uint64_t *)page = nr + 1; /* a write-protect fault, if protected */
	}
	bus_jmp = NULL;
	return signalled;
}

/* In the fork child: every page of the first half raises SIGBUS; count them. */
static int child_faults(struct area *a)
{
	const size_t half = (a->npages + 1) / 2;
	volatile size_t nr;
	volatile long signalled = 0;
	sigjmp_buf jb;

	alarm(20);
	bus_catch();
	for (nr = 0; nr < half; nr++) {
		bus_jmp = &jb;
		if (sigsetjmp(jb, 1)) {
			signalled++;
			continue;
		}
		(void)*(volatile uint64_t *)area_page(a, nr);
	}
	return signalled == (long)half ? 0 : 1;
}

static void sigbus_common(enum mem m, bool wp)
{
	const char *scenario = wp ? "sigbus-wp" : "sigbus";
	uint64_t features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_EVENT_FORK | mem_missing_feature(m) |
			    (wp ? mem_wp_features(m) : 0);
	struct uffd *u = conf_open(m, features);
	struct sb_monitor sb = { .m = m };
	size_t npages = mem_huge(m) ? 4 : 32;
	struct server s;
	struct area a;
	char *src;
	int status;
	pid_t pid;
	long n;

	cov_scenario = scenario;
	area_init(&a, m, npages);
	/* The whole source is written, so it is all mapped: see tests/conf.h on hugetlbfs copies. */
	src = tu_map_anon(a.len);
	memset(src, 0x2b, a.len);
	for (size_t i = 0; i < npages; i++)
		*(uint64_t *)(src + i * a.ps) = i + 1;
	conf_register(u, m, a.p, a.len,
		      UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0), NULL);
	uffd_on_pagefault(u, sb_fault, &sb);
	uffd_on_fork(u, sb_fork, &sb);
	server_start(&s, u);

	n = fault_resolving(u, &a, src, wp);
	ck_assert_int_eq(n, (long)(npages + 1) / 2);

	/* Empty the area again, then a fork child faults: SIGBUS there too. */
	ck_assert_int_eq(area_release(&a, 0, npages), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(child_faults(&a));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status 0x%x", status);

	ck_assert_int_eq(server_stop(&s), 0);
	ck_assert_int_eq(atomic_load(&sb.faults), 0);
	ck_assert_int_eq(atomic_load(&sb.forks), 1);
	uffd_close(sb.child);
	cov_feature(UFFD_FEATURE_SIGBUS, m);
	cov_feature(UFFD_FEATURE_EVENT_FORK, m);
	cov_ioctl(_UFFDIO_COPY, m);
	if (wp) {
		cov_ioctl(_UFFDIO_WRITEPROTECT, m);
		if (m != MEM_ANON)
			cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	}
	uffd_close(u);
	munmap(src, a.len);
	area_free(&a);
	cov_pass(scenario, m);
}

START_TEST(sigbus)
{
	sigbus_common((enum mem)_i, false);
}
END_TEST

START_TEST(sigbus_wp)
{
	sigbus_common((enum mem)_i, true);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_sigbus");
	TCase *tc = tcase_create("sigbus");

	huge_ok = conf_start("test_conf_sigbus", true);

	tcase_set_timeout(tc, 30);
	if (conf_can_fork_monitored("sigbus, sigbus-wp")) {
		tcase_add_loop_test(tc, sigbus, 0, conf_mem_end(huge_ok));
		tcase_add_loop_test(tc, sigbus_wp, 0, conf_mem_end(huge_ok));
	}
	suite_add_tcase(s, tc);
	return tu_run(s);
}
