/* SPDX-License-Identifier: MIT */
/* Serving registrations from page sources: the fault handler, discards, recorded prefetch. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "defaults.h"
#include "serve.h"

#define MAX_CHUNK ((uint64_t)64 << 20)
#define MAX_PAGE ((uint64_t)1 << 30)
#define DEFAULT_INFLIGHT 64u
/* uffd_prefetch()'s bulk reads: large enough that a compacted file streams at disk speed. */
#define PREFETCH_BUF ((uint64_t)8 << 20)
#define PREFETCH_PIECES 256
/* uffd_prefetch() meets -EAGAIN while an event waits to be read by the dispatching threads:
 * it waits for them this many times, a millisecond each, then gives up on the page. */
#define PREFETCH_EAGAIN_TRIES 1000
/* Fetches in flight per registration that later faults of the same chunk can join; past it a
 * fault fetches its chunk on its own, as if none were in flight. */
#define FLIGHTS 128u
/* Source pages installed in one hold of u->lock (see install_span()): the longest a dispatching
 * thread waits to read because of an install (about 60 us per 256 KiB). */
#define GUARDED_RUN ((uint64_t)256 << 10)

struct uffd_served;

/* What one fault fetches and installs, in source offsets. */
struct plan {
	uint64_t f_lo, f_hi; /* bytes read: [f_lo, f_hi) into buf[0 ..) */
	uint64_t i_lo, i_hi; /* pages installed; past f_hi (the source's end) they read zero */
	uint64_t fault;	     /* the faulting page */
	uintptr_t delta;     /* the address of source offset x is x + delta */
	bool flight;	     /* it has an entry in the registration's flights */
};

/*
 * A chunk being fetched for a fault: later faults of the same plan (same pages, same
 * addresses) join it instead of fetching it again. [w_lo, w_hi) spans the pages of the faults
 * that joined, woken once the chunk is in (the copy wakes them first where it installs).
 */
struct flight {
	uint64_t lo, hi;
	uintptr_t delta;
	uint64_t w_lo, w_hi;
};

/*
 * A fetch buffer with the state of one fault in flight. Made with mmap when the pool of its
 * registration is empty and kept: the pool grows to the number of faults served at once (the
 * dispatching threads plus the asynchronous fetches in flight, which max_inflight bounds), so
 * the fault path allocates nothing in the steady state and never with malloc.
 */
struct serve_slot {
	struct uffd_source_io io; /* first: done() gets &io */
	struct serve_slot *next;  /* the pool's free list */
	struct serve_slot *all;	  /* every slot of the registration */
	struct uffd_served *reg;
	struct uffd *u;
	struct uffd_pagefault pf;
	struct plan plan;
	/* Bit 0: the fault callback has returned from read_async; bit 1: done() has run. The
	 * second of the two finishes the fault: done() may run before read_async returns. */
	_Atomic unsigned state;
	int err;
	uint64_t gen; /* a fetch ahead: the map's generation when it started */
	unsigned char *buf;
	size_t map_len;
};

struct serve_counters {
	_Atomic uint64_t faults, fetches, bytes_fetched, pages_installed, pages_zeroed,
		eexist_skipped, prefetched, poisoned, errors, joined, ahead;
};

/* One served registration: hung on its pieces' data pointer, owned by the context. */
struct uffd_served {
	struct uffd_served *next;
	struct uffd_source *src;
	uint64_t src_off, len;
	uint64_t src_len; /* UINT64_MAX when the source does not know */
	uint64_t unit; /* bytes fetched per fault: the chunk, or the manifest's chunk if larger */
	uint64_t ps;
	unsigned shift; /* log2(ps) */
	uint32_t discard, max_inflight;
	uint32_t ahead; /* chunks fetched ahead of an on-demand fault (async sources) */
	bool dead;	/* its registration failed: nothing points at it */
	struct uffd_order *record;
	const uint8_t *manifest;
	uint64_t mchunk;
	void (*on_error)(struct uffd *u, uint64_t offset, uint64_t len, int err, void *arg);
	void *arg;
	/* One bit per page: discarded (REMOVE seen), recorded already (first touch), installed or
	 * found present since its last REMOVE, and a fault on it answered from `present` (see
	 * flight_join()). */
	_Atomic uint64_t *discarded, *seen, *present, *woke;
	size_t bm_len;
	/* Source pages go in under u->lock, which excludes reading a REMOVE (install_span()). */
	bool guard;
	/* `present` can be trusted: every discard is heard of (EVENT_REMOVE) and clears it. */
	bool trust_present;
	pthread_mutex_t fl_lock;
	unsigned nfl;
	struct flight fl[FLIGHTS];
	pthread_mutex_t pool_lock;
	struct serve_slot *free, *all;
	size_t slot_len;
	struct serve_counters st;
};

static inline uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static inline bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static struct uffd_served *find_served(struct uffd *u, const void *data)
{
	struct uffd_served *r;

	if (!data)
		return NULL;
	for (r = atomic_load_explicit(&u->served, memory_order_acquire); r; r = r->next)
		if (r == data && !r->dead)
			return r;
	return NULL;
}

/* ---- bitmaps ---- */

static inline size_t page_index(const struct uffd_served *r, uint64_t x)
{
	return (size_t)((x - r->src_off) >> r->shift);
}

static inline bool bit_get(_Atomic uint64_t *bm, size_t i)
{
	return atomic_load_explicit(&bm[i / 64], memory_order_acquire) & ((uint64_t)1 << (i % 64));
}

/* Sets the bit; returns whether it was set before. */
static inline bool bit_set(_Atomic uint64_t *bm, size_t i)
{
	uint64_t b = (uint64_t)1 << (i % 64);

	return atomic_fetch_or_explicit(&bm[i / 64], b, memory_order_acq_rel) & b;
}

/* Bits [i, i + n) set (@set) or cleared, a word at a time. */
static void bits_apply(_Atomic uint64_t *bm, size_t i, size_t n, bool set)
{
	while (n) {
		size_t b = i % 64, k = n < 64 - b ? n : 64 - b;
		uint64_t m = (k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1)) << b;

		if (set)
			atomic_fetch_or_explicit(&bm[i / 64], m, memory_order_acq_rel);
		else
			atomic_fetch_and_explicit(&bm[i / 64], ~m, memory_order_acq_rel);
		i += k;
		n -= k;
	}
}

