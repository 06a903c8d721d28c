/* SPDX-License-Identifier: MIT */
/* The monitor against the real kernel: adoption over a socket, fork children, exits, stop, probe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define EVENTS                                                                           \
	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | \
	 UFFD_FEATURE_EVENT_REMOVE)
/* The contract reports an exit within one second; allow for a noisy two-CPU VM. */
#define EXIT_SLACK_S 1.5

static size_t PS;

static void setup(void)
{
	PS = tu_page();
}

/* A context of this process with one registered range that nobody touches. */
static struct uffd *open_idle(char **mem, size_t pages)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	*mem = tu_map_anon(pages * PS);
	ck_assert_int_eq(uffd_register(u, *mem, pages * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	return u;
}

/* ---- passing a userfaultfd over a unix socket ---- */

struct info {
	int err; /* the child's setup error, 0 if the fd follows */
	char *r; /* its registered range */
	size_t npages;
	char *p; /* the extra registered page at the monitor's probe address, or NULL */
};

static void sock_pair(int sv[2])
{
	struct timeval tv = { 15, 0 };

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* A child that never answers must fail the test, not hang it. */
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
}

/* Receive the child's userfaultfd and adopt it. */
static struct uffd *adopt_from(int sock, struct info *in)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct uffd *u = NULL;
	int fd;

	ck_assert_int_eq(tu_recv_fd(sock, &fd, in, sizeof(*in)), 0);
	ck_assert_int_eq(in->err, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u) & EVENTS, EVENTS);
	return u;
}

/* ---- what the callbacks saw ---- */

#define MAXREC 32

struct xrec {
	struct uffd *u;
	double t;
	uint64_t faults, forks;
	int count; /* uffd_monitor_count() when on_exit ran */
};

struct frec {
	struct uffd *u;
	void *addr;
};

struct obs {
	struct uffd_monitor *m;
	atomic_int nexit;
	struct xrec exits[MAXREC];
	atomic_int nfault;
	struct frec faults[MAXREC];
	unsigned char *buf;
};

static struct obs O;

static void obs_exit(struct uffd *u, void *arg)
{
	struct obs *o = arg;
	int i = atomic_fetch_add(&o->nexit, 1);
	struct uffd_stats st = { 0 };

	uffd_get_stats(u, &st);
	if (i < MAXREC)
		o->exits[i] =
			(struct xrec){ u, tu_now(), st.faults, st.forks, uffd_monitor_count(o->m) };
}

#define PATTERN 0x5c

static int obs_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct obs *o = arg;
	int i = atomic_fetch_add(&o->nfault, 1);

	if (i < MAXREC)
		o->faults[i] = (struct frec){ u, pf->address };
	memset(o->buf, PATTERN, PS);
	return uffd_copy(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), o->buf, PS, 0);
}

static void obs_reset(struct uffd_monitor *m)
{
	memset(&O, 0, sizeof(O));
	O.m = m;
	O.buf = tu_map_anon(PS);
}

/* ---- a thread running the monitor ---- */

struct mon_thread {
	struct uffd_monitor *m;
	int timeout_ms;
	pthread_t t;
	int ret;
	double t_end;
	atomic_bool done;
};

static void *mon_main(void *p)
{
	struct mon_thread *mt = p;

	mt->ret = uffd_monitor_run(mt->m, mt->timeout_ms);
	mt->t_end = tu_now();
	atomic_store(&mt->done, true);
	return NULL;
}

static void mon_start(struct mon_thread *mt, struct uffd_monitor *m, int timeout_ms)
{
	memset(mt, 0, sizeof(*mt));
	mt->m = m;
	mt->timeout_ms = timeout_ms;
	ck_assert_int_eq(pthread_create(&mt->t, NULL, mon_main, mt), 0);
}

/* Join within @timeout_ms; if run() has not returned by then, stop it and report false. */
static bool mon_join(struct mon_thread *mt, int timeout_ms)
{
	double end = tu_now() + timeout_ms / 1000.0;
	bool ok = true;

	while (!atomic_load(&mt->done)) {
		if (tu_now() > end) {
			ok = false;
			uffd_monitor_stop(mt->m);
			break;
		}
		tu_sleep_ms(2);
	}
	pthread_join(mt->t, NULL);
	return ok;
}

/* ---- basics ---- */

