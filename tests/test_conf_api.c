/* SPDX-License-Identifier: MIT */
/* Kernel conformance: the API handshake through both doors, and register-ioctls on every
 * memory type (the kernel selftests' "UFFDIO_API" and "register-ioctls"), through libuffd. */
#include <sys/ioctl.h>

#include "conf.h"

static bool huge_ok;

/* ---- API ---- */

/*
 * A userfaultfd made by some other program, as uffd_adopt() receives it: through the syscall or
 * through /dev/userfaultfd, handshake not done. Only these raw fds are touched without libuffd:
 * they stand for what another process did before handing the fd over.
 */
static int foreign_fd(unsigned door)
{
	int flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
	int fd, dev;

	if (door == UFFD_OPEN_SYSCALL_ONLY)
		return (int)syscall(SYS_userfaultfd, flags);
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	close(dev);
	return fd;
}

static int raw_api(int fd, uint64_t api, uint64_t features)
{
	struct uffdio_api a = { .api = api, .features = features };

	return ioctl(fd, UFFDIO_API, &a) ? -errno : 0;
}

static const unsigned doors[2] = { UFFD_OPEN_SYSCALL_ONLY, UFFD_OPEN_DEVICE_ONLY };

START_TEST(api_handshake)
{
	const unsigned door = doors[_i];
	uint64_t offered = 0, ioctls = 0;
	struct uffd_config cfg = { .flags = door };
	struct uffd *u = NULL, *v = NULL;
	int fds = tu_count_fds();
	int fd, fl;

	cov_scenario = "api";
	ck_assert_int_eq(uffd_probe(&offered, &ioctls), 0);

	/* The plain handshake: nothing asked, nothing granted; the fd non-blocking, close-on-exec. */
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), 0);
	fd = uffd_fd(u);
	fl = fcntl(fd, F_GETFL);
	ck_assert(fl & O_NONBLOCK);
	ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	uffd_close(u);

	/* Unknown feature bits, which a newer kernel may offer: required ones are -EOPNOTSUPP,
	 * optional ones are dropped. Neither leaves an fd behind. */
	cfg.required = 1ull << 63;
	ck_assert_int_eq(uffd_open(&u, &cfg), -EOPNOTSUPP);
	cfg.required = 1ull << 17; /* the first bit after Linux 6.18's */
	ck_assert_int_eq(uffd_open(&u, &cfg), -EOPNOTSUPP);
	cfg.required = 0;
	cfg.optional = 1ull << 63 | 1ull << 17;
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), 0);
	uffd_close(u);
	cfg.optional = 0;
	ck_assert_int_eq(tu_count_fds(), fds);

	/* Everything offered, in one handshake (EVENT_FORK needs CAP_SYS_PTRACE). */
	cfg.required = offered;
	if (getuid() == 0) {
		ck_assert_int_eq(uffd_open(&u, &cfg), 0);
		ck_assert_uint_eq(uffd_features(u), offered);
		uffd_close(u);
	} else {
		ck_assert_int_eq(uffd_open(&u, &cfg), -EPERM);
	}
	cfg.required = 0;

	/* A wrong API value and an unknown feature bit are refused by the kernel, and a refused
	 * handshake does not use the fd up: uffd_adopt() then negotiates on it. */
	fd = foreign_fd(door);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(raw_api(fd, 0xab, 0), -EINVAL);
	ck_assert_int_eq(raw_api(fd, UFFD_API, 1ull << 63), -EINVAL);
	cfg.required = UFFD_FEATURE_THREAD_ID;
	ck_assert_int_eq(uffd_adopt(&u, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(u), UFFD_FEATURE_THREAD_ID);

	/* A second handshake is refused by the kernel: adopting a handshaken fd learns what it was
	 * granted, and a requirement it lacks cannot be negotiated any more (the fd stays the
	 * caller's). */
	fd = dup(uffd_fd(u));
	ck_assert_int_ge(fd, 0);
	cfg.required = UFFD_FEATURE_SIGBUS;
	ck_assert_int_eq(uffd_adopt(&v, fd, &cfg), -EOPNOTSUPP);
	ck_assert_int_eq(raw_api(fd, UFFD_API, 0), -EINVAL);
	cfg.required = UFFD_FEATURE_THREAD_ID;
	ck_assert_int_eq(uffd_adopt(&v, fd, &cfg), 0);
	ck_assert_uint_eq(uffd_features(v), UFFD_FEATURE_THREAD_ID);
	uffd_close(v);
	uffd_close(u);

	/* A foreign fd whose handshake asked for nothing: adopt learns exactly that. */
	fd = foreign_fd(door);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(raw_api(fd, UFFD_API, 0), 0);
	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert_uint_eq(uffd_features(u), 0);
	uffd_close(u);

	/* Kernel-mode faults need privilege, which root has through either door. */
	cfg.required = 0;
	cfg.flags = door | UFFD_OPEN_KERNEL_FAULTS;
	if (getuid() == 0) {
		ck_assert_int_eq(uffd_open(&u, &cfg), 0);
		uffd_close(u);
	}

	ck_assert_int_eq(tu_count_fds(), fds);
	/* The handshake does not depend on memory: it counts for every type. */
	for (int m = 0; m < MEM_N; m++) {
		cov_ioctl(_UFFDIO_API, (enum mem)m);
		if (_i == 0)
			cov_pass("api", (enum mem)m);
	}
}
END_TEST

