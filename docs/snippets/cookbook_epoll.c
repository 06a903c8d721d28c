/* SPDX-License-Identifier: MIT */
/* Cookbook: serve faults from an application's own epoll loop, beside its other fds. */
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>

#include "snippet.h"

static size_t page;
static char *mem;
static size_t len;
static int done_pipe[2];

/* Another part of the application: a thread that reads the memory, then says it is done. */
static void *worker(void *arg)
{
	unsigned long sum = 0;

	(void)arg;
	for (size_t i = 0; i < len; i += page)
		sum += (unsigned char)mem[i]; /* each first touch faults */
	SNIPPET_CHECK(write(done_pipe[1], &sum, sizeof(sum)) == sizeof(sum));
	return NULL;
}

int main(void)
{
	struct uffd_monitor *m;
	struct uffd *u;
	pthread_t thread;
	unsigned long sum = 1;

	page = snippet_page();
	len = 32 * page;
	snippet_require(0);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SNIPPET_CHECK(mem != MAP_FAILED && pipe(done_pipe) == 0);
	SNIPPET_CHECK(uffd_open(&u, NULL) == 0);
	/* No fault callback: every page is served as zeros. */
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, NULL) == 0);
	SNIPPET_CHECK(uffd_monitor_new(&m) == 0 && uffd_monitor_add(m, u) == 0);

	/* [loop] */
	/* The application's loop already watches its own fds; the monitor's fd joins them. */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = uffd_monitor_fd(m) };

	epoll_ctl(ep, EPOLL_CTL_ADD, uffd_monitor_fd(m), &ev);
	ev.data.fd = done_pipe[0];
	epoll_ctl(ep, EPOLL_CTL_ADD, done_pipe[0], &ev);

	pthread_create(&thread, NULL, worker, NULL);
	for (bool done = false; !done;) {
		struct epoll_event ready[8];
		int n = epoll_wait(ep, ready, 8, -1);

		for (int i = 0; i < n; i++) {
			/* One pass of the monitor: serve what is ready, never block. */
			if (ready[i].data.fd == uffd_monitor_fd(m))
				uffd_monitor_run(m, 0);
			else if (read(done_pipe[0], &sum, sizeof(sum)) == sizeof(sum))
				done = true;
		}
	}
	/* [loop] */

	pthread_join(thread, NULL);
	SNIPPET_CHECK(sum == 0);
	close(ep);
	uffd_monitor_free(m);
	munmap(mem, len);
	close(done_pipe[0]);
	close(done_pipe[1]);
	printf("%zu pages served from the application's epoll loop\n", len / page);
	return 0;
}
