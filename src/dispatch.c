/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB */
int uffd_read_events(struct uffd *u, struct uffd_event *e, size_t m, int t) { (void)u; (void)e; (void)m; (void)t; return -ENOSYS; }
int uffd_dispatch(struct uffd *u, int t) { (void)u; (void)t; return -ENOSYS; }
