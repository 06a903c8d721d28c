/* SPDX-License-Identifier: MIT */
/* Kernel conformance: wp-fork, wp-fork-with-event, wp-unpopulated (the kernel selftests'
 * scenarios) and wp-async, through libuffd, on every memory type they apply to. */
#include <sys/wait.h>

#include "conf.h"

static bool huge_ok;

/* The calling process's uffd-wp bit for @p, as the fork child reports it: 0, 1, or 2 (error). */
static int child_wp_bit(const void *p)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || pread(fd, &e, sizeof(e), (off_t)((uintptr_t)p / tu_page() * sizeof(e))) !=
			      (ssize_t)sizeof(e))
		return 2;
	close(fd);
	return (e & PM_UFFD_WP) ? 1 : 0;
}

/* ---- wp-fork, wp-fork-with-event ---- */

struct fork_keeper {
	enum mem m;
	_Atomic(struct uffd *) child; /* set by on_fork, on the server's thread */
	_Atomic int forks;
	_Atomic int faults;
};

static int keep_child(struct uffd *parent, struct uffd *child, void *arg)
{
	struct fork_keeper *k = arg;
	struct uffd_range rg;

	/* The child context carries the parent's registrations. */
	if (uffd_range_count(child) != uffd_range_count(parent) ||
	    uffd_range_next(child, NULL, &rg) != 0)
		return -EPROTO;
	atomic_store(&k->child, child);
	atomic_fetch_add(&k->forks, 1);
	cov_event(UFFD_EVT_FORK, k->m);
	return 0;
}

static int count_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct fork_keeper *k = arg;

	(void)u;
	(void)pf;
	atomic_fetch_add(&k->faults, 1);
	return -EPROTO; /* no fault is expected: stop the server and fail */
}

/* Fork, and return what the child saw of the uffd-wp bit of @p. With @event, wait for on_fork
 * (fork() returns once the FORK event is read, before its callback ran) and close the child's
 * context. */
static int fork_and_look(struct uffd *u, struct fork_keeper *k, const void *p, bool event)
{
	int status, forks = atomic_load(&k->forks);
	struct uffd *child;
	pid_t pid;

	atomic_store(&k->child, NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		alarm(10);
		_exit(child_wp_bit(p));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	if (event) {
		double end = conf_now() + 5;

		while (atomic_load(&k->forks) == forks && conf_now() < end)
			usleep(1000);
		ck_assert_int_eq(atomic_load(&k->forks), forks + 1);
	}
	child = atomic_exchange(&k->child, NULL);
	if (child)
		uffd_close(child); /* the child process is gone: its context goes too */
	(void)u;
	return WEXITSTATUS(status);
}

static void wp_fork_common(enum mem m, bool with_event)
{
	const char *scenario = with_event ? "wp-fork-with-event" : "wp-fork";
	uint64_t features = mem_wp_features(m) | (with_event ? UFFD_FEATURE_EVENT_FORK : 0);
	struct uffd *u = conf_open(m, features);
	struct fork_keeper k = { .m = m };
	struct server s;
	struct area a;
	int forks;

	cov_scenario = scenario;
	area_init(&a, m, 2);
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_WP, NULL);
	uffd_on_fork(u, keep_child, &k);
	uffd_on_pagefault(u, count_fault, &k);
	server_start(&s, u); /* reads the FORK event the forking thread waits for */

	/* A present page, write-protected: the child keeps the bit only with EVENT_FORK. */
	*(volatile char *)a.p = 1;
	ck_assert_int_eq(uffd_writeprotect(u, a.p, a.ps, true, 0), 0);
	ck_assert(pagemap_entry(a.p) & PM_UFFD_WP);
	ck_assert_int_eq(fork_and_look(u, &k, a.p, with_event), with_event ? 1 : 0);

	/*
	 * Zap the page table entry: the protection must survive as a marker (or a swap entry).
	 * Shared memory: DONTNEED only drops the mapping. Private: PAGEOUT, which may fail or do
	 * nothing (no swap, hugetlbfs) - the bit must be there either way.
	 */
	if (mem_shared(m))
		ck_assert_int_eq(madvise(a.p, a.ps, MADV_DONTNEED), 0);
	else if (madvise(a.p, a.ps, MADV_PAGEOUT)) {
		/* not supported for this memory: the entry stays as it was */
	}
	ck_assert(pagemap_entry(a.p) & PM_UFFD_WP);
	ck_assert_int_eq(fork_and_look(u, &k, a.p, with_event), with_event ? 1 : 0);

	/* Un-protect: the bit goes; a write then faults nowhere. */
	ck_assert_int_eq(uffd_writeprotect(u, a.p, a.ps, false, 0), 0);
	ck_assert(!(pagemap_entry(a.p) & PM_UFFD_WP));
	*(volatile char *)a.p = 2;
	ck_assert(!(pagemap_entry(a.p) & PM_UFFD_WP));

	ck_assert_int_eq(server_stop(&s), 0);
	forks = atomic_load(&k.forks);
	ck_assert_int_eq(forks, with_event ? 2 : 0);
	ck_assert_int_eq(atomic_load(&k.faults), 0);
	cov_ioctl(_UFFDIO_WRITEPROTECT, m);
	if (with_event)
		cov_feature(UFFD_FEATURE_EVENT_FORK, m);
	if (m != MEM_ANON)
		cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	conf_unregister(u, m, a.p, a.len);
	uffd_close(u);
	area_free(&a);
	cov_pass(scenario, m);
}

