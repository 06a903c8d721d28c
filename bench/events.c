/* SPDX-License-Identifier: MIT */
/* Events: munmap latency under an EVENT_UNMAP monitor, and decoding messages. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"

/* ---- munmap latency ---- */

#define UNMAP_PAGES 16

struct unmap_run {
	struct uffd *u;
	int fd;
	bool poll; /* raw: a non-blocking fd, poll() then read() */
	pthread_t h;
	_Atomic uintptr_t kick; /* the handler stops at the UNMAP of this address */
	volatile bool stopped;
	uint64_t events;
};

static int lib_unmapped(struct uffd *u, const struct uffd_span *span, void *arg)
{
	struct unmap_run *r = arg;

	(void)u;
	r->events++;
	if ((uintptr_t)span->start == atomic_load(&r->kick))
		r->stopped = true;
	return 0;
}

static void *lib_unmap_handler(void *arg)
{
	struct unmap_run *r = arg;

	while (!r->stopped) {
		int n = uffd_dispatch(r->u, -1);

		if (n < 0 && n != -EINTR)
			die("uffd_dispatch: %s", uffd_strerror(n));
	}
	return NULL;
}

/* The raw monitor: a blocking read() that releases each munmap as soon as it returns. */
static void *raw_unmap_handler(void *arg)
{
	struct unmap_run *r = arg;
	struct uffd_msg msgs[64];

	while (!r->stopped) {
		ssize_t n;

		if (r->poll) {
			struct pollfd p = { .fd = r->fd, .events = POLLIN };

			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				die("poll: %s", strerror(errno));
		}
		n = read(r->fd, msgs, sizeof(msgs));

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read: %s", strerror(errno));
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_UNMAP)
				continue;
			r->events++;
			if (msgs[i].arg.remove.start == atomic_load(&r->kick))
				r->stopped = true;
		}
	}
	return NULL;
}

static void *map_registered(struct unmap_run *r, size_t len)
{
	char *p = map_region(len);

	/* Populated before registering, so that the unmap has pages to free. */
	for (size_t off = 0; off < len; off += page_size)
		p[off] = 1;
	if (r->u)
		check_uffd(uffd_register(r->u, p, len, UFFDIO_REGISTER_MODE_MISSING, NULL),
			   "uffd_register");
	else
		raw_register(r->fd, p, len);
	return p;
}

static void unmap_open(struct unmap_run *r, bool lib, bool poll_raw)
{
	r->fd = -1;
	r->poll = poll_raw;
	if (lib) {
		struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_UNMAP };

		check_uffd(uffd_open(&r->u, &cfg), "uffd_open");
		uffd_on_unmap(r->u, lib_unmapped, r);
	} else {
		r->fd = raw_open(UFFD_FEATURE_EVENT_UNMAP, poll_raw);
	}
	place_handler();
	if (pthread_create(&r->h, NULL, lib ? lib_unmap_handler : raw_unmap_handler, r))
		die("pthread_create");
	place_faulters();
}

static void unmap_close(struct unmap_run *r)
{
	char *k = map_registered(r, page_size);

	atomic_store(&r->kick, (uintptr_t)k);
	check_sys(munmap(k, page_size), "munmap");
	pthread_join(r->h, NULL);
	if (r->events != opt.munmaps + 1)
		die("munmap: %llu UNMAP events for %zu munmaps", (unsigned long long)r->events,
		    opt.munmaps + 1);
	if (r->u)
		uffd_close(r->u);
	else
		close(r->fd);
}

/*
 * One pair: a libuffd monitor and a raw one run at once, each with its own context, and the
 * munmaps alternate between them (A B B A ...), so that load from other processes falls on both
 * alike. Returns the median of the per-munmap ratios; *a and *b get the median latencies.
 */