START_TEST(bad_arguments)
{
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem;
	double t0;

	ck_assert_int_eq(uffd_monitor_new(NULL), -EINVAL);
	uffd_monitor_free(NULL);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_fd(NULL), -EINVAL);
	ck_assert_int_ge(uffd_monitor_fd(m), 0);
	ck_assert_int_eq(uffd_monitor_count(NULL), -EINVAL);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	ck_assert_int_eq(uffd_monitor_stop(NULL), -EINVAL);
	ck_assert_int_eq(uffd_monitor_probe(NULL), -EINVAL);
	ck_assert_int_eq(uffd_monitor_run(NULL, 0), -EINVAL);
	ck_assert_int_eq(uffd_monitor_run(m, -2), -EINVAL);

	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(NULL, u), -EINVAL);
	ck_assert_int_eq(uffd_monitor_add(m, NULL), -EINVAL);
	ck_assert_int_eq(uffd_monitor_watch_pid(NULL, u, getpid()), -EINVAL);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, NULL, getpid()), -EINVAL);
	/* Not in this monitor yet. */
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), -EINVAL);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, 0), -EINVAL);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, -5), -EINVAL);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	uffd_monitor_free(m);

	/* An empty monitor has nothing to serve: run returns at once, even with no timeout. */
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	t0 = tu_now();
	ck_assert_int_eq(uffd_monitor_run(m, -1), 0);
	ck_assert_int_eq(uffd_monitor_run(m, 0), 0);
	ck_assert_double_lt(tu_now() - t0, 0.5);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

START_TEST(add_busy_and_free_closes)
{
	int fds0 = tu_count_fds();
	struct uffd_monitor *m, *m2;
	struct uffd *u;
	char *mem;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_new(&m2), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), -EBUSY);
	ck_assert_int_eq(uffd_monitor_add(m2, u), -EBUSY);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	ck_assert_int_eq(uffd_monitor_count(m2), 0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m2, u, getpid()), -EINVAL);
	/* Freeing the other monitor leaves u alone. */
	uffd_monitor_free(m2);
	ck_assert_int_ne(fcntl(uffd_fd(u), F_GETFD), -1);
	/* The monitor owns u: freeing it closes the context and its fd. */
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(watch_pid_args)
{
	int fds0 = tu_count_fds(), fds1;
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem;
	int st;
	pid_t pid;

	/*
	 * A process that has been reaped no longer exists. Forked before the context is made: a
	 * fork with EVENT_FORK ranges registered blocks until someone reads the event.
	 */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	fds1 = tu_count_fds();
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, pid), -ESRCH);
	ck_assert_int_eq(tu_count_fds(), fds1);

	/* Watching twice replaces the pidfd: one fd, not two. */
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), 0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), 0);
	ck_assert_int_eq(tu_count_fds(), fds1 + 1);
	/* We are alive: a short run reports no exit. */
	ck_assert_int_eq(uffd_monitor_run(m, 100), 0);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(run_timeout_on_time)
{
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem;
	double t0, dt;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);

	t0 = tu_now();
	ck_assert_int_eq(uffd_monitor_run(m, 0), 0);
	ck_assert_double_lt(tu_now() - t0, 0.2);

	/* Several probe rounds pass in 700 ms; none of them counts as an event. */
	t0 = tu_now();
	ck_assert_int_eq(uffd_monitor_run(m, 700), 0);
	dt = tu_now() - t0;
	ck_assert_double_ge(dt, 0.69);
	ck_assert_double_lt(dt, 1.5);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

/* ---- stop ---- */

struct stopper {
	struct uffd_monitor *m;
	pthread_t target;
	int sig; /* 0: call uffd_monitor_stop; else send this signal to target */
	unsigned delay_ms;
};

static void *stopper_main(void *p)
{
	struct stopper *s = p;

	tu_sleep_ms(s->delay_ms);
	if (s->sig)
		pthread_kill(s->target, s->sig);
	else
		uffd_monitor_stop(s->m);
	return NULL;
}

static struct uffd_monitor *g_mon;
static atomic_int g_sigs;

static void stop_handler(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_sigs, 1);
	uffd_monitor_stop(g_mon);
}

/* Run with no timeout; something else stops it after about 300 ms. */
static void run_until_stopped(struct uffd_monitor *m, double *elapsed)
{
	double t0 = tu_now();

	ck_assert_int_eq(uffd_monitor_run(m, -1), 0);
	*elapsed = tu_now() - t0;
}

