/* SPDX-License-Identifier: MIT */
/*
 * Serving from many threads (0.2) against the real kernel: several dispatchers on one context,
 * kernel order of notifications, causality of REMOVE and the faults after it, re-entry, many
 * runners on one monitor, the pool, uffd_monitor_remove(), uffd_dispatch()'s return value, and
 * pthread cancellation around every place the library waits.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define EVENTS                                                                           \
	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | \
	 UFFD_FEATURE_EVENT_REMOVE)
#define NOFORK_EVENTS \
	(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE)
#define MISSING UFFDIO_REGISTER_MODE_MISSING

static size_t PS;

static void setup(void)
{
	PS = tu_page();
}

/*
 * A sleep that no sanitizer intercepts: while a thread of this process is inside fork() (the
 * kernel holds it until its FORK event is read), an intercepted call may wait on a lock the
 * sanitizer's fork() holds.
 */
static void raw_sleep_us(unsigned us)
{
	struct timespec ts = { us / 1000000u, (long)(us % 1000000u) * 1000L };

	while (syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, &ts) == -1 && errno == EINTR)
		;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Failures seen on threads other than the test's own: a check there cannot fail the test (and
 * must not allocate while another thread forks), so the first one is kept and asserted later.
 */
static atomic_int g_nerr;
static _Atomic(const char *) g_err_what;
static _Atomic uintptr_t g_err_a, g_err_b;

static void fail_later(const char *what, uintptr_t a, uintptr_t b)
{
	if (atomic_fetch_add(&g_nerr, 1) == 0) {
		atomic_store(&g_err_a, a);
		atomic_store(&g_err_b, b);
		atomic_store(&g_err_what, what);
	}
}

static void errors_reset(void)
{
	atomic_store(&g_nerr, 0);
	atomic_store(&g_err_what, NULL);
}

static void assert_no_errors(void)
{
	const char *w = atomic_load(&g_err_what);

	ck_assert_msg(atomic_load(&g_nerr) == 0,
		      "%d failure(s) on other threads, first: %s (%#lx, %#lx)",
		      atomic_load(&g_nerr), w ? w : "?", (unsigned long)atomic_load(&g_err_a),
		      (unsigned long)atomic_load(&g_err_b));
}

/* The contents a registration holds: 8-byte words, a function of its tag and the byte offset. */
static uint64_t mix(uint64_t tag, uint64_t off)
{
	uint64_t x = tag * 0x9e3779b97f4a7c15ull ^ (off + 0x632be59bd9b4e019ull);

	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return x | 1; /* never a zero word: a zero page never passes for served contents */
}

static void fill_page(void *page, uintptr_t tag, size_t off)
{
	uint64_t *w = page;
	size_t k;

	for (k = 0; k < PS / 8; k++)
		w[k] = mix(tag, off + k * 8);
}

/* Whether @page holds tag's contents at @off (or zeros for tag 0), byte 0 aside when @skip0. */
static bool page_is(const void *page, uintptr_t tag, size_t off, bool skip0)
{
	const uint64_t *w = page;
	size_t k;

	for (k = 0; k < PS / 8; k++) {
		uint64_t want = tag ? mix(tag, off + k * 8) : 0, got = w[k];

		if (k == 0 && skip0) {
			want &= ~(uint64_t)0xff;
			got &= ~(uint64_t)0xff;
		}
		if (got != want)
			return false;
	}
	return true;
}

/* Serve @pf with its registration's contents (zeros if @zero): the resolving call's result. */
static int serve(struct uffd *u, const struct uffd_pagefault *pf, bool zero)
{
	uintptr_t page = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);
	uint64_t tbuf[PS / 8]; /* on the stack: a callback allocates nothing */

	if (zero || !pf->range.start)
		memset(tbuf, 0, PS);
	else
		fill_page(tbuf, (uintptr_t)pf->range.data,
			  pf->range.offset + (page - (uintptr_t)pf->range.start));
	return uffd_copy(u, (void *)page, tbuf, PS, 0);
}

static struct uffd *open_ctx(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	return u;
}

/* Wait up to @ms for *@flag to become non-zero. */
static bool wait_flag(atomic_int *flag, unsigned ms)
{
	double end = now_s() + ms / 1000.0;

	while (!atomic_load(flag)) {
		if (now_s() > end)
			return false;
		raw_sleep_us(200);
	}
	return true;
}

static bool wait_bool(_Atomic bool *flag, unsigned ms)
{
	double end = now_s() + ms / 1000.0;

	while (!atomic_load(flag)) {
		if (now_s() > end)
			return false;
		raw_sleep_us(200);
	}
	return true;
}

/* Join @t within @ms: true if it ended (its result in *@ret). */
static bool join_within(pthread_t t, unsigned ms, void **ret)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return pthread_timedjoin_np(t, ret, &ts) == 0;
}

/* ---- a toucher of many pages: one thread reading pages in order and checking them ---- */

struct sweeper {
	pthread_t t;
	char *base;
	size_t first, n; /* pages [first, first + n) */
	size_t step;	 /* every step-th page */
	uintptr_t tag;	 /* what they must hold; 0: zeros */
	atomic_int done;
	atomic_int bad;
};

static void *sweep_fn(void *arg)
{
	struct sweeper *s = arg;
	size_t i;

	for (i = s->first; i < s->first + s->n; i += s->step) {
		volatile char *p = s->base + i * PS;

		(void)*p;
		if (!page_is(s->base + i * PS, s->tag, i * PS, false))
			atomic_fetch_add(&s->bad, 1);
	}
	atomic_store(&s->done, 1);
	return NULL;
}

static void sweep_start(struct sweeper *s, char *base, size_t first, size_t n, size_t step,
			uintptr_t tag)
{
	s->base = base;
	s->first = first;
	s->n = n;
	s->step = step ? step : 1;
	s->tag = tag;
	atomic_store(&s->done, 0);
	atomic_store(&s->bad, 0);
	ck_assert_int_eq(pthread_create(&s->t, NULL, sweep_fn, s), 0);
}

/* ================================================================================================
 * 1. Several dispatchers on one context under a workload of faults and layout changes.
 * ============================================================================================== */

#define P1_WORKERS 4
#define P1_DISPATCHERS 4
#define P1_R 16 /* pages per region */
#define P1_MAXOPS 3000
#define P1_ARENAS 16 /* arenas a worker may go through (see p1_unmap_op) */
#define P1_MAXLOG (2 * P1_MAXOPS + 4)
#define P1_MAXNOTES (P1_WORKERS * P1_MAXLOG)
#define P1_SECONDS 1.5

/* One layout operation as the workload did it, with tickets taken before and after it. */
struct p1_op {
	int kind; /* enum uffd_event_kind */
	uintptr_t a, b;
	size_t len;
	uint64_t t0, t1;
};

/* One notification as a callback saw it. */
struct p1_note {
	int kind;
	uintptr_t a, b;
	size_t len;
};

enum { PG_NEW, PG_ZERO, PG_PRESENT };

struct p1_worker {
	pthread_t t;
	int id;
	char *arena;		 /* guard page, two halves of P1_R pages, guard page */
	char *arenas[P1_ARENAS]; /* every arena it used, the current one last */
	int narenas;
	int half;
	uintptr_t tag;
	unsigned gen;
	bool nomove, dead;
	unsigned seed;
	struct p1_op log[P1_MAXLOG];
	int nlog;
	/* The model: where each page's contents come from, and what byte 0 was written to. */
	unsigned char pstate[P1_R];
	uintptr_t porig[P1_R]; /* the tag it was served from, 0 for zeros */
	int pbyte0[P1_R];      /* -1: not written */
	unsigned long populated;
	unsigned long ops, forks;
	/* Populations the model expects, per arena page: compared with P1.pcopies page by page. */
	unsigned pop[P1_ARENAS][2 * P1_R];
};

static struct p1 {
	struct uffd *u;
	atomic_int stop;
	_Atomic uint64_t ticket;
	struct p1_worker w[P1_WORKERS];
	struct p1_note notes[P1_MAXNOTES];
	atomic_int nnotes;
	atomic_int in_note, overlaps, note_kinds[256];
	atomic_ulong calls, copies;
	/* Discarded pages, per worker arena page: set by on_remove, moved by on_remap, cleared by
	 * on_unmap, in kernel order (notifications run one at a time); read by fault callbacks. */
	_Atomic unsigned char disc[P1_WORKERS][P1_ARENAS][2 * P1_R];
	/* Successful copies per arena page, with the flags and the thread of the last fault. */
	atomic_uint pcopies[P1_WORKERS][P1_ARENAS][2 * P1_R];
	atomic_int disp_err;
} P1;

static char *p1_half(const struct p1_worker *w, int half)
{
	return w->arena + PS + (size_t)half * P1_R * PS;
}

