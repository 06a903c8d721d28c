/* SPDX-License-Identifier: MIT */
/* uffd_serve(): chunks, parallel serving, -EEXIST inside a chunk, discards, hugetlb, asynchronous
 * sources, errors and poison, the manifest, a range another process registered. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "serve.h"
#include "serve_util.h"
#include "testutil.h"

#define SEED 11
#define REMOVE_F UFFD_FEATURE_EVENT_REMOVE

static size_t PS;

static unsigned char *image(size_t len)
{
	unsigned char *img = malloc(len);

	ck_assert_ptr_nonnull(img);
	su_fill(img, 0, len, SEED);
	return img;
}

/* ---- chunks and threads ---- */

#define MT_LEN ((size_t)16 << 20)
#define MT_TOUCHERS 4

struct mt_arg {
	unsigned char *mem;
	int idx;
	long bad;
};

/* Touches every page of its share in a scattered order and checks every byte. */
static void *mt_touch(void *p)
{
	struct mt_arg *a = p;
	size_t pages = MT_LEN / PS;

	a->bad = 0;
	for (size_t k = 0; k < pages; k++) {
		size_t pg = (k * 7919 + (size_t)a->idx * 104729) % pages;

		if (pg % MT_TOUCHERS != (size_t)a->idx)
			continue;
		if (su_check(a->mem + pg * PS, pg * PS, PS, SEED) != -1)
			a->bad++;
	}
	return NULL;
}

static const uint64_t chunks[] = { 4096, 16384, 65536, 262144, 1 << 20, 4 << 20 };

START_TEST(chunks_threads)
{
	uint64_t chunk = chunks[_i];
	unsigned char *img = image(MT_LEN), *mem = tu_map_anon(MT_LEN);
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct mt_arg args[MT_TOUCHERS];
	pthread_t t[MT_TOUCHERS];
	struct su_disp d;
	struct uffd *u = tu_open(REMOVE_F);
	struct uffd_serve_config cfg = { 0 };

	ck_assert_int_eq(uffd_source_memory(&src, img, MT_LEN), 0);
	cfg.source = src;
	cfg.chunk = chunk;
	ck_assert_int_eq(uffd_serve(u, mem, MT_LEN, &cfg), 0);
	su_disp_start(&d, u, 3);
	for (int i = 0; i < MT_TOUCHERS; i++) {
		args[i] = (struct mt_arg){ mem, i, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, mt_touch, &args[i]), 0);
	}
	for (int i = 0; i < MT_TOUCHERS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(args[i].bad, 0);
	}
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(su_check(mem, 0, MT_LEN, SEED), -1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	/* Every page came in exactly once, by copy; a chunk's pages fault no more, and each chunk
	 * is fetched once: the faults of a chunk in flight join its fetch. */
	ck_assert_uint_eq(st.pages_installed, MT_LEN / PS);
	ck_assert_uint_ge(st.faults, MT_LEN / chunk);
	ck_assert_uint_le(st.faults, MT_LEN / chunk + st.joined + st.eexist_skipped + 64);
	ck_assert_uint_eq(st.fetches, MT_LEN / chunk);
	ck_assert_uint_eq(st.poisoned + st.errors + st.pages_zeroed, 0);
	printf("chunk %6llu KiB: %llu faults, %llu fetches, %llu joined, %llu present pages "
	       "skipped\n",
	       (unsigned long long)chunk / 1024, (unsigned long long)st.faults,
	       (unsigned long long)st.fetches, (unsigned long long)st.joined,
	       (unsigned long long)st.eexist_skipped);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, MT_LEN);
	free(img);
}
END_TEST

/* ---- -EEXIST in the middle of a chunk ---- */

START_TEST(eexist_mid_chunk)
{
	size_t len = 64 * PS;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	unsigned char *mine = malloc(PS);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct su_disp d;
	struct uffd *u = tu_open(REMOVE_F);

	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	cfg.source = src;
	cfg.chunk = 16 * PS;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	/* Page 5 of the first chunk is present already, with bytes of its own. */
	memset(mine, 0xa5, PS);
	ck_assert_int_eq(uffd_copy(u, mem + 5 * PS, mine, PS, 0), 0);
	su_disp_start(&d, u, 1);
	/* Next to it: the chunk is installed around page 5, which keeps its bytes. */
	ck_assert_int_eq(su_check(mem + 4 * PS, 4 * PS, PS, SEED), -1);
	for (int p = 0; p < 16; p++)
		if (p != 5)
			ck_assert_int_eq(su_check(mem + p * PS, p * PS, PS, SEED), -1);
	ck_assert_int_eq(memcmp(mem + 5 * PS, mine, PS), 0);
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults, 1); /* pages 6..15 came with the chunk, not one by one */
	ck_assert_uint_eq(st.eexist_skipped, 1);
	ck_assert_uint_eq(st.pages_installed, 15);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
	free(mine);
}
END_TEST

/* ---- discards ---- */

static void discard_case(uint32_t mode)
{
	size_t len = 32 * PS;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct su_disp d;
	struct uffd *u = tu_open(REMOVE_F);

	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	cfg.source = src;
	cfg.chunk = 8 * PS;
	cfg.discard = mode;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	su_disp_start(&d, u, 2);
	/* Pages 0..15 in use, then 3..5 discarded; 20..21 discarded before anyone touched them
	 * (a balloon takes pages the guest never used). */
	ck_assert_int_eq(su_check(mem, 0, 16 * PS, SEED), -1);
	ck_assert_int_eq(madvise(mem + 3 * PS, 3 * PS, MADV_DONTNEED), 0);
	ck_assert_int_eq(madvise(mem + 20 * PS, 2 * PS, MADV_DONTNEED), 0);
	for (size_t p = 0; p < 32; p++) {
		bool gone = (p >= 3 && p <= 5) || p == 20 || p == 21;

		if (gone && mode == UFFD_DISCARD_ZERO)
			ck_assert_msg(su_all_zero(mem + p * PS, PS), "page %zu: not zero", p);
		else
			ck_assert_msg(su_check(mem + p * PS, p * PS, PS, SEED) == -1,
				      "page %zu: not the source's bytes", p);
	}
	/* Written after the discard, a page keeps what was written. */
	mem[4 * PS] = 42;
	ck_assert_int_eq(mem[4 * PS], 42);
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	if (mode == UFFD_DISCARD_ZERO)
		ck_assert_uint_eq(st.pages_zeroed, 5);
	else
		ck_assert_uint_eq(st.pages_zeroed, 0);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
}