START_TEST(stop_from_thread)
{
	struct uffd_monitor *m;
	struct stopper s = { 0 };
	struct uffd *u;
	pthread_t t;
	char *mem;
	double dt;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	s.m = m;
	s.delay_ms = 300;
	ck_assert_int_eq(pthread_create(&t, NULL, stopper_main, &s), 0);
	run_until_stopped(m, &dt);
	pthread_join(t, NULL);
	ck_assert_double_ge(dt, 0.25);
	ck_assert_double_lt(dt, 5);
	ck_assert_int_eq(uffd_monitor_count(m), 1);

	/* A stop with no run in progress makes the next run return at once. */
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	run_until_stopped(m, &dt);
	ck_assert_double_lt(dt, 0.5);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

START_TEST(stop_from_sigusr1_handler)
{
	struct sigaction sa = { .sa_handler = stop_handler }, old;
	struct uffd_monitor *m;
	struct stopper s = { 0 };
	struct uffd *u;
	pthread_t t;
	char *mem;
	double dt;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	g_mon = m;
	atomic_store(&g_sigs, 0);
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
	s.target = pthread_self();
	s.sig = SIGUSR1;
	s.delay_ms = 300;
	ck_assert_int_eq(pthread_create(&t, NULL, stopper_main, &s), 0);
	run_until_stopped(m, &dt);
	pthread_join(t, NULL);
	sigaction(SIGUSR1, &old, NULL);
	ck_assert_int_eq(atomic_load(&g_sigs), 1);
	ck_assert_double_ge(dt, 0.25);
	ck_assert_double_lt(dt, 5);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

START_TEST(stop_from_sigalrm_handler)
{
	struct sigaction sa = { .sa_handler = stop_handler, .sa_flags = SA_RESTART }, old;
	struct itimerval it = { .it_value = { 0, 300000 } };
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem;
	double dt;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	g_mon = m;
	atomic_store(&g_sigs, 0);
	sigemptyset(&sa.sa_mask);
	/* SA_RESTART too: epoll_wait is never restarted, and the eventfd must do the work. */
	ck_assert_int_eq(sigaction(SIGALRM, &sa, &old), 0);
	ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
	run_until_stopped(m, &dt);
	sigaction(SIGALRM, &old, NULL);
	ck_assert_int_eq(atomic_load(&g_sigs), 1);
	ck_assert_double_ge(dt, 0.25);
	ck_assert_double_lt(dt, 5);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

/* ---- embedding: poll the monitor's fd in a custom loop ---- */

struct toucher {
	char *p;
	size_t pages;
	pthread_t t;
	atomic_bool done;
	int sum;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	size_t i;

	for (i = 0; i < t->pages; i++)
		t->sum += t->p[i * PS];
	atomic_store(&t->done, true);
	return NULL;
}

START_TEST(fd_pollable_in_custom_loop)
{
	struct uffd_monitor *m;
	struct toucher th = { 0 };
	struct uffd_stats st;
	struct uffd *u;
	char *mem;
	int handled = 0, err = 0, wakeups = 0;
	double end;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = open_idle(&mem, 8);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	th.p = mem;
	th.pages = 8;
	ck_assert_int_eq(pthread_create(&th.t, NULL, toucher_main, &th), 0);
	end = tu_now() + 10;
	while (!atomic_load(&th.done) && tu_now() < end) {
		struct pollfd pf = { .fd = uffd_monitor_fd(m), .events = POLLIN };
		int n = poll(&pf, 1, 100), r;

		if (n <= 0)
			continue;
		wakeups++;
		r = uffd_monitor_run(m, 0);
		if (r < 0 && !err)
			err = r;
		else if (r > 0)
			handled += r;
	}
	ck_assert(atomic_load(&th.done));
	pthread_join(th.t, NULL);
	ck_assert_int_eq(err, 0);
	ck_assert_int_eq(th.sum, 0); /* default handler: zero pages */
	ck_assert_int_ge(wakeups, 1);
	ck_assert_int_eq(handled, 8);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults, 8);
	uffd_monitor_free(m);
	munmap(mem, 8 * PS);
}
END_TEST

/* An embedding loop must not spin: run(m, 0) clears what made the fd readable, even when empty. */
static int poll_loop_wakeups(struct uffd_monitor *m, double seconds)
{
	double end = tu_now() + seconds;
	int wakeups = 0;

	while (tu_now() < end) {
		struct pollfd pf = { .fd = uffd_monitor_fd(m), .events = POLLIN };

		if (poll(&pf, 1, 50) > 0) {
			wakeups++;
			ck_assert_int_ge(uffd_monitor_run(m, 0), 0);
		}
	}
	return wakeups;
}

START_TEST(fd_quiet_in_custom_loop)
{
	struct uffd_monitor *m;
	struct uffd *u;
	char *mem;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	/* Empty: at most the probe timer's ticks (4 a second) wake the loop. */
	ck_assert_int_le(poll_loop_wakeups(m, 1.0), 8);
	/* With an idle context: the same. */
	u = open_idle(&mem, 2);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_le(poll_loop_wakeups(m, 1.0), 8);
	uffd_monitor_free(m);
	munmap(mem, 2 * PS);
}
END_TEST

/* ---- a process tree served by a monitor in another process ---- */

#define NG 3
#define TREE_PAGES 12
#define C_PAGES 4
static const int G_FIRST[NG] = { 4, 5, 7 }, G_PAGES[NG] = { 1, 2, 3 };

struct tree_shared {
	pid_t g_pid[NG];
	int g_status[NG];
	double g_reaped[NG]; /* CLOCK_MONOTONIC, comparable across processes */
};

/*
 * The monitored process: it opens the userfaultfd itself, registers its own memory and passes
 * the fd to the test process. Then it touches pages (zero pages from the default handler) and
 * forks grandchildren that touch pages of their own, which must be served although nobody told
 * the monitor about them. Exit code 0 if every page read as expected.
 */
static __attribute__((noreturn)) void tree_child(int sock, struct tree_shared *sh)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct info in = { 0 };
	struct uffd *u = NULL;
	int rel[2], rdy[2], g, i, bad = 0;
	char c;

	in.npages = TREE_PAGES;
	in.r = mmap(NULL, TREE_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		    0);
	in.err = in.r == MAP_FAILED ? -ENOMEM : uffd_open(&u, &cfg);
	if (!in.err)
		in.err =
			uffd_register(u, in.r, TREE_PAGES * PS, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (tu_send_fd(sock, in.err ? -1 : uffd_fd(u), &in, sizeof(in)) || in.err)
		_exit(2);
	if (read(sock, &c, 1) != 1)
		_exit(3);
	for (i = 0; i < C_PAGES; i++)
		if (in.r[i * PS] != 0 || in.r[i * PS + PS - 1] != 0)
			bad = 4;
	if (pipe(rel) || pipe(rdy))
		_exit(5);
	for (g = 0; g < NG; g++) {
		pid_t pid = fork();

		if (pid == 0) {
			int ok = 1;

			close(rel[1]);
			close(rdy[0]);
			for (i = G_FIRST[g]; i < G_FIRST[g] + G_PAGES[g]; i++)
				ok &= in.r[i * PS] == 0;
			if (write(rdy[1], ok ? "y" : "n", 1) != 1)
				_exit(2);
			/* Stay alive until every sibling is forked: no context is closed early. */
			if (read(rel[0], &c, 1) != 0)
				_exit(3);
			_exit(ok ? 0 : 1);
		}
		if (pid < 0)
			_exit(6);
		sh->g_pid[g] = pid;
	}
	close(rel[0]);
	close(rdy[1]);
	for (g = 0; g < NG; g++)
		if (read(rdy[0], &c, 1) != 1 || c != 'y')
			bad = 7;
	close(rel[1]);
	for (g = 0; g < NG; g++) {
		int st;

		if (waitpid(sh->g_pid[g], &st, 0) != sh->g_pid[g])
			_exit(8);
		sh->g_reaped[g] = tu_now();
		sh->g_status[g] = st;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad = 9;
	}
	_exit(bad);
}

START_TEST(adopted_process_tree_and_exits)
{
	int fds0 = tu_count_fds();
	struct tree_shared *sh;
	struct uffd_monitor *m;
	struct mon_thread mt;
	struct info in;
	struct uffd *u;
	bool seen_c = false, seen_g[NG] = { false };
	int sv[2], st, i, maxcount = 0;
	double t_c;
	pid_t cpid;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	sock_pair(sv);
	cpid = fork();
	ck_assert_int_ge(cpid, 0);
	if (cpid == 0) {
		close(sv[0]);
		tree_child(sv[1], sh);
	}
	close(sv[1]);

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	obs_reset(m);
	u = adopt_from(sv[0], &in);
	ck_assert_int_eq(uffd_on_exit(u, obs_exit, &O), 0); /* inherited by fork children */
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, cpid), 0);
	ck_assert_int_eq(uffd_monitor_count(m), 1);

	mon_start(&mt, m, -1);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	st = tu_wait_child(cpid, 20000);
	t_c = tu_now();
	/* run() returns by itself once the child and every grandchild are gone. */
	ck_assert(mon_join(&mt, 10000));
	ck_assert_int_ne(st, -1);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	ck_assert_int_ge(mt.ret, C_PAGES + 1 + 2 + 3 + NG);
	ck_assert_double_lt(mt.t_end - t_c, EXIT_SLACK_S);
	ck_assert_int_eq(uffd_monitor_count(m), 0);

	/* on_exit exactly once per context: the child (pidfd) and each grandchild (probe). */
	ck_assert_int_eq(atomic_load(&O.nexit), 1 + NG);
	for (i = 0; i < 1 + NG; i++) {
		const struct xrec *x = &O.exits[i];
		int j;

		for (j = 0; j < i; j++)
			ck_assert_ptr_ne(O.exits[j].u, x->u);
		if (x->count > maxcount)
			maxcount = x->count;
		if (x->u == u) {
			ck_assert(!seen_c);
			seen_c = true;
			ck_assert_uint_eq(x->faults, C_PAGES);
			ck_assert_uint_eq(x->forks, NG);
			ck_assert_double_lt(x->t - t_c, EXIT_SLACK_S);
			continue;
		}
		/* A grandchild's context: which one, by the pages it faulted. */
		ck_assert_uint_ge(x->faults, 1);
		ck_assert_uint_le(x->faults, NG);
		j = (int)x->faults - 1;
		ck_assert_int_eq(G_PAGES[j], (int)x->faults);
		ck_assert(!seen_g[j]);
		seen_g[j] = true;
		ck_assert_uint_eq(x->forks, 0);
		ck_assert_double_lt(x->t - sh->g_reaped[j], EXIT_SLACK_S);
	}
	ck_assert(seen_c);
	/* The grandchildren's contexts joined the monitor: all four were there at the first exit. */
	ck_assert_int_eq(maxcount, 1 + NG);

	ck_assert_int_eq(uffd_monitor_run(m, 0), 0);
	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
	munmap(sh, sizeof(*sh));
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---- the liveness probe leaves a live process alone ---- */

struct span {
	uintptr_t s, e;
};

/* The anonymous PROT_NONE mappings of this process. */
/* The anonymous PROT_NONE mappings of this process; -1 if there are more than @max. */
static int none_maps(struct span *out, int max)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, ino;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu", &s, &e, perms, &ino) != 4)
			continue;
		if (strcmp(perms, "---p") != 0 || ino != 0)
			continue;
		if (n == max) {
			n = -1;
			break;
		}
		out[n++] = (struct span){ s, e };
	}
	fclose(f);
	return n;
}

