/* SPDX-License-Identifier: MIT */
/* Recorded orders: add, save, load (and its bad input), the compacted file, a restore that
 * records its first touches and a second one that prefetches them, and prefetches that meet
 * pages already present. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uffd.h>
#include "serve_util.h"
#include "testutil.h"

#define SEED 5

static size_t PS;

/* An fd reading @text. */
static int text_fd(const char *text)
{
	int fd = memfd_create("order", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	lseek(fd, 0, SEEK_SET);
	return fd;
}

static int load_text(const char *text, struct uffd_order **o)
{
	int fd = text_fd(text), ret = uffd_order_load(o, fd);

	close(fd);
	return ret;
}

START_TEST(add_merge_get)
{
	struct uffd_order *o;
	const char *region;
	uint64_t off, len;

	ck_assert_int_eq(uffd_order_new(&o), 0);
	ck_assert_int_eq(uffd_order_add(o, 0, PS, NULL), 0);
	ck_assert_int_eq(uffd_order_add(o, PS, 2 * PS, NULL), 0); /* contiguous: merged */
	ck_assert_int_eq(uffd_order_add(o, 10 * PS, PS, NULL), 0);
	ck_assert_int_eq(uffd_order_add(o, 11 * PS, PS, "heap"), 0); /* another region */
	ck_assert_int_eq(uffd_order_add(o, 12 * PS, PS, "heap"), 0);
	ck_assert_int_eq(uffd_order_count(o), 3);
	ck_assert_int_eq(uffd_order_get(o, 0, &off, &len, &region), 0);
	ck_assert_uint_eq(off, 0);
	ck_assert_uint_eq(len, 3 * PS);
	ck_assert_ptr_null(region);
	ck_assert_int_eq(uffd_order_get(o, 2, &off, &len, &region), 0);
	ck_assert_uint_eq(off, 11 * PS);
	ck_assert_uint_eq(len, 2 * PS);
	ck_assert_str_eq(region, "heap");
	ck_assert_int_eq(uffd_order_get(o, 3, &off, &len, NULL), -ENOENT);
	ck_assert_int_eq(uffd_order_get(o, -1, &off, &len, NULL), -ENOENT);
	ck_assert_int_eq(uffd_order_add(o, 0, 0, NULL), -EINVAL);
	ck_assert_int_eq(uffd_order_add(o, UINT64_MAX - 10, PS, NULL), -EINVAL);
	ck_assert_int_eq(uffd_order_add(o, 0, PS, "two words"), -EINVAL);
	ck_assert_int_eq(uffd_order_add(o, 0, PS, ""), -EINVAL);
	/* Many runs: the array grows (with mremap). */
	for (uint64_t i = 0; i < 10000; i++)
		ck_assert_int_eq(uffd_order_add(o, (1000 + 2 * i) * PS, PS, NULL), 0);
	ck_assert_int_eq(uffd_order_count(o), 10003);
	uffd_order_free(o);
	uffd_order_free(NULL);
}
END_TEST

START_TEST(save_load)
{
	struct uffd_order *o, *back;
	int fd = memfd_create("order", MFD_CLOEXEC);
	char text[4096];
	ssize_t n;

	ck_assert_int_eq(uffd_order_new(&o), 0);
	uffd_order_add(o, 5 * PS, PS, NULL);
	uffd_order_add(o, 0, 4 * PS, NULL);
	uffd_order_add(o, 0x100000000ull, PS, "stack");
	ck_assert_int_eq(uffd_order_save(o, fd), 0);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, text, sizeof(text) - 1);
	ck_assert_int_gt(n, 0);
	text[n] = '\0';
	ck_assert_msg(strncmp(text, "uffd-order 1\n", 13) == 0, "header: %s", text);
	lseek(fd, 0, SEEK_SET);
	ck_assert_int_eq(uffd_order_load(&back, fd), 0);
	ck_assert_int_eq(uffd_order_count(back), 3);
	for (long i = 0; i < 3; i++) {
		uint64_t a, b, c, d;
		const char *ra, *rb;

		uffd_order_get(o, i, &a, &b, &ra);
		uffd_order_get(back, i, &c, &d, &rb);
		ck_assert_uint_eq(a, c);
		ck_assert_uint_eq(b, d);
		ck_assert(ra == rb || (ra && rb && strcmp(ra, rb) == 0));
	}
	close(fd);
	uffd_order_free(o);
	uffd_order_free(back);
}
END_TEST