/*
 * [x, x + len) was installed: present. A later fault there may be answered from that where every
 * discard is heard of (trust_present); readahead uses the bits either way, to skip chunks that
 * are in already (a page zapped unheard of then faults on demand, as it would without it).
 */
static void mark_installed(struct uffd_served *r, uint64_t x, uint64_t len)
{
	if (!len)
		return;
	bits_apply(r->present, page_index(r, x), (size_t)(len >> r->shift), true);
	bits_apply(r->woke, page_index(r, x), (size_t)(len >> r->shift), false);
}

/* Registration offsets [o_lo, o_hi) were discarded: every page they touch (the kernel zaps whole
 * pages) reads zero from now on (UFFD_DISCARD_ZERO) and is missing again. */
static void mark_removed(struct uffd_served *r, uint64_t o_lo, uint64_t o_hi)
{
	uint64_t i0 = o_lo >> r->shift, i1 = (min64(o_hi, r->len) + r->ps - 1) >> r->shift;

	if (i1 <= i0)
		return;
	bits_apply(r->discarded, (size_t)i0, (size_t)(i1 - i0), true);
	bits_apply(r->present, (size_t)i0, (size_t)(i1 - i0), false);
	bits_apply(r->woke, (size_t)i0, (size_t)(i1 - i0), false);
}

/* ---- the pool ---- */

static struct serve_slot *slot_get(struct uffd_served *r)
{
	struct serve_slot *s;
	unsigned char *m;

	pthread_mutex_lock(&r->pool_lock);
	s = r->free;
	if (s)
		r->free = s->next;
	pthread_mutex_unlock(&r->pool_lock);
	if (s)
		return s;
	/* The buffer first, page-aligned for O_DIRECT; the slot's own state after it. */
	m = uffd_sys_mmap(r->slot_len);
	if (!m)
		return NULL;
	s = (struct serve_slot *)(m + r->unit);
	s->buf = m;
	s->map_len = r->slot_len;
	s->reg = r;
	pthread_mutex_lock(&r->pool_lock);
	s->all = r->all;
	r->all = s;
	pthread_mutex_unlock(&r->pool_lock);
	return s;
}

static void slot_put(struct uffd_served *r, struct serve_slot *s)
{
	pthread_mutex_lock(&r->pool_lock);
	s->next = r->free;
	r->free = s;
	pthread_mutex_unlock(&r->pool_lock);
}

static void served_free(struct uffd_served *r)
{
	struct serve_slot *s = r->all, *next;

	for (; s; s = next) {
		next = s->all;
		uffd_sys_munmap(s->buf, s->map_len);
	}
	if (r->discarded)
		uffd_sys_munmap((void *)r->discarded, r->bm_len);
	pthread_mutex_destroy(&r->pool_lock);
	pthread_mutex_destroy(&r->fl_lock);
	free(r);
}

void uffd_serve_free_all(struct uffd *u)
{
	struct uffd_served *r = atomic_exchange(&u->served, NULL), *next;

	for (; r; r = next) {
		next = r->next;
		served_free(r);
	}
}

/* ---- installing pages ---- */

enum kind { K_SOURCE, K_ZERO, K_POISON };

struct inst {
	struct uffd *u;
	struct uffd_served *r;
	const unsigned char *buf; /* source bytes; buf[0] is source offset f_lo */
	uint64_t f_lo;
	uintptr_t delta;
	uint64_t fault; /* the faulting page, or UINT64_MAX (prefetch) */
	bool prefetch;	/* DONTWAKE, -ENOENT skipped, -EAGAIN waited out */
	bool ahead;	/* readahead: -ENOENT skipped, -EAGAIN ends it (faults fetch the rest) */
	int fault_r;	/* 1 until the faulting page is dealt with, then 0 or its error */
	unsigned tries; /* prefetch: -EAGAIN met in a row */
	long installed;
};

static enum kind page_kind(const struct uffd_served *r, uint64_t x, bool failed)
{
	if (r->discard == UFFD_DISCARD_ZERO && bit_get(r->discarded, page_index(r, x)))
		return K_ZERO;
	return failed ? K_POISON : K_SOURCE;
}

/* One resolving call over [x, x + len) of one kind; *done receives the bytes it did. */
static int fill_pages(struct inst *in, enum kind k, uint64_t x, uint64_t len, size_t *done)
{
	void *a = (void *)(uintptr_t)(x + in->delta);
	uint64_t mode = in->prefetch ? 1 : 0; /* every *_MODE_DONTWAKE is bit 0 */
	const struct uffd_served *r = in->r;
	const void *z;
	uint64_t i;
	int ret;

	switch (k) {
	case K_SOURCE:
		ret = uffd_copy(in->u, a, in->buf + (x - in->f_lo), (size_t)len, mode);
		break;
	case K_POISON:
		ret = uffd_poison(in->u, a, (size_t)len, mode);
		break;
	case K_ZERO:
	default:
		if (r->ps == (uint64_t)uffd_page_size()) {
			ret = uffd_zeropage(in->u, a, (size_t)len, mode);
			break;
		}
		/* hugetlbfs has no zero page: whole huge pages from the library's zero source. */
		z = uffd_zero_source((size_t)r->ps);
		if (!z) {
			*done = 0;
			return -ENOMEM;
		}
		for (i = 0; i < len; i += r->ps) {
			ret = uffd_copy(in->u, (char *)a + i, z, (size_t)r->ps, mode);
			if (ret) {
				*done = (size_t)i + uffd_last_done();
				return ret;
			}
		}
		*done = (size_t)len;
		return 0;
	}
	*done = ret ? uffd_last_done() : (size_t)len;
	return ret;
}

static void count(struct inst *in, enum kind k, uint64_t pages)
{
	struct serve_counters *st = &in->r->st;

	if (!pages)
		return;
	if (k == K_ZERO)
		uffd_stat_add(&st->pages_zeroed, pages);
	else if (k == K_POISON)
		uffd_stat_add(&st->poisoned, pages);
	else if (in->prefetch)
		uffd_stat_add(&st->prefetched, pages);
	else
		uffd_stat_add(&st->pages_installed, pages);
	in->installed += (long)pages;
}

/* The raw system call: glibc's nanosleep() is a cancellation point, and no libuffd call is. */
static void prefetch_backoff(void)
{
	struct timespec ts = { 0, 1000000L };

	uffd_syscall3(SYS_nanosleep, (long)&ts, 0, 0);
}

