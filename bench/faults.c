/* SPDX-License-Identifier: MIT */
/* Serving faults: libuffd's uffd_dispatch() against a hand-written blocking read()+ioctl() loop. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"

#define MAX_BATCH 256
#define MAX_THREADS 16

enum op { OP_COPY, OP_ZERO };

/* One way of faulting and serving. Fields marked "lib" apply to the libuffd side only: the raw
 * side is always the plain blocking loop, one page per fault. */
struct spec {
	enum op op;
	bool random;	    /* page order: a fixed random permutation, else ascending */
	int threads;	    /* faulting threads */
	bool shared;	    /* threads take the next page from one counter (sequential overall) */
	unsigned readahead; /* lib: pages served per fault */
	bool batch_wake;    /* lib: resolve with DONTWAKE, one UFFDIO_WAKE per batch */
	unsigned spin_us;   /* lib: latency mode */
	unsigned batch;	    /* messages per read(), both sides */
};

/* Memory shared by every run of a figure, so that both sides fault the same warm pages. */
struct env {
	char *mem, *src, *stop;
	size_t pages, len;
	uint32_t *seq, *rnd;
};

struct run {
	const struct spec *sp;
	const struct env *e;
	const uint32_t *order;
	struct uffd *u;
	int fd;
	/* handler side */
	volatile bool stopped;
	uint64_t faults, reads, msgs, cpu_ns;
	uintptr_t wake_lo, wake_hi;
	/* faulting side */
	pthread_barrier_t bar;
	_Atomic size_t next;
};

struct result {
	double ns_per_page, cpu_per_page, msgs_per_read;
	uint64_t allocs;
};

static void touch(const struct env *e, uint32_t pg)
{
	(void)*(volatile char *)(e->mem + (size_t)pg * page_size);
}

/* ---- the libuffd side ---- */

static int lib_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct run *r = arg;
	const struct spec *sp = r->sp;
	uintptr_t a = (uintptr_t)pf->address, end = (uintptr_t)pf->range.end;
	uint64_t mode = sp->batch_wake ? UFFDIO_COPY_MODE_DONTWAKE : 0;
	size_t len = page_size;
	int ret;

	if (!pf->range.data) { /* the stop page */
		r->stopped = true;
		return uffd_zeropage(u, pf->address, page_size, 0);
	}
	if (sp->readahead > 1) {
		len = (size_t)sp->readahead * page_size;
		if (len > end - a)
			len = end - a;
	}
	if (sp->op == OP_ZERO) {
		ret = uffd_zeropage(u, pf->address, len, mode);
	} else {
		const char *src = (const char *)pf->range.data + pf->range.offset +
				  (a - (uintptr_t)pf->range.start);

		ret = uffd_copy(u, pf->address, src, len, mode);
	}
	/* Readahead may meet pages already there: the faulting page is what matters. */
	if (ret == -EEXIST && uffd_last_done() >= page_size)
		ret = 0;
	if (sp->batch_wake) {
		if (!r->wake_hi || a < r->wake_lo)
			r->wake_lo = a;
		if (a + page_size > r->wake_hi)
			r->wake_hi = a + page_size;
	}
	r->faults++;
	return ret;
}

static void *lib_handler(void *arg)
{
	struct run *r = arg;
	uint64_t c0 = thread_cpu_ns();
	struct uffd_stats st;

	while (!r->stopped) {
		int n = uffd_dispatch(r->u, -1);

		if (n < 0 && n != -EINTR)
			die("uffd_dispatch: %s", uffd_strerror(n));
		if (r->wake_hi) {
			check_uffd(uffd_wake(r->u, (void *)r->wake_lo, r->wake_hi - r->wake_lo),
				   "uffd_wake");
			r->wake_lo = r->wake_hi = 0;
		}
	}
	r->cpu_ns = thread_cpu_ns() - c0;
	uffd_get_stats(r->u, &st);
	r->reads = st.reads;
	r->msgs = st.messages;
	return NULL;
}

