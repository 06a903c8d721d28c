/* SPDX-License-Identifier: MIT */
/* Fault injection: every allocation in open, register, dispatch and monitor fails in turn; EINTR. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#include "internal.h"
#include "testutil.h"

/* The library's own hook (src/sys.c), reachable through the static library only. */
void uffd_test_fail_at(int site, int nth, int err);
void uffd_test_fail_from(int site, int nth, int err);
unsigned long uffd_test_calls(int site);

#define EVENTS (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE)
#define FILL 0x5a

/* UNDER_TSAN (testutil.h): the same-process fork cases cannot run under TSan. */

static size_t PS;
static unsigned long injected; /* failures injected by this test, for its closing line */

/*
 * ---- the monitor's direct libc calls ----
 *
 * monitor.c and pool.c allocate with calloc, mmap, epoll_create1, eventfd, timerfd_create,
 * epoll_ctl(ADD) and pidfd_open rather than through sys.c, so this program is linked with
 * -Wl,--wrap for each of them (tests/CMakeLists.txt). Inside a scope opened by the test, the
 * wrapped calls are counted in one sequence and the nth fails with ENOMEM; outside a scope they
 * pass straight on. mmap is wrapped too, which also covers the library's own uffd_sys_mmap()
 * inside a scope.
 */
void *__real_calloc(size_t n, size_t size);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_epoll_create1(int flags);
int __real_eventfd(unsigned int initval, int flags);
int __real_timerfd_create(int clockid, int flags);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
long __real_syscall(long nr, ...);

static _Atomic bool w_scope;
static _Atomic int w_count, w_fail;

static bool w_hit(void)
{
	if (!atomic_load(&w_scope))
		return false;
	return atomic_fetch_add(&w_count, 1) + 1 == atomic_load(&w_fail);
}

void *__wrap_calloc(size_t n, size_t size)
{
	if (w_hit()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (w_hit()) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return __real_mmap(addr, len, prot, flags, fd, off);
}

int __wrap_epoll_create1(int flags)
{
	if (w_hit()) {
		errno = ENOMEM;
		return -1;
	}
	return __real_epoll_create1(flags);
}

int __wrap_eventfd(unsigned int initval, int flags)
{
	if (w_hit()) {
		errno = ENOMEM;
		return -1;
	}
	return __real_eventfd(initval, flags);
}

int __wrap_timerfd_create(int clockid, int flags)
{
	if (w_hit()) {
		errno = ENOMEM;
		return -1;
	}
	return __real_timerfd_create(clockid, flags);
}

int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	/* Only adding allocates; a DEL on a cleanup path must still work. */
	if (op == EPOLL_CTL_ADD && w_hit()) {
		errno = ENOMEM;
		return -1;
	}
	return __real_epoll_ctl(epfd, op, fd, ev);
}

