/* SPDX-License-Identifier: MIT */
/* Tests for the resolving calls on anonymous memory and shmem: real faults, partial progress. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>

#include "internal.h"
#include "testutil.h"

/* Everything the resolving tests use; all offered by this 6.18 kernel. */
#define TEST_FEATURES                                                                             \
	(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | \
	 UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE |              \
	 UFFD_FEATURE_EVENT_REMOVE)

static size_t ps;

/* Is the page at @p mapped in this process's page tables? (pagemap "present" bit) */
static bool present(const void *p)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &e, 8, (off_t)((uintptr_t)p / ps * 8)), 8);
	close(fd);
	return (e >> 63) & 1;
}

/* ---- a thread that touches a page and blocks on its fault (testutil's tu_toucher) ---- */

/* The toucher is still blocked after a short while. */
static void still_blocked(struct tu_toucher *t)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	ck_assert(!atomic_load(&t->done));
}

static void no_message(struct uffd *u)
{
	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };

	ck_assert_int_eq(poll(&pf, 1, 0), 0);
}

static char *pattern(size_t len, char seed)
{
	char *p = malloc(len + 64);

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < len + 64; i++)
		p[i] = (char)(seed + (char)(i * 7));
	return p;
}

/* ---- anonymous memory ---- */

START_TEST(copy_resolves_fault)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(4 * ps);
	char *src = pattern(4 * ps, 'a');
	struct tu_toucher t;

	tu_kernel_register(u, area, 4 * ps, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, area + ps + 10, false, 0);
	tu_expect_fault(u, area + ps, 0);
	/* The source need not be aligned. */
	ck_assert_int_eq(uffd_copy(u, area + ps, src + 3, ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[3 + 10]);
	ck_assert_int_eq(memcmp(area + ps, src + 3, ps), 0);
	ck_assert(!present(area));

	/* Several pages in one call, with no fault pending. */
	ck_assert_int_eq(uffd_copy(u, area + 2 * ps, src, 2 * ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), 2 * ps);
	ck_assert_int_eq(memcmp(area + 2 * ps, src, 2 * ps), 0);

	/* A write fault, resolved by a copy; the write lands on the copied page. */
	tu_touch_start(&t, area + 7, true, 'W');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WRITE);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(area[7], 'W');
	ck_assert_int_eq(area[8], src[8]);
	no_message(u);
	uffd_close(u);
	free(src);
	munmap(area, 4 * ps);
}
END_TEST

START_TEST(zeropage_resolves_fault)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(2 * ps);
	struct tu_toucher t;

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, area + ps + 1, false, 'x');
	tu_expect_fault(u, area + ps, 0);
	ck_assert_int_eq(uffd_zeropage(u, area, 2 * ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), 2 * ps);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, 0);
	for (size_t i = 0; i < 2 * ps; i++)
		ck_assert_int_eq(area[i], 0);
	/* Already there now. */
	ck_assert_int_eq(uffd_zeropage(u, area, ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), 0);
	uffd_close(u);
	munmap(area, 2 * ps);
}
END_TEST

/* DONTWAKE leaves the thread asleep until uffd_wake(). */
START_TEST(dontwake_then_wake)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(ps);
	char *src = pattern(ps, 'd');
	struct tu_toucher t;

	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, area, false, 0);
	tu_expect_fault(u, area, 0);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, UFFDIO_COPY_MODE_DONTWAKE), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	still_blocked(&t);
	ck_assert_int_eq(uffd_wake(u, area, ps), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[0]);

	/* Waking a range with nothing mapped is fine too. */
	munmap(area, ps);
	ck_assert_int_eq(uffd_wake(u, area, ps), 0);
	ck_assert_int_eq(uffd_wake_range(u, (uintptr_t)area, ps), 0);
	ck_assert_int_eq(uffd_wake_range(NULL, (uintptr_t)area, ps), -EINVAL);
	uffd_close(u);
	free(src);
}
END_TEST

