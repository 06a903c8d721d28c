/* SPDX-License-Identifier: MIT */
/* Dispatch against the real kernel: every event from the operation that makes it, prep/complete. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define EVENTS (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE)
#define MAXREC 64

static size_t PS;

/* What the callbacks saw, in order. */
struct rec {
	enum uffd_event_kind kind;
	void *a, *b;
	size_t len;
	int found_inside; /* for UNMAP: uffd_range_find(start) inside the callback */
	struct uffd *ctx;
};

struct recorder {
	pthread_mutex_t lock;
	struct rec r[MAXREC];
	int n;
	int faults;
	unsigned sleep_ms_unmap; /* on_unmap sleeps this long */
};

static struct recorder R;

static void rec_add(struct rec x)
{
	pthread_mutex_lock(&R.lock);
	if (R.n < MAXREC)
		R.r[R.n++] = x;
	pthread_mutex_unlock(&R.lock);
}

static int cb_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct uffd_range rg;
	struct rec x = { .kind = UFFD_EVT_UNMAP, .a = s->start, .b = s->end, .ctx = u };

	(void)arg;
	x.found_inside = uffd_range_find(u, s->start, &rg) == 0;
	if (R.sleep_ms_unmap)
		usleep(R.sleep_ms_unmap * 1000u);
	rec_add(x);
	return 0;
}

static int cb_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)arg;
	rec_add((struct rec){ .kind = UFFD_EVT_REMOVE, .a = s->start, .b = s->end, .ctx = u });
	return 0;
}

static int cb_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	(void)arg;
	rec_add((struct rec){
		.kind = UFFD_EVT_REMAP, .a = m->from, .b = m->to, .len = m->len, .ctx = u });
	return 0;
}

/* A dispatcher thread: uffd_dispatch in a loop until told to stop. */
struct disp {
	struct uffd *u;
	pthread_t t;
	atomic_bool stop;
	int err;
};

static void *disp_main(void *p)
{
	struct disp *d = p;

	while (!atomic_load(&d->stop)) {
		int r = uffd_dispatch(d->u, 20);

		if (r < 0 && r != -EINTR) {
			d->err = r;
			break;
		}
	}
	return NULL;
}

static void disp_start(struct disp *d, struct uffd *u)
{
	memset(d, 0, sizeof(*d));
	d->u = u;
	ck_assert_int_eq(pthread_create(&d->t, NULL, disp_main, d), 0);
}

static void disp_stop(struct disp *d)
{
	atomic_store(&d->stop, true);
	pthread_join(d->t, NULL);
	ck_assert_int_eq(d->err, 0);
}

static struct uffd *open_events(uint64_t extra)
{
	struct uffd_config cfg = { .required = EVENTS | extra };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_unmap(u, cb_unmap, NULL);
	uffd_on_remove(u, cb_remove, NULL);
	uffd_on_remap(u, cb_remap, NULL);
	return u;
}

static void setup(void)
{
	PS = tu_page();
	memset(&R, 0, sizeof(R));
	pthread_mutex_init(&R.lock, NULL);
}

static char *map_reg(struct uffd *u, size_t pages, void *data)
{
	char *p = tu_map_anon(pages * PS);

	ck_assert_int_eq(uffd_register(u, p, pages * PS, UFFDIO_REGISTER_MODE_MISSING, data), 0);
	return p;
}

START_TEST(unmap_whole)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 8, (void *)0x1234);
	struct disp d;
	struct uffd_stats st;

	disp_start(&d, u);
	ck_assert_int_eq(munmap(p, 8 * PS), 0);
	disp_stop(&d);
	ck_assert_int_eq(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(R.r[0].a, p);
	ck_assert_ptr_eq(R.r[0].b, p + 8 * PS);
	ck_assert_ptr_eq(R.r[0].ctx, u);
	ck_assert_int_eq(R.r[0].found_inside, 0); /* the map was updated before the callback */
	ck_assert_int_eq(uffd_range_count(u), 0);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.unmaps, 1);
	ck_assert_uint_ge(st.reads, 1);
	uffd_close(u);
}
END_TEST

