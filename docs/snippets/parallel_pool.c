/* SPDX-License-Identifier: MIT */
/* The guide's pool: a process restores its own memory from an image with a pool of threads,
 * forks from two threads at once, and its callbacks allocate. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snippet.h"

#define PAGES 256

static size_t page;
static atomic_int discards;

/* [callbacks] */
/* Faults: copy the page in from the image; the pool runs this on several threads at once. */
static int fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	const char *image = pf->range.data;
	size_t off = pf->range.offset + (size_t)(at - (char *)pf->range.start);

	(void)arg;
	return uffd_copy(u, at, image + off, page, 0);
}

/* Discards: one thread at a time, in the kernel's order. It allocates: in a pool that is fine,
 * even while other threads of this process fork. */
static int discarded(struct uffd *u, const struct uffd_span *span, void *arg)
{
	char *note = malloc(64);

	(void)u, (void)arg;
	if (!note)
		return -ENOMEM;
	snprintf(note, 64, "discarded %zu pages",
		 (size_t)((char *)span->end - (char *)span->start) / page);
	free(note);
	atomic_fetch_add(&discards, 1);
	return 0;
}
/* [callbacks] */

struct worker {
	char *mem;
	const char *image;
	int id, bad;
};

/* Touches its half of the memory, discards and touches again, and forks twice. */
static void *work(void *arg)
{
	struct worker *w = arg;
	size_t half = PAGES / 2 * page, base = (size_t)w->id * half, i;

	for (int round = 0; round < 2; round++) {
		pid_t pid;
		int st;

		for (i = 0; i < half; i += page)
			w->bad += w->mem[base + i] != w->image[base + i];
		madvise(w->mem + base, half, MADV_DONTNEED); /* reads back from the image */
		pid = fork();
		if (pid == 0)
			_exit(w->mem[base] == w->image[base] ? 0 :
							       1); /* served too: a child context */
		w->bad += pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
			  WEXITSTATUS(st) != 0;
	}
	return NULL;
}

int main(void)
{
	page = snippet_page();
	size_t len = PAGES * page;
	char *image = malloc(len);
	struct worker w[2];
	pthread_t t[2];

	snippet_require(UFFD_FEATURE_EVENT_REMOVE);
	SNIPPET_CHECK(image != NULL);
	for (size_t i = 0; i < len; i++)
		image[i] = (char)(i * 7 / page);

	/* [pool] */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_REMOVE,
		.optional = UFFD_FEATURE_EVENT_FORK, /* needs CAP_SYS_PTRACE */
	};
	struct uffd_monitor *m;
	struct uffd *u;

	SNIPPET_CHECK(uffd_open(&u, &cfg) == 0);
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, image) == 0);
	uffd_on_pagefault(u, fill, NULL);
	uffd_on_remove(u, discarded, NULL);
	SNIPPET_CHECK(uffd_monitor_new(&m) == 0);
	SNIPPET_CHECK(uffd_monitor_add(m, u) == 0); /* the monitor owns it now */
	SNIPPET_CHECK(uffd_monitor_start(m, 4) == 0);
	/* [pool] */

	for (int i = 0; i < 2; i++) {
		w[i] = (struct worker){ .mem = mem, .image = image, .id = i };
		SNIPPET_CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);

	/* [stop] */
	SNIPPET_CHECK(uffd_monitor_stop(m) == 0);
	int handled = uffd_monitor_join(m);

	if (handled < 0)
		fprintf(stderr, "pool: %s\n", uffd_strerror(handled));
	SNIPPET_CHECK(handled > 0);
	uffd_monitor_free(m); /* closes u */
	/* [stop] */

	SNIPPET_CHECK(w[0].bad == 0 && w[1].bad == 0);
	SNIPPET_CHECK(atomic_load(&discards) >= 4);
	printf("pool: %d events handled, %d discards, every byte right\n", handled,
	       atomic_load(&discards));
	munmap(mem, len);
	free(image);
	return 0;
}
