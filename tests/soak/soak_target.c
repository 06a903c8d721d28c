/* SPDX-License-Identifier: MIT */
/* The soak test's monitored process: 4 threads touch, mmap, munmap, mremap, madvise and fork at
 * random, check every byte they read, and log what they did. Run by soak_monitor, never alone. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "soak.h"

#define MAX_PAGES (SOAK_MAX_PAGES + 4 * SOAK_GROW_PAGES)
#define NCHUNKS (SOAK_SLOTS + 2) /* each thread's chunks: one per slot, and room to move */

struct page {
	uint32_t off;	 /* page offset in its registration */
	uint8_t zero;	 /* reads as zero: removed, or a grown tail the monitor cannot know */
	uint8_t present; /* touched since it was last removed: no fault expected */
};

struct slot {
	int chunk;  /* which of the thread's chunks holds it */
	char *addr; /* NULL: empty */
	size_t n;   /* pages */
	uint64_t gen;
	struct page pg[MAX_PAGES];
};

struct worker {
	int id, sock;
	char *window; /* NCHUNKS chunks of MAX_PAGES pages, PROT_NONE where unused */
	bool chunk_used[NCHUNKS], chunk_lost[NCHUNKS];
	uint64_t rng;
	uint64_t fork_every_us, next_fork_us;
	struct slot slot[SOAK_SLOTS];
	struct soak_thread *st;
};

static struct soak_status *status;
static size_t PS;
static uint64_t deadline_us;
static atomic_bool failed;
static _Atomic uint64_t next_gen = 1;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t rnd(struct worker *w)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return w->rng;
}

/* The first error wins; every thread then stops. Not for fork children (stdio locks). */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange(&failed, true))
		return;
	va_start(ap, fmt);
	vsnprintf(status->error, sizeof(status->error), fmt, ap);
	va_end(ap);
}