/* On Linux 6.18 every ioctl is there; uffd_probe() says so. */
START_TEST(api_probe_ioctls)
{
	uint64_t f = 0, io = 0;
	const uint64_t all = (1ull << _UFFDIO_API) | (1ull << _UFFDIO_REGISTER) |
			     (1ull << _UFFDIO_UNREGISTER) | (1ull << _UFFDIO_WAKE) |
			     (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) |
			     (1ull << _UFFDIO_MOVE) | (1ull << _UFFDIO_WRITEPROTECT) |
			     (1ull << _UFFDIO_CONTINUE) | (1ull << _UFFDIO_POISON);

	ck_assert_int_eq(uffd_probe(&f, &io), 0);
	ck_assert_uint_eq(f & 0x1ffff, 0x1ffff);
	ck_assert_uint_eq(io, all);
}
END_TEST

/* ---- register-ioctls ---- */

#define REG_FEATURES                                                        \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS |      \
	 UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | \
	 UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_POISON)

/*
 * REGISTER with every mode combination. libuffd does not hand out the ioctl set the kernel
 * returns from REGISTER (it accepts unknown bits and keeps nothing), so the set is checked by
 * what it promises: each ioctl the kernel lists for the modes does its job on the range, and
 * the write-protect ioctls are refused on a range not registered for write-protection.
 */
