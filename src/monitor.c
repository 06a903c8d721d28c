/* SPDX-License-Identifier: MIT */
/* The monitor: one epoll set over many contexts, served by any number of threads or a pool. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

/* How often contexts whose pid is unknown are probed: exits are reported within a second. */
#define PROBE_INTERVAL_MS 250

static int ep_add(struct uffd_monitor *m, int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };

	return epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/* (Re)arm the probe tick: first after @first_ns, then every PROBE_INTERVAL_MS. 0 or -errno. */
static int arm_probe(struct uffd_monitor *m, long first_ns)
{
	struct itimerspec its = {
		.it_interval = { 0, PROBE_INTERVAL_MS * 1000000L },
		.it_value = { 0, first_ns },
	};

	return timerfd_settime(m->timerfd, 0, &its, NULL) ? -errno : 0;
}

/* Raw close(): glibc's is a cancellation point, and no libuffd call is one. */
static void close_fd(int fd)
{
	if (fd >= 0)
		uffd_sys_close(fd);
}

int uffd_monitor_new(struct uffd_monitor **out)
{
	struct uffd_monitor *m;
	long ps = uffd_page_size();
	int ret;

	if (!out)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->epfd = m->stopfd = m->timerfd = m->kickfd = -1;
	m->owner = getpid();
	m->probe_page = mmap(NULL, (size_t)ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->probe_page == MAP_FAILED) {
		m->probe_page = NULL;
		ret = -ENOMEM;
		goto fail;
	}
	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (m->epfd < 0)
		goto fail_errno;
	m->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->stopfd < 0)
		goto fail_errno;
	m->kickfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->kickfd < 0)
		goto fail_errno;
	m->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (m->timerfd < 0)
		goto fail_errno;
	ret = arm_probe(m, PROBE_INTERVAL_MS * 1000000L);
	if (!ret)
		ret = ep_add(m, m->stopfd, slot_data(CTL_STOP, 0, TAG_CTL));
	if (!ret)
		ret = ep_add(m, m->timerfd, slot_data(CTL_TIMER, 0, TAG_CTL));
	if (!ret)
		ret = ep_add(m, m->kickfd, slot_data(CTL_KICK, 0, TAG_CTL));
	if (ret)
		goto fail;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->free_slot = UINT32_MAX;
	*out = m;
	return 0;
fail_errno:
	ret = -errno;
fail:
	close_fd(m->timerfd);
	close_fd(m->kickfd);
	close_fd(m->stopfd);
	close_fd(m->epfd);
	if (m->probe_page)
		munmap(m->probe_page, (size_t)ps);
	free(m);
	return ret;
}

void uffd_monitor_kick(struct uffd_monitor *m)
{
	uint64_t one = 1;

	/* Raw, as uffd_monitor_stop(); a full counter wakes the monitor anyway. */
	uffd_syscall3(SYS_write, m->kickfd, (long)&one, sizeof(one));
}

/* ---- slots ---- */

/* A free slot for @u (growing the table with mmap, never malloc): its number, or -ENOMEM. */
static int64_t slot_get_locked(struct uffd_monitor *m, struct uffd *u)
{
	uint32_t i = m->free_slot;

	if (i == UINT32_MAX) {
		uint32_t n = m->nslots ? m->nslots * 2 : 64, k;
		size_t len = (size_t)n * sizeof(struct mon_slot);
		struct mon_slot *s;

		if (n > (1u << 29))
			return -ENOMEM;
		s = uffd_sys_mmap(len);
		if (!s)
			return -ENOMEM;
		if (m->slots) {
			memcpy(s, m->slots, (size_t)m->nslots * sizeof(*s));
			uffd_sys_munmap(m->slots, m->slots_len);
		}
		/* Slot 0 is never used: control fds carry small numbers in the same field. */
		for (k = n; k-- > (m->nslots ? m->nslots : 8);) {
			s[k].next_free = m->free_slot;
			m->free_slot = k;
		}
		m->slots = s;
		m->slots_len = len;
		m->nslots = n;
		i = m->free_slot;
	}
	m->free_slot = m->slots[i].next_free;
	m->slots[i].u = u;
	m->slots[i].gen++;
	return i;
}

static void slot_put_locked(struct uffd_monitor *m, uint32_t i)
{
	m->slots[i].u = NULL;
	m->slots[i].gen++;
	m->slots[i].next_free = m->free_slot;
	m->free_slot = i;
}

