/* SPDX-License-Identifier: MIT */
/* uffd_dispatch() and uffd_read_events(): one batch from the fd through prep and complete. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/*
 * The threads inside a dispatch, innermost first, each with what it dispatches (a frame lives on
 * its thread's stack). initial-exec: the library's TLS is static, so no access allocates.
 */
_Thread_local struct uffd_frame *uffd_frames __attribute__((tls_model("initial-exec")));

/* Whether this thread is already dispatching @u, or running monitor @m or a context of it. */
bool uffd_frames_hold(const struct uffd *u, const struct uffd_monitor *m)
{
	const struct uffd_frame *f;

	for (f = uffd_frames; f; f = f->up) {
		if (u && f->u == u)
			return true;
		if (m && (f->m == m || (f->u && f->u->mon == m)))
			return true;
	}
	return false;
}

bool uffd_ctx_has_work(struct uffd *u)
{
	return atomic_load_explicit(&u->work, memory_order_relaxed) != 0;
}

/* A batch this thread is done with: back to the free list, or pending if faults are left. */
void uffd_batch_done(struct uffd *u, struct uffd_batch *b)
{
	if (b->pos < b->nprep) {
		pthread_mutex_lock(&u->lock);
		uffd_pending_push_locked(u, b);
		pthread_mutex_unlock(&u->lock);
	} else {
		uffd_batch_put(u, b);
	}
}

/*
 * Deliver what the context holds already: a stalled batch is prepped first (its events come
 * before anything unread), then the queued notifications, then the pending faults. Returns 0 or
 * the first error; what is left stays for the next call.
 */
/*
 * Finish the prep of a batch whose prep stopped (-ENOMEM): its events come before anything
 * unread. Once prepped it joins the pending list. 0, or -ENOMEM again.
 */
int uffd_resume_stalled(struct uffd *u)
{
	struct uffd_batch *b;
	int r = 0;

	pthread_mutex_lock(&u->lock);
	b = u->stalled;
	if (b) {
		r = uffd_prep_locked(u, b);
		if (!r)
			uffd_pending_push_locked(u, b);
	}
	pthread_mutex_unlock(&u->lock);
	return r;
}

int uffd_serve_work(struct uffd *u, int *handled)
{
	struct uffd_batch *b;
	int r = uffd_resume_stalled(u);

	if (r < 0)
		return r;
	/* Notifications before the faults read after them; a fault's EAGAIN may read more. */
	for (;;) {
		r = uffd_deliver_notes(u, handled);
		if (r < 0)
			return r;
		b = uffd_pending_pop(u);
		if (!b)
			return 0;
		r = uffd_deliver_batch(u, b, handled);
		uffd_batch_done(u, b);
		if (r < 0)
			return r;
	}
}

/*
 * Deliver a prepped batch's faults once the notifications read before them are delivered (by
 * this thread, or by the one delivering notifications now, which then serves the batch from the
 * pending list: no thread waits for another's callback).
 */
int uffd_deliver_prepped(struct uffd *u, struct uffd_batch *b, int *handled)
{
	int r = uffd_deliver_notes(u, handled);

	if (r == 0) {
		pthread_mutex_lock(&u->lock);
		if (!uffd_batch_ready_locked(u, b)) {
			uffd_pending_push_locked(u, b);
			pthread_mutex_unlock(&u->lock);
			return 0;
		}
		pthread_mutex_unlock(&u->lock);
		r = uffd_deliver_batch(u, b, handled);
	}
	uffd_batch_done(u, b);
	return r;
}

/* The statistics of @n messages of a fault batch, @bad of them undeliverable (as prep counts). */
static inline void count_served(struct uffd *u, unsigned n, unsigned bad)
{
	uffd_stat_add(&u->st.faults, n - bad);
	if (bad)
		uffd_stat_add(&u->st.unknown, bad);
}

/*
 * The range of the fast path's fault b->fpf. Its range field is a one-entry cache of the last
 * piece hit: faults come in runs within one registration, and a hit needs neither the map lock
 * nor a lookup nor a copy. map_gen changes with every change of the map (register, unregister,
 * prep), which empties the cache; a miss looks the address up and refills it (all zero when the
 * address is in no piece, which no later address can hit).
 */
__attribute__((noinline)) static void fault_range_lookup(struct uffd *u, struct uffd_batch *b)
{
	pthread_mutex_lock(&u->lock);
	uffd_fill_range_locked(u, &b->fpf);
	b->rc_gen = atomic_load_explicit(&u->map_gen, memory_order_relaxed);
	pthread_mutex_unlock(&u->lock);
}

static inline void fault_range(struct uffd *u, struct uffd_batch *b)
{
	uint64_t gen = atomic_load_explicit(&u->map_gen, memory_order_acquire);
	const struct uffd_range *r = &b->fpf.range;
	uintptr_t a = (uintptr_t)b->fpf.address;

	if (uffd_likely(gen == b->rc_gen &&
			a - (uintptr_t)r->start < (uintptr_t)r->end - (uintptr_t)r->start))
		return;
	fault_range_lookup(u, b);
}

