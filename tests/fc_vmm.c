/* SPDX-License-Identifier: MIT */
/*
 * fc_vmm: acts as Firecracker does when it restores a snapshot with an external page-fault
 * handler, with raw system calls only (no libuffd): it makes a userfaultfd (non-blocking,
 * EVENT_REMOVE requested), maps guest memory (anonymous private regions, and with --huge one
 * 2 MiB hugetlbfs region from a memfd), registers it (MISSING), connects to the handler's
 * socket and sends one message, a JSON array of GuestRegionUffdMapping, with the fd. Then it
 * touches the memory from several threads checking every byte against the image, discards
 * some pages as a balloon does (MADV_DONTNEED) and checks they read as zero, and exits.
 *
 * usage: fc_vmm SOCKET IMAGE [--regions SIZE,SIZE...] [--huge] [--threads N] [--delay-ms N]
 *                [--hold FILE] [--attack KIND] [--as-uid UID]
 * --attack sends something a handler must refuse and checks that the handler hangs up:
 *   json:TEXT (TEXT as the message; %B0 %B1 ... stand for the regions' addresses), nofd,
 *   twofds, notuffd, nofeature (a userfaultfd without EVENT_REMOVE), big (a 100000-byte
 *   message), second (a good message, then a second one: the handler must go on serving).
 * --as-uid: a forked child connects and sends as that uid (setresuid); the handler must hang up.
 * Exit: 0 as expected, 1 not (one line on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif
#define HUGE (2UL << 20)
#define MAX_REGIONS 8

struct region {
	char *addr;
	size_t size, page, offset;
};

static struct region reg[MAX_REGIONS];
static size_t nreg;
static const unsigned char *image;
static size_t image_len;
static unsigned nthreads = 4;
static const char *hold;

__attribute__((format(printf, 1, 2))) static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fc_vmm: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static int make_uffd(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		die("userfaultfd: %s", strerror(errno));
	if (ioctl(fd, UFFDIO_API, &api) != 0)
		die("UFFDIO_API: %s", strerror(errno));
	return fd;
}

static void map_regions(const char *spec, bool huge)
{
	size_t offset = 0;
	char *copy = strdup(spec), *save = NULL;

	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t size = strtoul(t, NULL, 0);

		if (nreg == MAX_REGIONS || !size)
			die("bad --regions '%s'", spec);
		reg[nreg].addr = mmap(NULL, size, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (reg[nreg].addr == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		reg[nreg].size = size;
		reg[nreg].page = (size_t)sysconf(_SC_PAGESIZE);
		reg[nreg].offset = offset;
		offset += size;
		nreg++;
	}
	free(copy);
	if (huge) {
		/* Guest memory backed by hugetlbfs, as Firecracker's huge_pages "2M". */
		int fd = memfd_create("guest", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);

		if (fd < 0 || ftruncate(fd, 2 * HUGE) != 0)
			die("memfd_create(MFD_HUGETLB): %s", strerror(errno));
		reg[nreg].addr = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (reg[nreg].addr == MAP_FAILED)
			die("mmap of hugetlbfs: %s", strerror(errno));
		close(fd);
		/* Firecracker's offsets are the running sum of the sizes: make it huge-aligned. */
		offset = (offset + HUGE - 1) / HUGE * HUGE;
		reg[nreg] = (struct region){ reg[nreg].addr, 2 * HUGE, HUGE, offset };
		offset += 2 * HUGE;
		nreg++;
	}
	if (offset > image_len)
		die("the regions (%zu bytes) are larger than the image (%zu)", offset, image_len);
}

static void register_all(int uffd)
{
	for (size_t i = 0; i < nreg; i++) {
		struct uffdio_register r = {
			.range = { (uintptr_t)reg[i].addr, reg[i].size },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(uffd, UFFDIO_REGISTER, &r) != 0)
			die("UFFDIO_REGISTER: %s", strerror(errno));
	}
}

/* The message, as Firecracker's serde_json writes it. */
static size_t message(char *buf, size_t room)
{
	size_t n = (size_t)snprintf(buf, room, "[");

	for (size_t i = 0; i < nreg; i++)
		n += (size_t)snprintf(buf + n, room - n,
				      "%s{\"base_host_virt_addr\":%lu,\"size\":%zu,\"offset\":%zu,"
				      "\"page_size\":%zu,\"page_size_kib\":%zu}",
				      i ? "," : "", (unsigned long)(uintptr_t)reg[i].addr,
				      reg[i].size, reg[i].offset, reg[i].page, reg[i].page);
	n += (size_t)snprintf(buf + n, room - n, "]");
	return n;
}

