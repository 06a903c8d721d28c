/* SPDX-License-Identifier: MIT */
/*
 * prep, exactly: what one batch of layout events does to the range map, the duplicate drop, the
 * dispatcher's range cache, and the fd of a FORK that prep could not finish. Black-box through
 * uffd.h, with the real kernel making every message; the fault-injection hook of uffd_testing
 * only where an allocation must fail. Several events are put into one batch by leaving the
 * threads that cause them blocked (each waits until its event is read) before dispatching.
 * tests/mutants/ holds the mutations of src/ that these cases must kill.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

/* The library's own hooks (src/sys.c), reachable through the static library only. */
void uffd_test_fail_at(int site, int nth, int err);
#define FAIL_MMAP 0    /* UFFD_FAIL_MMAP */
#define FAIL_CORRUPT 3 /* UFFD_FAIL_CORRUPT: the faults of one read become undecodable */

#define MAXREC 16

static size_t PS;

/* ---- what the callbacks saw ---- */

struct span_rec {
	enum uffd_event_kind kind;
	void *start, *end;
};

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct span_rec spans[MAXREC];
static int nspans;
static struct uffd_pagefault faults[MAXREC];
static int nfaults;

static void rec_span(enum uffd_event_kind kind, const struct uffd_span *s)
{
	pthread_mutex_lock(&rec_lock);
	if (nspans < MAXREC)
		spans[nspans++] = (struct span_rec){ kind, s->start, s->end };
	pthread_mutex_unlock(&rec_lock);
}

static int cb_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u, (void)arg;
	rec_span(UFFD_EVT_UNMAP, s);
	return 0;
}

static int cb_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u, (void)arg;
	rec_span(UFFD_EVT_REMOVE, s);
	return 0;
}

/* Records the fault (its range above all), then resolves it with a zero page. */
static int cb_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	uintptr_t a = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);

	(void)arg;
	pthread_mutex_lock(&rec_lock);
	if (nfaults < MAXREC)
		faults[nfaults++] = *pf;
	pthread_mutex_unlock(&rec_lock);
	return uffd_zeropage(u, (void *)a, PS, 0);
}

static int count_kind(enum uffd_event_kind kind)
{
	int i, n = 0;

	for (i = 0; i < nspans; i++)
		n += spans[i].kind == kind;
	return n;
}

static void setup(void)
{
	PS = tu_page();
	nspans = 0;
	nfaults = 0;
}

static struct uffd *open_with(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u = NULL;
	int r = uffd_open(&u, &cfg);

	if (r == -EOPNOTSUPP || r == -EPERM || r == -ENOSYS)
		tu_skip("cannot open a userfaultfd with the events this test needs: %s",
			uffd_strerror(r));
	ck_assert_int_eq(r, 0);
	uffd_on_unmap(u, cb_unmap, NULL);
	uffd_on_remove(u, cb_remove, NULL);
	uffd_on_pagefault(u, cb_fault, NULL);
	return u;
}

static void expect_range(const struct uffd_range *r, void *start, void *end, void *data,
			 size_t offset)
{
	ck_assert_ptr_eq(r->start, start);
	ck_assert_ptr_eq(r->end, end);
	ck_assert_ptr_eq(r->data, data);
	ck_assert_uint_eq(r->offset, offset);
}

/* ---- a thread that makes one event (or fault), and waits for it to be read ---- */

enum op_kind { OP_MUNMAP, OP_MADV_DONTNEED, OP_MREMAP, OP_TOUCH };

struct op {
	pthread_t t;
	enum op_kind kind;
	char *addr, *to;
	size_t len;
	_Atomic pid_t tid;
	_Atomic bool done;
	long ret;
};

