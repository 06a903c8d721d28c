/* SPDX-License-Identifier: MIT */
/* complete: callbacks with no lock held, the rules for their results, deferred faults, on_exit. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/*
 * Whether @pf's address is still in a piece of the map; refreshes pf->range. *@seq is set to
 * the count of messages prepped so far: a redelivery follows all of them.
 */
static bool still_registered(struct uffd *u, struct uffd_pagefault *pf, uint64_t *seq)
{
	bool had = pf->range.start != NULL;

	pthread_mutex_lock(&u->lock);
	uffd_fill_range_locked(u, pf);
	*seq = u->seq;
	pthread_mutex_unlock(&u->lock);
	/* A fault that never had a range (an mremap-grown tail) is left to the kernel to judge. */
	return pf->range.start != NULL || !had;
}

/*
 * Whether every notification read before message @seq has been delivered, delivering them on
 * this thread if no other is at it. A fault redelivered after -EAGAIN is delivered as one read
 * now: the read that cleared the -EAGAIN may have brought a REMOVE of its page, and a callback
 * that ran before on_remove would fill the discarded page with what it held before (the discard
 * has happened by then: its sender resumed once the event was read). 1 when delivered, 0 when
 * another thread still delivers them, or a notification callback's error.
 */
static int notes_caught_up(struct uffd *u, uint64_t seq, int *handled)
{
	int r = uffd_deliver_notes(u, handled);

	if (r < 0)
		return r;
	pthread_mutex_lock(&u->lock);
	r = uffd_notes_done_locked(u, seq);
	pthread_mutex_unlock(&u->lock);
	return r;
}

/*
 * Wait before redelivering a fault that met -EAGAIN. The kernel lowers its layout-changing state
 * only when the blocked sender runs again after the read, which on a loaded machine takes longer
 * than a few yields: yield first, then sleep a little longer each time (at most ~5 ms in all).
 * The sleep is the raw system call: glibc's nanosleep() is a cancellation point, and a thread
 * cancelled here would leave the fault it holds blocked for good.
 */
static void eagain_backoff(unsigned tries)
{
	struct timespec ts = { 0, 0 };

	if (tries <= 3) {
		sched_yield();
		return;
	}
	ts.tv_nsec = (long)(tries - 3) * 50000L;
	uffd_syscall3(SYS_nanosleep, (long)&ts, 0, 0);
}

/*
 * Read and prep what the kernel has now (the events that make a resolving call fail with
 * -EAGAIN), without delivering it: the faults read go to the pending list, the notifications to
 * the queue, and whichever thread dispatches next delivers them. Returns what the read returned.
 */
int uffd_read_more(struct uffd *u)
{
	struct uffd_batch *b = uffd_batch_get(u);
	int n;

	if (!b)
		return -ENOMEM;
	n = uffd_read_now(u, b);
	if (n == -ENOMEM)
		return n; /* b is the stalled batch now */
	if (n > 0 && uffd_batch_next_fault(b) < b->nprep) {
		pthread_mutex_lock(&u->lock);
		uffd_pending_push_locked(u, b);
		pthread_mutex_unlock(&u->lock);
	} else {
		uffd_batch_put(u, b);
	}
	return n;
}

/*
 * The rules of the contract for a fault callback's result @r (uffd.h, dispatch group). 0 = go on,
 * < 0 = stop with it. Notifications delivered on the way are counted in *@handled.
 */
int uffd_finish_fault(struct uffd *u, struct uffd_pagefault *pf, int r, int *handled)
{
	unsigned tries = 0;
	uint64_t seq;
	int c;

	for (;; r = uffd_call_fault(u, pf)) {
		if (r == 0)
			return 0;
		if (r == UFFD_FAULT_DEFERRED)
			return 0; /* counted by uffd_call_fault() */
		if (r == -EAGAIN) {
			/*
			 * A layout change is pending: read and apply it, deliver the notifications
			 * read so far, then try again. Out of tries, the fault is woken: its thread
			 * faults again, and that fault is read after them.
			 */
			if (tries++ >= UFFD_EAGAIN_TRIES) {
				uffd_wake_page(u, (uintptr_t)pf->address);
				return 0;
			}
			uffd_read_more(u);
			if (!still_registered(u, pf, &seq)) {
				uffd_wake_page(u, (uintptr_t)pf->address);
				return 0;
			}
			while ((c = notes_caught_up(u, seq, handled)) == 0) {
				if (tries++ >= UFFD_EAGAIN_TRIES) {
					uffd_wake_page(u, (uintptr_t)pf->address);
					return 0;
				}
				eagain_backoff(tries);
			}
			if (c < 0) {
				uffd_wake_page(u, (uintptr_t)pf->address);
				return c;
			}
			uffd_stat_add(&u->st.eagain_retries, 1);
			eagain_backoff(tries);
			continue;
		}
		if (r == -EEXIST || r == -ENOENT) {
			uffd_wake_page(u, (uintptr_t)pf->address);
			return 0;
		}
		if (r == -ESRCH) {
			uffd_ctx_report_exit(u);
			return -ESRCH;
		}
		uffd_wake_page(u, (uintptr_t)pf->address);
		return r;
	}
}

