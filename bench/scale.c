/* SPDX-License-Identifier: MIT */
/* Serving from many threads: slow sources, deferral, and CPU-bound serving against raw readers. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/*
 * Each run is whole: a fresh context, faulting threads that take pages from one counter until a
 * set number are served, then the handlers stop. Runs of the two sides of a row alternate (A B B
 * A ...); a pair's ratio is A/B of time per fault, the row shows the median of the pairs.
 */
#define SLOW_US 200	 /* a slow source: the callback sleeps this long, as on I/O */
#define SLOW_FAULTERS 64 /* faulting threads of the slow-source figures */
#define MAX_HANDLERS 16
#define CPU_FAULTERS 8 /* faulting threads of the CPU-bound figure */

enum sc_kind {
	SC_DISPATCH, /* N threads in uffd_dispatch() */
	SC_POOL,     /* uffd_monitor_start(m, N) */
	SC_DEFER,    /* one dispatcher; a completion thread finishes each fault SLOW_US later */
	SC_RAW,	     /* N raw threads blocking in read() on one fd, ZEROPAGE per fault */
};

struct sc_run {
	enum sc_kind kind;
	unsigned n;   /* handler threads */
	bool slow;    /* the callback sleeps SLOW_US */
	int faulters; /* faulting threads */
	size_t faults;
	char *mem;
	struct uffd *u;
	struct uffd_monitor *m;
	int fd;
	_Atomic size_t next;
	_Atomic bool stop;
	_Atomic unsigned alive;	 /* raw readers still reading */
	_Atomic uint64_t cpu_ns; /* handler CPU time, summed over the threads that serve */
	pthread_barrier_t bar;
	/* deferral: faults waiting for their completion time, in order (a ring) */
	pthread_mutex_t dlock;
	pthread_cond_t dcond;
	struct sc_deferred {
		struct uffd_pagefault pf;
		uint64_t due_ns;
	} dq[4096];
	unsigned dhead, dcount;
};

