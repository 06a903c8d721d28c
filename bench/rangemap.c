/* SPDX-License-Identifier: MIT */
/* The range map: lookups and register/unregister churn at 10 to 100,000 ranges. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "internal.h" /* the map's tree, for its depth: the benchmark links the static library */

static uint64_t sink;

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* The raw side of a lookup: a sorted array and a hand-written binary search. */
struct sorted {
	uintptr_t *start, *end;
	void **data;
	long n;
};

__attribute__((noinline)) static void *sorted_find(const struct sorted *s, uintptr_t a)
{
	long lo = 0, hi = s->n - 1, best = -1;

	while (lo <= hi) {
		long mid = lo + (hi - lo) / 2;

		if (s->start[mid] <= a) {
			best = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return best >= 0 && a < s->end[best] ? s->data[best] : NULL;
}

static double lookups_lib(struct uffd *u, const uintptr_t *addr, size_t n)
{
	struct uffd_range r;
	uint64_t sum = 0, t0 = now_ns(), t1;

	for (size_t i = 0; i < n; i++)
		if (uffd_range_find(u, (void *)addr[i], &r) == 0)
			sum += (uintptr_t)r.data;
	t1 = now_ns();
	sink += sum;
	return (double)(t1 - t0) / (double)n;
}

static double lookups_raw(const struct sorted *s, const uintptr_t *addr, size_t n)
{
	uint64_t sum = 0, t0 = now_ns(), t1;

	for (size_t i = 0; i < n; i++)
		sum += (uintptr_t)sorted_find(s, addr[i]);
	t1 = now_ns();
	sink += sum;
	return (double)(t1 - t0) / (double)n;
}

/* Unregister one page-sized range and register it again, at random places. */
static double churn_lib(struct uffd *u, char *base, long n, size_t k, uint64_t seed)
{
	uint64_t t0 = now_ns(), t1;

	for (size_t i = 0; i < k; i++) {
		long j = (long)(xorshift(&seed) % (uint64_t)n);
		char *p = base + (size_t)j * page_size;

		check_uffd(uffd_unregister(u, p, page_size), "uffd_unregister");
		check_uffd(uffd_register(u, p, page_size, UFFDIO_REGISTER_MODE_MISSING,
					 (void *)(uintptr_t)(j + 1)),
			   "uffd_register");
	}
	t1 = now_ns();
	return (double)(t1 - t0) / (double)k;
}

static double churn_raw(int fd, char *base, long n, size_t k, uint64_t seed)
{
	uint64_t t0 = now_ns(), t1;

	for (size_t i = 0; i < k; i++) {
		long j = (long)(xorshift(&seed) % (uint64_t)n);
		char *p = base + (size_t)j * page_size;

		raw_unregister(fd, p, page_size);
		raw_register(fd, p, page_size);
	}
	t1 = now_ns();
	return (double)(t1 - t0) / (double)k;
}

/* Sum of the depths of every node below @n (the root has depth 1), and the deepest. */
static void tree_depth(const struct uffd_node *n, long d, double *sum, long *max)
{
	for (; n; n = n->right, d++) {
		*sum += (double)d;
		if (d > *max)
			*max = d;
		tree_depth(n->left, d + 1, sum, max);
	}
}

/* A pair alternates chunks of libuffd and raw work (A B B A ...): lookups, then churns. */
#define LOOKUP_CHUNK 10000
#define CHURN_CHUNK 100

static double pair_stats(double *la, double *lb, int nc, double *a, double *b)
{
	double *ra = malloc(sizeof(double) * (size_t)nc), r;

	if (!ra)
		die("out of memory");
	for (int c = 0; c < nc; c++)
		ra[c] = la[c] / lb[c];
	*a = median(la, nc);
	*b = median(lb, nc);
	r = median(ra, nc);
	free(ra);
	free(la);
	free(lb);
	return r;
}

static double look_pair(struct uffd *u, const struct sorted *s, const uintptr_t *addr, size_t n,
			double *a, double *b)
{
	int nc = (int)((n + LOOKUP_CHUNK - 1) / LOOKUP_CHUNK);
	double *la = malloc(sizeof(double) * (size_t)nc), *lb = malloc(sizeof(double) * (size_t)nc);

	if (!la || !lb)
		die("out of memory");
	for (int c = 0; c < nc; c++) {
		size_t from = (size_t)c * LOOKUP_CHUNK;
		size_t cnt = n - from < LOOKUP_CHUNK ? n - from : LOOKUP_CHUNK;

		if (c & 1) {
			lb[c] = lookups_raw(s, addr + from, cnt);
			la[c] = lookups_lib(u, addr + from, cnt);
		} else {
			la[c] = lookups_lib(u, addr + from, cnt);
			lb[c] = lookups_raw(s, addr + from, cnt);
		}
	}
	return pair_stats(la, lb, nc, a, b);
}

static double churn_pair(struct uffd *u, int fd, char *lib_mem, char *raw_mem, long n,
			 uint64_t seed, double *a, double *b)
{
	int nc = (int)((opt.churns + CHURN_CHUNK - 1) / CHURN_CHUNK);
	double *la = malloc(sizeof(double) * (size_t)nc), *lb = malloc(sizeof(double) * (size_t)nc);

	if (!la || !lb)
		die("out of memory");
	for (int c = 0; c < nc; c++) {
		uint64_t sd = seed * 1000003u + (uint64_t)c;
		size_t cnt = opt.churns - (size_t)c * CHURN_CHUNK;

		if (cnt > CHURN_CHUNK)
			cnt = CHURN_CHUNK;
		if (c & 1) {
			lb[c] = churn_raw(fd, raw_mem, n, cnt, sd);
			la[c] = churn_lib(u, lib_mem, n, cnt, sd);
		} else {
			la[c] = churn_lib(u, lib_mem, n, cnt, sd);
			lb[c] = churn_raw(fd, raw_mem, n, cnt, sd);
		}
	}
	return pair_stats(la, lb, nc, a, b);
}

void fig_rangemap(void)
{
	double look_lib[3] = { 0 }, look_raw[3] = { 0 }, ch_lib[3] = { 0 }, ch_raw[3] = { 0 };
	size_t nl = opt.lookups;
	uintptr_t *addr = malloc(nl * sizeof(*addr));

	if (!addr)
		die("out of memory");
	for (int si = 0; si < 3; si++) {
		long n = opt.map_sizes[si];
		size_t len = (size_t)n * page_size;
		char *lib_mem = map_region(len), *raw_mem = map_region(len);
		struct sorted s = { .n = n };
		struct uffd *u;
		int fd = raw_open(0, false);
		uint64_t x = 0x9e3779b97f4a7c15ull + (uint64_t)n;
		struct row look = { .figure = "rangemap", .cpu = "any", .unit = "per lookup" };
		struct row churn = { .figure = "rangemap", .cpu = "any", .unit = "per churn" };

		check_uffd(uffd_open(&u, NULL), "uffd_open");
		s.start = malloc((size_t)n * sizeof(uintptr_t));
		s.end = malloc((size_t)n * sizeof(uintptr_t));
		s.data = malloc((size_t)n * sizeof(void *));
		if (!s.start || !s.end || !s.data)
			die("out of memory");
		/* n pieces with their own data: the kernel merges them into one VMA, the map
		 * keeps n pieces (a treap: its shape does not depend on the order). */
		for (long i = 0; i < n; i++) {
			s.start[i] = (uintptr_t)lib_mem + (size_t)i * page_size;
			s.end[i] = s.start[i] + page_size;
			s.data[i] = (void *)(uintptr_t)(i + 1);
		}
		for (long i = 0; i < n; i++)
			check_uffd(uffd_register(u, (void *)s.start[i], page_size,
						 UFFDIO_REGISTER_MODE_MISSING, s.data[i]),
				   "uffd_register");
		if (uffd_range_count(u) != n)
			die("range map holds %ld pieces, not %ld", uffd_range_count(u), n);
		raw_register(fd, raw_mem, len);
		for (size_t i = 0; i < nl; i++)
			addr[i] = (uintptr_t)lib_mem + (size_t)(xorshift(&x) % len);

		for (int i = -1; i < opt.pairs; i++) {
			struct sample *sm = &look.s[i < 0 ? 0 : look.n++];

			sm->ratio = look_pair(u, &s, addr, nl, &sm->a, &sm->b);
		}
		snprintf(look.variant, sizeof(look.variant), "uffd_range_find, %ld ranges", n);
		{
			double sum = 0;
			long max = 0;

			tree_depth(u->map.root, 1, &sum, &max);
			snprintf(look.note, sizeof(look.note),
				 "tree depth: mean %.1f, max %ld (log2 of %ld ranges: %.1f)",
				 sum / (double)n, max, n, log2((double)n));
		}
		row_print(&look);

		for (int i = -1; i < opt.pairs; i++) {
			struct sample *sm = &churn.s[i < 0 ? 0 : churn.n++];

			sm->ratio = churn_pair(u, fd, lib_mem, raw_mem, n, (uint64_t)i + 2, &sm->a,
					       &sm->b);
		}
		snprintf(churn.variant, sizeof(churn.variant), "unregister+register, %ld ranges",
			 n);
		row_print(&churn);

		for (int i = 0; i < look.n; i++) {
			look_lib[si] += look.s[i].a / look.n;
			look_raw[si] += look.s[i].b / look.n;
			ch_lib[si] += churn.s[i].a / churn.n;
			ch_raw[si] += churn.s[i].b / churn.n;
		}
		uffd_close(u);
		close(fd);
		munmap(lib_mem, len);
		munmap(raw_mem, len);
		free(s.start);
		free(s.end);
		free(s.data);
	}
	free(addr);
	printf("%-10s growth from %ld to %ld ranges: lookup x%.2f (sorted array x%.2f), "
	       "churn overhead over the ioctls %+.0f ns -> %+.0f ns; log2 grows x%.2f\n",
	       "", opt.map_sizes[0], opt.map_sizes[2], look_lib[2] / look_lib[0],
	       look_raw[2] / look_raw[0], ch_lib[0] - ch_raw[0], ch_lib[2] - ch_raw[2],
	       log2((double)opt.map_sizes[2]) / log2((double)opt.map_sizes[0]));
}
