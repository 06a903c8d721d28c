/* SPDX-License-Identifier: MIT */
/* Tests for uffd_event_decode() and uffd_event_name(): every kind, every error, fuzzing, and
 * messages sent by the real kernel. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/userfaultfd.h>
#include <uffd.h>

#include "internal.h"
#include "testutil.h"

#define PG ((uint64_t)tu_page())

static struct uffd_msg mk(uint8_t event)
{
	struct uffd_msg m;

	memset(&m, 0, sizeof(m));
	m.event = event;
	return m;
}

static struct uffd_msg mk_span(uint8_t event, uint64_t start, uint64_t end)
{
	struct uffd_msg m = mk(event);

	m.arg.remove.start = start;
	m.arg.remove.end = end;
	return m;
}

static struct uffd_msg mk_remap(uint64_t from, uint64_t to, uint64_t len)
{
	struct uffd_msg m = mk(UFFD_EVENT_REMAP);

	m.arg.remap.from = from;
	m.arg.remap.to = to;
	m.arg.remap.len = len;
	return m;
}

/* Decode through a deliberately misaligned copy, so no test relies on the input's alignment. */
static int decode_unaligned(const struct uffd_msg *m, size_t len, struct uffd_event *ev)
{
	static uint8_t buf[1 + 64];

	memset(buf, 0xa5, sizeof(buf));
	memcpy(buf + 1, m, sizeof(*m));
	return uffd_event_decode(buf + 1, len, ev);
}

static void check_common(const struct uffd_event *ev, const struct uffd_msg *m)
{
	ck_assert_ptr_null(ev->ctx);
	ck_assert_mem_eq(ev->raw, m, 32);
}

START_TEST(pagefault)
{
	struct uffd_msg m = mk(UFFD_EVENT_PAGEFAULT);
	struct uffd_event ev;

	m.arg.pagefault.flags = UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP;
	m.arg.pagefault.address = 0x7f0000001000ull;
	m.arg.pagefault.feat.ptid = 4242;
	memset(&ev, 0x5a, sizeof(ev)); /* decode must clear what it does not set */
	ck_assert_int_eq(decode_unaligned(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.kind, UFFD_EVT_PAGEFAULT);
	ck_assert_ptr_eq(ev.pagefault.address, (void *)0x7f0000001000ull);
	ck_assert_uint_eq(ev.pagefault.flags, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
	ck_assert_int_eq(ev.pagefault.tid, 4242);
	ck_assert_ptr_null(ev.pagefault.range.start);
	ck_assert_ptr_null(ev.pagefault.range.end);
	ck_assert_ptr_null(ev.pagefault.range.data);
	ck_assert_uint_eq(ev.pagefault.range.offset, 0);
	check_common(&ev, &m);

	/* Minor fault, no thread id, and an exact (unaligned) address are all fine. */
	m.arg.pagefault.flags = UFFD_PAGEFAULT_FLAG_MINOR;
	m.arg.pagefault.address = 0x7f0000001234ull;
	m.arg.pagefault.feat.ptid = 0;
	ck_assert_int_eq(uffd_event_decode(&m, sizeof(m), &ev), 0);
	ck_assert_ptr_eq(ev.pagefault.address, (void *)0x7f0000001234ull);
	ck_assert_uint_eq(ev.pagefault.flags, UFFD_PAGEFAULT_FLAG_MINOR);
	ck_assert_int_eq(ev.pagefault.tid, 0);

	/* Flag bits from a newer kernel are kept as they are. */
	m.arg.pagefault.flags = 0xfffffffffffffff8ull | UFFD_PAGEFAULT_FLAG_WRITE;
	ck_assert_int_eq(uffd_event_decode(&m, sizeof(m), &ev), 0);
	ck_assert_uint_eq(ev.pagefault.flags, 0xfffffffffffffff8ull | UFFD_PAGEFAULT_FLAG_WRITE);

	/* The largest pid_t is accepted. */
	m.arg.pagefault.feat.ptid = INT_MAX;
	ck_assert_int_eq(uffd_event_decode(&m, sizeof(m), &ev), 0);
	ck_assert_int_eq(ev.pagefault.tid, INT_MAX);
}
END_TEST

START_TEST(fork_event)
{
	struct uffd_msg m = mk(UFFD_EVENT_FORK);
	struct uffd_event ev;

	m.arg.fork.ufd = 17;
	memset(&ev, 0x5a, sizeof(ev));
	ck_assert_int_eq(decode_unaligned(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.kind, UFFD_EVT_FORK);
	ck_assert_int_eq(ev.fork.fd, 17);
	ck_assert_ptr_null(ev.fork.child);
	check_common(&ev, &m);

	m.arg.fork.ufd = 0;
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.fork.fd, 0);
	m.arg.fork.ufd = INT_MAX;
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.fork.fd, INT_MAX);
}
END_TEST

START_TEST(remap)
{
	struct uffd_msg m = mk_remap(0x10000000, 0x20000000, 16 * PG);
	struct uffd_event ev;

	memset(&ev, 0x5a, sizeof(ev));
	ck_assert_int_eq(decode_unaligned(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMAP);
	ck_assert_ptr_eq(ev.remap.from, (void *)0x10000000);
	ck_assert_ptr_eq(ev.remap.to, (void *)0x20000000);
	ck_assert_uint_eq(ev.remap.len, 16 * PG);
	check_common(&ev, &m);

	/* Moving down, and moving to just below the top of the address space. */
	m = mk_remap(0x20000000, 0x10000000, PG);
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
	ck_assert_ptr_eq(ev.remap.to, (void *)0x10000000);
	m = mk_remap(0x1000, (uint64_t)0 - 2 * PG, PG);
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);

	/* A zero length is -EPROTO (the contract), with the fields still decoded: the kernel sends
	 * it when mremap duplicates a shared mapping (old_len 0), and the dispatcher uses them. */
	m = mk_remap(0x10000000, 0x20000000, 0);
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), -EPROTO);
	ck_assert_ptr_eq(ev.remap.to, (void *)0x20000000);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMAP);
	ck_assert_uint_eq(ev.remap.len, 0);
}
END_TEST

