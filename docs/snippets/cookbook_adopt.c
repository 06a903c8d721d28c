/* SPDX-License-Identifier: MIT */
/* Cookbook: a process hands its userfaultfd to a monitor process, which adopts and serves it. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "snippet.h"

static size_t page;

/* What the monitored process tells the monitor, with the fd. */
struct hello {
	void *addr; /* an address in the monitored process: never dereferenced by the monitor */
	size_t len;
};

/* [send] */
/* Send @fd and @msg over a unix socket: SCM_RIGHTS installs a copy of the fd in the receiver. */
static int send_fd(int sock, int fd, const struct hello *msg)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = sizeof(*msg) };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control,
		.msg_controllen = sizeof(control),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, 0) == (ssize_t)sizeof(*msg) ? 0 : -1;
}

/* The monitored process: it makes the fd (bound for life to its own address space) and the
 * memory, registers the memory itself (as a VMM does with its guest memory), hands the fd and
 * the addresses over, and then simply uses the memory. */
static int monitored(int sock, const char *expect, size_t len)
{
	struct uffd *u;
	char go;
	char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct hello msg = { .addr = mem, .len = len };

	if (mem == MAP_FAILED || uffd_open(&u, NULL) ||
	    uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_MISSING, NULL) ||
	    send_fd(sock, uffd_fd(u), &msg))
		return 1;
	/* The monitor's copy of the fd keeps the userfaultfd alive. */
	uffd_close(u);
	if (read(sock, &go, 1) != 1) /* the monitor is ready: go */
		return 1;
	return memcmp(mem, expect, len) == 0 ? 0 : 1; /* faults, served by the monitor */
}
/* [send] */

static int recv_fd(int sock, struct hello *msg)
{
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(*msg) };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control,
		.msg_controllen = sizeof(control),
	};
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != (ssize_t)sizeof(*msg))
		return -1;
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* [serve] */
/* The monitor copies from its own buffer into the other process's memory. */
static int fill(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *at = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	const char *image = pf->range.data;

	(void)arg;
	return uffd_copy(u, at, image + pf->range.offset + (size_t)(at - (char *)pf->range.start),
			 page, 0);
}
/* [serve] */

int main(void)
{
	int sv[2], status;

	page = snippet_page();
	snippet_require(0);
	size_t len = 8 * page;
	char *image = malloc(len);

	SNIPPET_CHECK(image != NULL);
	memset(image, 'z', len);
	SNIPPET_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	pid_t pid = fork();

	SNIPPET_CHECK(pid >= 0);
	if (pid == 0)
		_exit(monitored(sv[1], image, len));

	/* [adopt] */
	struct uffd_monitor *m;
	struct uffd *u;
	struct hello msg;
	int fd = recv_fd(sv[0], &msg);

	SNIPPET_CHECK(fd >= 0);
	/* The handshake was done by the sender: the features are read from the kernel. */
	SNIPPET_CHECK(uffd_adopt(&u, fd, NULL) == 0);
	/* The sender registered its memory: record it in the map, with this process's data. */
	int err = uffd_range_add(u, msg.addr, msg.len, UFFDIO_REGISTER_MODE_MISSING, image);

	SNIPPET_CHECK(err == 0);
	uffd_on_pagefault(u, fill, NULL);
	SNIPPET_CHECK(uffd_monitor_new(&m) == 0 && uffd_monitor_add(m, u) == 0);
	SNIPPET_CHECK(uffd_monitor_watch_pid(m, u, pid) == 0); /* its exit ends the run */
	SNIPPET_CHECK(write(sv[0], "g", 1) == 1);
	SNIPPET_CHECK(uffd_monitor_run(m, -1) >= 0); /* until every context is gone */
	/* [adopt] */

	SNIPPET_CHECK(uffd_monitor_count(m) == 0);
	uffd_monitor_free(m);
	SNIPPET_CHECK(waitpid(pid, &status, 0) == pid);
	SNIPPET_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(sv[0]);
	close(sv[1]);
	free(image);
	printf("the other process's memory was served through its own fd\n");
	return 0;
}