/*
 * In a batch where a fault follows a notification of the same read: whether the fault just
 * taken (at b->pos - 1) may be delivered now. If not, b->pos is put back on it.
 */
static bool fault_ready(struct uffd *u, struct uffd_batch *b)
{
	bool ready;

	b->pos--;
	pthread_mutex_lock(&u->lock);
	ready = uffd_batch_ready_locked(u, b);
	pthread_mutex_unlock(&u->lock);
	if (ready)
		b->pos++;
	return ready;
}

/*
 * Deliver the faults of @b from b->pos, in order; the batch's notifications are skipped (the
 * notification queue has them) and its dropped items counted. Returns 0, or a callback's error
 * with b->pos after the fault that made it (the caller keeps the rest for the next call).
 */
int uffd_deliver_batch(struct uffd *u, struct uffd_batch *b, int *handled)
{
	while (b->pos < b->nprep) {
		struct uffd_qitem *it = &b->items[b->pos++];
		int r;

		if (it->state != UFFD_Q_READY) {
			(*handled)++; /* woken or dropped in prep */
			continue;
		}
		if (it->ev.kind != UFFD_EVT_PAGEFAULT)
			continue;
		if (uffd_unlikely(b->interleaved) && !fault_ready(u, b))
			return 0; /* the caller parks the batch: the notifier serves it after */
		r = uffd_finish_fault(u, &it->ev.pagefault, uffd_call_fault(u, &it->ev.pagefault),
				      handled);
		(*handled)++;
		if (r == -ESRCH) {
			b->pos = b->nprep; /* the process is gone: the rest has nobody to serve */
			return 0;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * A monitored parent's child is added to the monitor after on_fork keeps it. If that fails
 * (-ENOMEM from epoll), closing the child would let the child process run unmonitored and read
 * zero pages where its memory should have been served: the item is kept instead (it->tries marks
 * that on_fork has run) and the next dispatch retries the adoption.
 */
static int deliver_fork(struct uffd *u, struct uffd_qitem *it, bool *keep)
{
	struct uffd *child = it->ev.fork.child;
	int r = 0;

	/*
	 * on_fork hands the child to the program, which may close it at once, from another
	 * thread or in on_fork itself: hold its memory while it is looked at here.
	 */
	atomic_fetch_add(&child->refs, 1);
	if (!it->tries && u->cb.fork)
		r = u->cb.fork(u, child, u->cb.fork_arg);
	it->tries = 1;
	if (r == 0 && (child->mon || atomic_load(&child->closed))) {
		/* on_fork placed it in a monitor of its choosing (it is served there), or the
		 * program has closed it already: nothing to do */
	} else if (r == 0 && u->mon) {
		r = uffd_monitor_adopt_child(u->mon, child);
		if (r < 0) {
			*keep = true;
			uffd_ctx_put(child);
			return r;
		}
	} else if (r == 0 && !u->cb.fork) {
		r = -ECHILD; /* nobody would serve it: let the child run unmonitored */
	}
	if (r < 0)
		uffd_close(child);
	uffd_ctx_put(child);
	return 0;
}

static int deliver_note(struct uffd *u, struct uffd_qitem *it, bool *keep)
{
	struct uffd_event *ev = &it->ev;

	switch (ev->kind) {
	case UFFD_EVT_FORK:
		return deliver_fork(u, it, keep);
	case UFFD_EVT_REMAP:
		return u->cb.remap ? u->cb.remap(u, &ev->remap, u->cb.remap_arg) : 0;
	case UFFD_EVT_REMOVE:
		return u->cb.remove ? u->cb.remove(u, &ev->remove, u->cb.remove_arg) : 0;
	case UFFD_EVT_UNMAP:
		return u->cb.unmap ? u->cb.unmap(u, &ev->unmap, u->cb.unmap_arg) : 0;
	default:
		return 0;
	}
}

/*
 * Deliver the queued notifications in kernel order, one at a time. One thread at a time does
 * it (u->notifying); a thread that finds another at it goes on with its own faults, and the one
 * delivering picks up what was queued meanwhile: no thread waits for another's callback. The
 * item stays at the head of the queue while its callback runs (the queue may grow meanwhile,
 * which keeps the head item at the head), and is taken off after.
 */
int uffd_deliver_notes(struct uffd *u, int *handled)
{
	int ret = 0;

	pthread_mutex_lock(&u->lock);
	if (u->notifying || u->ncount == 0) {
		pthread_mutex_unlock(&u->lock);
		return 0;
	}
	u->notifying = true;
	while (u->ncount) {
		struct uffd_qitem it = u->nq[u->nhead];
		bool keep = false;

		pthread_mutex_unlock(&u->lock);
		ret = deliver_note(u, &it, &keep);
		pthread_mutex_lock(&u->lock);
		if (keep) {
			u->nq[u->nhead].tries = it.tries;
			break;
		}
		u->nhead = (u->nhead + 1) % u->ncap;
		u->ncount--;
		atomic_fetch_sub_explicit(&u->work, 1, memory_order_relaxed);
		(*handled)++;
		if (ret < 0)
			break;
	}
	u->notifying = false;
	pthread_mutex_unlock(&u->lock);
	return ret;
}

/* ---- deferred faults ---- */

/* The rules for a deferred fault's result: as uffd_finish_fault(), but nothing is redelivered
 * here. An -EAGAIN is woken: the thread faults again, and the fault comes back through the
 * kernel to whichever thread dispatches next, after the pending events. */
static int finish_deferred(struct uffd *u, const struct uffd_pagefault *pf, int err)
{
	uintptr_t a = (uintptr_t)pf->address;

	switch (err) {
	case 0:
		return 0;
	case -EAGAIN:
		uffd_stat_add(&u->st.eagain_retries, 1);
		uffd_wake_page(u, a);
		return 0;
	case -EEXIST:
	case -ENOENT:
		uffd_wake_page(u, a);
		return 0;
	case -ESRCH:
		uffd_ctx_report_exit(u);
		return -ESRCH;
	default:
		uffd_wake_page(u, a);
		return err;
	}
}

int uffd_fault_finish(struct uffd *u, const struct uffd_pagefault *pf, int err)
{
	unsigned d;
	int ret;

	if (!u || !pf || err > 0)
		return -EINVAL;
	d = atomic_load(&u->deferred);
	do {
		if (d == 0)
			return -EINVAL; /* no fault of this context is deferred */
	} while (!atomic_compare_exchange_weak(&u->deferred, &d, d - 1));
	/* uffd_close() waits for users to leave before it closes the fd. */
	atomic_fetch_add(&u->users, 1);
	if (atomic_load(&u->closed) || atomic_load(&u->exited))
		ret = -ESRCH;
	else
		ret = finish_deferred(u, pf, err);
	atomic_fetch_sub(&u->users, 1);
	uffd_exit_try(u);
	uffd_ctx_put(u);
	return ret;
}

/* ---- callbacks in flight and on_exit ---- */

/* A thread starts dispatching @u: false once on_exit has run (or runs), when nothing may start. */
bool uffd_enter(struct uffd *u)
{
	atomic_fetch_add(&u->active, 1);
	if (uffd_likely(!atomic_load(&u->exit_reported)))
		return true;
	atomic_fetch_sub(&u->active, 1);
	return false;
}

void uffd_leave(struct uffd *u)
{
	if (atomic_fetch_sub(&u->active, 1) == 1 && uffd_unlikely(atomic_load(&u->exited)))
		uffd_exit_try(u);
}

/*
 * Run on_exit if the process is gone and it is time: no thread dispatches the context and no
 * fault of it is deferred. It runs once; the thread that wins the exchange waits for any thread
 * that entered just before (it saw exit_reported still 0), so on_exit starts after every other
 * callback has returned and none starts after it. exit_reported is 1 while on_exit runs and 2
 * once it has returned; a context a monitor owns is then closed by the monitor, woken for it.
 */
void uffd_exit_try(struct uffd *u)
{
	struct uffd_monitor *m;
	int none = 0;

	if (!atomic_load(&u->exited) || atomic_load(&u->closed))
		return;
	if (atomic_load(&u->active) || atomic_load(&u->deferred))
		return;
	/* A compare-exchange, not an exchange: that would turn 2 (returned) back into 1. */
	if (!atomic_compare_exchange_strong(&u->exit_reported, &none, 1))
		return;
	while (atomic_load(&u->active))
		sched_yield();
	if (u->cb.exit)
		u->cb.exit(u, u->cb.exit_arg);
	/* After the store of 2 a monitor may close the context: read what is needed first. */
	m = u->mon;
	atomic_store(&u->exit_reported, 2);
	if (m)
		uffd_monitor_kick(m);
}

void uffd_ctx_put(struct uffd *u)
{
	if (atomic_fetch_sub(&u->refs, 1) == 1)
		uffd_ctx_free(u);
}
