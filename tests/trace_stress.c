/* SPDX-License-Identifier: MIT */
/* A program for uffd-trace's test: threads that fault without end, or fork children in bulk. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "trace_smaps.h"

/*
 * usage: trace_stress spin PIDFILE MS
 *        trace_stress fork N LOG
 *        trace_stress rounds N
 * spin: THREADS threads touch the pages of a registered mapping (each touch a first-touch fault
 * under uffd-trace), check what they wrote, empty their pages with MADV_DONTNEED and start
 * again, for MS milliseconds (0: until killed). PIDFILE gets this process's pid once every thread
 * has faulted. stdout: "spin: threads=4 ok".
 * rounds: as spin, for N rounds of each thread (a trace of a known length: 4 x 64 x N faults and
 * 4 x N removes); stdout what a tracer should count.
 * fork: 2 threads fork N children between them; child i writes each of the PER_CHILD pages of
 * its own slot of a mapping registered before, checks them, empties the slot with MADV_DONTNEED
 * and exits 0. LOG gets "child PID START END" per child; stdout what a tracer should count.
 * Under uffd-trace (UFFD_TRACE_SOCKET set), the mapping is used only once it shows as registered.
 */
#define THREADS 4
#define SPIN_PAGES 256
#define FORKERS 2
#define PER_CHILD 4

static size_t page;
static bool traced;

static void die(const char *what)
{
	fprintf(stderr, "trace_stress: %s: %s\n", what, strerror(errno));
	exit(1);
}

static bool registered(const char *addr)
{
	int r = smaps_registered(addr);

	if (r < 0)
		die("/proc/self/smaps");
	return r;
}

static char *map_registered(size_t pages)
{
	struct timespec ms = { 0, 1000000 };
	char *m = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		       0);

	if (m == MAP_FAILED)
		die("mmap");
	for (int i = 0; traced && i < 10000; i++) {
		if (registered(m))
			return m;
		nanosleep(&ms, NULL);
	}
	if (traced) {
		fprintf(stderr, "trace_stress: %p was not registered within 10 s\n", (void *)m);
		exit(1);
	}
	return m;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- spin ---- */

static char *spin_mem;
static double spin_until;
static long spin_rounds; /* 0: by time */
static atomic_int spin_ready;

static void *spinner(void *arg)
{
	size_t t = (size_t)(uintptr_t)arg, per = SPIN_PAGES / THREADS;
	char *mine = spin_mem + t * per * page;
	bool first = true;
	long round = 0;

	do {
		for (size_t i = 0; i < per; i++)
			mine[i * page] = (char)(t + i + 1);
		for (size_t i = 0; i < per; i++)
			if (mine[i * page] != (char)(t + i + 1)) {
				fprintf(stderr,
					"trace_stress: page %zu of thread %zu lost its byte\n", i,
					t);
				exit(1);
			}
		if (first) {
			first = false;
			atomic_fetch_add(&spin_ready, 1);
		}
		if (madvise(mine, per * page, MADV_DONTNEED) != 0)
			die("madvise");
	} while (spin_rounds ? ++round < spin_rounds : spin_until == 0 || now() < spin_until);
	return NULL;
}

static int spin(const char *pidfile, long ms)
{
	struct timespec tick = { 0, 1000000 };
	pthread_t t[THREADS];
	FILE *f;

	spin_mem = map_registered(SPIN_PAGES);
	spin_until = ms > 0 ? now() + (double)ms / 1000 : 0;
	for (size_t i = 0; i < THREADS; i++) {
		errno = pthread_create(&t[i], NULL, spinner, (void *)(uintptr_t)i);
		if (errno)
			die("pthread_create");
	}
	while (pidfile && atomic_load(&spin_ready) < THREADS)
		nanosleep(&tick, NULL);
	f = pidfile ? fopen(pidfile, "we") : NULL;
	if (pidfile && (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0))
		die(pidfile);
	for (size_t i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	if (spin_rounds)
		printf("rounds: threads=%d faults=%ld removes=%ld\n", THREADS,
		       (long)SPIN_PAGES * spin_rounds, (long)THREADS * spin_rounds);
	else
		printf("spin: threads=%d ok\n", THREADS);
	return 0;
}

/* ---- fork ---- */

static char *slots;
static atomic_int next_child;
static int children;
static FILE *logf;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void *forker(void *arg)
{
	int i;

	(void)arg;
	while ((i = atomic_fetch_add(&next_child, 1)) < children) {
		char *slot = slots + (size_t)i * PER_CHILD * page;
		int status;
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			for (size_t p = 0; p < PER_CHILD; p++)
				slot[p * page] = (char)(i + 1);
			for (size_t p = 0; p < PER_CHILD; p++)
				if (slot[p * page] != (char)(i + 1))
					_exit(3);
			_exit(madvise(slot, PER_CHILD * page, MADV_DONTNEED) == 0 ? 0 : 4);
		}
		pthread_mutex_lock(&log_lock);
		fprintf(logf, "child %d %#lx %#lx\n", (int)pid, (unsigned long)slot,
			(unsigned long)(slot + PER_CHILD * page));
		pthread_mutex_unlock(&log_lock);
		if (waitpid(pid, &status, 0) != pid)
			die("waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "trace_stress: child %d failed (status %#x)\n", i, status);
			exit(1);
		}
	}
	return NULL;
}

static int forks(int n, const char *log)
{
	pthread_t t[FORKERS];

	children = n;
	logf = fopen(log, "we");
	if (!logf)
		die(log);
	slots = map_registered((size_t)n * PER_CHILD);
	for (int i = 0; i < FORKERS; i++) {
		errno = pthread_create(&t[i], NULL, forker, NULL);
		if (errno)
			die("pthread_create");
	}
	for (int i = 0; i < FORKERS; i++)
		pthread_join(t[i], NULL);
	if (fclose(logf) != 0)
		die(log);
	printf("children=%d faults=%d removes=%d\n", n, n * PER_CHILD, n);
	return 0;
}

int main(int argc, char **argv)
{
	const char *sock = getenv("UFFD_TRACE_SOCKET");

	page = (size_t)sysconf(_SC_PAGESIZE);
	traced = sock && *sock;
	if (argc == 4 && strcmp(argv[1], "spin") == 0)
		return spin(argv[2], atol(argv[3]));
	if (argc == 4 && strcmp(argv[1], "fork") == 0 && atoi(argv[2]) > 0)
		return forks(atoi(argv[2]), argv[3]);
	if (argc == 3 && strcmp(argv[1], "rounds") == 0 && atol(argv[2]) > 0) {
		spin_rounds = atol(argv[2]);
		return spin(NULL, 0);
	}
	fprintf(stderr, "usage: trace_stress spin PIDFILE MS | trace_stress fork N LOG | "
			"trace_stress rounds N\n");
	return 2;
}
