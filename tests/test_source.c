/* SPDX-License-Identifier: MIT */
/* Page sources (memory, file, fd, O_DIRECT, the caller's own), fd passing, uffd_fault_offset. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffd.h>
#include "serve_util.h"
#include "testutil.h"

#define IMG_LEN (1u << 20)

static char path[64];

static void file_setup(void)
{
	unsigned char *img = malloc(IMG_LEN);
	int fd;

	ck_assert_ptr_nonnull(img);
	su_fill(img, 0, IMG_LEN, 7);
	snprintf(path, sizeof(path), "/var/tmp/libuffd-source-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, img, IMG_LEN), IMG_LEN);
	close(fd);
	free(img);
}

static void file_teardown(void)
{
	unlink(path);
}

/* Reads at aligned and unaligned places, the end, past the end, and its length. */
static void check_source(struct uffd_source *s, uint64_t len)
{
	static const uint64_t offs[] = { 0, 1, 4095, 4096, 12345, IMG_LEN - 4096, IMG_LEN - 1 };
	unsigned char *buf = aligned_alloc(4096, 3 * 4096);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(uffd_source_length(s), (int64_t)len);
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		size_t n = offs[i] + 8192 <= len ? 8192 : (size_t)(len - offs[i]);

		memset(buf, 0, 3 * 4096);
		ck_assert_int_eq(uffd_source_read(s, buf, n, offs[i]), 0);
		ck_assert_int_eq(su_check(buf, offs[i], n, 7), -1);
		/* An unaligned buffer too (O_DIRECT goes through its bounce buffer). */
		ck_assert_int_eq(uffd_source_read(s, buf + 3, n, offs[i]), 0);
		ck_assert_int_eq(su_check(buf + 3, offs[i], n, 7), -1);
	}
	/* Short data is never whole: a read that crosses the end is -ENXIO. */
	ck_assert_int_eq(uffd_source_read(s, buf, 4096, len - 100), -ENXIO);
	ck_assert_int_eq(uffd_source_read(s, buf, 1, len), -ENXIO);
	ck_assert_int_eq(uffd_source_read(s, buf, 4096, UINT64_MAX - 10), -EINVAL);
	ck_assert_int_eq(uffd_source_read(s, NULL, 1, 0), -EINVAL);
	ck_assert_int_eq(uffd_source_read(s, buf, 0, 0), -EINVAL);
	free(buf);
}

START_TEST(memory_source)
{
	unsigned char *img = malloc(IMG_LEN);
	struct uffd_source *s;

	su_fill(img, 0, IMG_LEN, 7);
	ck_assert_int_eq(uffd_source_memory(&s, img, IMG_LEN), 0);
	check_source(s, IMG_LEN);
	uffd_source_close(s);
	ck_assert_int_eq(uffd_source_memory(&s, NULL, 1), -EINVAL);
	ck_assert_int_eq(uffd_source_memory(NULL, img, 1), -EINVAL);
	free(img);
}
END_TEST