/*
 * Pages [*xp, e) of one kind. A page found present (-EEXIST: another thread's chunk, a prefetch,
 * the program's own write after a discard) is skipped and the rest goes on: abandoning the
 * chunk there would leave its later pages to fault one by one. Returns 0, or the error that
 * stopped it, with *xp where it stopped. A prefetch waits out -EAGAIN here only if @may_wait:
 * with u->lock held, the events it waits for could never be read.
 */
static int install_run(struct inst *in, enum kind k, uint64_t *xp, uint64_t e, bool may_wait)
{
	uint64_t ps = in->r->ps, x = *xp;
	int ret = 0;

	while (x < e) {
		size_t done = 0;

		ret = fill_pages(in, k, x, e - x, &done);
		done &= ~(size_t)(ps - 1);
		count(in, k, done / ps);
		mark_installed(in->r, x, done);
		if (done)
			in->tries = 0;
		if (in->fault >= x && in->fault < x + done)
			in->fault_r = 0;
		x += done;
		if (!ret)
			break;
		if (ret == -EEXIST || ((in->prefetch || in->ahead) && ret == -ENOENT)) {
			if (ret == -EEXIST) {
				uffd_stat_add(&in->r->st.eexist_skipped, 1);
				bit_set(in->r->present, page_index(in->r, x));
			}
			if (x == in->fault)
				in->fault_r = ret;
			x += ps;
			ret = 0;
			continue;
		}
		if (in->prefetch && ret == -EAGAIN) {
			if (!may_wait)
				break; /* the caller lets go of u->lock, then waits */
			if (in->tries++ < PREFETCH_EAGAIN_TRIES) {
				prefetch_backoff();
				continue;
			}
		}
		if (x == in->fault)
			in->fault_r = ret;
		break;
	}
	*xp = x;
	return ret;
}

/*
 * Install [lo, hi): source bytes, or poison when @failed, and zero pages where a discard says so.
 *
 * A REMOVE races with a chunk being installed: madvise(DONTNEED) sends it, waits until it is
 * read, then zaps the pages. A page installed before the read is zapped after it (harmless); one
 * installed after the zap would keep the image's bytes where the program expects zero, and a
 * copy checked against the discard bits before the read can still land after the zap (nothing in
 * the kernel orders a copy in progress against the zap). So where discards read zero, source
 * pages go in with u->lock held, checked and copied in one hold: a context with EVENT_REMOVE
 * reads under u->lock and marks the REMOVE's pages in the same hold (prep ->
 * uffd_serve_removed_locked()). Either the REMOVE was read, and marked, before the hold (the
 * check sees it) or it is read after the copy returned, and its zap comes after that. This works
 * for another process's memory too. The runs are bounded (GUARDED_RUN), so a dispatching thread
 * waits at most one of them to read. Zero and poison need no lock: they are right after a zap.
 */
static int install_span(struct inst *in, uint64_t lo, uint64_t hi, bool failed)
{
	struct uffd_served *r = in->r;
	uint64_t x = lo;
	int ret = 0;

	while (x < hi) {
		bool guard = r->guard && !failed;
		uint64_t e, lim = hi;
		enum kind k;

		if (guard)
			pthread_mutex_lock(&in->u->lock);
		k = page_kind(r, x, failed);
		if (guard && k == K_SOURCE) {
			lim = min64(hi, x + max64(GUARDED_RUN, r->ps));
		} else if (guard) {
			pthread_mutex_unlock(&in->u->lock);
			guard = false;
		}
		for (e = x + r->ps; e < lim && page_kind(r, e, failed) == k;)
			e += r->ps;
		ret = install_run(in, k, &x, e, !guard);
		if (guard)
			pthread_mutex_unlock(&in->u->lock);
		if (ret == -EAGAIN && in->prefetch && guard &&
		    in->tries++ < PREFETCH_EAGAIN_TRIES) {
			prefetch_backoff();
			continue;
		}
		if (ret)
			break;
	}
	return ret;
}

/*
 * Install [i_lo, i_hi) (install_span()). For a fault, returns what the faulting page got: 0,
 * -EEXIST (present already: the dispatcher wakes it), or the error that kept it from being
 * resolved.
 */
static int install(struct inst *in, uint64_t i_lo, uint64_t i_hi, bool failed)
{
	int ret = install_span(in, i_lo, i_hi, failed);

	if (in->prefetch || in->ahead || ret == -ESRCH)
		return ret;
	if (in->fault_r == 1) /* an error before the faulting page: that page alone */
		install_span(in, in->fault, in->fault + in->r->ps, failed);
	return in->fault_r == 1 ? ret : in->fault_r;
}

/* ---- fetching ---- */

static int verify(const struct uffd_served *r, const unsigned char *buf, uint64_t lo, uint64_t hi)
{
	unsigned char d[UFFD_SHA256_LEN];
	uint64_t x;

	if (!r->manifest)
		return 0;
	for (x = lo; x < hi; x += r->mchunk) {
		uint64_t n = min64(r->mchunk, hi - x);

		uffd_sha256(buf + (x - lo), (size_t)n, d);
		if (memcmp(d, r->manifest + (x / r->mchunk) * UFFD_SHA256_LEN, UFFD_SHA256_LEN) !=
		    0)
			return -EBADMSG;
	}
	return 0;
}

static int fetch(struct uffd_served *r, unsigned char *buf, const struct plan *p)
{
	uffd_stat_add(&r->st.fetches, 1);
	uffd_stat_add(&r->st.bytes_fetched, p->f_hi - p->f_lo);
	return uffd_source_read(r->src, buf, p->f_hi - p->f_lo, p->f_lo);
}

/*
 * The fetch of @p is over with @err: check it, install it, or poison its pages. Never installs
 * bytes that failed or did not match: without UFFD_FEATURE_POISON the error is returned, which
 * the dispatcher wakes the fault with. A fetch @ahead of any fault installs what is good with
 * nothing to report, and otherwise nothing at all: its faults fetch the chunk themselves.
 */
