/* SPDX-License-Identifier: MIT */
/* Fuzz target: uffd_event_decode() against an independent reading of struct uffd_msg. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include <uffd.h>
#include "fuzz.h"

static uint64_t u64_at(const uint8_t *b, size_t off)
{
	uint64_t v = 0;
	int i;

	/* Assembled byte by byte, in host order, so that this oracle shares nothing with event.c. */
	for (i = 7; i >= 0; i--)
		v = (v << 8) |
		    b[off + (size_t)(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? i : 7 - i)];
	return v;
}

static uint32_t u32_at(const uint8_t *b, size_t off)
{
	uint32_t v = 0;
	int i;

	for (i = 3; i >= 0; i--)
		v = (v << 8) |
		    b[off + (size_t)(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? i : 3 - i)];
	return v;
}

/*
 * What the message must decode to, from kernel.md's layout and the rules the header and
 * event.c give: spans are non-empty and page-aligned; remaps are page-aligned and do not wrap
 * (a zero length is what the kernel sends for a duplicated shared mapping); fork fds and fault
 * tids are non-negative ints; unknown codes are not errors.
 */
static int oracle(const uint8_t *b, struct uffd_event *want)
{
	uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE), a, c, len;
	uint32_t v;

	memset(want, 0, sizeof(*want));
	memcpy(want->raw, b, 32);
	switch (b[0]) {
	case 0x12:
		want->kind = UFFD_EVT_PAGEFAULT;
		want->pagefault.flags = u64_at(b, 8);
		want->pagefault.address = (void *)(uintptr_t)u64_at(b, 16);
		v = u32_at(b, 24);
		if (v > INT_MAX)
			return -EPROTO;
		want->pagefault.tid = (pid_t)v;
		return 0;
	case 0x13:
		want->kind = UFFD_EVT_FORK;
		v = u32_at(b, 8);
		if (v > INT_MAX)
			return -EPROTO;
		want->fork.fd = (int)v;
		return 0;
	case 0x14:
		want->kind = UFFD_EVT_REMAP;
		a = u64_at(b, 8);
		c = u64_at(b, 16);
		len = u64_at(b, 24);
		if (a % ps || c % ps || len % ps || a + len < a || c + len < c)
			return -EPROTO;
		want->remap.from = (void *)(uintptr_t)a;
		want->remap.to = (void *)(uintptr_t)c;
		want->remap.len = (size_t)len;
		return len ? 0 : -EPROTO; /* the contract: a zero-length remap is malformed */
	case 0x15:
	case 0x16:
		want->kind = b[0] == 0x15 ? UFFD_EVT_REMOVE : UFFD_EVT_UNMAP;
		a = u64_at(b, 8);
		c = u64_at(b, 16);
		if (a >= c || a % ps || c % ps)
			return -EPROTO;
		want->unmap.start = (void *)(uintptr_t)a;
		want->unmap.end = (void *)(uintptr_t)c;
		return 0;
	default:
		want->kind = UFFD_EVT_UNKNOWN;
		return 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uffd_event ev, ev2, want;
	uint8_t shifted[33];
	int r, r2, expect;

	r = uffd_event_decode(data, size, &ev);
	if (size < 32) {
		FUZZ_CHECK(r == -EINVAL);
		return 0;
	}
	expect = oracle(data, &want);
	FUZZ_CHECK(r == expect);
	/* raw and kind are kept even for a malformed message, for logging. */
	FUZZ_CHECK(memcmp(ev.raw, data, 32) == 0);
	FUZZ_CHECK(ev.kind == want.kind);
	FUZZ_CHECK(ev.ctx == NULL);
	if (r == 0) {
		switch (ev.kind) {
		case UFFD_EVT_PAGEFAULT:
			FUZZ_CHECK(ev.pagefault.address == want.pagefault.address);
			FUZZ_CHECK(ev.pagefault.flags == want.pagefault.flags);
			FUZZ_CHECK(ev.pagefault.tid == want.pagefault.tid);
			FUZZ_CHECK(ev.pagefault.range.start == NULL &&
				   ev.pagefault.range.end == NULL &&
				   ev.pagefault.range.data == NULL &&
				   ev.pagefault.range.offset == 0);
			break;
		case UFFD_EVT_FORK:
			FUZZ_CHECK(ev.fork.fd == want.fork.fd && ev.fork.fd >= 0);
			FUZZ_CHECK(ev.fork.child == NULL);
			break;
		case UFFD_EVT_REMAP:
			FUZZ_CHECK(ev.remap.from == want.remap.from);
			FUZZ_CHECK(ev.remap.to == want.remap.to);
			FUZZ_CHECK(ev.remap.len == want.remap.len);
			break;
		case UFFD_EVT_REMOVE:
		case UFFD_EVT_UNMAP:
			FUZZ_CHECK(ev.unmap.start == want.unmap.start);
			FUZZ_CHECK(ev.unmap.end == want.unmap.end);
			FUZZ_CHECK((uintptr_t)ev.unmap.start < (uintptr_t)ev.unmap.end);
			break;
		default:
			FUZZ_CHECK(ev.kind == UFFD_EVT_UNKNOWN);
			break;
		}
	}
	/* Only the first 32 bytes count, and the buffer need not be aligned. */
	memcpy(shifted + 1, data, 32);
	r2 = uffd_event_decode(shifted + 1, 32, &ev2);
	FUZZ_CHECK(r2 == r);
	FUZZ_CHECK(memcmp(&ev, &ev2, sizeof(ev)) == 0);
	FUZZ_CHECK(uffd_event_name(ev.kind) != NULL && uffd_event_name(ev.kind)[0] != '\0');
	FUZZ_CHECK(uffd_event_decode(data, 31, &ev2) == -EINVAL);
	FUZZ_CHECK(uffd_event_decode(NULL, size, &ev2) == -EINVAL);
	FUZZ_CHECK(uffd_event_decode(data, size, NULL) == -EINVAL);
	return 0;
}