START_TEST(remove_unmap)
{
	static const uint8_t codes[] = { UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP };
	struct uffd_event ev;

	for (size_t i = 0; i < 2; i++) {
		struct uffd_msg m = mk_span(codes[i], 0x10000000, 0x10000000 + 3 * PG);
		const struct uffd_span *s = codes[i] == UFFD_EVENT_REMOVE ? &ev.remove : &ev.unmap;

		memset(&ev, 0x5a, sizeof(ev));
		ck_assert_int_eq(decode_unaligned(&m, 32, &ev), 0);
		ck_assert_int_eq(ev.kind, codes[i]);
		ck_assert_ptr_eq(s->start, (void *)0x10000000);
		ck_assert_ptr_eq(s->end, (void *)(uintptr_t)(0x10000000 + 3 * PG));
		check_common(&ev, &m);

		/* One page at the very top and at zero. */
		m = mk_span(codes[i], (uint64_t)0 - 2 * PG, (uint64_t)0 - PG);
		ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
		m = mk_span(codes[i], 0, PG);
		ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
	}
}
END_TEST

START_TEST(longer_buffer)
{
	/* Only the first 32 bytes are read; what follows does not matter. */
	uint8_t buf[96];
	struct uffd_msg m = mk_span(UFFD_EVENT_UNMAP, PG, 2 * PG);
	struct uffd_event ev;

	memset(buf, 0xff, sizeof(buf));
	memcpy(buf, &m, sizeof(m));
	ck_assert_int_eq(uffd_event_decode(buf, sizeof(buf), &ev), 0);
	ck_assert_int_eq(ev.kind, UFFD_EVT_UNMAP);
	ck_assert_mem_eq(ev.raw, &m, 32);
	ck_assert_int_eq(uffd_event_decode(buf, SIZE_MAX, &ev), 0);
}
END_TEST

START_TEST(unknown_codes)
{
	static const uint8_t codes[] = { 0x00, 0x01, 0x11, 0x17, 0x18, 0x80, 0xfe, 0xff };
	struct uffd_event ev;

	for (size_t i = 0; i < sizeof(codes); i++) {
		struct uffd_msg m = mk(codes[i]);

		/* Arbitrary body, including bytes that would be malformed for a known kind. */
		memset(&m.arg, 0xc3, sizeof(m.arg));
		m.reserved1 = 0x77;
		memset(&ev, 0x5a, sizeof(ev));
		ck_assert_int_eq(decode_unaligned(&m, 32, &ev), 0);
		ck_assert_int_eq(ev.kind, UFFD_EVT_UNKNOWN);
		check_common(&ev, &m);
	}
}
END_TEST

