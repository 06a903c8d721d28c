/* SPDX-License-Identifier: MIT */
/* Private definitions shared by the library's sources: the context, the range map, syscalls. */
#ifndef UFFD_INTERNAL_H
#define UFFD_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "uffd.h"

#define UFFD_HIDDEN __attribute__((visibility("hidden")))
#define uffd_likely(x) __builtin_expect(!!(x), 1)
#define uffd_unlikely(x) __builtin_expect(!!(x), 0)

#define UFFD_DEFAULT_BATCH 64u
#define UFFD_MAX_BATCH 4096u
#define UFFD_MAX_SPIN_US 1000000u
/* Redeliveries of a fault whose resolving call met -EAGAIN before it is woken instead. */
#define UFFD_EAGAIN_TRIES 16

/* The features that make the kernel send events other than page faults. */
#define UFFD_EVENT_FEATURES                                              \
	((uint64_t)(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
		    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP))
/* Every feature bit the library knows (Linux 6.18). */
#define UFFD_KNOWN_FEATURES ((uint64_t)0x1ffff)
#define UFFD_KNOWN_OPEN_FLAGS \
	(UFFD_OPEN_KERNEL_FAULTS | UFFD_OPEN_SYSCALL_ONLY | UFFD_OPEN_DEVICE_ONLY)

/* ---- sys.c: every raw syscall and ioctl; the one place that turns -1/errno into -errno ---- */
UFFD_HIDDEN int uffd_sys_userfaultfd(int flags);
UFFD_HIDDEN int uffd_sys_dev_new(int flags);
/*
 * The calls on the serving path (ioctl, read, poll) are raw system calls, not glibc's wrappers:
 * read() and poll() are cancellation points there, and a thread cancelled inside read() after
 * the kernel handed it a message loses the message (kernel.md), or leaves u->lock held (read_raw
 * holds it across the read). Not being cancellation points is part of the contract (uffd.h).
 * On x86-64 the instruction is made inline, as liburing does, and returns -errno itself; other
 * architectures go through syscall(2). Per served fault this saves glibc's cancellation
 * bookkeeping and errno handling, about half the user-space instructions of a raw loop.
 */
static inline long uffd_syscall3(long nr, long a, long b, long c)
{
#if defined(__x86_64__) && !defined(UFFD_NO_INLINE_SYSCALLS)
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
#else
	long ret = syscall(nr, a, b, c);

	return ret < 0 ? -errno : ret;
#endif
}

static inline int uffd_sys_ioctl(int fd, unsigned long req, void *arg)
{
	return (int)uffd_syscall3(SYS_ioctl, fd, (long)req, (long)arg);
}
/* Raw openat(AT_FDCWD, path, flags | O_CLOEXEC): the fd or a negative errno; no cancellation point. */
UFFD_HIDDEN int uffd_sys_open(const char *path, int flags);
UFFD_HIDDEN int uffd_sys_close(int fd);
UFFD_HIDDEN void *uffd_sys_mmap(size_t len);
UFFD_HIDDEN void uffd_sys_munmap(void *p, size_t len);
/* The page size, read once (every resolving call checks alignment against it). */
UFFD_HIDDEN extern _Atomic long uffd_page_size_cache;
UFFD_HIDDEN __attribute__((cold)) long uffd_page_size_slow(void);
static inline long uffd_page_size(void)
{
	long ps = atomic_load_explicit(&uffd_page_size_cache, memory_order_relaxed);

	return ps ? ps : uffd_page_size_slow();
}
/*
 * Test-only fault injection: when the hook returns non-zero for a site, that call fails with it.
 * Compiled in only for the test suite's copy of the library (uffd_testing, built with
 * UFFD_FAULT_INJECTION); the installed libraries carry neither the hook nor its counters.
 */
/* UFFD_FAIL_CORRUPT does not fail the read: it makes the page faults it read undecodable (a
 * thread id no pid can have), as a 64-bit process's fault seen by a 32-bit monitor would be. */