START_TEST(wp_fork)
{
	wp_fork_common((enum mem)_i, false);
}
END_TEST

START_TEST(wp_fork_with_event)
{
	wp_fork_common((enum mem)_i, true);
}
END_TEST

/* ---- wp-unpopulated ---- */

struct wp_server {
	enum mem m;
	_Atomic int wp_faults, other_faults;
	_Atomic int err;
};

/* Un-protect the faulting page: what a write-protect monitor does after it saved the page. */
static int wp_unprotect(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct wp_server *w = arg;
	size_t ps = mem_ps(w->m);
	int r;

	if (!(pf->flags & UFFD_PAGEFAULT_FLAG_WP) || !(pf->flags & UFFD_PAGEFAULT_FLAG_WRITE)) {
		atomic_fetch_add(&w->other_faults, 1);
		return -EPROTO;
	}
	atomic_fetch_add(&w->wp_faults, 1);
	cov_event(UFFD_EVT_PAGEFAULT, w->m);
	r = uffd_writeprotect(u, (void *)((uintptr_t)pf->address & ~(ps - 1)), ps, false, 0);
	if (r)
		atomic_store(&w->err, r);
	return r;
}

START_TEST(wp_unpopulated)
{
	const size_t ps = tu_page();
	struct uffd *plain = conf_open(MEM_ANON, UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	struct uffd *u;
	struct wp_server w = { .m = MEM_ANON };
	struct server s;
	char *p = tu_map_anon(4 * ps);

	cov_scenario = "wp-unpopulated";
	/* Without the feature, protecting a never-touched page does nothing, silently. */
	conf_register(plain, MEM_ANON, p, 4 * ps, UFFDIO_REGISTER_MODE_WP, NULL);
	ck_assert_int_eq(uffd_writeprotect(plain, p, ps, true, 0), 0);
	ck_assert(!(pagemap_entry(p) & PM_UFFD_WP));
	uffd_close(plain);

	u = conf_open(MEM_ANON, UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED);
	conf_register(u, MEM_ANON, p, 4 * ps, UFFDIO_REGISTER_MODE_WP, NULL);
	uffd_on_pagefault(u, wp_unprotect, &w);
	server_start(&s, u);

	/* A marker on the empty entry, and off again. */
	ck_assert_int_eq(uffd_writeprotect(u, p, ps, true, 0), 0);
	ck_assert(pagemap_entry(p) & PM_UFFD_WP);
	ck_assert_int_eq(uffd_writeprotect(u, p, ps, false, 0), 0);
	ck_assert(!(pagemap_entry(p) & PM_UFFD_WP));

	/* Zapping drops the marker; the next write then faults nowhere. */
	ck_assert_int_eq(uffd_writeprotect(u, p, ps, true, 0), 0);
	ck_assert_int_eq(madvise(p, ps, MADV_DONTNEED), 0);
	ck_assert(!(pagemap_entry(p) & PM_UFFD_WP));
	*(volatile char *)p = 1;
	ck_assert(!(pagemap_entry(p) & PM_UFFD_WP));
	ck_assert_int_eq(madvise(p, ps, MADV_DONTNEED), 0);

	/* A read over a marker maps the zero page and faults nowhere. */
	ck_assert_int_eq(uffd_writeprotect(u, p, ps, true, 0), 0);
	ck_assert_int_eq(*(volatile char *)p, 0);
	ck_assert_int_eq(atomic_load(&w.wp_faults), 0);

	/* A write over a marker is a write-protect fault: the monitor hears of the empty page. */
	ck_assert_int_eq(uffd_writeprotect(u, p + ps, ps, true, 0), 0);
	*(volatile char *)(p + ps) = 7;
	ck_assert_int_eq(*(volatile char *)(p + ps), 7);
	ck_assert_int_eq(atomic_load(&w.wp_faults), 1);
	ck_assert_int_eq(madvise(p, 2 * ps, MADV_DONTNEED), 0);

	ck_assert_int_eq(server_stop(&s), 0);
	ck_assert_int_eq(atomic_load(&w.other_faults), 0);
	ck_assert_int_eq(atomic_load(&w.err), 0);
	cov_feature(UFFD_FEATURE_WP_UNPOPULATED, MEM_ANON);
	cov_feature(UFFD_FEATURE_PAGEFAULT_FLAG_WP, MEM_ANON);
	cov_ioctl(_UFFDIO_WRITEPROTECT, MEM_ANON);
	uffd_close(u);
	munmap(p, 4 * ps);
	cov_pass("wp-unpopulated", MEM_ANON);
}
END_TEST

/* ---- wp-async ---- */

/*
 * WP_ASYNC: the kernel resolves write-protect faults itself (un-protecting the page) and sends
 * nothing; the protection bits then say which pages were written - what a dirty tracker needs.
 */
START_TEST(wp_async)
{
	const enum mem m = (enum mem)_i;
	struct uffd *u = conf_open(m, mem_wp_features(m) | UFFD_FEATURE_WP_ASYNC);
	struct wp_server w = { .m = m };
	struct server s;
	struct area a;

	cov_scenario = "wp-async";
	/* Asking for WP_ASYNC grants WP_UNPOPULATED too. */
	ck_assert(uffd_features(u) & UFFD_FEATURE_WP_UNPOPULATED);
	area_init(&a, m, 4);
	memset(a.p, 3, 2 * a.ps); /* pages 0 and 1 present, 2 and 3 never touched */
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_WP, NULL);
	uffd_on_pagefault(u, wp_unprotect, &w);
	server_start(&s, u);
	ck_assert_int_eq(uffd_writeprotect(u, a.p, a.len, true, 0), 0);
	for (size_t i = 0; i < 4; i++)
		ck_assert_msg(pagemap_entry(area_page(&a, i)) & PM_UFFD_WP, "page %zu", i);

	/* Write pages 1 and 2: no message, the writes go through, only their bits go. */
	*(volatile char *)area_page(&a, 1) = 4;
	*(volatile char *)area_page(&a, 2) = 5;
	ck_assert_int_eq(*(volatile char *)area_page(&a, 1), 4);
	ck_assert_int_eq(*(volatile char *)area_page(&a, 2), 5);
	ck_assert(pagemap_entry(area_page(&a, 0)) & PM_UFFD_WP);
	ck_assert(!(pagemap_entry(area_page(&a, 1)) & PM_UFFD_WP));
	ck_assert(!(pagemap_entry(area_page(&a, 2)) & PM_UFFD_WP));
	ck_assert(pagemap_entry(area_page(&a, 3)) & PM_UFFD_WP);

	ck_assert_int_eq(server_stop(&s), 0);
	ck_assert_int_eq(atomic_load(&w.wp_faults) + atomic_load(&w.other_faults), 0);
	cov_feature(UFFD_FEATURE_WP_ASYNC, m);
	if (m == MEM_ANON)
		cov_feature(UFFD_FEATURE_WP_UNPOPULATED, m);
	else
		cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	uffd_close(u);
	area_free(&a);
	cov_pass("wp-async", m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_wp");
	TCase *fk = tcase_create("wp_fork"), *un = tcase_create("wp_unpopulated"),
	      *as = tcase_create("wp_async");

	huge_ok = conf_start("test_conf_wp", true);

	tcase_set_timeout(fk, 30);
	tcase_add_loop_test(fk, wp_fork, 0, conf_mem_end(huge_ok));
	if (conf_can_fork_monitored("wp-fork-with-event"))
		tcase_add_loop_test(fk, wp_fork_with_event, 0, conf_mem_end(huge_ok));
	tcase_set_timeout(un, 30);
	tcase_add_test(un, wp_unpopulated);
	tcase_set_timeout(as, 30);
	tcase_add_loop_test(as, wp_async, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, fk);
	suite_add_tcase(s, un);
	suite_add_tcase(s, as);
	return tu_run(s);
}