/*
 * The parts of [s, e) that no span of @sp covers: their total length, and the start of the last
 * one. Interval arithmetic, not pages: sanitizers reserve terabytes of PROT_NONE.
 */
static uintptr_t uncovered(const struct span *sp, int n, uintptr_t s, uintptr_t e, uintptr_t *at)
{
	uintptr_t total = 0;

	while (s < e) {
		uintptr_t next = e;
		bool in = false;
		int i;

		for (i = 0; i < n; i++) {
			if (s >= sp[i].s && s < sp[i].e) {
				s = sp[i].e;
				in = true;
				break;
			}
			if (sp[i].s > s && sp[i].s < next)
				next = sp[i].s;
		}
		if (in)
			continue;
		total += next - s;
		*at = s;
		s = next;
	}
	return total;
}

/*
 * Make a monitor and find the PROT_NONE page it made for its probes (the header says the probe
 * copies from one): the one new PROT_NONE page in our maps. NULL if it cannot be told apart.
 */
static struct uffd_monitor *monitor_with_probe_page(void **probe)
{
	static struct span before[4096], after[4096];
	struct uffd_monitor *m;
	int nb = none_maps(before, 4096), na, i;
	uintptr_t total = 0, at = 0;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	na = none_maps(after, 4096);
	*probe = NULL;
	if (nb < 0 || na < 0)
		return m;
	for (i = 0; i < na; i++)
		total += uncovered(before, nb, after[i].s, after[i].e, &at);
	if (total == PS)
		*probe = (void *)at;
	return m;
}

