/* SPDX-License-Identifier: MIT */
/* libuffd-trace-preload.so: hands a traced program's userfaultfd to uffd-trace before main(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uffd.h>

#include "trace-proto.h"

static int send_fd(int sock, int fd, char byte)
{
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *c;
	ssize_t n;

	memset(&ctl, 0, sizeof(ctl));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : -1;
}

/*
 * Runs before the program's own constructors and main(). Whatever goes wrong, the program runs
 * on untraced and unchanged: nothing is printed, errno is put back, and no fd is left open. The
 * program's copy of the userfaultfd is closed once it is on its way to the monitor: registrations
 * belong to the open file, which the monitor keeps.
 *
 * The context traps kernel-mode faults where this process may (CAP_SYS_PTRACE, access to
 * /dev/userfaultfd, vm.unprivileged_userfaultfd=1), else it is user-mode-only. Which one it is
 * can only be learnt here (the fd does not show it), so the hello byte says it: on a
 * user-mode-only context the monitor must not trap first touches unless asked to, since a system
 * call writing into untouched memory would then fail with EFAULT instead of waiting.
 */
__attribute__((constructor)) static void uffd_trace_attach(void)
{
	const char *path = getenv(TRACE_ENV_SOCKET);
	struct uffd_config cfg = {
		.flags = UFFD_OPEN_KERNEL_FAULTS,
		.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_THREAD_ID,
		.optional = UFFD_FEATURE_EVENT_FORK,
	};
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int saved = errno, sock = -1;
	char hello = TRACE_HELLO;
	struct uffd *u = NULL;
	ssize_t n;
	char reply;

	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
		goto out;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (uffd_open(&u, &cfg) != 0) {
		cfg.flags &= ~UFFD_OPEN_KERNEL_FAULTS;
		hello = TRACE_HELLO_USER;
		if (uffd_open(&u, &cfg) != 0)
			goto out;
	}
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto out;
	if (send_fd(sock, uffd_fd(u), hello) != 0)
		goto out;
	/* The fd in flight keeps the file open. Closing the context now, and saying so before the
	 * monitor registers anything, keeps the memory it frees out of the trace. */
	uffd_close(u);
	u = NULL;
	if (write(sock, &(char){ TRACE_CLOSED }, 1) != 1)
		goto out;
	/* The monitor registers this process's memory meanwhile; EOF means it refused. */
	do
		n = read(sock, &reply, 1);
	while (n < 0 && errno == EINTR);
out:
	if (sock >= 0)
		close(sock);
	uffd_close(u);
	errno = saved;
}
