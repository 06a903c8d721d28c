/* SPDX-License-Identifier: MIT */
/*
 * Hidden entry points of libuffd-http for its own tests: uffd.h has no call that starts an
 * asynchronous read (uffd_serve() is its only user), so the tests reach the operations here.
 */
#ifndef UFFD_HTTP_INTERNAL_H
#define UFFD_HTTP_INTERNAL_H

#include "uffd.h"

/* The operations every HTTP source has. */
const struct uffd_source_ops *uffd_http__ops(void);
/* The implementation behind a source uffd_http_source() made, or NULL. */
void *uffd_http__impl_of(struct uffd_source *s);

#endif