/*
 * The context behind epoll data @d, if it is still this monitor's and alive, held by a monitor
 * thread: its memory (refs) and its membership (mon_refs: uffd_mon_close_dead() and
 * uffd_monitor_remove() wait for it). Both are taken under the lock that checked it, so it
 * cannot be closed between the check and the hold. mon_put() gives both back.
 */
struct uffd *uffd_mon_slot_ref(struct uffd_monitor *m, uint64_t d)
{
	uint32_t i = (uint32_t)(d & 0xffffffffu) >> 2, gen = (uint32_t)(d >> 32);
	struct uffd *u = NULL;

	pthread_mutex_lock(&m->lock);
	if (i < m->nslots && m->slots[i].gen == gen && m->slots[i].u && !m->slots[i].u->dead) {
		u = m->slots[i].u;
		mon_hold_locked(u);
	}
	pthread_mutex_unlock(&m->lock);
	return u;
}

/* ---- membership ---- */

static void unlink_ctx(struct uffd_monitor *m, struct uffd *u)
{
	if (u->mon_prev)
		u->mon_prev->mon_next = u->mon_next;
	else
		m->head = u->mon_next;
	if (u->mon_next)
		u->mon_next->mon_prev = u->mon_prev;
	u->mon_prev = u->mon_next = NULL;
	m->count--;
	epoll_ctl(m->epfd, EPOLL_CTL_DEL, u->fd, NULL);
	if (u->pidfd >= 0)
		epoll_ctl(m->epfd, EPOLL_CTL_DEL, u->pidfd, NULL);
	slot_put_locked(m, u->mon_slot);
	atomic_store(&u->mon_live, 0);
}

/* Called by uffd_close() on a context the monitor owns. */
void uffd_monitor_forget(struct uffd_monitor *m, struct uffd *u)
{
	pthread_mutex_lock(&m->lock);
	if (u->dead) {
		/* Already off the list, waiting to be closed: take it off that list. */
		struct uffd **pp = &m->dead;

		while (*pp && *pp != u)
			pp = &(*pp)->dead_next;
		if (*pp)
			*pp = u->dead_next;
		u->dead = false;
	} else if (u->mon == m) {
		unlink_ctx(m, u);
	}
	u->mon = NULL;
	pthread_mutex_unlock(&m->lock);
}

static int add_locked(struct uffd_monitor *m, struct uffd *u)
{
	int64_t slot = slot_get_locked(m, u);
	uint32_t gen;
	int ret;

	if (slot < 0)
		return (int)slot;
	gen = m->slots[slot].gen;
	u->mon_slot = (uint32_t)slot;
	u->mon = m;
	u->mon_prev = NULL;
	u->mon_next = m->head;
	if (m->head)
		m->head->mon_prev = u;
	m->head = u;
	m->count++;
	atomic_store(&u->mon_live, 1);
	ret = ep_add(m, u->fd, slot_data((uint32_t)slot, gen, TAG_CTX));
	if (!ret && u->pidfd >= 0)
		ret = ep_add(m, u->pidfd, slot_data((uint32_t)slot, gen, TAG_PID));
	if (ret) {
		unlink_ctx(m, u); /* deleting an fd that was not added is harmless */
		u->mon = NULL;
	}
	return ret;
}

