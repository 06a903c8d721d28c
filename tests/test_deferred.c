/* SPDX-License-Identifier: MIT */
/* Deferred faults: finished later from other threads, by every rule, across exits and close. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

static size_t PS;

static void setup(void)
{
	PS = tu_page();
}

/*
 * Whether the context's memory is still there. A context is one mmap that starts at the handle
 * (src/context.c), unmapped when the last reference goes: mincore() fails with ENOMEM once it
 * is. This sees an early or late free without a sanitizer.
 */
static bool ctx_mapped(const struct uffd *u)
{
	unsigned char v;

	return mincore((void *)(uintptr_t)u, 1, &v) == 0;
}

/* The byte at @off of page @idx of a test range: never 0, so a zero page shows. */
static unsigned char pat(size_t idx, size_t off)
{
	return (unsigned char)(1 + (idx * 131 + off * 7 + (off >> 8)) % 251);
}

static void fill_page(unsigned char *buf, size_t idx)
{
	size_t j;

	for (j = 0; j < PS; j++)
		buf[j] = pat(idx, j);
}

/* ---- the queue of deferred faults ---- */

#define QCAP 8192
#define MAXPAGES 1024

struct qitem {
	struct uffd *u;
	struct uffd_pagefault pf; /* copied by value: the callback's pointer dies with it */
	double t;		  /* when it was deferred */
};

/* What the completion threads do with a fault. */
enum policy {
	P_COPY,	       /* uffd_copy, then finish with its result (0 or -EEXIST) */
	P_EAGAIN_ONCE, /* the first completion of a page finishes with -EAGAIN, unresolved */
	P_EIO_ONCE,    /* the first completion of a page finishes with -EIO, unresolved */
	P_HOLD,	       /* nothing: the test finishes the faults itself */
};

struct env {
	struct uffd *u;
	struct uffd_monitor *m;
	unsigned char *mem;
	size_t npages;
	enum policy policy;
	unsigned delay_us; /* finish each fault this long after it was deferred */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct qitem q[QCAP];
	unsigned qhead, qcount;
	bool qstop;
	unsigned inflight, max_inflight; /* mu */

	atomic_uint deliveries[MAXPAGES];
	atomic_uint completions[MAXPAGES];
	atomic_uint copies[MAXPAGES];
	atomic_uint eexist, eagain, eio, bad_range, bad_finish, bad_copy;
	atomic_uint finished;

	pthread_t disp[4], comp[4];
	unsigned ndisp, ncomp;
	atomic_bool disp_stop;
	atomic_int disp_err;
};

static size_t page_idx(const struct env *e, const void *addr)
{
	return (size_t)((const unsigned char *)addr - e->mem) / PS;
}

static int defer_cb(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct env *e = arg;
	size_t idx = page_idx(e, pf->address);

	/* The callback's fault carries its registration, as an undeferred one does. */
	if (idx >= e->npages || pf->range.data != e || (unsigned char *)pf->range.start != e->mem ||
	    pf->range.offset != 0)
		atomic_fetch_add(&e->bad_range, 1);
	if (idx < MAXPAGES)
		atomic_fetch_add(&e->deliveries[idx], 1);
	pthread_mutex_lock(&e->mu);
	if (e->qcount == QCAP) {
		pthread_mutex_unlock(&e->mu);
		atomic_fetch_add(&e->bad_finish, 1);
		return -ENOSPC;
	}
	e->q[(e->qhead + e->qcount++) % QCAP] = (struct qitem){ u, *pf, tu_now() };
	if (++e->inflight > e->max_inflight)
		e->max_inflight = e->inflight;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return UFFD_FAULT_DEFERRED;
}

/* The next deferred fault, waiting for it; false once stopped and empty. */
static bool q_pop(struct env *e, struct qitem *out)
{
	pthread_mutex_lock(&e->mu);
	while (!e->qcount && !e->qstop)
		pthread_cond_wait(&e->cv, &e->mu);
	if (!e->qcount) {
		pthread_mutex_unlock(&e->mu);
		return false;
	}
	*out = e->q[e->qhead];
	e->qhead = (e->qhead + 1) % QCAP;
	e->qcount--;
	pthread_mutex_unlock(&e->mu);
	return true;
}