/* Whether the VMA holding @addr in process @pid has VmFlags @flag (e.g. "um"). */
static bool vma_has_flag(pid_t pid, const void *addr, const char *flag)
{
	char path[64], line[512];
	bool in = false, has = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			char *tok, *save = NULL;

			for (tok = strtok_r(line + 8, " \n", &save); tok;
			     tok = strtok_r(NULL, " \n", &save))
				has |= strcmp(tok, flag) == 0;
			break;
		}
	}
	fclose(f);
	return has;
}

#define PROBE_PAGES 4

/*
 * The monitored process for the probe test. It maps a registered page at the very address the
 * monitor probes with (the worst case: a missing, registered page there), and reports through
 * the socket: how many registered pages are resident after the probe rounds, then what a touch
 * read.
 */
static __attribute__((noreturn)) void probe_child(int sock, void *probe)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct info in = { 0 };
	struct uffd *u = NULL;
	unsigned char vec[PROBE_PAGES];
	int resident = 0, i;
	char c, *target;

	in.npages = PROBE_PAGES;
	in.r = mmap(NULL, PROBE_PAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		    0);
	if (probe)
		in.p = mmap(probe, PS, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	in.err = in.r == MAP_FAILED || in.p == MAP_FAILED || in.p != probe ? -ENOMEM :
									     uffd_open(&u, &cfg);
	if (!in.err)
		in.err = uffd_register(u, in.r, PROBE_PAGES * PS, UFFDIO_REGISTER_MODE_MISSING,
				       NULL);
	if (!in.err && in.p)
		in.err = uffd_register(u, in.p, PS, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (tu_send_fd(sock, in.err ? -1 : uffd_fd(u), &in, sizeof(in)) || in.err)
		_exit(2);

	if (read(sock, &c, 1) != 1)
		_exit(3);
	if (mincore(in.r, PROBE_PAGES * PS, vec))
		_exit(4);
	for (i = 0; i < PROBE_PAGES; i++)
		resident += vec[i] & 1;
	if (in.p) {
		if (mincore(in.p, PS, vec))
			_exit(5);
		resident += vec[0] & 1;
	}
	if (write(sock, &resident, sizeof(resident)) != sizeof(resident))
		_exit(6);

	if (read(sock, &c, 1) != 1)
		_exit(7);
	target = in.p ? in.p : in.r;
	c = *(volatile char *)target; /* faults to the monitor */
	if (write(sock, &c, 1) != 1)
		_exit(8);
	if (read(sock, &c, 1) != 1)
		_exit(9);
	_exit(0);
}

/* Serve with run(m, 50) until @sock is readable, for at most @timeout_ms. */
static bool serve_until_readable(struct uffd_monitor *m, int sock, int timeout_ms)
{
	double end = tu_now() + timeout_ms / 1000.0;

	while (tu_now() < end) {
		struct pollfd pf = { .fd = sock, .events = POLLIN };

		if (poll(&pf, 1, 0) > 0)
			return true;
		ck_assert_int_ge(uffd_monitor_run(m, 50), 0);
	}
	return false;
}

START_TEST(probe_never_changes_live_process)
{
	int fds0 = tu_count_fds();
	struct uffd_monitor *m;
	struct info in;
	struct uffd *u;
	void *probe;
	int sv[2], st, resident = -1;
	char c;
	double t0, t_reap;
	pid_t cpid;

	m = monitor_with_probe_page(&probe);
	if (!probe)
		fprintf(stderr,
			"note: the monitor's probe page was not found; probing the range only\n");
	obs_reset(m);
	sock_pair(sv);
	cpid = fork();
	ck_assert_int_ge(cpid, 0);
	if (cpid == 0) {
		close(sv[0]);
		probe_child(sv[1], probe);
	}
	close(sv[1]);

	u = adopt_from(sv[0], &in);
	ck_assert_ptr_eq(in.p, probe);
	uffd_on_pagefault(u, obs_fault, &O);
	uffd_on_exit(u, obs_exit, &O);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0); /* pid unknown: probed every round */

	/* Well over a second of probe rounds against a live process. */
	t0 = tu_now();
	ck_assert_int_eq(uffd_monitor_run(m, 1600), 0);
	ck_assert_double_ge(tu_now() - t0, 1.55);
	ck_assert_int_eq(uffd_monitor_count(m), 1);
	ck_assert_int_eq(atomic_load(&O.nexit), 0);
	ck_assert_int_eq(atomic_load(&O.nfault), 0);

	/* Registrations intact, and nothing was placed in any registered page. */
	ck_assert(vma_has_flag(cpid, in.r, "um"));
	ck_assert(vma_has_flag(cpid, in.r + (PROBE_PAGES - 1) * PS, "um"));
	if (in.p)
		ck_assert(vma_has_flag(cpid, in.p, "um"));
	ck_assert_int_eq(write(sv[0], "1", 1), 1);
	ck_assert_int_eq(read(sv[0], &resident, sizeof(resident)), sizeof(resident));
	ck_assert_int_eq(resident, 0);

	/* The page is still missing: a touch faults to the monitor and gets the callback's data. */
	ck_assert_int_eq(write(sv[0], "2", 1), 1);
	ck_assert(serve_until_readable(m, sv[0], 10000));
	ck_assert_int_eq(read(sv[0], &c, 1), 1);
	ck_assert_int_eq((unsigned char)c, PATTERN);
	ck_assert_int_eq(atomic_load(&O.nfault), 1);
	ck_assert_ptr_eq(O.faults[0].u, u);
	ck_assert_ptr_eq(O.faults[0].addr, in.p ? in.p : in.r);

	/* And the probe does see the exit, within a second of it. */
	ck_assert_int_eq(write(sv[0], "x", 1), 1);
	st = tu_wait_child(cpid, 10000);
	t_reap = tu_now();
	ck_assert_int_ne(st, -1);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	while (uffd_monitor_count(m) > 0 && tu_now() - t_reap < 5)
		ck_assert_int_ge(uffd_monitor_run(m, 100), 0);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	ck_assert_ptr_eq(O.exits[0].u, u);
	ck_assert_double_lt(O.exits[0].t - t_reap, EXIT_SLACK_S);
	ck_assert_int_eq(uffd_monitor_count(m), 0);

	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/*
 * The start of a monitored child: two pages registered in a context of its own, whose fd (or the
 * error) goes to the test; then the go byte. Exits 2 when the setup fails, 3 without the byte.
 * Returns the pages.
 */
static char *child_two_pages(int sock)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct info in = { 0 };
	struct uffd *u = NULL;
	char c;

	in.npages = 2;
	in.r = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	in.err = in.r == MAP_FAILED ? -ENOMEM : uffd_open(&u, &cfg);
	if (!in.err)
		in.err = uffd_register(u, in.r, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (tu_send_fd(sock, in.err ? -1 : uffd_fd(u), &in, sizeof(in)) || in.err)
		_exit(2);
	if (read(sock, &c, 1) != 1)
		_exit(3);
	return in.r;
}

/* Fork a monitored process running @child_fn on one end of a new socket pair @sv. */
static pid_t start_child(void (*child_fn)(int sock), int sv[2])
{
	pid_t pid;

	sock_pair(sv);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		child_fn(sv[1]);
	}
	close(sv[1]);
	return pid;
}

