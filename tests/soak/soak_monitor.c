/* SPDX-License-Identifier: MIT */
/* The soak test: a lazy-load-style monitor serving a 4-thread target process (soak_target) that
 * maps, unmaps, moves, discards and forks at random, with every invariant checked. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "soak.h"
#include "../under_tsan.h"

#define WATCHDOG_S 15  /* a target thread that makes no progress this long is stuck */
#define POOL_THREADS 3 /* --mode pool: uffd_monitor_start()'s workers */
#define COMPLETERS 3   /* --mode deferred: threads that finish the deferred faults */

/*
 * How the monitor serves: one thread (uffd_monitor_run() in the main loop), a pool of library
 * threads (uffd_monitor_start()), or one thread whose fault callback defers every fault to
 * completion threads (uffd_fault_finish()), as a monitor with an asynchronous source does.
 */
static enum { MODE_SINGLE, MODE_POOL, MODE_DEFERRED } mode;
static const char *const mode_names[] = { "single", "pool", "deferred" };

static size_t PS;
static struct uffd *root;
static struct uffd_monitor *mon;
static struct soak_status *status;
static pid_t target = -1;
static bool trace; /* $LIBUFFD_SOAK_TRACE: every event and registration on stderr */

/*
 * What the monitor saw. In the pool and deferred modes the callbacks run on several threads at
 * once (fault callbacks concurrently with each other and with notifications of other contexts),
 * so this and the discarded set below are guarded by `mu`.
 */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct soak_seen {
	uint64_t served, served_children, zero_served, forks, remaps, removes, unmaps, exits;
	uint64_t registers, retries;
} seen;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "soak: FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (status && status->error[0])
		fprintf(stderr, "soak: the target said: %s\n", status->error);
	if (target > 0)
		kill(target, SIGKILL);
	exit(1);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * ---- pages the target discarded (MADV_DONTNEED) ----
 *
 * A lazy loader serves zeros for a page the process threw away, as the kernel would without a
 * monitor. The set is kept by address in the target, and changed by the callbacks, which run in
 * the kernel's order: REMOVE adds, REMAP moves, UNMAP and a new registration clear. (The range
 * map cannot answer "what was at this span when it was removed": by the time a REMOVE is
 * delivered, later events of the same batch may have changed the map.) Open addressing with
 * linear probing and tombstones; every use holds `mu`.
 */
#define DSET_CAP (1u << 16)
#define DSET_EMPTY 0
#define DSET_TOMB 1
static uint64_t dset[DSET_CAP]; /* page number << 1 | 1 ... stored as page address | 2 */
static unsigned dset_used, dset_tombs;

static unsigned dset_hash(uint64_t key)
{
	key *= 0x9e3779b97f4a7c15ull;
	return (unsigned)(key >> 48) & (DSET_CAP - 1);
}

static bool dset_has(uint64_t page)
{
	unsigned i;

	for (i = dset_hash(page);; i = (i + 1) & (DSET_CAP - 1)) {
		if (dset[i] == DSET_EMPTY)
			return false;
		if (dset[i] == (page | 2))
			return true;
	}
}

static void dset_rebuild(void);

static void dset_add(uint64_t page)
{
	unsigned i;

	if (dset_has(page))
		return;
	if ((dset_used + dset_tombs + 1) * 2 > DSET_CAP)
		dset_rebuild();
	for (i = dset_hash(page); dset[i] > DSET_TOMB; i = (i + 1) & (DSET_CAP - 1))
		;
	if (dset[i] == DSET_TOMB)
		dset_tombs--;
	dset[i] = page | 2;
	dset_used++;
}

static void dset_del(uint64_t page)
{
	unsigned i;

	for (i = dset_hash(page); dset[i] != DSET_EMPTY; i = (i + 1) & (DSET_CAP - 1)) {
		if (dset[i] == (page | 2)) {
			dset[i] = DSET_TOMB;
			dset_used--;
			dset_tombs++;
			return;
		}
	}
}

static void dset_rebuild(void)
{
	static uint64_t old[DSET_CAP];
	unsigned i;

	memcpy(old, dset, sizeof(dset));
	memset(dset, 0, sizeof(dset));
	dset_used = dset_tombs = 0;
	for (i = 0; i < DSET_CAP; i++)
		if (old[i] > DSET_TOMB) {
			if (dset_used * 2 + 2 > DSET_CAP)
				die("more discarded pages than the monitor can track");
			dset_add(old[i] & ~(uint64_t)2);
		}
}