START_TEST(unmap_part_splits)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 8, (void *)0x77);
	struct uffd_range rg;
	struct disp d;

	disp_start(&d, u);
	ck_assert_int_eq(munmap(p + 2 * PS, 3 * PS), 0);
	disp_stop(&d);
	ck_assert_int_eq(R.n, 1);
	ck_assert_ptr_eq(R.r[0].a, p + 2 * PS);
	ck_assert_ptr_eq(R.r[0].b, p + 5 * PS);
	ck_assert_int_eq(uffd_range_count(u), 2);
	ck_assert_int_eq(uffd_range_find(u, p + 6 * PS, &rg), 0);
	ck_assert_ptr_eq(rg.start, p + 5 * PS);
	ck_assert_ptr_eq(rg.end, p + 8 * PS);
	ck_assert_uint_eq(rg.offset, 5 * PS);
	ck_assert_ptr_eq(rg.data, (void *)0x77);
	ck_assert_int_eq(uffd_range_find(u, p + 3 * PS, &rg), -ENOENT);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 8 * PS);
}
END_TEST

START_TEST(unmap_spanning_gaps)
{
	struct uffd *u = open_events(0);
	char *p = tu_map_anon(9 * PS);
	struct disp d;

	/* registered, unregistered, registered VMAs: one UNMAP for the whole request */
	ck_assert_int_eq(uffd_register(u, p, 3 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	ck_assert_int_eq(uffd_register(u, p + 6 * PS, 3 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL),
			 0);
	disp_start(&d, u);
	ck_assert_int_eq(munmap(p, 9 * PS), 0);
	disp_stop(&d);
	ck_assert_int_eq(R.n, 1);
	ck_assert_ptr_eq(R.r[0].a, p);
	ck_assert_ptr_eq(R.r[0].b, p + 9 * PS);
	ck_assert_int_eq(uffd_range_count(u), 0);
	uffd_close(u);
}
END_TEST

START_TEST(map_fixed_over)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 4, NULL);
	struct disp d;
	void *q;

	disp_start(&d, u);
	q = mmap(p, 4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	disp_stop(&d);
	ck_assert_ptr_eq(q, p);
	ck_assert_int_ge(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(R.r[0].a, p);
	ck_assert_int_eq(uffd_range_count(u), 0);
	p[0] = 1;      /* plain memory now: no fault reaches the monitor */
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 4 * PS);
}
END_TEST

START_TEST(mremap_fixed_move)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 4, (void *)0x99);
	char *dst = tu_map_anon(4 * PS);
	struct uffd_range rg;
	struct disp d;
	void *q;

	disp_start(&d, u);
	q = mremap(p, 4 * PS, 4 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	disp_stop(&d);
	ck_assert_ptr_eq(q, dst);
	ck_assert_int_ge(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_REMAP);
	ck_assert_ptr_eq(R.r[0].a, p);
	ck_assert_ptr_eq(R.r[0].b, dst);
	ck_assert_uint_eq(R.r[0].len, 4 * PS);
	ck_assert_int_eq(uffd_range_find(u, dst + PS, &rg), 0);
	ck_assert_ptr_eq(rg.start, dst);
	ck_assert_ptr_eq(rg.data, (void *)0x99);
	ck_assert_uint_eq(rg.offset, 0);
	ck_assert_int_eq(uffd_range_find(u, p, &rg), -ENOENT);
	/* Moved memory stays registered: its first touch is served (default: zero page). */
	disp_start(&d, u);
	ck_assert_int_eq(dst[PS], 0);
	disp_stop(&d);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(dst, 4 * PS);
}
END_TEST

START_TEST(mremap_grow_move)
{
	struct uffd *u = open_events(0);
	char *p = tu_map_anon(5 * PS);
	char *blocker = p + 4 * PS; /* the unregistered fifth page forces the grow to move */
	struct uffd_range rg;
	struct disp d;
	char *q;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	disp_start(&d, u);
	q = mremap(p, 4 * PS, 8 * PS, MREMAP_MAYMOVE, NULL);
	disp_stop(&d);
	ck_assert_ptr_ne(q, MAP_FAILED);
	ck_assert_ptr_ne(q, p);
	ck_assert_int_ge(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_REMAP);
	ck_assert_uint_eq(R.r[0].len, 4 * PS); /* the old length */
	ck_assert_int_eq(uffd_range_find(u, q, &rg), 0);
	ck_assert_ptr_eq(rg.end, q + 4 * PS);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(q, 8 * PS);
	munmap(blocker, PS);
}
END_TEST