/* A new monitor @m, observed (O), and the context the child sends on @sock, its exit observed. */
static struct uffd *adopt_observed(int sock, struct uffd_monitor **m, struct info *in)
{
	struct uffd *u;

	ck_assert_int_eq(uffd_monitor_new(m), 0);
	obs_reset(*m);
	u = adopt_from(sock, in);
	uffd_on_exit(u, obs_exit, &O);
	return u;
}

/*
 * A watched process that exec()s: its old address space, and with it everything the context
 * could ever report, is gone although the pid lives on and its pidfd stays quiet.
 */
static __attribute__((noreturn)) void exec_child(int sock)
{
	child_two_pages(sock);
	/* The socket is close-on-exec: the test sees EOF when the exec has happened. */
	execl("/bin/sleep", "sleep", "4", (char *)NULL);
	_exit(4);
}

START_TEST(watched_process_exec_reported)
{
	struct uffd_monitor *m;
	struct info in;
	struct uffd *u;
	int sv[2], st;
	double t_exec, end;
	char c;
	pid_t cpid;

	ck_assert_int_eq(access("/bin/sleep", X_OK), 0);
	cpid = start_child(exec_child, sv);
	u = adopt_observed(sv[0], &m, &in);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, cpid), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	ck_assert_int_eq(read(sv[0], &c, 1), 0);
	t_exec = tu_now();
	end = t_exec + 3;
	while (uffd_monitor_count(m) > 0 && tu_now() < end)
		ck_assert_int_ge(uffd_monitor_run(m, 100), 0);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	ck_assert_double_lt(O.exits[0].t - t_exec, EXIT_SLACK_S);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	kill(cpid, SIGKILL);
	st = tu_wait_child(cpid, 5000);
	ck_assert_int_ne(st, -1);
	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
}
END_TEST