/* A new arena for @w, its region mapped over the first half: false if none could be had. */
static bool p1_new_arena(struct p1_worker *w)
{
	char *a;

	if (w->narenas == P1_ARENAS)
		return false;
	a = mmap(NULL, (2 * P1_R + 2) * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return false;
	w->arena = a;
	w->half = 0;
	if (mmap(p1_half(w, 0), P1_R * PS, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p1_half(w, 0)) {
		munmap(a, (2 * P1_R + 2) * PS);
		return false;
	}
	/* Published last: the callbacks look addresses up in the arenas. */
	__atomic_store_n(&w->arenas[w->narenas], a, __ATOMIC_RELEASE);
	w->narenas++;
	return true;
}

/* The worker, and its arena and page there, of @a; -1 if none. Arenas are never unmapped
 * before the end, so no two share an address. */
static int p1_owner2(uintptr_t a, int *arena, size_t *idx)
{
	int i, k;

	for (i = 0; i < P1_WORKERS; i++) {
		for (k = 0; k < P1_ARENAS; k++) {
			char *ar = __atomic_load_n(&P1.w[i].arenas[k], __ATOMIC_ACQUIRE);
			uintptr_t s = (uintptr_t)ar + PS;

			if (!ar)
				break;
			if (a >= s && a < s + 2 * P1_R * PS) {
				*arena = k;
				*idx = (a - s) / PS;
				return i;
			}
		}
	}
	return -1;
}

static int p1_owner(uintptr_t a, size_t *idx)
{
	int k;

	return p1_owner2(a, &k, idx);
}

static _Atomic unsigned char *p1_disc(uintptr_t a)
{
	size_t idx;
	int k, w = p1_owner2(a, &k, &idx);

	return w < 0 ? NULL : &P1.disc[w][k][idx];
}

static void p1_disc_set(uintptr_t s, uintptr_t e, unsigned char v)
{
	uintptr_t a;

	for (a = s; a < e; a += PS) {
		_Atomic unsigned char *d = p1_disc(a);

		if (d)
			atomic_store(d, v);
	}
}

static int p1_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	uintptr_t a = (uintptr_t)pf->address;
	_Atomic unsigned char *d = p1_disc(a);
	int r;

	(void)arg;
	atomic_fetch_add(&P1.calls, 1);
	if (!d || !pf->range.start)
		fail_later("a fault outside every registered region", a,
			   (uintptr_t)pf->range.start);
	r = serve(u, pf, d && atomic_load(d));
	if (r == 0) {
		size_t idx;
		int k, w = p1_owner2(a, &k, &idx);

		atomic_fetch_add(&P1.copies, 1);
		if (w >= 0)
			atomic_fetch_add(&P1.pcopies[w][k][idx], 1);
	}
	return r;
}

static void p1_note_enter(int kind, uintptr_t a, uintptr_t b, size_t len)
{
	int i;

	if (atomic_fetch_add(&P1.in_note, 1) != 0)
		atomic_fetch_add(&P1.overlaps, 1);
	i = atomic_fetch_add(&P1.nnotes, 1);
	if (i < P1_MAXNOTES)
		P1.notes[i] = (struct p1_note){ kind, a, b, len };
	atomic_fetch_add(&P1.note_kinds[kind & 0xff], 1);
}

static void p1_note_leave(void)
{
	/* Stay a little, now and then, so that an overlap has a window to show in. */
	if ((atomic_load(&P1.nnotes) & 3) == 0)
		raw_sleep_us(50);
	atomic_fetch_sub(&P1.in_note, 1);
}

static int p1_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)arg;
	p1_note_enter(UFFD_EVT_UNMAP, (uintptr_t)s->start, (uintptr_t)s->end, 0);
	p1_disc_set((uintptr_t)s->start, (uintptr_t)s->end, 0);
	p1_note_leave();
	return 0;
}

static int p1_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)arg;
	p1_note_enter(UFFD_EVT_REMOVE, (uintptr_t)s->start, (uintptr_t)s->end, 0);
	p1_disc_set((uintptr_t)s->start, (uintptr_t)s->end, 1);
	p1_note_leave();
	return 0;
}

static int p1_remap(struct uffd *u, const struct uffd_remap *rm, void *arg)
{
	uintptr_t f = (uintptr_t)rm->from, t = (uintptr_t)rm->to;
	size_t off;

	(void)u;
	(void)arg;
	p1_note_enter(UFFD_EVT_REMAP, f, t, rm->len);
	for (off = 0; off < rm->len; off += PS) {
		_Atomic unsigned char *fd = p1_disc(f + off), *td = p1_disc(t + off);

		if (fd && td) {
			atomic_store(td, atomic_load(fd));
			atomic_store(fd, 0);
		}
	}
	p1_note_leave();
	return 0;
}

static int p1_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)parent;
	(void)child;
	(void)arg;
	p1_note_enter(UFFD_EVT_FORK, 0, 0, 0);
	p1_note_leave();
	return -ECANCELED; /* the child runs unmonitored: it only exits */
}

static void *p1_dispatcher(void *arg)
{
	(void)arg;
	while (!atomic_load(&P1.stop)) {
		int r = uffd_dispatch(P1.u, 20);

		if (r < 0 && r != -EINTR && !atomic_load(&P1.disp_err))
			atomic_store(&P1.disp_err, r);
	}
	return NULL;
}

static unsigned p1_rand(struct p1_worker *w)
{
	w->seed = w->seed * 1103515245u + 12345u;
	return w->seed >> 8;
}

static void p1_log(struct p1_worker *w, int kind, uintptr_t a, uintptr_t b, size_t len, uint64_t t0,
		   uint64_t t1)
{
	if (w->nlog < P1_MAXLOG)
		w->log[w->nlog++] = (struct p1_op){ kind, a, b, len, t0, t1 };
}

static uint64_t p1_ticket(void)
{
	return atomic_fetch_add(&P1.ticket, 1);
}

/* A fresh registration over the current half. */
static void p1_register(struct p1_worker *w)
{
	char *reg = p1_half(w, w->half);
	int i, r;

	w->tag = (uintptr_t)(w->id + 1) << 24 | ++w->gen;
	r = uffd_register(P1.u, reg, P1_R * PS, MISSING, (void *)w->tag);
	if (r)
		fail_later("uffd_register", (uintptr_t)reg, (uintptr_t)-r);
	for (i = 0; i < P1_R; i++) {
		w->pstate[i] = PG_NEW;
		w->pbyte0[i] = -1;
	}
}

static void p1_touch(struct p1_worker *w)
{
	int i = (int)(p1_rand(w) % P1_R);
	volatile unsigned char *p = (unsigned char *)p1_half(w, w->half) + (size_t)i * PS;
	bool write = p1_rand(w) & 1;
	unsigned char v = (unsigned char)p1_rand(w);
	uintptr_t want;

	if (w->pstate[i] != PG_PRESENT) {
		w->porig[i] = w->pstate[i] == PG_ZERO ? 0 : w->tag;
		w->pstate[i] = PG_PRESENT;
		w->populated++;
		w->pop[w->narenas - 1][(size_t)w->half * P1_R + (size_t)i]++;
	}
	if (write) {
		*p = v;
		w->pbyte0[i] = v;
	} else {
		(void)*p;
	}
	want = w->porig[i];
	if (!page_is((const void *)p, want, (size_t)i * PS, w->pbyte0[i] >= 0) ||
	    (w->pbyte0[i] >= 0 && *p != (unsigned char)w->pbyte0[i]))
		fail_later("a page does not hold what was served", (uintptr_t)p, want);
}

static void p1_discard(struct p1_worker *w)
{
	int i = (int)(p1_rand(w) % P1_R), n = 1 + (int)(p1_rand(w) % (unsigned)(P1_R - i)), k;
	char *s = p1_half(w, w->half) + (size_t)i * PS;
	uint64_t t0 = p1_ticket(), t1;

	if (madvise(s, (size_t)n * PS, MADV_DONTNEED))
		fail_later("madvise", (uintptr_t)s, (uintptr_t)errno);
	t1 = p1_ticket();
	p1_log(w, UFFD_EVT_REMOVE, (uintptr_t)s, (uintptr_t)(s + (size_t)n * PS), 0, t0, t1);
	for (k = i; k < i + n; k++) {
		w->pstate[k] = PG_ZERO;
		w->pbyte0[k] = -1;
	}
}

static void p1_move(struct p1_worker *w)
{
	char *from = p1_half(w, w->half), *to = p1_half(w, !w->half);
	uint64_t t0 = p1_ticket(), t1;
	void *r = mremap(from, P1_R * PS, P1_R * PS, MREMAP_MAYMOVE | MREMAP_FIXED, to);

	t1 = p1_ticket();
	if (r != to) {
		fail_later("mremap", (uintptr_t)from, (uintptr_t)errno);
		w->dead = true;
		return;
	}
	/* mremap sends REMAP, then UNMAP of the old range (kernel.md). */
	p1_log(w, UFFD_EVT_REMAP, (uintptr_t)from, (uintptr_t)to, P1_R * PS, t0, t1);
	p1_log(w, UFFD_EVT_UNMAP, (uintptr_t)from, (uintptr_t)(from + P1_R * PS), 0, t0, t1);
	w->half = !w->half;
	/* Hold the old half again: something else mapped there would be clobbered by a later move. */
	if (mmap(from, P1_R * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
		 0) != from)
		w->nomove = true;
}