long __wrap_syscall(long nr, ...)
{
	/*
	 * Only as many arguments as the library passes (at most 5: pidfd_open, userfaultfd, and
	 * ppoll where there is no poll): reading a sixth would read past what the caller put on
	 * the stack, which clang's ASan reports.
	 */
	long a[5];
	va_list ap;
	int i;

	va_start(ap, nr);
	for (i = 0; i < 5; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
#ifdef SYS_pidfd_open
	if (nr == SYS_pidfd_open && w_hit()) {
		errno = ENOMEM;
		return -1;
	}
#endif
	return __real_syscall(nr, a[0], a[1], a[2], a[3], a[4]);
}

/* Open a scope in which the @fail_at-th wrapped call fails (0: none fails, only count). */
static void w_begin(int fail_at)
{
	atomic_store(&w_count, 0);
	atomic_store(&w_fail, fail_at);
	atomic_store(&w_scope, true);
	if (fail_at)
		injected++;
}

static int w_end(void)
{
	atomic_store(&w_scope, false);
	atomic_store(&w_fail, 0);
	return atomic_load(&w_count);
}

/* ---- helpers ---- */

struct piece {
	void *start, *end, *data;
	size_t offset;
};

#define MAXP 2048

struct snap {
	struct piece p[MAXP];
	int n;
};

/* The context's whole range map, walked through the public API. */
static void snap_take(struct uffd *u, struct snap *s)
{
	struct uffd_range r;
	const void *at = NULL;

	s->n = 0;
	while (uffd_range_next(u, at, &r) == 0) {
		ck_assert_int_lt(s->n, MAXP);
		s->p[s->n++] = (struct piece){ r.start, r.end, r.data, r.offset };
		at = r.end;
	}
	ck_assert_int_eq(uffd_range_count(u), s->n);
}

static void snap_same(const struct snap *a, const struct snap *b)
{
	int i;

	ck_assert_int_eq(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		ck_assert_ptr_eq(a->p[i].start, b->p[i].start);
		ck_assert_ptr_eq(a->p[i].end, b->p[i].end);
		ck_assert_ptr_eq(a->p[i].data, b->p[i].data);
		ck_assert_uint_eq(a->p[i].offset, b->p[i].offset);
	}
}

/* Structural invariants of the map itself: ordered, disjoint, non-empty, counted. */
static void map_consistent(struct uffd *u)
{
	const struct uffd_node *n, *prev = NULL;
	long count = 0;

	pthread_mutex_lock(&u->lock);
	for (n = u->map.first; n; prev = n, n = n->next) {
		ck_assert(n->start < n->end);
		ck_assert_ptr_eq(n->prev, prev);
		if (prev)
			ck_assert(prev->end <= n->start);
		ck_assert_ptr_eq(uffd_rmap_find(&u->map, n->start), n);
		count++;
	}
	ck_assert_int_eq(count, u->map.count);
	pthread_mutex_unlock(&u->lock);
}

/* The registration modes the kernel reports for the VMA holding @addr (um/uw/ui in smaps). */
static unsigned kernel_modes(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;
	unsigned modes = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			modes |= strstr(line, " um") ? UFFDIO_REGISTER_MODE_MISSING : 0;
			modes |= strstr(line, " uw") ? UFFDIO_REGISTER_MODE_WP : 0;
			modes |= strstr(line, " ui") ? UFFDIO_REGISTER_MODE_MINOR : 0;
			break;
		}
	}
	fclose(f);
	return modes;
}

/* Register single pages of a big mapping until the context's map has no free node left, so that
 * the next operation that needs a node must allocate. Returns the mapping (2 * count pages). */
static char *exhaust_nodes(struct uffd *u, size_t *len_out)
{
	size_t need, len, i;
	char *big;

	ck_assert_int_eq(uffd_rmap_reserve(&u->map, 1), 0);
	need = u->map.nfree;
	len = 2 * need * PS;
	big = tu_map_anon(len);
	for (i = 0; i < need; i++)
		ck_assert_int_eq(uffd_register(u, big + 2 * i * PS, PS,
					       UFFDIO_REGISTER_MODE_MISSING, NULL),
				 0);
	ck_assert_uint_eq(u->map.nfree, 0);
	*len_out = len;
	return big;
}

static int serve_fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	static char *src;

	(void)arg;
	if (!src) {
		src = __real_mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
				  0);
		if (src == MAP_FAILED)
			return -ENOMEM;
		memset(src, FILL, PS);
	}
	return uffd_copy(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), src, PS, 0);
}

static atomic_int n_unmap, n_remap, n_remove, n_fork;
static atomic_int order; /* 10 * order + kind of the last span callbacks: UNMAP 1, REMOVE 2 */
static struct uffd *kept_child;

static int cb_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u, (void)s, (void)arg;
	atomic_fetch_add(&n_unmap, 1);
	atomic_store(&order, atomic_load(&order) * 10 + 1);
	return 0;
}

static int cb_remap(struct uffd *u, const struct uffd_remap *r, void *arg)
{
	(void)u, (void)r, (void)arg;
	atomic_fetch_add(&n_remap, 1);
	return 0;
}

static int cb_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u, (void)s, (void)arg;
	atomic_fetch_add(&n_remove, 1);
	atomic_store(&order, atomic_load(&order) * 10 + 2);
	return 0;
}

static int cb_fork_keep(struct uffd *parent, struct uffd *child, void *arg)
{
	(void)parent, (void)arg;
	atomic_fetch_add(&n_fork, 1);
	if (!parent->mon)
		kept_child = child;
	return 0;
}

