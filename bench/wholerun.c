/* SPDX-License-Identifier: MIT */
/* Whole runs: one plain program serving 32 MiB of faults, libuffd against raw loops, alternated. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef BENCH_HAVE_LIBURING
#include <liburing.h>
#endif

#include "bench.h"

/*
 * The chunked fault figure (faults.c) runs both sides at once and compares chunks of 64 faults.
 * This one runs each program whole, one after the other, as a user would time it: a handler
 * thread and one faulting thread, MISSING faults over the region in order, each resolved with a
 * copy. Whole runs take in everything a chunk cannot (the first wait, the heuristics settling,
 * the stop), and they are alternated in rotating order so that a slow spell of the shared
 * machine falls on all sides alike; a pair's ratio is lib/raw of that pair's two runs, and the
 * row shows the median of the pairs.
 */
enum wr_kind { WR_LIB, WR_BLOCK, WR_POLL, WR_URING, WR__COUNT };
static const char *const wr_name[WR__COUNT] = { "libuffd", "blocking read()", "poll()+read()",
						"io_uring read" };

struct wr_side {
	enum wr_kind kind;
	char *mem, *stop;
	const char *src;
	size_t len;
	struct uffd *u;
	int fd;
	volatile bool stopped;
	uint64_t cpu_ns;
};

static int wr_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct wr_side *s = arg;

	if (!pf->range.data) { /* the stop page */
		s->stopped = true;
		return uffd_zeropage(u, pf->address, page_size, 0);
	}
	return uffd_copy(u, pf->address,
			 (const char *)pf->range.data +
				 ((uintptr_t)pf->address - (uintptr_t)pf->range.start),
			 page_size, 0);
}

static void *wr_lib(void *arg)
{
	struct wr_side *s = arg;
	uint64_t c0 = thread_cpu_ns();

	while (!s->stopped) {
		int n = uffd_dispatch(s->u, -1);

		if (n < 0 && n != -EINTR)
			die("uffd_dispatch: %s", uffd_strerror(n));
	}
	s->cpu_ns = thread_cpu_ns() - c0;
	return NULL;
}

/* The raw loops' work per message: what a hand-written handler does. */
static void wr_serve(struct wr_side *s, const struct uffd_msg *m, size_t n)
{
	const uintptr_t mask = ~(uintptr_t)(page_size - 1);

	for (size_t i = 0; i < n; i++) {
		uintptr_t a = (uintptr_t)m[i].arg.pagefault.address & mask;
		int ret;

		if (m[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		if (a == (uintptr_t)s->stop) {
			struct uffdio_zeropage z = { .range = { .start = a, .len = page_size } };

			ret = ioctl(s->fd, UFFDIO_ZEROPAGE, &z);
			s->stopped = true;
		} else {
			struct uffdio_copy c = {
				.dst = a,
				.src = (uintptr_t)s->src + (a - (uintptr_t)s->mem),
				.len = page_size,
			};

			ret = ioctl(s->fd, UFFDIO_COPY, &c);
		}
		if (ret && errno != EEXIST)
			die("raw resolve: %s", strerror(errno));
	}
}

/* Blocking read() (WR_BLOCK), or poll() then read() on a non-blocking fd (WR_POLL). */
static void *wr_raw(void *arg)
{
	struct wr_side *s = arg;
	struct uffd_msg m[64];
	uint64_t c0 = thread_cpu_ns();

	while (!s->stopped) {
		ssize_t n;

		if (s->kind == WR_POLL) {
			struct pollfd p = { .fd = s->fd, .events = POLLIN };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				die("poll: %s", strerror(errno));
		}
		n = read(s->fd, m, sizeof(m));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read: %s", strerror(errno));
		}
		wr_serve(s, m, (size_t)n / sizeof(m[0]));
	}
	s->cpu_ns = thread_cpu_ns() - c0;
	return NULL;
}

#ifdef BENCH_HAVE_LIBURING
/*
 * io_uring: one read of the non-blocking fd per wait, submitted and waited for in one
 * io_uring_enter() (the kernel arms its internal poll when the fd is empty). The ring is the
 * handler thread's alone: SINGLE_ISSUER | DEFER_TASKRUN, the cheapest setup measured here.
 */
static void *wr_uring(void *arg)
{
	struct wr_side *s = arg;
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	struct uffd_msg m[64];
	struct io_uring ring;
	uint64_t c0;
	int ret = io_uring_queue_init_params(4, &ring, &p);

	if (ret < 0)
		die("io_uring_queue_init: %s", strerror(-ret));
	c0 = thread_cpu_ns();
	while (!s->stopped) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		struct io_uring_cqe *cqe;
		int res;

		io_uring_prep_read(sqe, s->fd, m, sizeof(m), 0);
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR)
			die("io_uring_submit_and_wait: %s", strerror(-ret));
		if (io_uring_wait_cqe(&ring, &cqe))
			continue;
		res = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		if (res < 0 && res != -EINTR && res != -EAGAIN)
			die("io_uring read: %s", strerror(-res));
		if (res > 0)
			wr_serve(s, m, (size_t)res / sizeof(m[0]));
	}
	s->cpu_ns = thread_cpu_ns() - c0;
	io_uring_queue_exit(&ring);
	return NULL;
}
#endif

