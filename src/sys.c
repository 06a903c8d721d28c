/* SPDX-License-Identifier: MIT */
/* Every raw syscall and ioctl the library makes, and the one place -1/errno becomes -errno. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

static inline int neg_errno(long ret)
{
	return ret < 0 ? -errno : (int)ret;
}

int uffd_sys_userfaultfd(int flags)
{
#ifdef SYS_userfaultfd
	return neg_errno(syscall(SYS_userfaultfd, flags));
#else
	(void)flags;
	return -ENOSYS;
#endif
}

/*
 * open() and close() are raw system calls here, as the serving path's are (internal.h): glibc's
 * wrappers are cancellation points, and no libuffd call may be one (uffd.h). A thread cancelled
 * inside uffd_close() would leak the context and leave the fd open, its faults blocked.
 */
int uffd_sys_open(const char *path, int flags)
{
#if !defined(__LP64__) && defined(O_LARGEFILE)
	/* glibc's open() adds it on 32-bit systems: without it a file over 2 GiB is EOVERFLOW. */
	flags |= O_LARGEFILE;
#endif
	return (int)uffd_syscall3(SYS_openat, AT_FDCWD, (long)path, flags | O_CLOEXEC);
}

int uffd_sys_dev_new(int flags)
{
	int dev = uffd_sys_open("/dev/userfaultfd", O_RDWR);
	int fd;

	if (dev < 0)
		return dev;
	fd = uffd_sys_ioctl(dev, USERFAULTFD_IOC_NEW, (void *)(long)flags);
	uffd_sys_close(dev);
	return fd;
}

/*
 * ThreadSanitizer sees fds through the libc calls it intercepts: a raw close() it does not see
 * leaves it thinking the number still names the old fd, and the next thread to open and close
 * that number "races" with the last use of the old one. Tell it, in TSan builds only.
 */
#if defined(__SANITIZE_THREAD__)
#define UFFD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UFFD_TSAN 1
#endif
#endif
#ifdef UFFD_TSAN
#include <sanitizer/linux_syscall_hooks.h>
#endif

int uffd_sys_close(int fd)
{
#ifdef UFFD_TSAN
	long r;

	__sanitizer_syscall_pre_close(fd);
	r = uffd_syscall3(SYS_close, fd, 0, 0);
	__sanitizer_syscall_post_close(r, fd);
	return (int)r;
#else
	return (int)uffd_syscall3(SYS_close, fd, 0, 0);
#endif
}

/*
 * Through syscall(2), as preadv with one buffer: its offset comes as two longs, low and high,
 * on every architecture, where pread64's 64-bit argument sits in a register pair whose
 * alignment differs between 32-bit ABIs (ARM EABI, MIPS o32 and ppc32 pad before it). On a
 * 64-bit system the low long holds the whole offset and the kernel ignores the high one.
 */
ssize_t uffd_sys_pread(int fd, void *buf, size_t len, uint64_t offset)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	long n = syscall(SYS_preadv, fd, &iov, 1, (unsigned long)offset,
			 (unsigned long)((offset >> 16) >> 16));

	return n == -1 ? -errno : n;
}

void *uffd_sys_mmap(size_t len)
{
	void *p;

	if (uffd_fail_check(UFFD_FAIL_MMAP))
		return NULL;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void uffd_sys_munmap(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

_Atomic long uffd_page_size_cache;

long uffd_page_size_slow(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	if (ps <= 0)
		ps = 4096;
	atomic_store_explicit(&uffd_page_size_cache, ps, memory_order_relaxed);
	return ps;
}

#ifdef UFFD_FAULT_INJECTION
/*
 * Fault injection for the test suite (test_inject, the fuzzers). Every call at a site is counted;
 * a test arms a site so that its nth next call fails with a chosen errno, once or from then on.
 * Only the test suite's copy of the library (uffd_testing) has them; the installed libraries
 * are built without UFFD_FAULT_INJECTION.
 */
static _Atomic unsigned long site_calls[UFFD_FAIL__COUNT];
static _Atomic int fail_countdown[UFFD_FAIL__COUNT];
static _Atomic int fail_errno[UFFD_FAIL__COUNT];
static _Atomic bool fail_sticky[UFFD_FAIL__COUNT];

int uffd_fail_check(enum uffd_fail_site site)
{
	int left;

	atomic_fetch_add_explicit(&site_calls[site], 1, memory_order_relaxed);
	left = atomic_load_explicit(&fail_countdown[site], memory_order_relaxed);
	if (left <= 0)
		return 0;
	if (left == 1 && atomic_load(&fail_sticky[site]))
		return atomic_load(&fail_errno[site]);
	if (atomic_fetch_sub(&fail_countdown[site], 1) == 1)
		return atomic_load(&fail_errno[site]);
	return 0;
}

void uffd_fail_corrupt(void *buf, long len)
{
	unsigned char *b = buf;
	long i;

	for (i = 0; i + (long)sizeof(struct uffd_msg) <= len; i += (long)sizeof(struct uffd_msg))
		if (b[i] == UFFD_EVENT_PAGEFAULT)
			memset(b + i + 24, 0xff, 4); /* ptid: above INT_MAX */
}

/*
 * Test hook: the @nth next call at @site fails with @err (a positive errno), and only that one.
 * @nth <= 0 disarms the site.
 */
UFFD_HIDDEN void uffd_test_fail_at(int site, int nth, int err);
void uffd_test_fail_at(int site, int nth, int err)
{
	if (site < 0 || site >= UFFD_FAIL__COUNT)
		return;
	atomic_store(&fail_sticky[site], false);
	atomic_store(&fail_errno[site], err);
	atomic_store(&fail_countdown[site], nth);
}

/* Test hook: the @nth next call at @site and every later one fail with @err, until disarmed. */
UFFD_HIDDEN void uffd_test_fail_from(int site, int nth, int err);
void uffd_test_fail_from(int site, int nth, int err)
{
	if (site < 0 || site >= UFFD_FAIL__COUNT)
		return;
	atomic_store(&fail_countdown[site], 0);
	atomic_store(&fail_errno[site], err);
	atomic_store(&fail_sticky[site], nth > 0);
	atomic_store(&fail_countdown[site], nth);
}

/* Test hook: how many calls @site has seen since the process started. */
UFFD_HIDDEN unsigned long uffd_test_calls(int site);
unsigned long uffd_test_calls(int site)
{
	if (site < 0 || site >= UFFD_FAIL__COUNT)
		return 0;
	return atomic_load(&site_calls[site]);
}
#endif /* UFFD_FAULT_INJECTION */
