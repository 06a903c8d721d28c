/* SPDX-License-Identifier: MIT */
/* Fork under a monitor in the same process: inherited callbacks and map, deadlocks, EMFILE. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define FORK_EVENTS                                                                      \
	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | \
	 UFFD_FEATURE_EVENT_REMOVE)
#define MAXREC 64

static size_t PS;

/*
 * A sleep for the window in which another thread is blocked inside fork(): sanitizers intercept
 * nanosleep() and record a stack under a lock their fork() interceptor holds across the syscall.
 */
static void raw_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, &ts) == -1 && errno == EINTR)
		;
}

static struct uffd *open_fork_ctx(void)
{
	struct uffd_config cfg = { .required = FORK_EVENTS, .optional = UFFD_FEATURE_THREAD_ID };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	return u;
}

/* ---- what the callbacks saw ---- */

struct frec {
	struct uffd *u;
	void *addr;
	struct uffd_range range;
	pid_t tid;
};

struct urec {
	struct uffd *u;
	void *start, *end;
};

struct fk {
	struct uffd *parent;
	_Atomic(struct uffd *) child;
	atomic_int forks;
	atomic_int fork_bad_parent;
	atomic_int nfaults;
	struct frec faults[MAXREC];
	atomic_int nunmaps;
	struct urec unmaps[MAXREC];
	atomic_int exits;
	unsigned char *buf; /* one page, used by the dispatcher thread only */
};

static struct fk F;

static int TAG_A = 1, TAG_B = 2;

/* The byte a page is filled with: a function of what was registered there and where. */
static unsigned char pat(const void *data, size_t off)
{
	return (unsigned char)(*(const int *)data * 40 + off / PS + 1);
}

static int fk_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct fk *f = arg;
	uintptr_t page = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);
	int i = atomic_fetch_add(&f->nfaults, 1);
	size_t off;

	if (i < MAXREC)
		f->faults[i] = (struct frec){ u, pf->address, pf->range, pf->tid };
	if (!pf->range.data)
		return uffd_zeropage(u, (void *)page, PS, 0);
	off = pf->range.offset + (page - (uintptr_t)pf->range.start);
	memset(f->buf, pat(pf->range.data, off), PS);
	return uffd_copy(u, (void *)page, f->buf, PS, 0);
}

static int fk_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct fk *f = arg;
	int i = atomic_fetch_add(&f->nunmaps, 1);

	if (i < MAXREC)
		f->unmaps[i] = (struct urec){ u, s->start, s->end };
	return 0;
}

static int fk_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	struct fk *f = arg;

	if (parent != f->parent)
		atomic_fetch_add(&f->fork_bad_parent, 1);
	atomic_store(&f->child, child);
	atomic_fetch_add(&f->forks, 1);
	return 0;
}

static void fk_exit(struct uffd *u, void *arg)
{
	struct fk *f = arg;

	(void)u;
	atomic_fetch_add(&f->exits, 1);
}

/* ---- a dispatcher thread: the parent, and the fork child once it has arrived ---- */

struct disp {
	struct uffd *u;
	bool serve_child;
	pthread_t t;
	atomic_bool stop;
	atomic_int err;
};

static void *disp_main(void *p)
{
	struct disp *d = p;

	while (!atomic_load(&d->stop)) {
		struct uffd *c;
		int r = uffd_dispatch(d->u, 10);

		if (r < 0 && r != -EINTR && !atomic_load(&d->err))
			atomic_store(&d->err, r);
		c = atomic_load(&F.child);
		if (d->serve_child && c) {
			r = uffd_dispatch(c, 10);
			/* The child process may have gone: its context then reports -ESRCH. */
			if (r < 0 && r != -EINTR && r != -ESRCH && !atomic_load(&d->err))
				atomic_store(&d->err, r);
		}
	}
	return NULL;
}

static void disp_start(struct disp *d, struct uffd *u, bool serve_child)
{
	memset(d, 0, sizeof(*d));
	d->u = u;
	d->serve_child = serve_child;
	ck_assert_int_eq(pthread_create(&d->t, NULL, disp_main, d), 0);
}

