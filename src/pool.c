/* SPDX-License-Identifier: MIT */
/* The monitor's pool: one reader that never runs user code, n workers that run the callbacks. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "monitor.h"

/* The most pool threads (callback runners) uffd_monitor_start() makes. */
#define POOL_MAX 1024

/* A batch the pool's reader read and prepped, waiting for a worker; or an exit to report. */
struct pool_item {
	struct uffd *u;
	struct uffd_batch *b; /* ITEM_BATCH: the batch to deliver */
	int kind;	      /* ITEM_* */
};

enum { ITEM_BATCH, ITEM_WORK, ITEM_EXIT };

/* Make the queue hold at least @need items (mmap): 0 or -ENOMEM. With m->lock. */
static int queue_fit_locked(struct uffd_monitor *m, unsigned need)
{
	unsigned cap = m->qcap ? m->qcap : 64, i;
	struct pool_item *q;
	size_t len;

	while (cap < need)
		cap *= 2;
	if (cap == m->qcap)
		return 0;
	len = (size_t)cap * sizeof(*q);
	q = uffd_sys_mmap(len);
	if (!q)
		return -ENOMEM;
	for (i = 0; m->qcap && i < m->qcount; i++) /* an empty queue has no ring yet */
		q[i] = m->queue[(m->qhead + i) % m->qcap];
	if (m->queue)
		uffd_sys_munmap(m->queue, m->queue_len);
	m->queue = q;
	m->queue_len = len;
	m->qcap = cap;
	m->qhead = 0;
	return 0;
}

/* What the queue may have to hold: every batch of every context, and an exit or work item each. */
static unsigned queue_need(const struct uffd_monitor *m)
{
	return ((unsigned)m->count + 16) * (m->nworkers + 4);
}

/*
 * What a pool's reader may use for @u without making it: a batch per worker, one to read into
 * and one spare, and room in the queue. With m->lock.
 */
int uffd_pool_reserve(struct uffd_monitor *m, struct uffd *u)
{
	int ret;

	if (!m->pool)
		return 0;
	ret = uffd_batch_reserve(u, m->nworkers + 2);
	return ret ? ret : queue_fit_locked(m, queue_need(m) + m->nworkers + 4);
}

/*
 * Queue an item for the workers, with a reference on its context (put by the worker). The queue
 * was made large enough when the contexts joined; should it still be full, the item is not
 * queued: a batch goes to the context's pending list (served by the next worker that takes the
 * context), an exit is seen again at the next probe.
 */
static bool pool_push(struct uffd_monitor *m, struct uffd *u, struct uffd_batch *b, int kind)
{
	struct pool_item *it;

	pthread_mutex_lock(&m->lock);
	if (m->qcount == m->qcap) {
		pthread_mutex_unlock(&m->lock);
		return false;
	}
	it = &m->queue[(m->qhead + m->qcount++) % m->qcap];
	it->u = u;
	it->b = b;
	it->kind = kind;
	mon_hold_locked(u);
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return true;
}

/* The reader learnt that @u's process is gone: out of the loop now, on_exit by a worker. */
void uffd_pool_push_exit(struct uffd_monitor *m, struct uffd *u)
{
	uffd_mon_bury(m, u, false);
	pool_push(m, u, NULL, ITEM_EXIT);
}

static void pool_fail(struct uffd_monitor *m, int err)
{
	pthread_mutex_lock(&m->lock);
	if (!m->pool_err)
		m->pool_err = err;
	pthread_mutex_unlock(&m->lock);
	uffd_monitor_stop(m);
}

/*
 * Take @u's fd out of the reader's epoll set (@starved: no free batch for it) or put it back. The
 * fd stays in the set, with no events, so that its slot data stay valid.
 */
static void set_starved(struct uffd_monitor *m, struct uffd *u, bool starved)
{
	struct epoll_event ev = { .events = starved ? 0 : EPOLLIN };

	pthread_mutex_lock(&m->lock);
	if (u->mon == m && !u->dead && u->mon_starved != starved) {
		ev.data.u64 = slot_data(u->mon_slot, m->slots[u->mon_slot].gen, TAG_CTX);
		if (!epoll_ctl(m->epfd, EPOLL_CTL_MOD, u->fd, &ev))
			u->mon_starved = starved;
	}
	pthread_mutex_unlock(&m->lock);
}

static bool batch_free(struct uffd *u)
{
	bool any;

	pthread_mutex_lock(&u->lock);
	any = u->bfree != NULL;
	pthread_mutex_unlock(&u->lock);
	return any;
}