START_TEST(discard_zero)
{
	discard_case(UFFD_DISCARD_ZERO);
}
END_TEST

START_TEST(discard_source)
{
	discard_case(UFFD_DISCARD_SOURCE);
}
END_TEST

START_TEST(discard_zero_needs_remove)
{
	unsigned char img[64];
	struct uffd_serve_config cfg = { 0 };
	struct uffd_source *src;
	char *mem = tu_map_anon(PS);
	struct uffd *u = tu_open(0);

	if (uffd_features(u) & REMOVE_F)
		tu_skip("the context got EVENT_REMOVE unasked");
	ck_assert_int_eq(uffd_source_memory(&src, img, sizeof(img)), 0);
	cfg.source = src;
	ck_assert_int_eq(uffd_serve(u, mem, PS, &cfg), -EOPNOTSUPP);
	cfg.discard = UFFD_DISCARD_SOURCE;
	ck_assert_int_eq(uffd_serve(u, mem, PS, &cfg), 0);
	/* A short source: the rest of its only page reads zero. */
	su_fill(img, 0, sizeof(img), SEED);
	{
		struct su_disp d;

		su_disp_start(&d, u, 1);
		ck_assert_int_eq(su_check((unsigned char *)mem, 0, sizeof(img), SEED), -1);
		ck_assert(su_all_zero((unsigned char *)mem + sizeof(img), PS - sizeof(img)));
		ck_assert_int_eq(su_disp_stop(&d), 0);
	}
	uffd_close(u);
	uffd_source_close(src);
}
END_TEST

/* ---- hugetlb ---- */

#define HUGE ((size_t)2 << 20)

START_TEST(hugetlb_2m)
{
	size_t len = 4 * HUGE;
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src;
	unsigned char *img, *mem;
	struct su_disp d;
	struct uffd *u;

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1,
		   0);
	ck_assert_msg(mem != MAP_FAILED, "2 MiB huge pages reserved in main(), yet none to map");
	u = tu_open(REMOVE_F);
	img = image(len);
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	cfg.source = src;
	cfg.page_size = HUGE;
	cfg.chunk = 2 * HUGE;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	su_disp_start(&d, u, 2);
	ck_assert_int_eq(su_check(mem + HUGE + 12345, HUGE + 12345, 100, SEED), -1);
	ck_assert_int_eq(su_check(mem, 0, len, SEED), -1);
	/* A discarded huge page reads zero. */
	ck_assert_int_eq(madvise(mem + 3 * HUGE, HUGE, MADV_DONTNEED), 0);
	ck_assert(su_all_zero(mem + 3 * HUGE, HUGE));
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.pages_installed, 4);
	ck_assert_uint_eq(st.pages_zeroed, 1);
	ck_assert_uint_eq(st.faults, 3);
	printf("hugetlb: 4 huge pages served in %llu faults, 1 discarded and read as zero\n",
	       (unsigned long long)st.faults);
	/* Base-page sized chunks cannot serve it. */
	cfg.chunk = PS;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), -EINVAL);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
}
END_TEST

/* ---- an asynchronous source ---- */

/* A fake remote source: read_async queues the read, a thread answers each 200 us later. */
struct fake {
	const unsigned char *img;
	size_t len;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct uffd_source_io *q[1024];
	unsigned head, tail;
	bool stop;
	int inflight, peak;
	pthread_t t[2];
	int fail_at_page;      /* reads covering this page fail with -EIO; -1: none */
	_Atomic int fail_once; /* 1 + a page whose first read fails; 0: none */
};

static int fake_read(void *impl, void *buf, size_t len, uint64_t off)
{
	struct fake *f = impl;

	if (off > f->len || len > f->len - off)
		return -ENXIO;
	if (f->fail_at_page >= 0 && (uint64_t)f->fail_at_page * PS >= off &&
	    (uint64_t)f->fail_at_page * PS < off + len)
		return -EIO;
	int once = atomic_load(&f->fail_once);

	if (once > 0 && (uint64_t)(once - 1) * PS >= off && (uint64_t)(once - 1) * PS < off + len &&
	    atomic_compare_exchange_strong(&f->fail_once, &once, 0))
		return -EIO;
	memcpy(buf, f->img + off, len);
	return 0;
}

static int fake_read_async(void *impl, struct uffd_source_io *io)
{
	struct fake *f = impl;

	pthread_mutex_lock(&f->lock);
	f->q[f->tail++ % 1024] = io;
	if (++f->inflight > f->peak)
		f->peak = f->inflight;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int64_t fake_length(void *impl)
{
	return (int64_t)((struct fake *)impl)->len;
}

static void *fake_main(void *p)
{
	struct fake *f = p;

	for (;;) {
		struct timespec lag = { 0, 200000 };
		struct uffd_source_io *io;

		pthread_mutex_lock(&f->lock);
		while (f->head == f->tail && !f->stop)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->head == f->tail) {
			pthread_mutex_unlock(&f->lock);
			return NULL;
		}
		io = f->q[f->head++ % 1024];
		pthread_mutex_unlock(&f->lock);
		nanosleep(&lag, NULL);
		pthread_mutex_lock(&f->lock);
		f->inflight--;
		pthread_mutex_unlock(&f->lock);
		io->done(io, fake_read(f, io->buf, io->len, io->offset));
	}
}

