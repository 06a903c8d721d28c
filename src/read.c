/* SPDX-License-Identifier: MIT */
/* Waiting for and reading one batch: poll-first or read-first, latency-mode spinning. */
#include <errno.h>
#include <time.h>

#include "internal.h"

/*
 * Whether reads take u->lock. A context that can receive events other than faults reads under
 * the lock and preps before releasing it, so that reads and prep follow the kernel's order
 * however many threads dispatch it: the map changes in that order, and notifications are queued
 * in it. The read() releases the threads blocked in munmap, mremap or fork; one of them may at
 * once register the same addresses again, and uffd_register() takes u->lock, so it waits until
 * prep has cut the old range. A context that receives only faults reads without the lock: any
 * number of threads may read it at once, and each fault goes to exactly one of them.
 */
bool uffd_read_locks(const struct uffd *u)
{
	return (u->features & UFFD_EVENT_FEATURES) != 0;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * One non-blocking read of up to a batch into b->msgs. Returns the number of messages, 0 when
 * none were waiting, or a negative errno (EMFILE and ENFILE mean a FORK event's fd could not be
 * installed: the kernel keeps the event).
 *
 * __acquires(u->lock) when it returns messages and uffd_read_locks(u): the caller preps the
 * batch and releases the lock (uffd_dispatch(), uffd_read_now()). While a batch whose prep
 * stopped (-ENOMEM) is stalled, nothing more is read: its events come first.
 */
static inline __attribute__((always_inline)) int read_raw(struct uffd *u, struct uffd_batch *b)
{
	bool locks = uffd_read_locks(u);
	ssize_t n;
	unsigned cnt;

	if (locks) {
		pthread_mutex_lock(&u->lock);
		if (uffd_unlikely(u->stalled != NULL)) {
			pthread_mutex_unlock(&u->lock);
			return 0;
		}
	}
	n = uffd_sys_read(u->fd, b->msgs, (size_t)u->batch * sizeof(struct uffd_msg));
	cnt = n > 0 ? (unsigned)((size_t)n / sizeof(struct uffd_msg)) : 0;
	if (cnt == 0) {
		if (locks)
			pthread_mutex_unlock(&u->lock);
		return n == -EAGAIN || n >= 0 ? 0 : (int)n;
	}
	b->nmsg = cnt;
	uffd_stat_add(&u->st.reads, 1);
	uffd_stat_add(&u->st.messages, cnt);
	return (int)cnt;
}

/*
 * Latency mode: re-read the fd without blocking for up to spin_us (less if @timeout_ms is
 * shorter), so that a message is taken the moment it arrives, without the cost of waking a
 * sleeping thread (~20-50 us on another CPU). Returns what the last read returned; on 0,
 * *timeout_ms is what is left of it.
 */
__attribute__((noinline)) static int spin_read(struct uffd *u, struct uffd_batch *b,
					       int *timeout_ms)
{
	uint64_t t0 = now_us(), lim = u->spin_us, spent;
	int n;

	if (*timeout_ms > 0 && (uint64_t)*timeout_ms * 1000u < lim)
		lim = (uint64_t)*timeout_ms * 1000u;
	do {
		n = read_raw(u, b);
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

/*
 * Read-first credit: a read that finds messages adds one, up to READ_CREDIT_MAX; one that finds
 * the fd empty takes one, and at zero the waits switch to polling first. So a handler keeps
 * reading first while at least half of its reads find messages (one syscall where polling first
 * costs two), and a rare miss does not switch it.
 */
#define READ_CREDIT_MAX 4u
/* While polling first, every POLL_FIRST_PROBE-th wait reads first again (see uffd_read_wait). */
#define POLL_FIRST_PROBE 16u

static inline __attribute__((always_inline)) int poll_read(struct uffd *u, struct uffd_batch *b,
							   int timeout_ms)
{
	int n = uffd_sys_poll1(u->fd, timeout_ms);

	if (n <= 0)
		return n;
	n = read_raw(u, b);
	if ((unsigned)n == u->batch)
		b->poll_first = 0;
	return n;
}

/* uffd_read_wait() when it reads first: and when that finds the fd empty, spins or polls. */
__attribute__((noinline)) static int read_first(struct uffd *u, struct uffd_batch *b,
						int timeout_ms)
{
	int n = read_raw(u, b);

	if (n != 0) {
		if (n > 0 && b->read_credit < READ_CREDIT_MAX)
			b->read_credit++;
		return n;
	}
	if (timeout_ms == 0)
		return n;
	if (b->read_credit)
		b->read_credit--;
	else
		b->poll_first = 1;
	if (u->spin_us) {
		n = spin_read(u, b, &timeout_ms);
		if (n != 0 || timeout_ms == 0)
			return n;
	}
	return poll_read(u, b, timeout_ms);
}

/*
 * Read a batch into b->msgs, waiting up to @timeout_ms for one. Returns the number of messages
 * (__acquires(u->lock) as read_raw()), 0 on timeout or when another thread took what the wait saw,
 * or a negative errno.
 *
 * A non-blocking fd needs a poll() to sleep and a read() to take the messages. Reading first
 * costs one syscall when messages are waiting and three (read, poll, read) when the fd is empty;
 * polling first costs two either way. Which wins depends on where the threads run. A handler on
 * a CPU of its own is faster than its faulting threads and mostly finds the fd empty: the faults
 * it just resolved are still being retried. A handler sharing its CPU with the faulting thread
 * mostly finds the next fault waiting: the fault it resolved woke that thread, which preempted
 * it, faulted again and went back to sleep (seen: 41 empty reads in 8192 on one CPU, 8083 in
 * 8192 split). So a wait reads first while its reads mostly find messages (read_credit), polls
 * first once they mostly do not, and then reads first again every POLL_FIRST_PROBE waits, or
 * after a read that filled a whole batch (more are likely waiting), to notice when the threads
 * have moved. The state lives in the batch, so a thread that dispatches alone (and always gets
 * the spare) keeps it.
 */
int uffd_read_wait(struct uffd *u, struct uffd_batch *b, int timeout_ms)
{
	if (timeout_ms == 0 || b->poll_first == 0 || u->spin_us)
		return read_first(u, b, timeout_ms);
	if (++b->poll_first > POLL_FIRST_PROBE) {
		b->poll_first = 0; /* a probe: a miss goes straight back to polling first */
		b->read_credit = 0;
		return read_first(u, b, timeout_ms);
	}
	return poll_read(u, b, timeout_ms);
}

/*
 * Prep what read_raw() or uffd_read_wait() just read into @b, and let go of the lock:
 * __releases(u->lock) where uffd_read_locks(u) says the read took it; a context without layout
 * events read without it, and preps with it. Returns 0, or -ENOMEM when prep stopped and @b is
 * the context's stalled batch, no longer the caller's.
 */
int uffd_prep_read(struct uffd *u, struct uffd_batch *b)
{
	int ret;

	if (!uffd_read_locks(u))
		pthread_mutex_lock(&u->lock);
	ret = uffd_prep_locked(u, b);
	pthread_mutex_unlock(&u->lock);
	return ret;
}

/*
 * One non-blocking read into @b, then prep; no lock is held on return. Returns the number of
 * messages read, or a negative errno; -ENOMEM means prep stopped and @b is now the context's
 * stalled batch, no longer the caller's.
 */
int uffd_read_now(struct uffd *u, struct uffd_batch *b)
{
	int n = read_raw(u, b);
	int ret;

	if (n <= 0)
		return n;
	ret = uffd_prep_read(u, b);
	return ret < 0 ? ret : n;
}
