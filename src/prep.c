/* SPDX-License-Identifier: MIT */
/* prep: decode a batch and bring the map up to date, with u->lock held and no user code. */
#include <errno.h>
#include <string.h>

#include "internal.h"

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

/*
 * A fault whose address does not fit this process's pointers (a 32-bit monitor serving a 64-bit
 * process) or whose thread id is no pid cannot be delivered, but its thread is blocked: wake it
 * by the raw address. It faults again, and a monitor that cannot serve it at least never leaves
 * it hanging.
 */
void uffd_wake_raw(struct uffd *u, const struct uffd_msg *m)
{
	uint64_t addr;
	struct uffdio_range r;

	memcpy(&addr, (const unsigned char *)m + 16, sizeof(addr));
	r.start = addr & ~(uint64_t)u->page_mask;
	r.len = (uint64_t)u->page_mask + 1;
	uffd_sys_ioctl(u->fd, UFFDIO_WAKE, &r);
	uffd_stat_add(&u->st.faults_woken, 1);
}

/* Decode b->msgs into b->items, not prepped. */
static void decode_batch(struct uffd *u, struct uffd_batch *b, bool ordered)
{
	unsigned i;

	for (i = 0; i < b->nmsg; i++) {
		struct uffd_qitem *it = &b->items[i];
		int d = uffd_event_decode(&b->msgs[i], sizeof(struct uffd_msg), &it->ev);

		/* A REMAP of length 0 is what the kernel sends when mremap duplicates a shared
		 * mapping: nothing moved, but the user should hear of it. */
		if (d && !(it->ev.kind == UFFD_EVT_REMAP && it->ev.remap.len == 0)) {
			if (it->ev.kind == UFFD_EVT_PAGEFAULT)
				uffd_wake_raw(u, &b->msgs[i]);
			/* A malformed known event: keep the bytes, report it as unknown. */
			memset(&it->ev, 0, sizeof(it->ev));
			it->ev.kind = UFFD_EVT_UNKNOWN;
			memcpy(it->ev.raw, &b->msgs[i], sizeof(it->ev.raw));
		}
		it->ev.ctx = u;
		it->state = UFFD_Q_RAW;
		it->tries = 0;
		/* The order is only kept where reads are serialised (uffd_read_locks()). */
		it->seq = ordered ? u->seq++ : 0;
		count_kind(u, it->ev.kind);
	}
}

static bool span_has(uintptr_t s, uintptr_t e, uintptr_t a)
{
	return a >= s && a < e;
}

/* Whether an earlier item of the batch already notifies the same (kind, start, end). */
static bool duplicate_span(const struct uffd_batch *b, unsigned upto, const struct uffd_event *ev)
{
	unsigned i;

	for (i = 0; i < upto; i++) {
		const struct uffd_qitem *o = &b->items[i];

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
		c->fd = -1; /* the fd stays with the event */
		uffd_ctx_free(c);
		return ret;
	}
	c->cb = u->cb;
	ev->fork.child = c;
	return 0;
}

/*
 * Copy the pieces of [from, from + len) to [to, to + len), leaving the old ones (the copy a
 * DONTUNMAP mremap leaves registered, see below). Reserves all it needs first: it changes
 * nothing or cannot fail.
 */