static void fake_start(struct fake *f, const unsigned char *img, size_t len)
{
	memset(f, 0, sizeof(*f));
	f->img = img;
	f->len = len;
	f->fail_at_page = -1;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&f->t[i], NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	for (int i = 0; i < 2; i++)
		pthread_join(f->t[i], NULL);
}

static const struct uffd_source_ops fake_ops = {
	.size = sizeof(fake_ops),
	.read = fake_read,
	.read_async = fake_read_async,
	.length = fake_length,
};

#define AS_LEN ((size_t)4 << 20)
#define AS_TOUCHERS 8

struct as_arg {
	unsigned char *mem;
	int idx;
	long bad;
};

#define AS_CHUNK_PAGES 4

/* Each toucher takes chunks of its own: faults of one chunk would join one fetch, and the test
 * wants several fetches in flight. */
static void *as_touch(void *p)
{
	struct as_arg *a = p;
	size_t chunks = AS_LEN / PS / AS_CHUNK_PAGES;

	for (size_t c = (size_t)a->idx; c < chunks; c += AS_TOUCHERS)
		for (size_t pg = c * AS_CHUNK_PAGES; pg < (c + 1) * AS_CHUNK_PAGES; pg++)
			if (su_check(a->mem + pg * PS, pg * PS, PS, SEED) != -1)
				a->bad++;
	return NULL;
}

START_TEST(async_deferred)
{
	unsigned char *img = image(AS_LEN), *mem = tu_map_anon(AS_LEN);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_monitor *m;
	struct uffd_source *src;
	struct as_arg args[AS_TOUCHERS];
	pthread_t t[AS_TOUCHERS];
	struct fake f;
	struct uffd *u = tu_open(REMOVE_F);

	fake_start(&f, img, AS_LEN);
	ck_assert_int_eq(uffd_source_new(&src, &fake_ops, &f), 0);
	cfg.source = src;
	cfg.chunk = AS_CHUNK_PAGES * PS;
	cfg.max_inflight = 4;
	ck_assert_int_eq(uffd_serve(u, mem, AS_LEN, &cfg), 0);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_start(m, 3), 0);
	for (int i = 0; i < AS_TOUCHERS; i++) {
		args[i] = (struct as_arg){ mem, i, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, as_touch, &args[i]), 0);
	}
	for (int i = 0; i < AS_TOUCHERS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(args[i].bad, 0);
	}
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	ck_assert_int_ge(uffd_monitor_join(m), 0);
	ck_assert_int_eq(su_check(mem, 0, AS_LEN, SEED), -1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.pages_installed, AS_LEN / PS);
	/* Several in flight at once, and never more than the bound. */
	ck_assert_int_gt(f.peak, 1);
	ck_assert_int_le(f.peak, 4);
	printf("async: %llu faults, peak %d fetches in flight (bound 4)\n",
	       (unsigned long long)st.faults, f.peak);
	uffd_monitor_free(m); /* closes u */
	fake_stop(&f);
	uffd_source_close(src);
	munmap(mem, AS_LEN);
	free(img);
}
END_TEST

/* ---- one fetch per chunk, and a discard racing a fetch: a source held at a gate ---- */

/* Reads wait until the gate opens; read_async answers from a thread of its own. */
struct gate {
	const unsigned char *img;
	size_t len;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	int entered; /* reads started */
	pthread_t t[16];
	int nt;
};

static int gate_read(void *impl, void *buf, size_t len, uint64_t off)
{
	struct gate *g = impl;

	pthread_mutex_lock(&g->lock);
	g->entered++;
	pthread_cond_broadcast(&g->cond);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	if (off > g->len || len > g->len - off)
		return -ENXIO;
	memcpy(buf, g->img + off, len);
	return 0;
}

static void *gate_async_main(void *p)
{
	struct uffd_source_io *io = p;

	io->done(io, gate_read(io->user, io->buf, io->len, io->offset));
	return NULL;
}

static int gate_read_async(void *impl, struct uffd_source_io *io)
{
	struct gate *g = impl;
	int ret = -EAGAIN;

	pthread_mutex_lock(&g->lock);
	io->user = g;
	if (g->nt < 16 && pthread_create(&g->t[g->nt], NULL, gate_async_main, io) == 0) {
		g->nt++;
		ret = 0;
	}
	pthread_mutex_unlock(&g->lock);
	return ret;
}

static int64_t gate_length(void *impl)
{
	return (int64_t)((struct gate *)impl)->len;
}

static void gate_init(struct gate *g, const unsigned char *img, size_t len)
{
	memset(g, 0, sizeof(*g));
	g->img = img;
	g->len = len;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
}

/* Wait (up to 10 s) until @n reads have started. */
static void gate_wait_entered(struct gate *g, int n)
{
	struct timespec dl;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&g->lock);
	while (g->entered < n)
		if (pthread_cond_timedwait(&g->cond, &g->lock, &dl))
			break;
	pthread_mutex_unlock(&g->lock);
	ck_assert_int_ge(g->entered, n);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void gate_fini(struct gate *g)
{
	gate_open(g);
	for (int i = 0; i < g->nt; i++)
		pthread_join(g->t[i], NULL);
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
}

static struct uffd_source *gate_source(struct gate *g, bool async)
{
	struct uffd_source_ops ops = { .size = sizeof(ops),
				       .read = gate_read,
				       .read_async = async ? gate_read_async : NULL,
				       .length = gate_length };
	struct uffd_source *src;