/* ---- the raw side: a blocking read() and one ioctl per fault ---- */

static void *raw_handler(void *arg)
{
	struct run *r = arg;
	const struct env *e = r->e;
	const bool copy = r->sp->op == OP_COPY;
	const uintptr_t mask = ~(uintptr_t)(page_size - 1);
	const uintptr_t base = (uintptr_t)e->mem, stop = (uintptr_t)e->stop;
	struct uffd_msg msgs[MAX_BATCH];
	size_t want = r->sp->batch * sizeof(msgs[0]);
	uint64_t c0 = thread_cpu_ns();

	while (!r->stopped) {
		ssize_t n = read(r->fd, msgs, want);

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read: %s", strerror(errno));
		}
		r->reads++;
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			uintptr_t a = (uintptr_t)msgs[i].arg.pagefault.address & mask;
			int ret;

			r->msgs++;
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (copy && a != stop) {
				struct uffdio_copy c = {
					.dst = a, .src = (uintptr_t)e->src + (a - base),
					.len = page_size, .mode = 0,
				};

				ret = ioctl(r->fd, UFFDIO_COPY, &c);
			} else {
				struct uffdio_zeropage z = {
					.range = { .start = a, .len = page_size }, .mode = 0,
				};

				ret = ioctl(r->fd, UFFDIO_ZEROPAGE, &z);
			}
			if (ret && errno != EEXIST)
				die("raw resolve: %s", strerror(errno));
			if (a == stop)
				r->stopped = true;
			else
				r->faults++;
		}
	}
	r->cpu_ns = thread_cpu_ns() - c0;
	return NULL;
}

/* ---- one run ---- */

struct fthread {
	struct run *r;
	int idx;
	pthread_t t;
};

static void fault_pages(struct run *r, int idx)
{
	const struct env *e = r->e;
	int nt = r->sp->threads;

	if (r->sp->shared) {
		for (;;) {
			size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);

			if (i >= e->pages)
				break;
			touch(e, r->order[i]);
		}
		return;
	}
	size_t per = e->pages / (size_t)nt;
	size_t from = per * (size_t)idx, to = idx == nt - 1 ? e->pages : from + per;

	for (size_t i = from; i < to; i++)
		touch(e, r->order[i]);
}

static void *fthread_main(void *arg)
{
	struct fthread *ft = arg;

	pthread_barrier_wait(&ft->r->bar);
	fault_pages(ft->r, ft->idx);
	return NULL;
}

static void verify(const struct env *e, const struct spec *sp)
{
	if (sp->op == OP_COPY) {
		if (memcmp(e->mem, e->src, e->len) != 0)
			die("served memory does not match its source");
		return;
	}
	for (size_t off = 0; off < e->len; off += page_size)
		if (*(volatile uint64_t *)(e->mem + off) != 0)
			die("zero-page memory is not zero");
}