static void *op_main(void *arg)
{
	struct op *o = arg;

	atomic_store(&o->tid, (pid_t)syscall(SYS_gettid));
	switch (o->kind) {
	case OP_MUNMAP:
		o->ret = munmap(o->addr, o->len);
		break;
	case OP_MADV_DONTNEED:
		o->ret = madvise(o->addr, o->len, MADV_DONTNEED);
		break;
	case OP_MREMAP:
		o->ret = mremap(o->addr, o->len, o->len, MREMAP_MAYMOVE | MREMAP_FIXED, o->to) ==
					 o->to ?
				 0 :
				 -1;
		break;
	case OP_TOUCH:
		o->ret = *(volatile char *)o->addr;
		break;
	}
	atomic_store(&o->done, true);
	return NULL;
}

static void op_start(struct op *o, enum op_kind kind, void *addr, size_t len, void *to)
{
	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->addr = addr;
	o->len = len;
	o->to = to;
	ck_assert_int_eq(pthread_create(&o->t, NULL, op_main, o), 0);
}

/*
 * Wait (up to 5 s) until the thread sleeps in the kernel's userfaultfd code: its event (or
 * fault) is then queued on the fd, unread. /proc/self/task/TID/wchan names the function it
 * sleeps in (handle_userfault, userfaultfd_unmap_complete, userfaultfd_remove, ...).
 */
static void op_wait_queued(struct op *o)
{
	double end = tu_now() + 5;
	char path[64], buf[128];

	while (atomic_load(&o->tid) == 0 && tu_now() < end)
		tu_sleep_ms(1);
	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", (int)atomic_load(&o->tid));
	while (tu_now() < end) {
		FILE *f = fopen(path, "r");
		size_t n = 0;

		ck_assert_msg(!atomic_load(&o->done), "the operation did not wait for its event");
		if (f) {
			n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
		}
		buf[n] = 0;
		if (strstr(buf, "userfault"))
			return;
		tu_sleep_ms(1);
	}
	ck_abort_msg("the operation's event was never queued (wchan: %s)", buf);
}

static void op_join(struct op *o)
{
	ck_assert_int_eq(pthread_join(o->t, NULL), 0);
	ck_assert(atomic_load(&o->done));
}

/* Dispatch until @o's operation returned (it waits for its events to be read), then join. */
static void dispatch_until_done(struct uffd *u, struct op *o)
{
	double end = tu_now() + 5;

	while (!atomic_load(&o->done) && tu_now() < end)
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
	op_join(o);
	ck_assert_int_eq(o->ret, 0);
}

/* The number of read() calls the context made that returned messages. */
static uint64_t reads_of(struct uffd *u)
{
	struct uffd_stats st;

	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	return st.reads;
}

/* A fresh anonymous mapping at exactly @addr (which is free), or fail. */
static void map_at(void *addr, size_t len)
{
	void *q = mmap(addr, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	ck_assert_ptr_eq(q, addr);
}

/* ---- 1. the fd of a FORK whose child context could not be made ---- */

/*
 * The monitored process: open a userfaultfd with EVENT_FORK, register one page, hand the fd to
 * the test, then on its word fork. The fork child reads the page: served by nobody, it returns
 * only once the child's userfaultfd is closed (then it reads a zero page, as unmonitored).
 */
static __attribute__((noreturn)) void forking_process(int sock)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_FORK };
	struct uffd *u;
	char *p, go;
	pid_t g;
	int st;

	if (uffd_open(&u, &cfg))
		_exit(10);
	p = mmap(NULL, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || uffd_register(u, p, PS, UFFDIO_REGISTER_MODE_MISSING, NULL))
		_exit(11);
	if (tu_send_fd(sock, uffd_fd(u), "u", 1))
		_exit(12);
	uffd_close(u); /* the test's copy keeps the registration */
	if (read(sock, &go, 1) != 1)
		_exit(13);
	g = fork(); /* held until the monitor reads the FORK event */
	if (g == 0) {
		alarm(20);
		_exit(*(volatile char *)p == 0 ? 0 : 1);
	}
	if (g < 0 || waitpid(g, &st, 0) != g)
		_exit(14);
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 15);
}

