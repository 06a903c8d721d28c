/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB */
int uffd_event_decode(const void *m, size_t l, struct uffd_event *e) { (void)m; (void)l; (void)e; return -ENOSYS; }
const char *uffd_event_name(enum uffd_event_kind k) { (void)k; return "unknown"; }
