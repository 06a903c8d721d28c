/* SPDX-License-Identifier: MIT */
/**
 * @file uffd_kernel.h
 * @brief The kernel's userfaultfd ABI up to Linux 6.18, for builds against older headers.
 *
 * Included by <uffd.h>; do not include it on its own. It first includes the system's
 * <linux/userfaultfd.h>, then defines, each under its own `#ifndef`, every constant, struct and
 * ioctl that a header older than Linux 6.18 lacks. The names and values are the kernel's own, so
 * this file and any newer <linux/userfaultfd.h> compile together in either order. Each entry
 * names the kernel release that added it; the library itself checks at run time what the
 * running kernel offers (uffd_probe()), so a build on 6.1 headers still uses a 6.18 kernel fully.
 */
#ifndef UFFD_KERNEL_H
#define UFFD_KERNEL_H

#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/userfaultfd.h>

/** @cond KERNEL_ABI */

/* Creation flags and the /dev/userfaultfd door. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1 /* 5.11 */
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA /* 6.1 */
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00) /* 6.1 */
#endif

/* Feature bits (UFFDIO_API). */
#ifndef UFFD_FEATURE_PAGEFAULT_FLAG_WP
#define UFFD_FEATURE_PAGEFAULT_FLAG_WP (1 << 0) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_EVENT_FORK
#define UFFD_FEATURE_EVENT_FORK (1 << 1) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_EVENT_REMAP
#define UFFD_FEATURE_EVENT_REMAP (1 << 2) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_EVENT_REMOVE
#define UFFD_FEATURE_EVENT_REMOVE (1 << 3) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_MISSING_HUGETLBFS
#define UFFD_FEATURE_MISSING_HUGETLBFS (1 << 4) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_MISSING_SHMEM
#define UFFD_FEATURE_MISSING_SHMEM (1 << 5) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_EVENT_UNMAP
#define UFFD_FEATURE_EVENT_UNMAP (1 << 6) /* 4.11 */
#endif
#ifndef UFFD_FEATURE_SIGBUS
#define UFFD_FEATURE_SIGBUS (1 << 7) /* 4.14 */
#endif
#ifndef UFFD_FEATURE_THREAD_ID
#define UFFD_FEATURE_THREAD_ID (1 << 8) /* 4.14 */
#endif
#ifndef UFFD_FEATURE_MINOR_HUGETLBFS
#define UFFD_FEATURE_MINOR_HUGETLBFS (1 << 9) /* 5.13 */
#endif
#ifndef UFFD_FEATURE_MINOR_SHMEM
#define UFFD_FEATURE_MINOR_SHMEM (1 << 10) /* 5.14 */
#endif
#ifndef UFFD_FEATURE_EXACT_ADDRESS
#define UFFD_FEATURE_EXACT_ADDRESS (1 << 11) /* 5.18 */
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12) /* 5.19 */
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* 6.4 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14) /* 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16) /* 6.8 */
#endif

/* Events and fault flags (read()). */
#ifndef UFFD_EVENT_PAGEFAULT
#define UFFD_EVENT_PAGEFAULT 0x12 /* 4.3 */
#endif
#ifndef UFFD_EVENT_FORK
#define UFFD_EVENT_FORK 0x13 /* 4.11 */
#endif
#ifndef UFFD_EVENT_REMAP
#define UFFD_EVENT_REMAP 0x14 /* 4.11 */
#endif
#ifndef UFFD_EVENT_REMOVE
#define UFFD_EVENT_REMOVE 0x15 /* 4.11 */
#endif
#ifndef UFFD_EVENT_UNMAP
#define UFFD_EVENT_UNMAP 0x16 /* 4.11 */
#endif
#ifndef UFFD_PAGEFAULT_FLAG_WRITE
#define UFFD_PAGEFAULT_FLAG_WRITE (1 << 0) /* 4.3 */
#endif
#ifndef UFFD_PAGEFAULT_FLAG_WP
#define UFFD_PAGEFAULT_FLAG_WP (1 << 1) /* 4.11 */
#endif
#ifndef UFFD_PAGEFAULT_FLAG_MINOR
#define UFFD_PAGEFAULT_FLAG_MINOR (1 << 2) /* 5.13 */
#endif

/* Register modes and per-ioctl modes. */
#ifndef UFFDIO_REGISTER_MODE_MISSING
#define UFFDIO_REGISTER_MODE_MISSING ((__u64)1 << 0) /* 4.3 */
#endif
#ifndef UFFDIO_REGISTER_MODE_WP
#define UFFDIO_REGISTER_MODE_WP ((__u64)1 << 1) /* 4.3 (usable 5.7) */
#endif
#ifndef UFFDIO_REGISTER_MODE_MINOR
#define UFFDIO_REGISTER_MODE_MINOR ((__u64)1 << 2) /* 5.13 */
#endif
#ifndef UFFDIO_COPY_MODE_DONTWAKE
#define UFFDIO_COPY_MODE_DONTWAKE ((__u64)1 << 0) /* 4.3 */
#endif
#ifndef UFFDIO_COPY_MODE_WP
#define UFFDIO_COPY_MODE_WP ((__u64)1 << 1) /* 5.7 */
#endif
#ifndef UFFDIO_ZEROPAGE_MODE_DONTWAKE
#define UFFDIO_ZEROPAGE_MODE_DONTWAKE ((__u64)1 << 0) /* 4.3 */
#endif
#ifndef UFFDIO_WRITEPROTECT_MODE_WP
#define UFFDIO_WRITEPROTECT_MODE_WP ((__u64)1 << 0) /* 5.7 */
#endif
#ifndef UFFDIO_WRITEPROTECT_MODE_DONTWAKE
#define UFFDIO_WRITEPROTECT_MODE_DONTWAKE ((__u64)1 << 1) /* 5.7 */
#endif
#ifndef UFFDIO_CONTINUE_MODE_DONTWAKE
#define UFFDIO_CONTINUE_MODE_DONTWAKE ((__u64)1 << 0) /* 5.13 */
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1) /* 6.4 */
#endif

/* ioctl numbers. */
#ifndef UFFDIO
#define UFFDIO 0xAA
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05) /* 6.8 */
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08) /* 6.6 */
#endif

/* UFFDIO_MOVE (6.8): struct, modes and ioctl come together. */
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* UFFDIO_POISON (6.6): struct, modes and ioctl come together. */
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/** @endcond */

#endif /* UFFD_KERNEL_H */
