/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check test programs. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

bool tu_strict(void)
{
	const char *s = getenv("LIBUFFD_TEST_STRICT");

	return s && *s && strcmp(s, "0") != 0;
}

void tu_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr,
		tu_strict() ? "FAIL (skip not allowed, LIBUFFD_TEST_STRICT=1): " : "SKIP: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(tu_strict() ? 1 : 77);
}

#ifndef TU_HARDWARE_ONLY_LIST
#define TU_HARDWARE_ONLY_LIST "tests/hardware-only.txt"
#endif

/* The list's lines: "<id> <test> <what>", comments after '#'. Only the first word counts here. */
bool tu_hardware_only(const char *id)
{
	FILE *f = fopen(TU_HARDWARE_ONLY_LIST, "r");
	char line[512], word[128];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = line[0] != '#' && sscanf(line, "%127s", word) == 1 && strcmp(word, id) == 0;
	fclose(f);
	return found;
}

void tu_not_applicable(const char *id, const char *fmt, ...)
{
	bool fail = tu_strict() && !tu_hardware_only(id);
	va_list ap;

	va_start(ap, fmt);
	if (fail)
		fprintf(stderr,
			"FAIL (skip not allowed, LIBUFFD_TEST_STRICT=1; '%s' is not in %s): ", id,
			TU_HARDWARE_ONLY_LIST);
	fprintf(stderr, "NOT APPLICABLE on this hardware [%s]: ", id);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(fail ? 1 : 77);
}

void tu_require_uffd(const struct uffd_config *cfg, const char *with)
{
	struct uffd *u;
	int r = uffd_open(&u, cfg);

	if (r && with)
		tu_skip("cannot open a userfaultfd with %s: %s", with, uffd_strerror(r));
	if (r)
		tu_skip("cannot open a userfaultfd: %s", uffd_strerror(r));
	uffd_close(u);
}

TCase *tu_tcase(const char *name, int timeout, void (*setup)(void), void (*teardown)(void))
{
	TCase *tc = tcase_create(name);

	if (setup || teardown)
		tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, timeout);
	return tc;
}

int tu_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

int tu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

size_t tu_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

void *tu_map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	return p;
}

void *tu_map_shmem(size_t len, bool shared, int *memfd_out)
{
	int fd = memfd_create("libuffd-test", MFD_CLOEXEC);
	void *p;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	if (memfd_out)
		*memfd_out = fd;
	else
		close(fd);
	return p;
}

long tu_read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

int tu_write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%ld\n", v) > 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

long tu_hugepages_reserve(long n)
{
	const char *nr = "/proc/sys/vm/nr_hugepages";
	long old = tu_read_long(nr);
	long fr = tu_read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");

	if (old < 0)
		return -1;
	if (fr >= n)
		return old;
	if (tu_write_long(nr, old + (n - (fr < 0 ? 0 : fr))) != 0)
		return -1;
	fr = tu_read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
	if (fr < n) {
		tu_write_long(nr, old);
		return -1;
	}
	return old;
}

void tu_hugepages_restore(long old)
{
	if (old >= 0)
		tu_write_long("/proc/sys/vm/nr_hugepages", old);
}

static void hugepages_path(char *buf, size_t len, unsigned long kb, const char *file)
{
	snprintf(buf, len, "/sys/kernel/mm/hugepages/hugepages-%lukB/%s", kb, file);
}

long tu_hugepages_reserve_kb(unsigned long kb, long n)
{
	char nr[128], fr_path[128];
	long old, fr;

	hugepages_path(nr, sizeof(nr), kb, "nr_hugepages");
	hugepages_path(fr_path, sizeof(fr_path), kb, "free_hugepages");
	old = tu_read_long(nr);
	if (old < 0)
		return access(nr, F_OK) == 0 ? -1 : -2;
	fr = tu_read_long(fr_path);
	if (fr >= n)
		return old;
	if (tu_write_long(nr, old + (n - (fr < 0 ? 0 : fr))) != 0) {
		tu_write_long(nr, old);
		return -1;
	}
	if (tu_read_long(fr_path) < n) {
		tu_write_long(nr, old);
		return -1;
	}
	return old;
}

void tu_hugepages_restore_kb(unsigned long kb, long old)
{
	char nr[128];

	hugepages_path(nr, sizeof(nr), kb, "nr_hugepages");
	if (old >= 0)
		tu_write_long(nr, old);
}

double tu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tu_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int tu_wait_child(pid_t pid, int timeout_ms)
{
	double end = tu_now() + timeout_ms / 1000.0;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0)
			return -1;
		if (tu_now() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		tu_sleep_ms(2);
	}
}

int tu_send_fd(int sock, int fd, const void *buf, size_t len)
{
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (fd >= 0) {
		memset(ctl, 0, sizeof(ctl));
		mh.msg_control = ctl;
		mh.msg_controllen = sizeof(ctl);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, 0) == (ssize_t)len ? 0 : -1;
}

int tu_recv_fd(int sock, int *fd, void *buf, size_t len)
{
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)
	};
	struct cmsghdr *cm;

	*fd = -1;
	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) != (ssize_t)len)
		return -1;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
	return 0;
}

struct uffd *tu_open(uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u = NULL;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	return u;
}

void tu_kernel_register(struct uffd *u, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = mode,
	};

	ck_assert_int_eq(ioctl(uffd_fd(u), UFFDIO_REGISTER, &r), 0);
}

static void *touch_fn(void *arg)
{
	struct tu_toucher *t = arg;

	if (t->write)
		*t->addr = t->value;
	else
		t->value = *t->addr;
	atomic_store(&t->done, true);
	return NULL;
}

void tu_touch_start(struct tu_toucher *t, void *addr, bool write, char value)
{
	t->addr = addr;
	t->write = write;
	t->value = value;
	atomic_store(&t->done, false);
	ck_assert_int_eq(pthread_create(&t->t, NULL, touch_fn, t), 0);
}

void tu_touch_join(struct tu_toucher *t)
{
	ck_assert_int_eq(pthread_join(t->t, NULL), 0);
	ck_assert(atomic_load(&t->done));
}

struct uffd_msg tu_expect_fault(struct uffd *u, void *addr, uint64_t flags)
{
	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };
	struct uffd_msg m;

	ck_assert_int_eq(poll(&pf, 1, 5000), 1);
	ck_assert_int_eq(read(uffd_fd(u), &m, sizeof(m)), (ssize_t)sizeof(m));
	ck_assert_uint_eq(m.event, UFFD_EVENT_PAGEFAULT);
	ck_assert_uint_eq(m.arg.pagefault.address, (uintptr_t)addr);
	ck_assert_uint_eq(m.arg.pagefault.flags & flags, flags);
	return m;
}