/*
 * Page 2 of 4 already present. The kernel copies page 1, then answers EAGAIN with copy = 4096
 * (it reports partial progress that way, whatever stopped it); the library carries on from page 2
 * and meets the real error there, EEXIST. Pages 3 and 4 stay missing.
 */
START_TEST(copy_partial)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(4 * ps);
	char *src = pattern(4 * ps, 'p');
	char *other = pattern(ps, 'O');

	tu_kernel_register(u, area, 4 * ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_copy(u, area + ps, other, ps, 0), 0);

	/* What the kernel itself says. */
	struct uffdio_copy c = {
		.dst = (uintptr_t)area, .src = (uintptr_t)src, .len = 4 * ps, .copy = 12345
	};

	errno = 0;
	ck_assert_int_eq(ioctl(uffd_fd(u), UFFDIO_COPY, &c), -1);
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(c.copy, (int64_t)ps);
	c = (struct uffdio_copy){ .dst = (uintptr_t)area + ps, .src = (uintptr_t)src, .len = ps };
	ck_assert_int_eq(ioctl(uffd_fd(u), UFFDIO_COPY, &c), -1);
	ck_assert_int_eq(errno, EEXIST);
	ck_assert_int_eq(c.copy, -EEXIST);
	ck_assert_int_eq(memcmp(area, src, ps), 0);
	munmap(area, ps);
	ck_assert_ptr_eq(mmap(area, ps, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 area);
	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);

	/* What the library makes of it. */
	ck_assert_int_eq(uffd_copy(u, area, src, 4 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert_int_eq(memcmp(area, src, ps), 0);
	ck_assert_int_eq(memcmp(area + ps, other, ps), 0);
	ck_assert(!present(area + 2 * ps));
	ck_assert(!present(area + 3 * ps));

	/* Page 3 present as well, copying from page 3 on: nothing done. */
	ck_assert_int_eq(uffd_copy(u, area + 2 * ps, src, ps, 0), 0);
	ck_assert_int_eq(uffd_copy(u, area + 2 * ps, src, 2 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert(!present(area + 3 * ps));
	/* The same for zeropage: page 4 done, then page 4 again is EEXIST from the start. */
	ck_assert_int_eq(uffd_zeropage(u, area + 3 * ps, ps, 0), 0);
	ck_assert_int_eq(uffd_zeropage(u, area, 4 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), 0);
	uffd_close(u);
	free(src);
	free(other);
	munmap(area, 4 * ps);
}
END_TEST

/* The range runs past the registered VMA: the kernel checks the whole range against the VMA
 * first, so nothing is done. */
START_TEST(copy_past_registration)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(4 * ps);
	char *src = pattern(4 * ps, 'r');

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_copy(u, area, src, 4 * ps, 0), -ENOENT);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert(!present(area));
	/* Not registered at all. */
	ck_assert_int_eq(uffd_zeropage(u, area + 2 * ps, 2 * ps, 0), -ENOENT);
	ck_assert_uint_eq(uffd_last_done(), 0);
	/* Nothing mapped there. */
	munmap(area + 2 * ps, 2 * ps);
	ck_assert_int_eq(uffd_zeropage(u, area + 2 * ps, ps, 0), -ENOENT);
	ck_assert_int_eq(uffd_copy(u, area, src, 2 * ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), 2 * ps);
	uffd_close(u);
	free(src);
	munmap(area, 2 * ps);
}
END_TEST

START_TEST(copy_bad_source)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(ps);
	char *none = mmap(NULL, ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(none, MAP_FAILED);
	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_copy(u, area, none, ps, 0), -EFAULT);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_copy(u, area, NULL, ps, 0), -EFAULT);
	ck_assert(!present(area));
	uffd_close(u);
	munmap(area, ps);
	munmap(none, ps);
}
END_TEST

