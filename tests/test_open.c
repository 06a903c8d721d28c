/* SPDX-License-Identifier: MIT */
/* Tests for opening, negotiating and adopting userfaultfds, and the name/strerror tables. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffd.h>

#include "internal.h"
#include "testutil.h"

/* Test hook in sys.c: the @nth next call at @site fails with @err. */
void uffd_test_fail_at(int site, int nth, int err);

#define ALL_FEATURES ((uint64_t)0x1ffff)

static int raw_uffd(int flags)
{
	return (int)syscall(SYS_userfaultfd, flags);
}

static int raw_api(int fd, uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	return ioctl(fd, UFFDIO_API, &api);
}

static int raw_register(int fd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = mode,
	};

	return ioctl(fd, UFFDIO_REGISTER, &reg);
}

/* The features field of the fd's fdinfo "API:" line (with the kernel's initialised bit). */
static uint64_t fdinfo_features(int fd)
{
	char path[64], buf[1024];
	unsigned long long api = 0, feat = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "API:\t%llx:%llx:", &api, &feat) == 2)
			break;
	fclose(f);
	ck_assert_uint_eq(api, 0xaa);
	return feat;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* With RLIMIT_NOFILE at this, no new fd can be made: every lower number is taken. */
static rlim_t lowest_free_fd(void)
{
	int fd = 0;

	while (fd_open(fd))
		fd++;
	return (rlim_t)fd;
}

/* ---- probe ---- */

START_TEST(probe_kernel)
{
	uint64_t f = 0, io = 0, f2 = 0, io2 = 0;
	uint64_t want_io = (1ULL << _UFFDIO_API) | (1ULL << _UFFDIO_REGISTER) |
			   (1ULL << _UFFDIO_UNREGISTER) | (1ULL << _UFFDIO_WAKE) |
			   (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
			   (1ULL << _UFFDIO_WRITEPROTECT) | (1ULL << _UFFDIO_CONTINUE) |
			   (1ULL << _UFFDIO_POISON) | (1ULL << _UFFDIO_MOVE);
	int fds = tu_count_fds();

	ck_assert_int_eq(uffd_probe(&f, &io), 0);
	/* The probe fd is gone again. */
	ck_assert_int_eq(tu_count_fds(), fds);
	/* This 6.18 kernel offers every feature up to MOVE. */
	ck_assert_uint_eq(f & ALL_FEATURES, ALL_FEATURES);
	ck_assert(f & UFFD_FEATURE_EVENT_UNMAP);
	ck_assert(f & UFFD_FEATURE_MOVE);
	ck_assert_uint_eq(io, want_io);
	/* Cached: the same answer, and no fd made. */
	ck_assert_int_eq(uffd_probe(&f2, &io2), 0);
	ck_assert_uint_eq(f2, f);
	ck_assert_uint_eq(io2, io);
	ck_assert_int_eq(uffd_probe(NULL, NULL), 0);
	ck_assert_int_eq(uffd_probe(&f2, NULL), 0);
	ck_assert_int_eq(uffd_probe_cached(NULL, &io2), 0);
	ck_assert_uint_eq(io2, io);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

static void *probe_thread(void *arg)
{
	uint64_t *out = arg;

	if (uffd_probe(&out[0], &out[1]) != 0)
		out[0] = 0;
	return NULL;
}

START_TEST(probe_threads)
{
	uint64_t res[8][2];
	pthread_t t[8];
	int i, fds = tu_count_fds();

	for (i = 0; i < 8; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, probe_thread, res[i]), 0);
	for (i = 0; i < 8; i++)
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
	for (i = 0; i < 8; i++) {
		ck_assert_uint_eq(res[i][0] & ALL_FEATURES, ALL_FEATURES);
		ck_assert_uint_eq(res[i][0], res[0][0]);
		ck_assert_uint_eq(res[i][1], res[0][1]);
	}
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* ---- open ---- */

START_TEST(open_default)
{
	struct uffd *u = NULL;
	int fds = tu_count_fds();
	int fd;

	ck_assert_int_eq(uffd_open(&u, NULL), 0);
	ck_assert_ptr_nonnull(u);
	fd = uffd_fd(u);
	ck_assert_int_ge(fd, 0);
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	ck_assert_uint_eq(uffd_features(u), 0);
	/* The handshake is done: only the initialised bit in the kernel's view. */
	ck_assert_uint_eq(fdinfo_features(fd), 1ULL << 31);
	ck_assert_int_eq(tu_count_fds(), fds + 1);
	uffd_close(u);
	ck_assert(!fd_open(fd));
	ck_assert_int_eq(tu_count_fds(), fds);

	/* A zeroed config is the same as NULL. */
	struct uffd_config cfg = { 0 };

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), 0);
	uffd_close(u);
	uffd_close(NULL);
	ck_assert_int_eq(uffd_fd(NULL), -EINVAL);
	ck_assert_uint_eq(uffd_features(NULL), 0);
}
END_TEST