static void dset_clear(uintptr_t start, uintptr_t end)
{
	uintptr_t a;

	for (a = start; a < end; a += PS)
		dset_del(a);
}

/* ---- callbacks ---- */

/* What a fault needs served, decided when it is delivered (in kernel order with the events). */
struct fault_job {
	struct uffd *u;
	struct uffd_pagefault pf;
	uintptr_t a;
	uint64_t gen, off;
	bool zero;
};

static struct fault_job fault_job(struct uffd *u, const struct uffd_pagefault *pf)
{
	struct fault_job j = { .u = u, .pf = *pf };

	j.a = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);
	j.gen = (uint64_t)(uintptr_t)pf->range.data;
	pthread_mutex_lock(&mu);
	j.zero = pf->range.start == NULL || dset_has(j.a);
	pthread_mutex_unlock(&mu);
	if (!j.zero)
		j.off = pf->range.offset + (j.a - (uintptr_t)pf->range.start);
	if (trace && j.zero)
		fprintf(stderr, "zero page %#lx (%s, %s)\n", (unsigned long)j.a,
			pf->range.start ? "discarded" : "not in the map",
			u == root ? "root" : "child");
	return j;
}

/*
 * Serve @j: 0 or the copy's error. A fault is counted served before the copy, and uncounted if
 * it fails: once the copy succeeds its thread runs on, and the target may report being done
 * before a thread that counted after the copy had counted it. A failed copy leaves the thread
 * blocked, so the target cannot be done before the count is taken back.
 */
static int serve_job(const struct fault_job *j)
{
	uint64_t page[65536 / 8] __attribute__((aligned(64)));
	bool is_root = j->u == root;
	size_t k;
	int r;

	if (j->zero) {
		memset(page, 0, PS);
	} else {
		for (k = 0; k < PS / 8; k++)
			page[k] = soak_word(j->gen, j->off + k * 8);
	}
	pthread_mutex_lock(&mu);
	if (is_root)
		seen.served++;
	else
		seen.served_children++;
	seen.zero_served += j->zero;
	pthread_mutex_unlock(&mu);
	r = uffd_copy(j->u, (void *)j->a, page, PS, 0);
	if (r != 0) {
		pthread_mutex_lock(&mu);
		if (is_root)
			seen.served--;
		else
			seen.served_children--;
		seen.zero_served -= j->zero;
		seen.retries += r == -EAGAIN;
		pthread_mutex_unlock(&mu);
	}
	return r;
}

/* ---- --mode deferred: the callback queues the fault, completion threads serve it ---- */

#define DQ_CAP 4096
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct fault_job q[DQ_CAP];
	unsigned head, count, busy; /* busy: taken and not yet finished */
	bool stop;
	pthread_t t[COMPLETERS];
	uint64_t deferred, max_queued;
} dq = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *completer(void *arg)
{
	(void)arg;
	for (;;) {
		struct fault_job j;
		int r, f;

		pthread_mutex_lock(&dq.mu);
		while (!dq.count && !dq.stop)
			pthread_cond_wait(&dq.cv, &dq.mu);
		if (!dq.count) {
			pthread_mutex_unlock(&dq.mu);
			return NULL;
		}
		j = dq.q[dq.head];
		dq.head = (dq.head + 1) % DQ_CAP;
		dq.count--;
		dq.busy++;
		pthread_mutex_unlock(&dq.mu);
		r = serve_job(&j);
		/* The context stays allocated until this call, even if its process is gone. */
		f = uffd_fault_finish(j.u, &j.pf, r);
		if (f != 0 && f != -ESRCH && f != r)
			die("uffd_fault_finish(%d): %s", r, uffd_strerror(f));
		pthread_mutex_lock(&dq.mu);
		dq.busy--;
		pthread_cond_broadcast(&dq.cv);
		pthread_mutex_unlock(&dq.mu);
	}
}

/* Wait until every deferred fault is finished (the counts are then final): false after @ms. */
static bool dq_idle(unsigned ms)
{
	struct timespec ts;
	bool idle;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&dq.mu);
	while ((dq.count || dq.busy) && pthread_cond_timedwait(&dq.cv, &dq.mu, &ts) == 0)
		;
	idle = !dq.count && !dq.busy;
	pthread_mutex_unlock(&dq.mu);
	return idle;
}