START_TEST(load_syntax)
{
	char good[512];
	struct uffd_order *o;
	uint64_t off, len;

	snprintf(good, sizeof(good),
		 "# made by hand\n\n   \nuffd-order 1   # version one\n"
		 "%zu %zu\n0x%zx\t0x%zX region-a # a comment\n\r\n%zu %zu\n",
		 PS, PS, 4 * PS, 2 * PS, 2 * PS, PS);
	ck_assert_int_eq(load_text(good, &o), 0);
	ck_assert_int_eq(uffd_order_count(o), 3);
	uffd_order_get(o, 1, &off, &len, NULL);
	ck_assert_uint_eq(off, 4 * PS);
	ck_assert_uint_eq(len, 2 * PS);
	uffd_order_free(o);
	ck_assert_int_eq(load_text("uffd-order 1\n", &o), 0); /* no run: an empty order */
	ck_assert_int_eq(uffd_order_count(o), 0);
	uffd_order_free(o);
}
END_TEST

static const char *const bad_texts[] = {
	"",
	"# only a comment\n",
	"uffd-order 2\n",
	"uffd-order\n",
	"uffd-ordre 1\n",
	"0 4096\n",
	"uffd-order 1\n4096\n",
	"uffd-order 1\n4096 4096 a b\n",
	"uffd-order 1\n4096 0\n",
	"uffd-order 1\n4097 4096\n",
	"uffd-order 1\n4096 100\n",
	"uffd-order 1\n-4096 4096\n",
	"uffd-order 1\n0x 4096\n",
	"uffd-order 1\n0x1g000 4096\n",
	"uffd-order 1\n99999999999999999999999 4096\n",
	"uffd-order 1\n0xfffffffffffff000 0x2000\n",
	"uffd-order 1\n4096 4096\n\x01zz 4096\n",
	"uffd-order 1\n1e3 4096\n",
};

START_TEST(load_bad)
{
	struct uffd_order *o = (struct uffd_order *)0x1;
	int fds = tu_count_fds();

	ck_assert_msg(load_text(bad_texts[_i], &o) == -EBADMSG, "accepted: '%s'", bad_texts[_i]);
	ck_assert_ptr_eq(o, (struct uffd_order *)0x1);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(load_nul_and_errors)
{
	struct uffd_order *o;
	int fd = memfd_create("order", MFD_CLOEXEC);

	ck_assert_int_eq(write(fd, "uffd-order 1\n4096 4096\0\n", 24), 24);
	lseek(fd, 0, SEEK_SET);
	ck_assert_int_eq(uffd_order_load(&o, fd), -EBADMSG);
	close(fd);
	ck_assert_int_eq(uffd_order_load(&o, fd), -EBADF);
	ck_assert_int_eq(uffd_order_load(NULL, 0), -EINVAL);
	ck_assert_int_eq(uffd_order_load(&o, -1), -EINVAL);
}
END_TEST

/* Save the pages of the one run [off, off + len) of @src to @fd: uffd_order_save_pages()'s
 * answer. */
static int save_run(struct uffd_source *src, int fd, uint64_t off, uint64_t len)
{
	struct uffd_order *o;
	int r;

	ck_assert_int_eq(uffd_order_new(&o), 0);
	uffd_order_add(o, off, len, NULL);
	r = uffd_order_save_pages(o, src, fd);
	uffd_order_free(o);
	return r;
}

/* @fd holds exactly @len bytes: read them into @got. */
static void read_saved(int fd, void *got, size_t len)
{
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), (off_t)len);
	ck_assert_int_eq(pread(fd, got, len, 0), (ssize_t)len);
}