START_TEST(open_granted)
{
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP,
		.optional = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EVENT_REMOVE,
	};
	uint64_t want = cfg.required | cfg.optional;
	struct uffd *u;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	/* What was asked for, not everything the kernel supports. */
	ck_assert_uint_eq(uffd_features(u), want);
	ck_assert_uint_eq(fdinfo_features(uffd_fd(u)), want | (1ULL << 31));
	uffd_close(u);

	/* Every feature as optional: root gets all of them, EVENT_FORK included. */
	cfg.required = 0;
	cfg.optional = ALL_FEATURES;
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), ALL_FEATURES);
	ck_assert_uint_eq(fdinfo_features(uffd_fd(u)), ALL_FEATURES | (1ULL << 31));
	uffd_close(u);

	/* WP_ASYNC brings WP_UNPOPULATED with it, and the context says so. */
	cfg.optional = 0;
	cfg.required = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), cfg.required | UFFD_FEATURE_WP_UNPOPULATED);
	ck_assert_uint_eq(fdinfo_features(uffd_fd(u)) & ~(1ULL << 31), uffd_features(u));
	uffd_close(u);
}
END_TEST

START_TEST(open_bad_args)
{
	static const struct uffd_config bad[] = {
		{ .flags = 0x8 },
		{ .flags = 0x80000000u },
		{ .flags = UFFD_OPEN_SYSCALL_ONLY | UFFD_OPEN_DEVICE_ONLY },
		{ .batch = UFFD_MAX_BATCH + 1 },
		{ .spin_us = UFFD_MAX_SPIN_US + 1 },
	};
	struct uffd *u = (struct uffd *)0x1;
	int fds = tu_count_fds();
	unsigned i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(uffd_open(&u, &bad[i]), -EINVAL);
		ck_assert_ptr_eq(u, (struct uffd *)0x1);
		ck_assert_int_eq(tu_count_fds(), fds);
	}
	ck_assert_int_eq(uffd_open(NULL, NULL), -EINVAL);
	ck_assert_int_eq(uffd_open(NULL, &bad[0]), -EINVAL);
	ck_assert_int_eq(tu_count_fds(), fds);

	/* The limits themselves are fine. */
	struct uffd_config ok = { .batch = UFFD_MAX_BATCH, .spin_us = UFFD_MAX_SPIN_US };

	ck_assert_int_eq(uffd_open(&u, &ok), 0);
	uffd_close(u);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(open_required_unknown)
{
	struct uffd_config cfg = { .required = 1ULL << 40 };
	struct uffd *u = (struct uffd *)0x1;
	int fds = tu_count_fds();

	/* A bit no kernel offers yet: a newer kernel may, so it is not a bad argument. */
	ck_assert_int_eq(uffd_open(&u, &cfg), -EOPNOTSUPP);
	ck_assert_int_eq(tu_count_fds(), fds);
	cfg.required = 1ULL << 17;
	ck_assert_int_eq(uffd_open(&u, &cfg), -EOPNOTSUPP);
	cfg.required = UFFD_FEATURE_EVENT_UNMAP | (1ULL << 31);
	ck_assert_int_eq(uffd_open(&u, &cfg), -EOPNOTSUPP);
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	ck_assert_int_eq(tu_count_fds(), fds);
	ck_assert_str_eq(uffd_strerror(-EOPNOTSUPP), uffd_strerror(EOPNOTSUPP));
}
END_TEST

/* Optional bits the kernel does not offer, known or not, are dropped, not refused. */
START_TEST(open_optional_unknown_dropped)
{
	struct uffd_config cfg = { .optional = UFFD_FEATURE_EVENT_UNMAP | 1ULL << 17 | 1ULL << 40 |
					       1ULL << 63 };
	struct uffd *u = NULL, *a = NULL;
	uint64_t offered;
	int fds = tu_count_fds(), fd;

	ck_assert_int_eq(uffd_probe(&offered, NULL), 0);
	ck_assert_uint_eq(offered & (1ULL << 17 | 1ULL << 40 | 1ULL << 63), 0);
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), UFFD_FEATURE_EVENT_UNMAP & offered);
	uffd_close(u);

	/* uffd_adopt() negotiates a fresh fd the same way. */
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_adopt(&a, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(a), UFFD_FEATURE_EVENT_UNMAP & offered);
	uffd_close(a);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* ABI room: a fixed size, and every reserved word of the config must be zero. */