START_TEST(writeprotect_anon)
{
	struct uffd *u = tu_open(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	char *area = tu_map_anon(2 * ps);
	char *src = pattern(2 * ps, 'w');
	struct tu_toucher t;

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(uffd_copy(u, area, src, 2 * ps, 0), 0);
	ck_assert_int_eq(uffd_writeprotect(u, area, 2 * ps, true, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), 2 * ps);

	/* A write faults with WP; un-protecting wakes the writer. */
	tu_touch_start(&t, area + 5, true, 'Z');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE);
	still_blocked(&t);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	tu_touch_join(&t);
	ck_assert_int_eq(area[5], 'Z');
	/* Reads of a protected page do not fault. */
	ck_assert_int_eq(area[ps + 1], src[ps + 1]);

	/* Un-protect with DONTWAKE: the writer sleeps until woken. */
	tu_touch_start(&t, area + ps + 3, true, 'Y');
	tu_expect_fault(u, area + ps, UFFD_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(
		uffd_writeprotect(u, area + ps, ps, false, UFFDIO_WRITEPROTECT_MODE_DONTWAKE), 0);
	still_blocked(&t);
	ck_assert_int_eq(uffd_wake(u, area + ps, ps), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(area[ps + 3], 'Y');

	/* The WP bit in mode agrees with protect, or is refused. */
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, true, UFFDIO_WRITEPROTECT_MODE_WP), 0);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, UFFDIO_WRITEPROTECT_MODE_WP),
			 -EINVAL);
	/* Protecting with DONTWAKE is meaningless: refused without a syscall. */
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, true, UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
			 -EINVAL);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0), 0);
	uffd_close(u);
	free(src);
	munmap(area, 2 * ps);
}
END_TEST

/* COPY with MODE_WP installs a write-protected page; WP on a range not registered WP fails. */
START_TEST(copy_wp_and_wp_unregistered)
{
	struct uffd *u = tu_open(UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	char *area = tu_map_anon(2 * ps);
	char *src = pattern(ps, 'c');
	struct tu_toucher t;

	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	tu_kernel_register(u, area + ps, ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, UFFDIO_COPY_MODE_WP), 0);
	tu_touch_start(&t, area, true, 'q');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(area[0], 'q');

	/* MODE_WP where the range is not registered WP: the kernel's EINVAL. */
	ck_assert_int_eq(uffd_copy(u, area + ps, src, ps, UFFDIO_COPY_MODE_WP), -EINVAL);
	ck_assert(!present(area + ps));
	/* Write-protecting a range not registered WP: the kernel's ENOENT. */
	ck_assert_int_eq(uffd_zeropage(u, area + ps, ps, 0), 0);
	ck_assert_int_eq(uffd_writeprotect(u, area + ps, ps, true, 0), -ENOENT);
	ck_assert_int_eq(uffd_writeprotect(u, area, 2 * ps, true, 0), -ENOENT);
	uffd_close(u);
	free(src);
	munmap(area, 2 * ps);
}
END_TEST