START_TEST(save_pages_compacts)
{
	size_t len = 64 * PS;
	unsigned char *img = malloc(len), *got = malloc(len);
	struct uffd_order *o;
	struct uffd_source *src;
	int fd = memfd_create("compact", MFD_CLOEXEC);

	su_fill(img, 0, len, SEED);
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	ck_assert_int_eq(uffd_order_new(&o), 0);
	uffd_order_add(o, 40 * PS, 3 * PS, NULL);
	uffd_order_add(o, 2 * PS, PS, NULL);
	ck_assert_int_eq(uffd_order_save_pages(o, src, fd), 0);
	read_saved(fd, got, 4 * PS);
	ck_assert_int_eq(su_check(got, 40 * PS, 3 * PS, SEED), -1);
	ck_assert_int_eq(su_check(got + 3 * PS, 2 * PS, PS, SEED), -1);
	/* Regions cannot be read from a source; a run past its end is the source's -ENXIO. */
	uffd_order_add(o, 0, PS, "heap");
	ck_assert_int_eq(uffd_order_save_pages(o, src, fd), -EINVAL);
	uffd_order_free(o);
	ck_assert_int_eq(save_run(src, fd, len, PS), -ENXIO);
	close(fd);
	uffd_source_close(src);
	free(img);
	free(got);
}
END_TEST

/*
 * A source whose length is no multiple of the page size: uffd_serve() serves (and records) its
 * last page whole, the rest reading zero, and so the compacted pages hold it whole, zero-padded.
 * A run more than a page past the end is still the source's -ENXIO.
 */
START_TEST(save_pages_short_last_page)
{
	size_t len = 8 * PS + 100;
	unsigned char *img = malloc(len), *got = malloc(3 * PS);
	struct uffd_order *o;
	struct uffd_source *src;
	int fd = memfd_create("compact", MFD_CLOEXEC);

	su_fill(img, 0, len, SEED);
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	ck_assert_int_eq(uffd_order_new(&o), 0);
	uffd_order_add(o, 7 * PS, 2 * PS, NULL); /* the last whole page and the short one */
	uffd_order_add(o, 0, PS, NULL);
	ck_assert_int_eq(uffd_order_save_pages(o, src, fd), 0);
	read_saved(fd, got, 3 * PS);
	ck_assert_int_eq(su_check(got, 7 * PS, PS + 100, SEED), -1);
	for (size_t i = PS + 100; i < 2 * PS; i++)
		ck_assert_msg(got[i] == 0, "byte %zu past the end is %d", i, got[i]);
	ck_assert_int_eq(su_check(got + 2 * PS, 0, PS, SEED), -1);
	uffd_order_free(o);
	/* A run that goes further than its last page: the source's -ENXIO. */
	ck_assert_int_eq(save_run(src, fd, 8 * PS, 3 * PS), -ENXIO);
	ck_assert_int_eq(save_run(src, fd, 9 * PS, PS), -ENXIO);
	close(fd);
	uffd_source_close(src);
	free(img);
	free(got);
}
END_TEST

/*
 * The same with a huge page: a 2 MiB-page registration of a source that ends 100 bytes into its
 * second huge page records that page whole (uffd_serve() serves it so), and its pages are
 * written whole, in parts of the 1 MiB buffer, the rest zero.
 */
START_TEST(save_pages_short_last_huge_page)
{
	const size_t huge = 2u << 20, len = huge + 100;
	unsigned char *img = malloc(len), *got = malloc(huge);
	struct uffd_source *src;
	int fd = memfd_create("compact", MFD_CLOEXEC);

	su_fill(img, 0, len, SEED);
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	ck_assert_int_eq(save_run(src, fd, huge, huge), 0);
	read_saved(fd, got, huge);
	ck_assert_int_eq(su_check(got, huge, 100, SEED), -1);
	for (size_t i = 100; i < huge; i += 4093)
		ck_assert_msg(got[i] == 0, "byte %zu past the end is %d", i, got[i]);
	close(fd);
	uffd_source_close(src);
	free(img);
	free(got);
}
END_TEST

/* ---- record, then prefetch ---- */

#define R_PAGES 512

/* The working set: runs of 1..8 pages scattered over the image, as REAP found them. */
static bool in_set(size_t p)
{
	return (p / 16) % 3 == 0 && p % 16 < 1 + (p / 48) % 8;
}

static void touch_set(const unsigned char *mem)
{
	for (size_t i = 0; i < R_PAGES; i++) {
		size_t p = (i * 37) % R_PAGES; /* not in address order */

		if (in_set(p))
			ck_assert_int_eq(su_check(mem + p * PS, p * PS, PS, SEED), -1);
	}
}

struct restore {
	struct uffd *u;
	unsigned char *mem;
	struct uffd_source *src;
	struct su_disp d;
	bool stopped;
};