/* One whole run of @s: open, register, fault every page in order, stop, check. ns per fault. */
static double wr_run(struct wr_side *s, uint64_t *cpu_ns)
{
	pthread_t h;
	void *(*fn)(void *) = wr_raw;
	uint64_t t0, t1;

	check_sys(madvise(s->mem, s->len, MADV_DONTNEED), "madvise");
	check_sys(madvise(s->stop, page_size, MADV_DONTNEED), "madvise");
	s->stopped = false;
	if (s->kind == WR_LIB) {
		check_uffd(uffd_open(&s->u, NULL), "uffd_open");
		check_uffd(uffd_register(s->u, s->mem, s->len, UFFDIO_REGISTER_MODE_MISSING,
					 (void *)(uintptr_t)s->src),
			   "uffd_register");
		check_uffd(uffd_register(s->u, s->stop, page_size, UFFDIO_REGISTER_MODE_MISSING,
					 NULL),
			   "uffd_register");
		check_uffd(uffd_on_pagefault(s->u, wr_fault, s), "uffd_on_pagefault");
		fn = wr_lib;
	} else {
		s->fd = raw_open(0, s->kind != WR_BLOCK);
		raw_register(s->fd, s->mem, s->len);
		raw_register(s->fd, s->stop, page_size);
#ifdef BENCH_HAVE_LIBURING
		if (s->kind == WR_URING)
			fn = wr_uring;
#endif
	}
	place_handler();
	if (pthread_create(&h, NULL, fn, s))
		die("pthread_create");
	place_faulters();
	t0 = now_ns();
	for (size_t off = 0; off < s->len; off += page_size)
		(void)*(volatile const char *)(s->mem + off);
	t1 = now_ns();
	(void)*(volatile const char *)s->stop;
	pthread_join(h, NULL);
	if (s->kind == WR_LIB)
		uffd_close(s->u);
	else
		close(s->fd);
	if (memcmp(s->mem, s->src, s->len) != 0)
		die("whole run (%s): served memory does not match its source", wr_name[s->kind]);
	*cpu_ns = s->cpu_ns;
	return (double)(t1 - t0) / (double)(s->len / page_size);
}

static void wholerun_cpu(enum cpu_mode pinned)
{
	static struct wr_side side[WR__COUNT];
	static char *src;
	size_t len = opt.smoke ? 64 * page_size : (opt.quick ? 8u << 20 : 32u << 20);
	int pairs = opt.smoke ? 1 : opt.pairs < 11 ? 11 : opt.pairs;
	int nk = WR__COUNT;
	/* per pair: wall and CPU ns per fault of each side */
	double wall[64][WR__COUNT], cpu[64][WR__COUNT];

#ifndef BENCH_HAVE_LIBURING
	nk = WR_URING;
#endif
	if (pairs > 64)
		pairs = 64;
	if (!src || side[0].len != len) {
		src = map_region(len);
		fill_pattern(src, len, 3);
		for (int k = 0; k < WR__COUNT; k++) {
			side[k] =
				(struct wr_side){ .kind = (enum wr_kind)k, .src = src, .len = len };
			side[k].mem = map_region(len);
			side[k].stop = map_region(page_size);
			warm_region(side[k].mem, len);
			warm_region(side[k].stop, page_size);
		}
	}
	/* Pair -1 is the warm-up. The order rotates, and every other pair runs backwards. */
	for (int i = -1; i < pairs; i++) {
		for (int j = 0; j < nk; j++) {
			int r = (i + 1) % nk, k = (i & 1) ? (nk - 1 - j + r) % nk : (j + r) % nk;
			uint64_t c;
			double w = wr_run(&side[k], &c);

			if (i >= 0) {
				wall[i][k] = w;
				cpu[i][k] = (double)c / (double)(len / page_size);
			}
		}
		if (opt.verbose && i >= 0)
			fprintf(stderr, "  wholerun pair %d: lib %.2f/%.2f block %.2f/%.2f us\n", i,
				wall[i][WR_LIB] / 1e3, cpu[i][WR_LIB] / 1e3,
				wall[i][WR_BLOCK] / 1e3, cpu[i][WR_BLOCK] / 1e3);
	}
	for (int k = 0; k < nk; k++) {
		struct row row = { .figure = "wholerun",
				   .cpu = cpu_name(pinned),
				   .unit = "per fault",
				   .max_ratio = k == WR_LIB ? 1.05 : 0 };
		struct row crow = row;

		if (k == WR_BLOCK)
			continue;
		if (k == WR_LIB)
			snprintf(row.variant, sizeof(row.variant), "COPY %zu KiB, wall vs blocking",
				 len >> 10);
		else
			snprintf(row.variant, sizeof(row.variant), "raw %s vs blocking, wall",
				 wr_name[k]);
		snprintf(crow.variant, sizeof(crow.variant), "%s handler CPU",
			 k == WR_LIB ? "... libuffd" : "... raw");
		crow.max_ratio = k == WR_LIB ? 1.15 : 0;
		for (int i = 0; i < pairs; i++) {
			row.s[row.n++] = (struct sample){ .a = wall[i][k], .b = wall[i][WR_BLOCK] };
			crow.s[crow.n++] = (struct sample){ .a = cpu[i][k], .b = cpu[i][WR_BLOCK] };
		}
		row_print(&row);
		row_print(&crow);
	}
}

void fig_wholerun(void)
{
	for_modes(wholerun_cpu, true);
}