START_TEST(config_reserved_refused)
{
	struct uffd *u = (struct uffd *)0x1;
	int fds = tu_count_fds(), fd, fl;
	uint64_t before, after;
	unsigned i;

	ck_assert_uint_eq(sizeof(struct uffd_config), 64);
	ck_assert_uint_eq(offsetof(struct uffd_config, reserved) +
				  sizeof(((struct uffd_config *)0)->reserved),
			  64);
	fd = raw_uffd(O_CLOEXEC | UFFD_USER_MODE_ONLY);
	ck_assert_int_ge(fd, 0);
	fl = fcntl(fd, F_GETFL);
	before = fdinfo_features(fd);
	for (i = 0; i < sizeof(((struct uffd_config *)0)->reserved) / sizeof(uint32_t); i++) {
		struct uffd_config cfg = { .optional = UFFD_FEATURE_EVENT_UNMAP };

		cfg.reserved[i] = 1u << (i % 32);
		ck_assert_int_eq(uffd_open(&u, &cfg), -EINVAL);
		/* uffd_adopt() refuses it before the handshake and before the fd's flags change. */
		ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), -EINVAL);
		ck_assert_ptr_eq(u, (struct uffd *)0x1);
	}
	after = fdinfo_features(fd);
	ck_assert_uint_eq(after, before);
	ck_assert_int_eq(fcntl(fd, F_GETFL), fl);
	ck_assert_int_eq(tu_count_fds(), fds + 1);
	close(fd);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* ABI room: uffd_get_stats() fills the counters and zeroes the reserved space. */
START_TEST(stats_reserved_zeroed)
{
	struct uffd_stats st;
	struct uffd *u = NULL;
	unsigned i;

	ck_assert_uint_eq(sizeof(struct uffd_stats), 256);
	ck_assert_uint_eq(offsetof(struct uffd_stats, reserved), 10 * sizeof(uint64_t));
	ck_assert_int_eq(uffd_open(&u, NULL), 0);
	memset(&st, 0xa5, sizeof(st));
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_eq(st.reads, 0);
	ck_assert_uint_eq(st.unknown, 0);
	for (i = 0; i < sizeof(st.reserved) / sizeof(st.reserved[0]); i++)
		ck_assert_msg(st.reserved[i] == 0, "reserved[%u] = %#llx", i,
			      (unsigned long long)st.reserved[i]);
	uffd_close(u);
}
END_TEST

/*
 * No libuffd call is a cancellation point (uffd.h): a thread with a deferred cancel pending
 * runs uffd_close(), uffd_open() through each door and uffd_adopt() to their ends, and is
 * cancelled only at its own pthread_testcancel().
 */
struct cancel_run {
	struct uffd *u;	      /* closed by the thread */
	int fd;		      /* a raw userfaultfd the thread adopts */
	int steps;	      /* calls that returned */
	int rc[4];	      /* what they returned */
	struct uffd *made[3]; /* what they made, for the test to close */
};

static void *cancel_thread(void *arg)
{
	struct cancel_run *r = arg;
	struct uffd_config sys = { .flags = UFFD_OPEN_SYSCALL_ONLY };
	struct uffd_config dev = { .flags = UFFD_OPEN_DEVICE_ONLY };
	int old;

	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, &old);
	pthread_cancel(pthread_self());
	uffd_close(r->u);
	r->rc[r->steps++] = 0;
	r->rc[r->steps] = uffd_open(&r->made[0], &sys);
	r->steps++;
	r->rc[r->steps] = uffd_open(&r->made[1], &dev);
	r->steps++;
	r->rc[r->steps] = uffd_adopt(&r->made[2], r->fd, NULL);
	r->steps++;
	pthread_testcancel();
	return NULL;
}

START_TEST(no_cancellation_point)
{
	struct cancel_run r = { .fd = raw_uffd(O_CLOEXEC | UFFD_USER_MODE_ONLY) };
	int fds = tu_count_fds(), i;
	pthread_t t;
	void *ret;

	ck_assert_int_ge(r.fd, 0);
	ck_assert_int_eq(uffd_open(&r.u, NULL), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, cancel_thread, &r), 0);
	ck_assert_int_eq(pthread_join(t, &ret), 0);
	ck_assert_msg(r.steps == 4,
		      "cancelled inside call %d (0 uffd_close, 1 and 2 uffd_open, "
		      "3 uffd_adopt)",
		      r.steps);
	ck_assert_ptr_eq(ret, PTHREAD_CANCELED);
	ck_assert_int_eq(r.rc[1], 0);
	/* The device is root's alone here; a caller who may not use it is refused, not cancelled. */
	ck_assert(r.rc[2] == 0 || r.rc[2] == -EPERM || r.rc[2] == -ENOSYS);
	ck_assert_int_eq(r.rc[3], 0);
	for (i = 0; i < 3; i++)
		uffd_close(r.made[i]);
	/* The adopted fd went with its context. */
	ck_assert_int_eq(tu_count_fds(), fds - 1);
}
END_TEST

