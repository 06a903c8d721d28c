/* SPDX-License-Identifier: MIT */
/* The monitor of the callgrind figure: it runs under valgrind, starts the plain faulter (which
 * valgrind does not follow across exec), receives its userfaultfd, registers the faulter's region
 * from here and serves exactly PAGES faults in a handler thread, as monitors do, with libuffd or
 * with a raw read()+ioctl() loop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include <uffd.h>

/* The source is a few pages, reused: its set-up must cost the same for N and 2N faults. */
#define SRC_PAGES 16

static char src[SRC_PAGES * 4096] __attribute__((aligned(4096)));
static size_t ps;
static size_t served;

static int lib_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	size_t off = pf->range.offset + ((uintptr_t)pf->address - (uintptr_t)pf->range.start);

	(void)arg;
	served++;
	return uffd_copy(u, pf->address, (const char *)pf->range.data + off % sizeof(src), ps, 0);
}

__attribute__((noinline)) static void serve_lib(struct uffd *u, size_t pages)
{
	while (served < pages) {
		int n = uffd_dispatch(u, -1);

		if (n < 0 && n != -EINTR) {
			fprintf(stderr, "uffd_dispatch: %s\n", uffd_strerror(n));
			exit(1);
		}
	}
}

/* The raw loop: what a careful hand-written monitor does, and nothing else: a blocking read(),
 * or with @poll_first a poll() and a read() on a non-blocking fd, as libuffd must. */
__attribute__((noinline)) static void serve_raw(int fd, uintptr_t base, size_t pages,
						bool poll_first)
{
	struct uffd_msg msgs[64];

	while (served < pages) {
		ssize_t n;

		if (poll_first) {
			struct pollfd p = { .fd = fd, .events = POLLIN };

			poll(&p, 1, -1);
		}
		n = read(fd, msgs, sizeof(msgs));

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("read");
			exit(1);
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			uintptr_t a = (uintptr_t)msgs[i].arg.pagefault.address &
				      ~(uintptr_t)(ps - 1);
			struct uffdio_copy c = {
				.dst = a,
				.src = (uintptr_t)src + (a - base) % sizeof(src),
				.len = ps,
				.mode = 0,
			};

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (ioctl(fd, UFFDIO_COPY, &c) && errno != EEXIST) {
				perror("UFFDIO_COPY");
				exit(1);
			}
			served++;
		}
	}
}

static int recv_fd(int sock, uint64_t *addr)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = addr, .iov_len = sizeof(*addr) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &mh, 0) != (ssize_t)sizeof(*addr))
		return -1;
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
	return fd;
}

struct handler {
	bool lib, poll;
	struct uffd *u;
	int fd;
	uintptr_t base;
	size_t pages;
};

/* The handler thread. A second thread also makes glibc's read() and poll() take their
 * multi-threaded (cancellation) path, as in any monitor that is not a process of its own. */
static void *handler(void *arg)
{
	struct handler *h = arg;

	if (h->lib)
		serve_lib(h->u, h->pages);
	else
		serve_raw(h->fd, h->base, h->pages, h->poll);
	return NULL;
}

static void serve(struct handler *h)
{
	pthread_t t;

	if (pthread_create(&t, NULL, handler, h)) {
		fprintf(stderr, "pthread_create failed\n");
		exit(1);
	}
	pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
	size_t pages, len;
	uint64_t addr;
	char arg[4][32], go = 'g';
	int sv[2], fd, st;
	bool lib, rawpoll;
	pid_t pid;

	if (argc < 4 || argc > 6 ||
	    (strcmp(argv[1], "lib") && strcmp(argv[1], "raw") && strcmp(argv[1], "rawpoll"))) {
		fprintf(stderr, "usage: %s lib|raw|rawpoll PAGES FAULTER [PAUSE-US [THREADS]]\n",
			argv[0]);
		return 2;
	}
	lib = strcmp(argv[1], "lib") == 0;
	rawpoll = strcmp(argv[1], "rawpoll") == 0;
	pages = strtoul(argv[2], NULL, 0);
	ps = (size_t)sysconf(_SC_PAGESIZE);
	len = pages * ps;
	memset(src, 'x', sizeof(src));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		perror("socketpair");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(sv[0]);
		snprintf(arg[0], sizeof(arg[0]), "%d", sv[1]);
		snprintf(arg[1], sizeof(arg[1]), "%zu", pages);
		snprintf(arg[2], sizeof(arg[2]), "%s", argc >= 5 ? argv[4] : "0");
		snprintf(arg[3], sizeof(arg[3]), "%s", argc == 6 ? argv[5] : "1");
		execl(argv[3], argv[3], arg[0], arg[1], arg[2], arg[3], (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	fd = recv_fd(sv[0], &addr);
	if (fd < 0) {
		fprintf(stderr, "no userfaultfd from the faulter\n");
		return 1;
	}
	if (lib) {
		/* valgrind knows only /dev/userfaultfd: the handshake's probe must use it. */
		struct uffd_config cfg = { .flags = UFFD_OPEN_DEVICE_ONLY };
		struct uffd *u;
		int ret = uffd_adopt(&u, fd, &cfg);

		if (ret == 0)
			ret = uffd_register(u, (void *)(uintptr_t)addr, len,
					    UFFDIO_REGISTER_MODE_MISSING, src);
		if (ret == 0)
			ret = uffd_on_pagefault(u, lib_fault, NULL);
		if (ret < 0) {
			fprintf(stderr, "libuffd set-up: %s\n", uffd_strerror(ret));
			return 1;
		}
		if (write(sv[0], &go, 1) != 1)
			return 1;
		serve(&(struct handler){ .lib = true, .u = u, .pages = pages });
		uffd_close(u);
	} else {
		struct uffdio_api api = { .api = UFFD_API };
		struct uffdio_register reg = {
			.range = { .start = addr, .len = len },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(fd, UFFDIO_API, &api) || ioctl(fd, UFFDIO_REGISTER, &reg) ||
		    (rawpoll && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))) {
			perror("raw set-up");
			return 1;
		}
		if (write(sv[0], &go, 1) != 1)
			return 1;
		serve(&(struct handler){ .fd = fd, .base = addr, .pages = pages, .poll = rawpoll });
		close(fd);
	}
	if (read(sv[0], &go, 1) != 1 || go != 'd')
		return 1;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "the faulter failed\n");
		return 1;
	}
	return 0;
}