/* %B0, %B1 ...: the address of region N, so that a test can write its own message. */
static size_t expand(const char *text, char *buf, size_t room)
{
	size_t n = 0;

	for (const char *p = text; *p && n + 32 < room; p++) {
		if (p[0] == '%' && p[1] == 'B' && p[2] >= '0' && p[2] < '0' + (int)nreg) {
			n += (size_t)snprintf(buf + n, room - n, "%lu",
					      (unsigned long)(uintptr_t)reg[p[2] - '0'].addr);
			p += 2;
		} else {
			buf[n++] = *p;
		}
	}
	return n;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("connect to %s: %s", path, strerror(errno));
	return s;
}

/* Returns 0, or -1 when the handler hung up already (EPIPE, ECONNRESET). */
static int send_fds(int s, const char *msg, size_t len, const int *fds, size_t nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)msg, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		ctl.h.cmsg_level = SOL_SOCKET;
		ctl.h.cmsg_type = SCM_RIGHTS;
		ctl.h.cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(&ctl.h), fds, nfds * sizeof(int));
	}
	if (sendmsg(s, &mh, MSG_NOSIGNAL) == (ssize_t)len)
		return 0;
	if (errno == EPIPE || errno == ECONNRESET)
		return -1;
	die("sendmsg: %s", strerror(errno));
}

/* The handler hangs up on a refused connection: wait for that (5 s at most). */
static bool hung_up(int s)
{
	struct pollfd p = { .fd = s, .events = POLLIN };
	char c;

	return poll(&p, 1, 5000) == 1 && recv(s, &c, 1, MSG_DONTWAIT) <= 0;
}

struct toucher {
	pthread_t t;
	unsigned id;
	size_t from, to; /* the part of each region: [from, to) of its pages, in 1/1000ths */
	size_t bad;	 /* bytes that differed */
	size_t first_bad_region, first_bad_off;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	for (size_t r = 0; r < nreg; r++) {
		size_t pages = reg[r].size / reg[r].page;

		for (size_t p = pages * t->from / 1000 + t->id; p < pages * t->to / 1000;
		     p += nthreads) {
			const unsigned char *mem =
				(const unsigned char *)reg[r].addr + p * reg[r].page;
			const unsigned char *img = image + reg[r].offset + p * reg[r].page;

			if (memcmp(mem, img, reg[r].page) != 0) {
				if (!t->bad) {
					t->first_bad_region = r;
					t->first_bad_off = p * reg[r].page;
				}
				t->bad++;
			}
		}
	}
	return NULL;
}

/* Touch [from, to) of every region (thousandths) from the threads; die on any wrong byte. */
static void touch_all(size_t from, size_t to)
{
	struct toucher t[64];

	for (unsigned i = 0; i < nthreads; i++) {
		t[i] = (struct toucher){ .id = i, .from = from, .to = to };
		if (pthread_create(&t[i].t, NULL, touch_main, &t[i]) != 0)
			die("pthread_create failed");
	}
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(t[i].t, NULL);
		if (t[i].bad)
			die("region %zu: %zu page(s) differ from the image, the first at offset 0x%zx",
			    t[i].first_bad_region, t[i].bad, t[i].first_bad_off);
	}
}

/* A balloon: discard some pages of every region, then they must read as zero. */
static size_t balloon(void)
{
	size_t pages = 0;

	for (size_t r = 0; r < nreg; r++) {
		size_t len = reg[r].page == HUGE ? HUGE : 8 * reg[r].page;
		char *at = reg[r].addr + (reg[r].page == HUGE ? 0 : 3 * reg[r].page);

		if (madvise(at, len, MADV_DONTNEED) != 0)
			die("madvise(MADV_DONTNEED): %s", strerror(errno));
		for (size_t b = 0; b < len; b++)
			if (at[b] != 0)
				die("region %zu: a discarded page reads %#x at offset 0x%zx, not zero",
				    r, (unsigned char)at[b], (size_t)(at - reg[r].addr) + b);
		pages += len / reg[r].page;
	}
	return pages;
}

static void load_image(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) != 0)
		die("cannot open %s: %s", path, strerror(errno));
	image_len = (size_t)st.st_size;
	image = mmap(NULL, image_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (image == MAP_FAILED)
		die("cannot map %s: %s", path, strerror(errno));
	close(fd);
}