static bool only_faults(const struct uffd_msg *m, unsigned n)
{
	const struct uffd_msg *end = m + n;

	for (; m != end; m++)
		if (m->event != UFFD_EVENT_PAGEFAULT)
			return false;
	return true;
}

/*
 * The rest of a fault batch once the fault in msgs[@i] was not resolved (@r): the messages after
 * it become the batch's items (decoded and prepped: their ranges, woken faults), so that the
 * -EAGAIN rule may read more meanwhile and an error leaves them for the next call, in order.
 */
__attribute__((noinline)) static int serve_rest(struct uffd *u, struct uffd_batch *b, int r,
						unsigned i, unsigned cnt, unsigned bad,
						int *handled)
{
	unsigned rest = cnt - i - 1;

	count_served(u, i + 1, bad);
	memmove(b->msgs, b->msgs + i + 1, (size_t)rest * sizeof(struct uffd_msg));
	b->nmsg = rest;
	b->nprep = b->pos = 0;
	if (rest) {
		pthread_mutex_lock(&u->lock);
		uffd_prep_locked(u, b); /* faults only: nothing to apply, it cannot fail */
		pthread_mutex_unlock(&u->lock);
	}
	r = uffd_finish_fault(u, &b->fpf, r, handled);
	*handled += (int)i + 1;
	if (r == -ESRCH) {
		b->pos = b->nprep;
		return 0;
	}
	if (r < 0)
		return r;
	return uffd_deliver_batch(u, b, handled);
}

/*
 * The fast path, for a batch of page faults only (the common case). With no layout event in the
 * batch prep has nothing to apply and nothing to wake, so each fault is decoded straight from the
 * read buffer, given its range and delivered, without items. The statistics are added once per
 * batch (or when leaving it early).
 */
static int serve_faults(struct uffd *u, struct uffd_batch *b, unsigned cnt, int *handled)
{
	const struct uffd_msg *m = b->msgs, *end = m + cnt;
	struct uffd_pagefault *pf = &b->fpf;
	unsigned bad = 0;

	for (; m != end; m++) {
		int r;

		if (uffd_unlikely(uffd_decode_pagefault(m, pf) != 0)) {
			bad++; /* as prep would: counted as unknown, woken, not delivered */
			uffd_wake_raw(u, m);
			continue;
		}
		fault_range(u, b);
		r = uffd_call_fault(u, pf);
		if (uffd_unlikely(r != 0)) {
			if (r == UFFD_FAULT_DEFERRED)
				continue;
			return serve_rest(u, b, r, (unsigned)(m - b->msgs), cnt, bad, handled);
		}
	}
	count_served(u, cnt, bad);
	*handled += (int)cnt;
	return 0;
}

/*
 * A batch just read (u->lock held where uffd_read_locks() says, __releases(u->lock)): the fast
 * path for faults only, else prep, the notifications and the faults.
 */
static inline int serve_batch(struct uffd *u, struct uffd_batch *b, unsigned n, int *handled)
{
	int r;

	/*
	 * The kernel sends events other than page faults only for the features it granted, so a
	 * context without them needs no scan; one message, as with one faulting thread, needs no
	 * loop to tell. Faults read while notifications wait in the queue go through prep too:
	 * they wait for those (uffd_deliver_prepped()). u->ncount is read under u->lock, which
	 * uffd_read_wait() holds for a context with event features.
	 */
	if (uffd_unlikely((u->features & UFFD_EVENT_FEATURES) &&
			  (u->ncount != 0 || (n == 1 ? b->msgs[0].event != UFFD_EVENT_PAGEFAULT :
						       !only_faults(b->msgs, n))))) {
		r = uffd_prep_read(u, b); /* releases the lock uffd_read_wait() took */
		if (r < 0)
			return r; /* b is the stalled batch now */
		return uffd_deliver_prepped(u, b, handled);
	}
	if (uffd_read_locks(u))
		pthread_mutex_unlock(&u->lock); /* taken by uffd_read_wait(): nothing to apply */
	r = serve_faults(u, b, n, handled);
	uffd_batch_done(u, b);
	return r;
}

static int ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

/*
 * uffd_dispatch() once the context is entered: serve what the context holds, else wait for and
 * serve one batch. A wait that finds nothing (another thread took what poll() saw) waits again
 * for what is left of the timeout: 0 is returned only when it has passed.
 */