/* Serve @img over a fresh mapping, with no dispatching thread yet (restore_run()). */
static void restore_open(struct restore *r, unsigned char *img, struct uffd_order *record,
			 uint64_t chunk)
{
	struct uffd_serve_config cfg = { 0 };

	r->u = tu_open(UFFD_FEATURE_EVENT_REMOVE);
	r->mem = tu_map_anon(R_PAGES * PS);
	ck_assert_int_eq(uffd_source_memory(&r->src, img, R_PAGES * PS), 0);
	cfg.source = r->src;
	cfg.offset = 0;
	cfg.chunk = chunk;
	cfg.record = record;
	ck_assert_int_eq(uffd_serve(r->u, r->mem, R_PAGES * PS, &cfg), 0);
	r->stopped = true;
}

static void restore_run(struct restore *r)
{
	r->stopped = false;
	su_disp_start(&r->d, r->u, 2);
}

static void restore_start(struct restore *r, unsigned char *img, struct uffd_order *record,
			  uint64_t chunk)
{
	restore_open(r, img, record, chunk);
	restore_run(r);
}

/*
 * Stop the dispatching threads: a fault's thread runs again the moment its page is copied in,
 * before the handler has counted the pages of that copy, so exact counts are read after this.
 */
static void restore_stop(struct restore *r)
{
	if (!r->stopped)
		ck_assert_int_eq(su_disp_stop(&r->d), 0);
	r->stopped = true;
}

static void restore_end(struct restore *r)
{
	restore_stop(r);
	uffd_close(r->u);
	uffd_source_close(r->src);
	munmap(r->mem, R_PAGES * PS);
}

static size_t set_pages(void)
{
	size_t n = 0;

	for (size_t p = 0; p < R_PAGES; p++)
		n += in_set(p);
	return n;
}

/* Records a run; returns the loaded order (through a file, as a restorer would). */
static struct uffd_order *record_run(unsigned char *img)
{
	struct uffd_order *rec, *loaded;
	struct uffd_serve_stats st;
	struct restore r;
	int fd = memfd_create("rec", MFD_CLOEXEC);

	ck_assert_int_eq(uffd_order_new(&rec), 0);
	restore_start(&r, img, rec, PS);
	touch_set(r.mem);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_eq(st.faults, set_pages());
	restore_end(&r);
	ck_assert_int_eq(uffd_order_save(rec, fd), 0);
	lseek(fd, 0, SEEK_SET);
	ck_assert_int_eq(uffd_order_load(&loaded, fd), 0);
	close(fd);
	uffd_order_free(rec);
	return loaded;
}

static void check_prefetched(struct uffd_order *o, unsigned char *img, struct uffd_source *compact)
{
	struct uffd_serve_stats st;
	struct restore r;
	long n;

	restore_start(&r, img, NULL, 4 * PS);
	n = uffd_prefetch(r.u, r.mem, o, compact);
	ck_assert_int_eq(n, (long)set_pages());
	touch_set(r.mem);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	/* The working set is in: no fault for it. */
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.prefetched, set_pages());
	/* Pages outside it are still served on demand. */
	ck_assert_int_eq(su_check(r.mem + 2 * PS, 2 * PS, PS, SEED), -1);
	ck_assert_int_eq(su_check(r.mem, 0, R_PAGES * PS, SEED), -1);
	restore_stop(&r);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_gt(st.faults, 0);
	ck_assert_uint_eq(st.prefetched + st.pages_installed, R_PAGES);
	printf("prefetch%s: %zu pages in, then %llu faults for the %zu pages outside the set\n",
	       compact ? " (compacted)" : "", set_pages(), (unsigned long long)st.faults,
	       R_PAGES - set_pages());
	restore_end(&r);
}

START_TEST(record_then_prefetch)
{
	unsigned char *img = malloc(R_PAGES * PS);
	struct uffd_order *o;
	uint64_t total = 0;

	su_fill(img, 0, R_PAGES * PS, SEED);
	o = record_run(img);
	for (long i = 0; i < uffd_order_count(o); i++) {
		uint64_t off, len;

		uffd_order_get(o, i, &off, &len, NULL);
		total += len;
	}
	ck_assert_uint_eq(total, set_pages() * PS);
	check_prefetched(o, img, NULL);
	uffd_order_free(o);
	free(img);
}
END_TEST

