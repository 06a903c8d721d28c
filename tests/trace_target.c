/* SPDX-License-Identifier: MIT */
/* A program for uffd-trace's test: 4 threads map, touch, empty, move and unmap memory, logged. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "trace_smaps.h"

/*
 * usage: trace_target LOG
 * Each of THREADS threads, ROUNDS times: maps PAGES pages of private anonymous memory between two
 * PROT_NONE guard pages (so the kernel merges it with nothing), writes every page, empties the
 * first EMPTIED pages with MADV_DONTNEED and writes them again, moves the mapping with mremap
 * (MREMAP_FIXED, into a PROT_NONE reservation) and unmaps it. Under uffd-trace (which sets
 * UFFD_TRACE_SOCKET) a thread waits until the mapping shows as registered ("um" or "uw" in its
 * smaps VmFlags) before touching it: a mapping used before uffd-trace's next scan of the maps would be
 * rightly untraced, and the test wants exact counts.
 * LOG gets a line per step: "map TID START END", "remove TID START END",
 * "remap TID FROM TO LEN", "unmap TID START END". stdout gets what a tracer should count, the
 * same in every run.
 */
#define THREADS 4
#define ROUNDS 3
#define PAGES 64
#define EMPTIED 16

static size_t page;
static FILE *logf;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static bool traced;

static void die(const char *what)
{
	fprintf(stderr, "trace_target: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void log_line(const char *fmt, unsigned long a, unsigned long b, unsigned long c)
{
	pthread_mutex_lock(&log_lock);
	fprintf(logf, fmt, (long)gettid(), a, b, c);
	pthread_mutex_unlock(&log_lock);
}

static bool registered(const char *start)
{
	int r = smaps_registered(start);

	if (r < 0)
		die("/proc/self/smaps");
	return r;
}

static void wait_registered(const char *start)
{
	struct timespec ms = { 0, 1000000 };

	if (!traced)
		return;
	for (int i = 0; i < 10000; i++) {
		if (registered(start))
			return;
		nanosleep(&ms, NULL);
	}
	fprintf(stderr, "trace_target: %p was not registered within 10 s\n", (void *)start);
	exit(1);
}

/* PAGES pages of PROT_NONE with room for a guard page each side; returns the inside. */
static char *reserve(void)
{
	char *r = mmap(NULL, (PAGES + 2) * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (r == MAP_FAILED)
		die("mmap");
	return r + page;
}

static void unmap_guards(char *inside)
{
	if (munmap(inside - page, page) != 0 || munmap(inside + PAGES * page, page) != 0)
		die("munmap of a guard page");
}

static void touch(char *p, size_t pages, unsigned char v)
{
	for (size_t i = 0; i < pages; i++)
		p[i * page] = v;
}

static void *worker(void *arg)
{
	unsigned char v = (unsigned char)(uintptr_t)arg;
	size_t len = PAGES * page;

	for (int round = 0; round < ROUNDS; round++) {
		char *a = reserve(), *b = reserve(), *m;

		if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) != a)
			die("mmap MAP_FIXED");
		log_line("map %ld %#lx %#lx\n", (unsigned long)a, (unsigned long)(a + len), 0);
		wait_registered(a);
		touch(a, PAGES, v);
		if (madvise(a, EMPTIED * page, MADV_DONTNEED) != 0)
			die("madvise");
		log_line("remove %ld %#lx %#lx\n", (unsigned long)a,
			 (unsigned long)(a + EMPTIED * page), 0);
		if (a[0] != 0 || a[EMPTIED * page] != (char)v)
			die("DONTNEED did not empty exactly what it was asked to");
		touch(a, EMPTIED, v);
		m = mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, b);
		if (m != b)
			die("mremap");
		log_line("remap %ld %#lx %#lx %#lx\n", (unsigned long)a, (unsigned long)b, len);
		for (size_t i = 0; i < PAGES; i++)
			if (m[i * page] != (char)v)
				die("the moved pages lost their contents");
		if (munmap(m, len) != 0)
			die("munmap");
		log_line("unmap %ld %#lx %#lx\n", (unsigned long)m, (unsigned long)(m + len), 0);
		/*
		 * The guard pages, never registered, so never traced. Only they: the holes the
		 * mremap and munmap left between them are no longer ours, and another thread's
		 * mmap (the sanitizer runtime's, malloc's) may already have been placed there.
		 */
		unmap_guards(a);
		unmap_guards(b);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[THREADS];
	const char *sock = getenv("UFFD_TRACE_SOCKET");

	if (argc != 2) {
		fprintf(stderr, "usage: trace_target LOG\n");
		return 2;
	}
	page = (size_t)sysconf(_SC_PAGESIZE);
	traced = sock && *sock;
	logf = fopen(argv[1], "we");
	if (!logf)
		die(argv[1]);
	for (int i = 0; i < THREADS; i++) {
		errno = pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
		if (errno)
			die("pthread_create");
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	if (fclose(logf) != 0)
		die(argv[1]);
	/* What a tracer of first touches, unmaps, moves and empties should count. */
	printf("threads=%d faults=%d unmaps=%d remaps=%d removes=%d\n", THREADS,
	       THREADS * ROUNDS * (PAGES + EMPTIED), THREADS * ROUNDS * 2, THREADS * ROUNDS,
	       THREADS * ROUNDS);
	return 0;
}