START_TEST(fork_enomem_close_closes_fd)
{
	struct uffd_config probe_cfg = { .required = UFFD_FEATURE_EVENT_FORK };
	struct uffd *u = NULL;
	struct uffd_stats st;
	int sv[2], fd = -1, base, queued, after, status;
	char b;
	pid_t pid;

	tu_require_uffd(&probe_cfg, "EVENT_FORK");
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	base = tu_count_fds();
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		forking_process(sv[1]);
	}
	close(sv[1]);
	base--;
	ck_assert_int_eq(tu_recv_fd(sv[0], &fd, &b, 1), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert(uffd_features(u) & UFFD_FEATURE_EVENT_FORK);

	/* The child context's first allocation fails: the FORK stays queued with its fd. */
	uffd_test_fail_at(FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(write(sv[0], "g", 1), 1);
	ck_assert_int_eq(uffd_dispatch(u, 5000), -ENOMEM);
	uffd_test_fail_at(FAIL_MMAP, 0, 0);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.forks, 1);
	queued = tu_count_fds();
	uffd_close(u);
	after = tu_count_fds();
	/* The adopted fd and the queued FORK's fd were open; closing the context closed both. */
	ck_assert_int_eq(queued, base + 2);
	ck_assert_int_eq(after, base);
	/* With the child's fd closed, the fork child runs unmonitored and reads a zero page. */
	status = tu_wait_child(pid, 10000);
	close(sv[0]);
	ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the forking process did not finish (status 0x%x)", status);
}
END_TEST

/* ---- 2. a REMAP that starts inside a registered piece keeps its offset ---- */

static void remap_from_middle(uint64_t features)
{
	struct uffd *u = open_with(features);
	char *p = tu_map_anon(8 * PS), *dst = tu_map_anon(2 * PS), *dst2 = tu_map_anon(PS);
	void *data = (void *)0xd1;
	struct uffd_range r;
	struct op o, t;

	ck_assert_int_eq(uffd_register(u, p, 8 * PS, UFFDIO_REGISTER_MODE_MISSING, data), 0);
	/* Pages 2 and 3 move away: at dst they are bytes 2 * PS on of the registration. */
	op_start(&o, OP_MREMAP, p + 2 * PS, 2 * PS, dst);
	dispatch_until_done(u, &o);
	ck_assert_int_eq(uffd_range_find(u, dst, &r), 0);
	expect_range(&r, dst, dst + 2 * PS, data, 2 * PS);
	ck_assert_int_eq(uffd_range_find(u, dst + PS, &r), 0);
	expect_range(&r, dst, dst + 2 * PS, data, 2 * PS);
	ck_assert_int_eq(uffd_range_find(u, p + 2 * PS, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, p, &r), 0);
	expect_range(&r, p, p + 2 * PS, data, 0);
	ck_assert_int_eq(uffd_range_find(u, p + 5 * PS, &r), 0);
	expect_range(&r, p + 4 * PS, p + 8 * PS, data, 4 * PS);

	/* Again from the middle of the moved piece, whose own offset is not 0. */
	op_start(&o, OP_MREMAP, dst + PS, PS, dst2);
	dispatch_until_done(u, &o);
	ck_assert_int_eq(uffd_range_find(u, dst2, &r), 0);
	expect_range(&r, dst2, dst2 + PS, data, 3 * PS);
	ck_assert_int_eq(uffd_range_find(u, dst, &r), 0);
	expect_range(&r, dst, dst + PS, data, 2 * PS);

	/* A fault at each new place carries the piece. */
	op_start(&t, OP_TOUCH, dst, 1, NULL);
	dispatch_until_done(u, &t);
	op_start(&t, OP_TOUCH, dst2, 1, NULL);
	dispatch_until_done(u, &t);
	ck_assert_int_eq(nfaults, 2);
	ck_assert_ptr_eq(faults[0].address, dst);
	expect_range(&faults[0].range, dst, dst + PS, data, 2 * PS);
	ck_assert_ptr_eq(faults[1].address, dst2);
	expect_range(&faults[1].range, dst2, dst2 + PS, data, 3 * PS);

	uffd_close(u); /* first: an unmap of registered memory waits for its event */
	munmap(p, 8 * PS);
	munmap(dst, 2 * PS);
	munmap(dst2, PS);
}