static int complete_fetch(struct uffd *u, struct uffd_served *r, unsigned char *buf,
			  const struct plan *p, int err, bool ahead)
{
	struct inst in = { .u = u,
			   .r = r,
			   .buf = buf,
			   .f_lo = p->f_lo,
			   .delta = p->delta,
			   .fault = ahead ? UINT64_MAX : p->fault,
			   .ahead = ahead,
			   .fault_r = 1 };
	int ret;

	if (!err)
		err = verify(r, buf, p->f_lo, p->f_hi);
	if (!err) {
		/* The source's last page may be short: the rest of it reads zero, as in a file. */
		if (p->i_hi > p->f_hi)
			memset(buf + (p->f_hi - p->f_lo), 0, (size_t)(p->i_hi - p->f_hi));
		return install(&in, p->i_lo, p->i_hi, false);
	}
	if (ahead)
		return err;
	uffd_stat_add(&r->st.errors, 1);
	if (!(u->features & UFFD_FEATURE_POISON)) {
		if (r->on_error)
			r->on_error(u, p->i_lo, p->i_hi - p->i_lo, err, r->arg);
		return err;
	}
	in.buf = NULL;
	ret = install(&in, p->i_lo, p->i_hi, true);
	if (r->on_error)
		r->on_error(u, p->i_lo, p->i_hi - p->i_lo, err, r->arg);
	return ret; /* what the faulting page got: poisoned (0), present, or the error */
}

/* The chunk around @pf: aligned in source offsets, clipped to its piece and the source's end. */
/* The chunk holding source offset @x of the piece @rg, as a fault at @x plans it. */
static bool plan_at(const struct uffd_served *r, const struct uffd_range *rg, uint64_t x,
		    struct plan *p)
{
	uintptr_t pstart = (uintptr_t)rg->start, pe = (uintptr_t)rg->end;
	uint64_t lo_r = rg->offset, hi_r = min64(lo_r + (pe - pstart), r->len);
	uint64_t fs = x & ~(r->unit - 1), fe = fs + r->unit;

	p->fault = x;
	p->i_lo = max64(fs, r->src_off + lo_r);
	p->i_hi = min64(fe, r->src_off + hi_r);
	if (r->src_len != UINT64_MAX)
		p->i_hi = min64(p->i_hi, (r->src_len + r->ps - 1) & ~(r->ps - 1));
	/* A manifest covers whole chunks of it: fetch them whole, install what is in the piece. */
	p->f_lo = r->manifest ? fs : p->i_lo;
	p->f_hi = min64(r->manifest ? fe : p->i_hi, r->src_len);
	p->delta = pstart - (uintptr_t)(r->src_off + lo_r);
	return x < p->i_hi;
}

static bool plan_fault(const struct uffd_served *r, const struct uffd_pagefault *pf, struct plan *p)
{
	uintptr_t a = (uintptr_t)pf->address & ~(uintptr_t)(r->ps - 1);
	uintptr_t pstart = (uintptr_t)pf->range.start;

	if (!pstart || a < pstart || a >= (uintptr_t)pf->range.end)
		return false;
	return plan_at(r, &pf->range, r->src_off + pf->range.offset + (a - pstart), p);
}

/* Appends the pages of [lo, hi) touched for the first time to the recorded order. */
static void record(struct uffd_served *r, uint64_t lo, uint64_t hi)
{
	uint64_t x, run = 0, n = 0;

	for (x = lo; x < hi; x += r->ps) {
		bool fresh = page_kind(r, x, false) == K_SOURCE &&
			     !bit_set(r->seen, page_index(r, x));

		if (fresh && n && run + n == x) {
			n += r->ps;
			continue;
		}
		if (n)
			uffd_order_add(r->record, run, n, NULL);
		run = x;
		n = fresh ? r->ps : 0;
	}
	if (n)
		uffd_order_add(r->record, run, n, NULL);
}

/* ---- fetches in flight ---- */

enum join { JOIN_OWN, JOIN_WAIT, JOIN_PRESENT };

/*
 * Before fetching @p's chunk: JOIN_WAIT when a fetch of the same plan is in flight (the fault is
 * left to it: its copy wakes the faulting thread, flight_end() wakes what the copy did not);
 * JOIN_PRESENT when none is but the faulting page was installed since its last discard (a fault
 * read before that install and delivered after: waking it is enough); else JOIN_OWN, with
 * p->flight set when the table had room for the fetch.
 *
 * JOIN_PRESENT is answered once per page and install (`woke`): should the page be missing after
 * all (memory zapped without a REMOVE, a DONTUNMAP'd range faulting again at its old address),
 * its thread faults again and that fault fetches. The present bits are set before the flight
 * ends, under fl_lock, so a fault that misses the flight sees them.
 */
/* The flight of @p's plan (same pages, same addresses), or NULL. With fl_lock. */
static struct flight *flight_find_locked(struct uffd_served *r, const struct plan *p)
{
	unsigned k;

	for (k = 0; k < r->nfl; k++)
		if (r->fl[k].lo == p->i_lo && r->fl[k].hi == p->i_hi && r->fl[k].delta == p->delta)
			return &r->fl[k];
	return NULL;
}

/* A flight for @p, none of whose faults waits yet: false if the table is full. With fl_lock. */
static bool flight_add_locked(struct uffd_served *r, const struct plan *p)
{
	if (r->nfl == FLIGHTS)
		return false;
	r->fl[r->nfl++] = (struct flight){
		.lo = p->i_lo, .hi = p->i_hi, .delta = p->delta, .w_lo = UINT64_MAX
	};
	return true;
}

static enum join flight_join(struct uffd_served *r, struct plan *p)
{
	size_t i = page_index(r, p->fault);
	enum join ret = JOIN_OWN;
	struct flight *f;

	p->flight = false;
	pthread_mutex_lock(&r->fl_lock);
	f = flight_find_locked(r, p);
	if (f) {
		f->w_lo = min64(f->w_lo, p->fault);
		f->w_hi = max64(f->w_hi, p->fault + r->ps);
		ret = JOIN_WAIT;
	}
	if (ret == JOIN_OWN && r->trust_present && bit_get(r->present, i) && !bit_set(r->woke, i))
		ret = JOIN_PRESENT;
	if (ret == JOIN_OWN)
		p->flight = flight_add_locked(r, p);
	pthread_mutex_unlock(&r->fl_lock);
	return ret;
}

/* @p's fetch is over and installed (or failed): later faults fetch anew, and the threads of the
 * faults that joined it are woken (@wake: the fd is still open), so none is left blocked where
 * the install stopped early or found a page present. */
static void flight_end(struct uffd *u, struct uffd_served *r, const struct plan *p, bool wake)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	struct flight *f;

	if (!p->flight)
		return;
	pthread_mutex_lock(&r->fl_lock);
	f = flight_find_locked(r, p);
	if (f) {
		lo = f->w_lo;
		hi = f->w_hi;
		*f = r->fl[--r->nfl];
	}
	pthread_mutex_unlock(&r->fl_lock);
	if (wake && lo < hi)
		uffd_wake(u, (void *)(uintptr_t)(lo + p->delta), (size_t)(hi - lo));
}