	ck_assert_int_eq(uffd_source_new(&src, &ops, g), 0);
	return src;
}

#define ONE_CHUNK ((size_t)4 << 20)
#define ONE_TOUCHERS 4

struct one_arg {
	unsigned char *mem;
	pthread_barrier_t *bar;
	size_t page;
	long bad;
};

static void *one_touch(void *p)
{
	struct one_arg *a = p;

	pthread_barrier_wait(a->bar);
	a->bad = su_check(a->mem + a->page * PS, a->page * PS, PS, SEED) != -1;
	return NULL;
}

/*
 * Several threads fault in one chunk at once while its fetch is held: the chunk is fetched
 * once, the other faults join it (or, read before the install and delivered after, find their
 * page installed), and every byte is right. _i: 0 synchronous source, 1 asynchronous.
 */
START_TEST(one_fetch_per_chunk)
{
	unsigned char *img = image(2 * ONE_CHUNK), *mem = tu_map_anon(2 * ONE_CHUNK);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct one_arg args[ONE_TOUCHERS];
	pthread_t t[ONE_TOUCHERS];
	pthread_barrier_t bar;
	struct timespec settle = { 0, 50000000L };
	struct su_disp d;
	struct gate g;
	struct uffd_source *src;
	struct uffd *u = tu_open(REMOVE_F);

	gate_init(&g, img, 2 * ONE_CHUNK);
	src = gate_source(&g, _i == 1);
	cfg.source = src;
	cfg.chunk = ONE_CHUNK;
	ck_assert_int_eq(uffd_serve(u, mem, 2 * ONE_CHUNK, &cfg), 0);
	su_disp_start(&d, u, 3);
	pthread_barrier_init(&bar, NULL, ONE_TOUCHERS);
	for (int i = 0; i < ONE_TOUCHERS; i++) {
		/* Pages of the second chunk, spread over it. */
		args[i] = (struct one_arg){ mem, &bar, ONE_CHUNK / PS + (size_t)i * 97 + 3, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, one_touch, &args[i]), 0);
	}
	gate_wait_entered(&g, 1);
	nanosleep(&settle, NULL); /* the other faults arrive while the fetch is held */
	gate_open(&g);
	for (int i = 0; i < ONE_TOUCHERS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(args[i].bad, 0);
	}
	ck_assert_int_eq(su_check(mem + ONE_CHUNK, ONE_CHUNK, ONE_CHUNK, SEED), -1);
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.fetches, 1);
	ck_assert_uint_eq(st.pages_installed, ONE_CHUNK / PS);
	ck_assert_uint_eq(st.faults, 1 + st.joined);
	printf("one chunk (%s): %llu faults, %llu joined the fetch\n", _i ? "async" : "sync",
	       (unsigned long long)st.faults, (unsigned long long)st.joined);
	pthread_barrier_destroy(&bar);
	uffd_close(u);
	gate_fini(&g);
	uffd_source_close(src);
	munmap(mem, 2 * ONE_CHUNK);
	free(img);
}
END_TEST

/* The REMOVE callback held until released: uffd_serve_remove() runs late, as a slow notifier's
 * would, after the madvise() that sent the REMOVE has returned. */
struct late_remove {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go;
	int calls;
};

static int late_remove(struct uffd *u, const struct uffd_span *span, void *arg)
{
	struct late_remove *l = arg;

	pthread_mutex_lock(&l->lock);
	l->calls++;
	while (!l->go)
		pthread_cond_wait(&l->cond, &l->lock);
	pthread_mutex_unlock(&l->lock);
	return uffd_serve_remove(u, span, NULL);
}

/*
 * A chunk is being fetched for a fault on page 1 when page 5 of the same chunk is discarded:
 * the REMOVE is read and the page zapped (madvise returns) before the notification callback
 * has run, and only then does the fetch finish. Page 5 must read zero, not the image: the
 * REMOVE marks it at read time. _i: 0 synchronous source, 1 asynchronous.
 */
START_TEST(discard_during_fetch)
{
	size_t len = 16 * PS;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	struct uffd_serve_config cfg = { 0 };
	struct late_remove l = { .go = false };
	struct uffd_serve_stats st;
	struct tu_toucher t;
	struct su_disp d;
	struct gate g;
	struct uffd_source *src;
	struct uffd *u = tu_open(REMOVE_F);

	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.cond, NULL);
	gate_init(&g, img, len);
	src = gate_source(&g, _i == 1);
	cfg.source = src;
	cfg.chunk = 8 * PS;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	ck_assert_int_eq(uffd_on_remove(u, late_remove, &l), 0);
	su_disp_start(&d, u, 2);
	tu_touch_start(&t, mem + 1 * PS, false, 0);
	gate_wait_entered(&g, 1);
	/* Returns once the REMOVE is read and the page zapped; the callback is still held. */
	ck_assert_int_eq(madvise(mem + 5 * PS, PS, MADV_DONTNEED), 0);
	gate_open(&g);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, (char)su_byte(1 * PS, SEED));
	pthread_mutex_lock(&l.lock);
	l.go = true; /* its callback may not even have started yet */
	pthread_cond_broadcast(&l.cond);
	pthread_mutex_unlock(&l.lock);
	for (size_t p = 0; p < 16; p++) {
		if (p == 5)
			ck_assert_msg(su_all_zero(mem + p * PS, PS),
				      "discarded page 5 is not zero");
		else
			ck_assert_msg(su_check(mem + p * PS, p * PS, PS, SEED) == -1,
				      "page %zu: not the source's bytes", p);
	}
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(l.calls, 1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.pages_zeroed, 1);
	ck_assert_uint_eq(st.fetches, 2);
	uffd_close(u);
	gate_fini(&g);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
	pthread_cond_destroy(&l.cond);
	pthread_mutex_destroy(&l.lock);
}
END_TEST

