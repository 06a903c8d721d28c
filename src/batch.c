/* SPDX-License-Identifier: MIT */
/* Batches (what one read() brought in) and the notification queue: made with mmap, never malloc. */
#include <errno.h>
#include <string.h>

#include "internal.h"

static size_t align64(size_t v)
{
	return (v + 63) & ~(size_t)63;
}

size_t uffd_batch_size(unsigned batch)
{
	size_t off_items = align64(align64(sizeof(struct uffd_batch)) +
				   (size_t)batch * sizeof(struct uffd_msg));

	return align64(off_items + (size_t)batch * sizeof(struct uffd_qitem));
}

void uffd_batch_init(struct uffd_batch *b, void *mem, unsigned batch)
{
	char *base = mem;
	size_t off_msgs = align64(sizeof(struct uffd_batch));

	b->msgs = (struct uffd_msg *)(base + off_msgs);
	b->items = (struct uffd_qitem *)(base + align64(off_msgs +
							(size_t)batch * sizeof(struct uffd_msg)));
}

/* A new batch from mmap; called with u->lock held. */
static struct uffd_batch *batch_map_locked(struct uffd *u)
{
	size_t len = uffd_batch_size(u->batch);
	struct uffd_batch *b = uffd_sys_mmap(len);

	if (!b)
		return NULL;
	uffd_batch_init(b, b, u->batch);
	b->alloc_len = len;
	b->all = u->ball;
	u->ball = b;
	u->nbatches++;
	return b;
}

struct uffd_batch *uffd_batch_get_locked(struct uffd *u, bool may_map)
{
	struct uffd_batch *b = u->bfree;

	if (b) {
		u->bfree = b->next;
		b->next = NULL;
		return b;
	}
	return may_map ? batch_map_locked(u) : NULL;
}

/*
 * A batch to read into. One thread dispatching alone finds the spare every time, with one atomic
 * exchange and no lock; threads dispatching at once take the others from the free list, and the
 * context makes one more (mmap) only when every batch it has is in use: never more batches than
 * threads have dispatched it at once.
 */
struct uffd_batch *uffd_batch_get(struct uffd *u)
{
	struct uffd_batch *b = atomic_exchange_explicit(&u->spare, NULL, memory_order_acquire);

	if (uffd_likely(b != NULL))
		return b;
	pthread_mutex_lock(&u->lock);
	b = uffd_batch_get_locked(u, true);
	pthread_mutex_unlock(&u->lock);
	return b;
}

static void batch_reset(struct uffd_batch *b)
{
	b->next = NULL;
	b->nmsg = b->nprep = b->pos = 0;
	b->interleaved = false;
}

void uffd_batch_put_locked(struct uffd *u, struct uffd_batch *b)
{
	struct uffd_batch *none = NULL;

	batch_reset(b);
	if (atomic_compare_exchange_strong_explicit(&u->spare, &none, b, memory_order_release,
						    memory_order_relaxed))
		return;
	b->next = u->bfree;
	u->bfree = b;
}

void uffd_batch_put(struct uffd *u, struct uffd_batch *b)
{
	struct uffd_batch *none = NULL;

	batch_reset(b);
	if (uffd_likely(atomic_compare_exchange_strong_explicit(
		    &u->spare, &none, b, memory_order_release, memory_order_relaxed)))
		return;
	pthread_mutex_lock(&u->lock);
	b->next = u->bfree;
	u->bfree = b;
	pthread_mutex_unlock(&u->lock);
}

/* Make batches until the context has @n in all (a pool's reader must never make one). */
int uffd_batch_reserve(struct uffd *u, unsigned n)
{
	int ret = 0;

	pthread_mutex_lock(&u->lock);
	while (u->nbatches < n) {
		struct uffd_batch *b = batch_map_locked(u);

		if (!b) {
			ret = -ENOMEM;
			break;
		}
		b->next = u->bfree;
		u->bfree = b;
	}
	pthread_mutex_unlock(&u->lock);
	return ret;
}

void uffd_batches_free(struct uffd *u)
{
	struct uffd_batch *b = u->ball;

	while (b) {
		struct uffd_batch *nx = b->all;

		uffd_sys_munmap(b, b->alloc_len);
		b = nx;
	}
	u->ball = NULL;
	if (u->nq_len)
		uffd_sys_munmap(u->nq, u->nq_len);
	u->nq_len = 0;
}