/* Failures after the fd exists must close it: context allocation, and fd exhaustion. */
START_TEST(open_failure_paths_no_leak)
{
	struct uffd_config cfg = { .optional = UFFD_FEATURE_EVENT_UNMAP };
	struct uffd *u = (struct uffd *)0x1;
	struct rlimit old, lim;
	int fds;

	ck_assert_int_eq(uffd_probe(NULL, NULL), 0);
	fds = tu_count_fds();
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(uffd_open(&u, &cfg), -ENOMEM);
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	ck_assert_int_eq(tu_count_fds(), fds);

	/* No fd left to make: -EMFILE, from every door. */
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = lowest_free_fd();
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
	ck_assert_int_eq(uffd_open(&u, &cfg), -EMFILE);
	cfg.flags = UFFD_OPEN_DEVICE_ONLY;
	ck_assert_int_eq(uffd_open(&u, &cfg), -EMFILE);
	cfg.flags = UFFD_OPEN_SYSCALL_ONLY;
	ck_assert_int_eq(uffd_open(&u, &cfg), -EMFILE);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	ck_assert_int_eq(tu_count_fds(), fds);

	/* And it works again once fds are free. */
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	uffd_close(u);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* An uncached probe that cannot make its fd fails, and is not cached as a failure. */
START_TEST(probe_failure_not_cached)
{
	struct rlimit old, lim;
	uint64_t f = 0;
	int fds = tu_count_fds();

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	lim.rlim_cur = lowest_free_fd();
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
	ck_assert_int_eq(uffd_probe(&f, NULL), -EMFILE);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_int_eq(uffd_probe(&f, NULL), 0);
	ck_assert_uint_eq(f & ALL_FEATURES, ALL_FEATURES);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(open_doors)
{
	static const unsigned flags[] = {
		UFFD_OPEN_SYSCALL_ONLY,
		UFFD_OPEN_DEVICE_ONLY,
		UFFD_OPEN_SYSCALL_ONLY | UFFD_OPEN_KERNEL_FAULTS,
		UFFD_OPEN_DEVICE_ONLY | UFFD_OPEN_KERNEL_FAULTS,
		UFFD_OPEN_KERNEL_FAULTS,
	};
	int fds = tu_count_fds();
	unsigned i;

	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		struct uffd_config cfg = { .flags = flags[i],
					   .required = UFFD_FEATURE_EVENT_UNMAP };
		struct uffd *u;
		int fd;

		ck_assert_msg(uffd_open(&u, &cfg) == 0, "flags 0x%x", flags[i]);
		fd = uffd_fd(u);
		ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
		ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		ck_assert_uint_eq(uffd_features(u), UFFD_FEATURE_EVENT_UNMAP);
		uffd_close(u);
	}
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* ---- user-mode-only and kernel faults ---- */

static void make_pipe_with(int p[2], const char *msg)
{
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(write(p[1], msg, strlen(msg)), (ssize_t)strlen(msg));
}

START_TEST(user_mode_only_default)
{
	size_t ps = tu_page();
	struct uffd *u;
	char *page = tu_map_anon(ps);
	int p[2];

	ck_assert_int_eq(uffd_open(&u, NULL), 0);
	ck_assert_int_eq(raw_register(uffd_fd(u), page, ps, UFFDIO_REGISTER_MODE_MISSING), 0);
	make_pipe_with(p, "hello");
	/* The kernel's own copy into the page is not trapped: the syscall fails instead. */
	errno = 0;
	ck_assert_int_eq(read(p[0], page, 5), -1);
	ck_assert_int_eq(errno, EFAULT);
	/* No message was queued for it. */
	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };

	ck_assert_int_eq(poll(&pf, 1, 0), 0);
	close(p[0]);
	close(p[1]);
	uffd_close(u);
	munmap(page, ps);
}
END_TEST

struct reader {
	int fd;
	char *dst;
	ssize_t ret;
	int err;
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;

	r->ret = read(r->fd, r->dst, 5);
	r->err = errno;
	return NULL;
}

START_TEST(kernel_faults_delivered)
{
	struct uffd_config cfg = { .flags = UFFD_OPEN_KERNEL_FAULTS };
	size_t ps = tu_page();
	char *page = tu_map_anon(ps);
	char *src = tu_map_anon(ps);
	struct uffd_msg msg;
	struct reader r;
	struct uffd *u;
	pthread_t t;
	int p[2];

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_int_eq(raw_register(uffd_fd(u), page, ps, UFFDIO_REGISTER_MODE_MISSING), 0);
	make_pipe_with(p, "hello");
	r = (struct reader){ .fd = p[0], .dst = page + 100 };
	ck_assert_int_eq(pthread_create(&t, NULL, reader_thread, &r), 0);

	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };

	ck_assert_int_eq(poll(&pf, 1, 5000), 1);
	ck_assert_int_eq(read(uffd_fd(u), &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	ck_assert_uint_eq(msg.event, UFFD_EVENT_PAGEFAULT);
	ck_assert_uint_eq(msg.arg.pagefault.address, (uintptr_t)page);
	ck_assert(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);

	memset(src, 'x', ps);
	struct uffdio_copy cp = { .dst = (uintptr_t)page, .src = (uintptr_t)src, .len = ps };

	ck_assert_int_eq(ioctl(uffd_fd(u), UFFDIO_COPY, &cp), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(r.ret, 5);
	ck_assert_int_eq(memcmp(page + 100, "hello", 5), 0);
	ck_assert_int_eq(page[0], 'x');
	ck_assert_int_eq(page[105], 'x');
	close(p[0]);
	close(p[1]);
	uffd_close(u);
	munmap(page, ps);
	munmap(src, ps);
}
END_TEST

/* ---- the unprivileged path ---- */

/* Checks made by the unprivileged child; it exits with the number of the first that failed. */
#define CHILD_CHECK(n, cond)      \
	do {                      \
		if (!(cond))      \
			_exit(n); \
	} while (0)

static void unprivileged_child(void)
{
	struct uffd_config cfg = { 0 };
	uint64_t f = 0;
	struct uffd *u = NULL;
	const char *msg;
	int fds;

	CHILD_CHECK(2, setgroups(0, NULL) == 0);
	CHILD_CHECK(3, setgid(65534) == 0);
	CHILD_CHECK(4, setuid(65534) == 0);
	CHILD_CHECK(5, getuid() == 65534 && geteuid() == 65534);
	fds = tu_count_fds();

	/* The probe works for everyone (user-mode-only fd). */
	CHILD_CHECK(10, uffd_probe(&f, NULL) == 0);
	CHILD_CHECK(11, (f & ALL_FEATURES) == ALL_FEATURES);
	CHILD_CHECK(12, tu_count_fds() == fds);

	/* The default open works for everyone. */
	CHILD_CHECK(20, uffd_open(&u, NULL) == 0);
	CHILD_CHECK(21, fcntl(uffd_fd(u), F_GETFL) & O_NONBLOCK);
	uffd_close(u);
	cfg.flags = UFFD_OPEN_SYSCALL_ONLY;
	CHILD_CHECK(22, uffd_open(&u, &cfg) == 0);
	uffd_close(u);
	CHILD_CHECK(23, tu_count_fds() == fds);

	/* Kernel faults need privilege: -EPERM and a sentence naming the fixes. */
	u = (struct uffd *)0x1;
	cfg.flags = UFFD_OPEN_KERNEL_FAULTS;
	CHILD_CHECK(30, uffd_open(&u, &cfg) == -EPERM);
	CHILD_CHECK(31, u == (struct uffd *)0x1);
	CHILD_CHECK(32, tu_count_fds() == fds);
	msg = uffd_strerror(-EPERM);
	CHILD_CHECK(33, strstr(msg, "root") && strstr(msg, "CAP_SYS_PTRACE"));
	CHILD_CHECK(34, strstr(msg, "vm.unprivileged_userfaultfd=1"));
	CHILD_CHECK(35, strstr(msg, "/dev/userfaultfd"));
	CHILD_CHECK(36, strstr(msg, "UFFD_OPEN_KERNEL_FAULTS"));
	cfg.flags = UFFD_OPEN_KERNEL_FAULTS | UFFD_OPEN_SYSCALL_ONLY;
	CHILD_CHECK(37, uffd_open(&u, &cfg) == -EPERM);
	cfg.flags = UFFD_OPEN_KERNEL_FAULTS | UFFD_OPEN_DEVICE_ONLY;
	CHILD_CHECK(38, uffd_open(&u, &cfg) == -EPERM);
	/* The device is root-only here (crw-------): EACCES is reported as -EPERM. */
	cfg.flags = UFFD_OPEN_DEVICE_ONLY;
	CHILD_CHECK(39, uffd_open(&u, &cfg) == -EPERM);
	CHILD_CHECK(40, tu_count_fds() == fds);

	/* EVENT_FORK needs CAP_SYS_PTRACE: dropped when optional ... */
	cfg.flags = 0;
	cfg.optional = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP;
	CHILD_CHECK(50, uffd_open(&u, &cfg) == 0);
	CHILD_CHECK(51, uffd_features(u) == UFFD_FEATURE_EVENT_UNMAP);
	uffd_close(u);
	cfg.optional = ALL_FEATURES;
	CHILD_CHECK(52, uffd_open(&u, &cfg) == 0);
	CHILD_CHECK(53, uffd_features(u) == (ALL_FEATURES & ~(uint64_t)UFFD_FEATURE_EVENT_FORK));
	uffd_close(u);
	/* ... and -EPERM when required. */
	u = (struct uffd *)0x1;
	cfg.optional = UFFD_FEATURE_EVENT_UNMAP;
	cfg.required = UFFD_FEATURE_EVENT_FORK;
	CHILD_CHECK(54, uffd_open(&u, &cfg) == -EPERM);
	CHILD_CHECK(55, u == (struct uffd *)0x1);
	CHILD_CHECK(56, tu_count_fds() == fds);

	/* Adopting a fresh fd negotiates the same way, and a failure leaves the fd usable. */
	int fd = raw_uffd(O_CLOEXEC | UFFD_USER_MODE_ONLY);

	CHILD_CHECK(60, fd >= 0);
	CHILD_CHECK(61, uffd_adopt(&u, fd, &cfg) == -EPERM);
	CHILD_CHECK(62, fd_open(fd));
	cfg.required = 0;
	cfg.optional = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_THREAD_ID;
	CHILD_CHECK(63, uffd_adopt(&u, fd, &cfg) == 0);
	CHILD_CHECK(64, uffd_features(u) == UFFD_FEATURE_THREAD_ID);
	uffd_close(u);
	CHILD_CHECK(65, tu_count_fds() == fds);
	_exit(0);
}

START_TEST(unprivileged)
{
	const char *knob = "/proc/sys/vm/unprivileged_userfaultfd";
	long old = tu_read_long(knob);
	int status;
	pid_t pid;

	if (getuid() != 0)
		return; /* the suite's main() skips this case when not root */
	ck_assert_int_ge(old, 0);
	/* The knob must be off for "kernel faults need privilege" to hold. */
	if (old != 0)
		ck_assert_int_eq(tu_write_long(knob, 0), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		unprivileged_child();
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (old != 0)
		ck_assert_int_eq(tu_write_long(knob, old), 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "unprivileged child failed at check %d (status 0x%x)",
		      WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
}
END_TEST

/* ---- adopt ---- */

START_TEST(adopt_fresh_fd_negotiates)
{
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_UNMAP,
		.optional = UFFD_FEATURE_THREAD_ID,
	};
	int fds = tu_count_fds();
	struct uffd *u;
	int fd = raw_uffd(UFFD_USER_MODE_ONLY); /* blocking, inherited across exec */

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_eq(fdinfo_features(fd), 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	ck_assert_int_eq(uffd_fd(u), fd);
	ck_assert_uint_eq(uffd_features(u), cfg.required | cfg.optional);
	ck_assert_uint_eq(fdinfo_features(fd), cfg.required | cfg.optional | (1ULL << 31));
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* The context owns it now. */
	uffd_close(u);
	ck_assert(!fd_open(fd));
	ck_assert_int_eq(tu_count_fds(), fds);

	/* NULL cfg: features 0. */
	fd = raw_uffd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert_uint_eq(uffd_features(u), 0);
	ck_assert_uint_eq(fdinfo_features(fd), 1ULL << 31);
	uffd_close(u);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(adopt_done_fd_learns)
{
	uint64_t feat = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EXACT_ADDRESS;
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_REMOVE };
	int fds = tu_count_fds();
	struct uffd *u;
	int fd = raw_uffd(UFFD_USER_MODE_ONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(raw_api(fd, feat), 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), feat);
	ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	uffd_close(u);
	ck_assert(!fd_open(fd));

	/* The kernel's own addition of WP_UNPOPULATED to WP_ASYNC is learned too. */
	fd = raw_uffd(O_NONBLOCK | UFFD_USER_MODE_ONLY);
	ck_assert_int_eq(raw_api(fd, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_PAGEFAULT_FLAG_WP), 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert_uint_eq(uffd_features(u), UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
						    UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	uffd_close(u);

	/* A required feature the fd was not granted: -EOPNOTSUPP, fd left as it was. */
	fd = raw_uffd(UFFD_USER_MODE_ONLY);
	ck_assert_int_eq(raw_api(fd, feat), 0);
	u = (struct uffd *)0x1;
	cfg.required = UFFD_FEATURE_EVENT_UNMAP;
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), -EOPNOTSUPP);
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	ck_assert(fd_open(fd));
	ck_assert(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
	ck_assert(!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
	ck_assert_uint_eq(fdinfo_features(fd), feat | (1ULL << 31));
	close(fd);
	ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(adopt_failures)
{
	struct uffd_config bad = { .flags = 0x40 };
	struct uffd *u = (struct uffd *)0x1;
	int p[2], efd, nul, fd, fds;

	ck_assert_int_eq(pipe(p), 0);
	efd = eventfd(0, 0);
	nul = open("/dev/null", O_RDWR);
	ck_assert_int_ge(efd, 0);
	ck_assert_int_ge(nul, 0);
	fds = tu_count_fds();

	/* Not a userfaultfd: -EINVAL, and the fd is untouched. */
	ck_assert_int_eq(uffd_adopt(&u, efd, NULL), -EINVAL);
	ck_assert_int_eq(uffd_adopt(&u, p[0], NULL), -EINVAL);
	ck_assert_int_eq(uffd_adopt(&u, p[1], NULL), -EINVAL);
	ck_assert_int_eq(uffd_adopt(&u, nul, NULL), -EINVAL);
	ck_assert(fd_open(efd) && fd_open(p[0]) && fd_open(nul));
	ck_assert(!(fcntl(efd, F_GETFL) & O_NONBLOCK));
	ck_assert(!(fcntl(p[0], F_GETFD) & FD_CLOEXEC));
	ck_assert_int_eq(tu_count_fds(), fds);

	/* Closed and negative fds, NULL out, bad cfg. */
	fd = raw_uffd(UFFD_USER_MODE_ONLY);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), -EBADF);
	ck_assert_int_eq(uffd_adopt(&u, 100000, NULL), -EBADF);
	ck_assert_int_eq(uffd_adopt(&u, -1, NULL), -EINVAL);
	fd = raw_uffd(UFFD_USER_MODE_ONLY);
	ck_assert_int_eq(uffd_adopt(NULL, fd, NULL), -EINVAL);
	ck_assert_int_eq(uffd_adopt(&u, fd, &bad), -EINVAL);
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	/* Nothing happened to the fd: its handshake is still to be done. */
	ck_assert_uint_eq(fdinfo_features(fd), 0);

	/* A required feature no kernel offers: the handshake is not consumed. */
	bad = (struct uffd_config){ .required = 1ULL << 40 };
	ck_assert_int_eq(uffd_adopt(&u, fd, &bad), -EOPNOTSUPP);
	ck_assert_uint_eq(fdinfo_features(fd), 0);
	/* Failing context allocation leaves it untouched too. */
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), -ENOMEM);
	ck_assert_uint_eq(fdinfo_features(fd), 0);
	ck_assert(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
	ck_assert_ptr_eq(u, (struct uffd *)0x1);
	ck_assert_int_eq(raw_api(fd, UFFD_FEATURE_EVENT_UNMAP), 0);
	close(fd);

	close(p[0]);
	close(p[1]);
	close(efd);
	close(nul);
}
END_TEST

/* fork() blocks until the FORK event is read, so a helper thread forks while the test reads. */
static void *fork_thread(void *arg)
{
	pid_t *pid = arg;

	*pid = fork();
	if (*pid == 0)
		_exit(0);
	return NULL;
}

/* The fd of a FORK event, installed in this process by read(), adopted: features as granted. */
START_TEST(adopt_fork_child_fd)
{
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP,
	};
	size_t ps = tu_page();
	char *page = tu_map_anon(ps);
	struct uffd_msg msg;
	struct uffd *u, *child;
	pthread_t t;
	int status;
	pid_t pid = -1;

	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_int_eq(raw_register(uffd_fd(u), page, ps, UFFDIO_REGISTER_MODE_MISSING), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, fork_thread, &pid), 0);

	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };

	ck_assert_int_eq(poll(&pf, 1, 5000), 1);
	ck_assert_int_eq(read(uffd_fd(u), &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	ck_assert_uint_eq(msg.event, UFFD_EVENT_FORK);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(uffd_adopt(&child, (int)msg.arg.fork.ufd, NULL), 0);
	ck_assert_uint_eq(uffd_features(child), cfg.required);
	uffd_close(child);
	ck_assert(!fd_open((int)msg.arg.fork.ufd));
	uffd_close(u);
	munmap(page, ps);
}
END_TEST

/* ---- names ---- */

START_TEST(feature_names)
{
	static const char *const names[17] = {
		"PAGEFAULT_FLAG_WP",
		"EVENT_FORK",
		"EVENT_REMAP",
		"EVENT_REMOVE",
		"MISSING_HUGETLBFS",
		"MISSING_SHMEM",
		"EVENT_UNMAP",
		"SIGBUS",
		"THREAD_ID",
		"MINOR_HUGETLBFS",
		"MINOR_SHMEM",
		"EXACT_ADDRESS",
		"WP_HUGETLBFS_SHMEM",
		"WP_UNPOPULATED",
		"POISON",
		"WP_ASYNC",
		"MOVE",
	};
	static const char *const since[17] = {
		"5.7",	"4.11", "4.11", "4.11", "4.11", "4.11", "4.11", "4.14", "4.14",
		"5.13", "5.14", "5.18", "5.19", "6.4",	"6.6",	"6.7",	"6.8",
	};
	unsigned i;

	for (i = 0; i < 17; i++) {
		ck_assert_str_eq(uffd_feature_name(1ULL << i), names[i]);
		ck_assert_str_eq(uffd_feature_since(1ULL << i), since[i]);
	}
	ck_assert_str_eq(uffd_feature_name(UFFD_FEATURE_EVENT_UNMAP), "EVENT_UNMAP");
	ck_assert_str_eq(uffd_feature_name(UFFD_FEATURE_MOVE), "MOVE");
	for (i = 17; i < 64; i++) {
		ck_assert_ptr_null(uffd_feature_name(1ULL << i));
		ck_assert_ptr_null(uffd_feature_since(1ULL << i));
	}
	ck_assert_ptr_null(uffd_feature_name(0));
	ck_assert_ptr_null(uffd_feature_name(3));
	ck_assert_ptr_null(uffd_feature_name(ALL_FEATURES));
	ck_assert_ptr_null(uffd_feature_since(0));
	ck_assert_ptr_null(uffd_feature_since(0x41));
}
END_TEST

START_TEST(ioctl_names)
{
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_REGISTER), "REGISTER");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_UNREGISTER), "UNREGISTER");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_WAKE), "WAKE");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_COPY), "COPY");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_ZEROPAGE), "ZEROPAGE");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_MOVE), "MOVE");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_WRITEPROTECT), "WRITEPROTECT");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_CONTINUE), "CONTINUE");
	ck_assert_str_eq(uffd_ioctl_name(_UFFDIO_POISON), "POISON");
	ck_assert_str_eq(uffd_ioctl_name(0x3F), "API");
	ck_assert_ptr_null(uffd_ioctl_name(0x09));
	ck_assert_ptr_null(uffd_ioctl_name(0x3E));
	ck_assert_ptr_null(uffd_ioctl_name(0x40));
	ck_assert_ptr_null(uffd_ioctl_name(~0u));

	/* Every bit uffd_probe() can report has a name. */
	uint64_t io;

	ck_assert_int_eq(uffd_probe(NULL, &io), 0);
	for (unsigned i = 0; i < 64; i++)
		if (io & (1ULL << i))
			ck_assert_ptr_nonnull(uffd_ioctl_name(i));
}
END_TEST