enum uffd_fail_site {
	UFFD_FAIL_MMAP,
	UFFD_FAIL_READ,
	UFFD_FAIL_POLL,
	UFFD_FAIL_CORRUPT,
	UFFD_FAIL__COUNT
};
#ifdef UFFD_FAULT_INJECTION
UFFD_HIDDEN int uffd_fail_check(enum uffd_fail_site site);
UFFD_HIDDEN void uffd_fail_corrupt(void *buf, long len);
#else
static inline int uffd_fail_check(enum uffd_fail_site site)
{
	(void)site;
	return 0;
}
#endif

/* One read() of @len bytes: the byte count or a negative errno (see uffd_sys_ioctl). */
static inline ssize_t uffd_sys_read(int fd, void *buf, size_t len)
{
	int inj = uffd_fail_check(UFFD_FAIL_READ);
	long n;

	if (inj)
		return -inj;
	n = uffd_syscall3(SYS_read, fd, (long)buf, (long)len);
#ifdef UFFD_FAULT_INJECTION
	if (n > 0 && uffd_fail_check(UFFD_FAIL_CORRUPT))
		uffd_fail_corrupt(buf, n);
#endif
	return n;
}

/* Wait up to @timeout_ms for @fd to be readable: 1, 0 on timeout, -EBADF when the fd polls
 * POLLERR (a blocking userfaultfd) or POLLNVAL, or a negative errno (-EINTR). */
static inline int uffd_sys_poll1(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int inj = uffd_fail_check(UFFD_FAIL_POLL);
	long n;

	if (inj)
		return -inj;
#ifdef SYS_poll
	n = uffd_syscall3(SYS_poll, (long)&p, 1, timeout_ms);
#else
	{
		struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };

		n = syscall(SYS_ppoll, &p, 1, timeout_ms < 0 ? NULL : &ts, NULL, 0);
		if (n < 0)
			n = -errno;
	}
#endif
	if (n <= 0)
		return (int)n;
	return (p.revents & (POLLERR | POLLNVAL)) ? -EBADF : 1;
}

/*
 * The page sources' calls (source.c, order.c, fdpass.c): raw too, since glibc's read, write,
 * pread, sendmsg and recvmsg are cancellation points. The byte count or a negative errno. None
 * is a fault-injection site: uffd_sys_read_plain() is uffd_sys_read() without its hooks.
 */
static inline ssize_t uffd_sys_read_plain(int fd, void *buf, size_t len)
{
	return uffd_syscall3(SYS_read, fd, (long)buf, (long)len);
}

static inline ssize_t uffd_sys_write(int fd, const void *buf, size_t len)
{
	return uffd_syscall3(SYS_write, fd, (long)buf, (long)len);
}

struct msghdr;
static inline ssize_t uffd_sys_sendmsg(int fd, const struct msghdr *mh, int flags)
{
	return uffd_syscall3(SYS_sendmsg, fd, (long)mh, flags);
}

static inline ssize_t uffd_sys_recvmsg(int fd, struct msghdr *mh, int flags)
{
	return uffd_syscall3(SYS_recvmsg, fd, (long)mh, flags);
}

/* One pread64(): the byte count or a negative errno. */
UFFD_HIDDEN ssize_t uffd_sys_pread(int fd, void *buf, size_t len, uint64_t offset);

/* ---- ranges.c: the range map ---- */
struct uffd_node {
	uintptr_t start, end;
	void *data;
	size_t offset;
	uint64_t modes;
	struct uffd_node *left, *right; /* treap by start */
	struct uffd_node *prev, *next;	/* address order */
	uint32_t prio;
};

/* One slot of the lookup index: a piece's start and the piece before it (see ranges.c). */
struct uffd_ixent {
	uintptr_t start;
	struct uffd_node *floor;
};

struct uffd_rmap {
	struct uffd_node *root;
	struct uffd_node *first;
	long count;
	uint32_t seed;
	struct uffd_node *free; /* free nodes, linked by ->next */
	size_t nfree;
	void *chunks; /* mmap'd chunks, each starting with a pointer to the next */

	/* The lookup index (ranges.c), mmap'd, or NULL; used only while fresh. */
	struct uffd_ixent *ix;
	size_t ix_cap;		 /* its slots */
	unsigned long ix_misses; /* lookups through the tree since the map last changed */
	bool ix_fresh;		 /* ix matches the map */
};