/* One more asynchronous fetch in flight on @u, unless @limit are already. */
static bool inflight_take(struct uffd *u, unsigned limit)
{
	unsigned n = atomic_load(&u->served_inflight);

	do {
		if (n >= limit)
			return false;
	} while (!atomic_compare_exchange_weak(&u->served_inflight, &n, n + 1));
	return true;
}

/* done() of an asynchronous fetch: finishes the deferred fault, from the source's thread. */
static void io_done(struct uffd_source_io *io, int err)
{
	struct serve_slot *s = (struct serve_slot *)io;
	struct uffd_pagefault pf;
	struct uffd_served *r;
	struct uffd *u;
	bool live;
	int ret;

	s->err = err;
	if (!(atomic_fetch_or(&s->state, 2) & 1))
		return; /* the callback has not returned yet: it finishes the fault itself */
	u = s->u;
	r = s->reg;
	pf = s->pf;
	/* uffd_close() waits for users to leave before it closes the fd (complete.c). */
	atomic_fetch_add(&u->users, 1);
	live = !atomic_load(&u->closed) && !atomic_load(&u->exited);
	ret = live ? complete_fetch(u, r, s->buf, &s->plan, err, false) : -ESRCH;
	flight_end(u, r, &s->plan, live && ret != -ESRCH);
	atomic_fetch_sub(&u->users, 1);
	slot_put(r, s);
	atomic_fetch_sub(&u->served_inflight, 1);
	/* Last: finishing the last deferred fault of a closed context frees it and r with it. */
	uffd_fault_finish(u, &pf, ret);
}

/* ---- readahead ---- */

/*
 * Whether @p's chunk has a page still to fetch: one from the source, neither present nor
 * discarded to zero. Racy by nature (a fault or a discard may change it the next moment): it
 * only saves fetches, and an install skips what it finds present.
 */
static bool chunk_wanted(const struct uffd_served *r, const struct plan *p)
{
	uint64_t x;

	for (x = p->i_lo; x < p->i_hi; x += r->ps)
		if (page_kind(r, x, false) == K_SOURCE && !bit_get(r->present, page_index(r, x)))
			return true;
	return false;
}

/* A flight for @p, a chunk no fault waits for yet: false if one is in flight or none is free. */
static bool flight_add(struct uffd_served *r, const struct plan *p)
{
	bool ok;

	pthread_mutex_lock(&r->fl_lock);
	ok = !flight_find_locked(r, p) && flight_add_locked(r, p);
	pthread_mutex_unlock(&r->fl_lock);
	return ok;
}

/*
 * done() of a readahead fetch, on the source's thread. The chunk goes in with wake-ups (a thread
 * may have faulted there before its fault was read), skipping what is present or unmapped; a
 * failed or refused fetch, or one whose piece of the map changed meanwhile, installs nothing
 * and poisons nothing: the faults that joined it are woken, fault again and fetch on demand,
 * where an error is handled as usual. The context is held by a reference of the fetch's own (it
 * may have been closed meanwhile: nothing is then installed).
 */
static bool piece_still(struct uffd *u, const struct uffd_served *r, const struct plan *p,
			uint64_t gen)
{
	uintptr_t a = (uintptr_t)(p->i_lo + p->delta);
	const struct uffd_node *n;
	bool same;

	if (atomic_load(&u->map_gen) == gen)
		return true;
	pthread_mutex_lock(&u->lock);
	n = uffd_rmap_find(&u->map, a);
	same = n && n->data == (const void *)r &&
	       n->offset + (a - n->start) == p->i_lo - r->src_off &&
	       (uintptr_t)(p->i_hi + p->delta) <= n->end;
	pthread_mutex_unlock(&u->lock);
	return same;
}

static void ahead_done(struct uffd_source_io *io, int err)
{
	struct serve_slot *s = (struct serve_slot *)io;
	struct uffd_served *r = s->reg;
	struct uffd *u = s->u;
	bool live;

	atomic_fetch_add(&u->users, 1);
	live = !atomic_load(&u->closed) && !atomic_load(&u->exited);
	/* No fault waits at these addresses for sure: if the map changed meanwhile (the range
	 * unmapped, moved, or replaced by another registration), they may hold something else. */
	if (live && !err && !piece_still(u, r, &s->plan, s->gen))
		err = -ENOENT;
	if (live)
		complete_fetch(u, r, s->buf, &s->plan, err, true);
	flight_end(u, r, &s->plan, live);
	atomic_fetch_sub(&u->users, 1);
	slot_put(r, s);
	atomic_fetch_sub(&u->served_inflight, 1);
	uffd_ctx_put(u); /* last: the context, and r with it, may go here */
}

/*
 * After an on-demand fetch of @p's chunk: start fetching the next r->ahead chunks of the
 * same piece that have a page missing and are not in flight, asynchronously, so that the faults
 * that follow a sequential-ish access find their chunk in flight (they join it) or in. Readahead
 * takes at most half of max_inflight, so that on-demand faults keep room of their own.
 */
static void fetch_ahead(struct uffd *u, struct uffd_served *r, const struct uffd_pagefault *pf,
			const struct plan *p)
{
	uint64_t x = (p->fault & ~(r->unit - 1)) + r->unit;
	unsigned k;

	for (k = 0; k < r->ahead; k++, x += r->unit) {
		struct serve_slot *s;
		struct plan q;

		if (!plan_at(r, &pf->range, x, &q))
			return; /* the piece (or the source) ends */
		q.flight = true;
		if (!inflight_take(u, (r->max_inflight + 1) / 2))
			return;
		/*
		 * The flight first, then the pages: a fetch marks what it installed before its
		 * flight ends, so a chunk whose fetch has just ended shows its pages here, and
		 * none is fetched twice.
		 */
		if (!flight_add(r, &q)) {
			atomic_fetch_sub(&u->served_inflight, 1);
			continue;
		}
		if (!chunk_wanted(r, &q)) {
			flight_end(u, r, &q, true);
			atomic_fetch_sub(&u->served_inflight, 1);
			continue;
		}
		s = slot_get(r);
		if (!s) {
			flight_end(u, r, &q, true);
			atomic_fetch_sub(&u->served_inflight, 1);
			return;
		}
		s->u = u;
		s->plan = q;
		s->io = (struct uffd_source_io){ .buf = s->buf,
						 .len = (size_t)(q.f_hi - q.f_lo),
						 .offset = q.f_lo,
						 .done = ahead_done,
						 .user = NULL };
		s->gen = atomic_load(&u->map_gen);
		atomic_fetch_add(&u->refs, 1);
		if (r->src->ops.read_async(r->src->impl, &s->io) != 0) {
			/* Refused: done() never runs. */
			flight_end(u, r, &q, true);
			slot_put(r, s);
			atomic_fetch_sub(&u->served_inflight, 1);
			uffd_ctx_put(u); /* never the last: the dispatching thread holds one */
			return;
		}
		/* Counted once started (done() may have run already: the counts are r's). */
		uffd_stat_add(&r->st.ahead, 1);
		uffd_stat_add(&r->st.fetches, 1);
		uffd_stat_add(&r->st.bytes_fetched, q.f_hi - q.f_lo);
	}
}

