/* SPDX-License-Identifier: MIT */
/* One monitor serving many forked children (EVENT_FORK): uffd_monitor against a raw epoll loop. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MAX_CHILDREN 256

struct kids {
	char *mem, *src;
	size_t len;
	int nchild;
	/* libuffd */
	struct uffd_monitor *m;
	/* raw */
	int fd, stopfd, ep;
	int fds[MAX_CHILDREN + 1];
	int nfds;
};

static int lib_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	const char *src = (const char *)pf->range.data + pf->range.offset +
			  ((uintptr_t)pf->address - (uintptr_t)pf->range.start);

	(void)arg;
	return uffd_copy(u, pf->address, src, page_size, 0);
}

static void *lib_monitor(void *arg)
{
	struct kids *k = arg;
	int r = uffd_monitor_run(k->m, -1);

	if (r < 0)
		die("uffd_monitor_run: %s", uffd_strerror(r));
	return NULL;
}

/* The raw monitor: level-triggered epoll, one read() per ready fd, FORK fds added as they come. */
static void *raw_monitor(void *arg)
{
	struct kids *k = arg;
	const uintptr_t base = (uintptr_t)k->mem, mask = ~(uintptr_t)(page_size - 1);
	struct epoll_event evs[64];
	struct uffd_msg msgs[64];

	for (;;) {
		int n = epoll_wait(k->ep, evs, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			ssize_t got;

			if (fd == k->stopfd)
				return NULL;
			got = read(fd, msgs, sizeof(msgs));
			if (got < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				die("read: %s", strerror(errno));
			}
			for (size_t j = 0; j < (size_t)got / sizeof(msgs[0]); j++) {
				struct uffd_msg *msg = &msgs[j];

				if (msg->event == UFFD_EVENT_FORK) {
					int cfd = (int)msg->arg.fork.ufd;
					struct epoll_event ev = { .events = EPOLLIN,
								  .data.fd = cfd };

					if (k->nfds >= MAX_CHILDREN + 1)
						die("too many children");
					k->fds[k->nfds++] = cfd;
					check_sys(epoll_ctl(k->ep, EPOLL_CTL_ADD, cfd, &ev),
						  "epoll_ctl");
				} else if (msg->event == UFFD_EVENT_PAGEFAULT) {
					uintptr_t a = (uintptr_t)msg->arg.pagefault.address & mask;
					struct uffdio_copy c = {
						.dst = a,
						.src = (uintptr_t)k->src + (a - base),
						.len = page_size,
						.mode = 0,
					};

					if (ioctl(fd, UFFDIO_COPY, &c) && errno != EEXIST)
						die("UFFDIO_COPY: %s", strerror(errno));
				}
			}
		}
	}
}

/* The child: wait for the start, fault every page, check what it got, report. */
static void child_main(struct kids *k, int start_rd, int done_wr)
{
	char c;

	if (read(start_rd, &c, 1) != 1)
		_exit(2);
	for (size_t off = 0; off < k->len; off += page_size)
		(void)*(volatile char *)(k->mem + off);
	c = memcmp(k->mem, k->src, k->len) == 0 ? 'y' : 'n';
	if (write(done_wr, &c, 1) != 1)
		_exit(3);
	_exit(c == 'y' ? 0 : 4);
}