void uffd_pending_push_locked(struct uffd *u, struct uffd_batch *b)
{
	b->next = NULL;
	if (u->pending_tail)
		u->pending_tail->next = b;
	else
		u->pending = b;
	u->pending_tail = b;
	atomic_fetch_add_explicit(&u->work, 1, memory_order_relaxed);
}

/*
 * Whether @b's faults may be delivered now: every notification read before them has been
 * delivered. A thread that discards memory (REMOVE) and touches it again makes a fault that is
 * read after the REMOVE; its callback must see on_remove's effect, whichever threads read the
 * two. Within one read, faults come before events (the kernel hands out unread faults first),
 * so a batch's own notifications never hold its faults back. With u->lock.
 */
/* The first fault still to deliver in @b, from b->pos: its index, or b->nprep if none is left. */
unsigned uffd_batch_next_fault(const struct uffd_batch *b)
{
	unsigned i = b->pos;

	while (i < b->nprep &&
	       (b->items[i].state != UFFD_Q_READY || b->items[i].ev.kind != UFFD_EVT_PAGEFAULT))
		i++;
	return i;
}

/* Whether every notification read before message @seq has been delivered (the queue holds
 * them in kernel order, the one being delivered at its head). With u->lock. */
bool uffd_notes_done_locked(const struct uffd *u, uint64_t seq)
{
	return !u->ncount || u->nq[u->nhead].seq >= seq;
}

bool uffd_batch_ready_locked(const struct uffd *u, const struct uffd_batch *b)
{
	unsigned i;

	if (!u->ncount || !uffd_read_locks(u))
		return true;
	/*
	 * Only faults wait. The batch's notifications are in the queue already, and a batch of
	 * notifications alone has nothing to hold back: were it judged by its own notification,
	 * it would wait on the pending list (walked under u->lock by every dispatcher) until the
	 * queue drained, and a steady stream of slow notifications made that list grow by a
	 * batch per read until serving stalled.
	 */
	i = uffd_batch_next_fault(b);
	if (i >= b->nprep)
		return true;
	return uffd_notes_done_locked(u, b->items[i].seq + 1);
}

/* The oldest pending batch whose faults may be delivered now, the caller's, or NULL. */
struct uffd_batch *uffd_pending_pop(struct uffd *u)
{
	struct uffd_batch *b, *prev = NULL;

	pthread_mutex_lock(&u->lock);
	for (b = u->pending; b && !uffd_batch_ready_locked(u, b); b = b->next)
		prev = b;
	if (b) {
		if (prev)
			prev->next = b->next;
		else
			u->pending = b->next;
		if (u->pending_tail == b)
			u->pending_tail = prev;
		b->next = NULL;
		atomic_fetch_sub_explicit(&u->work, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&u->lock);
	return b;
}

/* Double the ring (mmap): 0, or -ENOMEM with the ring unchanged. */
static int nq_grow_locked(struct uffd *u)
{
	unsigned cap = u->ncap * 2, i;
	size_t len = (size_t)cap * sizeof(struct uffd_qitem);
	struct uffd_qitem *q;

	/* ncap is never 0 (uffd_ctx_new() makes the first ring); say so to the analyser. */
	if (u->ncap == 0 || cap < u->ncap)
		return -ENOMEM;
	len = (len + (size_t)uffd_page_size() - 1) & ~((size_t)uffd_page_size() - 1);
	q = uffd_sys_mmap(len);
	if (!q)
		return -ENOMEM;
	for (i = 0; i < u->ncount; i++)
		q[i] = u->nq[(u->nhead + i) % u->ncap];
	if (u->nq_len)
		uffd_sys_munmap(u->nq, u->nq_len);
	u->nq = q;
	u->nq_len = len;
	u->ncap = cap;
	u->nhead = 0;
	return 0;
}

/* Room for one more notification: 0, or -ENOMEM. */
int uffd_nq_reserve_locked(struct uffd *u)
{
	return u->ncount < u->ncap ? 0 : nq_grow_locked(u);
}

/*
 * Append a notification in kernel order. The ring grows when a slow notification callback lets
 * them pile up (each one read has released the thread that caused it); prep checks for room
 * before it applies an event, so that an event applied is always queued.
 */
int uffd_nq_push_locked(struct uffd *u, const struct uffd_qitem *it)
{
	if (u->ncount == u->ncap && nq_grow_locked(u))
		return -ENOMEM;
	u->nq[(u->nhead + u->ncount) % u->ncap] = *it;
	u->ncount++;
	atomic_fetch_add_explicit(&u->work, 1, memory_order_relaxed);
	return 0;
}