/* Wait until @n faults have been deferred and not yet taken, up to @ms. */
static bool q_wait_count(struct env *e, unsigned n, unsigned ms)
{
	double end = tu_now() + ms / 1000.0;
	bool ok;

	for (;;) {
		pthread_mutex_lock(&e->mu);
		ok = e->qcount >= n;
		pthread_mutex_unlock(&e->mu);
		if (ok || tu_now() > end)
			return ok;
		tu_sleep_ms(5);
	}
}

static void sleep_until(double t)
{
	double d = t - tu_now();
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

static void complete_one(struct env *e, const struct qitem *it)
{
	unsigned char buf[65536];
	size_t idx = page_idx(e, it->pf.address);
	unsigned nth = atomic_fetch_add(&e->completions[idx], 1);
	void *page = e->mem + idx * PS;
	int r, want = 0, f;

	if (e->delay_us)
		sleep_until(it->t + e->delay_us / 1e6);
	if (e->policy == P_EAGAIN_ONCE && nth == 0) {
		atomic_fetch_add(&e->eagain, 1);
		r = -EAGAIN;
	} else if (e->policy == P_EIO_ONCE && nth == 0) {
		atomic_fetch_add(&e->eio, 1);
		r = want = -EIO;
	} else {
		fill_page(buf, idx);
		r = uffd_copy(it->u, page, buf, PS, 0);
		if (r == 0)
			atomic_fetch_add(&e->copies[idx], 1);
		else if (r == -EEXIST)
			atomic_fetch_add(&e->eexist, 1);
		else
			atomic_fetch_add(&e->bad_copy, 1);
	}
	pthread_mutex_lock(&e->mu);
	e->inflight--;
	pthread_mutex_unlock(&e->mu);
	f = uffd_fault_finish(it->u, &it->pf, r);
	if (f != want) {
		fprintf(stderr, "finish(%p, %d) of page %zu (completion %u) = %d, not %d\n",
			it->pf.address, r, idx, nth, f, want);
		atomic_fetch_add(&e->bad_finish, 1);
	}
	atomic_fetch_add(&e->finished, 1);
}

static void *completion_fn(void *arg)
{
	struct env *e = arg;
	struct qitem it;

	while (q_pop(e, &it))
		complete_one(e, &it);
	return NULL;
}

static void *dispatch_fn(void *arg)
{
	struct env *e = arg;

	while (!atomic_load(&e->disp_stop)) {
		int r = uffd_dispatch(e->u, 20);

		if (r < 0 && r != -EINTR) {
			atomic_store(&e->disp_err, r);
			break;
		}
	}
	return NULL;
}

static void env_init(struct env *e, size_t npages, enum policy pol)
{
	memset(e, 0, sizeof(*e));
	ck_assert_uint_le(npages, MAXPAGES);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	e->npages = npages;
	e->policy = pol;
}

/* A context of this process (no events: no -EAGAIN from layout changes) over fresh memory. */
static void env_open(struct env *e)
{
	e->u = tu_open(0);
	e->mem = tu_map_anon(e->npages * PS);
	ck_assert_int_eq(
		uffd_register(e->u, e->mem, e->npages * PS, UFFDIO_REGISTER_MODE_MISSING, e), 0);
	ck_assert_int_eq(uffd_on_pagefault(e->u, defer_cb, e), 0);
}

static void start_completions(struct env *e, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		ck_assert_int_eq(pthread_create(&e->comp[i], NULL, completion_fn, e), 0);
	e->ncomp = n;
}

static void stop_completions(struct env *e)
{
	unsigned i;

	pthread_mutex_lock(&e->mu);
	e->qstop = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	for (i = 0; i < e->ncomp; i++)
		ck_assert_int_eq(pthread_join(e->comp[i], NULL), 0);
	e->ncomp = 0;
}

static void start_dispatchers(struct env *e, unsigned n)
{
	unsigned i;

	atomic_store(&e->disp_stop, false);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(pthread_create(&e->disp[i], NULL, dispatch_fn, e), 0);
	e->ndisp = n;
}

static void stop_dispatchers(struct env *e)
{
	unsigned i;

	atomic_store(&e->disp_stop, true);
	for (i = 0; i < e->ndisp; i++)
		ck_assert_int_eq(pthread_join(e->disp[i], NULL), 0);
	e->ndisp = 0;
	ck_assert_int_eq(atomic_load(&e->disp_err), 0);
}

/* ---- faulting threads ---- */

struct faulter {
	pthread_t t;
	struct env *e;
	unsigned k, n;	/* thread k of n */
	bool all;	/* touch every page (in its own order), else only pages k, k+n, ... */
	unsigned wrong; /* bytes read that were not what was served */
};

static void *faulter_fn(void *arg)
{
	struct faulter *f = arg;
	size_t np = f->e->npages, i;

	for (i = 0; i < np; i++) {
		/* Threads that touch every page start at different places: many meet on a page. */
		size_t idx = f->all ? (i * 7 + f->k * np / f->n) % np : i;
		volatile unsigned char *p;
		size_t off;

		if (!f->all && idx % f->n != f->k)
			continue;
		p = f->e->mem + idx * PS;
		off = (idx * 97 + f->k) % PS;
		if (p[off] != pat(idx, off))
			f->wrong++;
	}
	return NULL;
}

static void run_faulters(struct env *e, unsigned n, bool all)
{
	struct faulter f[16];
	unsigned i;

	ck_assert_uint_le(n, 16);
	for (i = 0; i < n; i++) {
		f[i] = (struct faulter){ .e = e, .k = i, .n = n, .all = all };
		ck_assert_int_eq(pthread_create(&f[i].t, NULL, faulter_fn, &f[i]), 0);
	}
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(pthread_join(f[i].t, NULL), 0);
		ck_assert_uint_eq(f[i].wrong, 0);
	}
}

