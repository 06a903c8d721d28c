/* SPDX-License-Identifier: MIT */
/*
 * The default fault handler: what a context with no fault callback does, and what a callback may
 * leave to it (uffd_default_pagefault() is public).
 *
 * It must resolve faults on pages of every size: a range the kernel finds not aligned to the
 * mapping's page size is -EINVAL, and a fault the handler cannot resolve comes back for ever.
 * hugetlbfs pages are 2 MiB or 1 GiB on x86-64, 512 MiB on arm64 with 64K pages, 16 MiB on ppc:
 * the size is asked of the kernel, never assumed.
 *
 * It runs inside uffd_dispatch(), whose rules it keeps: no malloc (a monitor thread may share its
 * process with a thread that forks while holding glibc's malloc locks), no cancellation point
 * (raw syscalls), and no lock at all, so that a fork() at any moment leaves the child a working
 * handler (review finding 12). Its caches are atomics, filled by whichever thread gets there
 * first; racing threads compute the same values.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "defaults.h"

/* PROCMAP_QUERY is Linux 6.11 (uapi linux/fs.h); the build machines' 6.1 headers lack it. */
#ifndef PROCMAP_QUERY
struct procmap_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#endif
_Static_assert(sizeof(struct procmap_query) == 104, "struct procmap_query is 104 bytes");

/* ---- raw syscalls: none of them is a cancellation point, none allocates ---- */

static void sys_close(int fd)
{
	(void)uffd_syscall3(SYS_close, fd, 0, 0);
}

/* ---- the zero source ---- */

/* One slot per power of two: slot k holds a mapping of 2^k zero bytes once one was needed. */
static _Atomic(void *) zero_slots[sizeof(size_t) * CHAR_BIT];

/*
 * The source is populated (with the zero page) up front: the kernel copies into a huge page with
 * page faults disabled, and a source that is not mapped yet sends it down a slow path that takes
 * a second, unreserved huge page from the pool - which fails with -ENOMEM when the pool holds only
 * what the mappings reserved. Two threads that both find the slot empty both map one; the loser
 * unmaps its own, which nobody else has seen. A slot, once set, is never unmapped: another thread
 * may be copying from it.
 */
const void *uffd_zero_source(size_t len)
{
	void *p, *seen = NULL;
	unsigned k;

	if (len == 0 || (len & (len - 1)))
		return NULL;
	k = (unsigned)__builtin_ctzll((unsigned long long)len);
	p = atomic_load_explicit(&zero_slots[k], memory_order_acquire);
	if (p)
		return p;
	p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (!atomic_compare_exchange_strong_explicit(&zero_slots[k], &seen, p, memory_order_acq_rel,
						     memory_order_acquire)) {
		munmap(p, len);
		return seen;
	}
	return p;
}

/* ---- the machine's huge page sizes ---- */

/* -1 until read; then the count of huge_sizes[] (read after an acquire load of the count). */
static _Atomic int huge_count = -1;
static _Atomic size_t huge_sizes[UFFD_MAX_HUGE_SIZES];

/* "hugepages-2048kB" -> 2 MiB; 0 for any other name. */
static size_t size_of_dirent(const char *name)
{
	static const char prefix[] = "hugepages-";
	size_t kb = 0;
	const char *p = name;

	for (size_t i = 0; i < sizeof(prefix) - 1; i++, p++)
		if (*p != prefix[i])
			return 0;
	if (*p < '0' || *p > '9')
		return 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (kb > (SIZE_MAX >> 10) / 10)
			return 0;
		kb = kb * 10 + (size_t)(*p - '0');
	}
	if (p[0] != 'k' || p[1] != 'B' || p[2] != '\0')
		return 0;
	kb <<= 10;
	return (kb & (kb - 1)) ? 0 : kb;
}

