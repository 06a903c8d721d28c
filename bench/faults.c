/* SPDX-License-Identifier: MIT */
/* Serving faults: libuffd's uffd_dispatch() against a hand-written blocking read()+ioctl() loop. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
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
	bool raw_poll;	    /* raw: a non-blocking fd, poll() then read(), as libuffd must */
};

/*
 * Memory shared by every run of a figure: one region per side, so that both sides are served at
 * once, their faults interleaved in chunks (see sweep()).
 */
struct env {
	char *mem[2], *stop[2], *src;
	size_t pages, len;
	uint32_t *seq, *rnd;
};

/* One side of a pair: libuffd or the raw loop, serving its own region. */
struct side {
	bool lib;
	const struct spec *sp;
	char *mem, *stop;
	const char *src;
	struct uffd *u;
	int fd;
	pthread_t h;
	/* handler side */
	volatile bool stopped;
	uint64_t faults, reads, msgs, cpu_ns;
	uintptr_t wake_lo, wake_hi;
	/* faulting side */
	uint64_t ns, allocs;
	double *chunk_ns; /* per chunk, ns per page */
};

struct result {
	double ns_per_page, cpu_per_page, msgs_per_read;
	uint64_t allocs;
	double ratio; /* median over chunk pairs of lib/raw (in res[0]) */
};

static void touch(const char *mem, uint32_t pg)
{
	(void)*(volatile const char *)(mem + (size_t)pg * page_size);
}

/* ---- the libuffd side ---- */