static int rpc(int sock, struct soak_msg *m)
{
	struct soak_msg r;

	if (send(sock, m, sizeof(*m), 0) != (ssize_t)sizeof(*m))
		return -errno;
	if (recv(sock, &r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -EPROTO;
	return r.rc;
}

/* Read one page in full and check it; returns 0, or the index of the first bad word + 1. */
static size_t check_page(const struct slot *s, size_t i)
{
	const volatile uint64_t *w = (const volatile uint64_t *)(s->addr + i * PS);
	size_t k;

	for (k = 0; k < PS / 8; k++) {
		uint64_t want = s->pg[i].zero ? 0 : soak_word(s->gen, s->pg[i].off * PS + k * 8);

		if (w[k] != want)
			return k + 1;
	}
	return 0;
}

static struct slot *pick(struct worker *w, bool full)
{
	int k, start = (int)(rnd(w) % SOAK_SLOTS);

	for (k = 0; k < SOAK_SLOTS; k++) {
		struct slot *s = &w->slot[(start + k) % SOAK_SLOTS];

		if ((s->addr != NULL) == full)
			return s;
	}
	return NULL;
}

/*
 * Address reuse stays within a thread. When thread A unmaps a range, the kernel frees it at once
 * but sends UNMAP afterwards; if thread B mapped and registered a new range there before the
 * monitor read that UNMAP, the monitor would apply the stale UNMAP to B's new registration (see
 * README, Reliability). So each thread maps only inside its own window of chunks, and puts a
 * PROT_NONE reservation back over every range it frees.
 */
static char *chunk_addr(struct worker *w, int c)
{
	return w->window + (size_t)c * MAX_PAGES * PS;
}

static int chunk_get(struct worker *w)
{
	int c;

	for (c = 0; c < NCHUNKS; c++)
		if (!w->chunk_used[c] && !w->chunk_lost[c]) {
			w->chunk_used[c] = true;
			return c;
		}
	return -1;
}

/* Put the reservation back over [p, p + n pages) of chunk c, freed by the kernel just now. */
static void reserve(struct worker *w, int c, char *p, size_t n)
{
	void *r;

	if (n == 0)
		return;
	r = mmap(p, n * PS, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (r != p) {
		if (r != MAP_FAILED)
			munmap(r, n * PS);
		w->chunk_lost[c] = true; /* something else took it: never use it again */
	}
}

static void op_touch(struct worker *w)
{
	struct slot *s = pick(w, true);
	size_t i, bad;

	if (!s)
		return;
	i = rnd(w) % s->n;
	if (!s->pg[i].present)
		w->st->log.faults++;
	bad = check_page(s, i);
	if (bad)
		fail("thread %d: page %zu of %zu at %p (registration %llu, %s) word %zu reads %#llx",
		     w->id, i, s->n, (void *)(s->addr + i * PS), (unsigned long long)s->gen,
		     s->pg[i].zero ? "zero expected" : "served content expected", bad - 1,
		     (unsigned long long)((uint64_t *)(s->addr + i * PS))[bad - 1]);
	s->pg[i].present = 1;
	w->st->log.touches++;
	w->st->log.bytes_checked += PS;
	w->st->log.zero_pages_read += s->pg[i].zero;
}

static void op_mmap(struct worker *w)
{
	struct slot *s = pick(w, false);
	struct soak_msg m = { .type = MSG_REGISTER };
	size_t i, n;
	char *p;
	int rc, c;

	if (!s || (c = chunk_get(w)) < 0)
		return;
	n = 1 + rnd(w) % SOAK_MAX_PAGES;
	p = mmap(chunk_addr(w, c), n * PS, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p == MAP_FAILED) {
		fail("thread %d: mmap: %s", w->id, strerror(errno));
		return;
	}
	/* One page per fault, as the model counts. */
	madvise(p, n * PS, MADV_NOHUGEPAGE);
	m.gen = atomic_fetch_add(&next_gen, 1);
	m.addr = (uintptr_t)p;
	m.len = n * PS;
	rc = rpc(w->sock, &m);
	if (rc) {
		fail("thread %d: the monitor could not register %zu pages: %s", w->id, n,
		     strerror(-rc));
		return;
	}
	s->chunk = c;
	s->addr = p;
	s->n = n;
	s->gen = m.gen;
	for (i = 0; i < n; i++)
		s->pg[i] = (struct page){ .off = (uint32_t)i };
	w->st->log.mmaps++;
}

static void op_munmap(struct worker *w)
{
	struct slot *s = pick(w, true);

	if (!s)
		return;
	if (munmap(s->addr, s->n * PS)) {
		fail("thread %d: munmap: %s", w->id, strerror(errno));
		return;
	}
	reserve(w, s->chunk, s->addr, s->n);
	w->chunk_used[s->chunk] = false;
	s->addr = NULL;
	w->st->log.unmaps++;
}

/* Move the mapping elsewhere, maybe growing it: REMAP, then UNMAP of the old place. */
static void op_move(struct worker *w)
{
	struct slot *s = pick(w, true);
	size_t grow, i;
	char *dst, *r;
	int c;

	if (!s)
		return;
	grow = rnd(w) % 2 ? 0 : rnd(w) % (SOAK_GROW_PAGES + 1);
	if (s->n + grow > MAX_PAGES)
		grow = 0;
	if ((c = chunk_get(w)) < 0)
		return;
	/* Into a reserved, unregistered place: replacing it sends no event. */
	dst = chunk_addr(w, c);
	r = mremap(s->addr, s->n * PS, (s->n + grow) * PS, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (r != dst) {
		fail("thread %d: mremap move: %s", w->id, strerror(errno));
		return;
	}
	reserve(w, s->chunk, s->addr, s->n);
	w->chunk_used[s->chunk] = false;
	s->chunk = c;
	for (i = s->n; i < s->n + grow; i++)
		s->pg[i] = (struct page){ .zero = 1 };
	s->addr = dst;
	s->n += grow;
	w->st->log.remaps++;
	w->st->log.unmaps++;
	w->st->log.grows += grow != 0;
}

static void op_shrink(struct worker *w)
{
	struct slot *s = pick(w, true);
	size_t n;

	if (!s || s->n < 2)
		return;
	n = 1 + rnd(w) % (s->n - 1);
	if (mremap(s->addr, s->n * PS, n * PS, 0) != s->addr) {
		fail("thread %d: mremap shrink: %s", w->id, strerror(errno));
		return;
	}
	reserve(w, s->chunk, s->addr + n * PS, s->n - n);
	s->n = n;
	w->st->log.unmaps++;
	w->st->log.shrinks++;
}

/* Grow in place where there is room: no event; the new pages are registered but unknown. */
static void op_grow(struct worker *w)
{
	struct slot *s = pick(w, true);
	size_t grow, i;

	if (!s)
		return;
	grow = 1 + rnd(w) % SOAK_GROW_PAGES;
	if (s->n + grow > MAX_PAGES)
		return;
	/* Make room in the chunk: the reservation after the mapping is not registered. */
	munmap(s->addr + s->n * PS, grow * PS);
	if (mremap(s->addr, s->n * PS, (s->n + grow) * PS, 0) == MAP_FAILED) {
		reserve(w, s->chunk, s->addr + s->n * PS, grow);
		return;
	}
	for (i = s->n; i < s->n + grow; i++)
		s->pg[i] = (struct page){ .zero = 1 };
	s->n += grow;
	w->st->log.grows++;
}

static void op_dontneed(struct worker *w)
{
	struct slot *s = pick(w, true);
	size_t a, b, i;

	if (!s)
		return;
	a = rnd(w) % s->n;
	b = a + 1 + rnd(w) % (s->n - a);
	if (madvise(s->addr + a * PS, (b - a) * PS, MADV_DONTNEED)) {
		fail("thread %d: madvise: %s", w->id, strerror(errno));
		return;
	}
	for (i = a; i < b; i++) {
		s->pg[i].zero = 1;
		s->pg[i].present = 0;
	}
	w->st->log.removes++;
}

/* The child reads pages of this thread's mappings through its own context, then exits. */
static void op_fork(struct worker *w)
{
	pid_t pid;
	int st;

	pid = fork();
	if (pid < 0) {
		fail("thread %d: fork: %s", w->id, strerror(errno));
		return;
	}
	if (pid == 0) {
		uint64_t faults = 0;
		int k, bad = 0;

		/* Only this thread survives in the child: no locks, no stdio, no malloc. */
		alarm(30);
		for (k = 0; k < 8; k++) {
			struct slot *s = pick(w, true);
			size_t i;

			if (!s)
				break;
			i = rnd(w) % s->n;
			faults += !s->pg[i].present;
			bad |= check_page(s, i) != 0;
			s->pg[i].present = 1;
		}
		atomic_fetch_add(&status->child_faults, faults);
		if (bad)
			atomic_fetch_add(&status->child_errors, 1);
		_exit(bad);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("thread %d: fork child %d ended with status %#x", w->id, (int)pid, st);
	w->st->log.forks++;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t t;

	while (!atomic_load(&failed) && (t = now_us()) < deadline_us) {
		unsigned r = (unsigned)(rnd(w) % 100);
		int op;

		if (w->fork_every_us && t >= w->next_fork_us) {
			op = OP_FORK;
			w->next_fork_us += w->fork_every_us;
			if (w->next_fork_us < t)
				w->next_fork_us = t; /* behind: catch up, but not in a burst */
		} else if (r < 50) {
			op = OP_TOUCH;
		} else if (r < 60) {
			op = OP_MMAP;
		} else if (r < 67) {
			op = OP_MUNMAP;
		} else if (r < 75) {
			op = OP_MOVE;
		} else if (r < 81) {
			op = OP_SHRINK;
		} else if (r < 87) {
			op = OP_GROW;
		} else {
			op = OP_DONTNEED;
		}
		atomic_store(&w->st->op, op);
		switch (op) {
		case OP_TOUCH:
			op_touch(w);
			break;
		case OP_MMAP:
			op_mmap(w);
			break;
		case OP_MUNMAP:
			op_munmap(w);
			break;
		case OP_MOVE:
			op_move(w);
			break;
		case OP_SHRINK:
			op_shrink(w);
			break;
		case OP_GROW:
			op_grow(w);
			break;
		case OP_DONTNEED:
			op_dontneed(w);
			break;
		default:
			op_fork(w);
			break;
		}
		atomic_store(&w->st->op, OP_IDLE);
		atomic_fetch_add(&w->st->heartbeat, 1);
	}
	atomic_store(&w->st->done, 1);
	return NULL;
}

static int send_fd(int sock, const struct soak_msg *m, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)m, sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &mh, 0) == (ssize_t)sizeof(*m) ? 0 : -errno;
}

int main(int argc, char **argv)
{
	static struct worker w[SOAK_THREADS];
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP,
	};
	struct soak_msg m = { .type = MSG_HELLO };
	pthread_t th[SOAK_THREADS];
	int ctl, statusfd, i, rc;
	double seconds;
	unsigned long forks, seed;
	struct uffd *u;
	char *anchor;

	/* Ended with the monitor that started it: a monitor killed by a sanitizer report must not
	 * leave its target holding the test runner's output pipe. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (argc != 6 + SOAK_THREADS) {
		fprintf(stderr,
			"usage: %s CTLFD T0FD..T3FD STATUSFD SECONDS FORKS SEED\n"
			"(started by soak_monitor)\n",
			argv[0]);
		return 2;
	}
	ctl = atoi(argv[1]);
	statusfd = atoi(argv[2 + SOAK_THREADS]);
	seconds = atof(argv[3 + SOAK_THREADS]);
	forks = strtoul(argv[4 + SOAK_THREADS], NULL, 0);
	seed = strtoul(argv[5 + SOAK_THREADS], NULL, 0);
	PS = (size_t)sysconf(_SC_PAGESIZE);
	status = mmap(NULL, sizeof(*status), PROT_READ | PROT_WRITE, MAP_SHARED, statusfd, 0);
	if (status == MAP_FAILED)
		return 3;

	rc = uffd_open(&u, &cfg);
	if (rc) {
		fail("uffd_open: %s", uffd_strerror(rc));
		return 4;
	}
	m.pid = getpid();
	if (send_fd(ctl, &m, uffd_fd(u)) || recv(ctl, &m, sizeof(m), 0) != sizeof(m) || m.rc)
		return 5;

	/* A registered page that never goes away: every fork() then sends a FORK event. */
	anchor = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m = (struct soak_msg){
		.type = MSG_REGISTER, .gen = 0, .addr = (uintptr_t)anchor, .len = PS
	};
	if (anchor == MAP_FAILED || rpc(atoi(argv[2]), &m))
		return 6;

	deadline_us = now_us() + (uint64_t)(seconds * 1e6);
	for (i = 0; i < SOAK_THREADS; i++) {
		w[i].id = i;
		w[i].sock = atoi(argv[2 + i]);
		w[i].rng = 0x9e3779b97f4a7c15ull * (seed + (unsigned long)i + 1);
		w[i].window = mmap(NULL, NCHUNKS * MAX_PAGES * PS, PROT_NONE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (w[i].window == MAP_FAILED)
			return 9;
		w[i].st = &status->t[i];
		/* Spread the forks over 80% of the run. */
		if (forks)
			w[i].fork_every_us =
				(uint64_t)(seconds * 0.8e6 / ((double)forks / SOAK_THREADS));
		w[i].next_fork_us = now_us() + w[i].fork_every_us;
		pthread_create(&th[i], NULL, worker_main, &w[i]);
	}
	for (i = 0; i < SOAK_THREADS; i++)
		pthread_join(th[i], NULL);

	/* The monitor compares the logs, checks its own fds and memory, then lets us go. */
	m = (struct soak_msg){ .type = MSG_DONE, .rc = atomic_load(&failed) ? -EPROTO : 0 };
	if (send(ctl, &m, sizeof(m), 0) != sizeof(m))
		return 7;
	if (recv(ctl, &m, sizeof(m), 0) != sizeof(m) || m.type != MSG_EXIT)
		return 8;
	uffd_close(u);
	return atomic_load(&failed) ? 1 : 0;
}