static void setup(void)
{
	PS = tu_page();
	injected = 0;
	atomic_store(&n_unmap, 0);
	atomic_store(&n_remap, 0);
	atomic_store(&n_remove, 0);
	atomic_store(&n_fork, 0);
	atomic_store(&order, 0);
	kept_child = NULL;
}

static void report(const char *what)
{
	/* Read by scripts/test for the README's figures. */
	printf("inject: %s: %lu injected failures, nothing lost\n", what, injected);
	fflush(stdout);
}

/* ---- open ---- */

START_TEST(open_each_alloc)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct uffd *u = NULL, *sentinel = (struct uffd *)&cfg;
	unsigned long before, calls;
	int fds, i;

	ck_assert_int_eq(uffd_probe(NULL, NULL), 0); /* the cached probe allocates nothing later */
	fds = tu_count_fds();
	before = uffd_test_calls(UFFD_FAIL_MMAP);
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	calls = uffd_test_calls(UFFD_FAIL_MMAP) - before;
	uffd_close(u);
	ck_assert_uint_ge(calls, 1);
	for (i = 1; i <= (int)calls; i++) {
		u = sentinel;
		uffd_test_fail_at(UFFD_FAIL_MMAP, i, ENOMEM);
		injected++;
		ck_assert_int_eq(uffd_open(&u, &cfg), -ENOMEM);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
		ck_assert_ptr_eq(u, sentinel); /* untouched */
		ck_assert_int_eq(tu_count_fds(), fds);
	}
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_close(u);
	ck_assert_int_eq(tu_count_fds(), fds);
	report("open");
}
END_TEST

START_TEST(adopt_each_alloc)
{
	struct uffd_config cfg = { .required = EVENTS };
	struct uffd *u = NULL;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	int fds;

	ck_assert_int_ge(fd, 0);
	fds = tu_count_fds();
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	injected++;
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), -ENOMEM);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	ck_assert_ptr_null(u);
	/* The fd is left open and its handshake undone: adopting it again negotiates. */
	ck_assert_int_eq(tu_count_fds(), fds);
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u) & EVENTS, EVENTS);
	uffd_close(u);
	ck_assert_int_eq(tu_count_fds(), fds - 1);
	report("adopt");
}
END_TEST

/* ---- register, unregister ---- */

START_TEST(register_each_alloc)
{
	struct uffd *u = tu_open(0);
	char *p = tu_map_anon(8 * PS);
	static struct snap before, after;
	unsigned long c0, calls;
	int i;

	/* A fresh context has no nodes: its first registration allocates. */
	snap_take(u, &before);
	c0 = uffd_test_calls(UFFD_FAIL_MMAP);
	ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	calls = uffd_test_calls(UFFD_FAIL_MMAP) - c0;
	ck_assert_uint_ge(calls, 1);
	ck_assert_int_eq(uffd_unregister(u, p, 8 * PS), 0);
	uffd_close(u);

	for (i = 1; i <= (int)calls; i++) {
		u = tu_open(0);
		uffd_test_fail_at(UFFD_FAIL_MMAP, i, ENOMEM);
		injected++;
		ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, p),
				 -ENOMEM);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
		/* Nothing changed, in the map or in the kernel. */
		snap_take(u, &after);
		snap_same(&before, &after);
		ck_assert_uint_eq(kernel_modes(p), 0);
		map_consistent(u);
		/* Still usable. */
		ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
		ck_assert_uint_eq(kernel_modes(p), UFFDIO_REGISTER_MODE_MISSING);
		ck_assert_int_eq(uffd_range_count(u), 1);
		uffd_close(u);
	}
	munmap(p, 8 * PS);
	report("register");
}
END_TEST