/* A monitored process that registers two pages, hands over its fd, and exits on the go byte. */
static __attribute__((noreturn)) void exit_child(int sock)
{
	child_two_pages(sock);
	_exit(0);
}

/*
 * uffd_monitor_probe(): an unwatched context whose process is gone is reported at once, not at
 * the next 250 ms tick. The probe re-arms the timer, so the only expiry within 250 ms of it is
 * its own: a report within 200 ms is the probe's doing (it takes a few ms; the bound leaves room
 * for a loaded machine). Asked for before the run, it is
 * served by that run.
 */
START_TEST(probe_now_reports_exit)
{
	struct uffd_monitor *m;
	struct info in;
	struct uffd *u;
	int sv[2], st;
	double t_probe, end;
	pid_t cpid;

	cpid = start_child(exit_child, sv);
	u = adopt_observed(sv[0], &m, &in);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	st = tu_wait_child(cpid, 5000);
	ck_assert_int_eq(st, 0);
	t_probe = tu_now();
	ck_assert_int_eq(uffd_monitor_probe(m), 0);
	end = t_probe + 3;
	while (uffd_monitor_count(m) > 0 && tu_now() < end)
		ck_assert_int_ge(uffd_monitor_run(m, 20), 0);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	ck_assert_double_lt(O.exits[0].t - t_probe, 0.2);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
}
END_TEST

/* The monitored process for the -ESRCH test: registers two pages, touches one on the go byte. */
static __attribute__((noreturn)) void touch_child(int sock)
{
	char c = *(volatile char *)child_two_pages(sock);

	_exit(c == PATTERN ? 0 : 4);
}

