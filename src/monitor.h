/* SPDX-License-Identifier: MIT */
/* The monitor's private pieces, shared by its run loops (monitor.c) and its pool (pool.c). */
#ifndef UFFD_MONITOR_H
#define UFFD_MONITOR_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/*
 * epoll data: a slot number and its generation, never a pointer. Several threads wait on the
 * epoll set at once, and a context may be closed between the moment epoll_wait() reports it to
 * one of them and the moment that thread looks at it; a slot whose generation moved on is stale
 * and ignored, and a live slot's context is referenced (u->refs) under the monitor's lock before
 * anyone uses it.
 */
enum { TAG_CTX = 0, TAG_PID = 1, TAG_CTL = 2, TAG_MASK = 3 };
enum { CTL_STOP = 1, CTL_TIMER = 2, CTL_KICK = 3 };

struct mon_slot {
	struct uffd *u; /* NULL when free */
	uint32_t gen;
	uint32_t next_free;
};

struct pool_item; /* pool.c */

struct uffd_monitor {
	int epfd;
	int stopfd;
	int timerfd;
	int kickfd;
	pid_t owner; /* the process that made it: a fork child must not use its locks */
	/*
	 * m->lock guards the list, the slots, the dead list, and the pool's queue and state. It is
	 * never held across a callback or a wait.
	 */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* pool: the queue got work, or the pool stops */
	struct uffd *head;
	_Atomic int count; /* read without the lock by uffd_monitor_count() and run() */
	struct uffd *dead; /* gone: closed once on_exit has returned */
	void *probe_page;  /* PROT_NONE: the source of liveness probes */

	struct mon_slot *slots; /* mmap'd */
	uint32_t nslots, free_slot;
	size_t slots_len;

	_Atomic unsigned runners; /* threads in uffd_monitor_run() */

	/* The pool (lock). */
	bool pool, pool_stop;
	unsigned nworkers, workers_live;
	pthread_t reader, *workers;
	int pool_err;
	_Atomic int pool_handled;
	struct pool_item *queue; /* a ring, mmap'd */
	unsigned qcap, qhead, qcount;
	size_t queue_len;
};

static inline uint64_t slot_data(uint32_t slot, uint32_t gen, unsigned tag)
{
	return (uint64_t)gen << 32 | (uint64_t)slot << 2 | tag;
}

/* Hold @u for a monitor thread, with m->lock held: see uffd_mon_slot_ref(); mon_put() lets go. */
static inline void mon_hold_locked(struct uffd *u)
{
	atomic_fetch_add(&u->refs, 1);
	atomic_fetch_add(&u->mon_refs, 1);
}

static inline void mon_put(struct uffd *u)
{
	atomic_fetch_sub(&u->mon_refs, 1);
	uffd_ctx_put(u);
}

/* epoll_wait() through syscall(2), which unlike glibc's wrapper is no cancellation point. */
static inline int ep_wait(struct uffd_monitor *m, struct epoll_event *evs, int max, int wait)
{
	long n = syscall(SYS_epoll_wait, m->epfd, evs, max, wait);

	return n < 0 ? -errno : (int)n;
}

/* Read one count from an eventfd or timerfd; 0 if none was there (another thread took it). */
static inline uint64_t take_count(int fd)
{
	uint64_t cnt = 0;

	if (uffd_sys_read(fd, &cnt, sizeof(cnt)) != (ssize_t)sizeof(cnt))
		return 0;
	return cnt;
}

/* ---- monitor.c ---- */
UFFD_HIDDEN struct uffd *uffd_mon_slot_ref(struct uffd_monitor *m, uint64_t d);
UFFD_HIDDEN void uffd_mon_bury(struct uffd_monitor *m, struct uffd *u, bool run_exit);
UFFD_HIDDEN void uffd_mon_close_dead(struct uffd_monitor *m);
UFFD_HIDDEN void uffd_mon_probe_all(struct uffd_monitor *m, bool reader);

/* ---- pool.c ---- */
UFFD_HIDDEN int uffd_pool_reserve(struct uffd_monitor *m, struct uffd *u);
UFFD_HIDDEN void uffd_pool_push_exit(struct uffd_monitor *m, struct uffd *u);

#endif /* UFFD_MONITOR_H */