START_TEST(move_anon)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MOVE);
	char *dst = tu_map_anon(4 * ps);
	char *src = tu_map_anon(4 * ps);
	char *want = pattern(4 * ps, 'm');
	struct tu_toucher t;

	memcpy(src, want, 4 * ps);
	tu_kernel_register(u, dst, 4 * ps, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, dst + 2 * ps + 9, false, 0);
	tu_expect_fault(u, dst + 2 * ps, 0);
	ck_assert_int_eq(uffd_move(u, dst + 2 * ps, src + 2 * ps, ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, want[2 * ps + 9]);
	/* The page moved: the source is empty now. */
	ck_assert(!present(src + 2 * ps));
	ck_assert_int_eq(src[2 * ps], 0);

	/* Holes in the source: refused unless ALLOW_SRC_HOLES (which counts them as moved). */
	char *holes = tu_map_anon(2 * ps);

	holes[0] = 'h';
	ck_assert_int_eq(uffd_move(u, dst, holes, 2 * ps, 0), -ENOENT);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert_int_eq(dst[0], 'h');
	ck_assert_int_eq(uffd_move(u, dst + ps, holes + ps, ps, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES),
			 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert(!present(dst + ps));

	/* A destination already there: -EEXIST. */
	ck_assert_int_eq(uffd_move(u, dst + 2 * ps, src + 3 * ps, ps, 0), -EEXIST);
	ck_assert_int_eq(src[3 * ps], want[3 * ps]);
	/* Unaligned source: refused before the kernel is asked. */
	ck_assert_int_eq(uffd_move(u, dst + 3 * ps, src + 1, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_move(u, dst + 3 * ps, src + 3 * ps, ps, 0x4), -EINVAL);
	ck_assert_int_eq(uffd_move(u, dst + 3 * ps, (void *)(UINTPTR_MAX - ps + 1), 2 * ps, 0),
			 -EINVAL);
	ck_assert(!present(dst + 3 * ps));
	uffd_close(u);
	free(want);
	munmap(dst, 4 * ps);
	munmap(src, 4 * ps);
	munmap(holes, 2 * ps);
}
END_TEST

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Reading @p raises SIGBUS. */
static bool raises_sigbus(volatile char *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool bus = false;

	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGBUS, &sa, &old), 0);
	if (sigsetjmp(bus_jmp, 1) == 0)
		(void)*p;
	else
		bus = true;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

START_TEST(poison_anon)
{
	struct uffd *u = tu_open(UFFD_FEATURE_POISON);
	struct uffd *plain = tu_open(0);
	char *area = tu_map_anon(2 * ps);

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_poison(u, area, ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert(raises_sigbus(area + 17));
	/* Poisoned means present as far as filling goes. */
	ck_assert_int_eq(uffd_zeropage(u, area, ps, 0), -EEXIST);

	/* Without the feature granted: refused by the library. */
	ck_assert_int_eq(uffd_poison(plain, area + ps, ps, 0), -EOPNOTSUPP);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_move(plain, area + ps, area, ps, 0), -EOPNOTSUPP);
	ck_assert(!present(area + ps));
	uffd_close(plain);
	uffd_close(u);
	munmap(area, 2 * ps);
}
END_TEST

/* A poison also resolves a blocked fault: the faulting thread gets SIGBUS, here caught. */
static void *poison_touch(void *arg)
{
	struct tu_toucher *t = arg;

	if (raises_sigbus(t->addr))
		t->value = 'B';
	atomic_store(&t->done, true);
	return NULL;
}

START_TEST(poison_resolves_fault)
{
	struct uffd *u = tu_open(UFFD_FEATURE_POISON);
	char *area = tu_map_anon(ps);
	struct tu_toucher t = { .addr = area };

	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(pthread_create(&t.t, NULL, poison_touch, &t), 0);
	tu_expect_fault(u, area, 0);
	ck_assert_int_eq(uffd_poison(u, area, ps, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, 'B');
	uffd_close(u);
	munmap(area, ps);
}
END_TEST

/* CONTINUE has no meaning on anonymous memory: the kernel's EINVAL. */
START_TEST(continue_anon_einval)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MINOR_SHMEM);
	char *area = tu_map_anon(ps);

	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_continue(u, area, ps, 0), -EINVAL);
	ck_assert(!present(area));
	uffd_close(u);
	munmap(area, ps);
}
END_TEST

/* ---- bad inputs: -EINVAL, nothing done ---- */