START_TEST(split_each_alloc)
{
	struct uffd *u = tu_open(0);
	char *p = tu_map_anon(8 * PS);
	static struct snap before, after;
	size_t biglen;
	char *big;

	ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	big = exhaust_nodes(u, &biglen);
	snap_take(u, &before);

	/* Unregistering the middle splits the piece: that needs a node, so it allocates. */
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	injected++;
	ck_assert_int_eq(uffd_unregister(u, p + 2 * PS, 2 * PS), -ENOMEM);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	snap_take(u, &after);
	snap_same(&before, &after);
	ck_assert_uint_eq(kernel_modes(p + 2 * PS), UFFDIO_REGISTER_MODE_MISSING);
	map_consistent(u);

	/* Registering a different mode in the middle splits too. */
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	injected++;
	ck_assert_int_eq(uffd_register(u, p + 4 * PS, PS, UFFDIO_REGISTER_MODE_MISSING, NULL),
			 -ENOMEM);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	snap_take(u, &after);
	snap_same(&before, &after);
	map_consistent(u);

	ck_assert_int_eq(uffd_unregister(u, p + 2 * PS, 2 * PS), 0);
	ck_assert_uint_eq(kernel_modes(p + 2 * PS), 0);
	ck_assert_int_eq(uffd_range_count(u), before.n + 1);
	map_consistent(u);
	uffd_close(u);
	munmap(big, biglen);
	munmap(p, 8 * PS);
	report("split");
}
END_TEST

/* ---- dispatch: layout events whose map update must allocate ---- */

static void *do_munmap(void *p)
{
	return (void *)(intptr_t)munmap(p, 2 * PS);
}

static void *do_dontneed(void *p)
{
	return (void *)(intptr_t)madvise(p, PS, MADV_DONTNEED);
}

struct mover {
	char *from, *to;
};

/* Moves pages 1-2 of a 4-page registration: the map must split it at both edges. */
static void *do_mremap(void *arg)
{
	struct mover *m = arg;
	void *r = mremap(m->from + PS, 2 * PS, 2 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, m->to + PS);

	return r == MAP_FAILED ? (void *)1 : NULL;
}

START_TEST(unmap_each_alloc)
{
	struct uffd *u = tu_open(EVENTS);
	char *p = tu_map_anon(8 * PS);
	static struct snap before, after;
	struct uffd_range r;
	size_t biglen;
	char *big;
	pthread_t t, t2;
	void *ret;
	int n = 0, tries = 0;

	uffd_on_unmap(u, cb_unmap, NULL);
	uffd_on_remove(u, cb_remove, NULL);
	ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	big = exhaust_nodes(u, &biglen);
	snap_take(u, &before);

	/* An UNMAP whose cut needs a node, then a REMOVE behind it, most likely in one read. */
	pthread_create(&t, NULL, do_munmap, p + 3 * PS);
	usleep(50 * 1000);
	pthread_create(&t2, NULL, do_dontneed, p + 6 * PS);
	usleep(50 * 1000);
	uffd_test_fail_from(UFFD_FAIL_MMAP, 1, ENOMEM);
	injected++;
	ck_assert_int_eq(uffd_dispatch(u, 5000), -ENOMEM);
	/* The read released the munmap even though the event could not be applied yet. */
	pthread_join(t, &ret);
	ck_assert_ptr_null(ret);
	ck_assert_int_eq(atomic_load(&n_unmap), 0);
	ck_assert_int_eq(atomic_load(&n_remove), 0);
	snap_take(u, &after);
	snap_same(&before, &after);
	/* Still failing: still kept. */
	ck_assert_int_eq(uffd_dispatch(u, 0), -ENOMEM);
	uffd_test_fail_from(UFFD_FAIL_MMAP, 0, 0);
	/* The next dispatch delivers it at once, without waiting; then the REMOVE, in the kernel's
	 * order (the REMOVE may not have been read yet). */
	n = uffd_dispatch(u, 0);
	ck_assert_int_ge(n, 1);
	ck_assert_int_eq(atomic_load(&n_unmap), 1);
	while (n < 2 && tries++ < 50) {
		int r2 = uffd_dispatch(u, 100);

		ck_assert_int_ge(r2, 0);
		n += r2;
	}
	pthread_join(t2, &ret);
	ck_assert_ptr_null(ret);
	ck_assert_int_eq(atomic_load(&n_unmap), 1);
	ck_assert_int_eq(atomic_load(&n_remove), 1);
	ck_assert_int_eq(atomic_load(&order), 12);
	ck_assert_int_eq(uffd_range_find(u, p + 3 * PS, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, p + 5 * PS, &r), 0);
	ck_assert_ptr_eq(r.start, p + 5 * PS);
	ck_assert_uint_eq(r.offset, 5 * PS);
	ck_assert_int_eq(uffd_range_count(u), before.n + 1);
	map_consistent(u);
	uffd_close(u);
	munmap(big, biglen);
	munmap(p, 8 * PS);
	report("unmap");
}
END_TEST