int main(int argc, char **argv)
{
	const char *regions = "1048576,2097152", *attack = NULL;
	bool huge = false;
	long as_uid = -1, delay_ms = 0;
	char msg[131072];
	size_t len;
	int uffd, s;

	if (argc < 3)
		die("usage: fc_vmm SOCKET IMAGE [--regions SIZE,...] [--huge] [--threads N] "
		    "[--delay-ms N] [--hold FILE] [--attack KIND] [--as-uid UID]");
	for (int i = 3; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (strcmp(argv[i], "--regions") == 0)
			regions = v, i++;
		else if (strcmp(argv[i], "--huge") == 0)
			huge = true;
		else if (strcmp(argv[i], "--threads") == 0)
			nthreads = (unsigned)atoi(v), i++;
		else if (strcmp(argv[i], "--delay-ms") == 0)
			delay_ms = atol(v), i++;
		else if (strcmp(argv[i], "--hold") == 0)
			hold = v, i++;
		else if (strcmp(argv[i], "--attack") == 0)
			attack = v, i++;
		else if (strcmp(argv[i], "--as-uid") == 0)
			as_uid = atol(v), i++;
		else
			die("unknown argument '%s'", argv[i]);
	}
	if (nthreads < 1 || nthreads > 64)
		die("--threads: 1 to 64");
	load_image(argv[2]);
	map_regions(regions, huge);
	uffd = make_uffd(attack && strcmp(attack, "nofeature") == 0 ? 0 :
								      UFFD_FEATURE_EVENT_REMOVE);
	register_all(uffd);
	len = message(msg, sizeof(msg));

	if (as_uid >= 0) {
		/* Connect as another user: SO_PEERCRED tells the handler the uid of connect(). */
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			if (setresgid((gid_t)as_uid, (gid_t)as_uid, (gid_t)as_uid) != 0 ||
			    setresuid((uid_t)as_uid, (uid_t)as_uid, (uid_t)as_uid) != 0)
				die("setresuid(%ld): %s", as_uid, strerror(errno));
			s = connect_to(argv[1]);
			/* Refused at once (the handler hung up before the message), or after it. */
			if (send_fds(s, msg, len, &uffd, 1) == 0 && !hung_up(s))
				die("the handler served a peer of uid %ld", as_uid);
			_exit(0);
		}
		if (pid < 0 || waitpid(pid, &st, 0) != pid)
			die("fork: %s", strerror(errno));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			exit(1);
		printf("fc_vmm: refused as uid %ld\n", as_uid);
		return 0;
	}

	s = connect_to(argv[1]);
	if (attack && strcmp(attack, "second") != 0) {
		int fds[2] = { uffd, uffd };
		size_t nfds = 1;

		if (strncmp(attack, "json:", 5) == 0) {
			len = expand(attack + 5, msg, sizeof(msg));
		} else if (strcmp(attack, "nofd") == 0) {
			nfds = 0;
		} else if (strcmp(attack, "twofds") == 0) {
			nfds = 2;
		} else if (strcmp(attack, "notuffd") == 0) {
			fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		} else if (strcmp(attack, "big") == 0) {
			len = 100000;
			memset(msg, ' ', len);
			msg[0] = '[';
		} else if (strcmp(attack, "nofeature") != 0) {
			die("unknown --attack '%s'", attack);
		}
		if (send_fds(s, msg, len, fds, nfds) == 0 && !hung_up(s))
			die("the handler did not hang up on --attack %.40s", attack);
		printf("fc_vmm: refused (%.40s)\n", attack);
		return 0;
	}
	if (send_fds(s, msg, len, &uffd, 1) != 0)
		die("the handler hung up on a good message");
	/* Firecracker keeps its end of the socket open, and its copy of the fd. */
	if (attack) { /* second: one more message, which the handler must refuse */
		if (send_fds(s, msg, len, &uffd, 1) == 0 && !hung_up(s))
			die("the handler did not hang up on a second message");
	}
	if (delay_ms)
		nanosleep(&(struct timespec){ delay_ms / 1000, (delay_ms % 1000) * 1000000 }, NULL);
	touch_all(0, 500);
	if (hold) {
		struct stat st;

		for (int i = 0; i < 6000 && stat(hold, &st) != 0; i++)
			usleep(10000);
	}
	touch_all(500, 1000);
	{
		size_t pages = balloon();

		/* Touched again after the balloon: all still right, the discarded pages zero. */
		printf("fc_vmm: %zu region(s) checked, %zu page(s) discarded read as zero\n", nreg,
		       pages);
	}
	return 0;
}