static void run_once(const struct env *e, const struct spec *sp, bool lib, struct result *res)
{
	struct run r = { .sp = sp, .e = e, .order = sp->random ? e->rnd : e->seq, .fd = -1 };
	struct fthread ft[MAX_THREADS];
	pthread_t h;
	uint64_t t0, t1, a0, a1;

	check_sys(madvise(e->mem, e->len, MADV_DONTNEED), "madvise");
	check_sys(madvise(e->stop, page_size, MADV_DONTNEED), "madvise");
	if (lib) {
		struct uffd_config cfg = { .batch = sp->batch, .spin_us = sp->spin_us };

		check_uffd(uffd_open(&r.u, &cfg), "uffd_open");
		check_uffd(uffd_register(r.u, e->mem, e->len, UFFDIO_REGISTER_MODE_MISSING, e->src),
			   "uffd_register");
		check_uffd(uffd_register(r.u, e->stop, page_size, UFFDIO_REGISTER_MODE_MISSING,
					 NULL),
			   "uffd_register");
		check_uffd(uffd_on_pagefault(r.u, lib_fault, &r), "uffd_on_pagefault");
	} else {
		r.fd = raw_open(0, false);
		raw_register(r.fd, e->mem, e->len);
		raw_register(r.fd, e->stop, page_size);
	}
	place_handler();
	if (pthread_create(&h, NULL, lib ? lib_handler : raw_handler, &r))
		die("pthread_create");
	place_faulters();
	if (sp->threads > 1) {
		pthread_barrier_init(&r.bar, NULL, (unsigned)sp->threads + 1);
		for (int i = 0; i < sp->threads; i++) {
			ft[i] = (struct fthread){ .r = &r, .idx = i };
			if (pthread_create(&ft[i].t, NULL, fthread_main, &ft[i]))
				die("pthread_create");
		}
	}
	a0 = atomic_load(&bench_allocs);
	t0 = now_ns();
	if (sp->threads > 1) {
		pthread_barrier_wait(&r.bar);
		for (int i = 0; i < sp->threads; i++)
			pthread_join(ft[i].t, NULL);
	} else {
		fault_pages(&r, 0);
	}
	t1 = now_ns();
	a1 = atomic_load(&bench_allocs);
	/* The handler stops once it has served this page. */
	(void)*(volatile char *)e->stop;
	pthread_join(h, NULL);
	if (sp->threads > 1)
		pthread_barrier_destroy(&r.bar);
	if (lib)
		uffd_close(r.u);
	else
		close(r.fd);
	verify(e, sp);

	res->ns_per_page = (double)(t1 - t0) / (double)e->pages;
	res->cpu_per_page = (double)r.cpu_ns / (double)e->pages;
	res->msgs_per_read = r.reads ? (double)r.msgs / (double)r.reads : 0;
	res->allocs = a1 - a0;
}

/* ---- figures ---- */

static struct env env;

static void env_init(size_t pages)
{
	if (env.pages == pages)
		return;
	env.pages = pages;
	env.len = pages * page_size;
	env.mem = map_region(env.len);
	env.src = map_region(env.len);
	env.stop = map_region(page_size);
	fill_pattern(env.src, env.len, 1);
	warm_region(env.mem, env.len);
	warm_region(env.stop, page_size);
	env.seq = malloc(pages * sizeof(uint32_t));
	env.rnd = malloc(pages * sizeof(uint32_t));
	if (!env.seq || !env.rnd)
		die("out of memory");
	for (size_t i = 0; i < pages; i++)
		env.seq[i] = env.rnd[i] = (uint32_t)i;
	/* A fixed permutation, the same for both sides and every run. */
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (size_t i = pages - 1; i > 0; i--) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t j = (size_t)(x % (i + 1));
		uint32_t t = env.rnd[i];

		env.rnd[i] = env.rnd[j];
		env.rnd[j] = t;
	}
}

/*
 * One row: a warm-up pair that is not counted, then opt.pairs pairs of (libuffd, raw), each
 * pair run back to back, so that a noisy moment hits both sides of a pair.
 */
static void pairs(struct row *row, const struct spec *lib, const struct spec *raw)
{
	struct result a, b;
	uint64_t allocs = 0;

	run_once(&env, lib, true, &a);
	run_once(&env, raw, false, &b);
	row->n = 0;
	for (int i = 0; i < opt.pairs; i++) {
		struct sample *s = &row->s[row->n++];

		run_once(&env, lib, true, &a);
		run_once(&env, raw, false, &b);
		*s = (struct sample){
			.a = a.ns_per_page, .b = b.ns_per_page,
			.a_cpu = a.cpu_per_page, .b_cpu = b.cpu_per_page,
			.a_extra = a.msgs_per_read, .b_extra = b.msgs_per_read,
		};
		allocs += a.allocs;
		if (opt.verbose)
			fprintf(stderr, "  %s %s: lib %.0f ns raw %.0f ns (%.3f)\n", row->figure,
				row->variant, a.ns_per_page, b.ns_per_page,
				a.ns_per_page / b.ns_per_page);
	}
	if (allocs)
		snprintf(row->note, sizeof(row->note),
			 "note: %llu allocations in libuffd's timed runs", (unsigned long long)allocs);
}