/* ---- errors: poison, SIGBUS, the manifest ---- */

static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_seen;

static void on_bus(int sig)
{
	(void)sig;
	bus_seen = 1;
	siglongjmp(bus_jmp, 1);
}

/* Reads one byte of @p: 1 when that raised SIGBUS. */
static int touch_bus(volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_bus }, old;
	int got;

	sigaction(SIGBUS, &sa, &old);
	bus_seen = 0;
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)*p;
	got = bus_seen;
	sigaction(SIGBUS, &old, NULL);
	return got;
}

struct err_seen {
	uint64_t offset, len;
	int err, calls;
};

static void on_error(struct uffd *u, uint64_t offset, uint64_t len, int err, void *arg)
{
	struct err_seen *e = arg;

	(void)u;
	e->offset = offset;
	e->len = len;
	e->err = err;
	e->calls++;
}

START_TEST(error_poisons)
{
	size_t len = 32 * PS;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct err_seen e = { 0 };
	struct uffd_source *src;
	struct su_disp d;
	struct fake f;
	struct uffd *u;
	struct uffd_source_ops ops = fake_ops;

	u = tu_open(REMOVE_F | UFFD_FEATURE_POISON);
	memset(&f, 0, sizeof(f));
	f.img = img;
	f.len = len;
	f.fail_at_page = 9; /* the second chunk of 8 pages fails */
	ops.read_async = NULL;
	ck_assert_int_eq(uffd_source_new(&src, &ops, &f), 0);
	cfg.source = src;
	cfg.chunk = 8 * PS;
	cfg.on_error = on_error;
	cfg.arg = &e;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	su_disp_start(&d, u, 1);
	ck_assert_int_eq(touch_bus(mem + 10 * PS), 1);
	/* Every page of that chunk is poisoned; the others are served. */
	for (int p = 8; p < 16; p++)
		ck_assert_int_eq(touch_bus(mem + p * PS), 1);
	ck_assert_int_eq(su_check(mem, 0, 8 * PS, SEED), -1);
	ck_assert_int_eq(su_check(mem + 16 * PS, 16 * PS, 16 * PS, SEED), -1);
	/* on_error runs after the poison woke the toucher: look once the dispatchers are gone. */
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(e.calls, 1);
	ck_assert_int_eq(e.err, -EIO);
	ck_assert_uint_eq(e.offset, 8 * PS);
	ck_assert_uint_eq(e.len, 8 * PS);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.poisoned, 8);
	ck_assert_uint_eq(st.errors, 1);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
}
END_TEST

/* Without UFFD_FEATURE_POISON the error comes back from dispatch; no wrong byte goes in. */
START_TEST(error_without_poison)
{
	size_t len = 8 * PS;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_source_ops ops = fake_ops;
	struct err_seen e = { 0 };
	struct uffd_source *src;
	struct tu_toucher t;
	struct fake f;
	struct uffd *u = tu_open(REMOVE_F);
	int r;

	if (uffd_features(u) & UFFD_FEATURE_POISON)
		tu_skip("the context got POISON unasked");
	memset(&f, 0, sizeof(f));
	f.img = img;
	f.len = len;
	f.fail_at_page = 2;
	ops.read_async = NULL;
	ck_assert_int_eq(uffd_source_new(&src, &ops, &f), 0);
	cfg.source = src;
	cfg.on_error = on_error;
	cfg.arg = &e;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	tu_touch_start(&t, mem + 2 * PS, false, 0);
	do
		r = uffd_dispatch(u, 1000);
	while (r == 0);
	ck_assert_int_eq(r, -EIO);
	ck_assert_int_ge(e.calls, 1);
	/* Closing the last copy of the fd lets the thread through, to a zero page. */
	uffd_close(u);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, 0);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
}
END_TEST

START_TEST(manifest_mismatch)
{
	size_t len = 64 * PS, mchunk = 16 * PS, n = len / mchunk;
	unsigned char *img = image(len), *mem = tu_map_anon(len);
	uint8_t *manifest = malloc(n * 32);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct err_seen e = { 0 };
	struct uffd_source *src;
	struct su_disp d;
	struct uffd *u = tu_open(REMOVE_F | UFFD_FEATURE_POISON);

	for (size_t i = 0; i < n; i++)
		uffd_sha256(img + i * mchunk, mchunk, manifest + i * 32);
	/* The source lies about chunk 2: one byte changed after the manifest was made. */
	img[2 * mchunk + 5 * PS + 17] ^= 0x40;
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	cfg.source = src;
	cfg.chunk = 4 * PS; /* smaller than the manifest's chunk: whole chunks are fetched */
	cfg.manifest = manifest;
	cfg.manifest_chunk = mchunk;
	cfg.on_error = on_error;
	cfg.arg = &e;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	su_disp_start(&d, u, 2);
	ck_assert_int_eq(touch_bus(mem + 2 * mchunk), 1);
	for (size_t p = 0; p < len / PS; p++) {
		if (p * PS / mchunk == 2)
			ck_assert_int_eq(touch_bus(mem + p * PS), 1);
		else
			ck_assert_int_eq(su_check(mem + p * PS, p * PS, PS, SEED), -1);
	}
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(e.calls, 1);
	ck_assert_int_eq(e.err, -EBADMSG);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.poisoned, mchunk / PS);
	ck_assert_uint_eq(st.pages_installed, (len - mchunk) / PS);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, len);
	free(img);
	free(manifest);
}
END_TEST

/* ---- map-only: memory another process registered, the Firecracker shape ---- */

#define MO_PAGES 64

/* The VMM: makes the fd and registers its memory with raw syscalls, sends both, then touches
 * everything and checks it, discards some and checks those read zero. Exit 0 when right. */