static int on_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct fault_job j = fault_job(u, pf);

	(void)arg;
	if (mode != MODE_DEFERRED)
		return serve_job(&j);
	pthread_mutex_lock(&dq.mu);
	if (dq.count == DQ_CAP) {
		pthread_mutex_unlock(&dq.mu);
		return serve_job(&j); /* full: serve it here */
	}
	dq.q[(dq.head + dq.count++) % DQ_CAP] = j;
	dq.deferred++;
	if (dq.count > dq.max_queued)
		dq.max_queued = dq.count;
	pthread_cond_signal(&dq.cv);
	pthread_mutex_unlock(&dq.mu);
	return UFFD_FAULT_DEFERRED;
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	uintptr_t a;

	(void)arg;
	if (u != root)
		die("a fork child's context got a REMOVE");
	if (trace)
		fprintf(stderr, "remove %p-%p\n", s->start, s->end);
	pthread_mutex_lock(&mu);
	for (a = (uintptr_t)s->start; a < (uintptr_t)s->end; a += PS)
		dset_add(a);
	seen.removes++;
	pthread_mutex_unlock(&mu);
	return 0;
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)arg;
	if (u != root)
		die("a fork child's context got an UNMAP");
	if (trace)
		fprintf(stderr, "unmap %p-%p\n", s->start, s->end);
	pthread_mutex_lock(&mu);
	dset_clear((uintptr_t)s->start, (uintptr_t)s->end);
	seen.unmaps++;
	pthread_mutex_unlock(&mu);
	return 0;
}

static int on_remap(struct uffd *u, const struct uffd_remap *r, void *arg)
{
	uintptr_t i;

	(void)arg;
	if (u != root)
		die("a fork child's context got a REMAP");
	if (trace)
		fprintf(stderr, "remap %p -> %p len %#zx\n", r->from, r->to, r->len);
	/* The destination was fresh memory; the old place is cut by the UNMAP that follows. */
	pthread_mutex_lock(&mu);
	dset_clear((uintptr_t)r->to, (uintptr_t)r->to + r->len);
	for (i = 0; i < r->len; i += PS)
		if (dset_has((uintptr_t)r->from + i))
			dset_add((uintptr_t)r->to + i);
	seen.remaps++;
	pthread_mutex_unlock(&mu);
	return 0;
}

static int on_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)child, (void)arg;
	if (parent != root)
		die("a fork child forked");
	pthread_mutex_lock(&mu);
	seen.forks++;
	pthread_mutex_unlock(&mu);
	return 0; /* keep it: the monitor serves it */
}

static void on_exit_cb(struct uffd *u, void *arg)
{
	(void)u, (void)arg;
	pthread_mutex_lock(&mu);
	seen.exits++;
	pthread_mutex_unlock(&mu);
}

/* ---- talking to the target ---- */

static int recv_fd(int sock, struct soak_msg *m)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { m, sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof(*m))
		return -1;
	c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

static void serve_rpc(int sock)
{
	struct soak_msg m, r = { .type = MSG_REPLY };

	if (recv(sock, &m, sizeof(m), MSG_DONTWAIT) != (ssize_t)sizeof(m))
		return;
	if (m.type != MSG_REGISTER)
		die("unexpected message %d", m.type);
	/*
	 * A new mapping: nothing of it is discarded, whatever was at that address before. The
	 * UNMAP that freed the address clears it anyway; the one thread that delivers
	 * notifications here has delivered that UNMAP by now. A pool may not have: the read released the target, which may have mapped
	 * and registered here again while a worker is still to deliver a REMAP read before the
	 * UNMAP, and that REMAP moves the old marks away from here. Clearing now would lose them;
	 * in kernel order the UNMAP clears this place after the REMAP, before any later fault.
	 */
	pthread_mutex_lock(&mu);
	if (mode != MODE_POOL)
		dset_clear((uintptr_t)m.addr, (uintptr_t)(m.addr + m.len));
	seen.registers++;
	pthread_mutex_unlock(&mu);
	r.rc = uffd_register(root, (void *)(uintptr_t)m.addr, m.len, UFFDIO_REGISTER_MODE_MISSING,
			     (void *)(uintptr_t)m.gen);
	if (trace)
		fprintf(stderr, "register %#llx-%#llx gen %llu: %d\n", (unsigned long long)m.addr,
			(unsigned long long)(m.addr + m.len), (unsigned long long)m.gen, r.rc);
	if (send(sock, &r, sizeof(r), 0) != (ssize_t)sizeof(r))
		die("reply: %s", strerror(errno));
}

