/* SPDX-License-Identifier: MIT */
/*
 * Fork safety of the library's process-wide state (review finding 12): a fork() while another
 * thread is inside uffd_probe() or the default fault handler must leave the child able to use
 * both. A global lock held at the fork stays held for ever in the child, where its owner does not
 * exist; so a thread keeps running those paths while the main thread forks many children, each
 * of which must probe, resolve a fault with the default handler, and exit 0 within a timeout.
 *
 * The main program never probes: the first successful probe is cached, and only the uncached
 * path ever took the probe lock. Each test runs in its own Check child.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffd.h>

#include "defaults.h"
#include "testutil.h"

#define FORKS 150
#define CHILD_MS 3000
#define HPS ((size_t)2 << 20)

static _Atomic bool stop;
static _Atomic unsigned long rounds;

/* Fork FORKS children that each run @child and must exit 0 within CHILD_MS. Returns the number
 * of the first child that did not (0: all did); *@status gets its wait status (-1: killed). */
static int fork_children(int (*child)(void *), void *arg, int *status)
{
	for (int i = 1; i <= FORKS; i++) {
		pid_t pid = fork();
		int st;

		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			_exit(child(arg));
		st = tu_wait_child(pid, CHILD_MS);
		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			*status = st;
			return i;
		}
	}
	return 0;
}

static void wait_rounds(unsigned long n)
{
	double end = tu_now() + 5.0;

	while (atomic_load(&rounds) < n && tu_now() < end)
		tu_sleep_ms(1);
	ck_assert_uint_ge(atomic_load(&rounds), n);
}

/* ---- uffd_probe() ---- */

static struct rlimit saved_nofile;

/* With no fd to be had, every probe fails (-EMFILE), is not cached, and so runs in full. */
static void *probe_loop(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		(void)uffd_probe(NULL, NULL);
		atomic_fetch_add(&rounds, 1);
	}
	return NULL;
}

static int probe_child(void *arg)
{
	uint64_t f = 0;

	(void)arg;
	if (setrlimit(RLIMIT_NOFILE, &saved_nofile) != 0)
		return 3;
	return uffd_probe(&f, NULL) == 0 && f != 0 ? 0 : 2;
}

START_TEST(probe_while_forking)
{
	struct rlimit none;
	pthread_t t;
	int bad, st = 0;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
	none = saved_nofile;
	none.rlim_cur = 0;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
	ck_assert_int_eq(uffd_probe(NULL, NULL), -EMFILE);

	atomic_store(&stop, false);
	atomic_store(&rounds, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, probe_loop, NULL), 0);
	wait_rounds(100);
	bad = fork_children(probe_child, NULL, &st);
	atomic_store(&stop, true);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
	ck_assert_msg(bad == 0, "child %d of %d could not probe (wait status %d%s)", bad, FORKS, st,
		      st == -1 ? ": stuck, killed" : "");
}
END_TEST

/* ---- the default handler ---- */

struct handler_loop {
	struct uffd *u;
	struct uffd_pagefault pf; /* a huge page already resolved: the handler says -EEXIST */
	_Atomic int unexpected;
};

/*
 * Mostly the zero source, where the lock used to be, and the whole handler now and then: the
 * handler's syscalls wait for the mm lock that fork() holds while it copies the address space,
 * so a thread that is mostly in them is almost never caught by a fork in the middle of a lock.
 */
static void *handler_loop(void *arg)
{
	struct handler_loop *h = arg;
	int r;

	while (!atomic_load(&stop)) {
		for (int i = 0; i < 100000; i++)
			if (!uffd_zero_source(HPS))
				atomic_store(&h->unexpected, -ENOMEM);
		r = uffd_default_pagefault(h->u, &h->pf, NULL);

		if (r != -EEXIST)
			atomic_store(&h->unexpected, r ? r : -EALREADY);
		atomic_fetch_add(&rounds, 1);
	}
	return NULL;
}

static void *map_huge(void)
{
	void *p = mmap(NULL, HPS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* A fresh context and huge page of its own; resolve a missing fault there as the default does. */
static int handler_child(void *arg)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_MISSING_HUGETLBFS };
	struct uffd_pagefault pf = { 0 };
	struct uffd *u;
	char *area = map_huge();

	(void)arg;
	if (!area || uffd_open(&u, &cfg) != 0)
		return 3;
	if (uffd_register(u, area, HPS, UFFDIO_REGISTER_MODE_MISSING, NULL) != 0)
		return 4;
	pf.address = area + HPS - 4096;
	if (uffd_default_pagefault(u, &pf, NULL) != 0)
		return 2;
	for (size_t i = 0; i < HPS; i += 512)
		if (area[i])
			return 5;
	uffd_close(u);
	return 0;
}

START_TEST(default_handler_while_forking)
{
	struct handler_loop h = { .u = tu_open(UFFD_FEATURE_MISSING_HUGETLBFS) };
	char *area = map_huge();
	pthread_t t;
	int bad, st = 0;

	ck_assert_ptr_nonnull(area);
	ck_assert_int_eq(uffd_register(h.u, area, HPS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	h.pf.address = area;
	ck_assert_int_eq(uffd_default_pagefault(h.u, &h.pf, NULL), 0);

	atomic_store(&stop, false);
	atomic_store(&rounds, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, handler_loop, &h), 0);
	wait_rounds(10);
	bad = fork_children(handler_child, NULL, &st);
	atomic_store(&stop, true);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(bad == 0,
		      "child %d of %d could not use the default handler (wait status %d%s)", bad,
		      FORKS, st, st == -1 ? ": stuck, killed" : "");
	ck_assert_int_eq(atomic_load(&h.unexpected), 0);
	uffd_close(h.u);
	munmap(area, HPS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("forksafe");
	TCase *tc;
	pid_t pid;
	long old;
	int st, ret;

	/* Can this machine open a userfaultfd? Asked in a child, so that no probe is cached here. */
	pid = fork();
	if (pid == 0)
		_exit(uffd_probe(NULL, NULL) == 0 ? 0 : 1);
	st = tu_wait_child(pid, 10000);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		tu_skip("cannot open a userfaultfd to probe the kernel");
	if (getuid() != 0)
		tu_skip("reserving huge pages needs root");
	/* The parent's page, and one at a time for the children (each exits before the next). */
	old = tu_hugepages_reserve(4);
	if (old < 0)
		tu_skip("cannot reserve 4 free 2 MB huge pages through /proc/sys/vm/nr_hugepages");

	tc = tu_tcase("forksafe", 60, NULL, NULL);
	tcase_add_test(tc, probe_while_forking);
	tcase_add_test(tc, default_handler_while_forking);
	suite_add_tcase(s, tc);
	ret = tu_run(s);
	tu_hugepages_restore(old);
	return ret;
}
