/* SPDX-License-Identifier: MIT */
/* The monitor: one epoll loop over many contexts, their fork children, and their exits. */
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

#include "internal.h"

/* How often contexts whose pid is unknown are probed: exits are reported within a second. */
#define PROBE_INTERVAL_MS 250

/* epoll data: a context pointer (page-aligned, from mmap) with a tag in its low bits. */
enum { TAG_CTX = 0, TAG_PID = 1, TAG_STOP = 2, TAG_TIMER = 3, TAG_MASK = 3 };

struct uffd_monitor {
	int epfd;
	int stopfd;
	int timerfd;
	pthread_mutex_t lock; /* guards the list against uffd_monitor_add from other threads */
	struct uffd *head;
	_Atomic int count; /* read without the lock by uffd_monitor_count() and run() */
	struct uffd *dead; /* contexts to close at the end of the current round */
	void *probe_page;  /* PROT_NONE: the source of liveness probes */
	bool running;
};

static uint64_t tagged(const void *p, unsigned tag)
{
	return (uint64_t)(uintptr_t)p | tag;
}

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
	m->epfd = m->stopfd = m->timerfd = -1;
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
	m->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (m->timerfd < 0)
		goto fail_errno;
	ret = arm_probe(m, PROBE_INTERVAL_MS * 1000000L);
	if (!ret)
		ret = ep_add(m, m->stopfd, tagged(NULL, TAG_STOP));
	if (!ret)
		ret = ep_add(m, m->timerfd, tagged(NULL, TAG_TIMER));
	if (ret)
		goto fail;
	pthread_mutex_init(&m->lock, NULL);
	*out = m;
	return 0;
fail_errno:
	ret = -errno;
fail:
	if (m->timerfd >= 0)
		close(m->timerfd);
	if (m->stopfd >= 0)
		close(m->stopfd);
	if (m->epfd >= 0)
		close(m->epfd);
	if (m->probe_page)
		munmap(m->probe_page, (size_t)ps);
	free(m);
	return ret;
}

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
	u->mon = NULL;
}

/* Called by uffd_close() on a context the monitor owns. */
void uffd_monitor_forget(struct uffd_monitor *m, struct uffd *u)
{
	pthread_mutex_lock(&m->lock);
	if (u->dead) {
		/* Already queued for closing in this round: take it off that list. */
		struct uffd **pp = &m->dead;

		while (*pp && *pp != u)
			pp = &(*pp)->dead_next;
		if (*pp)
			*pp = u->dead_next;
		u->dead = false;
		u->mon = NULL;
	} else {
		unlink_ctx(m, u);
	}
	pthread_mutex_unlock(&m->lock);
}

/* Close the contexts bury() set aside; they are no longer linked or in the epoll set. */
static void close_dead(struct uffd_monitor *m)
{
	while (m->dead) {
		struct uffd *u = m->dead;

		m->dead = u->dead_next;
		u->dead = false;
		u->mon = NULL;
		uffd_close(u);
	}
}