static void p1_unmap_op(struct p1_worker *w)
{
	char *reg = p1_half(w, w->half);
	uint64_t t0 = p1_ticket(), t1;

	if (munmap(reg, P1_R * PS))
		fail_later("munmap", (uintptr_t)reg, (uintptr_t)errno);
	t1 = p1_ticket();
	p1_log(w, UFFD_EVT_UNMAP, (uintptr_t)reg, (uintptr_t)(reg + P1_R * PS), 0, t0, t1);
	/*
	 * Map it again in the same place, unless something took the hole meanwhile (the library
	 * maps its own memory too): then go on in a new arena.
	 */
	if (mmap(reg, P1_R * PS, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != reg &&
	    !p1_new_arena(w)) {
		w->dead = true;
		return;
	}
	p1_register(w);
}

static void p1_fork_op(struct p1_worker *w)
{
	uint64_t t0 = p1_ticket(), t1;
	pid_t pid = fork();

	if (pid == 0)
		syscall(SYS_exit_group, 0); /* nothing of the parent's state is safe to use here */
	t1 = p1_ticket();
	if (pid < 0) {
		fail_later("fork", 0, (uintptr_t)errno);
		return;
	}
	p1_log(w, UFFD_EVT_FORK, 0, 0, 0, t0, t1);
	w->forks++;
	if (tu_wait_child(pid, 10000) != 0)
		fail_later("a fork child did not exit 0", (uintptr_t)pid, 0);
}

static void *p1_worker_fn(void *arg)
{
	struct p1_worker *w = arg;
	double end = now_s() + P1_SECONDS;

	while (!w->dead && w->ops < P1_MAXOPS && now_s() < end) {
		unsigned r = p1_rand(w) % 100;

		w->ops++;
		if (r < 55)
			p1_touch(w);
		else if (r < 70)
			p1_discard(w);
		else if (r < 82 && !w->nomove)
			p1_move(w);
		else if (r < 94)
			p1_unmap_op(w);
		else if (w->id == 0 && !UNDER_TSAN)
			p1_fork_op(w); /* one thread forks: FORK carries no address to tell whose */
		else
			p1_touch(w);
	}
	return NULL;
}

/* Name the pages whose copies differ from the model's populations, with the owner's last
 * operations, when the totals differ. */
static void p1_report_copies(void)
{
	int i, k, j;
	size_t x;

	for (i = 0; i < P1_WORKERS; i++)
		for (k = 0; k < P1.w[i].narenas; k++)
			for (x = 0; x < 2 * P1_R; x++) {
				unsigned c = atomic_load(&P1.pcopies[i][k][x]);

				if (c == P1.w[i].pop[k][x])
					continue;
				fprintf(stderr,
					"parallel: worker %d arena %d page %zu (%#lx): %u copies, "
					"%u populations in the model; %d arenas, ends in half %d\n",
					i, k, x, (unsigned long)(P1.w[i].arenas[k] + PS + x * PS),
					c, P1.w[i].pop[k][x], P1.w[i].narenas, P1.w[i].half);
				for (j = 0; j < P1.w[i].nlog; j++) {
					const struct p1_op *o = &P1.w[i].log[j];
					uintptr_t pa = (uintptr_t)P1.w[i].arenas[k] + PS + x * PS;
					bool hit = o->len ? (pa >= o->a && pa < o->a + o->len) ||
								    (pa >= o->b &&
								     pa < o->b + o->len) :
							    pa >= o->a && pa < o->b;

					if (hit)
						fprintf(stderr, "  op %d: kind %#x %#lx-%#lx/%zu\n",
							j, o->kind, (unsigned long)o->a,
							(unsigned long)o->b, o->len);
				}
			}
}

START_TEST(parallel_dispatch_kernel_order)
{
	pthread_t d[P1_DISPATCHERS];
	struct uffd_stats st;
	uint64_t nkind[256] = { 0 };
	unsigned long populated = 0;
	int i, j, n, next[P1_WORKERS] = { 0 };
	uint64_t max_t0 = 0;
	bool any_fork = false;

	memset(&P1, 0, sizeof(P1));
	errors_reset();
	P1.u = open_ctx(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			UFFD_FEATURE_EVENT_REMOVE | (UNDER_TSAN ? 0 : UFFD_FEATURE_EVENT_FORK));
	ck_assert_int_eq(uffd_on_pagefault(P1.u, p1_fault, NULL), 0);
	ck_assert_int_eq(uffd_on_unmap(P1.u, p1_unmap, NULL), 0);
	ck_assert_int_eq(uffd_on_remove(P1.u, p1_remove, NULL), 0);
	ck_assert_int_eq(uffd_on_remap(P1.u, p1_remap, NULL), 0);
	ck_assert_int_eq(uffd_on_fork(P1.u, p1_fork, NULL), 0);
	for (i = 0; i < P1_WORKERS; i++) {
		struct p1_worker *w = &P1.w[i];

		w->id = i;
		w->seed = 0x1234567u * (unsigned)(i + 1);
		ck_assert(p1_new_arena(w));
		p1_register(w);
	}
	for (i = 0; i < P1_DISPATCHERS; i++)
		ck_assert_int_eq(pthread_create(&d[i], NULL, p1_dispatcher, NULL), 0);
	for (i = 0; i < P1_WORKERS; i++)
		ck_assert_int_eq(pthread_create(&P1.w[i].t, NULL, p1_worker_fn, &P1.w[i]), 0);
	for (i = 0; i < P1_WORKERS; i++)
		ck_assert_int_eq(pthread_join(P1.w[i].t, NULL), 0);
	atomic_store(&P1.stop, 1);
	for (i = 0; i < P1_DISPATCHERS; i++)
		ck_assert_int_eq(pthread_join(d[i], NULL), 0);
	/* Every event was read before its operation returned; deliver what is still queued. */
	while ((n = uffd_dispatch(P1.u, 0)) > 0)
		;
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(atomic_load(&P1.disp_err), 0);
	assert_no_errors();
	ck_assert_int_eq(atomic_load(&P1.overlaps), 0);
	n = atomic_load(&P1.nnotes);
	ck_assert_int_le(n, P1_MAXNOTES);

	/* Each worker's notifications, in its own order, exactly; and across workers, none
	 * delivered after one whose operation started only once the other's had returned. */
	for (j = 0; j < n; j++) {
		const struct p1_note *x = &P1.notes[j];
		const struct p1_op *o;
		size_t idx;
		int w = x->kind == UFFD_EVT_FORK ? 0 : p1_owner(x->a, &idx);

		ck_assert_msg(w >= 0, "notification %d (kind %#x at %#lx) in no arena", j, x->kind,
			      (unsigned long)x->a);
		ck_assert_msg(next[w] < P1.w[w].nlog, "worker %d: notification %d is one too many",
			      w, j);
		o = &P1.w[w].log[next[w]++];
		ck_assert_msg(
			o->kind == x->kind && o->a == x->a && o->b == x->b && o->len == x->len,
			"worker %d op %d: did kind %#x %#lx-%#lx/%zu, told kind %#x %#lx-%#lx/%zu",
			w, next[w] - 1, o->kind, (unsigned long)o->a, (unsigned long)o->b, o->len,
			x->kind, (unsigned long)x->a, (unsigned long)x->b, x->len);
		ck_assert_msg(o->t1 > max_t0,
			      "notification %d delivered after one whose operation began after it "
			      "returned (ticket %llu < %llu)",
			      j, (unsigned long long)o->t1, (unsigned long long)max_t0);
		if (o->t0 > max_t0)
			max_t0 = o->t0;
	}
	for (i = 0; i < P1_WORKERS; i++) {
		ck_assert_msg(next[i] == P1.w[i].nlog, "worker %d: %d of %d operations notified", i,
			      next[i], P1.w[i].nlog);
		for (j = 0; j < P1.w[i].nlog; j++)
			nkind[P1.w[i].log[j].kind]++;
		populated += P1.w[i].populated;
		any_fork |= P1.w[i].forks > 0;
		ck_assert_msg(P1.w[i].ops > 20, "worker %d did only %lu operations", i,
			      P1.w[i].ops);
	}

	/* Exact counters. */
	ck_assert_int_eq(uffd_get_stats(P1.u, &st), 0);
	ck_assert_uint_eq(st.unmaps, nkind[UFFD_EVT_UNMAP]);
	ck_assert_uint_eq(st.removes, nkind[UFFD_EVT_REMOVE]);
	ck_assert_uint_eq(st.remaps, nkind[UFFD_EVT_REMAP]);
	ck_assert_uint_eq(st.forks, nkind[UFFD_EVT_FORK]);
	ck_assert_uint_eq(st.unknown, 0);
	ck_assert_uint_eq(st.messages, st.faults + st.unmaps + st.removes + st.remaps + st.forks);
	if (atomic_load(&P1.copies) != populated)
		p1_report_copies();
	ck_assert_uint_eq(atomic_load(&P1.copies), populated);
	ck_assert_uint_eq(st.faults, atomic_load(&P1.copies) + st.faults_woken);
	ck_assert_uint_eq(atomic_load(&P1.calls), st.faults + st.eagain_retries);
	ck_assert(st.unmaps > 0 && st.removes > 0 && st.remaps > 0 && populated > 0);
	if (!UNDER_TSAN)
		ck_assert(any_fork);
	printf("parallel: %d notifications, %lu pages served, %llu faults, %llu woken, %llu "
	       "EAGAIN retries, %llu reads\n",
	       n, populated, (unsigned long long)st.faults, (unsigned long long)st.faults_woken,
	       (unsigned long long)st.eagain_retries, (unsigned long long)st.reads);

	uffd_close(P1.u);
	for (i = 0; i < P1_WORKERS; i++)
		for (j = 0; j < P1.w[i].narenas; j++)
			munmap(P1.w[i].arenas[j], (2 * P1_R + 2) * PS);
}
END_TEST

/* ================================================================================================
 * 2. Causality: a fault read after a REMOVE waits for on_remove, even behind a blocked UNMAP.
 * ============================================================================================== */

#define C_R 4

static struct causal {
	struct uffd *u;
	sem_t release;
	atomic_int stop, in_unmap, remove_done, fault_seen;
	_Atomic uint64_t clock, t_remove, t_fault;
	atomic_int discarded; /* on_remove ran for R */
	char *U, *R;
	uintptr_t tag;
	atomic_int disp_err;
} C;

static int c_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	bool inR = (char *)pf->address >= C.R && (char *)pf->address < C.R + C_R * PS;

	(void)arg;
	if (inR && atomic_load(&C.discarded)) {
		atomic_store(&C.t_fault, atomic_fetch_add(&C.clock, 1));
		atomic_store(&C.fault_seen, 1);
	}
	/* A lazy loader serves zeros where on_remove said the memory was discarded. */
	return serve(u, pf, inR && atomic_load(&C.remove_done));
}