/* The kernel's struct linux_dirent64, as getdents64 fills it. */
struct dirent64_raw {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/*
 * The directory is read with getdents64 into a stack buffer (opendir() would malloc). Sizes are
 * kept in ascending order, so that the handler's trials meet the right size before any multiple
 * of it (see uffd_default_pagefault()).
 */
static int read_huge_sizes(size_t *out)
{
	_Alignas(8) char buf[2048];
	int fd = uffd_sys_open("/sys/kernel/mm/hugepages", O_RDONLY | O_DIRECTORY);
	int n = 0;
	long got;

	if (fd == -ENOENT || fd == -ENOTDIR)
		return 0; /* no hugetlbfs in this kernel */
	if (fd < 0)
		return fd;
	while ((got = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < got;) {
			const struct dirent64_raw *d = (const void *)(buf + off);
			size_t s = size_of_dirent(d->d_name);
			int i;

			off += d->d_reclen;
			if (!s || n == UFFD_MAX_HUGE_SIZES)
				continue;
			for (i = n; i > 0 && out[i - 1] > s; i--)
				out[i] = out[i - 1];
			out[i] = s;
			n++;
		}
	}
	if (got < 0)
		n = -errno;
	sys_close(fd);
	return n;
}

/* The machine's sizes do not change while it runs (they are set at boot): read them once. */
int uffd_huge_sizes(size_t *out)
{
	int n = atomic_load_explicit(&huge_count, memory_order_acquire);

	if (n < 0) {
		n = read_huge_sizes(out);
		if (n < 0)
			return n; /* maybe passing (EMFILE): not kept */
		for (int i = 0; i < n; i++)
			atomic_store_explicit(&huge_sizes[i], out[i], memory_order_relaxed);
		atomic_store_explicit(&huge_count, n, memory_order_release);
		return n;
	}
	for (int i = 0; i < n; i++)
		out[i] = atomic_load_explicit(&huge_sizes[i], memory_order_relaxed);
	return n;
}

/* ---- the mapping's page size ---- */

/* Set once PROCMAP_QUERY proved missing (Linux < 6.11, or no /proc): not asked again. */
static _Atomic bool no_procmap_query;

long uffd_vma_page_size(uintptr_t addr)
{
	struct procmap_query q;
	int fd, ret;

	if (atomic_load_explicit(&no_procmap_query, memory_order_relaxed))
		return -ENOTTY;
	fd = uffd_sys_open("/proc/self/maps", O_RDONLY);
	if (fd == -ENOENT) {
		atomic_store_explicit(&no_procmap_query, true, memory_order_relaxed);
		return -ENOTTY;
	}
	if (fd < 0)
		return fd;
	memset(&q, 0, sizeof(q));
	q.size = sizeof(q);
	q.query_addr = addr; /* no flags: the mapping that covers addr, or ENOENT */
	ret = uffd_sys_ioctl(fd, PROCMAP_QUERY, &q);
	sys_close(fd);
	if (ret == -ENOTTY)
		atomic_store_explicit(&no_procmap_query, true, memory_order_relaxed);
	if (ret < 0)
		return ret;
	return q.vma_page_size > (uint64_t)LONG_MAX ? -EOVERFLOW : (long)q.vma_page_size;
}

/* ---- the handler ---- */

/* Resolve @pf as if the mapping's pages were @ps bytes: the page around its address. */
static int resolve(struct uffd *u, const struct uffd_pagefault *pf, size_t ps, bool base)
{
	void *a = (void *)((uintptr_t)pf->address & ~(uintptr_t)(ps - 1));
	const void *z;

	if (pf->flags & UFFD_PAGEFAULT_FLAG_WP)
		return uffd_writeprotect(u, a, ps, false, 0);
	if (pf->flags & UFFD_PAGEFAULT_FLAG_MINOR)
		return uffd_continue(u, a, ps, 0);
	if (base)
		return uffd_zeropage(u, a, ps, 0);
	/* hugetlbfs has no ZEROPAGE: copy a whole huge page of zeros. */
	z = uffd_zero_source(ps);
	return z ? uffd_copy(u, a, z, ps, 0) : -ENOMEM;
}

/*
 * Base pages first: anonymous memory and shmem, the common case, cost one ioctl as before. Only
 * its -EINVAL (the kernel's answer to a range not aligned to the mapping's pages) looks further:
 * - in this process's own address space (a context from uffd_open(), served by the process that
 *   opened it), PROCMAP_QUERY gives the mapping's page size;
 * - otherwise (an adopted fd, a fork child's context, a kernel before 6.11) each huge page size
 *   the machine offers is tried, smallest first. The kernel refuses every size that is not the
 *   mapping's with -EINVAL before it changes anything, and the first size that is a multiple of
 *   the mapping's page size is that size itself, so the first answer other than -EINVAL is
 *   exactly what the right size would have given.
 * When no size fits, the base page's -EINVAL is returned: a real error, which the dispatcher
 * returns to its caller after waking the fault.
 */
int uffd_default_pagefault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	size_t base = (size_t)uffd_page_size();
	size_t sizes[UFFD_MAX_HUGE_SIZES] = { 0 };
	int ret, n;

	(void)arg;
	if (!u || !pf)
		return -EINVAL;
	ret = resolve(u, pf, base, true);
	if (ret != -EINVAL)
		return ret;
	if (u->pid > 0 && u->pid == getpid()) {
		long ps = uffd_vma_page_size((uintptr_t)pf->address);

		if (ps > 0 && (size_t)ps <= base)
			return ret;
		if (ps > 0 && !((size_t)ps & ((size_t)ps - 1)))
			return resolve(u, pf, (size_t)ps, false);
		/* No answer: learn the size by trying, as for another process. */
	}
	n = uffd_huge_sizes(sizes);
	for (int i = 0; i < n && ret == -EINVAL; i++)
		if (sizes[i] > base)
			ret = resolve(u, pf, sizes[i], false);
	return ret;
}