static void sleep_us(unsigned us)
{
	struct timespec ts = { 0, (long)us * 1000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int sc_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct sc_run *r = arg;

	if (r->kind == SC_DEFER) {
		int ret = UFFD_FAULT_DEFERRED;

		pthread_mutex_lock(&r->dlock);
		if (r->dcount == sizeof(r->dq) / sizeof(r->dq[0])) {
			ret = -EAGAIN; /* never with 64 faulting threads */
		} else {
			struct sc_deferred *d = &r->dq[(r->dhead + r->dcount++) %
						       (sizeof(r->dq) / sizeof(r->dq[0]))];

			d->pf = *pf;
			d->due_ns = now_ns() + SLOW_US * 1000u;
			pthread_cond_signal(&r->dcond);
		}
		pthread_mutex_unlock(&r->dlock);
		return ret;
	}
	if (r->slow)
		sleep_us(SLOW_US);
	return uffd_zeropage(u, pf->address, page_size, 0);
}

/* The asynchronous source's one completion thread: each request completes SLOW_US after it came. */
static void *sc_completer(void *arg)
{
	struct sc_run *r = arg;
	const unsigned cap = sizeof(r->dq) / sizeof(r->dq[0]);

	pthread_mutex_lock(&r->dlock);
	for (;;) {
		struct sc_deferred d;
		uint64_t now;
		int ret;

		while (!r->dcount && !atomic_load(&r->stop))
			pthread_cond_wait(&r->dcond, &r->dlock);
		if (!r->dcount)
			break;
		d = r->dq[r->dhead];
		r->dhead = (r->dhead + 1) % cap;
		r->dcount--;
		pthread_mutex_unlock(&r->dlock);
		now = now_ns();
		if (d.due_ns > now)
			sleep_us((unsigned)((d.due_ns - now) / 1000u));
		ret = uffd_zeropage(r->u, d.pf.address, page_size, 0);
		ret = uffd_fault_finish(r->u, &d.pf, ret);
		if (ret < 0 && ret != -EEXIST)
			die("uffd_fault_finish: %s", uffd_strerror(ret));
		pthread_mutex_lock(&r->dlock);
	}
	pthread_mutex_unlock(&r->dlock);
	return NULL;
}

static void *sc_dispatcher(void *arg)
{
	struct sc_run *r = arg;
	uint64_t c0 = thread_cpu_ns();

	while (!atomic_load(&r->stop)) {
		int n = uffd_dispatch(r->u, 10);

		if (n < 0 && n != -EINTR)
			die("uffd_dispatch: %s", uffd_strerror(n));
	}
	atomic_fetch_add(&r->cpu_ns, thread_cpu_ns() - c0);
	return NULL;
}

/*
 * A raw reader: a blocking read() on the fd it shares with the others, a ZEROPAGE per fault.
 * Once the run is over (stop), a reader leaves after serving the next batch it reads.
 */
static void *sc_raw_reader(void *arg)
{
	struct sc_run *r = arg;
	struct uffd_msg m[64];
	uint64_t c0 = thread_cpu_ns();

	for (;;) {
		ssize_t n = read(r->fd, m, sizeof(m));
		bool last;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read: %s", strerror(errno));
		}
		/* Counted out before serving: the stopper waits on the fault served here. */
		last = atomic_load(&r->stop);
		if (last)
			atomic_fetch_sub(&r->alive, 1);
		for (size_t i = 0; i < (size_t)n / sizeof(m[0]); i++) {
			struct uffdio_zeropage z = {
				.range = { .start = m[i].arg.pagefault.address &
						    ~(uint64_t)(page_size - 1),
					   .len = page_size },
			};

			if (m[i].event == UFFD_EVENT_PAGEFAULT &&
			    ioctl(r->fd, UFFDIO_ZEROPAGE, &z) && errno != EEXIST)
				die("UFFDIO_ZEROPAGE: %s", strerror(errno));
		}
		if (last)
			break;
	}
	atomic_fetch_add(&r->cpu_ns, thread_cpu_ns() - c0);
	return NULL;
}

/* Faulting threads take pages 1..faults from one counter; the pages after them stop raw readers. */
static void *sc_faulter(void *arg)
{
	struct sc_run *r = arg;

	pthread_barrier_wait(&r->bar);
	for (;;) {
		size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);

		if (i > r->faults)
			break;
		(void)*(volatile const char *)(r->mem + i * page_size);
	}
	return NULL;
}