int uffd_serve_pagefault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct uffd_served *r;
	struct serve_slot *s;
	struct plan p;
	int ret, err;

	(void)arg;
	if (!u || !pf)
		return -EINVAL;
	r = find_served(u, pf->range.data);
	if (!r)
		return -ENOENT;
	if (pf->flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR))
		return uffd_default_pagefault(u, pf, NULL);
	if (!plan_fault(r, pf, &p))
		return -ENOENT;
	uffd_stat_add(&r->st.faults, 1);
	if (page_kind(r, p.fault, false) == K_ZERO) {
		/* Discarded: it reads zero, and nothing needs fetching. */
		struct inst in = {
			.u = u, .r = r, .delta = p.delta, .fault = p.fault, .fault_r = 1
		};

		return install(&in, p.fault, p.fault + r->ps, false);
	}
	switch (flight_join(r, &p)) {
	case JOIN_WAIT:
		/* Resolved by that fetch: the dispatching thread goes on to other faults. */
		uffd_stat_add(&r->st.joined, 1);
		return 0;
	case JOIN_PRESENT:
		uffd_stat_add(&r->st.joined, 1);
		return -EEXIST;
	default:
		break;
	}
	if (r->record)
		record(r, p.i_lo, p.i_hi);
	s = slot_get(r);
	if (!s) {
		flight_end(u, r, &p, true);
		return -ENOMEM;
	}
	if (r->src->ops.read_async && inflight_take(u, r->max_inflight)) {
		s->u = u;
		s->pf = *pf;
		s->plan = p;
		s->err = 0;
		atomic_store(&s->state, 0);
		s->io = (struct uffd_source_io){ .buf = s->buf,
						 .len = (size_t)(p.f_hi - p.f_lo),
						 .offset = p.f_lo,
						 .done = io_done,
						 .user = NULL };
		uffd_stat_add(&r->st.fetches, 1);
		uffd_stat_add(&r->st.bytes_fetched, p.f_hi - p.f_lo);
		ret = r->src->ops.read_async(r->src->impl, &s->io);
		/*
		 * The fault is handed off before fetching ahead, so that its own finish never waits
		 * for that. The dispatching thread's reference keeps u and r meanwhile.
		 */
		if (ret == 0 && !(atomic_fetch_or(&s->state, 1) & 2)) {
			if (r->ahead)
				fetch_ahead(u, r, pf, &p);
			return UFFD_FAULT_DEFERRED;
		}
		/* Refused (done() never runs), or done() ran already: finish here. */
		atomic_fetch_sub(&u->served_inflight, 1);
		err = ret;
		ret = complete_fetch(u, r, s->buf, &p, ret ? ret : s->err, false);
		flight_end(u, r, &p, ret != -ESRCH);
		slot_put(r, s);
		if (!err && r->ahead && ret != -ESRCH)
			fetch_ahead(u, r, pf, &p);
		return ret;
	}
	/* Synchronous, and past max_inflight too: the dispatching thread waits for its fetch and
	 * reads no more faults meanwhile, which is the back-pressure that bounds memory. */
	ret = complete_fetch(u, r, s->buf, &p, fetch(r, s->buf, &p), false);
	flight_end(u, r, &p, ret != -ESRCH);
	slot_put(r, s);
	return ret;
}

/* ---- discards ---- */

int uffd_serve_remove(struct uffd *u, const struct uffd_span *span, void *arg)
{
	uintptr_t at, end;
	struct uffd_range rg;

	(void)arg;
	if (!u || !span)
		return -EINVAL;
	at = (uintptr_t)span->start;
	end = (uintptr_t)span->end;
	while (at < end && uffd_range_next(u, (void *)at, &rg) == 0 && (uintptr_t)rg.start < end) {
		struct uffd_served *r = find_served(u, rg.data);

		if (r) {
			uintptr_t lo = max64(at, (uintptr_t)rg.start),
				  hi = min64(end, (uintptr_t)rg.end);

			mark_removed(r, rg.offset + (lo - (uintptr_t)rg.start),
				     rg.offset + (hi - (uintptr_t)rg.start));
		}
		at = (uintptr_t)rg.end;
	}
	return 0;
}

/*
 * Through the library's dispatch the pages are marked here, in the hold of u->lock that read the
 * REMOVE, and uffd_serve_remove() marks them again later, changing nothing: a fetch finishing in
 * between must already see them (install_span()).
 */
void uffd_serve_removed_locked(struct uffd *u, uintptr_t start, uintptr_t end)
{
	const struct uffd_node *n;
	uintptr_t at = start;

	while (at < end && (n = uffd_rmap_next(&u->map, at)) != NULL && n->start < end) {
		struct uffd_served *r = find_served(u, n->data);

		if (r) {
			uintptr_t lo = max64(at, n->start), hi = min64(end, n->end);

			mark_removed(r, n->offset + (lo - n->start), n->offset + (hi - n->start));
		}
		at = n->end;
	}
}

/* ---- uffd_serve() ---- */