static int vmm(int sock)
{
	size_t len = MO_PAGES * PS;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE };
	struct uffdio_register reg = { 0 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { 0 };
	struct iovec iov;
	struct cmsghdr *c;
	unsigned char *mem;
	char msg[64], ack;
	int fd;

	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || ioctl(fd, UFFDIO_API, &api))
		return 10;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reg.range.start = (uintptr_t)mem;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (mem == MAP_FAILED || ioctl(fd, UFFDIO_REGISTER, &reg))
		return 11;
	snprintf(msg, sizeof(msg), "%p %zu", (void *)mem, len);
	iov = (struct iovec){ msg, strlen(msg) + 1 };
	memset(&ctl, 0, sizeof(ctl));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &mh, 0) < 0)
		return 12;
	close(fd);
	/* Wait until the handler has recorded the range. */
	if (read(sock, &ack, 1) != 1)
		return 13;
	if (su_check(mem, 0, len, SEED) != -1)
		return 14;
	if (madvise(mem + 8 * PS, 4 * PS, MADV_DONTNEED) || !su_all_zero(mem + 8 * PS, 4 * PS))
		return 15;
	return su_check(mem + 12 * PS, 12 * PS, PS, SEED) == -1 ? 0 : 16;
}

START_TEST(map_only_adopted)
{
	size_t len = MO_PAGES * PS;
	unsigned char *img = image(len);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct uffd_peer peer;
	struct su_disp d;
	struct uffd *u;
	char msg[64];
	void *addr;
	size_t rlen;
	int sv[2], fd, status;
	pid_t pid;

	/* The VMM connects, as Firecracker does: SO_PEERCRED then names it (a socketpair would
	 * name the process that made the pair). An abstract address: nothing to clean up. */
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t sl;

	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "libuffd-serve-%d", getpid());
	sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
	sv[1] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(sv[1], (struct sockaddr *)&sa, sl), 0);
	ck_assert_int_eq(listen(sv[1], 1), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (connect(c, (struct sockaddr *)&sa, sl))
			_exit(9);
		_exit(vmm(c));
	}
	sv[0] = accept4(sv[1], NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(sv[0], 0);
	close(sv[1]);
	ck_assert_int_gt(uffd_fd_recv(sv[0], &fd, msg, sizeof(msg), &peer), 0);
	ck_assert_int_eq(peer.pid, pid);
	ck_assert_int_eq(sscanf(msg, "%p %zu", &addr, &rlen), 2);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert_int_eq(uffd_source_memory(&src, img, len), 0);
	cfg.source = src;
	cfg.chunk = 8 * PS;
	cfg.flags = UFFD_SERVE_MAP_ONLY;
	ck_assert_int_eq(uffd_serve(u, addr, rlen, &cfg), 0);
	su_disp_start(&d, u, 2);
	ck_assert_int_eq(write(sv[0], "k", 1), 1);
	status = tu_wait_child(pid, 20000);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the VMM saw wrong memory (%d)", WEXITSTATUS(status));
	su_disp_stop(&d);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.pages_zeroed, 4);
	ck_assert_uint_eq(st.pages_installed, MO_PAGES);
	uffd_close(u);
	close(sv[0]);
	uffd_source_close(src);
	free(img);
}
END_TEST

/* ---- bad arguments ---- */

/* ---- fetching ahead ---- */

#define AH_LEN ((size_t)2 << 20)
#define AH_CHUNK_PAGES 4
#define AH_AHEAD 4

struct ah_walk {
	unsigned char *mem;
	size_t from, to; /* pages */
	long bad;
	_Atomic bool done;
};

/* Reads pages [from, to) in order and checks every byte. */
static void *ah_walk_fn(void *p)
{
	struct ah_walk *w = p;

	for (size_t pg = w->from; pg < w->to; pg++)
		if (su_check(w->mem + pg * PS, pg * PS, PS, SEED) != -1)
			w->bad++;
	atomic_store(&w->done, true);
	return NULL;
}

/* Serve @u from the calling thread until @w is done (at most 30 s). */
static void ah_serve_until(struct uffd *u, struct ah_walk *w)
{
	double end = tu_now() + 30;

	while (!atomic_load(&w->done) && tu_now() < end)
		ck_assert_int_ge(uffd_dispatch(u, 10), 0);
	ck_assert(atomic_load(&w->done));
}

/* Read pages [from, to) of @mem in a thread of its own while this one serves @u; every byte
 * must be the image's. */
static void ah_walk(struct uffd *u, unsigned char *mem, size_t from, size_t to)
{
	struct ah_walk w = { .mem = mem, .from = from, .to = to };
	pthread_t t;

	ck_assert_int_eq(pthread_create(&t, NULL, ah_walk_fn, &w), 0);
	ah_serve_until(u, &w);
	pthread_join(t, NULL);
	ck_assert_int_eq(w.bad, 0);
}

/* Close what ah_open() made. */
static void ah_close(struct uffd *u, struct fake *f, struct uffd_source *src)
{
	uffd_close(u);
	fake_stop(f);
	uffd_source_close(src);
}

/* An asynchronous source behind a registration of AH_LEN served with @ahead. */
static struct uffd *ah_open(struct fake *f, unsigned char *img, struct uffd_source **src,
			    unsigned char *mem, unsigned ahead)
{
	struct uffd_serve_config cfg = { 0 };
	struct uffd *u = tu_open(REMOVE_F);

	fake_start(f, img, AH_LEN);
	ck_assert_int_eq(uffd_source_new(src, &fake_ops, f), 0);
	cfg.source = *src;
	cfg.chunk = AH_CHUNK_PAGES * PS;
	cfg.ahead = ahead;
	ck_assert_int_eq(uffd_serve(u, mem, AH_LEN, &cfg), 0);
	return u;
}