START_TEST(reserved_bytes_ignored)
{
	/* Bytes 1..7 are reserved; a newer kernel may use them, so they are not checked. */
	struct uffd_msg m = mk_span(UFFD_EVENT_REMOVE, PG, 2 * PG);
	struct uffd_event ev;

	m.reserved1 = 0xff;
	m.reserved2 = 0xffff;
	m.reserved3 = 0xffffffff;
	ck_assert_int_eq(uffd_event_decode(&m, 32, &ev), 0);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMOVE);
	ck_assert_mem_eq(ev.raw, &m, 32);
}
END_TEST

static void expect_eproto(const struct uffd_msg *m, enum uffd_event_kind kind)
{
	struct uffd_event ev;

	ck_assert_int_eq(decode_unaligned(m, 32, &ev), -EPROTO);
	/* The kind and the raw bytes are still there, for logging. */
	ck_assert_int_eq(ev.kind, kind);
	ck_assert_mem_eq(ev.raw, m, 32);
}

START_TEST(malformed_spans)
{
	static const uint8_t codes[] = { UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP };

	for (size_t i = 0; i < 2; i++) {
		struct uffd_msg m;
		enum uffd_event_kind k = codes[i];

		m = mk_span(codes[i], 2 * PG, PG); /* start > end */
		expect_eproto(&m, k);
		m = mk_span(codes[i], PG, PG); /* empty */
		expect_eproto(&m, k);
		m = mk_span(codes[i], 0, 0);
		expect_eproto(&m, k);
		m = mk_span(codes[i], PG + 1, 2 * PG); /* unaligned start */
		expect_eproto(&m, k);
		m = mk_span(codes[i], PG, 2 * PG - 1); /* unaligned end */
		expect_eproto(&m, k);
		m = mk_span(codes[i], PG, UINT64_MAX);
		expect_eproto(&m, k);
		m = mk_span(codes[i], UINT64_MAX, 0);
		expect_eproto(&m, k);
	}
}
END_TEST

START_TEST(malformed_remap)
{
	struct uffd_msg m;

	m = mk_remap(0x10000001, 0x20000000, PG); /* unaligned from */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap(0x10000000, 0x20000800, PG); /* unaligned to */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap(0x10000000, 0x20000000, PG + 8); /* unaligned len */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap((uint64_t)0 - PG, 0x20000000, 2 * PG); /* from + len wraps */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap(0x20000000, (uint64_t)0 - PG, 2 * PG); /* to + len wraps */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap(PG, 0, UINT64_MAX & ~(PG - 1)); /* a huge length wraps */
	expect_eproto(&m, UFFD_EVT_REMAP);
	m = mk_remap(0x1000, (uint64_t)0 - PG, PG); /* ends past the last address */
	expect_eproto(&m, UFFD_EVT_REMAP);
}
END_TEST

START_TEST(malformed_fork_pagefault)
{
	struct uffd_msg m = mk(UFFD_EVENT_FORK);

	m.arg.fork.ufd = 0x80000000u;
	expect_eproto(&m, UFFD_EVT_FORK);
	m.arg.fork.ufd = 0xffffffffu; /* -1 */
	expect_eproto(&m, UFFD_EVT_FORK);

	m = mk(UFFD_EVENT_PAGEFAULT);
	m.arg.pagefault.address = 0x1000;
	m.arg.pagefault.feat.ptid = 0x80000000u;
	expect_eproto(&m, UFFD_EVT_PAGEFAULT);
	m.arg.pagefault.feat.ptid = 0xffffffffu;
	expect_eproto(&m, UFFD_EVT_PAGEFAULT);
}
END_TEST