/* No free batch for @u: out of the reader's set until a worker frees one. */
static void starve(struct uffd_monitor *m, struct uffd *u)
{
	set_starved(m, u, true);
	/*
	 * A worker that freed a batch after the reader found none, and looked at mon_starved
	 * before it was set, does not unstarve: look again now that it is set, or the fd would
	 * stay out of the set with a batch free. (The free list is read under u->lock, which
	 * orders it against the worker's uffd_batch_put().)
	 */
	if (atomic_load(&u->spare) || batch_free(u))
		set_starved(m, u, false);
}

/* The reader's part for a readable context: read a batch into a batch made beforehand, prep it. */
static void reader_read(struct uffd_monitor *m, struct uffd *u)
{
	struct uffd_batch *b = atomic_exchange(&u->spare, NULL);
	int n;

	if (!b) {
		pthread_mutex_lock(&u->lock);
		b = uffd_batch_get_locked(u, false); /* the reader never makes one */
		pthread_mutex_unlock(&u->lock);
	}
	if (!b) {
		starve(m, u);
		return;
	}
	n = uffd_read_now(u, b);
	if (n == -ENOMEM) {
		/* Prep stopped (b is the stalled batch): a worker, which may allocate, goes on. */
		pool_push(m, u, NULL, ITEM_WORK);
		return;
	}
	if (n <= 0) {
		uffd_batch_put(u, b);
		if (n < 0 && n != -EINTR)
			pool_fail(m, n);
		return;
	}
	if (!pool_push(m, u, b, ITEM_BATCH)) {
		pthread_mutex_lock(&u->lock);
		uffd_pending_push_locked(u, b);
		pthread_mutex_unlock(&u->lock);
	}
}

/* Block every signal in the calling thread; the old mask in @old. */
static void block_signals(sigset_t *old)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, old);
}

static void *pool_reader(void *arg)
{
	struct uffd_monitor *m = arg;
	struct epoll_event evs[64];

	for (;;) {
		int n = ep_wait(m, evs, 64, -1), i;

		if (n < 0) {
			if (n == -EINTR)
				continue;
			pool_fail(m, n);
			n = 0;
		}
		for (i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			unsigned tag = (unsigned)(d & TAG_MASK);
			struct uffd *u;

			if (tag == TAG_CTL) {
				switch ((unsigned)((d & 0xffffffffu) >> 2)) {
				case CTL_STOP:
					take_count(m->stopfd);
					pthread_mutex_lock(&m->lock);
					m->pool_stop = true;
					pthread_cond_broadcast(&m->cond);
					pthread_mutex_unlock(&m->lock);
					return NULL;
				case CTL_TIMER:
					if (take_count(m->timerfd))
						uffd_mon_probe_all(m, true);
					uffd_mon_close_dead(m);
					break;
				default:
					take_count(m->kickfd);
					uffd_mon_close_dead(m);
					break;
				}
				continue;
			}
			u = uffd_mon_slot_ref(m, d);
			if (!u)
				continue;
			if (tag == TAG_PID)
				uffd_pool_push_exit(m, u);
			else
				reader_read(m, u);
			mon_put(u);
		}
	}
}

/* A worker's part: deliver one item's callbacks. Returns the error that stops the pool, or 0. */
static int worker_item(struct uffd_monitor *m, struct pool_item *it)
{
	struct uffd *u = it->u;
	struct uffd_frame f = { .u = u, .m = NULL, .up = uffd_frames };
	int handled = 0, r = 0;

	uffd_frames = &f;
	if (uffd_enter(u)) {
		if (it->kind == ITEM_BATCH) {
			r = uffd_deliver_prepped(u, it->b, &handled);
			it->b = NULL;
		}
		if (!r && uffd_ctx_has_work(u))
			r = uffd_serve_work(u, &handled);
		uffd_leave(u); /* runs on_exit if the process is gone and this was the last */
	}
	if (it->b)
		uffd_batch_put(u, it->b); /* on_exit has run: nobody is left to serve */
	uffd_frames = f.up;
	if (u->mon_starved)
		set_starved(m, u, false);
	if (r == -ESRCH || atomic_load(&u->exited)) {
		uffd_mon_bury(m, u, true);
		r = 0;
	}
	atomic_fetch_add(&m->pool_handled, handled);
	return r == -EINTR ? 0 : r;
}