/* ---- the monitor's own health ---- */

static int count_fds(void)
{
	char path[64];
	int fd, n = 0;

	for (fd = 0; fd < 4096; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n += access(path, F_OK) == 0;
	}
	return n;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* One round of the loop: monitor, registrations, and the watchdog. */
static void round_once(int *socks, int timeout_ms, uint64_t *last_beat, uint64_t *beat_at)
{
	struct pollfd p[1 + SOAK_THREADS];
	int i, r;

	/* With a pool the library's reader waits on the monitor's fd: only the sockets here. */
	p[0] = (struct pollfd){ .fd = mode == MODE_POOL ? -1 : uffd_monitor_fd(mon),
				.events = POLLIN };
	for (i = 0; i < SOAK_THREADS; i++)
		p[1 + i] = (struct pollfd){ .fd = socks[i], .events = POLLIN };
	if (poll(p, 1 + SOAK_THREADS, timeout_ms) < 0 && errno != EINTR)
		die("poll: %s", strerror(errno));
	r = mode == MODE_POOL ? 0 : uffd_monitor_run(mon, 0);
	if (r < 0)
		die("uffd_monitor_run: %s", uffd_strerror(r));
	for (i = 0; i < SOAK_THREADS; i++)
		if (p[1 + i].revents & POLLIN)
			serve_rpc(socks[i]);
	if (!last_beat)
		return;
	for (i = 0; i < SOAK_THREADS; i++) {
		uint64_t b = atomic_load(&status->t[i].heartbeat);

		if (b != last_beat[i] || atomic_load(&status->t[i].done)) {
			last_beat[i] = b;
			beat_at[i] = now_us();
		} else if (now_us() - beat_at[i] > WATCHDOG_S * 1000000ull) {
			die("watchdog: target thread %d made no progress for %d s (in operation %d)",
			    i, WATCHDOG_S, atomic_load(&status->t[i].op));
		}
	}
}

/* Run the monitor alone until it serves @n contexts; false after @ms milliseconds. */
static bool wait_count(int n, unsigned ms)
{
	uint64_t end = now_us() + ms * 1000ull;
	int r;

	while (uffd_monitor_count(mon) != n) {
		struct pollfd p = { .fd = uffd_monitor_fd(mon), .events = POLLIN };

		if (now_us() > end)
			return false;
		if (mode == MODE_POOL) {
			poll(NULL, 0, 10);
			continue;
		}
		poll(&p, 1, 50);
		r = uffd_monitor_run(mon, 0);
		if (r < 0)
			die("uffd_monitor_run: %s", uffd_strerror(r));
	}
	return true;
}

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s --target PATH [--seconds N] [--split K] [--mode MODE] [--forks N]\n"
		"          [--min-forks N] [--seed N] [--device-only]\n"
		"Serves soak_target's 4 threads for N seconds (default 60, or $LIBUFFD_SOAK_SECONDS),\n"
		"divided by K (default 1: the CTest variants share the time), with N fork children\n"
		"(default 1000 a minute). MODE (or $LIBUFFD_SOAK_MODE): single (default), one\n"
		"thread runs the monitor; pool, uffd_monitor_start() with 3 workers; deferred, the\n"
		"fault callback defers every fault to 3 completion threads (uffd_fault_finish()).\n"
		"Checks that nothing hangs, every byte read is what was served, the event counts\n"
		"match the target's log, and the monitor's fds and memory stay flat.\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *tpath = NULL, *env = getenv("LIBUFFD_SOAK_SECONDS");
	const char *mode_arg = getenv("LIBUFFD_SOAK_MODE");
	double split = 1;
	double seconds = env ? atof(env) : 60;
	unsigned long forks = 0, seed = 1;
	long min_forks = -1;
	bool device_only = false;
	int ctl[2], socks[SOAK_THREADS][2], mine[SOAK_THREADS], statusfd, fd, i, r;
	int fds_base, fds_end;
	long rss_warm = -1, rss_end;
	uint64_t t0, t_end, t_wait, last_beat[SOAK_THREADS] = { 0 }, beat_at[SOAK_THREADS];
	struct soak_log total = { 0 };
	struct uffd_stats st;
	struct soak_msg m;
	struct soak_seen saw;
	bool done = false;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--target") && i + 1 < argc)
			tpath = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--split") && i + 1 < argc)
			split = atof(argv[++i]);
		else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode_arg = argv[++i];
		else if (!strcmp(argv[i], "--forks") && i + 1 < argc)
			forks = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--min-forks") && i + 1 < argc)
			min_forks = strtol(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--device-only"))
			device_only = true;
		else
			usage(argv[0]);
	}
	if (mode_arg) {
		for (i = 0; i < 3 && strcmp(mode_arg, mode_names[i]); i++)
			;
		if (i == 3)
			usage(argv[0]);
		mode = i;
	}
	if (!tpath || seconds <= 0 || split < 1)
		usage(argv[0]);
	seconds /= split;
	/* 1,000 fork children a minute by default, and every one asked for must have happened. */
	if (forks == 0)
		forks = seconds >= 1.2 ? (unsigned long)(seconds * 1000 / 60) : 20;
	if (min_forks < 0)
		min_forks = (long)forks;
	PS = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	trace = getenv("LIBUFFD_SOAK_TRACE") != NULL;

	if (device_only) {
		/* Under valgrind only /dev/userfaultfd works: show the library finds that door. */
		struct uffd_config cfg = { .flags = UFFD_OPEN_DEVICE_ONLY };
		struct uffd *u;

		r = uffd_open(&u, &cfg);
		if (r)
			die("uffd_open(UFFD_OPEN_DEVICE_ONLY): %s", uffd_strerror(r));
		uffd_close(u);
	}

	/* The status page, shared with the target; sockets for the fd, registrations and logs. */
	statusfd = memfd_create("soak-status", 0);
	if (statusfd < 0 || ftruncate(statusfd, sizeof(*status)))
		die("memfd: %s", strerror(errno));
	status = mmap(NULL, sizeof(*status), PROT_READ | PROT_WRITE, MAP_SHARED, statusfd, 0);
	if (status == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ctl))
		die("socketpair: %s", strerror(errno));
	for (i = 0; i < SOAK_THREADS; i++)
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, socks[i]))
			die("socketpair: %s", strerror(errno));

	target = fork();
	if (target < 0)
		die("fork: %s", strerror(errno));
	if (target == 0) {
		char a[6 + SOAK_THREADS][32];
		char *av[8 + SOAK_THREADS];

		/* The target runs outside any valgrind or sanitizer of this process. */
		snprintf(a[0], sizeof(a[0]), "%d", ctl[1]);
		for (i = 0; i < SOAK_THREADS; i++)
			snprintf(a[1 + i], sizeof(a[1 + i]), "%d", socks[i][1]);
		snprintf(a[1 + SOAK_THREADS], sizeof(a[0]), "%d", statusfd);
		snprintf(a[2 + SOAK_THREADS], sizeof(a[0]), "%g", seconds);
		snprintf(a[3 + SOAK_THREADS], sizeof(a[0]), "%lu", forks);
		snprintf(a[4 + SOAK_THREADS], sizeof(a[0]), "%lu", seed);
		av[0] = (char *)tpath;
		for (i = 0; i < 5 + SOAK_THREADS; i++)
			av[1 + i] = a[i];
		av[6 + SOAK_THREADS] = NULL;
		execv(tpath, av);
		_exit(127);
	}
	close(ctl[1]);
	for (i = 0; i < SOAK_THREADS; i++) {
		close(socks[i][1]);
		mine[i] = socks[i][0];
	}

	/* The target's userfaultfd: adopted, served by a monitor that knows its pid. */
	fd = recv_fd(ctl[0], &m);
	if (fd < 0 || m.type != MSG_HELLO)
		die("no userfaultfd from the target (%s)", status->error);
	r = uffd_adopt(&root, fd, NULL);
	if (r)
		die("uffd_adopt: %s", uffd_strerror(r));
	uffd_on_pagefault(root, on_fault, NULL);
	uffd_on_remove(root, on_remove, NULL);
	uffd_on_unmap(root, on_unmap, NULL);
	uffd_on_remap(root, on_remap, NULL);
	uffd_on_fork(root, on_fork, NULL);
	uffd_on_exit(root, on_exit_cb, NULL);
	if ((r = uffd_monitor_new(&mon)) || (r = uffd_monitor_add(mon, root)))
		die("monitor: %s", uffd_strerror(r));
	/* valgrind 3.19 does not know pidfd_open: the monitor's liveness probe does it then. */
	r = uffd_monitor_watch_pid(mon, root, target);
	if (r && r != -ENOSYS)
		die("uffd_monitor_watch_pid: %s", uffd_strerror(r));
	if (mode == MODE_POOL && (r = uffd_monitor_start(mon, POOL_THREADS)))
		die("uffd_monitor_start: %s", uffd_strerror(r));
	for (i = 0; mode == MODE_DEFERRED && i < COMPLETERS; i++)
		if ((r = pthread_create(&dq.t[i], NULL, completer, NULL)))
			die("pthread_create: %s", strerror(r));
	printf("soak: mode %s, %.0f s\n", mode_names[mode], seconds);
	fds_base = count_fds();
	m = (struct soak_msg){ .type = MSG_REPLY };
	if (send(ctl[0], &m, sizeof(m), 0) != sizeof(m))
		die("send: %s", strerror(errno));

	t0 = now_us();
	for (i = 0; i < SOAK_THREADS; i++)
		beat_at[i] = t0;
	while (!done) {
		struct pollfd pc = { .fd = ctl[0], .events = POLLIN };

		round_once(mine, 50, last_beat, beat_at);
		if (rss_warm < 0 && now_us() - t0 > (uint64_t)(seconds * 0.25e6))
			rss_warm = rss_kib();
		if (poll(&pc, 1, 0) == 1) {
			if (recv(ctl[0], &m, sizeof(m), 0) != sizeof(m) || m.type != MSG_DONE)
				die("the target went away (%s)", status->error);
			done = true;
		}
		if (now_us() - t0 > (uint64_t)(seconds * 1e6) + 120000000ull)
			die("the target did not finish");
	}
	t_end = now_us();
	if (m.rc || status->error[0])
		die("the target found an error");

	/* Every fork child has exited: within a second the monitor must have closed them all. */
	if (!wait_count(1, 3000))
		die("%d contexts left 3 s after every fork child exited",
		    uffd_monitor_count(mon) - 1);
	if (mode == MODE_DEFERRED && !dq_idle(3000))
		die("deferred faults still unfinished 3 s after the target was done");

	for (i = 0; i < SOAK_THREADS; i++) {
		const struct soak_log *l = &status->t[i].log;

		total.faults += l->faults;
		total.forks += l->forks;
		total.remaps += l->remaps;
		total.removes += l->removes;
		total.unmaps += l->unmaps;
		total.touches += l->touches;
		total.bytes_checked += l->bytes_checked;
		total.zero_pages_read += l->zero_pages_read;
		total.mmaps += l->mmaps;
		total.grows += l->grows;
		total.shrinks += l->shrinks;
	}
	total.child_faults = atomic_load(&status->child_faults);
	/* A child's on_exit may run on another thread a little after its context left the count. */
	for (t_wait = now_us() + 3000000; now_us() < t_wait;) {
		pthread_mutex_lock(&mu);
		r = seen.exits == total.forks;
		pthread_mutex_unlock(&mu);
		if (r)
			break;
		if (mode != MODE_POOL)
			wait_count(1, 10);
		else
			poll(NULL, 0, 10);
	}
	/*
	 * A pool closes a context after its on_exit, when the worker that ran it lets it go: at
	 * the latest at the reader's next probe tick (250 ms).
	 */
	for (t_wait = now_us() + 1000000; (fds_end = count_fds()) != fds_base && now_us() < t_wait;)
		poll(NULL, 0, 20);
	rss_end = rss_kib();
	pthread_mutex_lock(&mu);
	saw = seen;
	pthread_mutex_unlock(&mu);
	uffd_get_stats(root, &st);
	printf("soak: %.0f s, target: %llu touches (%llu MiB checked, %llu zero pages), %llu mmaps, "
	       "%llu grows, %llu shrinks\n",
	       (double)(t_end - t0) / 1e6, (unsigned long long)total.touches,
	       (unsigned long long)(total.bytes_checked >> 20),
	       (unsigned long long)total.zero_pages_read, (unsigned long long)total.mmaps,
	       (unsigned long long)total.grows, (unsigned long long)total.shrinks);
	printf("soak: %-8s %10s %10s\n", "event", "target", "monitor");