START_TEST(remap_middle_offset_with_unmap)
{
	remap_from_middle(UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP);
}
END_TEST

START_TEST(remap_middle_offset_without_unmap)
{
	remap_from_middle(UFFD_FEATURE_EVENT_REMAP);
}
END_TEST

/* ---- 3. the duplicate drop: exact UNMAP duplicates only ---- */

/*
 * Three munmaps of registered memory at the same address, each waiting for its event, read in
 * one batch: UNMAP [p, p+4), UNMAP [p, p+4) again (dropped), UNMAP [p, p+2) (kept: another end).
 * Between them the range is mapped and registered again straight with the kernel.
 */
START_TEST(unmap_duplicates_in_one_batch)
{
	struct uffd *u = open_with(UFFD_FEATURE_EVENT_UNMAP);
	char *p = tu_map_anon(4 * PS);
	struct op a, b, c;
	uint64_t reads;
	int handled;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	op_start(&a, OP_MUNMAP, p, 4 * PS, NULL);
	op_wait_queued(&a);
	map_at(p, 4 * PS);
	tu_kernel_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING);
	op_start(&b, OP_MUNMAP, p, 4 * PS, NULL);
	op_wait_queued(&b);
	map_at(p, 4 * PS);
	tu_kernel_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING);
	op_start(&c, OP_MUNMAP, p, 2 * PS, NULL);
	op_wait_queued(&c);

	reads = reads_of(u);
	handled = uffd_dispatch(u, 1000);
	ck_assert_uint_eq(reads_of(u), reads + 1); /* all three in one read */
	ck_assert_int_eq(handled, 3);		   /* two delivered, the duplicate dropped */
	op_join(&a);
	op_join(&b);
	op_join(&c);
	ck_assert_int_eq(nspans, 2);
	ck_assert_int_eq(spans[0].kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(spans[0].start, p);
	ck_assert_ptr_eq(spans[0].end, p + 4 * PS);
	ck_assert_int_eq(spans[1].kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(spans[1].start, p);
	ck_assert_ptr_eq(spans[1].end, p + 2 * PS);
	ck_assert_int_eq(uffd_range_count(u), 0);
	uffd_close(u);
	munmap(p + 2 * PS, 2 * PS);
}
END_TEST

/* Two munmaps of the same span in two batches are two events: the drop is per batch. */
START_TEST(unmap_same_span_two_batches)
{
	struct uffd *u = open_with(UFFD_FEATURE_EVENT_UNMAP);
	char *p = tu_map_anon(4 * PS);
	struct op a;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	op_start(&a, OP_MUNMAP, p, 4 * PS, NULL);
	dispatch_until_done(u, &a);
	map_at(p, 4 * PS);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	op_start(&a, OP_MUNMAP, p, 4 * PS, NULL);
	dispatch_until_done(u, &a);
	ck_assert_int_eq(count_kind(UFFD_EVT_UNMAP), 2);
	ck_assert_int_eq(uffd_range_count(u), 0);
	uffd_close(u);
}
END_TEST

/* Two madvise(DONTNEED) of the same span, read in one batch: two REMOVEs, both delivered. */
START_TEST(remove_repeated_in_one_batch)
{
	struct uffd *u = open_with(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP);
	char *p = tu_map_anon(4 * PS);
	struct op a, b;
	uint64_t reads;
	int i;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	op_start(&a, OP_MADV_DONTNEED, p, 4 * PS, NULL);
	op_wait_queued(&a);
	op_start(&b, OP_MADV_DONTNEED, p, 4 * PS, NULL);
	op_wait_queued(&b);
	reads = reads_of(u);
	ck_assert_int_eq(uffd_dispatch(u, 1000), 2);
	ck_assert_uint_eq(reads_of(u), reads + 1);
	op_join(&a);
	op_join(&b);
	ck_assert_int_eq(a.ret, 0);
	ck_assert_int_eq(b.ret, 0);
	ck_assert_int_eq(nspans, 2);
	for (i = 0; i < 2; i++) {
		ck_assert_int_eq(spans[i].kind, UFFD_EVT_REMOVE);
		ck_assert_ptr_eq(spans[i].start, p);
		ck_assert_ptr_eq(spans[i].end, p + 4 * PS);
	}
	ck_assert_int_eq(uffd_range_count(u), 1); /* REMOVE keeps the registration */
	uffd_close(u);
	munmap(p, 4 * PS);
}
END_TEST

/* ---- 4. the dispatcher's range cache ---- */

/* Serve one fault at @addr in its own batch; returns the range it carried. */
static struct uffd_range fault_once(struct uffd *u, void *addr)
{
	struct op t;
	int before = nfaults;

	op_start(&t, OP_TOUCH, addr, 1, NULL);
	op_wait_queued(&t);
	dispatch_until_done(u, &t);
	ck_assert_int_eq(nfaults, before + 1);
	ck_assert_ptr_eq(faults[before].address, addr);
	return faults[before].range;
}

/* Piece A was cached; A is unmapped; the kernel alone registers its addresses again. */
START_TEST(cache_after_unmap)
{
	struct uffd *u = open_with(UFFD_FEATURE_EVENT_UNMAP);
	char *p = tu_map_anon(4 * PS);
	void *da = (void *)0xa;
	struct uffd_range r;
	struct op o;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, da), 0);
	r = fault_once(u, p);
	expect_range(&r, p, p + 4 * PS, da, 0);
	op_start(&o, OP_MUNMAP, p, 4 * PS, NULL);
	dispatch_until_done(u, &o);
	map_at(p, 4 * PS);
	tu_kernel_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING);
	/* The map knows no piece there: the fault's range is all zero. */
	r = fault_once(u, p + PS);
	expect_range(&r, NULL, NULL, NULL, 0);
	uffd_close(u);
	munmap(p, 4 * PS);
}
END_TEST