static void *pool_worker(void *arg)
{
	struct uffd_monitor *m = arg;

	for (;;) {
		struct pool_item it;
		int r;

		pthread_mutex_lock(&m->lock);
		while (!m->qcount && !m->pool_stop)
			pthread_cond_wait(&m->cond, &m->lock);
		if (!m->qcount) {
			pthread_mutex_unlock(&m->lock);
			return NULL;
		}
		it = m->queue[m->qhead];
		m->qhead = (m->qhead + 1) % m->qcap;
		m->qcount--;
		pthread_mutex_unlock(&m->lock);
		r = worker_item(m, &it);
		/* Let go of the membership first, keeping the memory: on_exit's kick came while this
		 * item held the context, so the reader is kicked again to close it now. */
		atomic_fetch_sub(&it.u->mon_refs, 1);
		if (atomic_load(&it.u->dead) && atomic_load(&it.u->exit_reported) == 2)
			uffd_monitor_kick(m);
		uffd_ctx_put(it.u);
		if (r < 0)
			pool_fail(m, r);
	}
}

static void pool_reset_locked(struct uffd_monitor *m)
{
	free(m->workers);
	m->workers = NULL;
	m->pool = m->pool_stop = false;
	m->nworkers = m->workers_live = 0;
}

int uffd_monitor_start(struct uffd_monitor *m, unsigned nthreads)
{
	sigset_t old;
	struct uffd *u;
	unsigned i;
	int ret = 0;

	if (!m || nthreads == 0 || nthreads > POOL_MAX)
		return -EINVAL;
	if (uffd_frames_hold(NULL, m))
		return -EDEADLK;
	pthread_mutex_lock(&m->lock);
	if (m->pool || atomic_load(&m->runners)) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	m->workers = calloc(nthreads, sizeof(*m->workers));
	if (!m->workers) {
		pthread_mutex_unlock(&m->lock);
		return -ENOMEM;
	}
	m->pool = true;
	m->nworkers = nthreads;
	m->pool_err = 0;
	atomic_store(&m->pool_handled, 0);
	/* Everything the reader will need, made now: it never allocates. */
	for (u = m->head; u && !ret; u = u->mon_next)
		ret = uffd_pool_reserve(m, u);
	if (!ret)
		ret = queue_fit_locked(m, queue_need(m));
	if (ret) {
		pool_reset_locked(m);
		pthread_mutex_unlock(&m->lock);
		return ret;
	}
	pthread_mutex_unlock(&m->lock);

	/* The threads start with every signal blocked: they inherit the mask. */
	block_signals(&old);
	ret = -pthread_create(&m->reader, NULL, pool_reader, m);
	for (i = 0; !ret && i < nthreads; i++) {
		ret = -pthread_create(&m->workers[i], NULL, pool_worker, m);
		if (!ret)
			m->workers_live++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		int cancel;

		/* Stop what was made; the reader exists if any worker was attempted. Joining is
		 * a cancellation point: not here (see uffd_monitor_join()). */
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
		if (i > 0 || m->workers_live) {
			uffd_monitor_stop(m);
			pthread_join(m->reader, NULL);
			pthread_mutex_lock(&m->lock);
			m->pool_stop = true;
			pthread_cond_broadcast(&m->cond);
			pthread_mutex_unlock(&m->lock);
			for (i = 0; i < m->workers_live; i++)
				pthread_join(m->workers[i], NULL);
		}
		pthread_setcancelstate(cancel, NULL);
		pthread_mutex_lock(&m->lock);
		pool_reset_locked(m);
		pthread_mutex_unlock(&m->lock);
		return ret;
	}
	pthread_setname_np(m->reader, "uffd-read");
	for (i = 0; i < nthreads; i++) {
		char name[16];

		snprintf(name, sizeof(name), "uffd-work/%u", i);
		pthread_setname_np(m->workers[i], name);
	}
	return 0;
}

int uffd_monitor_join(struct uffd_monitor *m)
{
	unsigned i, n;
	int ret, cancel;

	if (!m)
		return -EINVAL;
	if (uffd_frames_hold(NULL, m))
		return -EDEADLK;
	pthread_mutex_lock(&m->lock);
	if (!m->pool) {
		pthread_mutex_unlock(&m->lock);
		return -EINVAL;
	}
	n = m->workers_live;
	pthread_mutex_unlock(&m->lock);
	/*
	 * pthread_join() is a cancellation point, and no libuffd call may be one (uffd.h): a caller
	 * cancelled in it would leave the pool half joined and m->pool set for ever.
	 */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	pthread_join(m->reader, NULL);
	for (i = 0; i < n; i++)
		pthread_join(m->workers[i], NULL);
	pthread_setcancelstate(cancel, NULL);
	pthread_mutex_lock(&m->lock);
	ret = m->pool_err ? m->pool_err : atomic_load(&m->pool_handled);
	pool_reset_locked(m);
	pthread_mutex_unlock(&m->lock);
	uffd_mon_close_dead(m);
	return ret;
}
