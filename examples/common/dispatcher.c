/* SPDX-License-Identifier: MIT */
/* A dedicated thread that dispatches one context's events until it is told to stop. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* How long one uffd_dispatch() waits: the longest a stop request waits to be seen. */
#define DISPATCH_TIMEOUT_MS 20

/* Unregister every registered piece, so that no thread can block on a fault nobody serves. */
static void unregister_all(struct uffd *u)
{
	struct uffd_range r;
	void *at = NULL;

	for (; uffd_range_next(u, at, &r) == 0; at = r.end)
		uffd_unregister(u, r.start, (size_t)((char *)r.end - (char *)r.start));
}

static void *dispatch_main(void *arg)
{
	struct tool_dispatcher *d = arg;

	/* A flag and a timeout, not pthread_cancel(): a cancelled read() can lose an event. */
	while (!atomic_load(&d->stop)) {
		int r = uffd_dispatch(d->u, DISPATCH_TIMEOUT_MS);

		if (r >= 0 || r == -EINTR)
			continue;
		if (!d->err) {
			d->err = r;
			tool_warn("serving faults failed, giving up: %s", uffd_strerror(r));
		}
		/* Give up serving, but never leave the workload blocked: plain memory from here
		 * on (its results will not verify), and keep reading events until told to stop. */
		unregister_all(d->u);
	}
	return NULL;
}

void tool_dispatcher_start(struct tool_dispatcher *d, struct uffd *u)
{
	int err;

	d->u = u;
	d->err = 0;
	atomic_init(&d->stop, false);
	/* What the tool said about its run comes before the first event the thread prints. */
	fflush(stdout);
	err = pthread_create(&d->thread, NULL, dispatch_main, d);
	if (err)
		tool_die("cannot start the dispatcher thread: %s", strerror(err));
}

int tool_dispatcher_stop(struct tool_dispatcher *d)
{
	atomic_store(&d->stop, true);
	pthread_join(d->thread, NULL);
	return d->err;
}