/* Every byte of every page is what was served; each page was copied once. */
static void check_memory(struct env *e)
{
	unsigned char buf[65536];
	size_t i;

	for (i = 0; i < e->npages; i++) {
		fill_page(buf, i);
		ck_assert_msg(memcmp(e->mem + i * PS, buf, PS) == 0, "page %zu differs", i);
		ck_assert_uint_eq(atomic_load(&e->copies[i]), 1);
	}
}

/* Plain values for the assertions' messages. */
static unsigned ld(atomic_uint *a)
{
	return atomic_load(a);
}

static int ldi(atomic_int *a)
{
	return atomic_load(a);
}

static unsigned sum(atomic_uint *a, size_t n)
{
	unsigned s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s += atomic_load(&a[i]);
	return s;
}

/* No fault of @u is deferred any more: finishing one is -EINVAL. */
static void assert_none_deferred(struct uffd *u)
{
	struct uffd_pagefault pf = { 0 };

	ck_assert_int_eq(uffd_fault_finish(u, &pf, 0), -EINVAL);
}

static void env_destroy(struct env *e)
{
	if (e->m)
		uffd_monitor_free(e->m); /* closes e->u */
	else
		uffd_close(e->u);
	munmap(e->mem, e->npages * PS);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
}

/* ---- many threads fault; a few other threads finish what the callback deferred ---- */

enum serving { S_ONE, S_MANY, S_POOL };

static void many_faulters(enum serving how)
{
	static struct env e;
	struct uffd_stats st;
	int fds0 = tu_count_fds();
	unsigned dl;

	env_init(&e, 256, P_COPY);
	env_open(&e);
	start_completions(&e, 3);
	if (how == S_POOL) {
		ck_assert_int_eq(uffd_monitor_new(&e.m), 0);
		ck_assert_int_eq(uffd_monitor_add(e.m, e.u), 0);
		ck_assert_int_eq(uffd_monitor_start(e.m, 3), 0);
	} else {
		start_dispatchers(&e, how == S_MANY ? 3 : 1);
	}
	run_faulters(&e, 8, true);
	/*
	 * Serving stops before the completions: a fault read before the faulters finished (a second
	 * thread on a page already resolved) may still be on its way to the callback, which defers
	 * it; the completion threads drain the queue only once nothing can be added to it.
	 */
	if (how == S_POOL) {
		ck_assert_int_eq(uffd_monitor_stop(e.m), 0);
		ck_assert_int_ge(uffd_monitor_join(e.m), 0);
	} else {
		stop_dispatchers(&e);
	}
	stop_completions(&e);
	check_memory(&e);
	ck_assert_uint_eq(ld(&e.bad_range), 0);
	ck_assert_uint_eq(ld(&e.bad_finish), 0);
	ck_assert_uint_eq(ld(&e.bad_copy), 0);
	assert_none_deferred(e.u);

	/* Exact counters: every delivery is a fault read; each page resolved once, the rest of
	 * its deliveries met -EEXIST and were woken. */
	dl = sum(e.deliveries, e.npages);
	ck_assert_uint_ge(dl, e.npages);
	ck_assert_uint_eq(ld(&e.finished), dl);
	ck_assert_uint_eq(ld(&e.eexist), dl - e.npages);
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults, dl);
	ck_assert_uint_eq(st.messages, dl);
	ck_assert_uint_eq(st.faults_woken, dl - e.npages);
	ck_assert_uint_eq(st.eagain_retries, 0);
	env_destroy(&e);
	ck_assert_int_eq(tu_count_fds(), fds0);
}

