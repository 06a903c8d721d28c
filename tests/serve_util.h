/* SPDX-License-Identifier: MIT */
/* Helpers of the page-source tests: an image whose every byte is known, dispatching threads. */
#ifndef UFFD_SERVE_UTIL_H
#define UFFD_SERVE_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <uffd.h>
#include "testutil.h"

/* Byte @i of image @seed: no page of it is all zero, so a zero page is never taken for it. */
static inline unsigned char su_byte(uint64_t i, unsigned seed)
{
	uint64_t x = (i >> 3) * 0x9e3779b97f4a7c15ull + seed * 0x632be59bd9b4e019ull;

	x ^= x >> 29;
	return (unsigned char)((x >> (8 * (i & 7))) | 1);
}

static inline void su_fill(unsigned char *buf, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = su_byte(off + i, seed);
}

/* The first byte of [p, p + len) that is not image @seed at @off, or -1. */
static inline long su_check(const volatile unsigned char *p, uint64_t off, size_t len,
			    unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != su_byte(off + i, seed))
			return (long)i;
	return -1;
}

static inline bool su_all_zero(const volatile unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Threads that dispatch one context until stopped; the first error any of them met is kept. */
#define SU_MAX_DISP 8
struct su_disp {
	struct uffd *u;
	pthread_t t[SU_MAX_DISP];
	int n;
	_Atomic bool stop;
	_Atomic int err;
};

static inline void *su_disp_main(void *arg)
{
	struct su_disp *d = arg;

	while (!atomic_load(&d->stop)) {
		int r = uffd_dispatch(d->u, 20);

		if (r < 0 && r != -EINTR) {
			int zero = 0;

			atomic_compare_exchange_strong(&d->err, &zero, r);
			if (r == -ESRCH)
				break;
		}
	}
	return NULL;
}

static inline void su_disp_start(struct su_disp *d, struct uffd *u, int n)
{
	memset(d, 0, sizeof(*d));
	d->u = u;
	d->n = n;
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(pthread_create(&d->t[i], NULL, su_disp_main, d), 0);
}

static inline int su_disp_stop(struct su_disp *d)
{
	atomic_store(&d->stop, true);
	for (int i = 0; i < d->n; i++)
		pthread_join(d->t[i], NULL);
	return atomic_load(&d->err);
}

/* A private anonymous mapping aligned to @align (a power of two). */
static inline void *su_map_aligned(size_t len, size_t align)
{
	char *p = tu_map_anon(len + align);
	uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);

	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	munmap((char *)a + len, (uintptr_t)p + align - a);
	return (void *)a;
}

#endif /* UFFD_SERVE_UTIL_H */
