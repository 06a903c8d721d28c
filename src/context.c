/* SPDX-License-Identifier: MIT */
/* The context object: allocation (mmap, never malloc), close, accessors, callbacks, stats. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int uffd_cfg_check(const struct uffd_config *cfg)
{
	if (!cfg)
		return 0;
	if (cfg->flags & ~UFFD_KNOWN_OPEN_FLAGS)
		return -EINVAL;
	if ((cfg->flags & UFFD_OPEN_SYSCALL_ONLY) && (cfg->flags & UFFD_OPEN_DEVICE_ONLY))
		return -EINVAL;
	if (cfg->batch > UFFD_MAX_BATCH || cfg->spin_us > UFFD_MAX_SPIN_US)
		return -EINVAL;
	/* Reserved for fields a later version gives a meaning: a caller who sets one expects it. */
	for (size_t i = 0; i < sizeof(cfg->reserved) / sizeof(cfg->reserved[0]); i++)
		if (cfg->reserved[i])
			return -EINVAL;
	return 0;
}

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/*
 * One mmap holds the context, its first batch (the spare: one thread dispatching alone never
 * needs another) and the notification queue's first ring.
 */
int uffd_ctx_new(int fd, uint64_t features, const struct uffd_config *cfg, struct uffd **out)
{
	unsigned batch = cfg && cfg->batch ? cfg->batch : UFFD_DEFAULT_BATCH;
	unsigned ncap = 2 * batch;
	size_t off_b = align_up(sizeof(struct uffd), 64);
	size_t off_nq = align_up(off_b + uffd_batch_size(batch), 64);
	size_t len = align_up(off_nq + (size_t)ncap * sizeof(struct uffd_qitem),
			      (size_t)uffd_page_size());
	struct uffd *u = uffd_sys_mmap(len);
	struct uffd_batch *b;

	if (!u)
		return -ENOMEM;
	/* mmap memory is zeroed. */
	u->fd = fd;
	u->features = features;
	u->flags = cfg ? cfg->flags : 0;
	u->batch = batch;
	u->spin_us = cfg ? cfg->spin_us : 0;
	u->alloc_len = len;
	u->page_mask = (uintptr_t)uffd_page_size() - 1;
	u->cb.pagefault = uffd_default_pagefault;
	b = (struct uffd_batch *)((char *)u + off_b);
	uffd_batch_init(b, b, batch);
	b->embedded = true;
	atomic_init(&u->spare, b);
	u->nbatches = 1;
	u->nq = (struct uffd_qitem *)((char *)u + off_nq);
	u->ncap = ncap;
	atomic_init(&u->refs, 1);
	u->pidfd = -1;
	pthread_mutex_init(&u->lock, NULL);
	uffd_rmap_init(&u->map, (uint32_t)(uintptr_t)u ^ (uint32_t)fd * 2654435761u);
	*out = u;
	return 0;
}

void uffd_ctx_free(struct uffd *u)
{
	/* Not in uffd_close(): a deferred fetch still uses its registration's state until it
	 * finishes the fault, and the last finish is what frees the context. */
	uffd_serve_free_all(u);
	uffd_rmap_destroy(&u->map);
	uffd_batches_free(u);
	pthread_mutex_destroy(&u->lock);
	uffd_sys_munmap(u, u->alloc_len);
}

/* A FORK read but never delivered belongs to nobody yet: close its child, or its bare fd. */
static void close_fork(struct uffd_qitem *it)
{
	if (it->ev.kind != UFFD_EVT_FORK || it->state == UFFD_Q_DROP)
		return;
	if (it->ev.fork.child)
		uffd_close(it->ev.fork.child);
	else if (it->ev.fork.fd >= 0)
		uffd_sys_close(it->ev.fork.fd);
	it->ev.fork.child = NULL;
	it->ev.fork.fd = -1;
}

void uffd_close(struct uffd *u)
{
	unsigned i;

	if (!u)
		return;
	if (u->mon)
		uffd_monitor_forget(u->mon, u);
	pthread_mutex_lock(&u->lock);
	for (i = 0; i < u->ncount; i++)
		close_fork(&u->nq[(u->nhead + i) % u->ncap]);
	/* A stalled batch's unprepped FORKs are not queued yet. */
	if (u->stalled)
		for (i = u->stalled->nprep; i < u->stalled->nmsg; i++)
			close_fork(&u->stalled->items[i]);
	pthread_mutex_unlock(&u->lock);
	/* Deferred faults being finished use the fd: let them leave before it goes. */
	atomic_store(&u->closed, 1);
	while (atomic_load(&u->users))
		sched_yield();
	if (u->pidfd >= 0)
		uffd_sys_close(u->pidfd);
	if (u->fd >= 0)
		uffd_sys_close(u->fd);
	u->fd = -1;
	/* The memory stays until the last deferred fault is finished (uffd_fault_finish()). */
	uffd_ctx_put(u);
}

int uffd_fd(const struct uffd *u)
{
	return u ? u->fd : -EINVAL;
}

uint64_t uffd_features(const struct uffd *u)
{
	return u ? u->features : 0;
}

/* Only marks it: on_exit runs from uffd_exit_try(), in a thread that may run user code. */
void uffd_ctx_report_exit(struct uffd *u)
{
	atomic_store(&u->exited, 1);
}

#define SETTER(name, type, field)                              \
	int uffd_on_##name(struct uffd *u, type fn, void *arg) \
	{                                                      \
		if (!u)                                        \
			return -EINVAL;                        \
		u->cb.field = fn;                              \
		u->cb.field##_arg = arg;                       \
		return 0;                                      \
	}

/* The fault callback is never NULL: NULL selects the default, so a fault costs no test. */
int uffd_on_pagefault(struct uffd *u, uffd_pagefault_fn fn, void *arg)
{
	if (!u)
		return -EINVAL;
	u->cb.pagefault = fn ? fn : uffd_default_pagefault;
	u->cb.pagefault_arg = arg;
	return 0;
}

SETTER(unmap, uffd_span_fn, unmap)
SETTER(remove, uffd_span_fn, remove)
SETTER(remap, uffd_remap_fn, remap)
SETTER(fork, uffd_fork_fn, fork)
SETTER(exit, uffd_exit_fn, exit)

int uffd_get_stats(const struct uffd *u, struct uffd_stats *out)
{
	if (!u || !out)
		return -EINVAL;
	/* The reserved counters read zero until a version gives them a meaning. */
	memset(out, 0, sizeof(*out));
	out->reads = atomic_load(&u->st.reads);
	out->messages = atomic_load(&u->st.messages);
	out->faults = atomic_load(&u->st.faults);
	out->faults_woken = atomic_load(&u->st.faults_woken);
	out->eagain_retries = atomic_load(&u->st.eagain_retries);
	out->forks = atomic_load(&u->st.forks);
	out->remaps = atomic_load(&u->st.remaps);
	out->removes = atomic_load(&u->st.removes);
	out->unmaps = atomic_load(&u->st.unmaps);
	out->unknown = atomic_load(&u->st.unknown);
	return 0;
}