struct killer {
	pid_t pid;
	int status;
	int copy_ret;
	atomic_int calls;
};

/* A fault callback whose process dies before it answers: the copy meets -ESRCH. */
static int kill_then_copy(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct killer *k = arg;

	atomic_fetch_add(&k->calls, 1);
	kill(k->pid, SIGKILL);
	k->status = tu_wait_child(k->pid, 10000);
	memset(O.buf, PATTERN, PS);
	k->copy_ret =
		uffd_copy(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), O.buf, PS, 0);
	return k->copy_ret;
}

START_TEST(exit_seen_by_esrch_reported_once)
{
	int fds0 = tu_count_fds();
	struct uffd_monitor *m;
	struct killer k = { 0 };
	struct info in;
	struct uffd *u;
	int sv[2];
	double end;

	k.pid = start_child(touch_child, sv);
	u = adopt_observed(sv[0], &m, &in);
	uffd_on_pagefault(u, kill_then_copy, &k);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	/* The pidfd reports the same exit too: on_exit must still run once. */
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, k.pid), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	end = tu_now() + 10;
	while (uffd_monitor_count(m) > 0 && tu_now() < end)
		ck_assert_int_ge(uffd_monitor_run(m, 100), 0);
	ck_assert_int_eq(atomic_load(&k.calls), 1);
	ck_assert_int_eq(k.copy_ret, -ESRCH);
	ck_assert(WIFSIGNALED(k.status));
	ck_assert_int_eq(WTERMSIG(k.status), SIGKILL);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	ck_assert_ptr_eq(O.exits[0].u, u);
	/* A little more running finds nothing more to report. */
	ck_assert_int_eq(uffd_monitor_run(m, 300), 0);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/*
 * A pool closes a context whose process exited, with its fd, while it runs: on_exit's kick
 * reached the reader while a worker still held the context, and a second exit check turned
 * "on_exit has returned" back into "on_exit runs", so the context was never closed.
 */
START_TEST(pool_closes_exited_context)
{
	struct uffd_monitor *m;
	struct info in;
	struct uffd *u;
	int sv[2], st, fds_served;
	double end;
	pid_t cpid;

	cpid = start_child(exit_child, sv);
	u = adopt_observed(sv[0], &m, &in);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	fds_served = tu_count_fds();
	ck_assert_int_eq(uffd_monitor_start(m, 2), 0);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	st = tu_wait_child(cpid, 5000);
	ck_assert_int_eq(st, 0);
	ck_assert_int_eq(uffd_monitor_probe(m), 0);
	end = tu_now() + 2;
	while ((uffd_monitor_count(m) > 0 || tu_count_fds() >= fds_served) && tu_now() < end)
		tu_sleep_ms(5);
	ck_assert_int_eq(atomic_load(&O.nexit), 1);
	ck_assert_int_eq(uffd_monitor_count(m), 0);
	ck_assert_int_lt(tu_count_fds(), fds_served); /* the context's fd is closed */
	ck_assert_int_eq(uffd_monitor_stop(m), 0);
	ck_assert_int_ge(uffd_monitor_join(m), 0);
	uffd_monitor_free(m);
	close(sv[0]);
	munmap(O.buf, PS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("monitor");
	TCase *ba = tu_tcase("basics", 30, setup, NULL), *sp = tu_tcase("stop", 30, setup, NULL),
	      *ex = tu_tcase("processes", 60, setup, NULL);
	struct uffd_config cfg = { .required = EVENTS };

	tu_require_uffd(&cfg, "FORK/UNMAP/REMAP/REMOVE events");

	tcase_add_test(ba, bad_arguments);
	tcase_add_test(ba, add_busy_and_free_closes);
	tcase_add_test(ba, watch_pid_args);
	tcase_add_test(ba, run_timeout_on_time);
	tcase_add_test(ba, fd_pollable_in_custom_loop);
	tcase_add_test(ba, fd_quiet_in_custom_loop);
	tcase_add_test(sp, stop_from_thread);
	tcase_add_test(sp, stop_from_sigusr1_handler);
	tcase_add_test(sp, stop_from_sigalrm_handler);
	tcase_add_test(ex, adopted_process_tree_and_exits);
	tcase_add_test(ex, probe_never_changes_live_process);
	tcase_add_test(ex, watched_process_exec_reported);
	tcase_add_test(ex, probe_now_reports_exit);
	tcase_add_test(ex, exit_seen_by_esrch_reported_once);
	tcase_add_test(ex, pool_closes_exited_context);
	suite_add_tcase(s, ba);
	suite_add_tcase(s, sp);
	suite_add_tcase(s, ex);
	return tu_run(s);
}