static double unmap_pair(bool poll_raw, double *a, double *b)
{
	struct unmap_run r[2] = { 0 };
	const size_t len = UNMAP_PAGES * page_size, n = opt.munmaps;
	double *lat[2], *ratio, m;

	lat[0] = malloc(n * sizeof(double));
	lat[1] = malloc(n * sizeof(double));
	ratio = malloc(n * sizeof(double));
	if (!lat[0] || !lat[1] || !ratio)
		die("out of memory");
	unmap_open(&r[0], true, false);
	unmap_open(&r[1], false, poll_raw);
	for (size_t i = 0; i < n; i++) {
		for (int j = 0; j < 2; j++) {
			int side = (int)((i + (size_t)j) & 1);
			char *p = map_registered(&r[side], len);
			uint64_t t0 = now_ns();

			check_sys(munmap(p, len), "munmap");
			lat[side][i] = (double)(now_ns() - t0);
		}
		ratio[i] = lat[0][i] / lat[1][i];
	}
	unmap_close(&r[0]);
	unmap_close(&r[1]);
	*a = median(lat[0], (int)n);
	*b = median(lat[1], (int)n);
	m = median(ratio, (int)n);
	free(lat[0]);
	free(lat[1]);
	free(ratio);
	return m;
}

static void unmap_cpu(enum cpu_mode pinned)
{
	for (int poll_raw = 0; poll_raw < 2; poll_raw++) {
		struct row row = { .figure = "munmap",
				   .cpu = cpu_name(pinned),
				   .unit = "per munmap",
				   .max_ratio = poll_raw ? 0 : 1.05 };
		double a, b;

		if (poll_raw)
			snprintf(row.variant, sizeof(row.variant),
				 "... vs raw poll()+read() monitor");
		else
			snprintf(row.variant, sizeof(row.variant),
				 "munmap %d KiB registered, EVENT_UNMAP",
				 (int)(UNMAP_PAGES * page_size / 1024));
		unmap_pair(poll_raw, &a, &b);
		for (int i = 0; i < opt.pairs; i++) {
			row.s[row.n].ratio = unmap_pair(poll_raw, &row.s[row.n].a, &row.s[row.n].b);
			row.n++;
		}
		row_print(&row);
	}
}

void fig_munmap(void)
{
	for_modes(unmap_cpu, true);
}

/* ---- decoding ---- */

/* What a hand-written monitor pulls out of a message. */
struct raw_event {
	unsigned kind;
	uint64_t a, b, c;
};

static uint64_t sink;

static double decode_lib(const struct uffd_msg *m, size_t n, uint64_t *allocs)
{
	struct uffd_event ev;
	uint64_t sum = 0, a0 = atomic_load(&bench_allocs), t0 = now_ns(), t1;

	for (size_t i = 0; i < n; i++) {
		if (uffd_event_decode(&m[i], sizeof(m[i]), &ev))
			die("uffd_event_decode rejected message %zu", i);
		sum += (uintptr_t)ev.pagefault.address + (uint64_t)ev.kind;
	}
	t1 = now_ns();
	*allocs += atomic_load(&bench_allocs) - a0;
	sink += sum;
	return (double)(t1 - t0) / (double)n;
}

/* Kept out of line, as a decoder in a monitor's own source file would be. */
__attribute__((noinline)) static void raw_decode(const struct uffd_msg *m, struct raw_event *ev)
{
	ev->kind = m->event;
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		ev->a = m->arg.pagefault.address;
		ev->b = m->arg.pagefault.flags;
		ev->c = m->arg.pagefault.feat.ptid;
		break;
	case UFFD_EVENT_FORK:
		ev->a = m->arg.fork.ufd;
		break;
	case UFFD_EVENT_REMAP:
		ev->a = m->arg.remap.from;
		ev->b = m->arg.remap.to;
		ev->c = m->arg.remap.len;
		break;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		ev->a = m->arg.remove.start;
		ev->b = m->arg.remove.end;
		break;
	default:
		break;
	}
}

static double decode_raw(const struct uffd_msg *m, size_t n)
{
	struct raw_event ev;
	uint64_t sum = 0, t0 = now_ns(), t1;

	for (size_t i = 0; i < n; i++) {
		raw_decode(&m[i], &ev);
		sum += ev.a + ev.kind;
	}
	t1 = now_ns();
	sink += sum;
	return (double)(t1 - t0) / (double)n;
}

