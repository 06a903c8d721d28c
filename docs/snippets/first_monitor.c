/* SPDX-License-Identifier: MIT */
/* The guide's first monitor: a process serves its own memory lazily, one page at a time. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uffd.h>

static size_t page;

/* [fill] */
/* A missing page was touched: copy it in from the image the range was registered with. The
 * range says which byte of the registration the page is, wherever the range has moved since. */
static int fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	const char *image = pf->range.data;
	size_t off = pf->range.offset + (size_t)(at - (char *)pf->range.start);

	(void)arg;
	return uffd_copy(u, at, image + off, page, 0);
}
/* [fill] */

/* [serve] */
static atomic_bool stop;

/* The monitor thread: one batch at a time, waking every 100 ms to look at the stop flag. */
static void *serve(void *u)
{
	while (!atomic_load(&stop))
		if (uffd_dispatch(u, 100) < 0)
			break;
	return NULL;
}
/* [serve] */

int main(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = 64 * page;
	char *image = malloc(len);
	pthread_t thread;

	if (!image)
		return 1;
	for (size_t i = 0; i < len; i++)
		image[i] = (char)(i / page + 'a');

	if (uffd_probe(NULL, NULL) == -ENOSYS)
		return 77; /* no userfaultfd in this kernel: the test is skipped */

	/* [open] */
	struct uffd *u;
	int err = uffd_open(&u, NULL);

	if (err < 0) {
		fprintf(stderr, "uffd_open: %s\n", uffd_strerror(err));
		return 1;
	}
	/* [open] */

	/* [register] */
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED || uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, image))
		return 1;
	uffd_on_pagefault(u, fill, NULL);
	pthread_create(&thread, NULL, serve, u);

	/* Every first touch faults; fill() copies the page in, and the read goes on. */
	int same = memcmp(mem, image, len) == 0;

	atomic_store(&stop, true);
	pthread_join(thread, NULL);
	uffd_close(u); /* unregisters the memory too */
	munmap(mem, len);
	/* [register] */

	free(image);
	printf("%s\n", same ? "every page was served from the image" : "MISMATCH");
	return same ? 0 : 1;
}
