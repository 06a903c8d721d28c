/* SPDX-License-Identifier: MIT */
/* The default fault handler's pieces (defaults.c), private to the library and its tests. */
#ifndef UFFD_DEFAULTS_H
#define UFFD_DEFAULTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

/* The most huge page sizes remembered (the kernel offers 2 on x86-64, 4 on arm64). */
#define UFFD_MAX_HUGE_SIZES 16

/*
 * A read-only mapping of @len zero bytes, populated, shared by every caller and never unmapped;
 * NULL when @len is not a power of two or mmap failed. Lock-free (see defaults.c).
 */
UFFD_HIDDEN const void *uffd_zero_source(size_t len);

/*
 * The huge page sizes this machine offers (/sys/kernel/mm/hugepages), ascending, into @out (at
 * most UFFD_MAX_HUGE_SIZES): their number, 0 when it offers none, or a negative errno when the
 * list could not be read. Read once and kept.
 */
UFFD_HIDDEN int uffd_huge_sizes(size_t *out);

/*
 * The kernel's page size for the mapping at @addr in this process, from the PROCMAP_QUERY ioctl
 * on /proc/self/maps: the size in bytes, or a negative errno (-ENOTTY before Linux 6.11, -ENOENT
 * when nothing is mapped there).
 */
UFFD_HIDDEN long uffd_vma_page_size(uintptr_t addr);

#endif /* UFFD_DEFAULTS_H */
