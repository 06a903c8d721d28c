/* SPDX-License-Identifier: MIT */
/* Reading batches, prep (apply layout events with no user code) and complete (callbacks). */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "internal.h"

/*
 * The queue: items [qhead, qprep) are prepped (READY or DROP) and wait for delivery; items
 * [qprep, qtail) were read from the kernel but not yet prepped (prep stopped on -ENOMEM and
 * resumes on the next call). Nothing read is ever thrown away: an error leaves the rest of the
 * queue for the next call.
 */

static unsigned qnext(const struct uffd *u, unsigned i)
{
	return i + 1 == u->qcap ? 0 : i + 1;
}

static unsigned qused(const struct uffd *u)
{
	return u->qtail >= u->qhead ? u->qtail - u->qhead : u->qcap - u->qhead + u->qtail;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void count_kind(struct uffd *u, enum uffd_event_kind kind)
{
	switch (kind) {
	case UFFD_EVT_PAGEFAULT:
		uffd_stat_add(&u->st.faults, 1);
		break;
	case UFFD_EVT_FORK:
		uffd_stat_add(&u->st.forks, 1);
		break;
	case UFFD_EVT_REMAP:
		uffd_stat_add(&u->st.remaps, 1);
		break;
	case UFFD_EVT_REMOVE:
		uffd_stat_add(&u->st.removes, 1);
		break;
	case UFFD_EVT_UNMAP:
		uffd_stat_add(&u->st.unmaps, 1);
		break;
	default:
		uffd_stat_add(&u->st.unknown, 1);
		break;
	}
}

/* Whether a read may return events that change the map (UNMAP, REMAP, FORK): see read_raw(). */
static bool read_locks(const struct uffd *u)
{
	return u->features &
	       (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_FORK);
}

/* After read_raw() returned messages: take u->lock for prep, unless the read holds it already. */
static void lock_for_prep(struct uffd *u)
{
	if (!read_locks(u))
		pthread_mutex_lock(&u->lock);
}

/*
 * One non-blocking read of up to @max messages (at most a batch) into u->msgs. Returns the number
 * of messages, 0 when none were waiting, or a negative errno (EMFILE and ENFILE mean a FORK
 * event's fd could not be installed: the kernel keeps the event).
 *
 * When it returns messages of a context that can receive layout events (read_locks()), it
 * returns with u->lock HELD, and the caller releases it once prep has applied them. The read()
 * itself releases the threads blocked in munmap, mremap or fork on these events; one of them may
 * at once register the same addresses again, and uffd_register() takes u->lock, so it waits until
 * prep has cut the old range and then records the new one. Without the lock, prep would cut the
 * fresh registration out of the map. A context without those features reads only page faults
 * (and REMOVE, which changes no registration), so it reads without the lock, which would cost
 * about as much as the rest of serving a fault (callgrind: uffd-bench --only callgrind).
 */
static inline __attribute__((always_inline)) int read_raw(struct uffd *u, unsigned max)
{
	bool locks = read_locks(u);
	ssize_t n;
	unsigned cnt;

	if (max > u->batch)
		max = u->batch;
	if (max == 0)
		return 0;
	if (locks)
		pthread_mutex_lock(&u->lock);
	n = uffd_sys_read(u->fd, u->msgs, (size_t)max * sizeof(struct uffd_msg));
	cnt = n > 0 ? (unsigned)((size_t)n / sizeof(struct uffd_msg)) : 0;
	if (cnt == 0) {
		if (locks)
			pthread_mutex_unlock(&u->lock);
		return n == -EAGAIN || n >= 0 ? 0 : (int)n;
	}
	uffd_stat_add(&u->st.reads, 1);
	uffd_stat_add(&u->st.messages, cnt);
	return (int)cnt;
}

/* Decode u->msgs[from, to) into the queue's tail, not prepped. The queue must have the room. */
static void enqueue(struct uffd *u, unsigned from, unsigned to)
{
	unsigned i;

	for (i = from; i < to; i++) {
		struct uffd_qitem *it = &u->q[u->qtail];

		int d = uffd_event_decode(&u->msgs[i], sizeof(struct uffd_msg), &it->ev);

		/* A REMAP of length 0 is what the kernel sends when mremap duplicates a shared
		 * mapping: nothing moved, but the user should hear of it. */
		if (d && !(it->ev.kind == UFFD_EVT_REMAP && it->ev.remap.len == 0)) {
			/* A malformed known event: keep the bytes, report it as unknown. */
			memset(&it->ev, 0, sizeof(it->ev));
			it->ev.kind = UFFD_EVT_UNKNOWN;
			memcpy(it->ev.raw, &u->msgs[i], sizeof(it->ev.raw));
		}
		it->ev.ctx = u;
		it->state = UFFD_Q_RAW;
		it->tries = 0;
		count_kind(u, it->ev.kind);
		u->qtail = qnext(u, u->qtail);
	}
}

static int prep_locked(struct uffd *u);

/* One non-blocking read of up to @max messages into the queue's tail, decoded and prepped. */
static int read_batch(struct uffd *u, unsigned max)
{
	unsigned room = u->qcap - 1 - qused(u);
	int n;

	if (max > room)
		max = room;
	n = read_raw(u, max);
	if (n > 0) {
		lock_for_prep(u);
		enqueue(u, 0, (unsigned)n);
		prep_locked(u);
		pthread_mutex_unlock(&u->lock);
	}
	return n;
}

static bool span_has(uintptr_t s, uintptr_t e, uintptr_t a)
{
	return a >= s && a < e;
}

/* Whether an earlier item of this prep run already notifies the same (kind, start, end). */
static bool duplicate_span(const struct uffd *u, unsigned from, unsigned upto,
			   const struct uffd_event *ev)
{
	unsigned i;

	for (i = from; i != upto; i = qnext(u, i)) {
		const struct uffd_qitem *o = &u->q[i];

		if (o->state == UFFD_Q_READY && o->ev.kind == ev->kind &&
		    o->ev.unmap.start == ev->unmap.start && o->ev.unmap.end == ev->unmap.end)
			return true;
	}
	return false;
}

/* Make a fork child's context: mmap only, no malloc (the forker may hold glibc's locks). */
static int make_child(struct uffd *u, struct uffd_event *ev)
{
	struct uffd_config cfg = { .flags = u->flags, .batch = u->batch, .spin_us = u->spin_us };
	struct uffd *c;
	int ret;

	ret = uffd_ctx_new(ev->fork.fd, u->features, &cfg, &c);
	if (ret)
		return ret;
	ret = uffd_rmap_clone(&c->map, &u->map);
	if (ret) {
		c->fd = -1; /* the fd stays with the queued event */
		uffd_ctx_free(c);
		return ret;
	}
	c->cb = u->cb;
	ev->fork.child = c;
	return 0;
}

/*
 * REMAP when the context also has EVENT_UNMAP: copy the pieces to their new place and leave the
 * old ones, because the kernel follows every real move with an UNMAP of the old range, which
 * cuts them - except after mremap(MREMAP_DONTUNMAP), where the old range stays mapped and
 * registered, and the REMAP is all the kernel sends (seen on 6.18). The event does not say which
 * it was, so copying is the only way to be right in both cases.
 */
static int copy_pieces(struct uffd *u, uintptr_t from, uintptr_t to, size_t len)
{
	uintptr_t end = from + len, at = from;
	const struct uffd_node *n;
	long pieces = 0;
	int ret;

	if ((to < end && to + len > from) || end < from || to + len < to)
		return uffd_rmap_move(&u->map, from, to, len); /* never from mremap; be safe */
	for (n = uffd_rmap_next(&u->map, from); n && n->start < end; n = n->next)
		pieces++;
	/* Each insert may split one piece at each edge: reserve it all so none can fail. */
	ret = uffd_rmap_reserve(&u->map, (size_t)(3 * pieces + 4));
	if (ret)
		return ret;
	while (at < end && (n = uffd_rmap_next(&u->map, at)) && n->start < end) {
		uintptr_t s = n->start > from ? n->start : from;
		uintptr_t e = n->end < end ? n->end : end;
		void *data = n->data;
		size_t off = n->offset + (s - n->start);
		uint64_t modes = n->modes;

		ret = uffd_rmap_insert(&u->map, s - from + to, e - from + to, data, off, modes);
		if (ret)
			return ret;
		at = e;
	}
	return 0;
}

/* Apply one layout event to the map; called with u->lock held. */
static int apply_layout(struct uffd *u, struct uffd_event *ev)
{
	switch (ev->kind) {
	case UFFD_EVT_UNMAP:
		return uffd_rmap_cut(&u->map, (uintptr_t)ev->unmap.start, (uintptr_t)ev->unmap.end);
	case UFFD_EVT_REMAP:
		if (u->features & UFFD_FEATURE_EVENT_UNMAP)
			return copy_pieces(u, (uintptr_t)ev->remap.from, (uintptr_t)ev->remap.to,
					   ev->remap.len);
		return uffd_rmap_move(&u->map, (uintptr_t)ev->remap.from, (uintptr_t)ev->remap.to,
				      ev->remap.len);
	case UFFD_EVT_FORK:
		return ev->fork.child ? 0 : make_child(u, ev);
	default:
		return 0;
	}
}

/* The span an event takes away from the address space, if any. */
static bool gone_span(const struct uffd_event *ev, uintptr_t *s, uintptr_t *e)
{
	if (ev->kind == UFFD_EVT_UNMAP) {
		*s = (uintptr_t)ev->unmap.start;
		*e = (uintptr_t)ev->unmap.end;
		return true;
	}
	if (ev->kind == UFFD_EVT_REMAP) {
		*s = (uintptr_t)ev->remap.from;
		*e = *s + ev->remap.len;
		return true;
	}
	return false;
}

static void wake_page(struct uffd *u, uintptr_t addr)
{
	uintptr_t ps = (uintptr_t)uffd_page_size();
	struct uffdio_range r = { .start = addr & ~(ps - 1), .len = ps };

	/* UFFDIO_WAKE has no VMA check: it works on ranges already unmapped. */
	uffd_sys_ioctl(u->fd, UFFDIO_WAKE, &r);
	uffd_stat_add(&u->st.faults_woken, 1);
}

/*
 * prep: with the map locked and no user code running, apply every raw item's layout change in
 * kernel order, drop duplicate UNMAP spans, fill each fault's range, and wake (instead of delivering)
 * faults that lie in a span this run unmapped or moved away. Stops at the first item that
 * cannot be applied (-ENOMEM), leaving it raw for the next call.
 */
static int prep_locked(struct uffd *u)
{
	unsigned start = u->qprep, i, j;
	bool changed = false;
	int ret = 0;

	if (start == u->qtail)
		return 0;
	for (i = start; i != u->qtail; i = qnext(u, i)) {
		struct uffd_qitem *it = &u->q[i];

		/*
		 * One UNMAP per (context, start, end), as has_unmap_ctx() does in the kernel. Not
		 * REMOVE: a thread released by the read() can madvise the same span again before the
		 * read returns, and that second REMOVE is a real, separate event (the soak test
		 * counts them against the target's log).
		 */
		if (it->ev.kind == UFFD_EVT_UNMAP && duplicate_span(u, start, i, &it->ev)) {
			it->state = UFFD_Q_DROP;
			continue;
		}
		ret = apply_layout(u, &it->ev);
		if (ret)
			break;
		if (it->ev.kind == UFFD_EVT_UNMAP || it->ev.kind == UFFD_EVT_REMAP)
			changed = true;
		it->state = UFFD_Q_READY;
	}
	if (changed)
		uffd_stat_add(&u->map_gen, 1);
	/* Faults of this run: fill the range, or wake those whose page went away. */
	for (j = start; j != i; j = qnext(u, j)) {
		struct uffd_qitem *it = &u->q[j];
		uintptr_t a, s, e;
		const struct uffd_node *n;
		unsigned k;
		bool gone = false;

		if (it->ev.kind != UFFD_EVT_PAGEFAULT || it->state != UFFD_Q_READY)
			continue;
		a = (uintptr_t)it->ev.pagefault.address;
		for (k = start; k != i && !gone; k = qnext(u, k))
			gone = gone_span(&u->q[k].ev, &s, &e) && span_has(s, e, a);
		if (gone) {
			it->state = UFFD_Q_DROP;
			wake_page(u, a);
			continue;
		}
		n = uffd_rmap_find(&u->map, a);
		if (n)
			uffd_rmap_fill(n, &it->ev.pagefault.range);
		else
			memset(&it->ev.pagefault.range, 0, sizeof(it->ev.pagefault.range));
	}
	u->qprep = i;
	return ret;
}

static int prep(struct uffd *u)
{
	int ret;

	if (u->qprep == u->qtail)
		return 0;
	pthread_mutex_lock(&u->lock);
	ret = prep_locked(u);
	pthread_mutex_unlock(&u->lock);
	return ret;
}

/*
 * Latency mode: re-read the fd without blocking for up to spin_us (less if @timeout_ms is
 * shorter), so that a message is taken the moment it arrives, without the cost of waking a
 * sleeping thread (~20-50 us on another CPU). Returns what the last read returned; on 0,
 * *timeout_ms is what is left of it.
 */
__attribute__((noinline)) static int spin_read(struct uffd *u, int *timeout_ms)
{
	uint64_t t0 = now_us(), lim = u->spin_us, spent;
	int n;

	if (*timeout_ms > 0 && (uint64_t)*timeout_ms * 1000u < lim)
		lim = (uint64_t)*timeout_ms * 1000u;
	do {
		n = read_raw(u, u->batch);
		if (n != 0)
			return n;
		spent = now_us() - t0;
	} while (spent < lim);
	if (*timeout_ms > 0)
		*timeout_ms = spent / 1000u >= (uint64_t)*timeout_ms ?
				      0 :
				      *timeout_ms - (int)(spent / 1000u);
	return 0;
}

/* After this many waits that polled first, the next one reads first again (see read_wait). */
#define POLL_FIRST_RUN 64u

/*
 * Read a batch into u->msgs, waiting up to @timeout_ms for one. Returns the number of messages
 * (with u->lock held where read_raw() takes it), 0 on timeout, or a negative errno.
 *
 * A non-blocking fd needs a poll() to sleep and a read() to take the messages. Reading first
 * costs one syscall when messages are waiting and three (read, poll, read) when the fd is empty;
 * polling first costs two either way. A handler faster than its faulting threads mostly finds
 * the fd empty: the faults it just resolved are still being retried (so with one faulting thread,
 * and with a few, whose batch was served together). So a wait reads first while that finds
 * messages; once a read finds the fd empty, the next waits poll first, until a read fills a
 * whole batch (more are likely waiting) or POLL_FIRST_RUN waits have passed, when one read
 * first tests the fd again (one wasted read in that many on an idle fd).
 */
static inline __attribute__((always_inline)) int poll_read(struct uffd *u, int timeout_ms)
{
	int n = uffd_sys_poll1(u->fd, timeout_ms);

	if (n <= 0)
		return n;
	n = read_raw(u, u->batch);
	if ((unsigned)n == u->batch)
		u->poll_first = 0;
	return n;
}

/* read_wait() when it reads first: and when that finds the fd empty, spins or polls. */
__attribute__((noinline)) static int read_first(struct uffd *u, int timeout_ms)
{
	int n = read_raw(u, u->batch);

	if (n != 0 || timeout_ms == 0)
		return n;
	u->poll_first = 1;
	if (u->spin_us) {
		n = spin_read(u, &timeout_ms);
		if (n != 0 || timeout_ms == 0)
			return n;
	}
	return poll_read(u, timeout_ms);
}

static inline __attribute__((always_inline)) int read_wait(struct uffd *u, int timeout_ms)
{
	if (timeout_ms == 0 || u->poll_first == 0 || u->spin_us)
		return read_first(u, timeout_ms);
	if (++u->poll_first > POLL_FIRST_RUN)
		u->poll_first = 0;
	return poll_read(u, timeout_ms);
}

/*
 * Read one batch and prep it. Items already queued (left by an earlier error) are prepped and
 * delivered first, without reading. Returns the number of messages read, 0 on timeout, or a
 * negative errno.
 */
static int fill(struct uffd *u, int timeout_ms)
{
	int n, ret;

	if (u->qprep != u->qtail)
		return prep(u);
	if (u->qhead != u->qtail)
		return 0;
	n = read_wait(u, timeout_ms);
	if (n <= 0)
		return n;
	lock_for_prep(u);
	enqueue(u, 0, (unsigned)n);
	ret = prep_locked(u);
	pthread_mutex_unlock(&u->lock);
	return ret < 0 ? ret : n;
}

static int check_args(struct uffd *u, int timeout_ms)
{
	if (!u || timeout_ms < -1)
		return -EINVAL;
	if (atomic_load(&u->exited) && u->qhead == u->qtail)
		return -ESRCH;
	return 0;
}

int uffd_read_events(struct uffd *u, struct uffd_event *evs, size_t max, int timeout_ms)
{
	size_t n = 0;
	int ret = check_args(u, timeout_ms);

	if (ret)
		return ret;
	if (!evs || max == 0)
		return -EINVAL;
	if (u->qhead == u->qprep) {
		ret = fill(u, timeout_ms);
		if (ret < 0 && u->qhead == u->qprep)
			return ret;
	}
	while (n < max && u->qhead != u->qprep) {
		struct uffd_qitem *it = &u->q[u->qhead];

		u->qhead = qnext(u, u->qhead);
		if (it->state == UFFD_Q_READY)
			evs[n++] = it->ev;
	}
	return (int)n;
}

/* ---- complete ---- */

static bool still_registered(struct uffd *u, struct uffd_pagefault *pf)
{
	const struct uffd_node *n;
	bool had = pf->range.start != NULL;

	pthread_mutex_lock(&u->lock);
	n = uffd_rmap_find(&u->map, (uintptr_t)pf->address);
	if (n)
		uffd_rmap_fill(n, &pf->range);
	pthread_mutex_unlock(&u->lock);
	/* A fault that never had a range (an mremap-grown tail) is left to the kernel to judge. */
	return n || !had;
}

/*
 * Wait before redelivering a fault that met -EAGAIN. The kernel lowers its layout-changing state
 * only when the blocked sender runs again after the read, which on a loaded machine takes longer
 * than a few yields: yield first, then sleep a little longer each time (at most ~5 ms in all).
 */
static void eagain_backoff(unsigned tries)
{
	struct timespec ts = { 0, 0 };

	if (tries <= 3) {
		sched_yield();
		return;
	}
	ts.tv_nsec = (long)(tries - 3) * 50000L;
	nanosleep(&ts, NULL);
}

static inline int call_fault(struct uffd *u, const struct uffd_pagefault *pf)
{
	return u->cb.pagefault(u, pf, u->cb.pagefault_arg);
}

/* The retry rules of the contract, given the result @r of a first delivery of @pf.
 * 0 = go on, <0 = stop with it. */
static int finish_fault(struct uffd *u, struct uffd_pagefault *pf, int r)
{
	unsigned tries = 0;

	for (;; r = call_fault(u, pf)) {
		if (r == 0)
			return 0;
		if (r == -EAGAIN) {
			/* A layout change is pending: read and apply it, then try again. */
			if (tries++ >= UFFD_EAGAIN_TRIES) {
				wake_page(u, (uintptr_t)pf->address);
				return 0;
			}
			read_batch(u, u->batch);
			prep(u);
			if (!still_registered(u, pf)) {
				wake_page(u, (uintptr_t)pf->address);
				return 0;
			}
			uffd_stat_add(&u->st.eagain_retries, 1);
			eagain_backoff(tries);
			continue;
		}
		if (r == -EEXIST || r == -ENOENT) {
			wake_page(u, (uintptr_t)pf->address);
			return 0;
		}
		if (r == -ESRCH) {
			uffd_ctx_report_exit(u);
			return -ESRCH;
		}
		wake_page(u, (uintptr_t)pf->address);
		return r;
	}
}

static int deliver_fault(struct uffd *u, struct uffd_pagefault *pf)
{
	return finish_fault(u, pf, call_fault(u, pf));
}

/*
 * A monitored parent's child is added to the monitor after on_fork keeps it. If that fails
 * (-ENOMEM from epoll), closing the child would let the child process run unmonitored and read
 * zero pages where its memory should have been served: the item is kept instead (it->tries marks
 * that on_fork has run) and the next dispatch retries the adoption.
 */
static int deliver_fork(struct uffd *u, struct uffd_qitem *it)
{
	struct uffd *child = it->ev.fork.child;
	int r = 0;

	if (!it->tries && u->cb.fork)
		r = u->cb.fork(u, child, u->cb.fork_arg);
	it->tries = 1;
	if (r == 0 && child->mon)
		return 0; /* on_fork placed it in a monitor of its choosing: it is served there */
	if (r == 0 && u->mon) {
		r = uffd_monitor_adopt_child(u->mon, child);
		if (r < 0)
			return r;
	} else if (r == 0 && !u->cb.fork) {
		r = -ECHILD; /* nobody would serve it: let the child run unmonitored */
	}
	if (r < 0)
		uffd_close(child);
	return 0;
}

/* complete: deliver prepped items in kernel order with no lock held. */
static int complete(struct uffd *u, int *handled)
{
	while (u->qhead != u->qprep) {
		unsigned at = u->qhead;
		struct uffd_qitem *it = &u->q[at];
		struct uffd_event ev;
		int r = 0;

		/* Take the item off first: callbacks may read more into the queue. */
		u->qhead = qnext(u, u->qhead);
		if (it->state != UFFD_Q_READY)
			continue;
		ev = it->ev;
		switch (ev.kind) {
		case UFFD_EVT_PAGEFAULT:
			r = deliver_fault(u, &ev.pagefault);
			break;
		case UFFD_EVT_FORK:
			r = deliver_fork(u, it);
			if (r < 0) {
				u->qhead = at; /* kept for the next dispatch */
				return r;
			}
			break;
		case UFFD_EVT_REMAP:
			if (u->cb.remap)
				r = u->cb.remap(u, &ev.remap, u->cb.remap_arg);
			break;
		case UFFD_EVT_REMOVE:
			if (u->cb.remove)
				r = u->cb.remove(u, &ev.remove, u->cb.remove_arg);
			break;
		case UFFD_EVT_UNMAP:
			if (u->cb.unmap)
				r = u->cb.unmap(u, &ev.unmap, u->cb.unmap_arg);
			break;
		default:
			break;
		}
		(*handled)++;
		if (r == -ESRCH && ev.kind == UFFD_EVT_PAGEFAULT)
			return 0;
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * The range of the fast path's fault u->fpf. Its range field is a one-entry cache of the last
 * piece hit: faults come in runs within one registration, and a hit needs neither the map lock
 * nor a lookup nor a copy. map_gen changes with every change of the map (register, unregister,
 * prep), which empties the cache; a miss looks the address up and refills it (all zero when the
 * address is in no piece, which no later address can hit).
 */
__attribute__((noinline)) static void fault_range_lookup(struct uffd *u, uintptr_t a)
{
	const struct uffd_node *n;

	pthread_mutex_lock(&u->lock);
	n = uffd_rmap_find(&u->map, a);
	uffd_rmap_fill(n, &u->fpf.range);
	u->rc_gen = atomic_load_explicit(&u->map_gen, memory_order_relaxed);
	pthread_mutex_unlock(&u->lock);
}

static inline void fault_range(struct uffd *u, uintptr_t a)
{
	uint64_t gen = atomic_load_explicit(&u->map_gen, memory_order_acquire);
	const struct uffd_range *r = &u->fpf.range;

	if (uffd_likely(gen == u->rc_gen &&
			a - (uintptr_t)r->start < (uintptr_t)r->end - (uintptr_t)r->start))
		return;
	fault_range_lookup(u, a);
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
 * The fast path, for a batch of page faults only (the common case). With no layout event in the
 * batch prep has nothing to apply and nothing to wake, so each fault is decoded straight from the
 * read buffer, given its range and delivered, without the queue. If a callback does not resolve
 * its fault, the rest of the batch is queued (and prepped) first: the -EAGAIN retry reads more
 * messages into the read buffer, and a stop leaves the rest for the next call, in order. The
 * statistics are added once per batch (or when leaving it early).
 */
/* The statistics of @n messages of a fault batch, @bad of them undeliverable (as prep counts). */
static inline void count_served(struct uffd *u, unsigned n, unsigned bad)
{
	uffd_stat_add(&u->st.faults, n - bad);
	if (bad)
		uffd_stat_add(&u->st.unknown, bad);
}

/* The rest of a fault batch once the fault at msgs[@i] was not resolved (@r); see below. */
__attribute__((noinline)) static int serve_rest(struct uffd *u, struct uffd_pagefault *pf, int r,
						unsigned i, unsigned cnt, unsigned bad)
{
	int handled = (int)i + 1;

	count_served(u, i + 1, bad);
	enqueue(u, i + 1, cnt);
	prep(u);
	r = finish_fault(u, pf, r);
	if (r == -ESRCH)
		return handled;
	if (r < 0)
		return r;
	r = complete(u, &handled);
	return r < 0 ? r : handled;
}

/* Returns the number of messages handled, or a negative errno. */
static int serve_faults(struct uffd *u, unsigned cnt)
{
	const struct uffd_msg *m = u->msgs, *end = m + cnt;
	unsigned bad = 0;

	for (; m != end; m++) {
		struct uffd_pagefault *pf = &u->fpf;
		int r;

		if (uffd_unlikely(uffd_decode_pagefault(m, pf) != 0)) {
			bad++; /* as prep would: counted as unknown, not delivered */
			continue;
		}
		fault_range(u, (uintptr_t)pf->address);
		r = call_fault(u, pf);
		if (uffd_unlikely(r != 0))
			return serve_rest(u, pf, r, (unsigned)(m - u->msgs), cnt, bad);
	}
	count_served(u, cnt, bad);
	return (int)cnt;
}

/*
 * uffd_dispatch() for everything but a batch of page faults read into an empty queue: a batch
 * with layout events (@n messages just read, u->lock held where read_raw() takes it), or, with
 * @n == 0, items left queued by an earlier call.
 */
__attribute__((noinline)) static int dispatch_queue(struct uffd *u, int timeout_ms, int n)
{
	int handled = 0, ret;

	if (n > 0) {
		lock_for_prep(u);
		enqueue(u, 0, (unsigned)n);
		ret = prep_locked(u);
		pthread_mutex_unlock(&u->lock);
	} else {
		ret = check_args(u, timeout_ms);
		if (ret)
			return ret;
		ret = fill(u, timeout_ms);
	}
	if (ret < 0 && u->qhead == u->qprep)
		return ret;
	ret = complete(u, &handled);
	if (ret < 0)
		return ret;
	return handled;
}

int uffd_dispatch(struct uffd *u, int timeout_ms)
{
	int n;

	if (uffd_unlikely(!u || timeout_ms < -1))
		return -EINVAL;
	if (uffd_unlikely(u->qhead != u->qtail || atomic_load(&u->exited)))
		return dispatch_queue(u, timeout_ms, 0);
	n = read_wait(u, timeout_ms);
	if (n <= 0)
		return n;
	/*
	 * Layout events in the batch go through prep first. The kernel sends events other than page
	 * faults only for the features it granted (the handshake's, or fdinfo's for an adopted fd),
	 * so a context without them needs no scan; one message, as with one faulting thread, needs
	 * no loop to tell.
	 */
	if (uffd_unlikely((u->features & UFFD_EVENT_FEATURES) &&
			  (n == 1 ? u->msgs[0].event != UFFD_EVENT_PAGEFAULT :
				    !only_faults(u->msgs, (unsigned)n))))
		return dispatch_queue(u, timeout_ms, n);
	if (read_locks(u))
		pthread_mutex_unlock(&u->lock); /* no layout change to apply */
	return serve_faults(u, (unsigned)n);
}