UFFD_HIDDEN void uffd_rmap_init(struct uffd_rmap *m, uint32_t seed);
UFFD_HIDDEN void uffd_rmap_destroy(struct uffd_rmap *m);
/* Make sure @n nodes are free without allocating later: 0 or -ENOMEM. Uses mmap, never malloc. */
UFFD_HIDDEN int uffd_rmap_reserve(struct uffd_rmap *m, size_t n);
/*
 * The lookups are not const: they may (re)build the map's lookup index, with mmap, never malloc,
 * never failing. So they need the same exclusion as the changes (for a context, u->lock).
 */
UFFD_HIDDEN const struct uffd_node *uffd_rmap_find(struct uffd_rmap *m, uintptr_t addr);
/* The first piece whose end is above @addr, or NULL. */
UFFD_HIDDEN const struct uffd_node *uffd_rmap_next(struct uffd_rmap *m, uintptr_t addr);
/* Each of these changes nothing and returns -ENOMEM when nodes cannot be had. */
UFFD_HIDDEN int uffd_rmap_insert(struct uffd_rmap *m, uintptr_t start, uintptr_t end, void *data,
				 size_t offset, uint64_t modes);
UFFD_HIDDEN int uffd_rmap_cut(struct uffd_rmap *m, uintptr_t start, uintptr_t end);
UFFD_HIDDEN int uffd_rmap_move(struct uffd_rmap *m, uintptr_t from, uintptr_t to, size_t len);
UFFD_HIDDEN int uffd_rmap_clone(struct uffd_rmap *dst, const struct uffd_rmap *src);
UFFD_HIDDEN bool uffd_rmap_overlaps(struct uffd_rmap *m, uintptr_t start, uintptr_t end);
UFFD_HIDDEN void uffd_rmap_fill(const struct uffd_node *n, struct uffd_range *out);

/* ---- the dispatch path: batch.c, read.c, prep.c, complete.c, dispatch.c ---- */
enum uffd_qstate { UFFD_Q_RAW, UFFD_Q_READY, UFFD_Q_DROP };
struct uffd_qitem {
	struct uffd_event ev;
	uint64_t seq;  /* the context's count of messages before this one: kernel order */
	uint8_t state; /* enum uffd_qstate */
	uint8_t tries; /* FORK: on_fork has run, only the adoption is left */
};

/*
 * One read()'s worth of messages and what prep made of them. A dispatching thread owns the
 * batch it reads into until it has delivered its faults; several threads dispatch one context
 * with a batch each. Notifications (everything but faults) are also copied to the context's
 * notification queue, in kernel order, for whichever thread delivers notifications.
 */
struct uffd_batch {
	struct uffd_batch *next; /* on the context's free or pending list */
	struct uffd_batch *all;	 /* every batch the context mmap'd, for uffd_close() */
	unsigned nmsg;		 /* messages read into msgs */
	unsigned nprep;		 /* items [0, nprep) are prepped; [nprep, nmsg) raw */
	unsigned pos;		 /* the next item to deliver */
	unsigned poll_first;	 /* read_wait()'s heuristic: waits that polled first, in a row */
	unsigned read_credit;	 /* read_wait()'s heuristic: recent reads that found messages */
	bool embedded;		 /* part of the context's own allocation */
	bool interleaved;	 /* a fault follows a notification in it (see uffd_deliver_batch) */
	size_t alloc_len;
	/* The fast path's fault, handed to the callback; fpf.range doubles as a one-entry cache
	 * of the piece the last fault hit, valid while u->map_gen == rc_gen. */
	struct uffd_pagefault fpf;
	uint64_t rc_gen;
	struct uffd_msg *msgs;	  /* `batch` messages */
	struct uffd_qitem *items; /* `batch` items */
};

struct uffd_callbacks {
	uffd_pagefault_fn pagefault;
	void *pagefault_arg;
	uffd_span_fn unmap;
	void *unmap_arg;
	uffd_span_fn remove;
	void *remove_arg;
	uffd_remap_fn remap;
	void *remap_arg;
	uffd_fork_fn fork;
	void *fork_arg;
	uffd_exit_fn exit;
	void *exit_arg;
};