/* One whole run; returns ns per fault, and the handlers' CPU time per fault in *cpu. */
static double sc_once(struct sc_run *r, double *cpu)
{
	pthread_t h[MAX_HANDLERS], f[SLOW_FAULTERS], comp;
	size_t len = (r->faults + 1 + MAX_HANDLERS) * page_size;
	uint64_t t0, t1;
	unsigned nh = r->kind == SC_DEFER ? 1 : r->n;

	check_sys(madvise(r->mem, len, MADV_DONTNEED), "madvise");
	atomic_store(&r->next, 1);
	atomic_store(&r->stop, false);
	atomic_store(&r->cpu_ns, 0);
	r->dhead = r->dcount = 0;
	if (r->kind == SC_RAW) {
		r->fd = raw_open(0, false);
		raw_register(r->fd, r->mem, len);
		atomic_store(&r->alive, nh);
		for (unsigned i = 0; i < nh; i++)
			if (pthread_create(&h[i], NULL, sc_raw_reader, r))
				die("pthread_create");
	} else {
		check_uffd(uffd_open(&r->u, NULL), "uffd_open");
		check_uffd(uffd_register(r->u, r->mem, len, UFFDIO_REGISTER_MODE_MISSING, NULL),
			   "uffd_register");
		check_uffd(uffd_on_pagefault(r->u, sc_fault, r), "uffd_on_pagefault");
		if (r->kind == SC_POOL) {
			check_uffd(uffd_monitor_new(&r->m), "uffd_monitor_new");
			check_uffd(uffd_monitor_add(r->m, r->u), "uffd_monitor_add");
			check_uffd(uffd_monitor_start(r->m, nh), "uffd_monitor_start");
		} else {
			for (unsigned i = 0; i < nh; i++)
				if (pthread_create(&h[i], NULL, sc_dispatcher, r))
					die("pthread_create");
		}
		if (r->kind == SC_DEFER && pthread_create(&comp, NULL, sc_completer, r))
			die("pthread_create");
	}
	pthread_barrier_init(&r->bar, NULL, (unsigned)r->faulters + 1);
	for (int i = 0; i < r->faulters; i++)
		if (pthread_create(&f[i], NULL, sc_faulter, r))
			die("pthread_create");
	pthread_barrier_wait(&r->bar);
	t0 = now_ns();
	for (int i = 0; i < r->faulters; i++)
		pthread_join(f[i], NULL);
	t1 = now_ns();
	pthread_barrier_destroy(&r->bar);
	atomic_store(&r->stop, true);
	if (r->kind == SC_RAW) {
		/* Each fault served after the stop lets the reader that served it leave. */
		for (size_t i = r->faults + 1; atomic_load(&r->alive); i++)
			(void)*(volatile const char *)(r->mem + i * page_size);
	}
	if (r->kind == SC_RAW) {
		for (unsigned i = 0; i < nh; i++)
			pthread_join(h[i], NULL);
		close(r->fd);
	} else if (r->kind == SC_POOL) {
		check_uffd(uffd_monitor_stop(r->m), "uffd_monitor_stop");
		if (uffd_monitor_join(r->m) < 0)
			die("uffd_monitor_join failed");
		uffd_monitor_free(r->m); /* closes r->u */
		r->m = NULL;
	} else {
		for (unsigned i = 0; i < nh; i++)
			pthread_join(h[i], NULL);
		if (r->kind == SC_DEFER) {
			pthread_mutex_lock(&r->dlock);
			pthread_cond_signal(&r->dcond);
			pthread_mutex_unlock(&r->dlock);
			pthread_join(comp, NULL);
		}
		uffd_close(r->u);
	}
	*cpu = (double)atomic_load(&r->cpu_ns) / (double)r->faults;
	return (double)(t1 - t0) / (double)r->faults;
}

/* A row of A against B: one warm-up pair, then pairs alternating in order (A B, B A, ...). */
static void sc_row(struct row *row, struct sc_run *a, struct sc_run *b, int pairs)
{
	for (int i = -1; i < pairs; i++) {
		double ta, tb, ca, cb;

		if (i & 1) {
			tb = sc_once(b, &cb);
			ta = sc_once(a, &ca);
		} else {
			ta = sc_once(a, &ca);
			tb = sc_once(b, &cb);
		}
		if (i < 0)
			continue;
		row->s[row->n++] = (struct sample){ .a = ta, .b = tb, .a_cpu = ca, .b_cpu = cb };
		if (opt.verbose)
			fprintf(stderr, "  %s %s: %.2f us vs %.2f us per fault\n", row->figure,
				row->variant, ta / 1e3, tb / 1e3);
	}
	row_print(row);
}

static char *sc_mem(size_t pages)
{
	static char *mem;
	static size_t have;

	if (have < pages) {
		mem = map_region(pages * page_size);
		warm_region(mem, pages * page_size);
		have = pages;
	}
	return mem;
}

static struct sc_run *sc_new(enum sc_kind kind, unsigned n, bool slow, int faulters, size_t faults)
{
	struct sc_run *r = calloc(1, sizeof(*r));