static int copy_pieces(struct uffd *u, uintptr_t from, uintptr_t to, size_t len)
{
	uintptr_t end = from + len, at = from;
	const struct uffd_node *n;
	long pieces = 0;
	int ret;

	if ((to < end && to + len > from) || end < from || to + len < to)
		return -EINVAL;
	for (n = uffd_rmap_next(&u->map, from); n && n->start < end; n = n->next)
		pieces++;
	/* Each insert may split one piece at each edge. */
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

/*
 * REMAP moves the pieces, so that the map shows the move when on_remap runs. A real move is
 * followed by an UNMAP of the old range (read later: mremap sends it after the REMAP has been
 * read), which then finds nothing to cut. But mremap(MREMAP_DONTUNMAP) leaves the old range
 * mapped and registered, and sends the REMAP alone; the event does not say which it was. So the
 * move is remembered as a ghost: an UNMAP of exactly the old range forgets it, and a fault in
 * the old range that finds no piece (only possible after DONTUNMAP) brings the pieces back
 * there from their new place (ghost_revive()).
 */
static void ghost_drop(struct uffd *u, unsigned i)
{
	memmove(&u->ghost[i], &u->ghost[i + 1], sizeof(u->ghost[0]) * (u->nghost - i - 1));
	u->nghost--;
}

static void ghost_add(struct uffd *u, uintptr_t from, uintptr_t to, size_t len)
{
	if (u->nghost == UFFD_GHOSTS)
		ghost_drop(u, 0); /* full: forget the oldest */
	u->ghost[u->nghost++] = (struct uffd_ghost){ from, to, len };
}

static void ghost_unmapped(struct uffd *u, uintptr_t start, uintptr_t end)
{
	unsigned i = 0;

	while (i < u->nghost) {
		const struct uffd_ghost *g = &u->ghost[i];

		if (g->from >= start && g->from + g->len <= end)
			ghost_drop(u, i);
		else
			i++;
	}
}

/* The fault at @a found no piece: bring back a DONTUNMAP'd range it lies in. With u->lock. */
const struct uffd_node *uffd_ghost_revive(struct uffd *u, uintptr_t a)
{
	unsigned i;

	for (i = u->nghost; i-- > 0;) {
		struct uffd_ghost g = u->ghost[i];

		if (!span_has(g.from, g.from + g.len, a))
			continue;
		if (copy_pieces(u, g.to, g.from, g.len))
			return NULL;
		ghost_drop(u, i);
		uffd_stat_add(&u->map_gen, 1);
		return uffd_rmap_find(&u->map, a);
	}
	return NULL;
}

/* Apply one layout event to the map. */
static int apply_layout(struct uffd *u, struct uffd_event *ev)
{
	uintptr_t from, to;
	size_t len;
	int ret;

	switch (ev->kind) {
	case UFFD_EVT_UNMAP:
		ret = uffd_rmap_cut(&u->map, (uintptr_t)ev->unmap.start, (uintptr_t)ev->unmap.end);
		if (!ret)
			ghost_unmapped(u, (uintptr_t)ev->unmap.start, (uintptr_t)ev->unmap.end);
		return ret;
	case UFFD_EVT_REMAP:
		from = (uintptr_t)ev->remap.from;
		to = (uintptr_t)ev->remap.to;
		len = ev->remap.len;
		ret = uffd_rmap_move(&u->map, from, to, len);
		if (!ret && len && (to >= from + len || to + len <= from))
			ghost_add(u, from, to, len);
		return ret;
	case UFFD_EVT_FORK:
		return ev->fork.child ? 0 : make_child(u, ev);
	case UFFD_EVT_REMOVE:
		/* Now, in the read's own hold of u->lock: the madvise() that sent it zaps the pages
		 * once it is read, and a served chunk installed after that must not refill them. */
		if (atomic_load_explicit(&u->served, memory_order_acquire))
			uffd_serve_removed_locked(u, (uintptr_t)ev->remove.start,
						  (uintptr_t)ev->remove.end);
		return 0;
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

void uffd_wake_page(struct uffd *u, uintptr_t addr)
{
	uintptr_t ps = u->page_mask + 1;
	struct uffdio_range r = { .start = addr & ~(ps - 1), .len = ps };

	/* UFFDIO_WAKE has no VMA check: it works on ranges already unmapped. */
	uffd_sys_ioctl(u->fd, UFFDIO_WAKE, &r);
	uffd_stat_add(&u->st.faults_woken, 1);
}

/* Fill @pf's range from the map (reviving a DONTUNMAP'd ghost), zero if in no piece. */
void uffd_fill_range_locked(struct uffd *u, struct uffd_pagefault *pf)
{
	uintptr_t a = (uintptr_t)pf->address;
	const struct uffd_node *n = uffd_rmap_find(&u->map, a);

	if (!n && uffd_unlikely(u->nghost != 0))
		n = uffd_ghost_revive(u, a);
	uffd_rmap_fill(n, &pf->range);
}

static bool is_note(enum uffd_event_kind k)
{
	return k != UFFD_EVT_PAGEFAULT;
}

/*
 * Whether a notification comes before item @i in the batch. One read() hands out the unread
 * faults first, but a thread released by an event the same read() dequeued can fault again
 * before the read() ends: [fault, REMOVE(R), fault in R]. Such a fault must wait for the
 * notification like a fault read later (uffd_deliver_batch()).
 */
static bool note_before(const struct uffd_batch *b, unsigned i)
{
	while (i-- > 0)
		if (b->items[i].state == UFFD_Q_READY && is_note(b->items[i].ev.kind))
			return true;
	return false;
}

/*
 * prep, with u->lock held (__must_hold(u->lock)): apply each item's layout change in kernel
 * order, drop duplicate UNMAP spans (as the kernel's has_unmap_ctx()), queue the notifications
 * in that order, fill each fault's range, and wake (instead of delivering) faults that lie in a
 * span this batch unmapped or moved away.
 *
 * Returns 0, or -ENOMEM when an item cannot be applied: the batch then becomes u->stalled, the
 * context's and no longer the caller's, and no more is read until a later call finishes its
 * prep (nothing read is ever thrown away). A stalled batch's faults are delivered from the
 * pending list once it is prepped.
 */
int uffd_prep_locked(struct uffd *u, struct uffd_batch *b)
{
	unsigned start = b->nprep, i, j, k;
	bool changed = false;
	int ret = 0;

	if (b != u->stalled)
		decode_batch(u, b, uffd_read_locks(u));
	for (i = start; i < b->nmsg; i++) {
		struct uffd_qitem *it = &b->items[i];

		if (it->ev.kind == UFFD_EVT_UNMAP && duplicate_span(b, i, &it->ev)) {
			it->state = UFFD_Q_DROP;
			continue;
		}
		ret = is_note(it->ev.kind) ? uffd_nq_reserve_locked(u) : 0;
		if (!ret)
			ret = apply_layout(u, &it->ev);
		if (ret)
			break;
		if (it->ev.kind == UFFD_EVT_UNMAP || it->ev.kind == UFFD_EVT_REMAP)
			changed = true;
		it->state = UFFD_Q_READY;
		if (is_note(it->ev.kind))
			uffd_nq_push_locked(u, it); /* cannot fail: reserved */
		else if (i > 0 && note_before(b, i))
			b->interleaved = true;
	}
	if (changed)
		uffd_stat_add(&u->map_gen, 1);
	for (j = start; j < i; j++) {
		struct uffd_qitem *it = &b->items[j];
		uintptr_t a, s, e;
		bool gone = false;

		if (it->ev.kind != UFFD_EVT_PAGEFAULT || it->state != UFFD_Q_READY)
			continue;
		a = (uintptr_t)it->ev.pagefault.address;
		for (k = 0; k < i && !gone; k++)
			gone = gone_span(&b->items[k].ev, &s, &e) && span_has(s, e, a);
		if (gone) {
			it->state = UFFD_Q_DROP;
			uffd_wake_page(u, a);
			continue;
		}
		uffd_fill_range_locked(u, &it->ev.pagefault);
	}
	b->nprep = i;
	if (ret && u->stalled != b) {
		u->stalled = b;
		atomic_fetch_add_explicit(&u->work, 1, memory_order_relaxed);
	} else if (!ret && u->stalled == b) {
		u->stalled = NULL;
		atomic_fetch_sub_explicit(&u->work, 1, memory_order_relaxed);
	}
	return ret;
}