START_TEST(bad_inputs)
{
	struct uffd *u = tu_open(TEST_FEATURES);
	char *area = tu_map_anon(2 * ps);
	char *src = pattern(2 * ps, 'b');
	char *high = (char *)(UINTPTR_MAX - ps + 1); /* the last page: any length wraps */
	int fds = tu_count_fds();

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);

	/* Each call's own valid mode bits are taken; the next bit up is refused. */
	ck_assert_int_eq(uffd_copy(u, area, src, ps, 0x4), -EINVAL);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, 1ULL << 63), -EINVAL);
	ck_assert_int_eq(uffd_zeropage(u, area, ps, 0x2), -EINVAL);
	ck_assert_int_eq(uffd_continue(u, area, ps, 0x4), -EINVAL);
	ck_assert_int_eq(uffd_poison(u, area, ps, 0x2), -EINVAL);
	ck_assert_int_eq(uffd_move(u, area, src, ps, 0x4), -EINVAL);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0x4), -EINVAL);

	/* NULL context. */
	ck_assert_int_eq(uffd_copy(NULL, area, src, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_zeropage(NULL, area, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_continue(NULL, area, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_poison(NULL, area, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_move(NULL, area, src, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_writeprotect(NULL, area, ps, true, 0), -EINVAL);
	ck_assert_int_eq(uffd_wake(NULL, area, ps), -EINVAL);

	/* Unaligned destination, zero, unaligned and wrapping lengths, for every call. */
	void *dsts[] = { area + 1, area, area, area, high };
	size_t lens[] = { ps, 0, ps + 1, ps - 1, 2 * ps };

	for (unsigned i = 0; i < 5; i++) {
		ck_assert_int_eq(uffd_copy(u, dsts[i], src, lens[i], 0), -EINVAL);
		ck_assert_int_eq(uffd_zeropage(u, dsts[i], lens[i], 0), -EINVAL);
		ck_assert_int_eq(uffd_continue(u, dsts[i], lens[i], 0), -EINVAL);
		ck_assert_int_eq(uffd_poison(u, dsts[i], lens[i], 0), -EINVAL);
		ck_assert_int_eq(uffd_move(u, dsts[i], src, lens[i], 0), -EINVAL);
		ck_assert_int_eq(uffd_writeprotect(u, dsts[i], lens[i], true, 0), -EINVAL);
		ck_assert_int_eq(uffd_writeprotect(u, dsts[i], lens[i], false, 0), -EINVAL);
		ck_assert_int_eq(uffd_wake(u, dsts[i], lens[i]), -EINVAL);
		ck_assert_uint_eq(uffd_last_done(), 0);
	}
	/* A source that wraps. */
	ck_assert_int_eq(uffd_copy(u, area, high + 5, ps, 0), -EINVAL);
	ck_assert_int_eq(uffd_move(u, area, high, ps, 0), -EINVAL);

	/* Nothing changed: both pages still missing, no fd made, and they still fill. */
	ck_assert(!present(area));
	ck_assert(!present(area + ps));
	ck_assert_int_eq(tu_count_fds(), fds);
	ck_assert_int_eq(uffd_copy(u, area, src, 2 * ps, 0), 0);
	ck_assert_int_eq(memcmp(area, src, 2 * ps), 0);
	uffd_close(u);
	free(src);
	munmap(area, 2 * ps);
}
END_TEST

/* uffd_last_done() is per thread: another thread's call does not change this thread's value. */
static void *other_thread_copy(void *arg)
{
	struct uffd *u = arg;

	(void)uffd_wake(u, (void *)(uintptr_t)(16 * ps), 3 * ps);
	return (void *)uffd_last_done();
}

START_TEST(last_done_per_thread)
{
	struct uffd *u = tu_open(0);
	char *area = tu_map_anon(2 * ps);
	pthread_t th;
	void *other;

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_zeropage(u, area, 2 * ps, 0), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, other_thread_copy, u), 0);
	ck_assert_int_eq(pthread_join(th, &other), 0);
	ck_assert_uint_eq((uintptr_t)other, 3 * ps);
	ck_assert_uint_eq(uffd_last_done(), 2 * ps);
	uffd_close(u);
	munmap(area, 2 * ps);
}
END_TEST

/* ---- a pending layout change: every filling call is -EAGAIN until the event is read ---- */

struct madviser {
	char *addr;
	size_t len;
	_Atomic bool done;
};

static void *madvise_fn(void *arg)
{
	struct madviser *m = arg;

	madvise(m->addr, m->len, MADV_DONTNEED);
	atomic_store(&m->done, true);
	return NULL;
}

START_TEST(eagain_while_event_pending)
{
	struct uffd *u = tu_open(TEST_FEATURES);
	char *area = tu_map_anon(4 * ps);
	char *src = tu_map_anon(ps);
	struct madviser m = { .addr = area, .len = ps };
	struct pollfd pf = { .fd = uffd_fd(u), .events = POLLIN };
	struct uffd_msg msg;
	pthread_t th;

	tu_kernel_register(u, area, 4 * ps, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(uffd_zeropage(u, area, ps, 0), 0);
	src[0] = 1;
	ck_assert_int_eq(pthread_create(&th, NULL, madvise_fn, &m), 0);
	/* The REMOVE event is queued and the madvise blocked until it is read. */
	ck_assert_int_eq(poll(&pf, 1, 5000), 1);

	ck_assert_int_eq(uffd_copy(u, area + ps, src, ps, 0), -EAGAIN);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_zeropage(u, area + ps, 2 * ps, 0), -EAGAIN);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_poison(u, area + ps, ps, 0), -EAGAIN);
	ck_assert_int_eq(uffd_move(u, area + ps, src, ps, 0), -EAGAIN);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, true, 0), -EAGAIN);
	ck_assert(!atomic_load(&m.done));
	ck_assert(!present(area + ps));

	ck_assert_int_eq(read(uffd_fd(u), &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	ck_assert_uint_eq(msg.event, UFFD_EVENT_REMOVE);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	/* The sender lowers mmap_changing when it resumes: it has, once joined. */
	ck_assert_int_eq(uffd_copy(u, area + ps, src, ps, 0), 0);
	ck_assert_int_eq(area[ps], 1);
	uffd_close(u);
	munmap(area, 4 * ps);
	munmap(src, ps);
}
END_TEST

/* ---- shmem (memfd, shared) ---- */

START_TEST(shmem_missing_copy_zeropage)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MISSING_SHMEM);
	int memfd;
	char *area = tu_map_shmem(4 * ps, true, &memfd);
	char *src = pattern(ps, 's');
	struct tu_toucher t;
	char c = 0;

	tu_kernel_register(u, area, 4 * ps, UFFDIO_REGISTER_MODE_MISSING);
	tu_touch_start(&t, area + 3, false, 0);
	tu_expect_fault(u, area, 0);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[3]);
	/* The page is in the file now. */
	ck_assert_int_eq(pread(memfd, &c, 1, 3), 1);
	ck_assert_int_eq(c, src[3]);

	tu_touch_start(&t, area + 2 * ps, false, 'x');
	tu_expect_fault(u, area + 2 * ps, 0);
	ck_assert_int_eq(uffd_zeropage(u, area + ps, 2 * ps, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, 0);
	/* Partial: pages 2-3 are there, page 4 not. */
	ck_assert_int_eq(uffd_copy(u, area + ps, src, 3 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_zeropage(u, area + 3 * ps, ps, 0), 0);
	uffd_close(u);
	free(src);
	close(memfd);
	munmap(area, 4 * ps);
}
END_TEST

START_TEST(shmem_minor_continue)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MINOR_SHMEM);
	int memfd;
	char *area = tu_map_shmem(4 * ps, true, &memfd);
	char *src = pattern(4 * ps, 'M');
	struct tu_toucher t;

	/* The page cache is filled through the file, not the registered mapping. */
	ck_assert_int_eq(pwrite(memfd, src, 4 * ps, 0), (ssize_t)(4 * ps));
	tu_kernel_register(u, area, 4 * ps, UFFDIO_REGISTER_MODE_MINOR);
	tu_touch_start(&t, area + ps + 11, false, 0);
	tu_expect_fault(u, area + ps, UFFD_PAGEFAULT_FLAG_MINOR);
	ck_assert_int_eq(uffd_continue(u, area + ps, ps, 0), 0);
	ck_assert_uint_eq(uffd_last_done(), ps);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[ps + 11]);

	/* Several pages at once; then partial: pages 1..4 with page 2 mapped already. */
	ck_assert_int_eq(uffd_continue(u, area + 2 * ps, ps, 0), 0);
	ck_assert_int_eq(uffd_continue(u, area, 4 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert_int_eq(memcmp(area, src, 3 * ps), 0);
	ck_assert(!present(area + 3 * ps));
	/* CONTINUE with DONTWAKE, then wake. */
	tu_touch_start(&t, area + 3 * ps, false, 0);
	tu_expect_fault(u, area + 3 * ps, UFFD_PAGEFAULT_FLAG_MINOR);
	ck_assert_int_eq(uffd_continue(u, area + 3 * ps, ps, UFFDIO_CONTINUE_MODE_DONTWAKE), 0);
	still_blocked(&t);
	ck_assert_int_eq(uffd_wake(u, area + 3 * ps, ps), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(t.value, src[3 * ps]);
	uffd_close(u);
	free(src);
	close(memfd);
	munmap(area, 4 * ps);
}
END_TEST

/* CONTINUE with MODE_WP maps the page write-protected (6.4+). */
START_TEST(shmem_continue_wp)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				 UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	int memfd;
	char *area = tu_map_shmem(ps, true, &memfd);
	struct tu_toucher t;

	ck_assert_int_eq(pwrite(memfd, "abc", 3, 0), 3);
	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(uffd_continue(u, area, ps, UFFDIO_CONTINUE_MODE_WP), 0);
	ck_assert_int_eq(area[1], 'b');
	tu_touch_start(&t, area, true, 'Q');
	tu_expect_fault(u, area, UFFD_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0), 0);
	tu_touch_join(&t);
	ck_assert_int_eq(area[0], 'Q');
	uffd_close(u);
	close(memfd);
	munmap(area, ps);
}
END_TEST