START_TEST(remap_each_alloc)
{
	struct uffd *u = tu_open(EVENTS);
	char *p = tu_map_anon(4 * PS), *dst = tu_map_anon(4 * PS);
	static struct snap before, after;
	struct uffd_range r;
	struct mover mv = { p, dst };
	size_t biglen;
	char *big;
	pthread_t t;
	void *ret;
	int n = 0, tries = 0;

	uffd_on_unmap(u, cb_unmap, NULL);
	uffd_on_remap(u, cb_remap, NULL);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	big = exhaust_nodes(u, &biglen);
	snap_take(u, &before);

	pthread_create(&t, NULL, do_mremap, &mv);
	uffd_test_fail_from(UFFD_FAIL_MMAP, 1, ENOMEM);
	injected++;
	ck_assert_int_eq(uffd_dispatch(u, 5000), -ENOMEM);
	snap_take(u, &after);
	snap_same(&before, &after);
	uffd_test_fail_from(UFFD_FAIL_MMAP, 0, 0);
	/* The REMAP already read is delivered by the next dispatch, without waiting; the UNMAP
	 * behind it may come in a later read. Both delivered, the map shows the move. */
	n = uffd_dispatch(u, 0);
	ck_assert_int_ge(n, 1);
	ck_assert_int_eq(atomic_load(&n_remap), 1);
	while (n < 2 && tries++ < 50) {
		int r2 = uffd_dispatch(u, 100);

		ck_assert_int_ge(r2, 0);
		n += r2;
	}
	pthread_join(t, &ret);
	ck_assert_ptr_null(ret);
	ck_assert_int_eq(atomic_load(&n_remap), 1);
	ck_assert_int_eq(atomic_load(&n_unmap), 1);
	ck_assert_int_eq(uffd_range_find(u, p + PS, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, p, &r), 0);
	ck_assert_int_eq(uffd_range_find(u, dst + 2 * PS, &r), 0);
	ck_assert_ptr_eq(r.start, dst + PS);
	ck_assert_ptr_eq(r.data, p);
	ck_assert_uint_eq(r.offset, PS);
	ck_assert_int_eq(uffd_range_count(u), before.n + 2);
	map_consistent(u);
	uffd_close(u);
	munmap(big, biglen);
	munmap(p, 4 * PS);
	munmap(dst, 4 * PS);
	report("remap");
}
END_TEST

/* ---- dispatch: fork children ---- */

struct forker {
	char *page;	  /* a registered, never-touched page the grandchild reads */
	pid_t pid;	  /* the forked process */
	atomic_bool done; /* fork() returned in the parent */
};

static void *fork_thread(void *arg)
{
	struct forker *f = arg;
	pid_t pid = fork();

	if (pid == 0) {
		volatile char *c = f->page;

		/* Served through the child's own context, or hung: the alarm ends it then. */
		alarm(20);
		_exit(c[0] == FILL && c[PS - 1] == FILL ? 0 : 1);
	}
	f->pid = pid;
	atomic_store(&f->done, true);
	return NULL;
}

/* Serve the forked process through @child until it exits; its status must be 0. */
static void serve_until_exit(struct uffd *child, pid_t pid)
{
	int status, i;

	for (i = 0; i < 200; i++) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		ck_assert_int_ge(w, 0);
		if (w == pid)
			break;
		ck_assert_int_ge(uffd_dispatch(child, 50), 0);
	}
	ck_assert_int_lt(i, 200);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the fork child was not served its page (status 0x%x)", status);
}

