/* SPDX-License-Identifier: MIT */
/* The guide's deferred faults: one dispatching thread hands faults to a slow source that answers
 * later from its own thread, so many fetches are in flight at once. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "snippet.h"

#define PAGES 64
#define THREADS 8

static size_t page;

/* [queue] */
/* A request queue to a source that answers asynchronously (here a thread that sleeps 200 us
 * per answer, as a network fetch would take). */
struct request {
	struct uffd *u;
	struct uffd_pagefault pf; /* copied: the callback's pointer dies with the call */
};

static struct request queue[PAGES];
static unsigned qhead, qtail;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static bool qstop;

static int defer(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&qlock);
	queue[qtail++ % PAGES] = (struct request){ u, *pf };
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	return UFFD_FAULT_DEFERRED; /* finished by source() below */
}

static void *source(void *image)
{
	for (;;) {
		struct request r;
		struct timespec lag = { 0, 200000 };

		pthread_mutex_lock(&qlock);
		while (qhead == qtail && !qstop)
			pthread_cond_wait(&qcond, &qlock);
		if (qhead == qtail) {
			pthread_mutex_unlock(&qlock);
			return NULL;
		}
		r = queue[qhead++ % PAGES];
		pthread_mutex_unlock(&qlock);
		nanosleep(&lag, NULL);

		char *at = (char *)((uintptr_t)r.pf.address & ~(uintptr_t)(page - 1));
		size_t off = r.pf.range.offset + (size_t)(at - (char *)r.pf.range.start);
		int err = uffd_copy(r.u, at, (char *)image + off, page, 0);

		/* What the callback would have returned: the dispatcher's rules apply. */
		uffd_fault_finish(r.u, &r.pf, err);
	}
}
/* [queue] */

static char *mem, *image;

static void *toucher(void *arg)
{
	size_t i = (size_t)(uintptr_t)arg;
	int bad = 0;

	for (size_t p = i; p < PAGES; p += THREADS)
		bad += mem[p * page] != image[p * page];
	return (void *)(uintptr_t)bad;
}

int main(void)
{
	page = snippet_page();
	size_t len = PAGES * page;
	struct snippet_server srv;
	pthread_t src, t[THREADS];
	struct uffd *u;
	int bad = 0;

	snippet_require(0);
	image = malloc(len);
	SNIPPET_CHECK(image != NULL);
	memset(image, 'x', len);
	SNIPPET_CHECK(uffd_open(&u, NULL) == 0);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, image) == 0);
	uffd_on_pagefault(u, defer, NULL);
	SNIPPET_CHECK(pthread_create(&src, NULL, source, image) == 0);
	snippet_server_start(&srv, u);

	/* Eight threads fault at once; one dispatching thread keeps all eight fetches in flight. */
	for (uintptr_t i = 0; i < THREADS; i++)
		SNIPPET_CHECK(pthread_create(&t[i], NULL, toucher, (void *)i) == 0);
	for (int i = 0; i < THREADS; i++) {
		void *r;

		pthread_join(t[i], &r);
		bad += (int)(uintptr_t)r;
	}
	snippet_server_stop(&srv);
	pthread_mutex_lock(&qlock);
	qstop = true;
	pthread_cond_signal(&qcond);
	pthread_mutex_unlock(&qlock);
	pthread_join(src, NULL);
	SNIPPET_CHECK(bad == 0);
	printf("deferred: %d pages served by one dispatching thread, right\n", PAGES);
	uffd_close(u);
	munmap(mem, len);
	free(image);
	return 0;
}