#define ROW(name, a, b)                                                       \
	printf("soak: %-8s %10llu %10llu%s\n", name, (unsigned long long)(a), \
	       (unsigned long long)(b), (a) == (b) ? "" : "   MISMATCH")
	ROW("faults", total.faults, saw.served);
	ROW("child", total.child_faults, saw.served_children);
	ROW("forks", total.forks, saw.forks);
	ROW("remaps", total.remaps, saw.remaps);
	ROW("removes", total.removes, saw.removes);
	ROW("unmaps", total.unmaps, saw.unmaps);
	if (mode == MODE_DEFERRED)
		printf("soak: %llu faults deferred, at most %llu queued at once\n",
		       (unsigned long long)dq.deferred, (unsigned long long)dq.max_queued);
	printf("soak: monitor: %llu faults served (%llu zero pages), %llu EAGAIN retries, "
	       "%llu fork children exited, fds %d -> %d, RSS %ld -> %ld KiB\n",
	       (unsigned long long)(saw.served + saw.served_children),
	       (unsigned long long)saw.zero_served, (unsigned long long)saw.retries,
	       (unsigned long long)saw.exits, fds_base, fds_end, rss_warm, rss_end);

	if (total.faults != saw.served || total.child_faults != saw.served_children)
		die("faults served differ from the target's count");
	if (total.forks != saw.forks || total.remaps != saw.remaps ||
	    total.removes != saw.removes || total.unmaps != saw.unmaps)
		die("event counts differ from the target's log");
	if (st.forks != saw.forks || st.remaps != saw.remaps || st.removes != saw.removes ||
	    st.unmaps != saw.unmaps)
		die("uffd_get_stats() differs from the callbacks");
	if ((long)total.forks < min_forks)
		die("only %llu fork children (wanted %ld)", (unsigned long long)total.forks,
		    min_forks);
	if (saw.exits != total.forks)
		die("%llu exits reported for %llu fork children", (unsigned long long)saw.exits,
		    (unsigned long long)total.forks);
	if (fds_end != fds_base)
		die("the monitor's fd count moved: %d -> %d", fds_base, fds_end);
	/* Under TSan the RSS is mostly the runtime's shadow of every address ever touched, which
	 * grows as threads come and go (the deferred mode's completion threads): there the bound is
	 * looser; the plain and ASan builds keep the tight one. */
	if (rss_warm > 0 && rss_end > rss_warm + (UNDER_TSAN ? 16384 : 4096) &&
	    rss_end > rss_warm * (UNDER_TSAN ? 15 : 11) / 10)
		die("the monitor's memory grew: %ld -> %ld KiB", rss_warm, rss_end);

	/* Let the target exit; the monitor learns it from the pidfd and closes the context. */
	m = (struct soak_msg){ .type = MSG_EXIT };
	if (send(ctl[0], &m, sizeof(m), 0) != sizeof(m))
		die("send: %s", strerror(errno));
	if (!wait_count(0, 3000))
		die("the target's context is still there 3 s after the target exited");
	if (waitpid(target, &r, 0) != target || !WIFEXITED(r) || WEXITSTATUS(r) != 0)
		die("the target ended with status %#x", r);
	target = -1;
	if (mode == MODE_POOL) {
		if (uffd_monitor_stop(mon) || (r = uffd_monitor_join(mon)) < 0)
			die("uffd_monitor_join: %s", uffd_strerror(r));
	}
	if (mode == MODE_DEFERRED) {
		pthread_mutex_lock(&dq.mu);
		dq.stop = true;
		pthread_cond_broadcast(&dq.cv);
		pthread_mutex_unlock(&dq.mu);
		for (i = 0; i < COMPLETERS; i++)
			pthread_join(dq.t[i], NULL);
	}
	uffd_monitor_free(mon);
	munmap(status, sizeof(*status));
	close(statusfd);
	close(ctl[0]);
	for (i = 0; i < SOAK_THREADS; i++)
		close(mine[i]);
	printf("soak: PASS\n");
	return 0;
}