START_TEST(compact_prefetch)
{
	unsigned char *img = malloc(R_PAGES * PS);
	char path[] = "/var/tmp/libuffd-compact-XXXXXX";
	struct uffd_source *src, *compact;
	struct uffd_order *o;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	su_fill(img, 0, R_PAGES * PS, SEED);
	o = record_run(img);
	ck_assert_int_eq(uffd_source_memory(&src, img, R_PAGES * PS), 0);
	ck_assert_int_eq(uffd_order_save_pages(o, src, fd), 0);
	close(fd);
	ck_assert_int_eq(uffd_source_file(&compact, path, 0), 0);
	unlink(path);
	check_prefetched(o, img, compact);
	uffd_source_close(compact);
	uffd_source_close(src);
	uffd_order_free(o);
	free(img);
}
END_TEST

struct pf_arg {
	struct restore *r;
	struct uffd_order *o;
	long n;
};

static void *pf_main(void *p)
{
	struct pf_arg *a = p;

	a->n = uffd_prefetch(a->r->u, a->r->mem, a->o, NULL);
	return NULL;
}

/* Touching while the prefetch runs: every byte right, and each page in once. */
START_TEST(prefetch_while_touching)
{
	unsigned char *img = malloc(R_PAGES * PS);
	struct uffd_order *o;
	struct uffd_serve_stats st;
	struct restore r;
	struct pf_arg a;
	pthread_t t;

	su_fill(img, 0, R_PAGES * PS, SEED);
	ck_assert_int_eq(uffd_order_new(&o), 0);
	for (size_t p = R_PAGES; p-- > 0;) /* backwards: the toucher goes forwards */
		uffd_order_add(o, p * PS, PS, NULL);
	restore_start(&r, img, NULL, PS);
	a = (struct pf_arg){ &r, o, 0 };
	ck_assert_int_eq(pthread_create(&t, NULL, pf_main, &a), 0);
	ck_assert_int_eq(su_check(r.mem, 0, R_PAGES * PS, SEED), -1);
	pthread_join(t, NULL);
	ck_assert_int_ge(a.n, 0);
	restore_stop(&r);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_eq(st.prefetched + st.pages_installed, R_PAGES);
	ck_assert_uint_eq((uint64_t)a.n, st.prefetched);
	restore_end(&r);
	uffd_order_free(o);
	free(img);
}
END_TEST

/* ---- pages already present when the prefetch comes ---- */

/*
 * The working set of in_set() as runs, from the top of the image down: the prefetch starts with
 * page 480 and installs each run with one bulk DONTWAKE copy, which a present page interrupts.
 * (A recorded order of one-page faults would not do: its runs are single pages.)
 */
static struct uffd_order *runs_down(void)
{
	struct uffd_order *o;
	size_t hi = R_PAGES;

	ck_assert_int_eq(uffd_order_new(&o), 0);
	while (hi > 0) {
		size_t lo = hi - 1;

		if (!in_set(lo)) {
			hi = lo;
			continue;
		}
		while (lo > 0 && in_set(lo - 1))
			lo--;
		ck_assert_int_eq(uffd_order_add(o, lo * PS, (hi - lo) * PS, NULL), 0);
		hi = lo;
	}
	return o;
}

/*
 * Pages of the set filled before the prefetch, with a marker (uffd_copy()) or zero
 * (uffd_zeropage()): the first page the prefetch reaches (480, of 480-482), one in the middle
 * of a run (339, of 336-343), two in a row (290-291, of 288-294), the last of a run (245, of
 * 240-245), the first of a run (192, of 192-196), and a whole run (48-49).
 */
static const struct {
	size_t page;
	bool zero;
} present[] = {
	{ 480, false }, { 339, false }, { 290, true }, { 291, false },
	{ 245, false }, { 192, true },	{ 48, false }, { 49, true },
};
#define N_PRESENT (sizeof(present) / sizeof(present[0]))

/* What a page filled with uffd_copy() holds: even, where every byte of the image is odd. */
static unsigned char marker(size_t p)
{
	return (unsigned char)(0x80 | (p << 1));
}