static void faults_cpu(enum cpu_mode pinned)
{
	static const struct {
		enum op op;
		bool random;
		const char *name;
	} v[] = {
		{ OP_COPY, false, "COPY sequential" },
		{ OP_COPY, true, "COPY random" },
		{ OP_ZERO, false, "ZEROPAGE sequential" },
		{ OP_ZERO, true, "ZEROPAGE random" },
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct spec sp = { .op = v[i].op, .random = v[i].random, .threads = 1, .batch = 64 };
		struct row row = { .figure = "fault", .cpu = cpu_name(pinned), .unit = "per fault",
				   .max_ratio = 1.05 };

		snprintf(row.variant, sizeof(row.variant), "%s, %zu %s", v[i].name,
			 env.len >= (1u << 20) ? env.len >> 20 : env.len >> 10,
			 env.len >= (1u << 20) ? "MiB" : "KiB");
		pairs(&row, &sp, &sp);
		row_print(&row);
	}
}

void fig_faults(void)
{
	env_init(opt.mem_pages);
	for_modes(faults_cpu, true);
}

static void threads_cpu(enum cpu_mode pinned)
{
	struct spec own = { .op = OP_COPY, .threads = 8, .batch = 64 };
	struct spec shared = { .op = OP_COPY, .threads = 8, .shared = true, .batch = 64 };
	struct spec shared_bw = shared;
	struct row row = { .figure = "threads", .cpu = cpu_name(pinned), .unit = "per fault",
			   .extra_name = "messages per read" };

	snprintf(row.variant, sizeof(row.variant), "8 threads, own slices, COPY");
	pairs(&row, &own, &own);
	row_print(&row);

	snprintf(row.variant, sizeof(row.variant), "8 threads, one sequence, COPY");
	pairs(&row, &shared, &shared);
	row_print(&row);

	shared_bw.batch_wake = true;
	snprintf(row.variant, sizeof(row.variant), "... batch waking (DONTWAKE + 1 WAKE)");
	pairs(&row, &shared_bw, &shared);
	row_print(&row);
}

void fig_threads(void)
{
	env_init(opt.mem_pages);
	for_modes(threads_cpu, false);
}

#define LATENCY_SPIN_US 100

static void latency_cpu(enum cpu_mode pinned)
{
	struct spec raw = { .op = OP_COPY, .threads = 1, .batch = 64 };
	struct spec lat = raw;
	struct row row = { .figure = "beat", .cpu = cpu_name(pinned), .unit = "per fault",
			   .show_cpu = true };
	static const unsigned ra[] = { 4, 16, 64 };

	lat.spin_us = LATENCY_SPIN_US;
	row.max_ratio = 0.5;
	snprintf(row.variant, sizeof(row.variant), "latency mode (spin_us=%u), COPY seq",
		 LATENCY_SPIN_US);
	pairs(&row, &lat, &raw);
	row_print(&row);

	row.max_ratio = 0;
	row.show_cpu = false;
	for (size_t i = 0; i < sizeof(ra) / sizeof(ra[0]); i++) {
		struct spec rd = raw;

		rd.readahead = ra[i];
		snprintf(row.variant, sizeof(row.variant), "readahead %u pages/fault, COPY seq",
			 ra[i]);
		pairs(&row, &rd, &raw);
		row_print(&row);
	}
	{
		struct spec both = raw;

		both.readahead = 16;
		both.spin_us = LATENCY_SPIN_US;
		row.show_cpu = true;
		snprintf(row.variant, sizeof(row.variant), "latency mode + readahead 16");
		pairs(&row, &both, &raw);
		row_print(&row);
	}
}

void fig_latency(void)
{
	env_init(opt.mem_pages);
	for_modes(latency_cpu, true);
}
