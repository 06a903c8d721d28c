/* SPDX-License-Identifier: MIT */
/* The guide's lazy restore: serve memory from an image file, record the first touches of one
 * run, and prefetch them at the next. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snippet.h"

#define PAGES 256

static size_t page;

/* The program being restored: it reads a few scattered pages, and frees two of them. */
static int workload(unsigned char *mem, const unsigned char *image)
{
	int bad = 0;

	for (size_t p = 0; p < PAGES; p += 7)
		bad += memcmp(mem + p * page, image + p * page, page) != 0;
	madvise(mem + 14 * page, 2 * page, MADV_DONTNEED);
	bad += mem[14 * page] != 0 || mem[15 * page] != 0; /* freed memory reads zero */
	return bad;
}

/* One restore of the image at @path: records into @record, or prefetches @order. */
static void restore(const char *path, const unsigned char *image, struct uffd_order *record,
		    const struct uffd_order *order)
{
	size_t len = PAGES * page;
	struct snippet_server srv;
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct uffd *u;
	/* [serve] */
	/* EVENT_REMOVE: a page the program frees must read zero afterwards, not the image. */
	struct uffd_config ucfg = { .required = UFFD_FEATURE_EVENT_REMOVE };
	unsigned char *mem =
		mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	SNIPPET_CHECK(uffd_open(&u, &ucfg) == 0);
	SNIPPET_CHECK(uffd_source_file(&src, path, 0) == 0);
	struct uffd_serve_config cfg = {
		.source = src,
		.chunk = 16 * page,	      /* fetched per fault, around it */
		.discard = UFFD_DISCARD_ZERO, /* the default: discarded memory reads zero */
		.record = record,	      /* NULL, or where the first touches go */
	};
	SNIPPET_CHECK(uffd_serve(u, mem, len, &cfg) == 0);
	snippet_server_start(&srv, u);
	/* [serve] */
	if (order) {
		/* [prefetch] */
		/* In bulk, before the program runs: faults meanwhile are served on demand. */
		long n = uffd_prefetch(u, mem, order, NULL);

		SNIPPET_CHECK(n >= 0);
		/* [prefetch] */
	}
	SNIPPET_CHECK(workload(mem, image) == 0);
	snippet_server_stop(&srv);
	SNIPPET_CHECK(uffd_serve_get_stats(u, &st) == 0);
	printf("%s: %llu faults on demand, %llu pages prefetched, %llu freed pages read zero\n",
	       order ? "prefetched" : "recorded", (unsigned long long)st.faults,
	       (unsigned long long)st.prefetched, (unsigned long long)st.pages_zeroed);
	if (order) /* only the freed pages faulted again, and read zero */
		SNIPPET_CHECK(st.faults == st.pages_zeroed);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
}

int main(void)
{
	char path[] = "/tmp/restore-image-XXXXXX", opath[] = "/tmp/restore-order-XXXXXX";
	struct uffd_order *rec, *order;
	unsigned char *image;
	int fd, ofd;

	page = snippet_page();
	snippet_require(UFFD_FEATURE_EVENT_REMOVE);
	image = malloc(PAGES * page);
	SNIPPET_CHECK(image != NULL);
	for (size_t i = 0; i < PAGES * page; i++)
		image[i] = (unsigned char)(i / page + 1);
	fd = mkstemp(path);
	SNIPPET_CHECK(fd >= 0 && write(fd, image, PAGES * page) == (ssize_t)(PAGES * page));
	close(fd);

	/* [record] */
	SNIPPET_CHECK(uffd_order_new(&rec) == 0);
	restore(path, image, rec, NULL); /* the first run records what it touched */
	ofd = mkstemp(opath);
	SNIPPET_CHECK(ofd >= 0 && uffd_order_save(rec, ofd) == 0);
	/* [record] */

	/* [load] */
	lseek(ofd, 0, SEEK_SET);
	SNIPPET_CHECK(uffd_order_load(&order, ofd) == 0); /* the next run reads it back */
	restore(path, image, NULL, order);
	/* [load] */

	close(ofd);
	unlink(opath);
	unlink(path);
	uffd_order_free(rec);
	uffd_order_free(order);
	free(image);
	return 0;
}