START_TEST(mremap_shrink)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 8, NULL);
	struct disp d;
	void *q;

	disp_start(&d, u);
	q = mremap(p, 8 * PS, 5 * PS, 0);
	disp_stop(&d);
	ck_assert_ptr_eq(q, p);
	ck_assert_int_eq(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(R.r[0].a, p + 5 * PS);
	ck_assert_ptr_eq(R.r[0].b, p + 8 * PS);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 5 * PS);
}
END_TEST

START_TEST(mremap_dontunmap)
{
	struct uffd *u = open_events(0);
	char *g = tu_map_anon(6 * PS);
	char *p = g + PS;
	struct disp d;
	char *q;
	int i, n_remap = 0, n_unmap = 0;

	/* Guard pages keep the VMA to exactly these pages. Note: glibc's mremap is variadic and the
	 * kernel checks new_address even without MREMAP_FIXED: always pass it. */
	ck_assert_int_eq(mprotect(g, PS, PROT_NONE), 0);
	ck_assert_int_eq(mprotect(g + 5 * PS, PS, PROT_NONE), 0);
	memset(p, 1, 4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);

	disp_start(&d, u);
	q = mremap(p, 4 * PS, 4 * PS, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
	disp_stop(&d);
	ck_assert_msg(q != MAP_FAILED, "mremap: %s", strerror(errno));
	for (i = 0; i < R.n; i++) {
		n_remap += R.r[i].kind == UFFD_EVT_REMAP;
		n_unmap += R.r[i].kind == UFFD_EVT_UNMAP;
	}
	ck_assert_int_eq(n_remap, 1);
	ck_assert_int_eq(n_unmap, 0);
	/*
	 * The kernel keeps the old range mapped and registered, and registers the new one. The
	 * map shows the move (on_remap sees it so, whatever the features), and takes the old
	 * range back at its first fault: only then is it known not to have been unmapped.
	 */
	ck_assert_int_eq(uffd_range_find(u, p, &(struct uffd_range){ 0 }), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, q + PS, &(struct uffd_range){ 0 }), 0);
	disp_start(&d, u);
	ck_assert_int_eq(p[PS], 0);	/* the old range faults to the monitor again: zero page */
	ck_assert_int_eq(q[2 * PS], 1); /* the pages moved */
	disp_stop(&d);
	ck_assert_int_eq(uffd_range_find(u, p, &(struct uffd_range){ 0 }), 0);
	ck_assert_int_eq(uffd_range_count(u), 2);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(q, 4 * PS);
	munmap(g, 6 * PS);
}
END_TEST

static void madvise_case(int advice, bool shmem)
{
	struct uffd *u = open_events(0);
	char *p = shmem ? tu_map_shmem(8 * PS, true, NULL) : tu_map_anon(8 * PS);
	struct uffd_range rg;
	struct disp d;

	ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	disp_start(&d, u);
	memset(p, 0x5a, 8 * PS); /* served by the default handler, then written */
	ck_assert_int_eq(madvise(p + 2 * PS, 2 * PS, advice), 0);
	disp_stop(&d);
	ck_assert_int_ge(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_REMOVE);
	ck_assert_ptr_eq(R.r[0].a, p + 2 * PS);
	ck_assert_ptr_eq(R.r[0].b, p + 4 * PS);
	/* REMOVE keeps the range registered. */
	ck_assert_int_eq(uffd_range_find(u, p + 2 * PS, &rg), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	if (advice != MADV_FREE) {
		/* The dropped pages fault again as missing: served as zero pages. */
		disp_start(&d, u);
		ck_assert_int_eq(p[2 * PS], 0);
		ck_assert_int_eq(p[PS], 0x5a);
		disp_stop(&d);
	}
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 8 * PS);
}

START_TEST(madvise_dontneed)
{
	madvise_case(MADV_DONTNEED, false);
}
END_TEST

START_TEST(madvise_free)
{
	madvise_case(MADV_FREE, false);
}
END_TEST

START_TEST(madvise_remove_shmem)
{
	madvise_case(MADV_REMOVE, true);
}
END_TEST

/* ---- prep/complete properties ---- */

