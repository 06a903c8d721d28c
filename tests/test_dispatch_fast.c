/* SPDX-License-Identifier: MIT */
/* The dispatcher's fast path for batches of page faults: order, stops, its range cache, spinning. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define MAXF 64

static size_t PS;
static char *src;

/* What the fault callback saw, in order, and what it should answer. */
static struct {
	void *addr[MAXF];
	void *data[MAXF];
	struct uffd_range range[MAXF];
	int n;
	int fail_at; /* answer -EIO to this delivery (1-based); 0: never */
} F;

static int cb_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	int i = F.n;

	(void)arg;
	if (F.n < MAXF) {
		F.addr[F.n] = pf->address;
		F.data[F.n] = pf->range.data;
		F.range[F.n] = pf->range;
		F.n++;
	}
	if (F.fail_at && i + 1 == F.fail_at)
		return -EIO;
	return uffd_copy(u, pf->address, src, PS, 0);
}

static void *toucher(void *p)
{
	return (void *)(intptr_t) * (volatile char *)p;
}

static void setup(void)
{
	PS = tu_page();
	memset(&F, 0, sizeof(F));
	src = tu_map_anon(PS);
	memset(src, 0x5a, PS);
}

static void teardown(void)
{
	munmap(src, PS);
}

/* Serve until @n faults have been delivered; fail the test if it takes too many waits. */
static void serve(struct uffd *u, int n)
{
	for (int tries = 0; F.n < n; tries++) {
		ck_assert_int_lt(tries, 500);
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
	}
}

START_TEST(stop_mid_batch_keeps_the_rest)
{
	struct uffd_config cfg = { .batch = 64 };
	struct uffd *u = NULL;
	struct uffd_stats st;
	pthread_t t[4];
	char *p;
	int r;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_pagefault(u, cb_fault, NULL);
	p = tu_map_anon(4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, toucher, p + (size_t)i * PS), 0);
	/* Let all four faults queue up, so that one read() takes them together. */
	usleep(300 * 1000);
	F.fail_at = 2;
	r = uffd_dispatch(u, 1000);
	ck_assert_int_eq(r, -EIO);
	ck_assert_int_eq(F.n, 2);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.reads, 1);
	ck_assert_uint_eq(st.messages, 4);
	ck_assert_uint_eq(st.faults, 4);
	/* The other two are delivered by the next call, before anything new is read. */
	F.fail_at = 0;
	r = uffd_dispatch(u, 0);
	ck_assert_int_eq(r, 2);
	ck_assert_int_eq(F.n, 4);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.reads, 1);
	/* Four distinct pages, each delivered once so far. */
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			ck_assert_ptr_ne(F.addr[i], F.addr[j]);
	/* The failed fault was woken: its thread faults again, and that is served. */
	serve(u, 5);
	ck_assert_ptr_eq(F.addr[4], F.addr[1]);
	for (int i = 0; i < 4; i++) {
		void *v;

		pthread_join(t[i], &v);
		ck_assert_int_eq((int)(intptr_t)v, 0x5a);
	}
	uffd_close(u);
	munmap(p, 4 * PS);
}
END_TEST

static void fault_and_serve(struct uffd *u, char *addr, int n)
{
	pthread_t t;
	void *v;

	ck_assert_int_eq(pthread_create(&t, NULL, toucher, addr), 0);
	serve(u, n);
	pthread_join(t, &v);
	ck_assert_int_eq((int)(intptr_t)v, 0x5a);
}

START_TEST(range_follows_register_and_unregister)
{
	struct uffd *u = NULL;
	char *p, *a = (char *)0x1000, *b = (char *)0x2000;

	ck_assert_int_eq(uffd_open(&u, NULL), 0);
	uffd_on_pagefault(u, cb_fault, NULL);
	p = tu_map_anon(4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, a), 0);
	fault_and_serve(u, p, 1);
	ck_assert_ptr_eq(F.data[0], a);
	ck_assert_ptr_eq(F.range[0].end, p + 4 * PS);
	/* Same piece, so a cached range would be used: the new registration must be seen. */
	ck_assert_int_eq(uffd_register(u, p + PS, PS, UFFDIO_REGISTER_MODE_MISSING, b), 0);
	fault_and_serve(u, p + PS, 2);
	ck_assert_ptr_eq(F.data[1], b);
	ck_assert_ptr_eq(F.range[1].start, p + PS);
	ck_assert_ptr_eq(F.range[1].end, p + 2 * PS);
	ck_assert_uint_eq(F.range[1].offset, 0);
	fault_and_serve(u, p + 3 * PS, 3);
	ck_assert_ptr_eq(F.data[2], a);
	ck_assert_ptr_eq(F.range[2].start, p + 2 * PS);
	ck_assert_uint_eq(F.range[2].offset, 2 * PS);
	uffd_close(u);
	munmap(p, 4 * PS);
}
END_TEST

struct move {
	char *from, *to, *res;
	size_t len;
};

static void *mover(void *arg)
{
	struct move *m = arg;

	m->res = mremap(m->from, m->len, m->len, MREMAP_MAYMOVE | MREMAP_FIXED, m->to);
	return NULL;
}

START_TEST(range_follows_remap)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_REMAP |
					       UFFD_FEATURE_EVENT_UNMAP };
	struct uffd *u = NULL;
	struct uffd_stats st = { 0 };
	struct move m;
	pthread_t t;
	char *p, *to;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_pagefault(u, cb_fault, NULL);
	p = tu_map_anon(4 * PS);
	to = tu_map_anon(4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	fault_and_serve(u, p + PS, 1);
	ck_assert_ptr_eq(F.range[0].start, p);
	/* The move blocks until its REMAP and UNMAP are read: read them here. */
	m = (struct move){ .from = p, .to = to, .len = 4 * PS };
	ck_assert_int_eq(pthread_create(&t, NULL, mover, &m), 0);
	for (int tries = 0; st.remaps < 1 || st.unmaps < 1; tries++) {
		ck_assert_int_lt(tries, 500);
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
		ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	}
	pthread_join(t, NULL);
	ck_assert_ptr_eq(m.res, to);
	fault_and_serve(u, to + 2 * PS, 2);
	ck_assert_ptr_eq(F.range[1].start, to);
	ck_assert_ptr_eq(F.range[1].end, to + 4 * PS);
	ck_assert_ptr_eq(F.data[1], p);
	ck_assert_uint_eq(F.range[1].offset, 0);
	uffd_close(u);
	munmap(to, 4 * PS);
}
END_TEST

START_TEST(latency_mode_serves_and_times_out)
{
	struct uffd_config cfg = { .spin_us = 200000 };
	struct uffd *u = NULL;
	char *p;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_pagefault(u, cb_fault, NULL);
	/* Nothing to read: the call ends with the timeout, not the (longer) spin. */
	ck_assert_int_eq(uffd_dispatch(u, 5), 0);
	ck_assert_int_eq(uffd_dispatch(u, 0), 0);
	p = tu_map_anon(2 * PS);
	ck_assert_int_eq(uffd_register(u, p, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	fault_and_serve(u, p, 1);
	fault_and_serve(u, p + PS, 2);
	uffd_close(u);
	munmap(p, 2 * PS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dispatch_fast");
	TCase *tc = tu_tcase("fast_path", 60, setup, teardown);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(tc, stop_mid_batch_keeps_the_rest);
	tcase_add_test(tc, range_follows_register_and_unregister);
	tcase_add_test(tc, range_follows_remap);
	tcase_add_test(tc, latency_mode_serves_and_times_out);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