START_TEST(file_source)
{
	struct uffd_source *s;
	int fds = tu_count_fds();

	ck_assert_int_eq(uffd_source_file(&s, path, 0), 0);
	check_source(s, IMG_LEN);
	uffd_source_close(s);
	ck_assert_int_eq(tu_count_fds(), fds);
	ck_assert_int_eq(uffd_source_file(&s, "/nonexistent/libuffd", 0), -ENOENT);
	ck_assert_int_eq(uffd_source_file(&s, path, 0x80), -EINVAL);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(file_source_direct)
{
	struct uffd_source *s;
	int fds = tu_count_fds();
	int ret = uffd_source_file(&s, path, UFFD_SOURCE_DIRECT);

	if (ret == -EINVAL)
		tu_skip("this file system has no O_DIRECT");
	ck_assert_int_eq(ret, 0);
	check_source(s, IMG_LEN);
	uffd_source_close(s);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(fd_source)
{
	struct uffd_source *s, *d;
	int fd = open(path, O_RDONLY | O_CLOEXEC), fds;

	ck_assert_int_ge(fd, 0);
	fds = tu_count_fds();
	ck_assert_int_eq(uffd_source_fd(&s, fd, 0), 0);
	ck_assert_int_eq(uffd_source_fd(&d, fd, UFFD_SOURCE_DIRECT), 0);
	/* The caller's fd keeps its flags: O_DIRECT went to a reopened copy. */
	ck_assert_int_eq(fcntl(fd, F_GETFL) & O_DIRECT, 0);
	close(fd); /* the sources hold their own copies */
	check_source(s, IMG_LEN);
	check_source(d, IMG_LEN);
	uffd_source_close(s);
	uffd_source_close(d);
	ck_assert_int_eq(tu_count_fds(), fds - 1);
	ck_assert_int_eq(uffd_source_fd(&s, -1, 0), -EINVAL);
	ck_assert_int_eq(uffd_source_fd(&s, 987, 0), -EBADF);
}
END_TEST

static int closes;

static int my_read(void *impl, void *buf, size_t len, uint64_t off)
{
	(void)impl;
	su_fill(buf, off, len, 3);
	return 0;
}

static void my_close(void *impl)
{
	(void)impl;
	closes++;
}

START_TEST(user_source)
{
	struct uffd_source_ops ops = { .size = sizeof(ops), .read = my_read, .close = my_close };
	unsigned char buf[100];
	struct uffd_source *s;

	ck_assert_int_eq(uffd_source_new(&s, &ops, NULL), 0);
	ck_assert_int_eq(uffd_source_read(s, buf, sizeof(buf), 1000), 0);
	ck_assert_int_eq(su_check(buf, 1000, sizeof(buf), 3), -1);
	ck_assert_int_eq(uffd_source_length(s), -EOPNOTSUPP);
	uffd_source_close(s);
	ck_assert_int_eq(closes, 1);
	uffd_source_close(NULL);
	/* An implementer compiled against an older, smaller struct: only `read` is taken. */
	ops.size = offsetof(struct uffd_source_ops, read) + sizeof(ops.read);
	ck_assert_int_eq(uffd_source_new(&s, &ops, NULL), 0);
	uffd_source_close(s);
	ck_assert_int_eq(closes, 1);
	ops.size = sizeof(size_t);
	ck_assert_int_eq(uffd_source_new(&s, &ops, NULL), -EINVAL);
	ops.size = sizeof(ops);
	ops.read = NULL;
	ck_assert_int_eq(uffd_source_new(&s, &ops, NULL), -EINVAL);
	ck_assert_int_eq(uffd_source_new(&s, NULL, NULL), -EINVAL);
	ck_assert_int_eq(uffd_source_new(NULL, &ops, NULL), -EINVAL);
}
END_TEST

/* ---- fd passing ---- */

/* Sends @n fds (copies of /dev/null) with one byte, as a sender that misbehaves would. */
static void send_raw(int sock, int n)
{
	union {
		char buf[CMSG_SPACE(32 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { "x", 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[32];

	for (int i = 0; i < n; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (n) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(c), fds, n * sizeof(int));
	}
	ck_assert_int_eq(sendmsg(sock, &mh, 0), 1);
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

START_TEST(fd_pass)
{
	struct uffd_peer peer;
	char buf[64];
	int sv[2], fd = -1, fds;
	struct uffd *u = tu_open(0);

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	fds = tu_count_fds();
	ck_assert_int_eq(uffd_fd_send(sv[0], uffd_fd(u), "hello", 5), 0);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), &peer), 5);
	ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
	ck_assert_int_eq(peer.pid, getpid());
	ck_assert_int_eq(peer.uid, getuid());
	ck_assert_int_eq(peer.gid, getgid());
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	{
		/* It is the userfaultfd: adopting it works. */
		struct uffd *a;

		ck_assert_int_eq(uffd_adopt(&a, fd, NULL), 0);
		uffd_close(a);
	}
	ck_assert_int_eq(tu_count_fds(), fds);

	/* No fd, two fds, twenty fds (past what fits): refused, and nothing leaks. */
	send_raw(sv[0], 0);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -EBADMSG);
	send_raw(sv[0], 2);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -EBADMSG);
	ck_assert_int_eq(tu_count_fds(), fds);
	send_raw(sv[0], 20);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -EMSGSIZE);
	ck_assert_int_eq(tu_count_fds(), fds);

	/* A stream message longer than the buffer. */
	ck_assert_int_eq(uffd_fd_send(sv[0], uffd_fd(u), "0123456789", 10), 0);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, 4, NULL), -EMSGSIZE);
	ck_assert_int_eq(tu_count_fds(), fds);
	while (recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;

	/* The peer goes. */
	close(sv[0]);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -ECONNRESET);
	ck_assert_int_eq(uffd_fd_send(sv[1], uffd_fd(u), "x", 1), -EPIPE);
	close(sv[1]);

	/* Bad arguments and not a socket. */
	ck_assert_int_eq(uffd_fd_send(-1, 0, "x", 1), -EINVAL);
	ck_assert_int_eq(uffd_fd_send(0, -1, "x", 1), -EINVAL);
	ck_assert_int_eq(uffd_fd_send(0, 0, NULL, 1), -EINVAL);
	ck_assert_int_eq(uffd_fd_send(0, 0, "x", 0), -EINVAL);
	ck_assert_int_eq(uffd_fd_send(uffd_fd(u), uffd_fd(u), "x", 1), -ENOTSOCK);
	ck_assert_int_eq(uffd_fd_recv(uffd_fd(u), &fd, buf, sizeof(buf), NULL), -ENOTSOCK);
	ck_assert_int_eq(uffd_fd_recv(0, NULL, buf, 1, NULL), -EINVAL);
	ck_assert_int_eq(uffd_fd_recv(0, &fd, NULL, 1, NULL), -EINVAL);
	ck_assert_int_eq(uffd_fd_recv(0, &fd, buf, 0, NULL), -EINVAL);
	uffd_close(u);
}
END_TEST