static void disp_stop(struct disp *d)
{
	atomic_store(&d->stop, true);
	pthread_join(d->t, NULL);
	ck_assert_int_eq(atomic_load(&d->err), 0);
}

static void setup(void)
{
	PS = tu_page();
	memset(&F, 0, sizeof(F));
	F.buf = tu_map_anon(PS);
}

static void teardown(void)
{
	munmap(F.buf, PS);
}

static bool wait_atomic_ge(atomic_int *v, int want, int timeout_ms)
{
	double end = tu_now() + timeout_ms / 1000.0;

	while (atomic_load(v) < want) {
		if (tu_now() > end)
			return false;
		tu_sleep_ms(1);
	}
	return true;
}

/* Compare two range maps piece by piece. */
static void assert_same_map(struct uffd *a, struct uffd *b)
{
	struct uffd_range ra, rb;
	const void *at = NULL;
	int n = 0;

	ck_assert_int_eq(uffd_range_count(a), uffd_range_count(b));
	while (uffd_range_next(a, at, &ra) == 0) {
		ck_assert_int_eq(uffd_range_next(b, at, &rb), 0);
		ck_assert_ptr_eq(ra.start, rb.start);
		ck_assert_ptr_eq(ra.end, rb.end);
		ck_assert_ptr_eq(ra.data, rb.data);
		ck_assert_uint_eq(ra.offset, rb.offset);
		at = ra.end;
		n++;
	}
	ck_assert_int_eq(uffd_range_next(b, at, &rb), -ENOENT);
	ck_assert_int_eq(n, uffd_range_count(a));
}

/*
 * The forked child: waits for the go byte, reads pages of A and B (served through the inherited
 * callback on its own context), then unmaps part of B. Only async-signal-safe calls: the parent
 * is multi-threaded. Exit code 0, or which check failed.
 */
static __attribute__((noreturn)) void child_touch(int go_fd, char *a, char *b)
{
	char c;
	size_t i;

	if (read(go_fd, &c, 1) != 1)
		_exit(90);
	for (i = 0; i < 4; i++)
		if ((unsigned char)a[i * PS] != pat(&TAG_A, i * PS) ||
		    (unsigned char)a[i * PS + PS - 1] != pat(&TAG_A, i * PS))
			_exit(10 + (int)i);
	for (i = 2; i < 8; i++)
		if ((unsigned char)b[i * PS + 7] != pat(&TAG_B, i * PS))
			_exit(20 + (int)i);
	if (munmap(b + 4 * PS, 2 * PS))
		_exit(30);
	_exit(0);
}

