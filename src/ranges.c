/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB */
void uffd_rmap_init(struct uffd_rmap *m, uint32_t seed) { (void)m; (void)seed; }
void uffd_rmap_destroy(struct uffd_rmap *m) { (void)m; }
int uffd_register(struct uffd *u, void *a, size_t l, uint64_t m, void *d) { (void)u; (void)a; (void)l; (void)m; (void)d; return -ENOSYS; }
int uffd_unregister(struct uffd *u, void *a, size_t l) { (void)u; (void)a; (void)l; return -ENOSYS; }
int uffd_range_find(const struct uffd *u, const void *a, struct uffd_range *o) { (void)u; (void)a; (void)o; return -ENOSYS; }
int uffd_range_next(const struct uffd *u, const void *a, struct uffd_range *o) { (void)u; (void)a; (void)o; return -ENOSYS; }
long uffd_range_count(const struct uffd *u) { (void)u; return -ENOSYS; }