START_TEST(bad_args)
{
	struct uffd_msg m = mk_span(UFFD_EVENT_UNMAP, PG, 2 * PG);
	struct uffd_event ev;

	for (size_t len = 0; len < 32; len++) {
		memset(&ev, 0x5a, sizeof(ev));
		ck_assert_int_eq(uffd_event_decode(&m, len, &ev), -EINVAL);
	}
	ck_assert_int_eq(uffd_event_decode(NULL, 32, &ev), -EINVAL);
	ck_assert_int_eq(uffd_event_decode(NULL, 0, &ev), -EINVAL);
	ck_assert_int_eq(uffd_event_decode(&m, 32, NULL), -EINVAL);
	ck_assert_int_eq(uffd_event_decode(NULL, 32, NULL), -EINVAL);
}
END_TEST

START_TEST(names)
{
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_PAGEFAULT), "pagefault");
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_FORK), "fork");
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_REMAP), "remap");
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_REMOVE), "remove");
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_UNMAP), "unmap");
	ck_assert_str_eq(uffd_event_name(UFFD_EVT_UNKNOWN), "unknown");
	ck_assert_str_eq(uffd_event_name((enum uffd_event_kind)0), "unknown");
	ck_assert_str_eq(uffd_event_name((enum uffd_event_kind)0x17), "unknown");
	ck_assert_str_eq(uffd_event_name((enum uffd_event_kind) - 1), "unknown");
}
END_TEST

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failure reproduces. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A random 64-bit field that is often page-aligned, often small, sometimes at the edges. */
static uint64_t rnd_field(void)
{
	uint64_t v = rnd();

	switch (rnd() % 6) {
	case 0:
		return v;
	case 1:
		return v & ~(PG - 1);
	case 2:
		return (v % 64) * PG;
	case 3:
		return UINT64_MAX - (v % 4) * PG - (rnd() % 2 ? PG - 1 : 0);
	case 4:
		return v % 4;
	default:
		return (v & 0x7fffffffffffull) & ~(PG - 1);
	}
}

static void check_valid(const struct uffd_event *ev)
{
	uint64_t ps = PG;

	switch (ev->kind) {
	case UFFD_EVT_REMOVE:
	case UFFD_EVT_UNMAP: {
		uintptr_t s = (uintptr_t)ev->unmap.start, e = (uintptr_t)ev->unmap.end;

		ck_assert(s < e);
		ck_assert(s % ps == 0 && e % ps == 0);
		break;
	}
	case UFFD_EVT_REMAP: {
		uintptr_t f = (uintptr_t)ev->remap.from, t = (uintptr_t)ev->remap.to;

		ck_assert(f % ps == 0 && t % ps == 0 && ev->remap.len % ps == 0);
		ck_assert(f + ev->remap.len >= f && t + ev->remap.len >= t);
		break;
	}
	case UFFD_EVT_FORK:
		ck_assert_int_ge(ev->fork.fd, 0);
		ck_assert_ptr_null(ev->fork.child);
		break;
	case UFFD_EVT_PAGEFAULT:
		ck_assert_int_ge(ev->pagefault.tid, 0);
		ck_assert_ptr_null(ev->pagefault.range.start);
		break;
	case UFFD_EVT_UNKNOWN:
		break;
	}
}

START_TEST(fuzz)
{
	static uint8_t buf[1 + 64];
	struct uffd_event ev;
	unsigned ok = 0, bad = 0, unknown = 0;

	for (int i = 0; i < 100000; i++) {
		uint8_t *msg = buf + (rnd() % 2); /* aligned or not */
		size_t len = 32 + rnd() % 33;
		uint64_t f[3] = { rnd_field(), rnd_field(), rnd_field() };
		int rc;

		for (size_t j = 0; j < sizeof(buf); j++)
			buf[j] = (uint8_t)rnd();
		/* Half the messages claim a known kind, to reach every validation path. */
		msg[0] = rnd() % 2 ? (uint8_t)(0x12 + rnd() % 5) : (uint8_t)rnd();
		memcpy(msg + 8, f, sizeof(f));
		if (msg[0] == UFFD_EVENT_FORK && rnd() % 2)
			msg[11] &= 0x7f; /* a plausible fd */
		if (msg[0] == UFFD_EVENT_PAGEFAULT && rnd() % 2)
			msg[27] &= 0x7f;

		memset(&ev, 0x5a, sizeof(ev));
		rc = uffd_event_decode(msg, len, &ev);
		ck_assert_msg(rc == 0 || rc == -EPROTO, "rc %d", rc);
		ck_assert_mem_eq(ev.raw, msg, 32);
		ck_assert_ptr_null(ev.ctx);
		if (msg[0] >= 0x12 && msg[0] <= 0x16) {
			ck_assert_int_eq(ev.kind, msg[0]);
		} else {
			ck_assert_int_eq(ev.kind, UFFD_EVT_UNKNOWN);
			ck_assert_int_eq(rc, 0);
			unknown++;
		}
		if (rc == 0) {
			check_valid(&ev);
			ok++;
		} else {
			bad++;
		}
	}
	/* The generator must reach both outcomes often, or the test proves little. */
	ck_assert_uint_gt(ok - unknown, 10000);
	ck_assert_uint_gt(bad, 10000);
	ck_assert_uint_gt(unknown, 10000);
}
END_TEST