struct uffd_stats_atomic {
	_Atomic uint64_t reads, messages, faults, faults_woken, eagain_retries, forks, remaps,
		removes, unmaps, unknown;
};

struct uffd_monitor;

/* A REMAP moved pieces that mremap(MREMAP_DONTUNMAP) may have left registered too (prep.c). */
struct uffd_ghost {
	uintptr_t from, to;
	size_t len;
};
#define UFFD_GHOSTS 8

/* Allocated with mmap in one piece (context, its first batch, the notification queue), so that
 * a fork child's context can be made in prep without malloc. */
struct uffd {
	int fd;
	uint64_t features;
	unsigned flags;
	unsigned batch;
	unsigned spin_us;
	pid_t pid;	     /* the process behind the fd, 0 if unknown */
	uintptr_t page_mask; /* page size - 1, for the resolving calls' alignment checks */
	size_t alloc_len;

	/*
	 * u->lock guards the map, the read() of a context that can receive layout events (so
	 * that reads and prep follow the kernel's order), and everything below marked "lock".
	 */
	pthread_mutex_t lock;
	struct uffd_rmap map;

	struct uffd_callbacks cb;
	struct uffd_stats_atomic st;

	/* Batches: one spare taken without the lock, the rest on a free list (lock). */
	_Atomic(struct uffd_batch *) spare;
	struct uffd_batch *bfree;		   /* lock */
	struct uffd_batch *pending, *pending_tail; /* lock: faults left to deliver, FIFO */
	struct uffd_batch *stalled;		   /* lock: prep stopped on it (-ENOMEM) */
	struct uffd_batch *ball;		   /* lock: the mmap'd ones, by ->all */
	unsigned nbatches;			   /* lock: batches made, spare included */
	/* Pending batches + a stalled one + queued notifications: a look without the lock. */
	_Atomic unsigned work;
	uint64_t seq; /* lock: messages prepped so far */

	/* The notification queue (lock): a ring of ncap items from nhead, ncount long. */
	struct uffd_qitem *nq;
	unsigned ncap, nhead, ncount;
	size_t nq_len;	/* mmap'd length when grown, 0 while it is the embedded one */
	bool notifying; /* a thread is delivering notifications */
	struct uffd_ghost ghost[UFFD_GHOSTS]; /* lock */
	unsigned nghost;		      /* lock */

	_Atomic uint64_t map_gen;  /* bumped, under lock, by every change of map */
	_Atomic int exited;	   /* the process is gone */
	_Atomic int exit_reported; /* 1: on_exit is running, 2: it has returned */
	_Atomic unsigned active;   /* threads dispatching (may be in a callback) */
	_Atomic unsigned deferred; /* faults deferred and not yet finished */
	_Atomic unsigned refs;	   /* the owner's reference + one per deferred fault */
	_Atomic unsigned users;	   /* uffd_fault_finish() calls using the fd right now */
	_Atomic int closed;	   /* uffd_close() has run: the fd is gone */

	/* Monitor membership (the monitor's lock). */
	struct uffd_monitor *_Atomic mon; /* read without the monitor's lock (fork, exit) */
	struct uffd *mon_prev, *mon_next;
	int pidfd;	   /* from uffd_monitor_watch_pid(), or -1 */
	_Atomic bool dead; /* the monitor will close it once on_exit has run */
	struct uffd *dead_next;
	uint32_t mon_slot;	   /* its slot in the monitor's table (monitor.c) */
	_Atomic int mon_live;	   /* a member the monitor's threads may dispatch */
	_Atomic unsigned mon_refs; /* monitor threads holding it: not closed or removed meanwhile */
	/* pool: no free batch; the fd is out of the reader's epoll set. Set and cleared under the
	 * monitor's lock, read without it by the workers (pool.c: starve()). */
	_Atomic bool mon_starved;

	/* serve.c: the registrations served from sources (pushed, never unlinked, freed with the
	 * context) and their asynchronous fetches in flight. */
	struct uffd_served *_Atomic served;
	_Atomic unsigned served_inflight;
};

/*
 * The threads inside a dispatch, each with the context it serves: a callback that dispatches
 * its own context or runs its own monitor would wait for itself (-EDEADLK).
 */