static void register_modes(enum mem m, bool miss, bool wp, bool minor)
{
	const uint64_t modes = (miss ? UFFDIO_REGISTER_MODE_MISSING : 0) |
			       (wp ? UFFDIO_REGISTER_MODE_WP : 0) |
			       (minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
	struct uffd *u = conf_open(m, REG_FEATURES);
	struct area a;
	char *src;
	int r;

	area_init(&a, m, 3);
	src = tu_map_anon(a.ps);
	memset(src, 0x5c, a.ps);
	r = uffd_register(u, a.p, a.len, modes, (void *)0x1);
	if (!modes || (minor && m == MEM_ANON)) {
		/* No mode at all, and MINOR on anonymous memory, are refused; nothing is recorded. */
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_int_eq(uffd_range_count(u), 0);
		if (modes)
			cov_ioctl_refused(_UFFDIO_REGISTER, m, r, "MODE_MINOR on anonymous memory");
		goto out;
	}
	ck_assert_msg(r == 0, "%s modes %llx: %s", mem_names[m], (unsigned long long)modes,
		      uffd_strerror(r));
	cov_ioctl(_UFFDIO_REGISTER, m);
	ck_assert_int_eq(uffd_range_count(u), 1);

	/* WAKE: always there. */
	ck_assert_int_eq(uffd_wake(u, a.p, a.len), 0);
	cov_ioctl(_UFFDIO_WAKE, m);

	if (minor) {
		/* CONTINUE maps what the page cache holds. */
		memset(a.alias, 0x71, a.ps);
		ck_assert_int_eq(uffd_continue(u, a.p, a.ps, wp ? UFFDIO_CONTINUE_MODE_WP : 0), 0);
		ck_assert_int_eq(a.p[a.ps - 1], 0x71);
		cov_ioctl(_UFFDIO_CONTINUE, m);
		cov_feature(mem_minor_feature(m), m);
	} else {
		/* COPY fills an empty page, write-protected if asked (and allowed). */
		ck_assert_int_eq(uffd_copy(u, a.p, src, a.ps, wp ? UFFDIO_COPY_MODE_WP : 0), 0);
		ck_assert_int_eq(a.p[7], 0x5c);
		cov_ioctl(_UFFDIO_COPY, m);
	}

	if (wp) {
		ck_assert_int_eq(uffd_writeprotect(u, a.p, a.ps, true, 0), 0);
		ck_assert(pagemap_entry(a.p) & PM_UFFD_WP);
		ck_assert_int_eq(uffd_writeprotect(u, a.p, a.ps, false, 0), 0);
		ck_assert(!(pagemap_entry(a.p) & PM_UFFD_WP));
		cov_ioctl(_UFFDIO_WRITEPROTECT, m);
		if (m != MEM_ANON)
			cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	} else {
		r = uffd_writeprotect(u, a.p, a.ps, true, 0);
		ck_assert_int_eq(r, -ENOENT);
		cov_ioctl_refused(_UFFDIO_WRITEPROTECT, m, r, "range not registered MODE_WP");
		r = uffd_copy(u, a.p + a.ps, src, a.ps, UFFDIO_COPY_MODE_WP);
		ck_assert_int_eq(r, -EINVAL);
		cov_ioctl_refused(_UFFDIO_COPY, m, r,
				  "COPY_MODE_WP on a range not registered MODE_WP");
	}

	/* POISON: on every memory type. */
	ck_assert_int_eq(uffd_poison(u, a.p + a.ps, a.ps, 0), 0);
	cov_ioctl(_UFFDIO_POISON, m);

	/* CONTINUE has nothing to map on anonymous memory. */
	if (m == MEM_ANON) {
		r = uffd_continue(u, a.p + 2 * a.ps, a.ps, 0);
		ck_assert_int_eq(r, -EINVAL);
		cov_ioctl_refused(_UFFDIO_CONTINUE, m, r, "anonymous memory");
	}

	conf_unregister(u, m, a.p, a.len);
	ck_assert_int_eq(uffd_range_count(u), 0);
out:
	uffd_close(u);
	munmap(src, a.ps);
	area_free(&a);
}

START_TEST(register_ioctls)
{
	const enum mem m = (enum mem)_i;

	cov_scenario = "register-ioctls";
	for (int miss = 0; miss <= 1; miss++)
		for (int wp = 0; wp <= 1; wp++)
			for (int minor = 0; minor <= 1; minor++)
				register_modes(m, miss, wp, minor);
	cov_pass("register-ioctls", m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_api");
	TCase *api = tcase_create("api"), *reg = tcase_create("register_ioctls");
	int doors_n;

	huge_ok = conf_start("test_conf_api", false);
	/* The device door needs read-write access to /dev/userfaultfd (root only, by default). */
	doors_n = access("/dev/userfaultfd", R_OK | W_OK) == 0 ? 2 : 1;
	if (doors_n == 1) {
		fprintf(stderr, "note: /dev/userfaultfd not tested: %s\n", strerror(errno));
		cov_row("skip", "/dev/userfaultfd", MEM_ANON, "refused", 0, strerror(errno));
	}

	tcase_set_timeout(api, 30);
	tcase_add_loop_test(api, api_handshake, 0, doors_n);
	tcase_add_test(api, api_probe_ioctls);
	tcase_set_timeout(reg, 60);
	tcase_add_loop_test(reg, register_ioctls, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, api);
	suite_add_tcase(s, reg);
	return tu_run(s);
}