static int reenter_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	char *other = arg;

	(void)s;
	/* Callbacks run with no lock held: register, look up and unregister from inside one. */
	ck_assert_int_eq(uffd_register(u, other, PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	ck_assert_int_eq(uffd_unregister(u, other, PS), 0);
	ck_assert_int_eq(uffd_range_count(u), 0);
	R.n++;
	return 0;
}

START_TEST(callbacks_reenter)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 2, NULL);
	char *other = tu_map_anon(PS);
	struct disp d;

	uffd_on_unmap(u, reenter_unmap, other);
	disp_start(&d, u);
	ck_assert_int_eq(munmap(p, 2 * PS), 0);
	disp_stop(&d);
	ck_assert_int_eq(R.n, 1);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(other, PS);
}
END_TEST

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(slow_callback_does_not_stall_munmap)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 2, NULL);
	struct disp d;
	double t0, dt;

	R.sleep_ms_unmap = 400;
	disp_start(&d, u);
	usleep(50 * 1000); /* let the dispatcher sleep in poll */
	t0 = now_ms();
	ck_assert_int_eq(munmap(p, 2 * PS), 0);
	dt = now_ms() - t0;
	disp_stop(&d);
	ck_assert_int_eq(R.n, 1);
	ck_assert_msg(dt < 200, "munmap took %.1f ms behind a 400 ms callback", dt);
	uffd_close(u);
}
END_TEST

/* A fault queued before the unmap of its page, read in the same batch: woken, never delivered. */
static atomic_int child_faults;

static int count_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)u;
	(void)pf;
	(void)arg;
	atomic_fetch_add(&child_faults, 1);
	return 0; /* never resolves: if it were called, the thread would stay blocked */
}

static void on_segv(int sig)
{
	(void)sig;
	_exit(100 + atomic_load(&child_faults));
}

static void *toucher(void *p)
{
	volatile char *c = p;

	return (void *)(intptr_t)c[0];
}

static void *unmapper(void *p)
{
	munmap(p, 4 * PS);
	return NULL;
}

START_TEST(fault_in_unmapped_span_woken)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct uffd *u = NULL;
		struct uffd_config cfg = { .required = EVENTS };
		pthread_t t1, t2;
		char *p;

		alarm(20);
		signal(SIGSEGV, on_segv);
		if (uffd_open(&u, &cfg))
			_exit(2);
		uffd_on_pagefault(u, count_fault, NULL);
		p = tu_map_anon(4 * PS);
		if (uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL))
			_exit(3);
		pthread_create(&t1, NULL, toucher, p);
		usleep(100 * 1000); /* the fault is queued */
		pthread_create(&t2, NULL, unmapper, p);
		usleep(100 * 1000); /* the unmap is queued behind it */
		/* One read gets both: prep must wake the fault; the thread then gets SIGSEGV. */
		for (;;)
			if (uffd_dispatch(u, 1000) < 0)
				_exit(4);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "child died of signal %d", WTERMSIG(status));
	ck_assert_int_eq(WEXITSTATUS(status), 100); /* SIGSEGV, and no fault callback ran */
}
END_TEST

/* -EAGAIN from a copy while a REMOVE is pending: redelivered after the event, then it succeeds. */
static atomic_int eagain_calls, eagain_seen, copy_ok;
static char *src_page;

static int copy_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	int r;

	(void)arg;
	atomic_fetch_add(&eagain_calls, 1);
	r = uffd_copy(u, pf->address, src_page, PS, 0);
	if (r == -EAGAIN)
		atomic_fetch_add(&eagain_seen, 1);
	else if (r == 0)
		atomic_fetch_add(&copy_ok, 1);
	return r;
}

static void *dontneed(void *p)
{
	madvise(p, PS, MADV_DONTNEED);
	return NULL;
}