static int check_config(const struct uffd *u, uintptr_t addr, size_t len,
			const struct uffd_serve_config *c, uint64_t ps)
{
	size_t i;

	/* Fetching ahead installs pages no fault touched: a recorded order would miss them. */
	if (!u || !c || !c->source || c->ahead > UFFD_SERVE_MAX_AHEAD || (c->ahead && c->record))
		return -EINVAL;
	for (i = 0; i < sizeof(c->reserved) / sizeof(c->reserved[0]); i++)
		if (c->reserved[i])
			return -EINVAL;
	if (!pow2(ps) || ps < (uint64_t)uffd_page_size() || ps > MAX_PAGE)
		return -EINVAL;
	if (!len || ((addr | len | c->offset) & (ps - 1)) || addr + len < addr ||
	    c->offset + len < c->offset)
		return -EINVAL;
	if (c->chunk && (!pow2(c->chunk) || c->chunk < ps || c->chunk > MAX_CHUNK))
		return -EINVAL;
	if (c->discard > UFFD_DISCARD_SOURCE || (c->flags & ~UFFD_SERVE_MAP_ONLY))
		return -EINVAL;
	if (c->modes &&
	    (!(c->modes & UFFDIO_REGISTER_MODE_MISSING) ||
	     (c->modes & ~(uint64_t)(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP))))
		return -EINVAL;
	if (c->manifest &&
	    (!pow2(c->manifest_chunk) || c->manifest_chunk < ps || c->manifest_chunk > MAX_CHUNK))
		return -EINVAL;
	/* Zero for a discarded page needs to hear of the discard: without REMOVE events the next
	 * touch would get the source's bytes, silently. */
	if (c->discard == UFFD_DISCARD_ZERO && !(u->features & UFFD_FEATURE_EVENT_REMOVE))
		return -EOPNOTSUPP;
	return 0;
}

static int served_new(struct uffd_served **out, const struct uffd *u, size_t len,
		      const struct uffd_serve_config *c, uint64_t ps, int64_t src_len)
{
	uint64_t pages = len / ps, words = (pages + 63) / 64;
	uint64_t bpage = (uint64_t)uffd_page_size();
	struct uffd_served *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->src = c->source;
	r->src_off = c->offset;
	r->len = len;
	r->src_len = src_len < 0 ? UINT64_MAX : (uint64_t)src_len;
	r->ps = ps;
	r->shift = (unsigned)__builtin_ctzll(ps);
	r->unit = max64(c->chunk ? c->chunk : ps, c->manifest ? c->manifest_chunk : 0);
	r->discard = c->discard;
	r->max_inflight = c->max_inflight ? c->max_inflight : DEFAULT_INFLIGHT;
	r->ahead = c->ahead;
	r->record = c->record;
	r->manifest = c->manifest;
	r->mchunk = c->manifest_chunk;
	r->on_error = c->on_error;
	r->arg = c->arg;
	r->slot_len = (size_t)(r->unit + ((sizeof(struct serve_slot) + bpage - 1) & ~(bpage - 1)));
	r->guard = c->discard == UFFD_DISCARD_ZERO;
	r->trust_present = (u->features & UFFD_FEATURE_EVENT_REMOVE) != 0;
	/* The bitmaps in one mapping: mmap'd memory is zero, and large ones cost no heap. */
	r->bm_len = (size_t)(((4 * words * sizeof(uint64_t)) + bpage - 1) & ~(bpage - 1));
	r->discarded = uffd_sys_mmap(r->bm_len);
	if (!r->discarded) {
		free(r);
		return -ENOMEM;
	}
	r->seen = r->discarded + words;
	r->present = r->seen + words;
	r->woke = r->present + words;
	pthread_mutex_init(&r->pool_lock, NULL);
	pthread_mutex_init(&r->fl_lock, NULL);
	*out = r;
	return 0;
}

int uffd_serve(struct uffd *u, void *addr, size_t len, const struct uffd_serve_config *cfg)
{
	uint64_t ps = cfg && cfg->page_size ? cfg->page_size : (uint64_t)uffd_page_size();
	uint64_t modes;
	struct uffd_callbacks saved;
	struct uffd_served *r;
	int64_t src_len;
	int ret;

	ret = check_config(u, (uintptr_t)addr, len, cfg, ps);
	if (ret)
		return ret;
	src_len = uffd_source_length(cfg->source);
	if (src_len < 0 && src_len != -EOPNOTSUPP)
		return (int)src_len;
	/* Every page must hold at least one byte of the source; the rest of a last, short page
	 * reads zero. A manifest needs the length to know its last chunk. */
	if (src_len >= 0 && cfg->offset + len > (((uint64_t)src_len + ps - 1) & ~(ps - 1)))
		return -ENXIO;
	if (cfg->manifest && src_len < 0)
		return -EINVAL;
	modes = cfg->modes ? cfg->modes : UFFDIO_REGISTER_MODE_MISSING;
	ret = served_new(&r, u, len, cfg, ps, src_len);
	if (ret)
		return ret;
	/* In the list before the kernel can send a fault for it, and the callbacks set before too:
	 * a fault in between would meet the default handler's zero page. */
	r->next = atomic_load(&u->served);
	while (!atomic_compare_exchange_weak(&u->served, &r->next, r))
		;
	saved = u->cb;
	uffd_on_pagefault(u, uffd_serve_pagefault, NULL);
	uffd_on_remove(u, uffd_serve_remove, NULL);
	if (cfg->flags & UFFD_SERVE_MAP_ONLY)
		ret = uffd_range_add(u, addr, len, modes, r);
	else
		ret = uffd_register(u, addr, len, modes, r);
	if (ret) {
		/* Nothing points at it: it stays on the list, empty, until the context goes. */
		u->cb = saved;
		r->dead = true;
		uffd_sys_munmap((void *)r->discarded, r->bm_len);
		r->discarded = r->seen = r->present = r->woke = NULL;
	}
	return ret;
}

