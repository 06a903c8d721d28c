/* SPDX-License-Identifier: MIT */
/* uffd_range_add(): ranges another process registered on the fd it sent, served with their data. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffd.h>
#include "testutil.h"

#define APAGES 8
#define BPAGES 4
#define CPAGES 4 /* where the child moves the upper half of A */
#define EVENTS (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP)

static size_t PS;

static void setup(void)
{
	PS = tu_page();
}

/* What each registration's data points at: its pages are filled with tag + page number. */
static unsigned char tag_a = 'A', tag_b = 'B', tag_b2 = 'b';

/* What the child tells the monitor with its fd. */
struct rinfo {
	int err;
	uint64_t features;
	unsigned char *a, *b, *c;
};

/* ---- the child: a VMM that makes the userfaultfd and registers its memory itself ---- */

static int raw_uffd(uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = EVENTS };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		/* Without the events (a failed handshake is not consumed). */
		api = (struct uffdio_api){ .api = UFFD_API };
		if (ioctl(fd, UFFDIO_API, &api)) {
			close(fd);
			return -errno;
		}
	}
	*features = api.features & EVENTS;
	return fd;
}

static int raw_register(int fd, void *addr, size_t len)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	return ioctl(fd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

/* Whether every byte of the page at @p is @v. */
static bool page_is(const unsigned char *p, unsigned char v)
{
	size_t i;

	for (i = 0; i < PS; i++)
		if (p[i] != v)
			return false;
	return true;
}

static __attribute__((noreturn)) void child(int sock)
{
	struct rinfo in = { 0 };
	int fd = -1;
	char c, ok;

	in.a = mmap(NULL, APAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	in.b = mmap(NULL, BPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	in.c = mmap(NULL, CPAGES * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (in.a == MAP_FAILED || in.b == MAP_FAILED || in.c == MAP_FAILED)
		in.err = -ENOMEM;
	if (!in.err)
		in.err = fd = raw_uffd(&in.features);
	if (fd >= 0) {
		in.err = raw_register(fd, in.a, APAGES * PS);
		if (!in.err)
			in.err = raw_register(fd, in.b, BPAGES * PS);
	}
	if (tu_send_fd(sock, in.err ? -1 : fd, &in, sizeof(in)) || in.err)
		_exit(2);
	close(fd); /* the monitor's copy keeps it */
	for (;;) {
		if (read(sock, &c, 1) != 1)
			_exit(3);
		switch (c) {
		case 't': /* faults in both ranges */
			ok = page_is(in.a + 3 * PS, tag_a + 3) &&
			     page_is(in.b + 1 * PS, tag_b + 1) &&
			     page_is(in.b + 3 * PS, tag_b2 + 1);
			break;
		case 'm': /* move A's upper half to C; touch a moved page and one left behind */
			ok = mremap(in.a + 4 * PS, 4 * PS, 4 * PS, MREMAP_MAYMOVE | MREMAP_FIXED,
				    in.c) == in.c &&
			     page_is(in.c + 1 * PS, tag_a + 5) && page_is(in.a + 0 * PS, tag_a + 0);
			break;
		case 'u':
			ok = munmap(in.b, BPAGES * PS) == 0;
			break;
		default:
			_exit(0);
		}
		if (write(sock, ok ? "y" : "n", 1) != 1)
			_exit(4);
	}
}

/* ---- the monitor ---- */

#define MAXF 16

/* The faults seen; `mu` orders them for the reader (the kernel's ordering is invisible to TSan). */
struct seen {
	pthread_mutex_t mu;
	atomic_int nfault, nremap, nunmap;
	struct uffd_pagefault f[MAXF];
	atomic_bool stop;
	int err;
};

static int fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct seen *s = arg;
	unsigned char buf[65536];
	uintptr_t at = (uintptr_t)pf->address & ~(uintptr_t)(PS - 1);
	const unsigned char *tag = pf->range.data;
	size_t page;
	int i;

	pthread_mutex_lock(&s->mu);
	i = atomic_fetch_add(&s->nfault, 1);
	if (i < MAXF)
		s->f[i] = *pf;
	pthread_mutex_unlock(&s->mu);
	if (!tag)
		return uffd_zeropage(u, (void *)at, PS, 0); /* shows as a wrong byte in the child */
	/* The page's place in its registration, from the range alone. */
	page = (pf->range.offset + (at - (uintptr_t)pf->range.start)) / PS;
	memset(buf, (unsigned char)(*tag + page), PS);
	return uffd_copy(u, (void *)at, buf, PS, 0);
}

static int on_remap(struct uffd *u, const struct uffd_remap *r, void *arg)
{
	(void)u, (void)r;
	atomic_fetch_add(&((struct seen *)arg)->nremap, 1);
	return 0;
}

static int on_unmap(struct uffd *u, const struct uffd_span *sp, void *arg)
{
	(void)u, (void)sp;
	atomic_fetch_add(&((struct seen *)arg)->nunmap, 1);
	return 0;
}

static struct uffd *U;

static void *serve(void *arg)
{
	struct seen *s = arg;

	while (!atomic_load(&s->stop)) {
		int r = uffd_dispatch(U, 20);

		if (r < 0 && r != -EINTR) {
			s->err = r;
			break;
		}
	}
	return NULL;
}

/* Send a command to the child and check that it says all was well. */
static void ask(int sock, char c)
{
	char ok = 0;

	ck_assert_int_eq(write(sock, &c, 1), 1);
	ck_assert_int_eq(read(sock, &ok, 1), 1);
	ck_assert_msg(ok == 'y', "the child's '%c' failed", c);
}

static void expect_range(struct uffd *u, const void *addr, const void *start, size_t len,
			 const void *data, size_t offset)
{
	struct uffd_range r;

	ck_assert_int_eq(uffd_range_find(u, addr, &r), 0);
	ck_assert_ptr_eq(r.start, start);
	ck_assert_ptr_eq(r.end, (const char *)start + len);
	ck_assert_ptr_eq(r.data, data);
	ck_assert_uint_eq(r.offset, offset);
}

/* The fault at @addr was seen with this range. */
static void expect_fault(struct seen *s, const void *addr, const void *start, const void *data,
			 size_t offset)
{
	struct uffd_pagefault f[MAXF];
	int i, n;

	pthread_mutex_lock(&s->mu);
	n = atomic_load(&s->nfault);
	memcpy(f, s->f, sizeof(f));
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < n && i < MAXF; i++) {
		if (f[i].address != addr)
			continue;
		ck_assert_ptr_eq(f[i].range.start, start);
		ck_assert_ptr_eq(f[i].range.data, data);
		ck_assert_uint_eq(f[i].range.offset, offset);
		return;
	}
	ck_abort_msg("no fault at %p", addr);
}

START_TEST(sender_registered_ranges)
{
	static struct seen s;
	struct timeval tv = { 15, 0 };
	struct uffd_range r;
	struct rinfo in;
	pthread_t t;
	int fds0 = tu_count_fds(), sv[2], fd, st;
	bool events;
	pid_t pid;

	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.mu, NULL);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		child(sv[1]);
	}
	close(sv[1]);
	ck_assert_int_eq(tu_recv_fd(sv[0], &fd, &in, sizeof(in)), 0);
	ck_assert_int_eq(in.err, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&U, fd, NULL), 0);
	events = (uffd_features(U) & EVENTS) == EVENTS;
	ck_assert_uint_eq(uffd_features(U) & EVENTS, in.features);

	/* The map knows nothing of what the sender registered. */
	ck_assert_int_eq(uffd_range_count(U), 0);
	ck_assert_int_eq(uffd_range_find(U, in.a, &r), -ENOENT);

	/* Bad arguments change nothing. */
	ck_assert_int_eq(uffd_range_add(NULL, in.a, PS, UFFDIO_REGISTER_MODE_MISSING, &tag_a),
			 -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, in.a + 1, PS, UFFDIO_REGISTER_MODE_MISSING, &tag_a),
			 -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, in.a, 0, UFFDIO_REGISTER_MODE_MISSING, &tag_a), -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, in.a, PS + 1, UFFDIO_REGISTER_MODE_MISSING, &tag_a),
			 -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, (void *)(UINTPTR_MAX & ~(uintptr_t)(PS - 1)), 2 * PS,
					UFFDIO_REGISTER_MODE_MISSING, &tag_a),
			 -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, in.a, PS, 0, &tag_a), -EINVAL);
	ck_assert_int_eq(uffd_range_add(U, in.a, PS, (uint64_t)1 << 40, &tag_a), -EINVAL);
	ck_assert_int_eq(uffd_range_count(U), 0);

	/* The sender's ranges, recorded without registering (the kernel has them already). */
	ck_assert_int_eq(uffd_range_add(U, in.a, APAGES * PS, UFFDIO_REGISTER_MODE_MISSING, &tag_a),
			 0);
	ck_assert_int_eq(uffd_range_add(U, in.b, BPAGES * PS, UFFDIO_REGISTER_MODE_MISSING, &tag_b),
			 0);
	/* Overlaps are taken over, as uffd_register() does: B's upper half gets its own data. */
	ck_assert_int_eq(
		uffd_range_add(U, in.b + 2 * PS, 2 * PS, UFFDIO_REGISTER_MODE_MISSING, &tag_b2), 0);
	ck_assert_int_eq(uffd_range_count(U), 3);
	expect_range(U, in.a + 5 * PS, in.a, APAGES * PS, &tag_a, 0);
	expect_range(U, in.b, in.b, 2 * PS, &tag_b, 0);
	expect_range(U, in.b + 3 * PS, in.b + 2 * PS, 2 * PS, &tag_b2, 0);

	ck_assert_int_eq(uffd_on_pagefault(U, fill, &s), 0);
	ck_assert_int_eq(uffd_on_remap(U, on_remap, &s), 0);
	ck_assert_int_eq(uffd_on_unmap(U, on_unmap, &s), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, serve, &s), 0);

	/* Faults carry the added ranges' data and offsets. */
	ask(sv[0], 't');
	ck_assert_int_eq(atomic_load(&s.nfault), 3);
	expect_fault(&s, in.a + 3 * PS, in.a, &tag_a, 0);
	expect_fault(&s, in.b + 1 * PS, in.b, &tag_b, 0);
	expect_fault(&s, in.b + 3 * PS, in.b + 2 * PS, &tag_b2, 0);

	if (events) {
		/* REMAP moves an added piece as any other: data and offset go with it. */
		ask(sv[0], 'm');
		ck_assert_int_eq(atomic_load(&s.nremap), 1);
		expect_range(U, in.c, in.c, 4 * PS, &tag_a, 4 * PS);
		expect_range(U, in.a, in.a, 4 * PS, &tag_a, 0);
		ck_assert_int_eq(uffd_range_find(U, in.a + 4 * PS, &r), -ENOENT);
		expect_fault(&s, in.c + 1 * PS, in.c, &tag_a, 4 * PS);
		expect_fault(&s, in.a, in.a, &tag_a, 0);
		/* UNMAP cuts added pieces out. */
		ask(sv[0], 'u');
		ck_assert_int_ge(atomic_load(&s.nunmap), 1);
		ck_assert_int_eq(uffd_range_find(U, in.b, &r), -ENOENT);
		ck_assert_int_eq(uffd_range_find(U, in.b + 3 * PS, &r), -ENOENT);
		ck_assert_int_eq(uffd_range_count(U), 2);
	} else {
		fprintf(stderr,
			"test_range_add: the kernel gave no UNMAP/REMAP: events not checked\n");
	}

	ck_assert_int_eq(write(sv[0], "x", 1), 1);
	st = tu_wait_child(pid, 10000);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	atomic_store(&s.stop, true);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(s.err, 0);
	uffd_close(U);
	pthread_mutex_destroy(&s.mu);
	close(sv[0]);
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("range_add");
	TCase *tc = tu_tcase("adopted", 30, setup, NULL);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(tc, sender_registered_ranges);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
