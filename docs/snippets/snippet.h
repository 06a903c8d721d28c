/* SPDX-License-Identifier: MIT */
/* What the guide's snippets share to run as tests: skipping, checking, a dispatch thread. */
#ifndef UFFD_SNIPPET_H
#define UFFD_SNIPPET_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <uffd.h>

/* The exit status CTest reports as "skipped". */
#define SNIPPET_SKIP 77

/* Fail the test, naming the line, unless @cond holds. */
#define SNIPPET_CHECK(cond)                                                                      \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

/* Exit 77 when this kernel, or this caller, cannot have a context with @features; fail on
 * any other error. */
static inline void snippet_require(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u;
	int err = uffd_open(&u, &cfg);

	if (err == -EOPNOTSUPP || err == -EPERM || err == -ENOSYS) {
		printf("skipped: %s\n", uffd_strerror(err));
		exit(SNIPPET_SKIP);
	}
	SNIPPET_CHECK(err == 0);
	uffd_close(u);
}

static inline size_t snippet_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* A thread that dispatches one context until stopped, as the guide's first monitor does. */
struct snippet_server {
	struct uffd *u;
	pthread_t thread;
	atomic_bool stop;
	int err; /* the first error uffd_dispatch() returned */
};

static inline void *snippet_serve(void *arg)
{
	struct snippet_server *s = arg;

	while (!atomic_load(&s->stop)) {
		int n = uffd_dispatch(s->u, 50);

		if (n < 0 && n != -EINTR && !s->err)
			s->err = n;
	}
	return NULL;
}

static inline void snippet_server_start(struct snippet_server *s, struct uffd *u)
{
	s->u = u;
	s->err = 0;
	atomic_store(&s->stop, false);
	SNIPPET_CHECK(pthread_create(&s->thread, NULL, snippet_serve, s) == 0);
}

/* Stop after the current batch; everything the workload caused was read before its calls
 * returned, so nothing is left behind. */
static inline void snippet_server_stop(struct snippet_server *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	if (s->err)
		fprintf(stderr, "uffd_dispatch: %s\n", uffd_strerror(s->err));
	SNIPPET_CHECK(s->err == 0);
}

#endif /* UFFD_SNIPPET_H */