START_TEST(eagain_redelivery)
{
	struct uffd_config cfg = { .required = EVENTS, .batch = 1 };
	struct uffd *u = NULL;
	struct uffd_stats st;
	pthread_t t1, t2;
	char *p;
	void *v;
	int n = 0;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_pagefault(u, copy_fault, NULL);
	uffd_on_remove(u, cb_remove, NULL);
	src_page = tu_map_anon(PS);
	memset(src_page, 0x3c, PS);
	p = map_reg(u, 4, NULL);
	pthread_create(&t1, NULL, toucher, p);
	usleep(100 * 1000);
	pthread_create(&t2, NULL, dontneed, p + 2 * PS);
	usleep(100 * 1000);
	/* batch = 1: the first read gets the fault only; the REMOVE is still pending. */
	/* Bounded by time, not rounds: on a loaded machine the released madvise thread can take
	 * seconds to run again, and until it does every copy meets -EAGAIN (the fault is then
	 * woken and comes back, as the contract says). */
	for (double t0 = now_ms(); atomic_load(&copy_ok) == 0 && now_ms() - t0 < 20000;)
		ck_assert_int_ge(uffd_dispatch(u, 100), 0);
	pthread_join(t1, &v);
	pthread_join(t2, NULL);
	ck_assert_int_eq((int)(intptr_t)v, 0x3c);
	ck_assert_int_ge(atomic_load(&eagain_seen), 1);
	ck_assert_int_eq(atomic_load(&copy_ok), 1);
	ck_assert_int_ge(atomic_load(&eagain_calls), 2);
	/* the REMOVE was delivered too */
	while (R.n == 0 && n++ < 60)
		ck_assert_int_ge(uffd_dispatch(u, 50), 0);
	ck_assert_int_eq(R.n, 1);
	ck_assert_int_eq(R.r[0].kind, UFFD_EVT_REMOVE);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_ge(st.eagain_retries, 1);
	ck_assert_uint_ge(st.faults, 1); /* more if the retries ran out and it came back */
	ck_assert_uint_eq(st.removes, 1);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 4 * PS);
	munmap(src_page, PS);
}
END_TEST

/* ---- defaults ---- */

START_TEST(default_missing_zero)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 16, NULL);
	struct uffd_stats st;
	struct disp d;
	size_t i;
	long sum = 0;

	disp_start(&d, u);
	for (i = 0; i < 16 * PS; i += PS)
		sum += p[i];
	disp_stop(&d);
	ck_assert_int_eq(sum, 0);
	uffd_get_stats(u, &st);
	ck_assert_uint_eq(st.faults, 16);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 16 * PS);
}
END_TEST

START_TEST(default_wp_unprotects)
{
	uint64_t feat;
	struct uffd_config cfg = { .required = UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	struct uffd *u = NULL;
	struct disp d;
	char *p = tu_map_anon(4 * PS);

	ck_assert_int_eq(uffd_probe(&feat, NULL), 0);
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	memset(p, 7, 4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_WP, NULL), 0);
	ck_assert_int_eq(uffd_writeprotect(u, p, 4 * PS, true, 0), 0);
	disp_start(&d, u);
	p[PS] = 9; /* WP fault: the default handler un-protects */
	disp_stop(&d);
	ck_assert_int_eq(p[PS], 9);
	ck_assert_int_eq(p[0], 7);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 4 * PS);
}
END_TEST

START_TEST(default_minor_continue)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_MINOR_SHMEM };
	struct uffd *u = NULL;
	struct disp d;
	int fd;
	char *a = tu_map_shmem(4 * PS, true, &fd);
	char *b = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	ck_assert_ptr_ne(b, MAP_FAILED);
	memset(a, 0x42, 4 * PS); /* page cache populated through the other mapping */
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_int_eq(uffd_register(u, b, 4 * PS, UFFDIO_REGISTER_MODE_MINOR, NULL), 0);
	disp_start(&d, u);
	ck_assert_int_eq(b[2 * PS], 0x42);
	disp_stop(&d);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(a, 4 * PS);
	munmap(b, 4 * PS);
	close(fd);
}
END_TEST

/* ---- threads ---- */

struct resolver {
	struct uffd *u;
	char *base;
	size_t first, count;
	int err;
};

static void *resolve_range(void *p)
{
	struct resolver *r = p;
	size_t i;

	for (i = r->first; i < r->first + r->count; i++) {
		int e = uffd_zeropage(r->u, r->base + i * PS, PS, UFFDIO_ZEROPAGE_MODE_DONTWAKE);

		if (e && e != -EEXIST)
			r->err = e;
	}
	return NULL;
}

START_TEST(resolvers_while_dispatching)
{
	struct uffd *u = open_events(0);
	const size_t n = 512;
	char *p = map_reg(u, n, NULL);
	struct resolver a = { u, p, 0, n / 2, 0 }, b = { u, p, n / 2, n / 2, 0 };
	pthread_t ta, tb;
	struct disp d;
	size_t i;
	long sum = 0;

	disp_start(&d, u);
	pthread_create(&ta, NULL, resolve_range, &a);
	pthread_create(&tb, NULL, resolve_range, &b);
	for (i = 0; i < n; i++) /* races the resolvers; the dispatcher serves what they miss */
		sum += p[((i * 7) % n) * PS];
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	disp_stop(&d);
	ck_assert_int_eq(a.err, 0);
	ck_assert_int_eq(b.err, 0);
	ck_assert_int_eq(sum, 0);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, n * PS);
}
END_TEST