/* Piece A was cached; B is moved onto A's addresses (REMAP, UNMAPs): faults there are B's. */
START_TEST(cache_after_remap)
{
	struct uffd *u = open_with(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP);
	char *p = tu_map_anon(4 * PS), *q = tu_map_anon(4 * PS);
	void *da = (void *)0xa, *db = (void *)0xb;
	struct uffd_range r;
	struct op o;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, da), 0);
	ck_assert_int_eq(uffd_register(u, q, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, db), 0);
	r = fault_once(u, p);
	expect_range(&r, p, p + 4 * PS, da, 0);
	op_start(&o, OP_MREMAP, q, 4 * PS, p);
	dispatch_until_done(u, &o);
	r = fault_once(u, p + PS);
	expect_range(&r, p, p + 4 * PS, db, 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	uffd_close(u);
	munmap(p, 4 * PS);
}
END_TEST

/* Pieces A = [p, p+4) and C = [p+4, p+8), A cached: a fault at A's end is C's. */
START_TEST(cache_edge_two_batches)
{
	struct uffd *u = open_with(0);
	char *p = tu_map_anon(8 * PS);
	void *da = (void *)0xa, *dc = (void *)0xc;
	struct uffd_range r;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, da), 0);
	ck_assert_int_eq(uffd_register(u, p + 4 * PS, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, dc), 0);
	r = fault_once(u, p + 3 * PS);
	expect_range(&r, p, p + 4 * PS, da, 0);
	r = fault_once(u, p + 4 * PS);
	expect_range(&r, p + 4 * PS, p + 8 * PS, dc, 0);
	uffd_close(u);
	munmap(p, 8 * PS);
}
END_TEST