START_TEST(shmem_poison)
{
	struct uffd *u = tu_open(UFFD_FEATURE_POISON | UFFD_FEATURE_MISSING_SHMEM);
	int memfd;
	char *area = tu_map_shmem(2 * ps, true, &memfd);

	tu_kernel_register(u, area, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_poison(u, area + ps, ps, 0), 0);
	ck_assert(raises_sigbus(area + ps));
	/* Page 1 poisoned by the partial call, page 2 already was. */
	ck_assert(!present(area));
	ck_assert_int_eq(uffd_poison(u, area, 2 * ps, 0), -EEXIST);
	ck_assert_uint_eq(uffd_last_done(), ps);
	ck_assert(raises_sigbus(area));
	uffd_close(u);
	close(memfd);
	munmap(area, 2 * ps);
}
END_TEST

/* MOVE works on private anonymous memory only: shmem is the kernel's EINVAL. */
START_TEST(shmem_move_einval)
{
	struct uffd *u = tu_open(UFFD_FEATURE_MOVE | UFFD_FEATURE_MISSING_SHMEM);
	int memfd;
	char *area = tu_map_shmem(ps, true, &memfd);
	char *src = tu_map_anon(ps);

	src[0] = 1;
	tu_kernel_register(u, area, ps, UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_move(u, area, src, ps, 0), -EINVAL);
	ck_assert_int_eq(src[0], 1);
	uffd_close(u);
	close(memfd);
	munmap(area, ps);
	munmap(src, ps);
}
END_TEST