static void put_present(struct restore *r)
{
	unsigned char *buf = malloc(PS);

	for (size_t i = 0; i < N_PRESENT; i++) {
		unsigned char *at = r->mem + present[i].page * PS;

		ck_assert(in_set(present[i].page));
		memset(buf, marker(present[i].page), PS);
		if (present[i].zero)
			ck_assert_int_eq(uffd_zeropage(r->u, at, PS, 0), 0);
		else
			ck_assert_int_eq(uffd_copy(r->u, at, buf, PS, 0), 0);
	}
	free(buf);
}

/* Page @p holds the image's bytes, or what put_present() filled it with (touching it). */
static void check_page(const unsigned char *mem, size_t p)
{
	const volatile unsigned char *at = mem + p * PS;
	size_t b = 0;

	for (size_t i = 0; i < N_PRESENT; i++) {
		unsigned char m = present[i].zero ? 0 : marker(p);

		if (present[i].page != p)
			continue;
		while (b < PS && at[b] == m)
			b++;
		ck_assert_msg(b == PS, "page %zu, present before the prefetch, changed at byte %zu",
			      p, b);
		return;
	}
	ck_assert_msg(su_check(at, p * PS, PS, SEED) == -1, "page %zu: not the image's bytes", p);
}

/* Touch every page (those outside the set fault, on demand), stop serving and check that every
 * page was installed once: prefetched, on demand, or present before (N_PRESENT); then end. */
static void present_restore_end(struct restore *r, uint64_t faults_before)
{
	struct uffd_serve_stats st;

	for (size_t p = 0; p < R_PAGES; p++)
		check_page(r->mem, p);
	restore_stop(r);
	ck_assert_int_eq(uffd_serve_get_stats(r->u, &st), 0);
	ck_assert_uint_gt(st.faults, faults_before);
	ck_assert_uint_eq(st.prefetched + st.pages_installed + N_PRESENT, R_PAGES);
	restore_end(r);
}

/*
 * Pages of the working set present before the prefetch (the program's own, or a fault's that
 * won the race) are skipped, each counted once, and the prefetch goes on with the rest of their
 * run: every other page of the set goes in, no present page changes, no error. _i: 0 reads the
 * source, 1 the compacted file.
 */
START_TEST(prefetch_skips_present)
{
	unsigned char *img = malloc(R_PAGES * PS);
	struct uffd_order *o = runs_down();
	struct uffd_source *compact = NULL;
	struct uffd_serve_stats st;
	struct restore r;
	size_t want = set_pages() - N_PRESENT;
	long n;

	su_fill(img, 0, R_PAGES * PS, SEED);
	if (_i) {
		struct uffd_source *src;
		int fd = memfd_create("compact", MFD_CLOEXEC);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(uffd_source_memory(&src, img, R_PAGES * PS), 0);
		ck_assert_int_eq(uffd_order_save_pages(o, src, fd), 0);
		ck_assert_int_eq(uffd_source_fd(&compact, fd, 0), 0);
		uffd_source_close(src);
		close(fd);
	}
	restore_start(&r, img, NULL, 4 * PS);
	put_present(&r);
	n = uffd_prefetch(r.u, r.mem, o, compact);
	ck_assert_int_eq(n, (long)want);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_eq(st.prefetched, want);
	ck_assert_uint_eq(st.eexist_skipped, N_PRESENT);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.pages_installed, 0);
	/* The whole set is in: touching it faults nowhere. */
	for (size_t p = 0; p < R_PAGES; p++)
		if (in_set(p))
			check_page(r.mem, p);
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_eq(st.faults, 0);
	/* The pages outside it are served on demand. */
	present_restore_end(&r, 0);
	uffd_source_close(compact);
	uffd_order_free(o);
	free(img);
}
END_TEST

/*
 * The prefetch installs with DONTWAKE and wakes the registration once, at the end. A thread
 * blocked on a page of the set that comes after a present page of its run (its fault read off
 * the fd here, so that no dispatching thread ever serves it) sleeps until that wake, then reads
 * the image's bytes: the prefetch went on past the present page. Faults outside the set are
 * served on demand, while that thread waits and after.
 */