/* The same, both faults in one batch. */
START_TEST(cache_edge_one_batch)
{
	struct uffd *u = open_with(0);
	char *p = tu_map_anon(8 * PS);
	void *da = (void *)0xa, *dc = (void *)0xc;
	struct op a, c;
	uint64_t reads;

	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, da), 0);
	ck_assert_int_eq(uffd_register(u, p + 4 * PS, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, dc), 0);
	op_start(&a, OP_TOUCH, p + 3 * PS, 1, NULL);
	op_wait_queued(&a);
	op_start(&c, OP_TOUCH, p + 4 * PS, 1, NULL);
	op_wait_queued(&c);
	reads = reads_of(u);
	ck_assert_int_eq(uffd_dispatch(u, 1000), 2);
	ck_assert_uint_eq(reads_of(u), reads + 1);
	op_join(&a);
	op_join(&c);
	ck_assert_int_eq(nfaults, 2);
	/* Faults are read in the order they were raised. */
	ck_assert_ptr_eq(faults[0].address, p + 3 * PS);
	expect_range(&faults[0].range, p, p + 4 * PS, da, 0);
	ck_assert_ptr_eq(faults[1].address, p + 4 * PS);
	expect_range(&faults[1].range, p + 4 * PS, p + 8 * PS, dc, 0);
	uffd_close(u);
	munmap(p, 8 * PS);
}
END_TEST

/* ---- undecodable faults are woken (review finding 11) ---- */

/*
 * A fault the library cannot decode (here: a thread id above INT_MAX, as a 64-bit process's
 * address would be for a 32-bit monitor) is counted as unknown and woken by its raw address: its
 * thread faults again, and the next dispatch serves it. Without the wake it stays blocked.
 */