int uffd_serve_get_stats(struct uffd *u, struct uffd_serve_stats *out)
{
	struct uffd_served *r;

	if (!u || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	for (r = atomic_load(&u->served); r; r = r->next) {
		out->faults += atomic_load(&r->st.faults);
		out->fetches += atomic_load(&r->st.fetches);
		out->bytes_fetched += atomic_load(&r->st.bytes_fetched);
		out->pages_installed += atomic_load(&r->st.pages_installed);
		out->pages_zeroed += atomic_load(&r->st.pages_zeroed);
		out->eexist_skipped += atomic_load(&r->st.eexist_skipped);
		out->prefetched += atomic_load(&r->st.prefetched);
		out->poisoned += atomic_load(&r->st.poisoned);
		out->errors += atomic_load(&r->st.errors);
		out->joined += atomic_load(&r->st.joined);
		out->ahead += atomic_load(&r->st.ahead);
	}
	return 0;
}

/* ---- uffd_prefetch() ---- */

struct prefetch {
	struct uffd *u;
	struct uffd_served *r;
	uintptr_t base; /* the registration's first byte */
	unsigned char *buf;
	uint64_t buf_len;
	uint64_t align; /* reads from the source start and end on it: the manifest's chunk */
	long installed;
};

/* [lo, hi) clipped to whole pages of the registration that hold source bytes. */
static void clip(const struct uffd_served *r, uint64_t *lo, uint64_t *hi)
{
	uint64_t end = r->src_off + r->len;

	if (r->src_len != UINT64_MAX)
		end = min64(end, (r->src_len + r->ps - 1) & ~(r->ps - 1));
	*lo = (max64(*lo, r->src_off) + r->ps - 1) & ~(r->ps - 1);
	*hi = min64(*hi, end) & ~(r->ps - 1);
}

static int prefetch_install(struct prefetch *pf, uint64_t f_lo, uint64_t lo, uint64_t hi)
{
	struct inst in = { .u = pf->u,
			   .r = pf->r,
			   .buf = pf->buf,
			   .f_lo = f_lo,
			   .delta = pf->base - (uintptr_t)pf->r->src_off,
			   .fault = UINT64_MAX,
			   .prefetch = true,
			   .fault_r = 1 };
	int ret = install(&in, lo, hi, false);

	pf->installed += in.installed;
	return ret;
}

/* Pieces of the order that one read of the source covers: adjacent runs coalesce. */
struct group {
	uint64_t lo, hi; /* the read */
	unsigned n;
	uint64_t piece[PREFETCH_PIECES][2];
};

static int group_flush(struct prefetch *pf, struct group *g)
{
	struct uffd_served *r = pf->r;
	unsigned i;
	int ret;

	if (!g->n)
		return 0;
	uffd_stat_add(&r->st.fetches, 1);
	uffd_stat_add(&r->st.bytes_fetched, g->hi - g->lo);
	ret = uffd_source_read(r->src, pf->buf, (size_t)(g->hi - g->lo), g->lo);
	if (!ret && verify(r, pf->buf, g->lo, g->hi)) {
		/* Left to the faults, whose path poisons and reports it. */
		g->n = 0;
		return 0;
	}
	for (i = 0; i < g->n && !ret; i++) {
		uint64_t lo = g->piece[i][0], hi = g->piece[i][1];

		if (hi > g->hi)
			memset(pf->buf + (g->hi - g->lo), 0, (size_t)(hi - g->hi));
		ret = prefetch_install(pf, g->lo, lo, hi);
	}
	g->n = 0;
	return ret;
}

static int prefetch_source(struct prefetch *pf, const struct uffd_order *order)
{
	struct uffd_served *r = pf->r;
	uint64_t step = pf->buf_len / 2;
	struct group *g = calloc(1, sizeof(*g));
	long i, n = uffd_order_count(order);
	int ret = 0;

	if (!g)
		return -ENOMEM;
	for (i = 0; i < n && !ret; i++) {
		uint64_t off, len, x, end;

		uffd_order_get(order, i, &off, &len, NULL);
		x = off;
		end = off + len;
		clip(r, &x, &end);
		for (; x < end && !ret; x = min64(end, x + step)) {
			uint64_t lo = x, hi = min64(end, x + step);
			uint64_t f_lo = lo & ~(pf->align - 1);
			uint64_t f_hi = min64((hi + pf->align - 1) & ~(pf->align - 1), r->src_len);

			if (g->n && (f_lo < g->lo || f_lo > g->hi || g->n == PREFETCH_PIECES ||
				     max64(f_hi, g->hi) - g->lo > pf->buf_len))
				ret = group_flush(pf, g);
			if (ret)
				break;
			if (!g->n) {
				g->lo = f_lo;
				g->hi = f_hi;
			}
			g->hi = max64(g->hi, f_hi);
			g->piece[g->n][0] = lo;
			g->piece[g->n][1] = hi;
			g->n++;
		}
	}
	if (!ret)
		ret = group_flush(pf, g);
	free(g);
	return ret;
}

/* The compacted file holds the order's pages back to back: one sequential read after another. */
static int prefetch_compact(struct prefetch *pf, const struct uffd_order *order,
			    struct uffd_source *compact)
{
	uint64_t total = 0, cpos = 0, cfill = 0, rpos = 0;
	long i, n = uffd_order_count(order);
	int ret = 0;

	for (i = 0; i < n; i++) {
		uint64_t off, len;

		uffd_order_get(order, i, &off, &len, NULL);
		total += len;
	}
	for (i = 0; i < n && !ret; i++) {
		uint64_t off, len, x;

		uffd_order_get(order, i, &off, &len, NULL);
		for (x = off; x < off + len && !ret;) {
			uint64_t take, lo, hi;

			if (rpos >= cpos + cfill) {
				cpos += cfill;
				cfill = min64(pf->buf_len, total - cpos);
				uffd_stat_add(&pf->r->st.fetches, 1);
				uffd_stat_add(&pf->r->st.bytes_fetched, cfill);
				ret = uffd_source_read(compact, pf->buf, (size_t)cfill, cpos);
				if (ret)
					break;
			}
			take = min64(off + len - x, cpos + cfill - rpos);
			lo = x;
			hi = x + take;
			clip(pf->r, &lo, &hi);
			if (lo < hi)
				ret = prefetch_install(pf, x - (rpos - cpos), lo, hi);
			x += take;
			rpos += take;
		}
	}
	return ret;
}

long uffd_prefetch(struct uffd *u, void *addr, const struct uffd_order *order,
		   struct uffd_source *compact)
{
	struct prefetch pf = { .u = u, .base = (uintptr_t)addr };
	struct uffd_range rg;
	int ret;

	if (!u || !addr || !order)
		return -EINVAL;
	if (uffd_range_find(u, addr, &rg) || rg.offset != 0 || rg.start != addr)
		return -EINVAL;
	pf.r = find_served(u, rg.data);
	if (!pf.r || uffd_order_has_regions(order) || (compact && pf.r->manifest))
		return -EINVAL;
	pf.align = pf.r->manifest ? pf.r->mchunk : pf.r->ps;
	pf.buf_len = max64(PREFETCH_BUF, 4 * max64(pf.align, pf.r->ps));
	pf.buf = uffd_sys_mmap((size_t)pf.buf_len);
	if (!pf.buf)
		return -ENOMEM;
	ret = compact ? prefetch_compact(&pf, order, compact) : prefetch_source(&pf, order);
	/* The pages went in with DONTWAKE: one wake for every thread that faulted meanwhile. */
	uffd_wake(u, addr, (size_t)pf.r->len);
	uffd_sys_munmap(pf.buf, (size_t)pf.buf_len);
	return ret ? ret : pf.installed;
}
