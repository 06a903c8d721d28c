/* SPDX-License-Identifier: MIT */
/* Private pieces of the page-source code (source.c, serve.c, order.c, sha256.c). */
#ifndef UFFD_SERVE_H
#define UFFD_SERVE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* ---- sha256.c: see sha256.h ---- */
#include "sha256.h"

/* ---- source.c ---- */
struct uffd_source {
	struct uffd_source_ops ops; /* the caller's, members past its `size` zeroed */
	void *impl;
};

/* ---- order.c ---- */
/* Whether any run of @o names a region. */
UFFD_HIDDEN bool uffd_order_has_regions(const struct uffd_order *o);

#endif /* UFFD_SERVE_H */