START_TEST(strerror_codes)
{
	/* Every code the library's header lists. */
	static const int codes[] = {
		EINVAL, EOPNOTSUPP, EPERM,  ENOSYS, EMFILE, ENFILE, ENOMEM, EBADF,
		EEXIST, ENOENT,	    EAGAIN, ESRCH,  EFAULT, EBUSY,  EINTR,  EPROTO,
	};
	const char *generic = uffd_strerror(-12345);
	const char *perm = uffd_strerror(-EPERM);
	unsigned i, j;

	ck_assert_ptr_nonnull(generic);
	ck_assert(strlen(generic) > 10);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = uffd_strerror(-codes[i]);

		ck_assert_ptr_nonnull(s);
		ck_assert_msg(s != generic, "code %d has no sentence of its own", codes[i]);
		ck_assert(strlen(s) > 10);
		ck_assert_ptr_eq(uffd_strerror(codes[i]), s);
		for (j = 0; j < i; j++)
			ck_assert_ptr_ne(uffd_strerror(-codes[j]), s);
	}
	ck_assert_ptr_nonnull(strstr(perm, "root"));
	ck_assert_ptr_nonnull(strstr(perm, "CAP_SYS_PTRACE"));
	ck_assert_ptr_nonnull(strstr(perm, "vm.unprivileged_userfaultfd=1"));
	ck_assert_ptr_nonnull(strstr(perm, "/dev/userfaultfd"));
	ck_assert_ptr_nonnull(strstr(perm, "UFFD_OPEN_KERNEL_FAULTS"));
	ck_assert_ptr_nonnull(strstr(uffd_strerror(-EOPNOTSUPP), "feature"));
	ck_assert_ptr_nonnull(strstr(uffd_strerror(-ESRCH), "exited"));
	ck_assert_ptr_nonnull(uffd_strerror(0));
	ck_assert_ptr_eq(uffd_strerror(12345), generic);
	ck_assert_ptr_eq(uffd_strerror(-2147483647 - 1), generic);
	ck_assert_ptr_eq(uffd_strerror(2147483647), generic);
}
END_TEST