static int c_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)s;
	(void)arg;
	atomic_store(&C.in_unmap, 1);
	while (sem_wait(&C.release) && errno == EINTR)
		;
	return 0;
}

static int c_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)arg;
	if (s->start == C.R) {
		atomic_store(&C.t_remove, atomic_fetch_add(&C.clock, 1));
		atomic_store(&C.remove_done, 1);
	}
	return 0;
}

static void *c_dispatcher(void *arg)
{
	(void)arg;
	while (!atomic_load(&C.stop)) {
		int r = uffd_dispatch(C.u, 20);

		if (r < 0 && r != -EINTR)
			atomic_store(&C.disp_err, r);
	}
	return NULL;
}

static void *c_unmapper(void *arg)
{
	(void)arg;
	munmap(C.U, PS);
	return NULL;
}

/* Y: discard R, then touch it: the fault is read after the REMOVE. */
static void *c_discarder(void *arg)
{
	struct sweeper *s = arg;

	madvise(C.R, C_R * PS, MADV_DONTNEED);
	/* on_remove runs before the fault: only then do faults in R count as "after". */
	atomic_store(&C.discarded, 1);
	sweep_fn(s);
	return NULL;
}

START_TEST(remove_before_fault_behind_blocked_unmap)
{
	pthread_t d[2], x, y;
	struct sweeper pop, s;
	int i;

	memset(&C, 0, sizeof(C));
	atomic_store(&C.clock, 1);
	ck_assert_int_eq(sem_init(&C.release, 0, 0), 0);
	C.u = open_ctx(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE);
	ck_assert_int_eq(uffd_on_pagefault(C.u, c_fault, NULL), 0);
	ck_assert_int_eq(uffd_on_unmap(C.u, c_unmap, NULL), 0);
	ck_assert_int_eq(uffd_on_remove(C.u, c_remove, NULL), 0);
	C.U = tu_map_anon(PS);
	C.R = tu_map_anon(C_R * PS);
	C.tag = 0x77;
	ck_assert_int_eq(uffd_register(C.u, C.U, PS, MISSING, (void *)1), 0);
	ck_assert_int_eq(uffd_register(C.u, C.R, C_R * PS, MISSING, (void *)C.tag), 0);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&d[i], NULL, c_dispatcher, NULL), 0);
	/* R populated, with its registration's contents. */
	sweep_start(&pop, C.R, 0, C_R, 1, C.tag);
	ck_assert_int_eq(pthread_join(pop.t, NULL), 0);
	ck_assert_int_eq(atomic_load(&pop.bad), 0);

	/* X: munmap(U); its on_unmap blocks one dispatcher. */
	ck_assert_int_eq(pthread_create(&x, NULL, c_unmapper, NULL), 0);
	ck_assert(wait_flag(&C.in_unmap, 5000));
	ck_assert_int_eq(pthread_join(x, NULL), 0); /* munmap returned: the UNMAP was read */
	/* Y: the other dispatcher reads its REMOVE and the fault after it. */
	s.base = C.R;
	s.first = 0;
	s.n = 1;
	s.step = 1;
	s.tag = 0; /* discarded: a lazy loader serves zeros */
	atomic_store(&s.done, 0);
	atomic_store(&s.bad, 0);
	ck_assert_int_eq(pthread_create(&y, NULL, c_discarder, &s), 0);
	tu_sleep_ms(200);
	ck_assert_msg(!atomic_load(&C.fault_seen),
		      "the fault in R was delivered while its REMOVE waited behind the UNMAP");
	ck_assert(!atomic_load(&C.remove_done));
	ck_assert(!atomic_load(&s.done));
	ck_assert_int_eq(sem_post(&C.release), 0);
	ck_assert(join_within(y, 5000, NULL));
	ck_assert(atomic_load(&s.done));
	ck_assert_int_eq(atomic_load(&s.bad), 0);
	ck_assert(atomic_load(&C.remove_done) && atomic_load(&C.fault_seen));
	ck_assert_uint_lt(atomic_load(&C.t_remove), atomic_load(&C.t_fault));
	atomic_store(&C.stop, 1);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_join(d[i], NULL), 0);
	ck_assert_int_eq(atomic_load(&C.disp_err), 0);
	uffd_close(C.u);
	munmap(C.R, C_R * PS);
	sem_destroy(&C.release);
}
END_TEST

/* A thread that changes the layout (munmap, madvise, MAP_FIXED over): it blocks until its
 * event is read. */
struct layout_op {
	pthread_t t;
	int op; /* 0 munmap, 1 madvise(DONTNEED), 2 mmap(MAP_FIXED) over */
	void *addr;
	size_t len;
	_Atomic bool done;
};

static void *layout_fn(void *arg)
{
	struct layout_op *l = arg;

	if (l->op == 0)
		munmap(l->addr, l->len);
	else if (l->op == 1)
		madvise(l->addr, l->len, MADV_DONTNEED);
	else
		mmap(l->addr, l->len, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	atomic_store(&l->done, true);
	return NULL;
}

static void layout_start(struct layout_op *l, int op, void *addr, size_t len)
{
	l->op = op;
	l->addr = addr;
	l->len = len;
	atomic_store(&l->done, false);
	ck_assert_int_eq(pthread_create(&l->t, NULL, layout_fn, l), 0);
}

/* Dispatch @u from this thread until *@flag is set (at most @ms). */
static void dispatch_until(struct uffd *u, _Atomic bool *flag, unsigned ms)
{
	double end = now_s() + ms / 1000.0;

	while (!atomic_load(flag) && now_s() < end)
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
	ck_assert(atomic_load(flag));
}

/* ================================================================================================
 * 3. Re-entry: -EDEADLK on one's own context or monitor, -EBUSY between a pool and a run.
 * ============================================================================================== */

static struct reent {
	struct uffd *v;
	struct uffd_monitor *m;
	atomic_int r_self, r_other, r_read, r_unmap, r_run, r_start, r_join, r_remove, r_stop;
	atomic_int called, in_cb;
	sem_t go;
} RE;

static int re_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct uffd_event ev;

	(void)arg;
	if (!atomic_exchange(&RE.called, 1)) {
		atomic_store(&RE.r_self, uffd_dispatch(u, 0));
		atomic_store(&RE.r_read, uffd_read_events(u, &ev, 1, 0));
		/* Another context's fault waits: this callback serves it. */
		atomic_store(&RE.r_other, uffd_dispatch(RE.v, 5000));
	}
	return serve(u, pf, false);
}

static int re_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)s;
	(void)arg;
	atomic_store(&RE.r_unmap, uffd_dispatch(u, 0));
	return 0;
}

START_TEST(reentry_dispatch)
{
	struct tu_toucher tv, tu;
	struct layout_op un;
	char *ru = tu_map_anon(2 * PS), *rv = tu_map_anon(PS);
	struct uffd *u;

	memset(&RE, 0, sizeof(RE));
	atomic_store(&RE.r_unmap, 1);
	u = open_ctx(UFFD_FEATURE_EVENT_UNMAP);
	RE.v = open_ctx(0);
	ck_assert_int_eq(uffd_on_pagefault(u, re_fault, NULL), 0);
	ck_assert_int_eq(uffd_on_unmap(u, re_unmap, NULL), 0);
	ck_assert_int_eq(uffd_register(u, ru, 2 * PS, MISSING, (void *)5), 0);
	ck_assert_int_eq(uffd_register(RE.v, rv, PS, MISSING, NULL), 0);
	tu_touch_start(&tv, rv, false, 0); /* blocks: only u's callback dispatches v */
	tu_sleep_ms(20);
	tu_touch_start(&tu, ru, false, 0);
	dispatch_until(u, &tu.done, 5000);
	tu_touch_join(&tu);
	tu_touch_join(&tv);
	ck_assert_int_eq(atomic_load(&RE.r_self), -EDEADLK);
	ck_assert_int_eq(atomic_load(&RE.r_read), -EDEADLK);
	ck_assert_int_eq(atomic_load(&RE.r_other), 1);
	ck_assert(page_is(ru, 5, 0, false));
	ck_assert_int_eq(tv.value, 0);

	layout_start(&un, 0, ru, 2 * PS);
	dispatch_until(u, &un.done, 5000);
	ck_assert_int_eq(pthread_join(un.t, NULL), 0);
	while (uffd_dispatch(u, 0) > 0) /* on_unmap may be left for the next call */
		;
	ck_assert_int_eq(atomic_load(&RE.r_unmap), -EDEADLK);
	uffd_close(u);
	uffd_close(RE.v);
	munmap(rv, PS);
}
END_TEST

static int re_mon_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	if (!atomic_exchange(&RE.called, 1)) {
		atomic_store(&RE.r_run, uffd_monitor_run(RE.m, 0));
		atomic_store(&RE.r_start, uffd_monitor_start(RE.m, 1));
		atomic_store(&RE.r_join, uffd_monitor_join(RE.m));
		atomic_store(&RE.r_remove, uffd_monitor_remove(RE.m, u));
	}
	return serve(u, pf, false);
}