/*
 * A sequential reader: each fault that fetches its chunk starts the next AH_AHEAD as well, so
 * most chunks are in (or on their way) before they are touched. It reads the second half first,
 * then the first, whose last faults look ahead into chunks that are in already. Every chunk is
 * fetched exactly once, every page installed once, and far fewer faults wait for a fetch of
 * their own.
 */
START_TEST(ahead_sequential)
{
	unsigned char *img = image(AH_LEN), *mem = tu_map_anon(AH_LEN);
	size_t nchunks = AH_LEN / (AH_CHUNK_PAGES * PS), half = AH_LEN / PS / 2;
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct fake f;
	struct uffd *u = ah_open(&f, img, &src, mem, AH_AHEAD);

	ah_walk(u, mem, half, 2 * half);
	ah_walk(u, mem, 0, half);
	ck_assert_int_eq(su_check(mem, 0, AH_LEN, SEED), -1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	printf("ahead: %zu chunks, %llu faults, %llu fetched ahead, %llu joined, peak %d in "
	       "flight\n",
	       nchunks, (unsigned long long)st.faults, (unsigned long long)st.ahead,
	       (unsigned long long)st.joined, f.peak);
	ck_assert_uint_eq(st.fetches, nchunks);
	ck_assert_uint_eq(st.bytes_fetched, AH_LEN);
	ck_assert_uint_eq(st.pages_installed, AH_LEN / PS);
	ck_assert_uint_eq(st.eexist_skipped, 0);
	ck_assert_uint_gt(st.ahead, nchunks / 2);
	ck_assert_uint_eq(st.fetches, st.ahead + (st.faults - st.joined));
	ck_assert_uint_eq(st.poisoned + st.errors, 0);
	ck_assert_int_gt(f.peak, 1);
	ah_close(u, &f, src);
	munmap(mem, AH_LEN);
	free(img);
}
END_TEST

/* Without `ahead`, or from a synchronous source, nothing is fetched ahead. */
START_TEST(ahead_off)
{
	unsigned char *img = image(AH_LEN), *mem = tu_map_anon(AH_LEN);
	struct uffd_serve_config cfg = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct fake f;
	struct uffd *u = ah_open(&f, img, &src, mem, 0);

	ah_walk(u, mem, 0, AH_LEN / PS);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.ahead, 0);
	ck_assert_uint_eq(st.faults, AH_LEN / (AH_CHUNK_PAGES * PS));
	ah_close(u, &f, src);

	/* A memory source has no read_async: `ahead` changes nothing. */
	munmap(mem, AH_LEN);
	mem = tu_map_anon(AH_LEN);
	u = tu_open(REMOVE_F);
	ck_assert_int_eq(uffd_source_memory(&src, img, AH_LEN), 0);
	cfg.source = src;
	cfg.chunk = AH_CHUNK_PAGES * PS;
	cfg.ahead = AH_AHEAD;
	ck_assert_int_eq(uffd_serve(u, mem, AH_LEN, &cfg), 0);
	ah_walk(u, mem, 0, AH_LEN / PS);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.ahead, 0);
	uffd_close(u);
	uffd_source_close(src);
	munmap(mem, AH_LEN);
	free(img);
}
END_TEST

/*
 * A fetch ahead that fails installs and poisons nothing: the faults of its chunk fetch it on
 * demand (here that read succeeds) and get the right bytes.
 */
START_TEST(ahead_failure_fetched_on_demand)
{
	unsigned char *img = image(AH_LEN), *mem = tu_map_anon(AH_LEN);
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct fake f;
	struct uffd *u = ah_open(&f, img, &src, mem, AH_AHEAD);

	/* Chunk 3 is fetched ahead by the fault on chunk 0; its first read fails. */
	atomic_store(&f.fail_once, 1 + 3 * AH_CHUNK_PAGES + 1);
	ah_walk(u, mem, 0, AH_LEN / PS);
	ck_assert_int_eq(atomic_load(&f.fail_once), 0); /* it did fail once */
	ck_assert_int_eq(su_check(mem, 0, AH_LEN, SEED), -1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.poisoned + st.errors, 0);
	ck_assert_uint_eq(st.pages_installed, AH_LEN / PS);
	ck_assert_uint_eq(st.fetches, AH_LEN / (AH_CHUNK_PAGES * PS) + 1);
	ah_close(u, &f, src);
	munmap(mem, AH_LEN);
	free(img);
}
END_TEST

/*
 * The context is closed while fetches ahead are in flight: they finish later on the source's
 * thread, install nothing, and the context's memory goes with the last of them (ASan and
 * valgrind see a use after free or a leak here).
 */
START_TEST(ahead_close_in_flight)
{
	unsigned char *img = image(AH_LEN), *mem = tu_map_anon(AH_LEN);
	struct uffd_serve_stats st;
	struct uffd_source *src;
	struct fake f;
	int fds0 = tu_count_fds();
	struct uffd *u = ah_open(&f, img, &src, mem, 16);

	ah_walk(u, mem, 0, 1);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.ahead, 16);
	uffd_close(u); /* most of the 16 are still queued in the fake source */
	fake_stop(&f); /* answers them all */
	uffd_source_close(src);
	ck_assert_int_eq(tu_count_fds(), fds0);
	munmap(mem, AH_LEN);
	free(img);
}
END_TEST

static void *read_byte(void *p)
{
	return (void *)(uintptr_t) * (volatile unsigned char *)p;
}

/*
 * Chunks fetched ahead whose piece of the map is replaced while they are in flight (the range
 * unmapped, mapped again and served from another source) install nothing there: the new
 * registration's pages come from its own source. Chunk 0 is faulted on; chunks 1 and 2 are
 * fetched ahead and held at a gate while pages 4-11 are replaced.
 */
