/* SPDX-License-Identifier: MIT */
/* The plain faulting process of the callgrind figure: it runs outside valgrind (which hangs on a
 * fault in a registered range taken in its own process). It makes a userfaultfd, sends it and
 * its region's address to the monitor over a unix socket, waits for "go", then reads every page,
 * from one or more threads, optionally pausing between pages so that the monitor always finds its
 * fd empty. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static char *mem;
static size_t len, per;
static long ps, pause_us;

static void *toucher(void *arg)
{
	size_t from = (size_t)(uintptr_t)arg * per, to = from + per;

	for (size_t off = from; off < to && off < len; off += (size_t)ps) {
		if (pause_us > 0) {
			struct timespec ts = { 0, pause_us * 1000 };

			nanosleep(&ts, NULL);
		}
		(void)*(volatile char *)(mem + off);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { 0 };
	struct iovec iov;
	struct cmsghdr *cm;
	uint64_t addr;
	size_t pages;
	pthread_t t[16];
	long threads = 1;
	char go;
	int sock, fd;

	if (argc < 3 || argc > 5) {
		fprintf(stderr, "usage: %s SOCKET-FD PAGES [PAUSE-US [THREADS]]\n", argv[0]);
		return 2;
	}
	ps = sysconf(_SC_PAGESIZE);
	if (argc >= 4)
		pause_us = atol(argv[3]);
	if (argc == 5)
		threads = atol(argv[4]);
	if (threads < 1 || threads > 16)
		return 2;
	sock = atoi(argv[1]);
	pages = strtoul(argv[2], NULL, 0);
	len = pages * (size_t)ps;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* Blocking and user-mode-only: the monitor decides the rest (handshake, O_NONBLOCK). */
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1);
	if (fd < 0) {
		perror("userfaultfd");
		return 1;
	}
	addr = (uintptr_t)mem;
	iov.iov_base = &addr;
	iov.iov_len = sizeof(addr);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sock, &mh, 0) != (ssize_t)sizeof(addr)) {
		perror("sendmsg");
		return 1;
	}
	if (read(sock, &go, 1) != 1)
		return 1;
	/* Each thread reads its own slice of whole pages. */
	per = (pages + (size_t)threads - 1) / (size_t)threads * (size_t)ps;
	for (long i = 0; i < threads; i++)
		if (pthread_create(&t[i], NULL, toucher, (void *)(uintptr_t)i))
			return 1;
	for (long i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	go = 'd';
	if (write(sock, &go, 1) != 1)
		return 1;
	return 0;
}
