/* SPDX-License-Identifier: MIT */
/* The soak test: a lazy-load-style monitor serving a 4-thread target process (soak_target) that
 * maps, unmaps, moves, discards and forks at random, with every invariant checked. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#define WATCHDOG_S 15 /* a target thread that makes no progress this long is stuck */

static size_t PS;
static struct uffd *root;
static struct uffd_monitor *mon;
static struct soak_status *status;
static pid_t target = -1;
static bool trace; /* $LIBUFFD_SOAK_TRACE: every event and registration on stderr */

/* What the monitor saw. */
static struct {
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
 * linear probing and tombstones; the monitor runs in one thread.
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

static int on_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	static uint64_t page[65536 / 8] __attribute__((aligned(64)));
	uintptr_t a = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);
	uint64_t gen = (uint64_t)(uintptr_t)pf->range.data;
	bool zero = pf->range.start == NULL || dset_has(a);
	size_t k;
	int r;

	(void)arg;
	if (trace && zero)
		fprintf(stderr, "zero page %#lx (%s, %s)\n", (unsigned long)a,
			pf->range.start ? "discarded" : "not in the map",
			u == root ? "root" : "child");
	if (zero) {
		memset(page, 0, PS);
	} else {
		uint64_t off = pf->range.offset + (a - (uintptr_t)pf->range.start);

		for (k = 0; k < PS / 8; k++)
			page[k] = soak_word(gen, off + k * 8);
	}
	r = uffd_copy(u, (void *)a, page, PS, 0);
	if (r == 0) {
		if (u == root)
			seen.served++;
		else
			seen.served_children++;
		seen.zero_served += zero;
	} else if (r == -EAGAIN) {
		seen.retries++;
	}
	return r;
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	uintptr_t a;

	(void)arg;
	if (u != root)
		die("a fork child's context got a REMOVE");
	if (trace)
		fprintf(stderr, "remove %p-%p\n", s->start, s->end);
	for (a = (uintptr_t)s->start; a < (uintptr_t)s->end; a += PS)
		dset_add(a);
	seen.removes++;
	return 0;
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)arg;
	if (u != root)
		die("a fork child's context got an UNMAP");
	if (trace)
		fprintf(stderr, "unmap %p-%p\n", s->start, s->end);
	dset_clear((uintptr_t)s->start, (uintptr_t)s->end);
	seen.unmaps++;
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
	dset_clear((uintptr_t)r->to, (uintptr_t)r->to + r->len);
	for (i = 0; i < r->len; i += PS)
		if (dset_has((uintptr_t)r->from + i))
			dset_add((uintptr_t)r->to + i);
	seen.remaps++;
	return 0;
}

static int on_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)child, (void)arg;
	if (parent != root)
		die("a fork child forked");
	seen.forks++;
	return 0; /* keep it: the monitor serves it */
}

static void on_exit_cb(struct uffd *u, void *arg)
{
	(void)u, (void)arg;
	seen.exits++;
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
	/* A new mapping: nothing of it is discarded, whatever was at that address before. */
	dset_clear((uintptr_t)m.addr, (uintptr_t)(m.addr + m.len));
	r.rc = uffd_register(root, (void *)(uintptr_t)m.addr, m.len, UFFDIO_REGISTER_MODE_MISSING,
			     (void *)(uintptr_t)m.gen);
	seen.registers++;
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

	p[0] = (struct pollfd){ .fd = uffd_monitor_fd(mon), .events = POLLIN };
	for (i = 0; i < SOAK_THREADS; i++)
		p[1 + i] = (struct pollfd){ .fd = socks[i], .events = POLLIN };
	if (poll(p, 1 + SOAK_THREADS, timeout_ms) < 0 && errno != EINTR)
		die("poll: %s", strerror(errno));
	r = uffd_monitor_run(mon, 0);
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
		"usage: %s --target PATH [--seconds N] [--forks N] [--min-forks N] [--seed N]\n"
		"          [--device-only]\n"
		"Serves soak_target's 4 threads for N seconds (default 60, or $LIBUFFD_SOAK_SECONDS),\n"
		"with N fork children (default 1000 a minute),\n"
		"and checks that nothing hangs, every byte read is what was served, the event counts\n"
		"match the target's log, and the monitor's fds and memory stay flat.\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *tpath = NULL, *env = getenv("LIBUFFD_SOAK_SECONDS");
	double seconds = env ? atof(env) : 60;
	unsigned long forks = 0, seed = 1;
	long min_forks = -1;
	bool device_only = false;
	int ctl[2], socks[SOAK_THREADS][2], mine[SOAK_THREADS], statusfd, fd, i, r;
	int fds_base, fds_end;
	long rss_warm = -1, rss_end;
	uint64_t t0, t_end, last_beat[SOAK_THREADS] = { 0 }, beat_at[SOAK_THREADS];
	struct soak_log total = { 0 };
	struct uffd_stats st;
	struct soak_msg m;
	bool done = false;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--target") && i + 1 < argc)
			tpath = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
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
	if (!tpath || seconds <= 0)
		usage(argv[0]);
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
	fds_end = count_fds();
	rss_end = rss_kib();

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
	ROW("faults", total.faults, seen.served);
	ROW("child", total.child_faults, seen.served_children);
	ROW("forks", total.forks, seen.forks);
	ROW("remaps", total.remaps, seen.remaps);
	ROW("removes", total.removes, seen.removes);
	ROW("unmaps", total.unmaps, seen.unmaps);
	printf("soak: monitor: %llu faults served (%llu zero pages), %llu EAGAIN retries, "
	       "%llu fork children exited, fds %d -> %d, RSS %ld -> %ld KiB\n",
	       (unsigned long long)(seen.served + seen.served_children),
	       (unsigned long long)seen.zero_served, (unsigned long long)seen.retries,
	       (unsigned long long)seen.exits, fds_base, fds_end, rss_warm, rss_end);

	if (total.faults != seen.served || total.child_faults != seen.served_children)
		die("faults served differ from the target's count");
	if (total.forks != seen.forks || total.remaps != seen.remaps ||
	    total.removes != seen.removes || total.unmaps != seen.unmaps)
		die("event counts differ from the target's log");
	if (st.forks != seen.forks || st.remaps != seen.remaps || st.removes != seen.removes ||
	    st.unmaps != seen.unmaps)
		die("uffd_get_stats() differs from the callbacks");
	if ((long)total.forks < min_forks)
		die("only %llu fork children (wanted %ld)", (unsigned long long)total.forks,
		    min_forks);
	if (seen.exits != total.forks)
		die("%llu exits reported for %llu fork children", (unsigned long long)seen.exits,
		    (unsigned long long)total.forks);
	if (fds_end != fds_base)
		die("the monitor's fd count moved: %d -> %d", fds_base, fds_end);
	if (rss_warm > 0 && rss_end > rss_warm + 4096 && rss_end > rss_warm * 11 / 10)
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
	uffd_monitor_free(mon);
	munmap(status, sizeof(*status));
	close(statusfd);
	close(ctl[0]);
	for (i = 0; i < SOAK_THREADS; i++)
		close(mine[i]);
	printf("soak: PASS\n");
	return 0;
}