/* ---- the process behind the fd is gone ---- */

/* The child makes a userfaultfd (handshake done, POISON and MOVE granted), registers a page of
 * its own, sends the fd and exits. */
static void esrch_child(int sock, char *area)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE |
			    UFFD_FEATURE_PAGEFAULT_FLAG_WP,
	};
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)area, .len = ps },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) != 0 || ioctl(fd, UFFDIO_REGISTER, &r) != 0)
		_exit(2);
	if (tu_send_fd(sock, fd, "f", 1) != 0)
		_exit(3);
	_exit(0);
}

START_TEST(esrch_after_exit)
{
	char *area = tu_map_anon(ps);
	char *src = pattern(ps, 'e');
	struct uffd *u;
	int sv[2], fd, status;
	char byte;
	pid_t pid;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		esrch_child(sv[1], area);
	ck_assert_int_eq(tu_recv_fd(sv[0], &fd, &byte, 1), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	ck_assert_int_eq(uffd_adopt(&u, fd, NULL), 0);
	ck_assert_uint_eq(uffd_features(u),
			  UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE | UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, 0), -ESRCH);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(uffd_copy(u, area, src, ps, UFFDIO_COPY_MODE_DONTWAKE), -ESRCH);
	ck_assert_int_eq(uffd_zeropage(u, area, ps, 0), -ESRCH);
	ck_assert_int_eq(uffd_continue(u, area, ps, 0), -ESRCH);
	ck_assert_int_eq(uffd_poison(u, area, ps, 0), -ESRCH);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, true, 0), -ESRCH);
	ck_assert_int_eq(uffd_writeprotect(u, area, ps, false, 0), -ESRCH);
	/*
	 * MOVE refuses any mm but the caller's own before it looks whether that mm is alive: the
	 * kernel's EINVAL (kernel.md: "UFFDIO_MOVE needs mm == current->mm").
	 */
	ck_assert_int_eq(uffd_move(u, area, src, ps, 0), -EINVAL);
	/* WAKE needs no mm. */
	ck_assert_int_eq(uffd_wake(u, area, ps), 0);
	/* Nothing in this process was touched. */
	ck_assert(!present(area));
	uffd_close(u);
	close(sv[0]);
	close(sv[1]);
	free(src);
	munmap(area, ps);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("resolve");
	uint64_t f = 0;
	TCase *tc;
	int ret;

	ps = tu_page();
	ret = uffd_probe(&f, NULL);
	if (ret < 0)
		tu_skip("no userfaultfd: %s", uffd_strerror(ret));
	if ((f & TEST_FEATURES) != TEST_FEATURES)
		tu_skip("the kernel lacks features these tests need (have 0x%llx, need 0x%llx)",
			(unsigned long long)f, (unsigned long long)TEST_FEATURES);
	/* Make sure a context can be had before forking the tests. */
	tu_require_uffd(NULL, NULL);

	tc = tu_tcase("anon", 10, NULL, NULL);
	tcase_add_test(tc, copy_resolves_fault);
	tcase_add_test(tc, zeropage_resolves_fault);
	tcase_add_test(tc, dontwake_then_wake);
	tcase_add_test(tc, copy_partial);
	tcase_add_test(tc, copy_past_registration);
	tcase_add_test(tc, copy_bad_source);
	tcase_add_test(tc, writeprotect_anon);
	tcase_add_test(tc, copy_wp_and_wp_unregistered);
	tcase_add_test(tc, move_anon);
	tcase_add_test(tc, poison_anon);
	tcase_add_test(tc, poison_resolves_fault);
	tcase_add_test(tc, continue_anon_einval);
	tcase_add_test(tc, bad_inputs);
	tcase_add_test(tc, last_done_per_thread);
	tcase_add_test(tc, eagain_while_event_pending);
	suite_add_tcase(s, tc);

	tc = tu_tcase("shmem", 10, NULL, NULL);
	tcase_add_test(tc, shmem_missing_copy_zeropage);
	tcase_add_test(tc, shmem_minor_continue);
	tcase_add_test(tc, shmem_continue_wp);
	tcase_add_test(tc, shmem_poison);
	tcase_add_test(tc, shmem_move_einval);
	suite_add_tcase(s, tc);

	tc = tu_tcase("exited", 10, NULL, NULL);
	tcase_add_test(tc, esrch_after_exit);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