	if (!r)
		die("out of memory");
	r->kind = kind;
	r->n = n;
	r->slow = slow;
	r->faulters = faulters;
	r->faults = faults;
	r->mem = sc_mem(faults + 1 + MAX_HANDLERS);
	r->fd = -1;
	pthread_mutex_init(&r->dlock, NULL);
	pthread_cond_init(&r->dcond, NULL);
	return r;
}

static void sc_free(struct sc_run *r)
{
	pthread_mutex_destroy(&r->dlock);
	pthread_cond_destroy(&r->dcond);
	free(r);
}

/*
 * Slow sources scale with threads: each fault's callback sleeps SLOW_US, 64 threads fault. N
 * threads in uffd_dispatch(), and a pool of N, against one thread in uffd_dispatch(). The ratio
 * is time per fault with N against one thread's: N times the faults per second is 1/N, and the
 * target (at least 0.8 N times one thread's rate) is <= 1.25/N.
 */
void fig_scale(void)
{
	static const unsigned ns[] = { 1, 2, 4, 8, 16 };
	size_t per = opt.smoke ? 8 : opt.quick ? 150 : 300;
	int pairs = opt.smoke ? 1 : opt.pairs;
	struct sc_run *one = sc_new(SC_DISPATCH, 1, true, SLOW_FAULTERS, per);

	for (int pool = 0; pool < 2; pool++) {
		for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
			struct sc_run *r = sc_new(pool ? SC_POOL : SC_DISPATCH, ns[i], true,
						  SLOW_FAULTERS, per * ns[i]);
			struct row row = { .figure = "scale", .cpu = "any", .unit = "per fault" };

			row.max_ratio = ns[i] <= 8 ? 1.25 / ns[i] : 0;
			snprintf(row.variant, sizeof(row.variant), "%u %s, %u us source", ns[i],
				 pool ? "pool threads" : "dispatch threads", SLOW_US);
			if (i == 0 && !pool)
				snprintf(row.note, sizeof(row.note),
					 "raw = one uffd_dispatch() thread; %d faulting threads, "
					 "a callback sleeps %u us then uffd_zeropage()",
					 SLOW_FAULTERS, SLOW_US);
			sc_row(&row, r, one, pairs);
			sc_free(r);
		}
	}
	/* Deferral: one dispatcher, one completion thread, each request done 200 us later. */
	{
		struct sc_run *r = sc_new(SC_DEFER, 1, true, SLOW_FAULTERS, per * 10);
		struct row row = { .figure = "scale", .cpu = "any", .unit = "per fault" };

		row.max_ratio = 0.1;
		snprintf(row.variant, sizeof(row.variant), "deferred, 1 completion thread");
		snprintf(row.note, sizeof(row.note),
			 "raw = one synchronous uffd_dispatch() thread; target: 10x its faults/s");
		sc_row(&row, r, one, pairs);
		sc_free(r);
	}
	sc_free(one);
}

/*
 * CPU-bound serving: zero-work callbacks (uffd_zeropage()), 8 faulting threads, 2 threads in
 * uffd_dispatch() against 2 raw threads blocking in read() on one fd.
 */
static void readers_cpu(enum cpu_mode pinned)
{
	size_t faults = opt.smoke ? 64 : opt.quick ? 4096 : 16384;
	int pairs = opt.smoke ? 1 : opt.pairs < 11 ? 11 : opt.pairs;
	struct sc_run *lib = sc_new(SC_DISPATCH, 2, false, CPU_FAULTERS, faults);
	struct sc_run *raw = sc_new(SC_RAW, 2, false, CPU_FAULTERS, faults);
	struct row row = { .figure = "readers",
			   .cpu = cpu_name(pinned),
			   .unit = "per fault",
			   .max_ratio = 1.05,
			   .show_cpu = true };

	snprintf(row.variant, sizeof(row.variant), "2 dispatchers, 8 faulters, ZEROPAGE");
	sc_row(&row, lib, raw, pairs);
	sc_free(lib);
	sc_free(raw);
}

void fig_readers(void)
{
	for_modes(readers_cpu, false);
}