/* ---- Messages from the real kernel ---- */

static int live_fd = -1;

static int open_raw(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) != 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	return fd;
}

/* Read one message within 5 s and decode it. */
static int read_event_rc(int fd, struct uffd_event *ev)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct uffd_msg m;

	ck_assert_int_eq(poll(&p, 1, 5000), 1);
	ck_assert_int_eq(read(fd, &m, sizeof(m)), (ssize_t)sizeof(m));
	return uffd_event_decode(&m, sizeof(m), ev);
}

static void read_event(int fd, struct uffd_event *ev)
{
	ck_assert_int_eq(read_event_rc(fd, ev), 0);
}

struct op {
	int kind; /* 0 mremap dup, 1 mremap move, 2 madvise remove, 3 munmap, 4 read fault */
	char *addr, *target;
	size_t len, new_len;
	void *result;
	pid_t tid;
};

static void *run_op(void *arg)
{
	struct op *o = arg;

	o->tid = (pid_t)syscall(SYS_gettid);
	switch (o->kind) {
	case 0:
		o->result = mremap(o->addr, 0, o->new_len, MREMAP_MAYMOVE);
		break;
	case 1:
		o->result =
			mremap(o->addr, o->len, o->len, MREMAP_MAYMOVE | MREMAP_FIXED, o->target);
		break;
	case 2:
		o->result = (void *)(intptr_t)madvise(o->addr, o->len, MADV_REMOVE);
		break;
	case 3:
		o->result = (void *)(intptr_t)munmap(o->addr, o->len);
		break;
	default:
		o->result = (void *)(intptr_t) * (volatile char *)o->addr;
		break;
	}
	return NULL;
}