START_TEST(fork_child_inherits_callbacks_and_map)
{
	int fds0 = tu_count_fds();
	struct uffd *u = open_fork_ctx();
	char *a = tu_map_anon(4 * PS), *b = tu_map_anon(8 * PS);
	struct uffd_range rg;
	struct uffd_stats st;
	struct uffd *c;
	struct disp d;
	int go[2], st_child, i, nchild = 0;
	pid_t pid;

	F.parent = u;
	ck_assert_int_eq(uffd_register(u, a, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, &TAG_A), 0);
	ck_assert_int_eq(uffd_register(u, b, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, &TAG_B), 0);
	uffd_on_pagefault(u, fk_fault, &F);
	uffd_on_unmap(u, fk_unmap, &F);
	uffd_on_fork(u, fk_fork, &F);
	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);

	disp_start(&d, u, true);
	/* A piece with a non-zero offset, so the copied map shows offsets survive. */
	ck_assert_int_eq(munmap(b, 2 * PS), 0);
	/* munmap returns once the event is read; on_unmap runs after prep has cut the map. */
	ck_assert(wait_atomic_ge(&F.nunmaps, 1, 5000));
	ck_assert_int_eq(uffd_range_find(u, b + 3 * PS, &rg), 0);
	ck_assert_uint_eq(rg.offset, 2 * PS);

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(go[1]);
		child_touch(go[0], a, b);
	}
	close(go[0]);

	/* The child context arrives through on_fork with a copy of the parent's map. */
	ck_assert(wait_atomic_ge(&F.forks, 1, 5000));
	c = atomic_load(&F.child);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_ne(c, u);
	ck_assert_int_eq(atomic_load(&F.fork_bad_parent), 0);
	ck_assert_uint_eq(uffd_features(c), uffd_features(u));
	ck_assert_int_ge(uffd_fd(c), 0);
	ck_assert_int_ne(uffd_fd(c), uffd_fd(u));
	assert_same_map(u, c);
	ck_assert_int_eq(uffd_range_find(c, a + PS, &rg), 0);
	ck_assert_ptr_eq(rg.start, a);
	ck_assert_ptr_eq(rg.end, a + 4 * PS);
	ck_assert_ptr_eq(rg.data, &TAG_A);
	ck_assert_uint_eq(rg.offset, 0);
	ck_assert_int_eq(uffd_range_find(c, b + 5 * PS, &rg), 0);
	ck_assert_ptr_eq(rg.start, b + 2 * PS);
	ck_assert_ptr_eq(rg.end, b + 8 * PS);
	ck_assert_ptr_eq(rg.data, &TAG_B);
	ck_assert_uint_eq(rg.offset, 2 * PS);
	ck_assert_int_eq(uffd_range_find(c, b + PS, &rg), -ENOENT);

	/* Let the child fault and unmap; its own unmap must come back on its own context. */
	ck_assert_int_eq(write(go[1], "g", 1), 1);
	st_child = tu_wait_child(pid, 10000);
	ck_assert_int_ne(st_child, -1);
	ck_assert(WIFEXITED(st_child));
	ck_assert_int_eq(WEXITSTATUS(st_child), 0);
	ck_assert(wait_atomic_ge(&F.nunmaps, 2, 5000));

	/* The parent is still served on its own context. */
	ck_assert_int_eq((unsigned char)a[PS], pat(&TAG_A, PS));
	disp_stop(&d);

	ck_assert_int_eq(atomic_load(&F.nunmaps), 2);
	ck_assert_ptr_eq(F.unmaps[0].u, u);
	ck_assert_ptr_eq(F.unmaps[0].start, b);
	ck_assert_ptr_eq(F.unmaps[1].u, c);
	ck_assert_ptr_eq(F.unmaps[1].start, b + 4 * PS);
	ck_assert_ptr_eq(F.unmaps[1].end, b + 6 * PS);
	ck_assert_int_eq(atomic_load(&F.nfaults), 11);
	for (i = 0; i < atomic_load(&F.nfaults); i++) {
		const struct frec *f = &F.faults[i];

		ck_assert_ptr_nonnull(f->range.data);
		if (f->u == u) {
			ck_assert_ptr_eq(f->addr, a + PS);
			continue;
		}
		ck_assert_ptr_eq(f->u, c);
		nchild++;
		if (uffd_features(c) & UFFD_FEATURE_THREAD_ID)
			ck_assert_int_eq(f->tid, pid);
	}
	ck_assert_int_eq(nchild, 10);

	/* The child's unmap cut its own map only. */
	ck_assert_int_eq(uffd_range_find(c, b + 4 * PS, &rg), -ENOENT);
	ck_assert_int_eq(uffd_range_find(c, b + 6 * PS, &rg), 0);
	ck_assert_ptr_eq(rg.start, b + 6 * PS);
	ck_assert_uint_eq(rg.offset, 6 * PS);
	ck_assert_int_eq(uffd_range_find(u, b + 4 * PS, &rg), 0);
	ck_assert_uint_eq(rg.offset, 2 * PS);

	ck_assert_int_eq(uffd_get_stats(c, &st), 0);
	ck_assert_uint_eq(st.faults, 10);
	ck_assert_uint_eq(st.unmaps, 1);
	ck_assert_uint_eq(st.forks, 0);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 1);
	ck_assert_uint_eq(st.unmaps, 1);
	ck_assert_uint_eq(st.faults, 1);

	uffd_close(c);
	uffd_close(u);
	close(go[1]);
	munmap(a, 4 * PS);
	munmap(b + 2 * PS, 6 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(fork_without_on_fork_runs_unmonitored)
{
	int fds0 = tu_count_fds(), fds1;
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_stats st;
	struct disp d;
	int status;
	pid_t pid;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, &TAG_A), 0);
	uffd_on_exit(u, fk_exit, &F);
	fds1 = tu_count_fds();
	disp_start(&d, u, false);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		size_t i;

		/* No monitor: the child context was closed, so this is plain memory. */
		for (i = 0; i < 4; i++) {
			if (p[i * PS] != 0)
				_exit(10 + (int)i);
			p[i * PS] = 7;
			if (p[i * PS] != 7)
				_exit(20 + (int)i);
		}
		_exit(0);
	}
	status = tu_wait_child(pid, 10000);
	ck_assert_int_ne(status, -1);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The parent's registration is untouched and still served (default: zero page). */
	ck_assert_int_eq(p[2 * PS], 0);
	disp_stop(&d);

	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 1);
	ck_assert_uint_eq(st.faults, 1);
	ck_assert_int_eq(uffd_range_count(u), 1);
	/* The child's fd was installed here at read() time, then closed: nothing left over. */
	ck_assert_int_eq(tu_count_fds(), fds1);
	ck_assert_int_eq(atomic_load(&F.exits), 0);
	uffd_close(u);
	munmap(p, 4 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---- on_fork that closes the child itself ---- */

static _Atomic int closer_calls;

/* Keeps nothing, but says 0: the library must not touch the child after this returns. */
static int close_child_keep(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)parent;
	(void)arg;
	uffd_close(child);
	atomic_fetch_add(&closer_calls, 1);
	return 0;
}