/* A callback run by uffd_monitor_run() (@pool false) or by a pool worker. */
static void reentry_monitor_with(bool pool)
{
	struct tu_toucher t;
	char *r = tu_map_anon(PS);
	struct uffd *u = open_ctx(0);

	memset(&RE, 0, sizeof(RE));
	ck_assert_int_eq(uffd_monitor_new(&RE.m), 0);
	ck_assert_int_eq(uffd_on_pagefault(u, re_mon_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(u, r, PS, MISSING, (void *)9), 0);
	ck_assert_int_eq(uffd_monitor_add(RE.m, u), 0);
	if (pool)
		ck_assert_int_eq(uffd_monitor_start(RE.m, 2), 0);
	tu_touch_start(&t, r, false, 0);
	if (pool) {
		ck_assert(wait_bool(&t.done, 5000));
		ck_assert_int_eq(uffd_monitor_stop(RE.m), 0);
		ck_assert_int_eq(uffd_monitor_join(RE.m), 1);
	} else {
		double end = now_s() + 5;

		while (!atomic_load(&t.done) && now_s() < end)
			ck_assert_int_ge(uffd_monitor_run(RE.m, 20), 0);
	}
	tu_touch_join(&t);
	ck_assert(page_is(r, 9, 0, false));
	ck_assert_int_eq(atomic_load(&RE.r_run), -EDEADLK);
	ck_assert_int_eq(atomic_load(&RE.r_start), -EDEADLK);
	ck_assert_int_eq(atomic_load(&RE.r_join), -EDEADLK);
	ck_assert_int_eq(atomic_load(&RE.r_remove), -EDEADLK);
	ck_assert_int_eq(uffd_monitor_count(RE.m), 1);
	uffd_monitor_free(RE.m);
	munmap(r, PS);
}

START_TEST(reentry_monitor_run)
{
	reentry_monitor_with(false);
}
END_TEST

START_TEST(reentry_monitor_pool)
{
	reentry_monitor_with(true);
}
END_TEST

static int busy_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	atomic_store(&RE.in_cb, 1);
	while (sem_wait(&RE.go) && errno == EINTR)
		;
	return serve(u, pf, false);
}

static void *busy_runner(void *arg)
{
	(void)arg;
	atomic_store(&RE.r_run, uffd_monitor_run(RE.m, -1));
	return NULL;
}

START_TEST(monitor_busy)
{
	struct tu_toucher t;
	char *r = tu_map_anon(PS);
	struct uffd *u = open_ctx(0);
	pthread_t runner;

	memset(&RE, 0, sizeof(RE));
	ck_assert_int_eq(sem_init(&RE.go, 0, 0), 0);
	ck_assert_int_eq(uffd_monitor_new(&RE.m), 0);
	ck_assert_int_eq(uffd_on_pagefault(u, busy_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(u, r, PS, MISSING, (void *)3), 0);
	ck_assert_int_eq(uffd_monitor_add(RE.m, u), 0);

	/* A pool runs: no run, no second pool. */
	ck_assert_int_eq(uffd_monitor_start(RE.m, 2), 0);
	ck_assert_int_eq(uffd_monitor_run(RE.m, 0), -EBUSY);
	ck_assert_int_eq(uffd_monitor_run(RE.m, 10), -EBUSY);
	ck_assert_int_eq(uffd_monitor_start(RE.m, 1), -EBUSY);
	ck_assert_int_eq(uffd_monitor_stop(RE.m), 0);
	ck_assert_int_eq(uffd_monitor_join(RE.m), 0);
	ck_assert_int_eq(uffd_monitor_join(RE.m), -EINVAL);

	/* A run is in progress in another thread (held in a callback): no pool. */
	ck_assert_int_eq(pthread_create(&runner, NULL, busy_runner, NULL), 0);
	tu_touch_start(&t, r, false, 0);
	ck_assert(wait_flag(&RE.in_cb, 5000));
	ck_assert_int_eq(uffd_monitor_start(RE.m, 2), -EBUSY);
	ck_assert_int_eq(sem_post(&RE.go), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(uffd_monitor_stop(RE.m), 0);
	ck_assert(join_within(runner, 5000, NULL));
	ck_assert_int_eq(atomic_load(&RE.r_run), 1);
	/* And once it is over, a pool starts. */
	ck_assert_int_eq(uffd_monitor_start(RE.m, 1), 0);
	ck_assert_int_eq(uffd_monitor_stop(RE.m), 0);
	ck_assert_int_eq(uffd_monitor_join(RE.m), 0);
	uffd_monitor_free(RE.m);
	sem_destroy(&RE.go);
	munmap(r, PS);
}
END_TEST

/* ================================================================================================
 * 6. uffd_monitor_remove() while the monitor runs with faults in flight.
 * ============================================================================================== */

#define RM_PAGES 256
#define RM_SWEEPERS 4

static struct rmv {
	struct uffd_monitor *m;
	pthread_t main;
	atomic_int removed, late, stop, copies, run_err;
} RM;

static int rm_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	int r;

	(void)arg;
	raw_sleep_us(100); /* keep callbacks in flight when the context leaves */
	r = serve(u, pf, false);
	if (r == 0)
		atomic_fetch_add(&RM.copies, 1);
	/* Once uffd_monitor_remove() returned, the context is the caller's alone. */
	if (atomic_load(&RM.removed) && !pthread_equal(pthread_self(), RM.main))
		atomic_fetch_add(&RM.late, 1);
	return r;
}

static void *rm_runner(void *arg)
{
	(void)arg;
	while (!atomic_load(&RM.stop)) {
		int r = uffd_monitor_run(RM.m, 50);

		if (r < 0)
			atomic_store(&RM.run_err, r);
	}
	return NULL;
}

START_TEST(monitor_remove_in_flight)
{
	struct sweeper sw[RM_SWEEPERS];
	char *r = tu_map_anon(RM_PAGES * PS), *ri = tu_map_anon(PS);
	struct uffd *u = open_ctx(NOFORK_EVENTS), *idle = open_ctx(0), *stranger = open_ctx(0);
	pthread_t runner[2];
	struct uffd_stats st;
	int i;
	bool done;

	memset(&RM, 0, sizeof(RM));
	RM.main = pthread_self();
	ck_assert_int_eq(uffd_monitor_new(&RM.m), 0);
	ck_assert_int_eq(uffd_on_pagefault(u, rm_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(u, r, RM_PAGES * PS, MISSING, (void *)0x42), 0);
	ck_assert_int_eq(uffd_register(idle, ri, PS, MISSING, NULL), 0);
	ck_assert_int_eq(uffd_monitor_add(RM.m, u), 0);
	ck_assert_int_eq(uffd_monitor_add(RM.m, idle), 0);
	ck_assert_int_eq(uffd_monitor_remove(RM.m, stranger), -ENOENT);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&runner[i], NULL, rm_runner, NULL), 0);
	for (i = 0; i < RM_SWEEPERS; i++)
		sweep_start(&sw[i], r, (size_t)i, RM_PAGES - (size_t)i, RM_SWEEPERS, 0x42);
	while (atomic_load(&RM.copies) < RM_PAGES / 4)
		raw_sleep_us(500);
	ck_assert_int_eq(uffd_monitor_remove(RM.m, u), 0);
	atomic_store(&RM.removed, 1);
	ck_assert_int_eq(uffd_monitor_count(RM.m), 1);
	ck_assert_int_eq(uffd_monitor_remove(RM.m, u), -ENOENT);
	/* The context is ours now: what the monitor read and left is delivered here. */
	for (done = false; !done;) {
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
		for (done = true, i = 0; i < RM_SWEEPERS; i++)
			done &= atomic_load(&sw[i].done) != 0;
	}
	for (i = 0; i < RM_SWEEPERS; i++) {
		ck_assert_int_eq(pthread_join(sw[i].t, NULL), 0);
		ck_assert_int_eq(atomic_load(&sw[i].bad), 0);
	}
	ck_assert_int_eq(atomic_load(&RM.late), 0);
	ck_assert_int_eq(atomic_load(&RM.copies), RM_PAGES);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults, RM_PAGES + st.faults_woken);
	atomic_store(&RM.stop, 1);
	for (i = 0; i < 2; i++)
		ck_assert(join_within(runner[i], 5000, NULL));
	ck_assert_int_eq(atomic_load(&RM.run_err), 0);
	/* It can join a monitor again. */
	ck_assert_int_eq(uffd_monitor_add(RM.m, u), 0);
	ck_assert_int_eq(uffd_monitor_count(RM.m), 2);
	uffd_monitor_free(RM.m);
	uffd_close(stranger);
	munmap(r, RM_PAGES * PS);
	munmap(ri, PS);
}
END_TEST

/* ================================================================================================
 * 7. uffd_dispatch()'s return value: never 0 with timeout -1; woken faults count.
 * ============================================================================================== */

#define RV_PAGES 512
#define RV_SWEEPERS 4

static struct rv {
	struct uffd *u;
	atomic_int stop, exited, zeros, errs, first_err, calls;
	atomic_int note_sleep;
} RV;

static void *rv_dispatcher(void *arg)
{
	(void)arg;
	for (;;) {
		int r = uffd_dispatch(RV.u, -1);

		atomic_fetch_add(&RV.calls, 1);
		if (r == 0)
			atomic_fetch_add(&RV.zeros, 1);
		else if (r < 0 && !atomic_fetch_add(&RV.errs, 1))
			atomic_store(&RV.first_err, r);
		if (atomic_load(&RV.stop))
			break;
	}
	atomic_fetch_add(&RV.exited, 1);
	return NULL;
}