START_TEST(fd_pass_datagram)
{
	char buf[4];
	int sv[2], fd = -1, fds;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	fds = tu_count_fds();
	ck_assert_int_eq(uffd_fd_send(sv[0], 0, "too long", 8), 0);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -EMSGSIZE);
	ck_assert_int_eq(tu_count_fds(), fds);
	/* Non-blocking, nothing there. */
	ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	ck_assert_int_eq(uffd_fd_recv(sv[1], &fd, buf, sizeof(buf), NULL), -EAGAIN);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(fault_offset)
{
	char page[3];
	struct uffd_pagefault pf = { .address = page + 2,
				     .range = { .start = page, .end = page + 3, .offset = 100 } };
	uint64_t off = 0;

	ck_assert_int_eq(uffd_fault_offset(&pf, &off), 0);
	ck_assert_uint_eq(off, 102);
	pf.address = page + 3;
	ck_assert_int_eq(uffd_fault_offset(&pf, &off), -ENOENT);
	memset(&pf.range, 0, sizeof(pf.range));
	ck_assert_int_eq(uffd_fault_offset(&pf, &off), -ENOENT);
	ck_assert_int_eq(uffd_fault_offset(NULL, &off), -EINVAL);
	ck_assert_int_eq(uffd_fault_offset(&pf, NULL), -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("source");
	TCase *tc = tu_tcase("sources", 30, file_setup, file_teardown);
	TCase *fp = tu_tcase("fdpass", 30, NULL, NULL);

	tu_require_uffd(NULL, NULL);
	tcase_add_test(tc, memory_source);
	tcase_add_test(tc, file_source);
	tcase_add_test(tc, file_source_direct);
	tcase_add_test(tc, fd_source);
	tcase_add_test(tc, user_source);
	tcase_add_test(fp, fd_pass);
	tcase_add_test(fp, fd_pass_datagram);
	tcase_add_test(fp, fault_offset);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, fp);
	return tu_run(s);
}