/* One fork whose child context cannot be made for the first tries: delivered later, served. */
static void fork_cycle(struct uffd *u, char *page, int fail_at, int fail_err)
{
	struct forker f = { .page = page };
	pthread_t t;
	int r;

	kept_child = NULL;
	pthread_create(&t, NULL, fork_thread, &f);
	if (fail_at) {
		uffd_test_fail_at(UFFD_FAIL_MMAP, fail_at, fail_err);
		injected++;
		r = uffd_dispatch(u, 5000);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
		ck_assert_int_eq(r, -fail_err);
		ck_assert_ptr_null(kept_child);
		ck_assert_int_eq(atomic_load(&n_fork), 0);
		map_consistent(u);
	}
	r = uffd_dispatch(u, 5000);
	ck_assert_int_eq(r, 1);
	ck_assert_int_eq(atomic_load(&n_fork), 1);
	ck_assert_ptr_nonnull(kept_child);
	pthread_join(t, NULL);
	ck_assert(atomic_load(&f.done));
	/* The child's map is the parent's. */
	ck_assert_int_eq(uffd_range_count(kept_child), uffd_range_count(u));
	serve_until_exit(kept_child, f.pid);
	uffd_close(kept_child);
	kept_child = NULL;
	atomic_store(&n_fork, 0);
}

START_TEST(fork_each_alloc)
{
	struct uffd *u = tu_open(EVENTS | UFFD_FEATURE_EVENT_FORK);
	char *p = tu_map_anon(4 * PS);
	unsigned long c0, calls;
	int i, fds;

	uffd_on_pagefault(u, serve_fill, NULL);
	uffd_on_fork(u, cb_fork_keep, NULL);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	fds = tu_count_fds();
	c0 = uffd_test_calls(UFFD_FAIL_MMAP);
	fork_cycle(u, p + PS, 0, 0);
	calls = uffd_test_calls(UFFD_FAIL_MMAP) - c0;
	ck_assert_uint_ge(calls, 2); /* the child context, and its map's nodes */
	for (i = 1; i <= (int)calls; i++)
		fork_cycle(u, p + PS, i, ENOMEM);
	ck_assert_int_eq(tu_count_fds(), fds);
	uffd_close(u);
	munmap(p, 4 * PS);
	report("fork");
}
END_TEST

START_TEST(fork_emfile)
{
	struct uffd *u = tu_open(EVENTS | UFFD_FEATURE_EVENT_FORK);
	char *p = tu_map_anon(4 * PS);
	struct forker f = { .page = p + 2 * PS };
	struct rlimit old, low;
	pthread_t t;
	int fd, r;

	uffd_on_pagefault(u, serve_fill, NULL);
	uffd_on_fork(u, cb_fork_keep, NULL);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	/* No fd may be made: the lowest free one is at the limit. */
	fd = dup(0);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)fd;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);

	pthread_create(&t, NULL, fork_thread, &f);
	r = uffd_dispatch(u, 5000);
	injected++;
	ck_assert_int_eq(r, -EMFILE);
	ck_assert_int_eq(uffd_dispatch(u, 100), -EMFILE);
	/* The kernel kept the event, so fork() is still blocked. */
	usleep(100 * 1000);
	ck_assert(!atomic_load(&f.done));
	ck_assert_int_eq(atomic_load(&n_fork), 0);

	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_int_eq(uffd_dispatch(u, 5000), 1);
	ck_assert_int_eq(atomic_load(&n_fork), 1);
	ck_assert_ptr_nonnull(kept_child);
	pthread_join(t, NULL);
	serve_until_exit(kept_child, f.pid);
	uffd_close(kept_child);
	uffd_close(u);
	munmap(p, 4 * PS);
	report("emfile");
}
END_TEST

/* ---- EINTR ---- */

static void *toucher(void *p)
{
	volatile char *c = p;

	return (void *)(intptr_t)c[0];
}

static void on_usr1(int sig)
{
	(void)sig;
}

struct kicker {
	pthread_t target;
	unsigned delay_ms;
};

static void *kick(void *arg)
{
	struct kicker *k = arg;

	usleep(k->delay_ms * 1000u);
	pthread_kill(k->target, SIGUSR1);
	return NULL;
}