/*
 * on_fork closes the child and returns 0 (a program that hands the child to a thread of its
 * own may do the same, a moment later). The library looked at the child after on_fork returned
 * (whether on_fork had put it in a monitor): that read freed memory, a SIGSEGV here since a
 * context's memory is unmapped when it goes. Served by a dispatch loop (@in_monitor false) or
 * a monitor, which must not try to adopt the closed child either. The child process then runs
 * unmonitored.
 */
static void close_in_on_fork(bool in_monitor)
{
	int fds0 = tu_count_fds();
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(2 * PS);
	struct uffd_monitor *m = NULL;
	struct uffd_stats st;
	struct disp d;
	int status;
	pid_t pid;

	atomic_store(&closer_calls, 0);
	ck_assert_int_eq(uffd_register(u, p, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, &TAG_A), 0);
	ck_assert_int_eq(uffd_on_fork(u, close_child_keep, NULL), 0);
	if (in_monitor) {
		ck_assert_int_eq(uffd_monitor_new(&m), 0);
		ck_assert_int_eq(uffd_monitor_add(m, u), 0);
		ck_assert_int_eq(uffd_monitor_start(m, 1), 0);
	} else {
		disp_start(&d, u, false);
	}
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(p[0] == 0 && p[PS] == 0 ? 0 : 1); /* plain memory: zero pages */
	status = tu_wait_child(pid, 10000);
	ck_assert_int_ne(status, -1);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_int_eq(atomic_load(&closer_calls), 1);
	ck_assert_int_eq(p[0], 0); /* the parent is still served */
	if (in_monitor) {
		ck_assert_int_eq(uffd_monitor_stop(m), 0);
		ck_assert_int_ge(uffd_monitor_join(m), 0);
		ck_assert_int_eq(uffd_get_stats(u, &st), 0);
		uffd_monitor_free(m); /* closes u */
	} else {
		disp_stop(&d);
		ck_assert_int_eq(uffd_get_stats(u, &st), 0);
		uffd_close(u);
	}
	ck_assert_uint_eq(st.forks, 1);
	munmap(p, 2 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}

START_TEST(on_fork_closes_child_dispatch)
{
	close_in_on_fork(false);
}
END_TEST

START_TEST(on_fork_closes_child_monitor)
{
	close_in_on_fork(true);
}
END_TEST

/* ---- two threads forking at once while a thread of the same process serves them ---- */

#define ROUNDS 100

struct forkers {
	pthread_barrier_t bar;
	atomic_int done;
	atomic_int bad;
};

static void *forker_main(void *p)
{
	struct forkers *fs = p;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		pid_t pid;
		int st;

		pthread_barrier_wait(&fs->bar);
		pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0)
			atomic_fetch_add(&fs->bad, 1);
		else
			atomic_fetch_add(&fs->done, 1);
	}
	return NULL;
}

