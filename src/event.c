/* SPDX-License-Identifier: MIT */
/* Decoding the kernel's 32-byte userfaultfd messages into typed events, and event names. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "internal.h"

#define UFFD_MSG_SIZE 32

/*
 * Offsets in struct uffd_msg (a packed, host-endian 32-byte record). The fields are read with
 * memcpy because the caller's buffer need not be aligned for 64-bit loads.
 */
#define OFF_EVENT 0
#define OFF_ARG0 8
#define OFF_ARG1 16
#define OFF_ARG2 24

_Static_assert(sizeof(struct uffd_msg) == UFFD_MSG_SIZE, "struct uffd_msg is 32 bytes");
_Static_assert(sizeof(((struct uffd_event *)0)->raw) == UFFD_MSG_SIZE, "raw holds one message");

static uint64_t get_u64(const uint8_t *p, size_t off)
{
	uint64_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

static uint32_t get_u32(const uint8_t *p, size_t off)
{
	uint32_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

/* An address from the kernel must fit this process's pointers (it cannot fail on 64-bit). */
static bool fits_ptr(uint64_t v)
{
	return (uint64_t)(uintptr_t)v == v;
}

static bool page_aligned(uint64_t v)
{
	return (v & (uint64_t)(uffd_page_size() - 1)) == 0;
}

/*
 * REMOVE and UNMAP carry [start, end). The kernel never sends an empty or unaligned span:
 * munmap (do_vmi_munmap) rejects a zero length and an unaligned start and page-aligns the
 * length before userfaultfd_unmap_prep(); madvise returns before userfaultfd_remove() when the
 * (hugetlb-rounded) range is empty ("if (start == end) return 0" in madvise_dontneed_free), and
 * MADV_REMOVE passes a range clipped to a VMA. So start >= end or an address off a page boundary
 * is a message this library cannot trust: -EPROTO.
 */
static int decode_span(const uint8_t *b, struct uffd_span *span)
{
	uint64_t start = get_u64(b, OFF_ARG0);
	uint64_t end = get_u64(b, OFF_ARG1);

	if (start >= end || !page_aligned(start) || !page_aligned(end))
		return -EPROTO;
	if (!fits_ptr(start) || !fits_ptr(end))
		return -EPROTO;
	span->start = (void *)(uintptr_t)start;
	span->end = (void *)(uintptr_t)end;
	return 0;
}

/*
 * REMAP carries {from, to, old length}. mremap page-aligns the old address and length, and
 * mremap_userfaultfd_complete() sends nothing when the new address is unaligned (it is then an
 * error code). Unaligned fields and ranges that wrap the address space are -EPROTO.
 *
 * A zero length is -EPROTO too, as the API contract says, with every field still filled in.
 * Note that the 6.18 kernel does send it: mremap(addr, 0, new_len, MREMAP_MAYMOVE) on a shared
 * mapping duplicates it (remap_is_valid() in mm/mremap.c allows old_len == 0 for VM_SHARED) and
 * the REMAP then says len 0. The dispatcher knows this and delivers such a message as a REMAP
 * of nothing rather than as an unknown event.
 */
static int decode_remap(const uint8_t *b, struct uffd_remap *r)
{
	uint64_t from = get_u64(b, OFF_ARG0);
	uint64_t to = get_u64(b, OFF_ARG1);
	uint64_t len = get_u64(b, OFF_ARG2);

	if (!page_aligned(from) || !page_aligned(to) || !page_aligned(len))
		return -EPROTO;
	if (from + len < from || to + len < to)
		return -EPROTO;
	if (!fits_ptr(from + len) || !fits_ptr(to + len) || (uint64_t)(size_t)len != len)
		return -EPROTO;
	r->from = (void *)(uintptr_t)from;
	r->to = (void *)(uintptr_t)to;
	r->len = (size_t)len;
	return len ? 0 : -EPROTO;
}

/* A page fault: the rules are in internal.h, shared with the dispatcher's fast path. */
static int decode_pagefault(const uint8_t *b, struct uffd_pagefault *pf)
{
	return uffd_decode_pagefault(b, pf);
}

/* The child's fd was installed in the reader's fd table: it is an int, never negative. */
static int decode_fork(const uint8_t *b, struct uffd_fork *f)
{
	uint32_t ufd = get_u32(b, OFF_ARG0);

	if (ufd > (uint32_t)INT_MAX)
		return -EPROTO;
	f->child = NULL;
	f->fd = (int)ufd;
	return 0;
}

int uffd_event_decode(const void *msg, size_t len, struct uffd_event *ev)
{
	const uint8_t *b = msg;

	if (ev)
		memset(ev, 0, sizeof(*ev));
	if (!msg || !ev || len < UFFD_MSG_SIZE)
		return -EINVAL;

	memcpy(ev->raw, b, UFFD_MSG_SIZE);
	ev->ctx = NULL;
	/*
	 * kind is set even when the body is malformed, so that a caller that logs a -EPROTO
	 * message can say which kind it claimed to be.
	 */
	switch (b[OFF_EVENT]) {
	case UFFD_EVENT_PAGEFAULT:
		ev->kind = UFFD_EVT_PAGEFAULT;
		return decode_pagefault(b, &ev->pagefault);
	case UFFD_EVENT_FORK:
		ev->kind = UFFD_EVT_FORK;
		return decode_fork(b, &ev->fork);
	case UFFD_EVENT_REMAP:
		ev->kind = UFFD_EVT_REMAP;
		return decode_remap(b, &ev->remap);
	case UFFD_EVENT_REMOVE:
		ev->kind = UFFD_EVT_REMOVE;
		return decode_span(b, &ev->remove);
	case UFFD_EVENT_UNMAP:
		ev->kind = UFFD_EVT_UNMAP;
		return decode_span(b, &ev->unmap);
	default:
		/* A code from a newer kernel: not an error, so old monitors keep running. */
		ev->kind = UFFD_EVT_UNKNOWN;
		return 0;
	}
}

const char *uffd_event_name(enum uffd_event_kind kind)
{
	switch (kind) {
	case UFFD_EVT_PAGEFAULT:
		return "pagefault";
	case UFFD_EVT_FORK:
		return "fork";
	case UFFD_EVT_REMAP:
		return "remap";
	case UFFD_EVT_REMOVE:
		return "remove";
	case UFFD_EVT_UNMAP:
		return "unmap";
	case UFFD_EVT_UNKNOWN:
		break;
	}
	return "unknown";
}
