/* SPDX-License-Identifier: MIT */
/* Cookbook: keep serving a process's memory in the children it forks, and hear of their exits. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "snippet.h"

static size_t page;

/* [callbacks] */
/* Faults of the parent and of every child: contexts inherit their parent's callbacks. */
static int fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	const char *image = pf->range.data;

	(void)arg;
	return uffd_copy(u, at, image + pf->range.offset + (size_t)(at - (char *)pf->range.start),
			 page, 0);
}

/* A child was forked: its context holds a copy of the parent's range map. Returning 0 keeps
 * it, and the monitor serves it from now on. */
static int on_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)parent, (void)arg;
	printf("fork: the child has its own context, %ld range(s)\n", uffd_range_count(child));
	return 0;
}

/* No event marks an exit: the monitor notices within a second and calls this once. */
static atomic_int exits;

static void child_exited(struct uffd *u, void *arg)
{
	(void)u, (void)arg;
	atomic_fetch_add(&exits, 1);
}
/* [callbacks] */

static void *run(void *m)
{
	int n = uffd_monitor_run(m, -1);

	SNIPPET_CHECK(n >= 0);
	return NULL;
}

int main(void)
{
	pthread_t thread;
	int status;

	page = snippet_page();
	size_t len = 16 * page;
	snippet_require(UFFD_FEATURE_EVENT_FORK); /* needs CAP_SYS_PTRACE */
	char *image = malloc(len);

	SNIPPET_CHECK(image != NULL);
	memset(image, 'x', len);

	/* [setup] */
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_FORK };
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_open(&u, &cfg) == 0);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, image) == 0);
	uffd_on_pagefault(u, fill, NULL);
	uffd_on_fork(u, on_fork, NULL);
	uffd_on_exit(u, child_exited, NULL);
	SNIPPET_CHECK(uffd_monitor_new(&m) == 0);
	SNIPPET_CHECK(uffd_monitor_add(m, u) == 0); /* the monitor owns u now */
	pthread_create(&thread, NULL, run, m);

	/* fork() waits in the kernel until the monitor has read the FORK event. */
	pid_t pid = fork();

	if (pid == 0) /* the child's first touches fault, and the monitor serves them */
		_exit(memcmp(mem, image, len) == 0 ? 0 : 1);
	waitpid(pid, &status, 0);
	/* [setup] */

	SNIPPET_CHECK(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The child's exit is noticed by the monitor's probe within a second. */
	for (int i = 0; i < 300 && atomic_load(&exits) == 0; i++)
		usleep(10000);
	SNIPPET_CHECK(atomic_load(&exits) == 1);
	SNIPPET_CHECK(uffd_monitor_count(m) == 1); /* the parent's context is left */
	uffd_monitor_stop(m);
	pthread_join(thread, NULL);
	uffd_monitor_free(m); /* closes u */
	munmap(mem, len);
	free(image);
	printf("the child was served, and its exit noticed\n");
	return 0;
}