static int rv_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)s;
	(void)arg;
	/* A notification that takes a while: faults another thread reads meanwhile wait for it,
	 * and that thread has nothing of its own to deliver. (Slower than the events come, the
	 * queue would grow without bound, and the faults behind it would starve.) */
	raw_sleep_us(50);
	return 0;
}

static int rv_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	return serve(u, pf, false);
}

static void *rv_discarder(void *arg)
{
	char *d = arg;

	while (!atomic_load(&RV.stop)) {
		madvise(d, PS, MADV_DONTNEED);
		raw_sleep_us(500);
	}
	return NULL;
}

static void dispatch_forever_with(uint64_t features)
{
	struct sweeper sw[RV_SWEEPERS];
	char *r = tu_map_anon((RV_PAGES + 16) * PS), *d = tu_map_anon(PS);
	pthread_t disp[2], disc;
	int i, extra = 0;

	memset(&RV, 0, sizeof(RV));
	RV.u = open_ctx(features);
	ck_assert_int_eq(uffd_on_pagefault(RV.u, rv_fault, NULL), 0);
	ck_assert_int_eq(uffd_on_remove(RV.u, rv_remove, NULL), 0);
	ck_assert_int_eq(uffd_register(RV.u, r, (RV_PAGES + 16) * PS, MISSING, (void *)0x51), 0);
	ck_assert_int_eq(uffd_register(RV.u, d, PS, MISSING, (void *)0x52), 0);
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&disp[i], NULL, rv_dispatcher, NULL), 0);
	if (features & UFFD_FEATURE_EVENT_REMOVE)
		ck_assert_int_eq(pthread_create(&disc, NULL, rv_discarder, d), 0);
	for (i = 0; i < RV_SWEEPERS; i++)
		sweep_start(&sw[i], r, (size_t)i, RV_PAGES - (size_t)i, RV_SWEEPERS, 0x51);
	for (i = 0; i < RV_SWEEPERS; i++) {
		ck_assert(join_within(sw[i].t, 20000, NULL));
		ck_assert_int_eq(atomic_load(&sw[i].bad), 0);
	}
	atomic_store(&RV.stop, 1);
	if (features & UFFD_FEATURE_EVENT_REMOVE)
		ck_assert(join_within(disc, 5000, NULL));
	/* Each dispatcher waits for ever: one fault each lets them see the stop. */
	while (atomic_load(&RV.exited) < 2 && extra < 16) {
		struct tu_toucher t;
		double end = tu_now() + 10;

		tu_touch_start(&t, r + (size_t)(RV_PAGES + extra++) * PS, false, 0);
		/* The last dispatcher may see the stop between the check above and this fault:
		 * then nobody else serves it, and this thread does. */
		while (!atomic_load(&t.done) && tu_now() < end) {
			if (atomic_load(&RV.exited) == 2)
				ck_assert_int_ge(uffd_dispatch(RV.u, 10), 0);
			else
				tu_sleep_ms(1);
		}
		tu_touch_join(&t);
	}
	for (i = 0; i < 2; i++)
		ck_assert(join_within(disp[i], 5000, NULL));
	ck_assert_int_eq(atomic_load(&RV.errs), 0);
	ck_assert_msg(atomic_load(&RV.zeros) == 0,
		      "uffd_dispatch(u, -1) returned 0 %d times in %d calls",
		      atomic_load(&RV.zeros), atomic_load(&RV.calls));
	uffd_close(RV.u);
	munmap(r, (RV_PAGES + 16) * PS);
	munmap(d, PS);
}

START_TEST(dispatch_forever_faults_only)
{
	dispatch_forever_with(0);
}
END_TEST

START_TEST(dispatch_forever_with_events)
{
	dispatch_forever_with(NOFORK_EVENTS);
}
END_TEST

static int eexist_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	int r = serve(u, pf, false);

	(void)arg;
	atomic_fetch_add(&RV.calls, 1);
	return r ? r : -EEXIST; /* as if another thread had resolved it */
}

START_TEST(dispatch_counts_woken)
{
	struct uffd *u = open_ctx(UFFD_FEATURE_EVENT_UNMAP);
	char *r = tu_map_anon(2 * PS);
	struct pollfd pfd = { .fd = uffd_fd(u), .events = POLLIN };
	struct tu_toucher t;
	struct layout_op over;
	struct uffd_stats st;

	memset(&RV, 0, sizeof(RV));
	ck_assert_int_eq(uffd_on_pagefault(u, eexist_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(u, r, 2 * PS, MISSING, (void *)0x61), 0);

	/* A fault whose callback says -EEXIST: woken, and counted. */
	tu_touch_start(&t, r, false, 0);
	ck_assert_int_eq(uffd_dispatch(u, 5000), 1);
	tu_touch_join(&t);
	ck_assert(page_is(r, 0x61, 0, false));
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults_woken, 1);

	/* [PAGEFAULT, UNMAP] in one read: prep wakes the fault, which is counted with the UNMAP.
	 * The range is mapped over (not unmapped), so the woken thread reads a plain zero page. */
	tu_touch_start(&t, r + PS, false, 1);
	ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
	layout_start(&over, 2, r + PS, PS);
	tu_sleep_ms(50); /* the UNMAP is queued behind the unread fault */
	ck_assert_int_eq(uffd_dispatch(u, 5000), 2);
	ck_assert(join_within(over.t, 5000, NULL));
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, 0);
	ck_assert_int_eq(atomic_load(&RV.calls), 1);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults_woken, 2);
	ck_assert_uint_eq(st.unmaps, 1);
	uffd_close(u);
	munmap(r, 2 * PS);
}
END_TEST

/* ================================================================================================
 * 5. The pool: names, signal masks, counts, errors, fork in its presence, callbacks that malloc.
 * ============================================================================================== */

static struct pool {
	atomic_int copies, fail_at, nforks, nnotes, nexit;
	atomic_int child_bad;
} PO;

/* Every callback allocates: the pool's reader never does, so a forking thread never waits on a
 * callback blocked in malloc(). */
static void churn(size_t n)
{
	char *p = malloc(n);

	if (!p) {
		fail_later("malloc", n, 0);
		return;
	}
	p[0] = 1;
	p[n - 1] = 2;
	free(p);
}

static int po_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	int r;

	(void)arg;
	churn(64 + ((uintptr_t)pf->address >> 12) % 8192);
	if (atomic_load(&PO.fail_at) &&
	    atomic_fetch_add(&PO.copies, 1) + 1 == atomic_load(&PO.fail_at)) {
		uffd_zeropage(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), PS, 0);
		return -EIO;
	}
	r = serve(u, pf, false);
	if (r == 0 && !atomic_load(&PO.fail_at))
		atomic_fetch_add(&PO.copies, 1);
	return r;
}

static int po_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)parent;
	(void)child;
	(void)arg;
	churn(200);
	atomic_fetch_add(&PO.nforks, 1);
	return 0; /* kept: the pool serves the child */
}

static int po_span(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	(void)s;
	(void)arg;
	churn(300);
	atomic_fetch_add(&PO.nnotes, 1);
	return 0;
}

static void po_exit(struct uffd *u, void *arg)
{
	(void)u;
	(void)arg;
	churn(100);
	atomic_fetch_add(&PO.nexit, 1);
}

static struct uffd *po_ctx(uint64_t features, char *r, size_t pages, uintptr_t tag)
{
	struct uffd *u = open_ctx(features);

	ck_assert_int_eq(uffd_on_pagefault(u, po_fault, NULL), 0);
	ck_assert_int_eq(uffd_on_fork(u, po_fork, NULL), 0);
	ck_assert_int_eq(uffd_on_unmap(u, po_span, NULL), 0);
	ck_assert_int_eq(uffd_on_remove(u, po_span, NULL), 0);
	ck_assert_int_eq(uffd_on_exit(u, po_exit, NULL), 0);
	ck_assert_int_eq(uffd_register(u, r, pages * PS, MISSING, (void *)tag), 0);
	return u;
}

/* The blocked-signal mask of thread @tid, from /proc. */
static uint64_t sig_blocked(const char *tid)
{
	char path[300], line[256];
	unsigned long long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%s/status", tid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "SigBlk: %llx", &v) == 1)
			break;
	fclose(f);
	return v;
}