/* ---- argument checks ---- */

START_TEST(bad_args)
{
	struct uffd *u = open_events(0);
	struct uffd_event ev[2];

	ck_assert_int_eq(uffd_dispatch(NULL, 0), -EINVAL);
	ck_assert_int_eq(uffd_dispatch(u, -2), -EINVAL);
	ck_assert_int_eq(uffd_read_events(NULL, ev, 2, 0), -EINVAL);
	ck_assert_int_eq(uffd_read_events(u, NULL, 2, 0), -EINVAL);
	ck_assert_int_eq(uffd_read_events(u, ev, 0, 0), -EINVAL);
	ck_assert_int_eq(uffd_read_events(u, ev, 2, -5), -EINVAL);
	ck_assert_int_eq(uffd_dispatch(u, 0), 0);
	ck_assert_int_eq(uffd_read_events(u, ev, 2, 0), 0);
	ck_assert_int_eq(uffd_on_unmap(NULL, cb_unmap, NULL), -EINVAL);
	ck_assert_int_eq(uffd_on_pagefault(NULL, NULL, NULL), -EINVAL);
	uffd_close(u);
}
END_TEST

/* ---- the pull interface ---- */

START_TEST(pull_read_events)
{
	struct uffd *u = open_events(0);
	char *p = map_reg(u, 4, (void *)0x5);
	struct uffd_event ev[8];
	pthread_t t;
	int n;

	pthread_create(&t, NULL, toucher, p + PS);
	n = uffd_read_events(u, ev, 8, 2000);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(ev[0].kind, UFFD_EVT_PAGEFAULT);
	ck_assert_ptr_eq(ev[0].ctx, u);
	ck_assert_ptr_eq(ev[0].pagefault.address, p + PS);
	ck_assert_ptr_eq(ev[0].pagefault.range.data, (void *)0x5);
	ck_assert_ptr_eq(ev[0].pagefault.range.start, p);
	ck_assert_int_eq(uffd_zeropage(u, p + PS, PS, 0), 0);
	pthread_join(t, NULL);
	uffd_close(u); /* first: an unmap under an unread context blocks */
	munmap(p, 4 * PS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dispatch");
	TCase *ev = tu_tcase("events", 30, setup, NULL),
	      *pc = tu_tcase("prep_complete", 30, setup, NULL),
	      *df = tu_tcase("defaults", 30, setup, NULL),
	      *th = tu_tcase("threads", 60, setup, NULL);
	struct uffd_config cfg = { .required = EVENTS };

	tu_require_uffd(&cfg, "UNMAP/REMAP/REMOVE events");

	tcase_add_test(ev, unmap_whole);
	tcase_add_test(ev, unmap_part_splits);
	tcase_add_test(ev, unmap_spanning_gaps);
	tcase_add_test(ev, map_fixed_over);
	tcase_add_test(ev, mremap_fixed_move);
	tcase_add_test(ev, mremap_grow_move);
	tcase_add_test(ev, mremap_shrink);
	tcase_add_test(ev, mremap_dontunmap);
	tcase_add_test(ev, madvise_dontneed);
	tcase_add_test(ev, madvise_free);
	tcase_add_test(ev, madvise_remove_shmem);
	tcase_add_test(pc, callbacks_reenter);
	tcase_add_test(pc, slow_callback_does_not_stall_munmap);
	tcase_add_test(pc, fault_in_unmapped_span_woken);
	tcase_add_test(pc, eagain_redelivery);
	tcase_add_test(pc, bad_args);
	tcase_add_test(pc, pull_read_events);
	tcase_add_test(df, default_missing_zero);
	tcase_add_test(df, default_wp_unprotects);
	tcase_add_test(df, default_minor_continue);
	tcase_add_test(th, resolvers_while_dispatching);
	suite_add_tcase(s, ev);
	suite_add_tcase(s, pc);
	suite_add_tcase(s, df);
	suite_add_tcase(s, th);
	return tu_run(s);
}