static void undecodable_fault_woken(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	bool prep = features != 0;
	struct uffd *u;
	struct uffd_stats st;
	struct op t, d;
	char *p = tu_map_anon(2 * PS);
	double end;
	int n;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_int_eq(uffd_register(u, p, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	op_start(&t, OP_TOUCH, p, 1, NULL);
	op_wait_queued(&t);
	if (prep) {
		/* A REMOVE in the same read sends the batch through prep, not the fast path. */
		op_start(&d, OP_MADV_DONTNEED, p + PS, PS, NULL);
		op_wait_queued(&d);
	}
	uffd_test_fail_at(FAIL_CORRUPT, 1, 1);
	n = uffd_dispatch(u, 2000);
	uffd_test_fail_at(FAIL_CORRUPT, 0, 0);
	ck_assert_int_eq(n, prep ? 2 : 1); /* the fault handled: counted as unknown, woken */
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.unknown, 1);
	ck_assert_uint_ge(st.faults_woken, 1);
	if (prep) {
		ck_assert_uint_eq(st.removes, 1);
		op_join(&d);
	}
	/* The woken thread faults again; this time the fault is served (the default: zero). */
	end = tu_now() + 5;
	while (!atomic_load(&t.done) && tu_now() < end)
		ck_assert_int_ge(uffd_dispatch(u, 100), 0);
	ck_assert_msg(atomic_load(&t.done), "the thread of an undecodable fault was left blocked");
	op_join(&t);
	ck_assert_int_eq(t.ret, 0);
	uffd_close(u);
	munmap(p, 2 * PS);
}

START_TEST(undecodable_fault_woken_fast_path)
{
	undecodable_fault_woken(0);
}
END_TEST

START_TEST(undecodable_fault_woken_in_prep)
{
	undecodable_fault_woken(UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE);
}
END_TEST

/* ---- on_remap sees the move (review finding 1) ---- */

struct remap_seen {
	int calls, from_found, to_found;
	struct uffd_range to;
};

static int cb_remap_look(struct uffd *u, const struct uffd_remap *r, void *arg)
{
	struct remap_seen *rs = arg;
	struct uffd_range x;

	rs->calls++;
	rs->from_found = uffd_range_find(u, r->from, &x) == 0;
	rs->to_found = uffd_range_find(u, r->to, &rs->to) == 0;
	return 0;
}

/* Whatever the features, the map already shows the move when on_remap runs, and the UNMAP of
 * the old range that follows a real move changes nothing more. */
static void remap_seen_moved(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct remap_seen rs = { 0 };
	struct uffd *u;
	char *p = tu_map_anon(4 * PS), *dst = tu_map_anon(4 * PS);
	int data;
	struct op o;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_on_remap(u, cb_remap_look, &rs);
	ck_assert_int_eq(uffd_register(u, p, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, &data), 0);
	op_start(&o, OP_MREMAP, p, 4 * PS, dst);
	dispatch_until_done(u, &o);
	ck_assert_int_eq((int)o.ret, 0);
	ck_assert_int_eq(rs.calls, 1);
	ck_assert_int_eq(rs.from_found, 0);
	ck_assert_int_eq(rs.to_found, 1);
	ck_assert_ptr_eq(rs.to.start, dst);
	ck_assert_ptr_eq(rs.to.end, dst + 4 * PS);
	ck_assert_ptr_eq(rs.to.data, &data);
	ck_assert_int_eq(uffd_range_count(u), 1);
	uffd_close(u);
	munmap(dst, 4 * PS);
}

START_TEST(on_remap_sees_move_with_unmap)
{
	remap_seen_moved(UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP);
}
END_TEST

START_TEST(on_remap_sees_move_without_unmap)
{
	remap_seen_moved(UFFD_FEATURE_EVENT_REMAP);
}
END_TEST

/* ---- 7. a fault and a REMOVE of its page: the fault's callback runs after on_remove ---- */

/*
 * The callbacks of a monitor that serves old contents ("the image") unless the page was
 * discarded, as a restorer does. A fault callback that runs once the REMOVE was read (its sender
 * then discards the page) but before on_remove ran would fill the discarded page with the image
 * again: each call records whether on_remove had run.
 */
static struct {
	struct uffd *u;
	char *page;
	_Atomic bool removed, read_remove;
	atomic_int calls, early, retries_before_remove; /* early: calls before on_remove */
} DC;

static int dc_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u, (void)arg;
	if ((char *)s->start <= DC.page && DC.page < (char *)s->end)
		atomic_store(&DC.removed, true);
	rec_span(UFFD_EVT_REMOVE, s);
	return 0;
}

static int dc_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char img[65536];
	int n = atomic_fetch_add(&DC.calls, 1);
	bool removed = atomic_load(&DC.removed);

	(void)arg;
	if (!removed)
		atomic_fetch_add(&DC.early, 1);
	if (!removed && n > 0)
		atomic_fetch_add(&DC.retries_before_remove, 1);
	memset(img, removed ? 0 : 0x5a, PS);
	return uffd_copy(u, (void *)((uintptr_t)pf->address & ~(uintptr_t)(PS - 1)), img, PS, 0);
}

