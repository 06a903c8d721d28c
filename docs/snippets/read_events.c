/* SPDX-License-Identifier: MIT */
/* The pull interface: read prepped events with uffd_read_events() and handle them yourself. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "snippet.h"

static size_t page;
static char *mem;
static size_t len;
static atomic_bool finished;

static void *workload(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < len / 2; i += page)
		mem[i] = 1;
	munmap(mem + len / 2, len / 2);
	atomic_store(&finished, true);
	return NULL;
}

/* [resolve] */
static void *page_of(void *addr)
{
	return (void *)((uintptr_t)addr & ~(uintptr_t)(page - 1));
}

/* Resolve one fault as the dispatcher would: 0 when done (or nothing is left to do), -EAGAIN
 * when a layout change is pending and it must be tried again after the next read. */
static int resolve(struct uffd *u, const struct uffd_pagefault *pf)
{
	void *at = page_of(pf->address);
	int err = uffd_zeropage(u, at, page, 0);

	if (err == -EEXIST || err == -ENOENT) /* already there, or gone: just let it retry */
		err = uffd_wake(u, at, page);
	return err;
}
/* [resolve] */

int main(void)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_UNMAP };
	unsigned faults = 0, unmaps = 0;
	pthread_t thread;
	struct uffd *u;

	page = snippet_page();
	len = 16 * page;
	snippet_require(cfg.required);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_open(&u, &cfg) == 0);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, NULL) == 0);
	pthread_create(&thread, NULL, workload, NULL);

	/* [pull] */
	struct uffd_pagefault retry[64]; /* faults that met -EAGAIN, for after the next read */
	size_t nretry = 0;

	while (!atomic_load(&finished) || nretry) {
		struct uffd_event evs[16];
		int n = uffd_read_events(u, evs, 16, 100);

		SNIPPET_CHECK(n >= 0);
		/* The pending events are read and applied now: the faults put aside can go. */
		for (size_t i = nretry; i-- > 0;)
			if (resolve(u, &retry[i]) != -EAGAIN)
				retry[i] = retry[--nretry];
		for (int i = 0; i < n; i++) {
			switch (evs[i].kind) {
			case UFFD_EVT_PAGEFAULT:
				faults++;
				if (resolve(u, &evs[i].pagefault) != -EAGAIN)
					break;
				if (nretry < 64)
					retry[nretry++] = evs[i].pagefault;
				else /* no room: wake it; it faults again and comes back */
					uffd_wake(u, page_of(evs[i].pagefault.address), page);
				break;
			case UFFD_EVT_UNMAP: /* already cut out of the range map */
				unmaps++;
				break;
			case UFFD_EVT_FORK: /* not granted here; a child would be ours to close */
				uffd_close(evs[i].fork.child);
				break;
			default:
				break;
			}
		}
	}
	/* [pull] */

	pthread_join(thread, NULL);
	SNIPPET_CHECK(faults == len / 2 / page && unmaps == 1);
	SNIPPET_CHECK(uffd_range_count(u) == 1);
	uffd_close(u);
	munmap(mem, len / 2);
	printf("%u faults resolved, %u unmap read, with uffd_read_events()\n", faults, unmaps);
	return 0;
}
