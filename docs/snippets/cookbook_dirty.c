/* SPDX-License-Identifier: MIT */
/* Cookbook: which pages were written since the last look, by write-protect faults. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "snippet.h"

#define PAGES 64

static size_t page;

/* [track] */
/* One flag per page, set by the dispatching thread, read and cleared by the one that looks. */
struct dirty {
	atomic_bool page[PAGES];
};

/* A write hit a protected page: note it, then un-protect the page, which lets the write go on.
 * Later writes to that page cost nothing until the next round protects it again. */
static int on_write(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	struct dirty *d = pf->range.data;
	size_t index = (pf->range.offset + (size_t)(at - (char *)pf->range.start)) / page;

	(void)arg;
	atomic_store(&d->page[index], true);
	return uffd_writeprotect(u, at, page, false, 0);
}

/* Start a round: clear the flags, then protect everything again. */
static int new_round(struct uffd *u, struct dirty *d, char *mem, size_t len)
{
	for (size_t i = 0; i < PAGES; i++)
		atomic_store(&d->page[i], false);
	return uffd_writeprotect(u, mem, len, true, 0);
}
/* [track] */

static unsigned count(struct dirty *d)
{
	unsigned n = 0;

	for (size_t i = 0; i < PAGES; i++)
		n += atomic_load(&d->page[i]);
	return n;
}

int main(void)
{
	struct snippet_server server;
	static struct dirty dirty;

	page = snippet_page();
	snippet_require(UFFD_FEATURE_PAGEFAULT_FLAG_WP);

	/* [setup] */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_PAGEFAULT_FLAG_WP, /* write-protect on anonymous memory */
		.optional = UFFD_FEATURE_WP_UNPOPULATED,    /* also protect pages never touched */
	};
	struct uffd *u;
	size_t len = PAGES * page;
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_open(&u, &cfg) == 0);
	/* Without WP_UNPOPULATED, protection skips pages that were never touched: touch them. */
	if (!(uffd_features(u) & UFFD_FEATURE_WP_UNPOPULATED))
		memset(mem, 0, len);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_WP, &dirty) == 0);
	uffd_on_pagefault(u, on_write, NULL);
	SNIPPET_CHECK(new_round(u, &dirty, mem, len) == 0);
	/* [setup] */

	snippet_server_start(&server, u);
	mem[3 * page] = 1;
	mem[7 * page + 100] = 2;
	/* The same page again: no fault. */
	mem[7 * page + 200] = 3;
	SNIPPET_CHECK(mem[10 * page] == 0); /* a read: no fault */
	SNIPPET_CHECK(count(&dirty) == 2 && dirty.page[3] && dirty.page[7]);

	SNIPPET_CHECK(new_round(u, &dirty, mem, len) == 0);
	mem[7 * page] = 4;
	SNIPPET_CHECK(count(&dirty) == 1 && dirty.page[7]);
	snippet_server_stop(&server);

	struct uffd_stats stats;

	uffd_get_stats(u, &stats);
	SNIPPET_CHECK(stats.faults == 3);
	uffd_close(u);
	munmap(mem, len);
	printf("round 1: pages 3 and 7 written; round 2: page 7\n");
	return 0;
}