START_TEST(live_kernel_messages)
{
	size_t ps = tu_page(), len = 16 * ps;
	int fd = open_raw(UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP |
			  UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_THREAD_ID);
	int memfd;
	char *p = tu_map_shmem(len, true, &memfd);
	char *target = tu_map_anon(len); /* a place to move to */
	struct uffdio_register reg = { .range = { (uintptr_t)p, len },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffd_event ev;
	struct op o;
	pthread_t t;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ioctl(fd, UFFDIO_REGISTER, &reg), 0);

	/* A shared mapping duplicated by mremap(old_len 0): REMAP with len 0 (-EPROTO). */
	o = (struct op){ .kind = 0, .addr = p, .new_len = 4 * ps };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	ck_assert_int_eq(read_event_rc(fd, &ev), -EPROTO);
	pthread_join(t, NULL);
	ck_assert_ptr_ne(o.result, MAP_FAILED);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMAP);
	ck_assert_ptr_eq(ev.remap.from, p);
	ck_assert_ptr_eq(ev.remap.to, o.result);
	ck_assert_uint_eq(ev.remap.len, 0);
	/* The duplicate is registered too: unmapping it blocks until its UNMAP is read. */
	o = (struct op){ .kind = 3, .addr = o.result, .len = 4 * ps };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	read_event(fd, &ev);
	pthread_join(t, NULL);
	ck_assert_ptr_eq(o.result, NULL);
	ck_assert_int_eq(ev.kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(ev.unmap.end, o.addr + 4 * ps);

	/* A move: REMAP with the old length, then UNMAP of the destination's old mapping. */
	o = (struct op){ .kind = 1, .addr = p, .target = target, .len = len };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	read_event(fd, &ev);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMAP);
	ck_assert_ptr_eq(ev.remap.from, p);
	ck_assert_ptr_eq(ev.remap.to, target);
	ck_assert_uint_eq(ev.remap.len, len);
	read_event(fd, &ev);
	ck_assert_int_eq(ev.kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(ev.unmap.start, p);
	ck_assert_ptr_eq(ev.unmap.end, p + len);
	pthread_join(t, NULL);
	ck_assert_ptr_eq(o.result, target);

	/* MADV_REMOVE on part of it: REMOVE of exactly that part. */
	o = (struct op){ .kind = 2, .addr = target + 2 * ps, .len = 3 * ps };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	read_event(fd, &ev);
	pthread_join(t, NULL);
	ck_assert_ptr_eq(o.result, NULL);
	ck_assert_int_eq(ev.kind, UFFD_EVT_REMOVE);
	ck_assert_ptr_eq(ev.remove.start, target + 2 * ps);
	ck_assert_ptr_eq(ev.remove.end, target + 5 * ps);

	/* A read fault on a missing page, with the thread id. */
	o = (struct op){ .kind = 4, .addr = target + 7 * ps + 123 };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	read_event(fd, &ev);
	ck_assert_int_eq(ev.kind, UFFD_EVT_PAGEFAULT);
	ck_assert_ptr_eq(ev.pagefault.address, target + 7 * ps);
	ck_assert_uint_eq(ev.pagefault.flags, 0);
	ck_assert_int_gt(ev.pagefault.tid, 0);
	{
		/* Resolve it: shmem has no ZEROPAGE, so fill the page through the memfd. */
		struct uffdio_range wake = { (uintptr_t)(target + 7 * ps), ps };

		ck_assert_int_eq(pwrite(memfd, "x", 1, (off_t)(7 * ps + 123)), 1);
		ck_assert_int_eq(ioctl(fd, UFFDIO_WAKE, &wake), 0);
	}
	pthread_join(t, NULL);
	ck_assert_int_eq(o.tid, ev.pagefault.tid);
	ck_assert_int_eq((int)(intptr_t)o.result, 'x');

	/* munmap of part of it: UNMAP of exactly the request. */
	o = (struct op){ .kind = 3, .addr = target + ps, .len = 2 * ps };
	ck_assert_int_eq(pthread_create(&t, NULL, run_op, &o), 0);
	read_event(fd, &ev);
	pthread_join(t, NULL);
	ck_assert_int_eq(ev.kind, UFFD_EVT_UNMAP);
	ck_assert_ptr_eq(ev.unmap.start, target + ps);
	ck_assert_ptr_eq(ev.unmap.end, target + 3 * ps);

	close(fd);
	close(memfd);
	munmap(target, len);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("event");
	TCase *tc = tcase_create("decode");
	TCase *live = tcase_create("live");
	int rc;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, pagefault);
	tcase_add_test(tc, fork_event);
	tcase_add_test(tc, remap);
	tcase_add_test(tc, remove_unmap);
	tcase_add_test(tc, longer_buffer);
	tcase_add_test(tc, unknown_codes);
	tcase_add_test(tc, reserved_bytes_ignored);
	tcase_add_test(tc, malformed_spans);
	tcase_add_test(tc, malformed_remap);
	tcase_add_test(tc, malformed_fork_pagefault);
	tcase_add_test(tc, bad_args);
	tcase_add_test(tc, names);
	tcase_add_test(tc, fuzz);
	suite_add_tcase(s, tc);

	live_fd = open_raw(UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP |
			   UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_THREAD_ID);
	if (live_fd >= 0) {
		close(live_fd);
		tcase_set_timeout(live, 30);
		tcase_add_test(live, live_kernel_messages);
		suite_add_tcase(s, live);
	}
	rc = tu_run(s);
	if (rc == 0 && live_fd < 0)
		tu_skip("userfaultfd with EVENT_REMAP|UNMAP|REMOVE|THREAD_ID unavailable (%s): "
			"only the pure decode tests ran",
			strerror(-live_fd));
	return rc;
}