static struct uffd *dc_open(unsigned batch)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_REMOVE, .batch = batch };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	memset(&DC, 0, sizeof(DC));
	DC.u = u;
	DC.page = tu_map_anon(2 * PS);
	ck_assert_int_eq(uffd_register(u, DC.page, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	uffd_on_remove(u, dc_remove, NULL);
	uffd_on_pagefault(u, dc_fault, NULL);
	return u;
}

/* Both threads done: the toucher read a zero page, and the page holds zeros (no fault now). */
static void dc_finish(struct uffd *u, struct op *touch, struct op *drop)
{
	double end = tu_now() + 5;

	while ((!atomic_load(&touch->done) || !atomic_load(&drop->done)) && tu_now() < end)
		ck_assert_int_ge(uffd_dispatch(u, 20), 0);
	op_join(touch);
	op_join(drop);
	ck_assert_int_eq(drop->ret, 0);
	ck_assert(atomic_load(&DC.removed));
	ck_assert_int_eq(touch->ret, 0);
	ck_assert_int_eq(DC.page[0], 0);
	ck_assert_int_eq(DC.page[PS - 1], 0);
	uffd_close(u);
	munmap(DC.page, 2 * PS);
}

/* A thread faults on DC.page and another discards it: both wait, unread, on the fd. Then one
 * dispatch reads (all or part of) them. */
static void dc_fault_then_remove(struct uffd *u, struct op *touch, struct op *drop)
{
	op_start(touch, OP_TOUCH, DC.page, 1, NULL);
	op_wait_queued(touch);
	op_start(drop, OP_MADV_DONTNEED, DC.page, PS, NULL);
	op_wait_queued(drop);
	ck_assert_int_ge(uffd_dispatch(u, 1000), 1);
}

/*
 * One read brings [fault, REMOVE of its page] (the kernel hands out unread faults first). The
 * fault may not be delivered before on_remove: it is woken instead, and the fault its thread
 * makes again is read after the REMOVE.
 */
START_TEST(remove_after_fault_in_one_batch)
{
	struct uffd *u = dc_open(0);
	struct op touch, drop;

	dc_fault_then_remove(u, &touch, &drop);
	/* Both were read by that one read: no call may have come before on_remove. */
	ck_assert_msg(atomic_load(&DC.early) == 0, "the fault was delivered before on_remove");
	dc_finish(u, &touch, &drop);
}
END_TEST

/*
 * One message per read: the fault is read alone, its copy meets -EAGAIN (the REMOVE is
 * pending), the dispatcher reads the REMOVE, and delivers the fault again only after on_remove.
 */
START_TEST(eagain_redelivery_after_on_remove)
{
	struct uffd *u = dc_open(1);
	struct uffd_stats st;
	struct op touch, drop;

	dc_fault_then_remove(u, &touch, &drop);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_ge(st.removes, 1); /* the -EAGAIN read it */
	ck_assert_msg(atomic_load(&DC.retries_before_remove) == 0,
		      "the fault was delivered again before on_remove of its page");
	dc_finish(u, &touch, &drop);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("prep");
	TCase *fk = tu_tcase("fork_fd", 30, setup, NULL),
	      *rm = tu_tcase("remap_offset", 30, setup, NULL),
	      *dd = tu_tcase("dedupe", 30, setup, NULL),
	      *rc = tu_tcase("range_cache", 30, setup, NULL),
	      *ud = tu_tcase("undecodable", 30, setup, NULL),
	      *rs = tu_tcase("remap_seen", 30, setup, NULL),
	      *dc = tu_tcase("discard_order", 30, setup, NULL);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(fk, fork_enomem_close_closes_fd);
	tcase_add_test(rm, remap_middle_offset_with_unmap);
	tcase_add_test(rm, remap_middle_offset_without_unmap);
	tcase_add_test(dd, unmap_duplicates_in_one_batch);
	tcase_add_test(dd, unmap_same_span_two_batches);
	tcase_add_test(dd, remove_repeated_in_one_batch);
	tcase_add_test(rc, cache_after_unmap);
	tcase_add_test(rc, cache_after_remap);
	tcase_add_test(rc, cache_edge_two_batches);
	tcase_add_test(rc, cache_edge_one_batch);
	suite_add_tcase(s, fk);
	suite_add_tcase(s, rm);
	suite_add_tcase(s, dd);
	tcase_add_test(ud, undecodable_fault_woken_fast_path);
	tcase_add_test(ud, undecodable_fault_woken_in_prep);
	tcase_add_test(rs, on_remap_sees_move_with_unmap);
	tcase_add_test(rs, on_remap_sees_move_without_unmap);
	suite_add_tcase(s, rc);
	suite_add_tcase(s, ud);
	tcase_add_test(dc, remove_after_fault_in_one_batch);
	tcase_add_test(dc, eagain_redelivery_after_on_remove);
	suite_add_tcase(s, rs);
	suite_add_tcase(s, dc);
	return tu_run(s);
}