struct mon_thread {
	struct uffd_monitor *m;
	pthread_t t;
	int ret;
};

static void *mon_main(void *p)
{
	struct mon_thread *mt = p;

	mt->ret = uffd_monitor_run(mt->m, -1);
	return NULL;
}

static void run_forkers(void)
{
	struct forkers fs;
	pthread_t t[2];

	memset(&fs, 0, sizeof(fs));
	pthread_barrier_init(&fs.bar, NULL, 2);
	/* A deadlock leaves both forkers stuck: the watchdog's SIGALRM then kills the test. */
	alarm(90);
	ck_assert_int_eq(pthread_create(&t[0], NULL, forker_main, &fs), 0);
	ck_assert_int_eq(pthread_create(&t[1], NULL, forker_main, &fs), 0);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	alarm(0);
	pthread_barrier_destroy(&fs.bar);
	ck_assert_int_eq(atomic_load(&fs.bad), 0);
	ck_assert_int_eq(atomic_load(&fs.done), 2 * ROUNDS);
}

START_TEST(two_threads_fork_under_monitor)
{
	int fds0 = tu_count_fds();
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_monitor *m;
	struct mon_thread mt = { 0 };
	struct uffd_stats st;
	double end;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	uffd_on_exit(u, fk_exit, &F); /* inherited by every child context */
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	mt.m = m;
	ck_assert_int_eq(pthread_create(&mt.t, NULL, mon_main, &mt), 0);

	run_forkers();

	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	pthread_join(mt.t, NULL);
	ck_assert_int_ge(mt.ret, 2 * ROUNDS);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 2 * ROUNDS);

	/* Every child has exited: the probe buries each child context, on_exit once for each. */
	end = tu_now() + 10;
	while (uffd_monitor_count(m) > 1 && tu_now() < end)
		ck_assert_int_ge(uffd_monitor_run(m, 300), 0);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	ck_assert_int_eq(atomic_load(&F.exits), 2 * ROUNDS);
	uffd_monitor_free(m);
	munmap(p, 4 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(two_threads_fork_under_dispatch_loop)
{
	int fds0 = tu_count_fds();
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_stats st;
	struct disp d;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	disp_start(&d, u, false);
	run_forkers();
	disp_stop(&d);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 2 * ROUNDS);
	uffd_close(u);
	munmap(p, 4 * PS);
	/* Without on_fork every child context was closed as it came. */
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---- on_fork refusing a child inside a monitor ---- */

static int refuse_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	struct fk *f = arg;

	(void)parent;
	(void)child;
	atomic_fetch_add(&f->forks, 1);
	return -EPERM;
}