int uffd_monitor_add(struct uffd_monitor *m, struct uffd *u)
{
	int ret;

	if (!m || !u)
		return -EINVAL;
	if (u->mon)
		return -EBUSY;
	pthread_mutex_lock(&m->lock);
	ret = uffd_pool_reserve(m, u);
	if (!ret)
		ret = add_locked(m, u);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int uffd_monitor_adopt_child(struct uffd_monitor *m, struct uffd *child)
{
	return uffd_monitor_add(m, child);
}

int uffd_monitor_remove(struct uffd_monitor *m, struct uffd *u)
{
	if (!m || !u)
		return -EINVAL;
	if (uffd_frames_hold(u, m))
		return -EDEADLK;
	pthread_mutex_lock(&m->lock);
	if (u->mon != m || u->dead) {
		pthread_mutex_unlock(&m->lock);
		return u->mon == m ? -ESRCH : -ENOENT;
	}
	unlink_ctx(m, u);
	u->mon = NULL;
	pthread_mutex_unlock(&m->lock);
	/*
	 * Threads of the monitor that took the context before it left finish what they are doing
	 * with it (and the pool's queue may hold batches of it, which a worker delivers): the
	 * context is the caller's once none is left. mon_live was cleared before active is read,
	 * and a monitor thread enters before it reads mon_live, so one of them sees the other.
	 */
	while (atomic_load(&u->active) || atomic_load(&u->mon_refs))
		sched_yield();
	return 0;
}

int uffd_monitor_watch_pid(struct uffd_monitor *m, struct uffd *u, pid_t pid)
{
	int fd, ret;

	if (!m || !u || pid <= 0 || u->mon != m)
		return -EINVAL;
#ifdef SYS_pidfd_open
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -errno;
#else
	return -ENOSYS;
#endif
	pthread_mutex_lock(&m->lock);
	if (u->pidfd >= 0) {
		epoll_ctl(m->epfd, EPOLL_CTL_DEL, u->pidfd, NULL);
		close_fd(u->pidfd);
		u->pidfd = -1;
	}
	ret = ep_add(m, fd, slot_data(u->mon_slot, m->slots[u->mon_slot].gen, TAG_PID));
	if (ret)
		close_fd(fd);
	else
		u->pidfd = fd;
	u->pid = ret ? u->pid : pid;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int uffd_monitor_stop(struct uffd_monitor *m)
{
	uint64_t one = 1;
	long r;

	if (!m)
		return -EINVAL;
	/* A raw write(2): async-signal-safe and no cancellation point. An eventfd write only fails
	 * when the counter is full, and then the stop is seen anyway. */
	r = uffd_syscall3(SYS_write, m->stopfd, (long)&one, sizeof(one));

	return r < 0 && r != -EAGAIN ? (int)r : 0;
}

int uffd_monitor_probe(struct uffd_monitor *m)
{
	if (!m)
		return -EINVAL;
	/* Expire now, then tick as before: the loop probes on the timer's fd. */
	return arm_probe(m, 1);
}

int uffd_monitor_fd(const struct uffd_monitor *m)
{
	return m ? m->epfd : -EINVAL;
}

int uffd_monitor_count(const struct uffd_monitor *m)
{
	return m ? m->count : -EINVAL;
}

/* ---- exits ---- */

/*
 * The process behind @u is gone: take it out of the loop (its slot goes stale) and onto the
 * dead list, where it is closed once on_exit has returned. @run_exit: this thread may run user
 * code (not the pool's reader), so on_exit runs here if it is time.
 */
void uffd_mon_bury(struct uffd_monitor *m, struct uffd *u, bool run_exit)
{
	uffd_ctx_report_exit(u);
	/* on_exit first where it can run now: it still sees the context counted in the monitor. */
	if (run_exit)
		uffd_exit_try(u);
	pthread_mutex_lock(&m->lock);
	if (u->dead || u->mon != m) {
		pthread_mutex_unlock(&m->lock);
		return;
	}
	unlink_ctx(m, u);
	u->dead = true;
	u->dead_next = m->dead;
	m->dead = u;
	pthread_mutex_unlock(&m->lock);
}

/* Close the dead contexts whose on_exit has returned; the others wait for it (deferred faults). */
void uffd_mon_close_dead(struct uffd_monitor *m)
{
	struct uffd *done = NULL, **pp;

	pthread_mutex_lock(&m->lock);
	for (pp = &m->dead; *pp;) {
		struct uffd *u = *pp;

		if (atomic_load(&u->exit_reported) == 2 && !atomic_load(&u->mon_refs)) {
			*pp = u->dead_next;
			u->dead = false;
			u->mon = NULL;
			u->dead_next = done;
			done = u;
		} else {
			pp = &u->dead_next;
		}
	}
	pthread_mutex_unlock(&m->lock);
	while (done) {
		struct uffd *u = done;

		done = u->dead_next;
		uffd_close(u);
	}
}

/*
 * A UFFDIO_COPY of one page, without waking, from the monitor's PROT_NONE page: it cannot install
 * anything (the source is unreadable, checked before any page is placed), but the kernel checks
 * first that the mm is alive. ESRCH: gone; anything else (ENOENT, EFAULT, EAGAIN): alive.
 */
static bool probe_alive(struct uffd_monitor *m, struct uffd *u)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)m->probe_page,
		.src = (uintptr_t)m->probe_page,
		.len = (uint64_t)uffd_page_size(),
		.mode = UFFDIO_COPY_MODE_DONTWAKE,
	};

	return uffd_sys_ioctl(u->fd, UFFDIO_COPY, &c) != -ESRCH;
}

