/* SPDX-License-Identifier: MIT */
/* Waiting for a batch: timeouts kept in every mode of the read-first/poll-first heuristic. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "internal.h"
#include "testutil.h"

static size_t PS;
static _Atomic int served;

static int cb_zero(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	atomic_fetch_add(&served, 1);
	return uffd_zeropage(u, pf->address, PS, 0);
}

static struct uffd *open_served(char **p, size_t pages)
{
	struct uffd *u = tu_open(0);

	*p = tu_map_anon(pages * PS);
	ck_assert_int_eq(uffd_register(u, *p, pages * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	ck_assert_int_eq(uffd_on_pagefault(u, cb_zero, NULL), 0);
	atomic_store(&served, 0);
	return u;
}

/* The batch a lone dispatcher keeps between calls: the heuristic's state lives there. */
static struct uffd_batch *spare(struct uffd *u)
{
	return atomic_load(&u->spare);
}

static void setup(void)
{
	PS = tu_page();
}

/* An empty fd: 0 returns at once and 30 ms after 30 ms, in every state the waits go through. */
START_TEST(timeouts_are_kept)
{
	char *p;
	struct uffd *u = open_served(&p, 1);

	for (int i = 0; i < 40; i++) {
		double t0 = tu_now(), dt;

		ck_assert_int_eq(uffd_dispatch(u, 0), 0);
		ck_assert_msg(tu_now() - t0 < 0.1,
			      "timeout 0 waited"); /* a loaded machine may preempt */
		t0 = tu_now();
		ck_assert_int_eq(uffd_dispatch(u, 30), 0);
		dt = tu_now() - t0;
		ck_assert_msg(dt >= 0.029 && dt < 1.0, "timeout 30 ms took %.3f s (wait %d)", dt,
			      i);
	}
	/* Timed-out waits went over to polling first, and probe by reading now and then. */
	ck_assert_uint_ne(spare(u)->poll_first, 0);
	uffd_close(u);
	munmap(p, PS);
}
END_TEST

struct edge_toucher {
	char *addr;
	unsigned delay_us;
};

static void *late_touch(void *arg)
{
	struct edge_toucher *e = arg;

	usleep(e->delay_us);
	return (void *)(intptr_t) * (volatile char *)e->addr;
}

/*
 * Reads that find faults waiting keep the waits reading first; faults that come only once the
 * wait has begun switch them to polling first; each one is served whatever the state.
 */
START_TEST(modes_follow_where_faults_come)
{
	enum { N = 40 };
	char *p;
	struct uffd *u = open_served(&p, 2 * N);
	struct tu_toucher t;

	/* Faults waiting when the wait starts: read first. */
	for (int i = 0; i < N; i++) {
		tu_touch_start(&t, p + (size_t)i * PS, false, 0);
		while (uffd_dispatch(u, 0) == 0)
			usleep(100);
		tu_touch_join(&t);
	}
	ck_assert_uint_eq(spare(u)->poll_first, 0);
	ck_assert_uint_eq(spare(u)->read_credit, 4);
	/* Faults that come during the wait: the credit runs out, then poll first. */
	for (int i = N; i < 2 * N; i++) {
		struct edge_toucher e = { p + (size_t)i * PS, 2000 };
		pthread_t th;

		ck_assert_int_eq(pthread_create(&th, NULL, late_touch, &e), 0);
		ck_assert_int_eq(uffd_dispatch(u, 5000), 1);
		pthread_join(th, NULL);
		if (i == N + 8)
			ck_assert_uint_ne(spare(u)->poll_first, 0);
	}
	ck_assert_int_eq(atomic_load(&served), 2 * N);
	uffd_close(u);
	munmap(p, 2 * N * PS);
}
END_TEST

/* Faults that arrive as short waits time out are served by a later wait, never lost. */
START_TEST(faults_at_the_edge_of_timeouts)
{
	enum { N = 60 };
	char *p;
	struct uffd *u = open_served(&p, N);

	for (int i = 0; i < N; i++) {
		struct edge_toucher e = { p + (size_t)i * PS, (unsigned)(i % 6) * 700u };
		pthread_t t;
		double t0 = tu_now();

		ck_assert_int_eq(pthread_create(&t, NULL, late_touch, &e), 0);
		while (atomic_load(&served) <= i) {
			int n = uffd_dispatch(u, i % 3);

			ck_assert_int_ge(n, 0);
			ck_assert_msg(tu_now() - t0 < 5.0, "fault %d lost", i);
		}
		pthread_join(t, NULL);
	}
	ck_assert_int_eq(atomic_load(&served), N);
	uffd_close(u);
	munmap(p, N * PS);
}
END_TEST

struct crowd {
	struct uffd *u;
	char *p;
	_Atomic size_t next;
	size_t pages;
	_Atomic bool stop;
};

static void *crowd_dispatch(void *arg)
{
	struct crowd *c = arg;

	while (!atomic_load(&c->stop)) {
		int n = uffd_dispatch(c->u, 10);

		if (n < 0)
			return (void *)(intptr_t)n;
	}
	return NULL;
}

static void *crowd_fault(void *arg)
{
	struct crowd *c = arg;

	for (;;) {
		size_t i = atomic_fetch_add(&c->next, 1);

		if (i >= c->pages)
			return NULL;
		(void)*(volatile char *)(c->p + i * PS);
	}
}

/* Several threads dispatch one fault-only context: every fault is served once. */
START_TEST(several_dispatchers_one_context)
{
	enum { D = 4, F = 8, PAGES = 512 };
	struct crowd c = { .pages = PAGES };
	pthread_t d[D], f[F];
	struct uffd_stats st;

	c.u = open_served(&c.p, PAGES);
	for (int i = 0; i < D; i++)
		ck_assert_int_eq(pthread_create(&d[i], NULL, crowd_dispatch, &c), 0);
	for (int i = 0; i < F; i++)
		ck_assert_int_eq(pthread_create(&f[i], NULL, crowd_fault, &c), 0);
	for (int i = 0; i < F; i++)
		pthread_join(f[i], NULL);
	atomic_store(&c.stop, true);
	for (int i = 0; i < D; i++) {
		void *r;

		pthread_join(d[i], &r);
		ck_assert_ptr_null(r);
	}
	ck_assert_int_eq(uffd_get_stats(c.u, &st), 0);
	ck_assert_uint_eq(st.faults, PAGES);
	ck_assert_int_eq(atomic_load(&served), PAGES);
	uffd_close(c.u);
	munmap(c.p, PAGES * PS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("wait");
	TCase *tc = tu_tcase("wait", 60, setup, NULL);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(tc, timeouts_are_kept);
	tcase_add_test(tc, modes_follow_where_faults_come);
	tcase_add_test(tc, faults_at_the_edge_of_timeouts);
	tcase_add_test(tc, several_dispatchers_one_context);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