void uffd_monitor_free(struct uffd_monitor *m)
{
	if (!m)
		return;
	while (m->head) {
		struct uffd *u = m->head;

		uffd_close(u); /* unlinks itself */
	}
	close_dead(m);
	close(m->timerfd);
	close(m->stopfd);
	close(m->epfd);
	munmap(m->probe_page, (size_t)uffd_page_size());
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static int add_locked(struct uffd_monitor *m, struct uffd *u)
{
	int ret;

	/*
	 * Link first: once its fd is in the epoll set, a monitor running in another thread may see
	 * the context's first event before epoll_ctl() returns here, and checks u->mon.
	 */
	u->mon = m;
	u->mon_prev = NULL;
	u->mon_next = m->head;
	if (m->head)
		m->head->mon_prev = u;
	m->head = u;
	m->count++;
	ret = ep_add(m, u->fd, tagged(u, TAG_CTX));
	if (!ret && u->pidfd >= 0)
		ret = ep_add(m, u->pidfd, tagged(u, TAG_PID));
	if (ret)
		unlink_ctx(m, u); /* deleting an fd that was not added is harmless */
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
	ret = add_locked(m, u);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int uffd_monitor_adopt_child(struct uffd_monitor *m, struct uffd *child)
{
	return uffd_monitor_add(m, child);
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
		close(u->pidfd);
		u->pidfd = -1;
	}
	ret = ep_add(m, fd, tagged(u, TAG_PID));
	if (ret)
		close(fd);
	else
		u->pidfd = fd;
	u->pid = ret ? u->pid : pid;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int uffd_monitor_stop(struct uffd_monitor *m)
{
	uint64_t one = 1;

	if (!m)
		return -EINVAL;
	/* write(2) is async-signal-safe; an eventfd write only fails when the counter is full. */
	if (write(m->stopfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int uffd_monitor_probe(struct uffd_monitor *m)
{
	if (!m)
		return -EINVAL;
	/* Expire now, then tick as before: the run loop probes on the timer's fd. */
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

/* The process behind @u is gone: run on_exit once and close it after this round. */
static void bury(struct uffd_monitor *m, struct uffd *u)
{
	if (u->dead || u->mon != m)
		return;
	uffd_ctx_report_exit(u);
	pthread_mutex_lock(&m->lock);
	unlink_ctx(m, u);
	u->mon = m; /* still ours until closed */
	u->dead = true;
	u->dead_next = m->dead;
	m->dead = u;
	pthread_mutex_unlock(&m->lock);
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

static void probe_all(struct uffd_monitor *m)
{
	struct uffd *u, *next;
	pid_t self = getpid();

	/*
	 * Other threads may add contexts (at the head) meanwhile: walk under the lock, but drop it
	 * around bury(), which runs on_exit. Only this thread takes contexts off the list.
	 */
	pthread_mutex_lock(&m->lock);
	u = m->head;
	pthread_mutex_unlock(&m->lock);
	for (; u; u = next) {
		pthread_mutex_lock(&m->lock);
		next = u->mon_next;
		pthread_mutex_unlock(&m->lock);
		/*
		 * Our own process is alive while we run. A watched one is probed too: after an
		 * exec() its old address space, and with it the context, is gone, while the pid
		 * lives on and its pidfd stays quiet.
		 */
		if (u->pid == self)
			continue;
		if (atomic_load(&u->exited) || !probe_alive(m, u))
			bury(m, u);
	}
}

/*
 * Dispatch contexts that hold events already read from the kernel: a dispatch stopped by an error
 * (-ENOMEM making a fork child, a callback's error) keeps the rest for the next call, but the
 * kernel no longer has them, so the fd will not poll readable for them again.
 */
static int serve_queued(struct uffd_monitor *m, int *handled)
{
	struct uffd *u, *next;
	int err = 0;

	for (u = m->head; u; u = next) {
		int r;

		next = u->mon_next;
		if (u->dead || u->qhead == u->qtail)
			continue;
		r = uffd_dispatch(u, 0);
		if (r > 0)
			*handled += r;
		else if (r == -ESRCH)
			bury(m, u);
		else if (r < 0 && r != -EINTR && !err)
			err = r;
		if (atomic_load(&u->exited))
			bury(m, u);
	}
	return err;
}

static int elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

int uffd_monitor_run(struct uffd_monitor *m, int timeout_ms)
{
	struct epoll_event evs[64];
	struct timespec t0;
	int handled = 0;

	if (!m || timeout_ms < -1)
		return -EINVAL;
	if (m->running)
		return -EBUSY;
	m->running = true;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int wait = -1, n, i, err = 0;
		bool stop = false;

		if (m->count == 0) {
			uint64_t ticks;

			/* Nothing to probe, but clear the tick: a loop polling the fd would spin. */
			if (read(m->timerfd, &ticks, sizeof(ticks)) < 0) {
				/* no tick pending */
			}
			break;
		}
		err = serve_queued(m, &handled);
		close_dead(m);
		if (err) {
			m->running = false;
			return err;
		}
		if (timeout_ms >= 0) {
			wait = timeout_ms - elapsed_ms(&t0);
			if (wait < 0)
				wait = 0;
		}
		n = epoll_wait(m->epfd, evs, 64, wait);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			m->running = false;
			return err;
		}
		for (i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			struct uffd *u = (struct uffd *)(uintptr_t)(d & ~(uint64_t)TAG_MASK);
			uint64_t cnt;
			int r;

			switch ((unsigned)(d & TAG_MASK)) {
			case TAG_STOP:
				if (read(m->stopfd, &cnt, sizeof(cnt)) < 0) {
					/* empty already: another round consumed it */
				}
				stop = true;
				break;
			case TAG_TIMER:
				if (read(m->timerfd, &cnt, sizeof(cnt)) < 0) {
					/* nothing expired after all */
				}
				probe_all(m);
				break;
			case TAG_PID:
				if (!u->dead && u->mon == m) {
					/* Serve what is left before the context goes. */
					r = uffd_dispatch(u, 0);
					if (r > 0)
						handled += r;
					bury(m, u);
				}
				break;
			default:
				if (u->dead || u->mon != m)
					break;
				r = uffd_dispatch(u, 0);
				if (r > 0)
					handled += r;
				else if (r == -ESRCH)
					bury(m, u);
				else if (r < 0 && r != -EINTR && !err)
					err = r; /* nothing is lost: the next run goes on from here */
				if (atomic_load(&u->exited))
					bury(m, u);
				break;
			}
		}
		close_dead(m);
		if (err) {
			m->running = false;
			return err;
		}
		if (stop || (timeout_ms >= 0 && elapsed_ms(&t0) >= timeout_ms))
			break;
	}
	m->running = false;
	return handled;
}