START_TEST(prefetch_present_dontwake)
{
	const size_t blocked_page = 341, outside_page = 20; /* 341: after 339, of 336-343 */
	unsigned char *img = malloc(R_PAGES * PS);
	struct uffd_order *o = runs_down();
	struct tu_toucher blocked, outside;
	struct uffd_serve_stats st;
	struct restore r;
	size_t want = set_pages() - N_PRESENT;
	long n;

	ck_assert(in_set(blocked_page) && !in_set(outside_page));
	su_fill(img, 0, R_PAGES * PS, SEED);
	restore_open(&r, img, NULL, 4 * PS);
	put_present(&r);
	tu_touch_start(&blocked, r.mem + blocked_page * PS, false, 0);
	tu_expect_fault(r.u, r.mem + blocked_page * PS, 0);
	restore_run(&r);
	tu_touch_start(&outside, r.mem + outside_page * PS, false, 0);
	tu_touch_join(&outside);
	ck_assert_uint_eq((unsigned char)outside.value, su_byte(outside_page * PS, SEED));
	ck_assert(!atomic_load(&blocked.done)); /* nothing has woken it */
	n = uffd_prefetch(r.u, r.mem, o, NULL);
	ck_assert_int_eq(n, (long)want);
	tu_touch_join(&blocked);
	ck_assert_uint_eq((unsigned char)blocked.value, su_byte(blocked_page * PS, SEED));
	ck_assert_int_eq(uffd_serve_get_stats(r.u, &st), 0);
	ck_assert_uint_eq(st.faults, 1); /* outside_page's */
	ck_assert_uint_eq(st.prefetched, want);
	ck_assert_uint_eq(st.eexist_skipped, N_PRESENT);
	present_restore_end(&r, 1);
	uffd_order_free(o);
	free(img);
}
END_TEST

START_TEST(prefetch_bad)
{
	unsigned char *img = malloc(R_PAGES * PS);
	struct uffd_order *o, *named;
	struct restore r;

	su_fill(img, 0, R_PAGES * PS, SEED);
	ck_assert_int_eq(uffd_order_new(&o), 0);
	ck_assert_int_eq(uffd_order_new(&named), 0);
	uffd_order_add(named, 0, PS, "heap");
	restore_start(&r, img, NULL, PS);
	ck_assert_int_eq(uffd_prefetch(NULL, r.mem, o, NULL), -EINVAL);
	ck_assert_int_eq(uffd_prefetch(r.u, NULL, o, NULL), -EINVAL);
	ck_assert_int_eq(uffd_prefetch(r.u, r.mem, NULL, NULL), -EINVAL);
	ck_assert_int_eq(uffd_prefetch(r.u, r.mem + PS, o, NULL), -EINVAL); /* not its start */
	ck_assert_int_eq(uffd_prefetch(r.u, img, o, NULL), -EINVAL);	    /* not served */
	ck_assert_int_eq(uffd_prefetch(r.u, r.mem, named, NULL), -EINVAL);  /* regions */
	ck_assert_int_eq(uffd_prefetch(r.u, r.mem, o, NULL), 0);	    /* empty */
	restore_end(&r);
	uffd_order_free(o);
	uffd_order_free(named);
	free(img);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("order");
	TCase *tc = tu_tcase("order", 30, NULL, NULL);
	TCase *pf = tu_tcase("prefetch", 60, NULL, NULL);

	PS = tu_page();
	tu_require_uffd(&(struct uffd_config){ .required = UFFD_FEATURE_EVENT_REMOVE },
			"EVENT_REMOVE");
	tcase_add_test(tc, add_merge_get);
	tcase_add_test(tc, save_load);
	tcase_add_test(tc, load_syntax);
	tcase_add_loop_test(tc, load_bad, 0, (int)(sizeof(bad_texts) / sizeof(bad_texts[0])));
	tcase_add_test(tc, load_nul_and_errors);
	tcase_add_test(tc, save_pages_compacts);
	tcase_add_test(tc, save_pages_short_last_page);
	tcase_add_test(tc, save_pages_short_last_huge_page);
	tcase_add_test(pf, record_then_prefetch);
	tcase_add_test(pf, compact_prefetch);
	tcase_add_test(pf, prefetch_while_touching);
	tcase_add_loop_test(pf, prefetch_skips_present, 0, 2);
	tcase_add_test(pf, prefetch_present_dontwake);
	tcase_add_test(pf, prefetch_bad);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, pf);
	return tu_run(s);
}