START_TEST(deferred_one_dispatcher)
{
	many_faulters(S_ONE);
}
END_TEST

START_TEST(deferred_many_dispatchers)
{
	many_faulters(S_MANY);
}
END_TEST

START_TEST(deferred_pool)
{
	many_faulters(S_POOL);
}
END_TEST

/* ---- the rules for what uffd_fault_finish() is given ---- */

/* -EAGAIN: the fault is woken and comes back, once per page here. */
START_TEST(finish_eagain_delivers_again)
{
	static struct env e;
	struct uffd_stats st;
	size_t i;

	env_init(&e, 64, P_EAGAIN_ONCE);
	env_open(&e);
	start_completions(&e, 2);
	start_dispatchers(&e, 2);
	run_faulters(&e, 4, false);
	stop_dispatchers(&e);
	stop_completions(&e);
	check_memory(&e);
	for (i = 0; i < e.npages; i++)
		ck_assert_uint_eq(ld(&e.deliveries[i]), 2);
	ck_assert_uint_eq(ld(&e.eagain), e.npages);
	ck_assert_uint_eq(ld(&e.bad_finish), 0);
	ck_assert_uint_eq(ld(&e.eexist), 0);
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults, 2 * e.npages);
	ck_assert_uint_eq(st.eagain_retries, e.npages);
	/* The -EAGAIN fault was woken, not resolved: counted there too. */
	ck_assert_uint_eq(st.faults_woken, e.npages);
	assert_none_deferred(e.u);
	env_destroy(&e);
}
END_TEST

/* Another error: the fault is woken (it comes back) and uffd_fault_finish() returns the error. */
START_TEST(finish_other_error_woken_and_returned)
{
	static struct env e;
	struct uffd_stats st;
	size_t i;

	env_init(&e, 32, P_EIO_ONCE);
	env_open(&e);
	start_completions(&e, 2);
	start_dispatchers(&e, 1);
	run_faulters(&e, 4, false);
	stop_dispatchers(&e);
	stop_completions(&e);
	check_memory(&e);
	for (i = 0; i < e.npages; i++)
		ck_assert_uint_eq(ld(&e.deliveries[i]), 2);
	ck_assert_uint_eq(ld(&e.eio), e.npages);
	ck_assert_uint_eq(ld(&e.bad_finish), 0); /* each returned -EIO */
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults, 2 * e.npages);
	ck_assert_uint_eq(st.faults_woken, e.npages);
	ck_assert_uint_eq(st.eagain_retries, 0);
	assert_none_deferred(e.u);
	env_destroy(&e);
}
END_TEST

/* Take one deferred fault off the queue (the test finishes it itself). */
static struct qitem take_one(struct env *e)
{
	struct qitem it;

	ck_assert(q_wait_count(e, 1, 5000));
	ck_assert(q_pop(e, &it));
	return it;
}

