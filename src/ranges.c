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
int uffd_rmap_reserve(struct uffd_rmap *m, size_t n) { (void)m; (void)n; return -ENOSYS; }
const struct uffd_node *uffd_rmap_find(const struct uffd_rmap *m, uintptr_t a) { (void)m; (void)a; return 0; }
const struct uffd_node *uffd_rmap_next(const struct uffd_rmap *m, uintptr_t a) { (void)m; (void)a; return 0; }
int uffd_rmap_insert(struct uffd_rmap *m, uintptr_t s, uintptr_t e, void *d, size_t o, uint64_t md) { (void)m; (void)s; (void)e; (void)d; (void)o; (void)md; return -ENOSYS; }
int uffd_rmap_cut(struct uffd_rmap *m, uintptr_t s, uintptr_t e) { (void)m; (void)s; (void)e; return -ENOSYS; }
int uffd_rmap_move(struct uffd_rmap *m, uintptr_t f, uintptr_t t, size_t l) { (void)m; (void)f; (void)t; (void)l; return -ENOSYS; }
int uffd_rmap_clone(struct uffd_rmap *d, const struct uffd_rmap *s) { (void)d; (void)s; return -ENOSYS; }
bool uffd_rmap_overlaps(const struct uffd_rmap *m, uintptr_t s, uintptr_t e) { (void)m; (void)s; (void)e; return 0; }
void uffd_rmap_fill(const struct uffd_node *n, struct uffd_range *o) { (void)n; (void)o; }
