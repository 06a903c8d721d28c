/* SPDX-License-Identifier: MIT */
/* Cookbook: serve the faults of anonymous memory from a file, the snapshot-restore pattern. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "snippet.h"

static size_t page;

/* [serve] */
/* The file the memory is restored from, mapped read-only. */
struct image {
	const char *bytes;
	size_t size;
};

/*
 * The registration's data says which file, its offset which byte: page N of the registration
 * comes from byte N * page of the file. Both survive splits, mremap() moves and partial
 * unmaps, so there is no table of addresses to keep up to date.
 */
static int serve_from_file(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	const struct image *img = pf->range.data;
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	size_t off;

	(void)arg;
	if (!img) /* not in the map: the grown tail of an mremap */
		return uffd_zeropage(u, at, page, 0);
	off = pf->range.offset + (size_t)(at - (char *)pf->range.start);
	if (off >= img->size) /* past the end of the file */
		return uffd_zeropage(u, at, page, 0);
	/* The file's last page is whole in its mapping: the kernel pads it with zeros. */
	return uffd_copy(u, at, img->bytes + off, page, 0);
}
/* [serve] */

/* A file of @size bytes for the test: a memfd, which maps as any file does. */
static int make_file(size_t size)
{
	int fd = memfd_create("image", MFD_CLOEXEC);

	SNIPPET_CHECK(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	for (size_t i = 0; i < size; i += page) {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "page %zu", i / page);

		SNIPPET_CHECK(pwrite(fd, buf, (size_t)n, (off_t)i) == n);
	}
	return fd;
}

int main(void)
{
	struct snippet_server server;
	struct stat st;

	page = snippet_page();
	snippet_require(0);
	int fd = make_file(20 * page + 100); /* not a whole number of pages */

	/* [setup] */
	struct image img;
	struct uffd *u;

	SNIPPET_CHECK(fstat(fd, &st) == 0);
	img.size = (size_t)st.st_size;
	img.bytes = mmap(NULL, img.size, PROT_READ, MAP_PRIVATE, fd, 0);
	SNIPPET_CHECK(img.bytes != MAP_FAILED);

	/* The memory: as large as the file, rounded up to whole pages, and empty. */
	size_t len = (img.size + page - 1) / page * page;
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(mem != MAP_FAILED);
	SNIPPET_CHECK(uffd_open(&u, NULL) == 0);
	SNIPPET_CHECK(uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, &img) == 0);
	uffd_on_pagefault(u, serve_from_file, NULL);
	/* [setup] */

	snippet_server_start(&server, u);
	SNIPPET_CHECK(strcmp(mem + 7 * page, "page 7") == 0);
	SNIPPET_CHECK(memcmp(mem, img.bytes, img.size) == 0);
	SNIPPET_CHECK(mem[len - 1] == 0); /* beyond the end of the file: zeros */
	snippet_server_stop(&server);

	struct uffd_stats stats;

	uffd_get_stats(u, &stats);
	SNIPPET_CHECK(stats.faults == len / page);
	uffd_close(u);
	munmap(mem, len);
	munmap((void *)img.bytes, img.size);
	close(fd);
	printf("%zu pages served from a %zu-byte file\n", len / page, img.size);
	return 0;
}