/* -EEXIST (a page resolved twice) and -ENOENT (the range went away): woken and counted. */
START_TEST(finish_eexist_and_enoent_woken)
{
	static struct env e;
	unsigned char buf[65536];
	struct tu_toucher t1, t2;
	struct uffd_stats st;
	struct qitem it;
	void *p;

	env_init(&e, 4, P_HOLD);
	env_open(&e);
	start_dispatchers(&e, 1);

	/* -EEXIST: resolved, then resolved again. */
	tu_touch_start(&t1, e.mem, false, 0);
	it = take_one(&e);
	ck_assert_ptr_eq(it.pf.address, e.mem);
	fill_page(buf, 0);
	ck_assert_int_eq(uffd_copy(e.u, e.mem, buf, PS, 0), 0);
	ck_assert_int_eq(uffd_copy(e.u, e.mem, buf, PS, 0), -EEXIST);
	ck_assert_int_eq(uffd_fault_finish(e.u, &it.pf, -EEXIST), 0);
	tu_touch_join(&t1);
	ck_assert_int_eq((unsigned char)t1.value, pat(0, 0));
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults_woken, 1);

	/*
	 * -ENOENT: the page is replaced, while its thread waits, by fresh memory nobody
	 * registered (no UNMAP event: the context asked for none). The copy finds nothing
	 * registered there; finishing with -ENOENT wakes the thread, which then reads the new
	 * memory's zero page instead of staying blocked for good.
	 */
	p = e.mem + 2 * PS;
	tu_touch_start(&t2, p, false, 0);
	it = take_one(&e);
	ck_assert_ptr_eq(it.pf.address, p);
	ck_assert_ptr_eq(mmap(p, PS, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 p);
	fill_page(buf, 2);
	ck_assert_int_eq(uffd_copy(e.u, p, buf, PS, 0), -ENOENT);
	ck_assert_int_eq(uffd_fault_finish(e.u, &it.pf, -ENOENT), 0);
	tu_touch_join(&t2);
	ck_assert_int_eq(t2.value, 0);
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults_woken, 2);
	ck_assert_uint_eq(st.faults, 2);
	ck_assert_uint_eq(st.eagain_retries, 0);

	stop_dispatchers(&e);
	assert_none_deferred(e.u);
	env_destroy(&e);
}
END_TEST

