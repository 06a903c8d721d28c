/* SPDX-License-Identifier: MIT */
/* Cookbook: hear when registered memory is unmapped, moved or discarded. */
#include <stdint.h>
#include <sys/mman.h>

#include "snippet.h"

static size_t page;

/* [watch] */
/* What the callbacks saw; they all run on the dispatching thread. */
struct seen {
	unsigned unmaps, remaps, removes;
	unsigned stale; /* spans the map still held when their callback ran: must stay 0 */
};

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct seen *seen = arg;
	struct uffd_range r;

	/* prep has cut the span out of the map before any callback runs. */
	if (uffd_range_next(u, s->start, &r) == 0 && r.start < s->end)
		seen->stale++;
	seen->unmaps++;
	printf("unmapped  %p-%p\n", s->start, s->end);
	return 0;
}

static int on_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	struct seen *seen = arg;
	struct uffd_range r;

	/* ... and moved what mremap() moved: data and offset went with it. */
	if (uffd_range_find(u, m->to, &r) != 0)
		seen->stale++;
	seen->remaps++;
	printf("moved     %p -> %p, %zu bytes\n", m->from, m->to, m->len);
	return 0;
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct seen *seen = arg;

	(void)u;
	seen->removes++;
	printf("discarded %p-%p: still registered, its pages fault again\n", s->start, s->end);
	return 0;
}
/* [watch] */

int main(void)
{
	struct snippet_server server;
	struct seen seen = { 0 };

	page = snippet_page();
	snippet_require(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			UFFD_FEATURE_EVENT_REMOVE);

	/* [open] */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE,
	};
	struct uffd *u;
	size_t len = 8 * page;
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_open(&u, &cfg) == 0);
	/* No fault callback: libuffd answers each first touch with a zero page. */
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, NULL) == 0);
	uffd_on_unmap(u, on_unmap, &seen);
	uffd_on_remap(u, on_remap, &seen);
	uffd_on_remove(u, on_remove, &seen);
	/* [open] */

	/* Somewhere to move two pages to. */
	char *to = mmap(NULL, 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(to != MAP_FAILED);
	snippet_server_start(&server, u);

	/* [workload] */
	/* Each call waits in the kernel until the dispatching thread has read its event; each
	 * first touch, until its fault is served. */
	for (size_t i = 0; i < len; i += page)
		mem[i] = 1;
	munmap(mem + 2 * page, page);
	mremap(mem + 4 * page, 2 * page, 2 * page, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	madvise(mem, 2 * page, MADV_DONTNEED);
	munmap(mem, len);
	munmap(to, 2 * page);
	/* [workload] */

	snippet_server_stop(&server);
	SNIPPET_CHECK(uffd_range_count(u) == 0);
	uffd_close(u);
	/* UNMAP: page 2, the place mremap() moved from, all of mem, and the moved pages. */
	SNIPPET_CHECK(seen.unmaps == 4 && seen.remaps == 1 && seen.removes == 1);
	SNIPPET_CHECK(seen.stale == 0);
	return 0;
}