START_TEST(version_string)
{
	unsigned a, b, c;
	char end;

	ck_assert_int_eq(sscanf(uffd_version(), "%u.%u.%u%c", &a, &b, &c, &end), 3);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("open");
	TCase *tc;
	/* Not uffd_probe(): every test must start with the probe not yet cached. */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		tu_skip("no userfaultfd on this machine: %s", strerror(errno));
	close(fd);
	if (getuid() != 0)
		tu_skip("these tests need root (doors, EVENT_FORK, dropping to nobody)");

	tc = tu_tcase("probe", 10, NULL, NULL);
	tcase_add_test(tc, probe_kernel);
	tcase_add_test(tc, probe_threads);
	tcase_add_test(tc, probe_failure_not_cached);
	suite_add_tcase(s, tc);

	tc = tu_tcase("open", 10, NULL, NULL);
	tcase_add_test(tc, open_default);
	tcase_add_test(tc, open_granted);
	tcase_add_test(tc, open_bad_args);
	tcase_add_test(tc, open_required_unknown);
	tcase_add_test(tc, open_optional_unknown_dropped);
	tcase_add_test(tc, config_reserved_refused);
	tcase_add_test(tc, stats_reserved_zeroed);
	tcase_add_test(tc, open_failure_paths_no_leak);
	tcase_add_test(tc, open_doors);
	suite_add_tcase(s, tc);

	tc = tu_tcase("cancel", 10, NULL, NULL);
	tcase_add_test(tc, no_cancellation_point);
	suite_add_tcase(s, tc);

	tc = tu_tcase("faults", 10, NULL, NULL);
	tcase_add_test(tc, user_mode_only_default);
	tcase_add_test(tc, kernel_faults_delivered);
	suite_add_tcase(s, tc);

	tc = tu_tcase("unprivileged", 20, NULL, NULL);
	tcase_add_test(tc, unprivileged);
	suite_add_tcase(s, tc);

	tc = tu_tcase("adopt", 10, NULL, NULL);
	tcase_add_test(tc, adopt_fresh_fd_negotiates);
	tcase_add_test(tc, adopt_done_fd_learns);
	tcase_add_test(tc, adopt_failures);
	if (!UNDER_TSAN) /* forks while this process reads the FORK event: see testutil.h */
		tcase_add_test(tc, adopt_fork_child_fd);
	suite_add_tcase(s, tc);

	tc = tu_tcase("names", 10, NULL, NULL);
	tcase_add_test(tc, feature_names);
	tcase_add_test(tc, ioctl_names);
	tcase_add_test(tc, strerror_codes);
	tcase_add_test(tc, version_string);
	suite_add_tcase(s, tc);

	return tu_run(s);
}