START_TEST(finish_bad_arguments)
{
	static struct env e;
	struct uffd_pagefault pf = { 0 };
	unsigned char buf[65536];
	struct tu_toucher t;
	struct uffd_stats st;
	struct qitem it;

	env_init(&e, 2, P_HOLD);
	env_open(&e);
	pf.address = e.mem;
	ck_assert_int_eq(uffd_fault_finish(NULL, &pf, 0), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(e.u, NULL, 0), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(e.u, &pf, 1), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(e.u, &pf, UFFD_FAULT_DEFERRED), -EINVAL);
	/* Nothing deferred: whatever the error, nothing to finish. */
	ck_assert_int_eq(uffd_fault_finish(e.u, &pf, 0), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(e.u, &pf, -EIO), -EINVAL);

	start_dispatchers(&e, 1);
	tu_touch_start(&t, e.mem + PS, true, 'x');
	it = take_one(&e);
	/* A bad call with a fault deferred neither finishes nor forgets it. */
	ck_assert_int_eq(uffd_fault_finish(e.u, &it.pf, 5), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(NULL, &it.pf, 0), -EINVAL);
	ck_assert_int_eq(uffd_fault_finish(e.u, NULL, 0), -EINVAL);
	ck_assert(!atomic_load(&t.done));
	fill_page(buf, 1);
	ck_assert_int_eq(uffd_copy(e.u, e.mem + PS, buf, PS, 0), 0);
	ck_assert_int_eq(uffd_fault_finish(e.u, &it.pf, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(e.mem[PS], 'x');
	ck_assert_int_eq(uffd_fault_finish(e.u, &it.pf, 0), -EINVAL); /* finished already */
	stop_dispatchers(&e);
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults, 1);
	ck_assert_uint_eq(st.faults_woken, 0);
	env_destroy(&e);
}
END_TEST

/* ---- uffd_close() with faults still deferred ---- */

START_TEST(close_with_deferred_faults)
{
	static struct env e;
	struct tu_toucher t[3];
	struct qitem it[3];
	int fds0 = tu_count_fds(), i;
	struct uffd *u;

	env_init(&e, 3, P_HOLD);
	env_open(&e);
	u = e.u;
	start_dispatchers(&e, 1);
	for (i = 0; i < 3; i++)
		tu_touch_start(&t[i], e.mem + (size_t)i * PS, false, 0);
	ck_assert(q_wait_count(&e, 3, 5000));
	for (i = 0; i < 3; i++)
		ck_assert(q_pop(&e, &it[i]));
	stop_dispatchers(&e);

	/* Closing clears the registrations: the blocked threads go on with zero pages. */
	uffd_close(u);
	for (i = 0; i < 3; i++) {
		tu_touch_join(&t[i]);
		ck_assert_int_eq(t[i].value, 0);
	}
	ck_assert_int_eq(tu_count_fds(), fds0); /* the fd went at once */
	/* The memory stays until the last deferred fault is finished; finishing does nothing. */
	ck_assert(ctx_mapped(u));
	ck_assert_int_eq(uffd_fault_finish(u, &it[0].pf, 0), -ESRCH);
	ck_assert(ctx_mapped(u));
	ck_assert_int_eq(uffd_fault_finish(u, &it[1].pf, -EIO), -ESRCH);
	ck_assert(ctx_mapped(u));
	ck_assert_int_eq(uffd_fault_finish(u, &it[2].pf, -EAGAIN), -ESRCH);
	ck_assert(!ctx_mapped(u));
	munmap(e.mem, e.npages * PS);
	pthread_mutex_destroy(&e.mu);
	pthread_cond_destroy(&e.cv);
}
END_TEST

/* ---- a slow asynchronous source: every fault finished 200 us after it was deferred ---- */

START_TEST(slow_async_source)
{
	static struct env e;
	struct uffd_stats st;
	unsigned dl;

	env_init(&e, 512, P_COPY);
	e.delay_us = 200;
	env_open(&e);
	start_completions(&e, 1);
	start_dispatchers(&e, 1);
	run_faulters(&e, 16, false);
	stop_dispatchers(&e);
	stop_completions(&e);
	check_memory(&e);
	dl = sum(e.deliveries, e.npages);
	ck_assert_uint_eq(dl, e.npages); /* one thread per page: no duplicates */
	ck_assert_uint_eq(ld(&e.bad_finish), 0);
	ck_assert_uint_eq(ld(&e.bad_copy), 0);
	ck_assert_int_eq(uffd_get_stats(e.u, &st), 0);
	ck_assert_uint_eq(st.faults, e.npages);
	ck_assert_uint_eq(st.faults_woken, 0);
	/* One dispatching thread kept several faults in flight while the source waited. */
	ck_assert_uint_gt(e.max_inflight, 1);
	assert_none_deferred(e.u);
	env_destroy(&e);
}
END_TEST

/* ---- a process exits with faults deferred ---- */

#define XPAGES 4

struct xinfo {
	int err;
	unsigned char *mem;
};

static struct {
	atomic_int nexit;
	atomic_int finishes_started; /* uffd_fault_finish() calls begun by the test */
	int started_at_exit;	     /* finishes_started when on_exit ran */
	bool mapped_during;	     /* the context was mapped through on_exit */
	uint64_t faults_at_exit;
	struct uffd *u;
} X;

static void exit_cb(struct uffd *u, void *arg)
{
	struct uffd_stats st = { 0 };
	bool mapped = ctx_mapped(u);

	(void)arg;
	X.started_at_exit = atomic_load(&X.finishes_started);
	/* The context must stay whole while on_exit runs, however long it takes. */
	tu_sleep_ms(50);
	uffd_get_stats(u, &st);
	X.faults_at_exit = st.faults;
	X.mapped_during = mapped && ctx_mapped(u) && u == X.u;
	atomic_fetch_add(&X.nexit, 1);
}

static void *xtouch(void *arg)
{
	return (void *)(uintptr_t) * (volatile unsigned char *)arg;
}

/* The monitored process: its own userfaultfd and memory; K threads block in faults there until
 * it exits, with every one of those faults still deferred by the monitor. */
static __attribute__((noreturn)) void exit_child(int sock)
{
	struct xinfo in = { 0 };
	pthread_t t[XPAGES];
	struct uffd *u = NULL;
	char c;
	int i;

	in.mem =
		mmap(NULL, XPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	in.err = in.mem == MAP_FAILED ? -ENOMEM : uffd_open(&u, NULL);
	if (!in.err)
		in.err = uffd_register(u, in.mem, XPAGES * PS, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (tu_send_fd(sock, in.err ? -1 : uffd_fd(u), &in, sizeof(in)) || in.err)
		_exit(2);
	if (read(sock, &c, 1) != 1)
		_exit(3);
	for (i = 0; i < XPAGES; i++)
		if (pthread_create(&t[i], NULL, xtouch, in.mem + (size_t)i * PS))
			_exit(4);
	/* Exit when told, the threads still blocked. */
	if (read(sock, &c, 1) != 1)
		_exit(5);
	_exit(0);
}

struct runner {
	pthread_t t;
	struct uffd_monitor *m;
	int ret;
};

static void *run_fn(void *arg)
{
	struct runner *r = arg;

	r->ret = uffd_monitor_run(r->m, -1);
	return NULL;
}

static void exit_with_deferred(bool pool)
{
	static struct env e;
	struct timeval tv = { 15, 0 };
	struct qitem it[XPAGES];
	struct runner run = { 0 };
	struct xinfo in;
	int fds0 = tu_count_fds(), sv[2], fd, st, i;
	double end;
	pid_t pid;

	memset(&X, 0, sizeof(X));
	env_init(&e, XPAGES, P_HOLD);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		exit_child(sv[1]);
	}
	close(sv[1]);
	ck_assert_int_eq(tu_recv_fd(sv[0], &fd, &in, sizeof(in)), 0);
	ck_assert_int_eq(in.err, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&e.u, fd, NULL), 0);
	X.u = e.u;
	e.mem = in.mem; /* the child's addresses: never dereferenced here */
	ck_assert_int_eq(uffd_range_add(e.u, in.mem, XPAGES * PS, UFFDIO_REGISTER_MODE_MISSING, &e),
			 0);
	ck_assert_int_eq(uffd_on_pagefault(e.u, defer_cb, &e), 0);
	ck_assert_int_eq(uffd_on_exit(e.u, exit_cb, NULL), 0);
	ck_assert_int_eq(uffd_monitor_new(&e.m), 0);
	ck_assert_int_eq(uffd_monitor_add(e.m, e.u), 0);
	if (pool) {
		/* The pidfd tells the exit. */
		ck_assert_int_eq(uffd_monitor_watch_pid(e.m, e.u, pid), 0);
		ck_assert_int_eq(uffd_monitor_start(e.m, 2), 0);
	} else {
		/* No pid: the liveness probe finds the exit. */
		run.m = e.m;
		ck_assert_int_eq(pthread_create(&run.t, NULL, run_fn, &run), 0);
	}
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	ck_assert(q_wait_count(&e, XPAGES, 5000));
	for (i = 0; i < XPAGES; i++)
		ck_assert(q_pop(&e, &it[i]));

	/* The process exits with its K faults deferred. */
	ck_assert_int_eq(write(sv[0], "x", 1), 1);
	st = tu_wait_child(pid, 10000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (!pool)
		ck_assert_int_eq(uffd_monitor_probe(e.m), 0);
	/* Until the monitor has seen the exit (uffd_range_add() then says -ESRCH). */
	end = tu_now() + 3;
	while (uffd_range_add(e.u, in.mem, PS, UFFDIO_REGISTER_MODE_MISSING, &e) != -ESRCH) {
		ck_assert(tu_now() < end);
		tu_sleep_ms(5);
	}
	tu_sleep_ms(100);
	ck_assert_int_eq(ldi(&X.nexit), 0);
	ck_assert_int_eq(uffd_monitor_count(e.m), 0);

	/* Each finish after the exit does nothing and says so; on_exit waits for the last. */
	for (i = 0; i < XPAGES; i++) {
		ck_assert(ctx_mapped(e.u));
		ck_assert_int_eq(ldi(&X.nexit), 0);
		atomic_fetch_add(&X.finishes_started, 1);
		ck_assert_int_eq(uffd_fault_finish(e.u, &it[i].pf, i == 1 ? -ESRCH : 0), -ESRCH);
	}
	end = tu_now() + 3;
	while (atomic_load(&X.nexit) == 0) {
		ck_assert(tu_now() < end);
		tu_sleep_ms(2);
	}
	ck_assert_int_eq(X.started_at_exit, XPAGES);
	ck_assert(X.mapped_during);
	ck_assert_uint_eq(X.faults_at_exit, XPAGES);

	/* After on_exit the monitor closes the context: its memory goes. */
	end = tu_now() + 3;
	while (ctx_mapped(e.u)) {
		ck_assert_msg(tu_now() < end, "the context outlived its on_exit");
		tu_sleep_ms(5);
	}
	if (pool) {
		ck_assert_int_eq(uffd_monitor_stop(e.m), 0);
		ck_assert_int_ge(uffd_monitor_join(e.m), 0);
	} else {
		ck_assert_int_eq(pthread_join(run.t, NULL), 0);
		ck_assert_int_ge(run.ret, 0);
	}
	tu_sleep_ms(300);
	ck_assert_int_eq(ldi(&X.nexit), 1);
	ck_assert_uint_eq(ld(&e.bad_range), 0);
	uffd_monitor_free(e.m);
	close(sv[0]);
	pthread_mutex_destroy(&e.mu);
	pthread_cond_destroy(&e.cv);
	ck_assert_int_eq(tu_count_fds(), fds0);
}

START_TEST(exit_with_deferred_pool_pidfd)
{
	exit_with_deferred(true);
}
END_TEST

START_TEST(exit_with_deferred_run_probe)
{
	exit_with_deferred(false);
}
END_TEST

/*
 * Not deferred, for contrast: a pool worker learns of the exit itself (-ESRCH from the copy)
 * while serving, runs on_exit as it leaves the context, and the monitor must then close it.
 */
static atomic_bool child_dead;

static int esrch_cb(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	unsigned char buf[65536] = { 0 };
	double end = tu_now() + 10;

	(void)arg;
	atomic_fetch_add(&X.finishes_started, 1); /* here: callbacks entered */
	while (!atomic_load(&child_dead) && tu_now() < end)
		tu_sleep_ms(1);
	return uffd_copy(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), buf, PS, 0);
}

START_TEST(pool_worker_sees_exit_context_closed)
{
	struct timeval tv = { 15, 0 };
	struct uffd_monitor *m;
	struct xinfo in;
	struct uffd *u;
	int fds0 = tu_count_fds(), sv[2], fd, st;
	double end;
	pid_t pid;

	memset(&X, 0, sizeof(X));
	atomic_store(&child_dead, false);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		exit_child(sv[1]);
	}
	close(sv[1]);
	ck_assert_int_eq(tu_recv_fd(sv[0], &fd, &in, sizeof(in)), 0);
	ck_assert_int_eq(in.err, 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	X.u = u;
	ck_assert_int_eq(uffd_on_pagefault(u, esrch_cb, NULL), 0);
	ck_assert_int_eq(uffd_on_exit(u, exit_cb, NULL), 0);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_start(m, 2), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	end = tu_now() + 5;
	while (ldi(&X.finishes_started) == 0) {
		ck_assert(tu_now() < end);
		tu_sleep_ms(2);
	}
	ck_assert_int_eq(write(sv[0], "x", 1), 1);
	st = tu_wait_child(pid, 10000);
	ck_assert(WIFEXITED(st));
	atomic_store(&child_dead, true);
	end = tu_now() + 3;
	while (ldi(&X.nexit) == 0 || ctx_mapped(u)) {
		ck_assert_msg(tu_now() < end, "on_exit %d, the context not closed", ldi(&X.nexit));
		tu_sleep_ms(5);
	}
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	ck_assert_int_ge(uffd_monitor_join(m), 0);
	ck_assert_int_eq(ldi(&X.nexit), 1);
	uffd_monitor_free(m);
	close(sv[0]);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("deferred");
	TCase *th = tu_tcase("threads", 60, setup, NULL), *ru = tu_tcase("rules", 30, setup, NULL),
	      *lf = tu_tcase("lifetime", 60, setup, NULL);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(th, deferred_one_dispatcher);
	tcase_add_test(th, deferred_many_dispatchers);
	tcase_add_test(th, deferred_pool);
	tcase_add_test(th, slow_async_source);
	tcase_add_test(ru, finish_eagain_delivers_again);
	tcase_add_test(ru, finish_other_error_woken_and_returned);
	tcase_add_test(ru, finish_eexist_and_enoent_woken);
	tcase_add_test(ru, finish_bad_arguments);
	tcase_add_test(lf, close_with_deferred_faults);
	tcase_add_test(lf, exit_with_deferred_pool_pidfd);
	tcase_add_test(lf, exit_with_deferred_run_probe);
	tcase_add_test(lf, pool_worker_sees_exit_context_closed);
	suite_add_tcase(s, th);
	suite_add_tcase(s, ru);
	suite_add_tcase(s, lf);
	return tu_run(s);
}