START_TEST(on_fork_refusal_in_monitor_leaves_child_unmonitored)
{
	int fds0 = tu_count_fds(), fds1;
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_monitor *m;
	struct mon_thread mt = { 0 };
	struct uffd_stats st;
	int status;
	pid_t pid;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	uffd_on_fork(u, refuse_fork, &F);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	fds1 = tu_count_fds();
	mt.m = m;
	ck_assert_int_eq(pthread_create(&mt.t, NULL, mon_main, &mt), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		size_t i;

		for (i = 0; i < 4; i++)
			if (p[i * PS] != 0)
				_exit(10 + (int)i);
		_exit(0);
	}
	status = tu_wait_child(pid, 10000);
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	pthread_join(mt.t, NULL);
	ck_assert_int_ne(status, -1);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_int_eq(mt.ret, 1);
	ck_assert_int_eq(atomic_load(&F.forks), 1);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 1);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_int_eq(tu_count_fds(), fds1);
	uffd_monitor_free(m);
	munmap(p, 4 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---- on_fork handing the child to another monitor ---- */

static struct uffd_monitor *g_other;
static atomic_int g_other_add = 1;

static int fork_to_other(struct uffd *parent, struct uffd *child, void *arg)
{
	struct fk *f = arg;

	(void)parent;
	atomic_store(&g_other_add, uffd_monitor_add(g_other, child));
	atomic_store(&f->child, child);
	atomic_fetch_add(&f->forks, 1);
	return 0;
}

START_TEST(on_fork_may_place_child_in_another_monitor)
{
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_monitor *m, *m2;
	struct mon_thread mt = { 0 };
	double end;
	int status = -1, i;
	pid_t pid;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, &TAG_A), 0);
	uffd_on_pagefault(u, fk_fault, &F);
	uffd_on_fork(u, fork_to_other, &F);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_new(&m2), 0);
	g_other = m2;
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	mt.m = m;
	ck_assert_int_eq(pthread_create(&mt.t, NULL, mon_main, &mt), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		size_t k;

		/* Served through the inherited callback, by the other monitor. */
		for (k = 0; k < 4; k++)
			if ((unsigned char)p[k * PS] != pat(&TAG_A, k * PS))
				_exit(10 + (int)k);
		_exit(0);
	}
	/* This thread serves the other monitor until the child is done. */
	end = tu_now() + 10;
	while (tu_now() < end) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (uffd_monitor_count(m2) == 0)
			tu_sleep_ms(2);
		else
			ck_assert_int_ge(uffd_monitor_run(m2, 20), 0);
	}
	if (status == -1)
		status = tu_wait_child(pid, 0);
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	pthread_join(mt.t, NULL);

	ck_assert_int_eq(atomic_load(&g_other_add), 0);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_int_eq(atomic_load(&F.forks), 1);
	ck_assert_int_eq(atomic_load(&F.nfaults), 4);
	for (i = 0; i < 4; i++)
		ck_assert_ptr_eq(F.faults[i].u, atomic_load(&F.child));
	/* The parent's monitor kept only the parent. */
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	uffd_monitor_free(m2);
	uffd_monitor_free(m);
	munmap(p, 4 * PS);
}
END_TEST

/* ---- EMFILE while the kernel installs a fork child's fd ---- */

struct one_fork {
	int go;		  /* eventfd-like pipe: the forker waits for a byte */
	atomic_int state; /* 0 waiting, 1 forking, 2 fork returned */
	int status;
	pid_t pid;
};

static void *one_fork_main(void *p)
{
	struct one_fork *o = p;
	char c;

	if (read(o->go, &c, 1) != 1)
		return NULL;
	atomic_store(&o->state, 1);
	o->pid = fork();
	if (o->pid == 0)
		_exit(0);
	atomic_store(&o->state, 2);
	if (o->pid > 0)
		o->status = tu_wait_child(o->pid, 10000);
	return NULL;
}

/*
 * One dispatch step while a fork's fd cannot be installed, or after: uffd_dispatch() on its own,
 * or uffd_monitor_run() on a monitor holding the context. Allocates nothing.
 */
static int emfile_step(struct uffd *u, struct uffd_monitor *m, int timeout_ms)
{
	return m ? uffd_monitor_run(m, timeout_ms) : uffd_dispatch(u, timeout_ms);
}

