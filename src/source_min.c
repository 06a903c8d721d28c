/* SPDX-License-Identifier: MIT */
/*
 * The page-source object, minimal: uffd_source_new() and the calls that go through its ops.
 * A stand-in so that the HTTP source (libuffd-http) can be built and tested before the core of
 * issue 14 (branch `sources`) lands; that branch's src/source.c replaces this file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct uffd_source {
	struct uffd_source_ops ops;
	void *impl;
};

/* The members a caller compiled against an older uffd.h may lack: read is the least we need. */
#define OPS_MIN_SIZE (offsetof(struct uffd_source_ops, read) + sizeof(void *))

int uffd_source_new(struct uffd_source **out, const struct uffd_source_ops *ops, void *impl)
{
	struct uffd_source *s;

	if (!out || !ops || ops->size < OPS_MIN_SIZE || !ops->read)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	/* Copy only what the caller's struct has; members it did not know about stay NULL. */
	memcpy(&s->ops, ops, ops->size < sizeof(s->ops) ? ops->size : sizeof(s->ops));
	s->ops.size = sizeof(s->ops);
	s->impl = impl;
	*out = s;
	return 0;
}

int uffd_source_read(struct uffd_source *s, void *buf, size_t len, uint64_t offset)
{
	if (!s || (!buf && len))
		return -EINVAL;
	if (!len)
		return 0;
	return s->ops.read(s->impl, buf, len, offset);
}

int64_t uffd_source_length(struct uffd_source *s)
{
	if (!s)
		return -EINVAL;
	if (!s->ops.length)
		return -EOPNOTSUPP;
	return s->ops.length(s->impl);
}

void uffd_source_close(struct uffd_source *s)
{
	if (!s)
		return;
	if (s->ops.close)
		s->ops.close(s->impl);
	free(s);
}