/* Returns ns per fault: from releasing the children to the last one's report. */
static double kids_once(struct kids *k, bool lib, int nchild)
{
	int start[2], done[2];
	pid_t pids[MAX_CHILDREN];
	pthread_t h;
	uint64_t t0, t1;
	struct uffd *u = NULL;
	char buf[MAX_CHILDREN];

	check_sys(pipe(start), "pipe");
	check_sys(pipe(done), "pipe");
	if (lib) {
		struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_FORK };

		check_uffd(uffd_open(&u, &cfg), "uffd_open(EVENT_FORK)");
		check_uffd(uffd_register(u, k->mem, k->len, UFFDIO_REGISTER_MODE_MISSING, k->src),
			   "uffd_register");
		uffd_on_pagefault(u, lib_fault, NULL);
		check_uffd(uffd_monitor_new(&k->m), "uffd_monitor_new");
		check_uffd(uffd_monitor_add(k->m, u), "uffd_monitor_add");
		if (pthread_create(&h, NULL, lib_monitor, k))
			die("pthread_create");
	} else {
		struct epoll_event ev = { .events = EPOLLIN };

		k->fd = raw_open(UFFD_FEATURE_EVENT_FORK, true);
		raw_register(k->fd, k->mem, k->len);
		k->stopfd = eventfd(0, EFD_CLOEXEC);
		k->ep = epoll_create1(EPOLL_CLOEXEC);
		check_sys(k->stopfd, "eventfd");
		check_sys(k->ep, "epoll_create1");
		k->nfds = 0;
		ev.data.fd = k->fd;
		check_sys(epoll_ctl(k->ep, EPOLL_CTL_ADD, k->fd, &ev), "epoll_ctl");
		ev.data.fd = k->stopfd;
		check_sys(epoll_ctl(k->ep, EPOLL_CTL_ADD, k->stopfd, &ev), "epoll_ctl");
		if (pthread_create(&h, NULL, raw_monitor, k))
			die("pthread_create");
	}
	for (int i = 0; i < nchild; i++) {
		pids[i] = fork();
		check_sys(pids[i], "fork");
		if (pids[i] == 0) {
			close(start[1]);
			close(done[0]);
			child_main(k, start[0], done[1]);
		}
	}
	memset(buf, 'g', sizeof(buf));
	t0 = now_ns();
	if (nchild < 1 || nchild > MAX_CHILDREN)
		die("bad number of children");
	if (write(start[1], buf, (size_t)nchild) != nchild)
		die("write: %s", strerror(errno));
	for (int got = 0; got < nchild;) {
		ssize_t r = read(done[0], buf + got, (size_t)(nchild - got));

		if (r <= 0)
			die("a child died before reporting");
		got += (int)r;
	}
	t1 = now_ns();
	for (int i = 0; i < nchild; i++) {
		int st;

		if (buf[i] != 'y')
			die("a child saw memory that does not match its source");
		check_sys(waitpid(pids[i], &st, 0), "waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			die("a child failed (status %#x)", st);
	}
	if (lib) {
		uffd_monitor_stop(k->m);
		pthread_join(h, NULL);
		uffd_monitor_free(k->m);
	} else {
		uint64_t one = 1;

		if (write(k->stopfd, &one, sizeof(one)) != sizeof(one))
			die("write eventfd");
		pthread_join(h, NULL);
		for (int i = 0; i < k->nfds; i++)
			close(k->fds[i]);
		close(k->fd);
		close(k->stopfd);
		close(k->ep);
	}
	close(start[0]);
	close(start[1]);
	close(done[0]);
	close(done[1]);
	check_sys(madvise(k->mem, k->len, MADV_DONTNEED), "madvise");
	return (double)(t1 - t0) / (double)((size_t)nchild * (k->len / page_size));
}

static struct kids kids;

static void kids_row(enum cpu_mode pinned, int nchild, double *lib_med, double *raw_med)
{
	struct row row = { .figure = "children", .cpu = cpu_name(pinned), .unit = "per fault" };
	double a[64], b[64];

	snprintf(row.variant, sizeof(row.variant), "%d %s x %zu pages, monitor, COPY", nchild,
		 nchild == 1 ? "child" : "children", kids.len / page_size);
	kids_once(&kids, true, nchild);
	kids_once(&kids, false, nchild);
	for (int i = 0; i < opt.pairs; i++) {
		row.s[row.n].a = a[i] = kids_once(&kids, true, nchild);
		row.s[row.n].b = b[i] = kids_once(&kids, false, nchild);
		row.n++;
	}
	row_print(&row);
	*lib_med = median(a, row.n);
	*raw_med = median(b, row.n);
}

static void kids_cpu(enum cpu_mode pinned)
{
	double l1, r1, ln, rn;

	kids_row(pinned, 1, &l1, &r1);
	kids_row(pinned, kids.nchild, &ln, &rn);
	printf("%-10s per-fault cost of %d contexts / one context: libuffd %.3f, raw %.3f\n", "",
	       kids.nchild, ln / l1, rn / r1);
}

void fig_children(void)
{
	struct uffd *probe;
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_FORK };
	int ret = uffd_open(&probe, &cfg);

	if (ret < 0) {
		printf("%-10s skipped: EVENT_FORK is not available (%s)\n", "children",
		       uffd_strerror(ret));
		return;
	}
	uffd_close(probe);
	if (opt.children > MAX_CHILDREN)
		opt.children = MAX_CHILDREN;
	kids.nchild = opt.children;
	kids.len = opt.child_pages * page_size;
	kids.mem = map_region(kids.len);
	kids.src = map_region(kids.len);
	fill_pattern(kids.src, kids.len, 2);
	warm_region(kids.mem, kids.len);
	for_modes(kids_cpu, false);
	munmap(kids.mem, kids.len);
	munmap(kids.src, kids.len);
}