/*
 * Probe the contexts whose exit the monitor cannot hear of otherwise. The list is walked under
 * the lock, a referenced context at a time; the probe itself and uffd_mon_bury() run without it.
 */
void uffd_mon_probe_all(struct uffd_monitor *m, bool reader)
{
	pid_t self = getpid();
	struct uffd *u, *next;

	pthread_mutex_lock(&m->lock);
	u = m->head;
	if (u)
		mon_hold_locked(u);
	pthread_mutex_unlock(&m->lock);
	for (; u; u = next) {
		bool gone;

		/* The next one is referenced before this one may leave the list. */
		pthread_mutex_lock(&m->lock);
		next = u->mon == m && !u->dead ? u->mon_next : NULL;
		if (next)
			mon_hold_locked(next);
		pthread_mutex_unlock(&m->lock);
		/*
		 * Our own process is alive while we run. A watched one is probed too: after an
		 * exec() its old address space, and with it the context, is gone, while the pid
		 * lives on and its pidfd stays quiet.
		 */
		gone = u->pid != self && !u->dead &&
		       (atomic_load(&u->exited) || !probe_alive(m, u));
		if (gone) {
			if (reader)
				uffd_pool_push_exit(m, u);
			else
				uffd_mon_bury(m, u, true);
		}
		mon_put(u);
	}
}

/* ---- serving from uffd_monitor_run() threads ---- */

/*
 * Dispatch @u (referenced) for the monitor, unless it left the monitor meanwhile: it enters
 * first, then checks it is still a live member (see uffd_monitor_remove()).
 */
static int mon_dispatch(struct uffd_monitor *m, struct uffd *u, int *handled)
{
	int r;

	if (!atomic_load(&u->mon_live) || u->dead)
		return 0;
	r = uffd_dispatch(u, 0);
	if (r > 0)
		*handled += r;
	else if (r == -ESRCH)
		uffd_mon_bury(m, u, true);
	else if (r < 0 && r != -EINTR)
		return r; /* nothing is lost: the next run goes on from here */
	if (atomic_load(&u->exited))
		uffd_mon_bury(m, u, true);
	return 0;
}

/*
 * Dispatch the contexts that hold messages already read (a dispatch stopped by an error, faults
 * an -EAGAIN read brought in, a pool's leftovers): the kernel no longer has them, so their fds
 * do not poll readable for them. Up to 64 per round, referenced under the lock.
 */
static int serve_queued(struct uffd_monitor *m, int *handled)
{
	struct uffd *list[64];
	unsigned n = 0, i;
	struct uffd *u;
	int err = 0;

	pthread_mutex_lock(&m->lock);
	for (u = m->head; u && n < 64; u = u->mon_next) {
		if (u->dead || !uffd_ctx_has_work(u))
			continue;
		mon_hold_locked(u);
		list[n++] = u;
	}
	pthread_mutex_unlock(&m->lock);
	for (i = 0; i < n; i++) {
		int r = mon_dispatch(m, list[i], handled);

		if (r < 0 && !err)
			err = r;
		mon_put(list[i]);
	}
	return err;
}

static int elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

/* One round: wait, then serve what epoll reported. Sets *stop when uffd_monitor_stop() ran. */
static int run_round(struct uffd_monitor *m, int wait, int *handled, bool *stop)
{
	struct epoll_event evs[64];
	int n, i, err = 0;

	n = ep_wait(m, evs, 64, wait);
	if (n < 0)
		return n == -EINTR ? 0 : n;
	for (i = 0; i < n; i++) {
		uint64_t d = evs[i].data.u64;
		unsigned tag = (unsigned)(d & TAG_MASK);
		struct uffd *u;
		int r;

		if (tag == TAG_CTL) {
			switch ((unsigned)((d & 0xffffffffu) >> 2)) {
			case CTL_STOP:
				take_count(m->stopfd);
				*stop = true;
				break;
			case CTL_TIMER:
				if (take_count(m->timerfd))
					uffd_mon_probe_all(m, false);
				break;
			default:
				take_count(m->kickfd);
				break;
			}
			continue;
		}
		u = uffd_mon_slot_ref(m, d);
		if (!u)
			continue; /* closed or gone since epoll_wait() saw it */
		if (tag == TAG_PID) {
			/* Serve what is left before the context goes. */
			mon_dispatch(m, u, handled);
			uffd_mon_bury(m, u, true);
			r = 0;
		} else {
			r = mon_dispatch(m, u, handled);
		}
		mon_put(u);
		if (r < 0 && !err)
			err = r;
	}
	return err;
}