START_TEST(pool_threads)
{
	enum { N = 3, PAGES = 64 };
	char *r = tu_map_anon(PAGES * PS), name[32], want[16];
	struct uffd_monitor *m;
	struct sweeper sw;
	struct dirent *e;
	int readers = 0, workers[N] = { 0 }, i;
	/* Every signal but those no thread can block (SIGKILL, SIGSTOP) and glibc's own two
	 * (SIGCANCEL, SIGSETXID: 32 and 33), which pthread_sigmask() leaves open. */
	uint64_t must = ~(uint64_t)0 & ~(1ull << (SIGKILL - 1)) & ~(1ull << (SIGSTOP - 1)) &
			~(1ull << 31) & ~(1ull << 32);
	DIR *d;

	memset(&PO, 0, sizeof(PO));
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, po_ctx(0, r, PAGES, 0x81)), 0);
	ck_assert_int_eq(uffd_monitor_start(m, N), 0);
	d = opendir("/proc/self/task");
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		char path[300];
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(name, sizeof(name), f))
			name[0] = 0;
		fclose(f);
		name[strcspn(name, "\n")] = 0;
		if (strcmp(name, "uffd-read") && strncmp(name, "uffd-work/", 10))
			continue;
		ck_assert_msg((sig_blocked(e->d_name) & must) == must,
			      "%s (tid %s) leaves signals open: SigBlk %llx", name, e->d_name,
			      (unsigned long long)sig_blocked(e->d_name));
		if (!strcmp(name, "uffd-read"))
			readers++;
		for (i = 0; i < N; i++) {
			snprintf(want, sizeof(want), "uffd-work/%d", i);
			workers[i] += !strcmp(name, want);
		}
	}
	closedir(d);
	ck_assert_int_eq(readers, 1);
	for (i = 0; i < N; i++)
		ck_assert_int_eq(workers[i], 1);
	sweep_start(&sw, r, 0, PAGES, 1, 0x81);
	ck_assert(join_within(sw.t, 10000, NULL));
	ck_assert_int_eq(atomic_load(&sw.bad), 0);
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	ck_assert_int_eq(uffd_monitor_join(m), PAGES); /* each fault handled once */
	uffd_monitor_free(m);
	munmap(r, PAGES * PS);
}
END_TEST

START_TEST(pool_error_stops)
{
	char *r = tu_map_anon(4 * PS);
	struct uffd_monitor *m;
	struct tu_toucher t;

	memset(&PO, 0, sizeof(PO));
	atomic_store(&PO.fail_at, 2);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, po_ctx(0, r, 4, 0x82)), 0);
	ck_assert_int_eq(uffd_monitor_start(m, 2), 0);
	tu_touch_start(&t, r, false, 0);
	tu_touch_join(&t);
	tu_touch_start(&t, r + PS, false, 0); /* its callback fails: the pool stops */
	tu_touch_join(&t);
	ck_assert_int_eq(uffd_monitor_join(m), -EIO);
	uffd_monitor_free(m);
	munmap(r, 4 * PS);
}
END_TEST

/* A fork() while the pool serves: the child frees the monitor (its copy) and exits. */
START_TEST(pool_fork_child_frees)
{
	enum { PAGES = 512, SW = 2, FORKS = 8 };
	char *r = tu_map_anon(PAGES * PS);
	struct uffd_monitor *m;
	struct sweeper sw[SW];
	int i, st;

	memset(&PO, 0, sizeof(PO));
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, po_ctx(NOFORK_EVENTS, r, PAGES, 0x83)), 0);
	ck_assert_int_eq(uffd_monitor_start(m, 2), 0);
	for (i = 0; i < SW; i++)
		sweep_start(&sw[i], r, (size_t)i, PAGES - (size_t)i, SW, 0x83);
	for (i = 0; i < FORKS; i++) {
		pid_t pid = fork();

		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			uffd_monitor_free(m);
			_exit(0);
		}
		st = tu_wait_child(pid, 5000);
		ck_assert_msg(st != -1, "fork %d: the child hung in uffd_monitor_free()", i);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: child status %#x", i,
			      st);
		raw_sleep_us(2000);
	}
	for (i = 0; i < SW; i++) {
		ck_assert(join_within(sw[i].t, 10000, NULL));
		ck_assert_int_eq(atomic_load(&sw[i].bad), 0);
	}
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	ck_assert_int_eq(uffd_monitor_join(m), PAGES);
	uffd_monitor_free(m);
	munmap(r, PAGES * PS);
}
END_TEST

/* ---- the monitor's own process forks from two threads at once, back to back ---- */

#define SF_PAGES 64
#define SF_FORKS 12

static struct selffork {
	char *r, *d;
	atomic_int stop, hung, badchild;
} SF;

static void *sf_forker(void *arg)
{
	int k = (int)(intptr_t)arg, i;

	for (i = 0; i < SF_FORKS; i++) {
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			/* Pages the parent had not touched fault in the child's context, which the
			 * pool serves; the others were copied. Either way: the registration's
			 * contents. */
			size_t a = (size_t)(k * SF_FORKS + i) % SF_PAGES, b = (a + 31) % SF_PAGES;
			bool ok = page_is(SF.r + a * PS, 0x84, a * PS, false) &&
				  page_is(SF.r + b * PS, 0x84, b * PS, false);

			syscall(SYS_exit_group, ok ? 0 : 1);
		}
		if (pid < 0) {
			fail_later("fork", (uintptr_t)errno, 0);
			break;
		}
		st = tu_wait_child(pid, 15000);
		if (st == -1)
			atomic_fetch_add(&SF.hung, 1);
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			atomic_fetch_add(&SF.badchild, 1);
	}
	return NULL;
}

static void *sf_discarder(void *arg)
{
	(void)arg;
	while (!atomic_load(&SF.stop)) {
		madvise(SF.d, PS, MADV_DONTNEED);
		raw_sleep_us(1000);
	}
	return NULL;
}

START_TEST(pool_self_fork_two_threads)
{
	struct uffd_monitor *m;
	struct sweeper sw;
	pthread_t f[2], disc;
	int i, n;

	memset(&PO, 0, sizeof(PO));
	memset(&SF, 0, sizeof(SF));
	errors_reset();
	SF.r = tu_map_anon(SF_PAGES * PS);
	SF.d = tu_map_anon(PS);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	{
		struct uffd *u = po_ctx(EVENTS, SF.r, SF_PAGES, 0x84);

		ck_assert_int_eq(uffd_register(u, SF.d, PS, MISSING, (void *)0x85), 0);
		ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	}
	ck_assert_int_eq(uffd_monitor_start(m, 3), 0);
	ck_assert_int_eq(pthread_create(&disc, NULL, sf_discarder, NULL), 0);
	sweep_start(&sw, SF.r, 0, SF_PAGES, 2, 0x84); /* half the pages, the rest in children */
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&f[i], NULL, sf_forker, (void *)(intptr_t)i), 0);
	for (i = 0; i < 2; i++)
		ck_assert_msg(join_within(f[i], 40000, NULL),
			      "a thread forking under the pool is stuck (deadlock)");
	atomic_store(&SF.stop, 1);
	ck_assert(join_within(disc, 5000, NULL));
	ck_assert(join_within(sw.t, 5000, NULL));
	ck_assert_int_eq(atomic_load(&sw.bad), 0);
	assert_no_errors();
	ck_assert_int_eq(atomic_load(&SF.hung), 0);
	ck_assert_int_eq(atomic_load(&SF.badchild), 0);
	ck_assert_int_eq(atomic_load(&PO.nforks), 2 * SF_FORKS);
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	n = uffd_monitor_join(m);
	ck_assert_int_gt(n, 2 * SF_FORKS);
	uffd_monitor_free(m);
	munmap(SF.r, SF_PAGES * PS);
	munmap(SF.d, PS);
}
END_TEST

/* ================================================================================================
 * 8. pthread cancellation: no libuffd call is a cancellation point.
 * ============================================================================================== */

enum { CX_DISPATCH, CX_RUN, CX_EAGAIN, CX_CLOSE, CX_JOIN };

struct cx {
	pthread_t t;
	int kind;
	struct uffd *u;
	struct uffd_monitor *m;
	atomic_int in_lib, cancelled_in_lib, calls;
};

static void cx_cleanup(void *arg)
{
	struct cx *c = arg;

	if (atomic_load(&c->in_lib))
		atomic_store(&c->cancelled_in_lib, 1);
}

static void cx_call(struct cx *c)
{
	struct uffd *u;

	switch (c->kind) {
	case CX_DISPATCH:
	case CX_EAGAIN:
		uffd_dispatch(c->u, -1);
		break;
	case CX_RUN:
		uffd_monitor_run(c->m, -1);
		break;
	case CX_CLOSE:
		if (uffd_open(&u, NULL) == 0) {
			uffd_register(u, c->m, PS, MISSING, NULL); /* c->m: a page, here */
			uffd_close(u);
		}
		break;
	default:
		uffd_monitor_join(c->m);
		break;
	}
}

/* Calls the library in a loop; deferred cancellation may act only at pthread_testcancel(). */
static void *cx_fn(void *arg)
{
	struct cx *c = arg;

	pthread_cleanup_push(cx_cleanup, c);
	for (;;) {
		atomic_store(&c->in_lib, 1);
		cx_call(c);
		atomic_store(&c->in_lib, 0);
		atomic_fetch_add(&c->calls, 1);
		pthread_testcancel();
	}
	pthread_cleanup_pop(0);
	return NULL;
}

static void cx_start(struct cx *c, int kind)
{
	c->kind = kind;
	ck_assert_int_eq(pthread_create(&c->t, NULL, cx_fn, c), 0);
}

/* The thread ended by its cancellation, outside the library. */
static void cx_check(struct cx *c, void *ret)
{
	ck_assert_ptr_eq(ret, PTHREAD_CANCELED);
	ck_assert_msg(!atomic_load(&c->cancelled_in_lib),
		      "the thread was cancelled inside a libuffd call (kind %d)", c->kind);
}

static bool sweepers_done(struct sweeper *s, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (!atomic_load(&s[i].done))
			return false;
	return true;
}

static atomic_int cx_eagain_mode, cx_eagain_calls;

static int cx_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)arg;
	if (atomic_load(&cx_eagain_mode)) {
		atomic_fetch_add(&cx_eagain_calls, 1);
		return -EAGAIN; /* the library retries, backing off, then wakes the fault */
	}
	return serve(u, pf, false);
}