START_TEST(ahead_piece_replaced)
{
	size_t len = 12 * PS;
	unsigned char *img = image(len), *img2 = malloc(len);
	char *mem = tu_map_anon(len);
	struct uffd_serve_config cfg = { 0 }, cfg2 = { 0 };
	struct uffd_serve_stats st;
	struct uffd_source *src, *src2;
	struct su_disp d;
	struct gate g;
	pthread_t t;
	void *v;
	struct uffd *u = tu_open(REMOVE_F);

	ck_assert_ptr_nonnull(img2);
	memset(img2, 0x5c, len);
	gate_init(&g, img, len);
	src = gate_source(&g, true);
	cfg.source = src;
	cfg.chunk = 4 * PS;
	cfg.ahead = 2;
	ck_assert_int_eq(uffd_serve(u, mem, len, &cfg), 0);
	su_disp_start(&d, u, 1);
	ck_assert_int_eq(pthread_create(&t, NULL, read_byte, mem), 0);
	gate_wait_entered(&g, 3); /* chunk 0 for the fault, 1 and 2 ahead */
	ck_assert_ptr_eq(mmap(mem + 4 * PS, 8 * PS, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 mem + 4 * PS);
	ck_assert_int_eq(uffd_source_memory(&src2, img2, len), 0);
	cfg2.source = src2;
	cfg2.offset = 4 * PS;
	ck_assert_int_eq(uffd_serve(u, mem + 4 * PS, 8 * PS, &cfg2), 0);
	gate_open(&g);
	ck_assert_int_eq(pthread_join(t, &v), 0);
	ck_assert_int_eq(su_check((unsigned char *)mem, 0, 4 * PS, SEED), -1);
	for (size_t i = 4 * PS; i < len; i += PS / 2)
		ck_assert_msg((unsigned char)mem[i] == 0x5c, "byte %zu is the old image's", i);
	ck_assert_int_eq(su_disp_stop(&d), 0);
	ck_assert_int_eq(uffd_serve_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.ahead, 2);
	uffd_close(u);
	gate_fini(&g);
	uffd_source_close(src);
	uffd_source_close(src2);
	munmap(mem, len);
	free(img);
	free(img2);
}
END_TEST

START_TEST(serve_bad_config)
{
	unsigned char img[4096 * 4];
	struct uffd_serve_config cfg = { 0 };
	struct uffd_source *src;
	char *mem = tu_map_anon(4 * PS);
	struct uffd *u = tu_open(REMOVE_F);
	uint8_t man[32 * 4];

	ck_assert_int_eq(uffd_source_memory(&src, img, sizeof(img)), 0);
	cfg.source = src;
	cfg.chunk = 3 * PS;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.chunk = (uint64_t)128 << 20;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.chunk = 0;
	cfg.reserved[3] = 1;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.reserved[3] = 0;
	cfg.discard = 2;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.discard = 0;
	cfg.modes = UFFDIO_REGISTER_MODE_MINOR;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.modes = 0;
	cfg.offset = 1;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.offset = PS; /* the last page would hold nothing of the source */
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -ENXIO);
	cfg.offset = 0;
	cfg.manifest = man;
	cfg.manifest_chunk = 100;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.manifest = NULL;
	cfg.page_size = 3 * PS;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.page_size = 0;
	cfg.ahead = UFFD_SERVE_MAX_AHEAD + 1;
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL);
	cfg.ahead = 1;
	ck_assert_int_eq(uffd_order_new(&cfg.record), 0);
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), -EINVAL); /* not with a recording */
	uffd_order_free(cfg.record);
	cfg.record = NULL;
	cfg.ahead = 0;
	ck_assert_int_eq(uffd_range_count(u), 0);
	ck_assert_int_eq(uffd_serve(u, mem, 4 * PS, &cfg), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	uffd_close(u);
	uffd_source_close(src);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("serve");
	TCase *tc = tu_tcase("serve", 120, NULL, NULL);
	long old_huge;
	int ret;

	PS = tu_page();
	tu_require_uffd(&(struct uffd_config){ .required = REMOVE_F }, "EVENT_REMOVE");
	tcase_add_loop_test(tc, chunks_threads, 0, (int)(sizeof(chunks) / sizeof(chunks[0])));
	tcase_add_test(tc, eexist_mid_chunk);
	tcase_add_test(tc, discard_zero);
	tcase_add_test(tc, discard_source);
	tcase_add_test(tc, discard_zero_needs_remove);
	/* Huge pages for the hugetlb case, reserved for the whole run (as root). */
	old_huge = tu_hugepages_reserve(8);
	if (old_huge >= 0)
		tcase_add_test(tc, hugetlb_2m);
	else
		printf("hugetlb_2m not run: cannot reserve 8 free 2 MiB huge pages\n");
	tcase_add_test(tc, async_deferred);
	tcase_add_loop_test(tc, one_fetch_per_chunk, 0, 2);
	tcase_add_loop_test(tc, discard_during_fetch, 0, 2);
	tcase_add_test(tc, error_poisons);
	tcase_add_test(tc, error_without_poison);
	tcase_add_test(tc, manifest_mismatch);
	tcase_add_test(tc, map_only_adopted);
	tcase_add_test(tc, serve_bad_config);
	tcase_add_test(tc, ahead_sequential);
	tcase_add_test(tc, ahead_off);
	tcase_add_test(tc, ahead_failure_fetched_on_demand);
	tcase_add_test(tc, ahead_close_in_flight);
	tcase_add_test(tc, ahead_piece_replaced);
	suite_add_tcase(s, tc);
	ret = tu_run(s);
	if (old_huge >= 0)
		tu_hugepages_restore(old_huge);
	return ret;
}