/* Whether dead contexts wait for their on_exit (deferred faults) to be closed; closes the others. */
static bool dead_waiting(struct uffd_monitor *m)
{
	bool any;

	uffd_mon_close_dead(m);
	pthread_mutex_lock(&m->lock);
	any = m->dead != NULL;
	pthread_mutex_unlock(&m->lock);
	return any;
}

static bool in_child_of_owner(const struct uffd_monitor *m)
{
	return getpid() != m->owner;
}

int uffd_monitor_run(struct uffd_monitor *m, int timeout_ms)
{
	struct uffd_frame f;
	struct timespec t0;
	int handled = 0, err = 0;
	bool stop = false;

	if (!m || timeout_ms < -1)
		return -EINVAL;
	if (uffd_frames_hold(NULL, m))
		return -EDEADLK;
	pthread_mutex_lock(&m->lock);
	if (m->pool) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	atomic_fetch_add(&m->runners, 1);
	pthread_mutex_unlock(&m->lock);
	f.u = NULL;
	f.m = m;
	f.up = uffd_frames;
	uffd_frames = &f;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!stop) {
		int wait = -1;

		/*
		 * A context whose process is gone is off the count but not gone while faults it
		 * deferred are unfinished: its on_exit runs after the last one, and the monitor
		 * closes it after that (the kick wakes this loop). Returning before would leave it
		 * to uffd_monitor_free(), and a later run would return at once without closing it.
		 */
		if (m->count == 0 && !dead_waiting(m)) {
			/* Nothing to probe, but clear the tick: a loop polling the fd would spin. */
			take_count(m->timerfd);
			break;
		}
		err = serve_queued(m, &handled);
		uffd_mon_close_dead(m);
		if (err)
			break;
		if (timeout_ms >= 0) {
			wait = timeout_ms - elapsed_ms(&t0);
			if (wait < 0)
				wait = 0;
		}
		err = run_round(m, wait, &handled, &stop);
		uffd_mon_close_dead(m);
		if (err)
			break;
		if (timeout_ms >= 0 && elapsed_ms(&t0) >= timeout_ms)
			break;
	}
	uffd_frames = f.up;
	atomic_fetch_sub(&m->runners, 1);
	return err ? err : handled;
}

/* ---- freeing ---- */

/*
 * In a child forked while the monitor ran, the pool's threads do not exist and any lock may have
 * been held by one of them: close the fds and unmap, taking no lock.
 */
static void free_in_child(struct uffd_monitor *m)
{
	struct uffd *lists[2] = { m->head, m->dead }, *u, *nx;
	int k;

	for (k = 0; k < 2; k++) {
		for (u = lists[k]; u; u = nx) {
			nx = k ? u->dead_next : u->mon_next;
			close_fd(u->pidfd);
			close_fd(u->fd);
			uffd_ctx_free(u);
		}
	}
}

void uffd_monitor_free(struct uffd_monitor *m)
{
	if (!m)
		return;
	if (in_child_of_owner(m)) {
		free_in_child(m);
	} else {
		if (m->pool) {
			uffd_monitor_stop(m);
			uffd_monitor_join(m);
		}
		while (m->head)
			uffd_close(m->head); /* unlinks itself */
		while (m->dead)
			uffd_close(m->dead); /* takes itself off the dead list */
		pthread_mutex_destroy(&m->lock);
		pthread_cond_destroy(&m->cond);
	}
	close_fd(m->timerfd);
	close_fd(m->kickfd);
	close_fd(m->stopfd);
	close_fd(m->epfd);
	munmap(m->probe_page, (size_t)uffd_page_size());
	if (m->slots)
		uffd_sys_munmap(m->slots, m->slots_len);
	if (m->queue)
		uffd_sys_munmap(m->queue, m->queue_len);
	free(m->workers);
	free(m);
}