static int lib_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct side *r = arg;
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
	struct side *r = arg;
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
	struct side *r = arg;
	const bool copy = r->sp->op == OP_COPY;
	const uintptr_t mask = ~(uintptr_t)(page_size - 1);
	const uintptr_t base = (uintptr_t)r->mem, stop = (uintptr_t)r->stop;
	struct uffd_msg msgs[MAX_BATCH];
	size_t want = r->sp->batch * sizeof(msgs[0]);
	uint64_t c0 = thread_cpu_ns();

	while (!r->stopped) {
		ssize_t n;

		if (r->sp->raw_poll) {
			struct pollfd p = { .fd = r->fd, .events = POLLIN };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				die("poll: %s", strerror(errno));
		}
		n = read(r->fd, msgs, want);
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
					.dst = a,
					.src = (uintptr_t)r->src + (a - base),
					.len = page_size,
					.mode = 0,
				};

				ret = ioctl(r->fd, UFFDIO_COPY, &c);
			} else {
				struct uffdio_zeropage z = {
					.range = { .start = a, .len = page_size },
					.mode = 0,
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

/* ---- one sweep: both sides at once, their faults interleaved in chunks ---- */

/*
 * Pages per chunk. In a pair, the two sides fault one chunk each in turn (A B B A A B ...) over
 * their whole regions, so that load from other processes falls on both alike. A time slice
 * taken by another process (milliseconds) still lands on one chunk of one side now and then, so
 * a pair's ratio is the median of its chunk ratios rather than the ratio of its sums.
 */
#define CHUNK_PAGES 64
#define CHUNK_PAGES_THREADS 512

static struct env env;

static void verify(const char *mem, const struct spec *sp)
{
	if (sp->op == OP_COPY) {
		if (memcmp(mem, env.src, env.len) != 0)
			die("served memory does not match its source");
		return;
	}
	for (size_t off = 0; off < env.len; off += page_size)
		if (*(volatile const uint64_t *)(mem + off) != 0)
			die("zero-page memory is not zero");
}

static void side_open(struct side *r)
{
	check_sys(madvise(r->mem, env.len, MADV_DONTNEED), "madvise");
	check_sys(madvise(r->stop, page_size, MADV_DONTNEED), "madvise");
	if (r->lib) {
		struct uffd_config cfg = { .batch = r->sp->batch, .spin_us = r->sp->spin_us };

		check_uffd(uffd_open(&r->u, &cfg), "uffd_open");
		check_uffd(uffd_register(r->u, r->mem, env.len, UFFDIO_REGISTER_MODE_MISSING,
					 (void *)(uintptr_t)r->src),
			   "uffd_register");
		check_uffd(uffd_register(r->u, r->stop, page_size, UFFDIO_REGISTER_MODE_MISSING,
					 NULL),
			   "uffd_register");
		check_uffd(uffd_on_pagefault(r->u, lib_fault, r), "uffd_on_pagefault");
	} else {
		r->fd = raw_open(0, r->sp->raw_poll);
		raw_register(r->fd, r->mem, env.len);
		raw_register(r->fd, r->stop, page_size);
	}
	place_handler();
	if (pthread_create(&r->h, NULL, r->lib ? lib_handler : raw_handler, r))
		die("pthread_create");
	place_faulters();
}

static void side_close(struct side *r)
{
	/* The handler stops once it has served this page. */
	(void)*(volatile char *)r->stop;
	pthread_join(r->h, NULL);
	if (r->lib)
		uffd_close(r->u);
	else
		close(r->fd);
	verify(r->mem, r->sp);
}

/* Faulting threads, when a spec has more than one: they fault each chunk together. */
struct crew {
	const struct spec *sp;
	const uint32_t *order;
	pthread_barrier_t bar;
	const char *mem; /* the current chunk: */
	size_t from, to;
	_Atomic size_t next;
	bool done;
	struct worker {
		struct crew *c;
		int idx;
		pthread_t t;
	} w[MAX_THREADS];
};

static void crew_chunk(struct crew *c, int idx)
{
	int nt = c->sp->threads;

	if (c->sp->shared) {
		for (;;) {
			size_t i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);

			if (i >= c->to)
				break;
			touch(c->mem, c->order[i]);
		}
		return;
	}
	size_t per = (c->to - c->from) / (size_t)nt;
	size_t lo = c->from + per * (size_t)idx, hi = idx == nt - 1 ? c->to : lo + per;

	for (size_t i = lo; i < hi; i++)
		touch(c->mem, c->order[i]);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct crew *c = w->c;

	for (;;) {
		pthread_barrier_wait(&c->bar);
		if (c->done)
			return NULL;
		crew_chunk(c, w->idx);
		pthread_barrier_wait(&c->bar);
	}
}

static void crew_start(struct crew *c)
{
	pthread_barrier_init(&c->bar, NULL, (unsigned)c->sp->threads + 1);
	for (int i = 0; i < c->sp->threads; i++) {
		c->w[i] = (struct worker){ .c = c, .idx = i };
		if (pthread_create(&c->w[i].t, NULL, worker_main, &c->w[i]))
			die("pthread_create");
	}
}

static void crew_stop(struct crew *c)
{
	c->done = true;
	pthread_barrier_wait(&c->bar);
	for (int i = 0; i < c->sp->threads; i++)
		pthread_join(c->w[i].t, NULL);
	pthread_barrier_destroy(&c->bar);
}

/* One chunk of one side, timed. */
static void run_chunk(struct side *r, struct crew *c, const uint32_t *order, size_t from, size_t to,
		      int k)
{
	uint64_t a0 = atomic_load(&bench_allocs), t0 = now_ns(), dt;

	if (c) {
		c->mem = r->mem;
		c->from = from;
		c->to = to;
		atomic_store(&c->next, from);
		pthread_barrier_wait(&c->bar);
		pthread_barrier_wait(&c->bar);
	} else {
		for (size_t i = from; i < to; i++)
			touch(r->mem, order[i]);
	}
	dt = now_ns() - t0;
	r->ns += dt;
	r->chunk_ns[k] = (double)dt / (double)(to - from);
	r->allocs += atomic_load(&bench_allocs) - a0;
}

/* One pair: libuffd with @lib on one region, the raw loop with @raw on the other. */
static void sweep(const struct spec *lib, const struct spec *raw, struct result res[2])
{
	struct side sd[2] = {
		{ .lib = true, .sp = lib, .mem = env.mem[0], .stop = env.stop[0], .fd = -1 },
		{ .lib = false, .sp = raw, .mem = env.mem[1], .stop = env.stop[1], .fd = -1 },
	};
	const uint32_t *order = lib->random ? env.rnd : env.seq;
	size_t chunk = lib->threads > 1 ? CHUNK_PAGES_THREADS : CHUNK_PAGES;
	unsigned spin = lib->spin_us > raw->spin_us ? lib->spin_us : raw->spin_us;
	struct crew crew = { .sp = lib, .order = order };
	int k = 0, nchunks = (int)((env.pages + chunk - 1) / chunk);
	double *ratios = malloc(sizeof(double) * (size_t)nchunks);

	sd[0].chunk_ns = malloc(sizeof(double) * (size_t)nchunks);
	sd[1].chunk_ns = malloc(sizeof(double) * (size_t)nchunks);
	if (!ratios || !sd[0].chunk_ns || !sd[1].chunk_ns)
		die("out of memory");
	sd[0].src = sd[1].src = env.src;
	side_open(&sd[0]);
	side_open(&sd[1]);
	if (lib->threads > 1)
		crew_start(&crew);
	for (size_t from = 0; from < env.pages; from += chunk, k++) {
		size_t to = from + chunk < env.pages ? from + chunk : env.pages;

		for (int j = 0; j < 2; j++) {
			run_chunk(&sd[(j + k) & 1], lib->threads > 1 ? &crew : NULL, order, from,
				  to, k);
			/* Let a spinning handler give up before the other side's chunk. */
			if (spin) {
				struct timespec ts = { 0, 2000L * spin };

				nanosleep(&ts, NULL);
			}
		}
	}
	if (lib->threads > 1)
		crew_stop(&crew);
	side_close(&sd[0]);
	side_close(&sd[1]);
	for (int i = 0; i < nchunks; i++)
		ratios[i] = sd[0].chunk_ns[i] / sd[1].chunk_ns[i];
	for (int j = 0; j < 2; j++) {
		res[j].ns_per_page = median(sd[j].chunk_ns, nchunks);
		res[j].cpu_per_page = (double)sd[j].cpu_ns / (double)env.pages;
		res[j].msgs_per_read = sd[j].reads ? (double)sd[j].msgs / (double)sd[j].reads : 0;
		res[j].allocs = sd[j].allocs;
		free(sd[j].chunk_ns);
	}
	res[0].ratio = median(ratios, nchunks);
	free(ratios);
}

/* ---- figures ---- */

static void env_init(size_t pages)
{
	if (env.pages == pages)
		return;
	env.pages = pages;
	env.len = pages * page_size;
	env.src = map_region(env.len);
	fill_pattern(env.src, env.len, 1);
	for (int j = 0; j < 2; j++) {
		env.mem[j] = map_region(env.len);
		env.stop[j] = map_region(page_size);
		warm_region(env.mem[j], env.len);
		warm_region(env.stop[j], page_size);
	}
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

/* One row: a warm-up sweep that is not counted, then opt.pairs sweeps. */
static void pairs(struct row *row, const struct spec *lib, const struct spec *raw)
{
	struct result res[2];
	uint64_t allocs = 0;

	sweep(lib, raw, res);
	row->n = 0;
	for (int i = 0; i < opt.pairs; i++) {
		struct sample *s = &row->s[row->n++];

		sweep(lib, raw, res);
		*s = (struct sample){
			.a = res[0].ns_per_page,
			.b = res[1].ns_per_page,
			.a_cpu = res[0].cpu_per_page,
			.b_cpu = res[1].cpu_per_page,
			.a_extra = res[0].msgs_per_read,
			.b_extra = res[1].msgs_per_read,
			.ratio = res[0].ratio,
		};
		allocs += res[0].allocs;
		if (opt.verbose)
			fprintf(stderr, "  %s %s: lib %.0f ns raw %.0f ns (%.3f)\n", row->figure,
				row->variant, res[0].ns_per_page, res[1].ns_per_page, res[0].ratio);
	}
	if (allocs)
		snprintf(row->note, sizeof(row->note),
			 "note: %llu allocations in libuffd's timed runs",
			 (unsigned long long)allocs);
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
		struct row row = { .figure = "fault",
				   .cpu = cpu_name(pinned),
				   .unit = "per fault",
				   .max_ratio = 1.05 };

		snprintf(row.variant, sizeof(row.variant), "%s, %zu %s", v[i].name,
			 env.len >= (1u << 20) ? env.len >> 20 : env.len >> 10,
			 env.len >= (1u << 20) ? "MiB" : "KiB");
		pairs(&row, &sp, &sp);
		row_print(&row);
	}
	/* Where the raw loop also has the non-blocking fd libuffd must use (see bench/README.md). */
	{
		struct spec lib = { .op = OP_ZERO, .random = true, .threads = 1, .batch = 64 };
		struct spec raw = lib;
		struct row row = { .figure = "fault",
				   .cpu = cpu_name(pinned),
				   .unit = "per fault" };

		raw.raw_poll = true;
		snprintf(row.variant, sizeof(row.variant), "... vs raw poll()+read() loop");
		pairs(&row, &lib, &raw);
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
	struct row row = { .figure = "threads",
			   .cpu = cpu_name(pinned),
			   .unit = "per fault",
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
	struct row row = {
		.figure = "beat", .cpu = cpu_name(pinned), .unit = "per fault", .show_cpu = true
	};
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
