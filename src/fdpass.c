/* SPDX-License-Identifier: MIT */
/* Handing a userfaultfd over a unix socket (SCM_RIGHTS), and a fault's offset in its range. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "serve.h"

/* Room for this many fds in one message: a sender that attaches more is caught and its fds all
 * closed, instead of the kernel dropping the excess behind MSG_CTRUNC unseen. */
#define RECV_FDS 16

int uffd_fault_offset(const struct uffd_pagefault *pf, uint64_t *out)
{
	uintptr_t a;

	if (!pf || !out)
		return -EINVAL;
	a = (uintptr_t)pf->address;
	if (!pf->range.start || a < (uintptr_t)pf->range.start || a >= (uintptr_t)pf->range.end)
		return -ENOENT;
	*out = (uint64_t)pf->range.offset + (a - (uintptr_t)pf->range.start);
	return 0;
}

int uffd_fd_send(int sock, int fd, const void *msg, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)(uintptr_t)msg, len };
	struct msghdr mh = { 0 };
	struct cmsghdr *c;
	const char *p = msg;

	if (sock < 0 || fd < 0 || !msg || !len)
		return -EINVAL;
	memset(&ctl, 0, sizeof(ctl));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	/* A stream socket may take part of the message: the fd went with the first byte, the rest
	 * follows without it. MSG_NOSIGNAL: a closed peer is -EPIPE, not a SIGPIPE. */
	while (len) {
		long n = uffd_sys_sendmsg(sock, &mh, MSG_NOSIGNAL);

		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
		iov = (struct iovec){ (void *)(uintptr_t)p, len };
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
	}
	return 0;
}

/* Closes every fd that arrived in @mh's control data; returns their count. */
static int close_fds(struct msghdr *mh)
{
	struct cmsghdr *c;
	int n = 0;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t k, cnt;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (k = 0; k < cnt; k++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
			uffd_sys_close(fd);
			n++;
		}
	}
	return n;
}

/* The single fd of @mh, or -1 when there is not exactly one. */
static int only_fd(struct msghdr *mh)
{
	struct cmsghdr *c;
	int fd = -1, n = 0;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n += (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		if (c->cmsg_len >= CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	}
	return n == 1 ? fd : -1;
}

ssize_t uffd_fd_recv(int sock, int *fd, void *buf, size_t len, struct uffd_peer *peer)
{
	union {
		char buf[CMSG_SPACE(RECV_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { buf, len };
	struct msghdr mh = { 0 };
	ssize_t n;
	int one;

	if (sock < 0 || !fd || !buf || !len)
		return -EINVAL;
	memset(&ctl, 0, sizeof(ctl));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	n = uffd_sys_recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	if (n == 0) {
		close_fds(&mh);
		return -ECONNRESET;
	}
	if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
		close_fds(&mh); /* what did arrive; the kernel closed what did not fit */
		return -EMSGSIZE;
	}
	one = only_fd(&mh);
	if (one < 0) {
		close_fds(&mh);
		return -EBADMSG;
	}
	if (peer) {
		struct ucred cr;
		socklen_t cl = sizeof(cr);

		/* A socket without a connected peer (an unbound datagram) has no credentials. */
		if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 && cl == sizeof(cr)) {
			peer->pid = cr.pid;
			peer->uid = cr.uid;
			peer->gid = cr.gid;
		} else {
			peer->pid = 0;
			peer->uid = (uid_t)-1;
			peer->gid = (gid_t)-1;
		}
	}
	*fd = one;
	return n;
}