/* Messages per chunk: a pair alternates chunks of libuffd and raw decoding (A B B A ...). */
#define DECODE_CHUNK 10000

/* One pair over all of @m; returns the median chunk ratio, *a and *b the median ns per event. */
static double decode_pair(const struct uffd_msg *m, size_t n, uint64_t *allocs, double *a,
			  double *b)
{
	int nc = (int)((n + DECODE_CHUNK - 1) / DECODE_CHUNK);
	double *la = malloc(sizeof(double) * (size_t)nc), *lb = malloc(sizeof(double) * (size_t)nc);
	double *ra = malloc(sizeof(double) * (size_t)nc), r;

	if (!la || !lb || !ra)
		die("out of memory");
	for (int c = 0; c < nc; c++) {
		size_t from = (size_t)c * DECODE_CHUNK;
		size_t cnt = n - from < DECODE_CHUNK ? n - from : DECODE_CHUNK;

		if (c & 1) {
			lb[c] = decode_raw(m + from, cnt);
			la[c] = decode_lib(m + from, cnt, allocs);
		} else {
			la[c] = decode_lib(m + from, cnt, allocs);
			lb[c] = decode_raw(m + from, cnt);
		}
		ra[c] = la[c] / lb[c];
	}
	*a = median(la, nc);
	*b = median(lb, nc);
	r = median(ra, nc);
	free(la);
	free(lb);
	free(ra);
	return r;
}

static void make_messages(struct uffd_msg *m, size_t n, bool mixed)
{
	memset(m, 0, n * sizeof(*m));
	for (size_t i = 0; i < n; i++) {
		uint64_t addr = 0x7f0000000000ull + (uint64_t)(i % 65536) * page_size;
		unsigned k = mixed ? (unsigned)(i % 5) : 0;

		switch (k) {
		case 0:
			m[i].event = UFFD_EVENT_PAGEFAULT;
			m[i].arg.pagefault.address = addr;
			m[i].arg.pagefault.flags = i & 1 ? UFFD_PAGEFAULT_FLAG_WRITE : 0;
			m[i].arg.pagefault.feat.ptid = 1000 + (uint32_t)(i & 7);
			break;
		case 1:
			m[i].event = UFFD_EVENT_UNMAP;
			m[i].arg.remove.start = addr;
			m[i].arg.remove.end = addr + 4 * page_size;
			break;
		case 2:
			m[i].event = UFFD_EVENT_REMOVE;
			m[i].arg.remove.start = addr;
			m[i].arg.remove.end = addr + page_size;
			break;
		case 3:
			m[i].event = UFFD_EVENT_REMAP;
			m[i].arg.remap.from = addr;
			m[i].arg.remap.to = addr + (1ull << 30);
			m[i].arg.remap.len = 2 * page_size;
			break;
		default:
			m[i].event = UFFD_EVENT_FORK;
			m[i].arg.fork.ufd = 7;
			break;
		}
	}
}

void fig_decode(void)
{
	size_t n = opt.decode_n;
	struct uffd_msg *m = malloc(n * sizeof(*m));

	if (!m)
		die("out of memory");
	/* Pure computation: pinning changes nothing, so it runs once, where it is. */
	for (int mixed = 0; mixed < 2; mixed++) {
		struct row row = { .figure = "decode", .cpu = "any", .unit = "per event" };
		uint64_t allocs = 0;
		double a, b;

		snprintf(row.variant, sizeof(row.variant), "uffd_event_decode, %zuk %s", n / 1000,
			 mixed ? "mixed kinds" : "page faults");
		make_messages(m, n, mixed);
		decode_pair(m, n, &allocs, &a, &b);
		for (int i = 0; i < opt.pairs; i++) {
			row.s[row.n].ratio =
				decode_pair(m, n, &allocs, &row.s[row.n].a, &row.s[row.n].b);
			row.n++;
		}
		snprintf(row.note, sizeof(row.note),
			 "allocations while decoding: %llu (raw: a hand-written switch over the "
			 "fields)",
			 (unsigned long long)allocs);
		row_print(&row);
	}
	free(m);
}