START_TEST(eintr_poll_read)
{
	struct uffd *u = tu_open(EVENTS);
	char *p = tu_map_anon(4 * PS);
	struct uffd_event ev[4];
	struct sigaction sa = { .sa_handler = on_usr1 }; /* no SA_RESTART: poll() sees EINTR */
	struct kicker k = { pthread_self(), 100 };
	struct timespec t0, t1;
	struct uffd_stats st;
	pthread_t t, tk;
	void *v;

	uffd_on_pagefault(u, serve_fill, NULL);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);

	/* Injected, nothing pending. */
	uffd_test_fail_at(UFFD_FAIL_POLL, 1, EINTR);
	injected++;
	ck_assert_int_eq(uffd_dispatch(u, 1000), -EINTR);
	uffd_test_fail_at(UFFD_FAIL_POLL, 1, EINTR);
	injected++;
	ck_assert_int_eq(uffd_read_events(u, ev, 4, 1000), -EINTR);

	/* A real signal interrupts a dispatch that would wait for ever. */
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
	pthread_create(&tk, NULL, kick, &k);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(uffd_dispatch(u, -1), -EINTR);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	injected++;
	pthread_join(tk, NULL);
	ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 5);

	/* A fault pending while read() is interrupted is still there afterwards. */
	pthread_create(&t, NULL, toucher, p + PS);
	usleep(100 * 1000);
	uffd_test_fail_at(UFFD_FAIL_READ, 1, EINTR);
	injected++;
	ck_assert_int_eq(uffd_dispatch(u, 0), -EINTR);
	uffd_test_fail_at(UFFD_FAIL_READ, 1, EINTR);
	injected++;
	ck_assert_int_eq(uffd_read_events(u, ev, 4, 0), -EINTR);
	ck_assert_int_eq(uffd_dispatch(u, 1000), 1);
	pthread_join(t, &v);
	ck_assert_int_eq((int)(intptr_t)v, FILL);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.faults, 1);
	uffd_close(u);
	munmap(p, 4 * PS);
	report("eintr");
}
END_TEST

/* ---- monitor ---- */

START_TEST(monitor_new_each_alloc)
{
	struct uffd_monitor *m = NULL, *sentinel = (struct uffd_monitor *)&m;
	int calls, i, fds = tu_count_fds();

	w_begin(0);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	calls = w_end();
	uffd_monitor_free(m);
	ck_assert_int_ge(calls, 6); /* calloc, mmap, epoll, eventfd, timerfd, two epoll_ctl */
	for (i = 1; i <= calls; i++) {
		m = sentinel;
		w_begin(i);
		ck_assert_int_eq(uffd_monitor_new(&m), -ENOMEM);
		w_end();
		ck_assert_ptr_eq(m, sentinel);
		ck_assert_int_eq(tu_count_fds(), fds);
	}
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	uffd_monitor_free(m);
	ck_assert_int_eq(tu_count_fds(), fds);
	report("monitor_new");
}
END_TEST

START_TEST(monitor_add_watch_each_alloc)
{
	struct uffd_monitor *m = NULL;
	struct uffd *u = tu_open(0);
	int calls, i, fds;

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	w_begin(0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	calls = w_end();
	ck_assert_int_ge(calls, 1);
	uffd_monitor_free(m); /* closes u */

	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	u = tu_open(0);
	for (i = 1; i <= calls; i++) {
		w_begin(i);
		ck_assert_int_eq(uffd_monitor_add(m, u), -ENOMEM);
		w_end();
		/* Ownership stayed here; the monitor has nothing. */
		ck_assert_int_eq(uffd_monitor_count(m), 0);
		ck_assert_ptr_null(u->mon);
	}
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	ck_assert_int_eq(uffd_monitor_count(m), 1);

	fds = tu_count_fds();
	w_begin(0);
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), 0);
	calls = w_end();
	ck_assert_int_eq(tu_count_fds(), fds + 1);
	ck_assert_int_ge(calls, 2); /* the pidfd and its epoll entry */
	/* Replace the watch while each step fails: the old one is then gone, nothing leaks. */
	for (i = 1; i <= calls; i++) {
		w_begin(i);
		ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), -ENOMEM);
		w_end();
		ck_assert_int_le(tu_count_fds(), fds + 1);
	}
	ck_assert_int_eq(uffd_monitor_watch_pid(m, u, getpid()), 0);
	ck_assert_int_eq(tu_count_fds(), fds + 1);
	ck_assert_int_eq(uffd_monitor_run(m, 0), 0);
	uffd_monitor_free(m);
	report("monitor_add");
}
END_TEST