static int dispatch_entered(struct uffd *u, int timeout_ms)
{
	struct timespec t0;
	int handled = 0, wait = timeout_ms, n, r;

	if (timeout_ms > 0)
		clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct uffd_batch *b;

		if (uffd_unlikely(uffd_ctx_has_work(u))) {
			r = uffd_serve_work(u, &handled);
			if (r < 0)
				return r;
			if (handled)
				return handled;
		}
		if (uffd_unlikely(atomic_load_explicit(&u->exited, memory_order_relaxed)))
			return -ESRCH;
		b = uffd_batch_get(u);
		if (uffd_unlikely(!b))
			return -ENOMEM;
		n = uffd_read_wait(u, b, wait);
		if (uffd_likely(n > 0)) {
			r = serve_batch(u, b, (unsigned)n, &handled);
			if (r == 0 && uffd_unlikely(uffd_ctx_has_work(u)))
				r = uffd_serve_work(u, &handled);
			if (r < 0)
				return r;
			if (uffd_likely(handled) || timeout_ms == 0)
				return handled;
			/*
			 * Everything read went to the thread delivering notifications (this batch's
			 * notifications join its queue, and its faults wait for them on the pending
			 * list, which that thread serves next): nothing was handled here, and 0 says
			 * the time ran out. Wait again for what is left of it.
			 */
		} else {
			uffd_batch_put(u, b);
			if (n < 0)
				return n;
			if (timeout_ms == 0)
				return 0;
		}
		if (timeout_ms > 0) {
			wait = timeout_ms - ms_since(&t0);
			if (wait <= 0)
				return 0;
		}
	}
}

int uffd_dispatch(struct uffd *u, int timeout_ms)
{
	struct uffd_frame f;
	int r;

	if (uffd_unlikely(!u || timeout_ms < -1))
		return -EINVAL;
	if (uffd_unlikely(uffd_frames != NULL) && uffd_frames_hold(u, NULL))
		return -EDEADLK;
	if (uffd_unlikely(!uffd_enter(u)))
		return -ESRCH;
	f.u = u;
	f.m = NULL;
	f.up = uffd_frames;
	uffd_frames = &f;
	r = dispatch_entered(u, timeout_ms);
	uffd_frames = f.up;
	uffd_leave(u);
	return r;
}

/* ---- the pull interface ---- */

/* Take the head of the notification queue if it is the item of @seq. */
static void nq_take_locked(struct uffd *u, uint64_t seq)
{
	if (u->ncount && u->nq[u->nhead].seq == seq) {
		u->nhead = (u->nhead + 1) % u->ncap;
		u->ncount--;
		atomic_fetch_sub_explicit(&u->work, 1, memory_order_relaxed);
	}
}

/* Copy @b's prepped events from b->pos to @evs, in kernel order; notifications leave the queue. */
static size_t take_batch(struct uffd *u, struct uffd_batch *b, struct uffd_event *evs, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&u->lock);
	while (n < max && b->pos < b->nprep) {
		struct uffd_qitem *it = &b->items[b->pos++];

		if (it->state != UFFD_Q_READY)
			continue;
		if (it->ev.kind != UFFD_EVT_PAGEFAULT)
			nq_take_locked(u, it->seq);
		evs[n++] = it->ev;
	}
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* Notifications queued by an earlier call, that no batch holds any more. */
static size_t take_notes(struct uffd *u, struct uffd_event *evs, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&u->lock);
	if (!u->notifying && !u->pending) {
		while (n < max && u->ncount) {
			evs[n++] = u->nq[u->nhead].ev;
			u->nhead = (u->nhead + 1) % u->ncap;
			u->ncount--;
			atomic_fetch_sub_explicit(&u->work, 1, memory_order_relaxed);
		}
	}
	pthread_mutex_unlock(&u->lock);
	return n;
}

static int read_events_entered(struct uffd *u, struct uffd_event *evs, size_t max, int timeout_ms)
{
	struct uffd_batch *b;
	size_t n;
	int r;

	r = uffd_resume_stalled(u);
	if (r < 0)
		return r;
	n = take_notes(u, evs, max);
	if (n)
		return (int)n;
	b = uffd_pending_pop(u);
	if (!b) {
		if (atomic_load(&u->exited))
			return -ESRCH;
		b = uffd_batch_get(u);
		if (!b)
			return -ENOMEM;
		r = uffd_read_wait(u, b, timeout_ms);
		if (r <= 0) {
			uffd_batch_put(u, b);
			return r;
		}
		r = uffd_prep_read(u, b); /* releases the lock uffd_read_wait() took */
		if (r < 0)
			return r; /* stalled: the next call preps and returns it */
	}
	n = take_batch(u, b, evs, max);
	uffd_batch_done(u, b);
	return (int)n;
}

int uffd_read_events(struct uffd *u, struct uffd_event *evs, size_t max, int timeout_ms)
{
	struct uffd_frame f;
	int r;

	if (!u || !evs || max == 0 || timeout_ms < -1)
		return -EINVAL;
	if (uffd_frames_hold(u, NULL))
		return -EDEADLK;
	if (!uffd_enter(u))
		return -ESRCH;
	f.u = u;
	f.m = NULL;
	f.up = uffd_frames;
	uffd_frames = &f;
	r = read_events_entered(u, evs, max, timeout_ms);
	uffd_frames = f.up;
	uffd_leave(u);
	return r;
}