struct uffd_frame {
	struct uffd *u;
	struct uffd_monitor *m;
	struct uffd_frame *up;
};
UFFD_HIDDEN extern _Thread_local struct uffd_frame *uffd_frames
	__attribute__((tls_model("initial-exec")));
UFFD_HIDDEN bool uffd_frames_hold(const struct uffd *u, const struct uffd_monitor *m);

/* batch.c: batches and the notification queue; none calls malloc. */
UFFD_HIDDEN struct uffd_batch *uffd_batch_get(struct uffd *u);
UFFD_HIDDEN struct uffd_batch *uffd_batch_get_locked(struct uffd *u, bool may_map);
UFFD_HIDDEN void uffd_batch_put(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN void uffd_batch_put_locked(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN void uffd_batch_init(struct uffd_batch *b, void *mem, unsigned batch);
UFFD_HIDDEN size_t uffd_batch_size(unsigned batch);
UFFD_HIDDEN int uffd_batch_reserve(struct uffd *u, unsigned n);
UFFD_HIDDEN void uffd_batches_free(struct uffd *u);
UFFD_HIDDEN void uffd_pending_push_locked(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN unsigned uffd_batch_next_fault(const struct uffd_batch *b);
UFFD_HIDDEN bool uffd_notes_done_locked(const struct uffd *u, uint64_t seq);
UFFD_HIDDEN bool uffd_batch_ready_locked(const struct uffd *u, const struct uffd_batch *b);
UFFD_HIDDEN struct uffd_batch *uffd_pending_pop(struct uffd *u);
UFFD_HIDDEN int uffd_nq_reserve_locked(struct uffd *u);
UFFD_HIDDEN int uffd_nq_push_locked(struct uffd *u, const struct uffd_qitem *it);

/* read.c: waiting and reading. */
UFFD_HIDDEN bool uffd_read_locks(const struct uffd *u);
UFFD_HIDDEN int uffd_read_wait(struct uffd *u, struct uffd_batch *b, int timeout_ms);
UFFD_HIDDEN int uffd_read_now(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN int uffd_prep_read(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN int uffd_resume_stalled(struct uffd *u);

/* prep.c: called with u->lock held. */
UFFD_HIDDEN int uffd_prep_locked(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN void uffd_wake_page(struct uffd *u, uintptr_t addr);
UFFD_HIDDEN void uffd_wake_raw(struct uffd *u, const struct uffd_msg *m);
UFFD_HIDDEN void uffd_fill_range_locked(struct uffd *u, struct uffd_pagefault *pf);
UFFD_HIDDEN const struct uffd_node *uffd_ghost_revive(struct uffd *u, uintptr_t a);

/*
 * Call @u's fault callback. The callback may hand its fault to another thread, which may finish it
 * (uffd_fault_finish()) before the callback has even returned: so the fault counts as deferred,
 * and holds its reference, from before the call, and gives both back if the callback did not
 * defer it. Counted only after the return, such an early finish found no deferred fault (-EINVAL:
 * the fault was never woken, its thread blocked for good), or took another fault's count, and put
 * a reference not yet taken (the owner's: the context was freed under the dispatching thread).
 * Giving the reference back never frees: the dispatching thread's caller holds one.
 */
static inline int uffd_call_fault(struct uffd *u, const struct uffd_pagefault *pf)
{
	int r;

	atomic_fetch_add(&u->refs, 1);
	atomic_fetch_add(&u->deferred, 1);
	r = u->cb.pagefault(u, pf, u->cb.pagefault_arg);
	if (uffd_likely(r != UFFD_FAULT_DEFERRED)) {
		atomic_fetch_sub(&u->deferred, 1);
		atomic_fetch_sub(&u->refs, 1);
	}
	return r;
}

/* complete.c */
UFFD_HIDDEN int uffd_finish_fault(struct uffd *u, struct uffd_pagefault *pf, int r, int *handled);
UFFD_HIDDEN int uffd_deliver_batch(struct uffd *u, struct uffd_batch *b, int *handled);
UFFD_HIDDEN int uffd_deliver_notes(struct uffd *u, int *handled);
UFFD_HIDDEN int uffd_read_more(struct uffd *u);
/* dispatch.c */
UFFD_HIDDEN void uffd_batch_done(struct uffd *u, struct uffd_batch *b);
UFFD_HIDDEN int uffd_serve_work(struct uffd *u, int *handled);
UFFD_HIDDEN int uffd_deliver_prepped(struct uffd *u, struct uffd_batch *b, int *handled);
UFFD_HIDDEN bool uffd_enter(struct uffd *u);
UFFD_HIDDEN void uffd_leave(struct uffd *u);
UFFD_HIDDEN void uffd_exit_try(struct uffd *u);
UFFD_HIDDEN void uffd_ctx_put(struct uffd *u);

/* context.c */
UFFD_HIDDEN int uffd_ctx_new(int fd, uint64_t features, const struct uffd_config *cfg,
			     struct uffd **out);
UFFD_HIDDEN void uffd_ctx_free(struct uffd *u);
UFFD_HIDDEN int uffd_cfg_check(const struct uffd_config *cfg);
/* Marks the context exited; on_exit runs once no callback of it runs and no fault is deferred. */
UFFD_HIDDEN void uffd_ctx_report_exit(struct uffd *u);
/* Whether the context holds read messages not yet delivered (pending, stalled, queued). */
UFFD_HIDDEN bool uffd_ctx_has_work(struct uffd *u);

/* serve.c: frees what uffd_serve() hung on the context (when its memory goes). */
UFFD_HIDDEN void uffd_serve_free_all(struct uffd *u);
/* serve.c, from prep with u->lock held: a REMOVE of [start, end) was just read; served
 * registrations mark its pages discarded before any fetch can install them (serve.c). */
UFFD_HIDDEN void uffd_serve_removed_locked(struct uffd *u, uintptr_t start, uintptr_t end);

/* open.c */
UFFD_HIDDEN int uffd_probe_cached(uint64_t *features, uint64_t *ioctls);

/* resolve.c: one resolving ioctl with partial-progress continuation; sets uffd_last_done(). */
UFFD_HIDDEN int uffd_wake_range(struct uffd *u, uintptr_t addr, size_t len);

/* monitor.c: a fork child made during dispatch by a monitored parent. */
UFFD_HIDDEN int uffd_monitor_adopt_child(struct uffd_monitor *m, struct uffd *child);
UFFD_HIDDEN void uffd_monitor_forget(struct uffd_monitor *m, struct uffd *u);
/* A context of @m has work for the monitor (on_exit ran, a batch came free): wake its loop. */
UFFD_HIDDEN void uffd_monitor_kick(struct uffd_monitor *m);

static inline void uffd_stat_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/*
 * The page-fault part of uffd_event_decode(), also used by the dispatcher's fast path; @pf's
 * range is left alone. Flag bits this library does not know are kept: a newer kernel may add
 * some, and the dispatcher decides by the bits it knows. The address is kept as given: it is
 * page-masked unless EXACT_ADDRESS was granted, which decode cannot know. ptid is a u32 in the
 * message but a pid_t here: a value that is no pid (above INT_MAX) is -EPROTO. The fields are
 * read with memcpy: the message need not be aligned.
 */
static inline int uffd_decode_pagefault(const void *msg, struct uffd_pagefault *pf)
{
	const unsigned char *b = msg;
	uint64_t flags, address;
	uint32_t ptid;

	memcpy(&flags, b + 8, sizeof(flags));
	memcpy(&address, b + 16, sizeof(address));
	memcpy(&ptid, b + 24, sizeof(ptid));
	if ((uint64_t)(uintptr_t)address != address || ptid > (uint32_t)INT_MAX)
		return -EPROTO;
	pf->address = (void *)(uintptr_t)address;
	pf->flags = flags;
	pf->tid = (pid_t)ptid;
	return 0;
}

/* [addr, addr + len) is page-aligned, not empty and does not wrap (`a + len > a` covers both). */
static inline bool uffd_span_ok(const struct uffd *u, uintptr_t addr, size_t len)
{
	return !((addr | len) & u->page_mask) && addr + len > addr;
}

#endif /* UFFD_INTERNAL_H */