static void emfile_case(bool in_monitor)
{
	struct uffd *u = open_fork_ctx();
	char *p = tu_map_anon(4 * PS);
	struct uffd_monitor *m = NULL;
	struct rlimit old, low;
	struct uffd_stats st;
	struct one_fork o = { 0 };
	pthread_t t;
	int go[2], fill[1024], nfill = 0, i, r1, r2, r3 = 0, forks_mid;
	bool blocked_mid;
	ssize_t wr;
	struct uffd *c;
	double end;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	uffd_on_fork(u, fk_fork, &F);
	F.parent = u;
	if (in_monitor) {
		ck_assert_int_eq(uffd_monitor_new(&m), 0);
		ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	}
	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
	o.go = go[0];
	ck_assert_int_eq(pthread_create(&t, NULL, one_fork_main, &o), 0);

	/* Use up every fd below a lowered limit, so the next fd install fails with EMFILE. */
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)go[1] + 8;
	ck_assert_uint_lt(low.rlim_cur, 1000);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (;;) {
		int fd = dup(go[1]);

		if (fd < 0) {
			ck_assert_int_eq(errno, EMFILE);
			break;
		}
		ck_assert_int_lt(nfill, 1024);
		fill[nfill++] = fd;
	}

	/*
	 * From here until the forker is released, nothing may allocate: the forking thread holds
	 * glibc's malloc locks (so no ck_assert, which allocates, until then).
	 */
	wr = write(go[1], "f", 1);
	r1 = emfile_step(u, m, 5000);
	r2 = emfile_step(u, m, 200);
	raw_sleep_ms(100);
	blocked_mid = atomic_load(&o.state) == 1;
	forks_mid = uffd_get_stats(u, &st) == 0 ? (int)st.forks : -1;
	setrlimit(RLIMIT_NOFILE, &old);
	end = tu_now() + 10;
	while (atomic_load(&F.forks) == 0 && tu_now() < end && r3 >= 0)
		r3 = emfile_step(u, m, 100);
	while (atomic_load(&o.state) != 2 && tu_now() < end)
		raw_sleep_ms(1);
	if (atomic_load(&o.state) != 2) {
		/* Release a forker still stuck (closing the fd drops the event) before failing. */
		if (m)
			uffd_monitor_free(m);
		else
			uffd_close(u);
		u = NULL;
		m = NULL;
		while (atomic_load(&o.state) != 2)
			raw_sleep_ms(1);
	}
	pthread_join(t, NULL);

	ck_assert_int_eq(wr, 1);
	ck_assert_int_eq(r1, -EMFILE);
	ck_assert_int_eq(r2, -EMFILE);
	ck_assert(blocked_mid);
	ck_assert_int_eq(forks_mid, 0);
	ck_assert_ptr_nonnull(u);
	ck_assert_int_eq(r3, 1);
	ck_assert_int_gt(o.pid, 0);
	ck_assert(WIFEXITED(o.status));
	ck_assert_int_eq(atomic_load(&F.forks), 1);
	c = atomic_load(&F.child);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 1);
	ck_assert_uint_eq(st.messages, 1);

	for (i = 0; i < nfill; i++)
		close(fill[i]);
	if (m) {
		/* The child context joined the monitor (it may already be buried: its process exited). */
		ck_assert_int_ge(uffd_monitor_count(m), 1);
		ck_assert_int_le(uffd_monitor_count(m), 2);
		uffd_monitor_free(m);
	} else {
		ck_assert_int_eq(uffd_range_count(c), 1);
		uffd_close(c);
		uffd_close(u);
	}
	close(go[0]);
	close(go[1]);
	munmap(p, 4 * PS);
}

START_TEST(emfile_on_fork_fd_then_recovery)
{
	emfile_case(false);
}
END_TEST

START_TEST(emfile_in_monitor_then_recovery)
{
	emfile_case(true);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fork");
	TCase *tc = tu_tcase("fork", 30, setup, teardown),
	      *dl = tu_tcase("deadlock", 150, setup, teardown),
	      *em = tu_tcase("emfile", 30, setup, teardown);
	struct uffd_config cfg = { .required = FORK_EVENTS };

	tu_require_uffd(&cfg, "FORK/UNMAP/REMAP/REMOVE events");

	tcase_add_test(tc, fork_child_inherits_callbacks_and_map);
	tcase_add_test(tc, fork_without_on_fork_runs_unmonitored);
	tcase_add_test(tc, on_fork_refusal_in_monitor_leaves_child_unmonitored);
	tcase_add_test(tc, on_fork_may_place_child_in_another_monitor);
	tcase_add_test(tc, on_fork_closes_child_dispatch);
	tcase_add_test(tc, on_fork_closes_child_monitor);
	tcase_add_test(dl, two_threads_fork_under_monitor);
	tcase_add_test(dl, two_threads_fork_under_dispatch_loop);
	tcase_add_test(em, emfile_on_fork_fd_then_recovery);
	tcase_add_test(em, emfile_in_monitor_then_recovery);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, dl);
	suite_add_tcase(s, em);
	return tu_run(s);
}