/* Cancel a thread blocked in uffd_dispatch(-1) or uffd_monitor_run(-1) while faults flow; the
 * test serves what is left itself: every fault must be served. */
static void cancel_while_serving(int kind)
{
	enum { PAGES = 256, SW = 2 };
	char *r = tu_map_anon((PAGES + 8) * PS);
	struct sweeper sw[SW];
	struct cx c = { 0 };
	void *ret = NULL;
	bool joined = false;
	double end;
	int i, extra = PAGES;

	c.u = open_ctx(0);
	ck_assert_int_eq(uffd_on_pagefault(c.u, cx_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(c.u, r, (PAGES + 8) * PS, MISSING, (void *)0x91), 0);
	if (kind == CX_RUN) {
		ck_assert_int_eq(uffd_monitor_new(&c.m), 0);
		ck_assert_int_eq(uffd_monitor_add(c.m, c.u), 0);
	}
	cx_start(&c, kind);
	tu_sleep_ms(30); /* blocked in its wait */
	for (i = 0; i < SW; i++)
		sweep_start(&sw[i], r, (size_t)i, PAGES - (size_t)i, SW, 0x91);
	tu_sleep_ms(5);
	ck_assert_int_eq(pthread_cancel(c.t), 0);
	for (end = now_s() + 10; now_s() < end && !(joined && sweepers_done(sw, SW));) {
		if (!joined)
			joined = pthread_tryjoin_np(c.t, &ret) == 0;
		if (!joined && sweepers_done(sw, SW)) {
			/* Nothing flows: make the thread's wait end, so that it reaches its
			 * cancellation point. */
			if (kind == CX_RUN) {
				uffd_monitor_stop(c.m);
			} else if (extra < PAGES + 8) {
				struct tu_toucher t;
				double give = now_s() + 1;

				/* A fault for the cancelled thread to serve: this thread stays out
				 * of the way for a second (dispatching here too would take it
				 * first), then serves it itself if it is still waiting. */
				tu_touch_start(&t, r + (size_t)extra++ * PS, false, 0);
				while (!atomic_load(&t.done) && now_s() < give)
					tu_sleep_ms(1);
				while (!atomic_load(&t.done))
					uffd_dispatch(c.u, 10);
				tu_touch_join(&t);
				continue;
			}
		}
		if (kind == CX_RUN)
			ck_assert_int_ge(uffd_monitor_run(c.m, 10), 0);
		else
			ck_assert_int_ge(uffd_dispatch(c.u, 10), 0);
	}
	ck_assert_msg(joined, "the cancelled thread never ended");
	cx_check(&c, ret);
	for (i = 0; i < SW; i++) {
		ck_assert_int_eq(pthread_join(sw[i].t, NULL), 0);
		ck_assert_int_eq(atomic_load(&sw[i].bad), 0);
	}
	if (c.m)
		uffd_monitor_free(c.m);
	else
		uffd_close(c.u);
	munmap(r, (PAGES + 8) * PS);
}

START_TEST(cancel_in_dispatch)
{
	cancel_while_serving(CX_DISPATCH);
}
END_TEST

START_TEST(cancel_in_monitor_run)
{
	cancel_while_serving(CX_RUN);
}
END_TEST

/* Cancel a thread in the -EAGAIN back-off, with an event pending. */
START_TEST(cancel_in_eagain_backoff)
{
	char *r = tu_map_anon(PS), *d = tu_map_anon(PS);
	struct cx c = { 0 };
	struct tu_toucher t;
	struct layout_op ev;
	void *ret = NULL;
	bool joined = false;
	double end;
	int at;

	atomic_store(&cx_eagain_calls, 0);
	atomic_store(&cx_eagain_mode, 1);
	c.u = open_ctx(NOFORK_EVENTS);
	ck_assert_int_eq(uffd_on_pagefault(c.u, cx_fault, NULL), 0);
	ck_assert_int_eq(uffd_register(c.u, r, PS, MISSING, (void *)0x92), 0);
	ck_assert_int_eq(uffd_register(c.u, d, PS, MISSING, (void *)0x93), 0);
	tu_touch_start(&t, r, false, 0);
	cx_start(&c, CX_EAGAIN);
	ck_assert(wait_flag(&cx_eagain_calls, 5000));
	layout_start(&ev, 1, d, PS); /* a REMOVE, pending until the back-off loop reads it */
	ck_assert_int_eq(pthread_cancel(c.t), 0);
	at = atomic_load(&cx_eagain_calls);
	for (end = now_s() + 5; atomic_load(&cx_eagain_calls) < at + 3 && now_s() < end;)
		raw_sleep_us(100);
	/* Still retrying inside the library, though cancelled. */
	ck_assert_int_ge(atomic_load(&cx_eagain_calls), at + 3);
	atomic_store(&cx_eagain_mode, 0);
	for (end = now_s() + 10; now_s() < end && !(joined && atomic_load(&t.done));) {
		if (!joined)
			joined = pthread_tryjoin_np(c.t, &ret) == 0;
		ck_assert_int_ge(uffd_dispatch(c.u, 10), 0);
	}
	ck_assert(joined);
	cx_check(&c, ret);
	tu_touch_join(&t);
	ck_assert(page_is(r, 0x92, 0, false));
	ck_assert(join_within(ev.t, 5000, NULL));
	uffd_close(c.u);
	munmap(r, PS);
}
END_TEST

START_TEST(cancel_in_close)
{
	struct cx c = { 0 };
	void *ret = NULL;
	int i;

	for (i = 0; i < 20; i++) {
		memset(&c, 0, sizeof(c));
		c.m = (struct uffd_monitor *)tu_map_anon(PS); /* the page cx_call registers */
		cx_start(&c, CX_CLOSE);
		raw_sleep_us(200 + 300u * (unsigned)i);
		ck_assert_int_eq(pthread_cancel(c.t), 0);
		ck_assert(join_within(c.t, 5000, &ret));
		cx_check(&c, ret);
		munmap(c.m, PS);
	}
}
END_TEST

/* uffd_monitor_join() waits in pthread_join(), a cancellation point of glibc's. */
START_TEST(cancel_in_monitor_join)
{
	struct cx c = { 0 };
	char *r = tu_map_anon(PS);
	void *ret = NULL;
	int j;

	ck_assert_int_eq(uffd_monitor_new(&c.m), 0);
	ck_assert_int_eq(uffd_monitor_add(c.m, po_ctx(0, r, 1, 0x94)), 0);
	ck_assert_int_eq(uffd_monitor_start(c.m, 2), 0);
	cx_start(&c, CX_JOIN);
	tu_sleep_ms(30);
	ck_assert_int_eq(pthread_cancel(c.t), 0);
	tu_sleep_ms(30);
	ck_assert_int_eq(uffd_monitor_stop(c.m), 0);
	ck_assert(join_within(c.t, 5000, &ret));
	j = uffd_monitor_join(c.m); /* the pool is gone already, unless the join was cut short */
	cx_check(&c, ret);
	ck_assert_int_eq(j, -EINVAL);
	uffd_monitor_free(c.m);
	munmap(r, PS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("parallel");
	TCase *load = tu_tcase("load", 60, setup, NULL),
	      *order = tu_tcase("order", 30, setup, NULL),
	      *reent = tu_tcase("reentry", 30, setup, NULL),
	      *remove = tu_tcase("remove", 30, setup, NULL),
	      *ret = tu_tcase("return", 60, setup, NULL), *pool = tu_tcase("pool", 60, setup, NULL),
	      *cancel = tu_tcase("cancel", 30, setup, NULL);
	struct uffd_config cfg = { .required = NOFORK_EVENTS };

	tu_require_uffd(&cfg, "UNMAP/REMAP/REMOVE events");
	if (!UNDER_TSAN) {
		cfg.required = EVENTS;
		tu_require_uffd(&cfg, "FORK/UNMAP/REMAP/REMOVE events");
	}
	tcase_add_test(load, parallel_dispatch_kernel_order);
	tcase_add_test(order, remove_before_fault_behind_blocked_unmap);
	tcase_add_test(reent, reentry_dispatch);
	tcase_add_test(reent, reentry_monitor_run);
	tcase_add_test(reent, reentry_monitor_pool);
	tcase_add_test(reent, monitor_busy);
	tcase_add_test(remove, monitor_remove_in_flight);
	tcase_add_test(ret, dispatch_forever_faults_only);
	tcase_add_test(ret, dispatch_forever_with_events);
	tcase_add_test(ret, dispatch_counts_woken);
	tcase_add_test(pool, pool_threads);
	tcase_add_test(pool, pool_error_stops);
	tcase_add_test(pool, pool_fork_child_frees);
	if (!UNDER_TSAN)
		tcase_add_test(pool, pool_self_fork_two_threads);
	else
		printf("parallel: under TSan the pool's same-process fork case does not run: TSan's "
		       "fork() holds its locks until the FORK event is read (testutil.h)\n");
	tcase_add_test(cancel, cancel_in_dispatch);
	tcase_add_test(cancel, cancel_in_monitor_run);
	tcase_add_test(cancel, cancel_in_eagain_backoff);
	tcase_add_test(cancel, cancel_in_close);
	tcase_add_test(cancel, cancel_in_monitor_join);
	suite_add_tcase(s, load);
	suite_add_tcase(s, order);
	suite_add_tcase(s, reent);
	suite_add_tcase(s, remove);
	suite_add_tcase(s, ret);
	suite_add_tcase(s, pool);
	suite_add_tcase(s, cancel);
	return tu_run(s);
}
