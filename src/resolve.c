/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB: replaced by the real resolve.c. */
int uffd_copy(struct uffd *u, void *d, const void *s, size_t l, uint64_t m) { (void)u; (void)d; (void)s; (void)l; (void)m; return -ENOSYS; }
int uffd_zeropage(struct uffd *u, void *d, size_t l, uint64_t m) { (void)u; (void)d; (void)l; (void)m; return -ENOSYS; }
int uffd_continue(struct uffd *u, void *d, size_t l, uint64_t m) { (void)u; (void)d; (void)l; (void)m; return -ENOSYS; }
int uffd_poison(struct uffd *u, void *d, size_t l, uint64_t m) { (void)u; (void)d; (void)l; (void)m; return -ENOSYS; }
int uffd_move(struct uffd *u, void *d, void *s, size_t l, uint64_t m) { (void)u; (void)d; (void)s; (void)l; (void)m; return -ENOSYS; }
int uffd_writeprotect(struct uffd *u, void *a, size_t l, bool p, uint64_t m) { (void)u; (void)a; (void)l; (void)p; (void)m; return -ENOSYS; }
int uffd_wake(struct uffd *u, void *a, size_t l) { (void)u; (void)a; (void)l; return -ENOSYS; }
size_t uffd_last_done(void) { return 0; }
int uffd_wake_range(struct uffd *u, uintptr_t a, size_t l) { (void)u; (void)a; (void)l; return -ENOSYS; }