/* Run the monitor until the forked process has exited and its context is gone. */
static void monitor_serve_until_exit(struct uffd_monitor *m, pid_t pid)
{
	int status = 0, i;
	bool exited = false;

	for (i = 0; i < 100 && !(exited && uffd_monitor_count(m) == 1); i++) {
		if (!exited) {
			pid_t w = waitpid(pid, &status, WNOHANG);

			ck_assert_int_ge(w, 0);
			exited = w == pid;
		}
		ck_assert_int_ge(uffd_monitor_run(m, 100), 0);
	}
	ck_assert_msg(exited, "the fork child did not finish");
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the fork child was not served its page (status 0x%x)", status);
	ck_assert_int_eq(uffd_monitor_count(m), 1); /* its context was closed after its exit */
}

START_TEST(monitor_fork_each_alloc)
{
	struct uffd_monitor *m = NULL;
	struct uffd *u = tu_open(EVENTS | UFFD_FEATURE_EVENT_FORK);
	char *p = tu_map_anon(4 * PS);
	struct forker f;
	pthread_t t;
	int calls, i, r, fds;

	uffd_on_pagefault(u, serve_fill, NULL);
	uffd_on_fork(u, cb_fork_keep, NULL);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, p), 0);
	ck_assert_int_eq(uffd_monitor_new(&m), 0);
	ck_assert_int_eq(uffd_monitor_add(m, u), 0);
	fds = tu_count_fds();

	/* How many allocations a fork makes in the monitor: child context, nodes, epoll entry. */
	memset(&f, 0, sizeof(f));
	f.page = p + PS;
	pthread_create(&t, NULL, fork_thread, &f);
	w_begin(0);
	for (i = 0; i < 50 && atomic_load(&n_fork) == 0; i++)
		ck_assert_int_ge(uffd_monitor_run(m, 100), 0);
	calls = w_end();
	pthread_join(t, NULL);
	monitor_serve_until_exit(m, f.pid);
	ck_assert_int_ge(calls, 3);

	for (i = 1; i <= calls; i++) {
		memset(&f, 0, sizeof(f));
		f.page = p + PS;
		atomic_store(&n_fork, 0);
		pthread_create(&t, NULL, fork_thread, &f);
		w_begin(i);
		r = uffd_monitor_run(m, 5000);
		w_end();
		ck_assert_int_eq(r, -ENOMEM);
		pthread_join(t, NULL);
		/* Nothing was lost: the next run delivers the FORK without waiting, and the runs
		 * after it serve the child through its own context. */
		r = uffd_monitor_run(m, 0);
		ck_assert_int_ge(r, 1);
		ck_assert_int_eq(atomic_load(&n_fork), 1);
		monitor_serve_until_exit(m, f.pid);
		ck_assert_int_eq(atomic_load(&n_fork), 1);
	}
	ck_assert_int_eq(tu_count_fds(), fds);
	uffd_monitor_free(m);
	munmap(p, 4 * PS);
	report("monitor_fork");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("inject");
	TCase *op = tu_tcase("open", 30, setup, NULL), *rg = tu_tcase("register", 30, setup, NULL),
	      *dp = tu_tcase("dispatch", 60, setup, NULL),
	      *mo = tu_tcase("monitor", 60, setup, NULL);
	struct uffd_config cfg = { .required = EVENTS | UFFD_FEATURE_EVENT_FORK };

	tu_require_uffd(&cfg, "FORK/UNMAP/REMAP/REMOVE events");

	tcase_add_test(op, open_each_alloc);
	tcase_add_test(op, adopt_each_alloc);
	tcase_add_test(rg, register_each_alloc);
	tcase_add_test(rg, split_each_alloc);
	tcase_add_test(dp, unmap_each_alloc);
	tcase_add_test(dp, remap_each_alloc);
	tcase_add_test(dp, eintr_poll_read);
	tcase_add_test(mo, monitor_new_each_alloc);
	tcase_add_test(mo, monitor_add_watch_each_alloc);
	if (!UNDER_TSAN) {
		tcase_add_test(dp, fork_each_alloc);
		tcase_add_test(dp, fork_emfile);
		tcase_add_test(mo, monitor_fork_each_alloc);
	} else {
		printf("inject: under TSan the same-process fork cases do not run (see the source)\n");
	}
	suite_add_tcase(s, op);
	suite_add_tcase(s, rg);
	suite_add_tcase(s, dp);
	suite_add_tcase(s, mo);
	return tu_run(s);
}
