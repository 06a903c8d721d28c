/* SPDX-License-Identifier: MIT */
/* Bad input table: every public function x every kind of bad argument gives the documented
 * negative errno, changes nothing, does not crash and prints nothing. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uffd.h>
#include "internal.h"
#include "testutil.h"

#define EVENTS (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE)
#define NP 16 /* pages of the fixture's mapping */
#define SENTINEL ((void *)0x5e47)
#define HUGE_LEN (SIZE_MAX - (size_t)PS + 1) /* page-aligned, and wraps any address */

static size_t PS;

/*
 * The world every case runs in. Pages of `mem`: [0, 4) registered MISSING on `u`, [4, 8)
 * registered WP on `u`, [8, 12) mapped but not registered, [12, 16) registered MISSING on `u2`
 * (another context, in monitor `m`). `hole` is a page-aligned address with nothing mapped.
 * None of the registered pages is ever touched: they stay missing.
 */
struct fx {
	struct uffd *u, *u2;
	struct uffd_monitor *m;
	char *mem, *hole;
	char *P, *WP, *Q, *R; /* the four quarters */
	int pipefd, evfd, nullfd, closedfd, rawfd;
	struct uffd *out_u;	    /* receives nothing: stays SENTINEL */
	struct uffd_monitor *out_m; /* idem */
	struct uffd_event evs[4];
	struct uffd_range range;
	struct uffd_stats stats;
	struct uffd_pagefault pf;
	char msg[64];
	char src[1 << 16] __attribute__((aligned(65536)));
	/* 0.2: page sources and serving */
	struct uffd_source *source;   /* a memory source over src */
	struct uffd_order *order;     /* an empty order */
	struct uffd_source *out_src;  /* receives nothing: stays NULL */
	struct uffd_order *out_order; /* idem */
	struct uffd_serve_stats sstats;
	uint64_t u64;
	int outfd;
};

static struct fx F;

static int noop_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	(void)u, (void)pf, (void)arg;
	return 0;
}

static void fx_setup(void)
{
	struct uffd_config cfg = { .required = EVENTS | UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	int fd;

	PS = tu_page();
	memset(&F, 0, sizeof(F));
	ck_assert_int_eq(uffd_open(&F.u, &cfg), 0);
	ck_assert_int_eq(uffd_open(&F.u2, &cfg), 0);
	ck_assert_int_eq(uffd_monitor_new(&F.m), 0);
	ck_assert_int_eq(uffd_monitor_add(F.m, F.u2), 0);
	uffd_on_pagefault(F.u, noop_fault, &F);
	F.mem = tu_map_anon(NP * PS);
	F.P = F.mem;
	F.WP = F.mem + 4 * PS;
	F.Q = F.mem + 8 * PS;
	F.R = F.mem + 12 * PS;
	ck_assert_int_eq(uffd_register(F.u, F.P, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, &F), 0);
	ck_assert_int_eq(uffd_register(F.u, F.WP, 4 * PS, UFFDIO_REGISTER_MODE_WP, &F.P), 0);
	ck_assert_int_eq(uffd_register(F.u2, F.R, 4 * PS, UFFDIO_REGISTER_MODE_MISSING, NULL), 0);
	F.hole = tu_map_anon(4 * PS);
	munmap(F.hole, 4 * PS);

	{
		int p[2];

		ck_assert_int_eq(pipe(p), 0);
		close(p[1]);
		F.pipefd = p[0];
	}
	F.evfd = eventfd(0, EFD_CLOEXEC);
	F.nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	/* A number far above any fd in use, so that no fd opened meanwhile takes it. */
	for (fd = 900; fcntl(fd, F_GETFD) != -1; fd++)
		;
	F.closedfd = fd;
	F.rawfd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	ck_assert_int_ge(F.evfd, 0);
	ck_assert_int_ge(F.nullfd, 0);
	ck_assert_int_ge(F.rawfd, 0);
	F.out_u = SENTINEL;
	F.out_m = SENTINEL;
	ck_assert_int_eq(uffd_source_memory(&F.source, F.src, sizeof(F.src)), 0);
	ck_assert_int_eq(uffd_order_new(&F.order), 0);
	F.outfd = -1;
	memset(F.msg, 0, sizeof(F.msg));
	F.msg[0] = UFFD_EVENT_UNMAP;
}

/* ---- state: everything a bad call must leave as it was ---- */

struct piece {
	void *start, *end, *data;
	size_t offset;
};

struct state {
	struct piece map_u[8], map_u2[8];
	long n_u, n_u2;
	struct uffd_stats st_u, st_u2;
	uint64_t feat_u;
	int fd_u;
	struct uffd_callbacks cb_u;
	unsigned modes[NP];
	unsigned char resident[NP];
	int monitor_count, fds, hole_mapped;
	int fl_pipe, fl_raw, fdfl_raw;
	char rawinfo[256];
	struct uffd *out_u;
	struct uffd_monitor *out_m;
};

static long snap_map(struct uffd *u, struct piece *p, int max)
{
	struct uffd_range r;
	const void *at = NULL;
	long n = 0;

	while (uffd_range_next(u, at, &r) == 0 && n < max) {
		p[n++] = (struct piece){ r.start, r.end, r.data, r.offset };
		at = r.end;
	}
	return n;
}

/* The UFFDIO_REGISTER_MODE_* bits of every fixture page, from /proc/self/smaps. */
static void snap_modes(unsigned *modes)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long s = 0, e = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		unsigned m = 0;
		int i;

		if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
			s = a;
			e = b;
			continue;
		}
		if (strncmp(line, "VmFlags:", 8) != 0)
			continue;
		m |= strstr(line, " um") ? UFFDIO_REGISTER_MODE_MISSING : 0;
		m |= strstr(line, " uw") ? UFFDIO_REGISTER_MODE_WP : 0;
		m |= strstr(line, " ui") ? UFFDIO_REGISTER_MODE_MINOR : 0;
		for (i = 0; i < NP; i++) {
			uintptr_t pg = (uintptr_t)F.mem + (uintptr_t)i * PS;

			if (pg >= s && pg < e)
				modes[i] = m;
		}
	}
	fclose(f);
}

static void snap_fdinfo(int fd, char *out, size_t size)
{
	char path[64], buf[1024];
	FILE *f;
	size_t n;
	char *api;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	api = strstr(buf, "API:");
	snprintf(out, size, "%s", api ? api : "");
}

static void snap(struct state *s)
{
	unsigned char hole_vec;

	memset(s, 0, sizeof(*s));
	s->n_u = snap_map(F.u, s->map_u, 8);
	s->n_u2 = snap_map(F.u2, s->map_u2, 8);
	ck_assert_int_eq(uffd_range_count(F.u), s->n_u);
	uffd_get_stats(F.u, &s->st_u);
	uffd_get_stats(F.u2, &s->st_u2);
	s->feat_u = uffd_features(F.u);
	s->fd_u = uffd_fd(F.u);
	s->cb_u = F.u->cb;
	snap_modes(s->modes);
	ck_assert_int_eq(mincore(F.mem, NP * PS, s->resident), 0);
	s->hole_mapped = mincore(F.hole, PS, &hole_vec) == 0;
	s->monitor_count = uffd_monitor_count(F.m);
	s->fds = tu_count_fds();
	s->fl_pipe = fcntl(F.pipefd, F_GETFL);
	s->fl_raw = fcntl(F.rawfd, F_GETFL);
	s->fdfl_raw = fcntl(F.rawfd, F_GETFD);
	snap_fdinfo(F.rawfd, s->rawinfo, sizeof(s->rawinfo));
	s->out_u = F.out_u;
	s->out_m = F.out_m;
}

static void same(const struct state *a, const struct state *b, const char *name)
{
	int i;

	ck_assert_msg(a->n_u == b->n_u && !memcmp(a->map_u, b->map_u, sizeof(a->map_u)),
		      "%s: the range map changed", name);
	ck_assert_msg(a->n_u2 == b->n_u2 && !memcmp(a->map_u2, b->map_u2, sizeof(a->map_u2)),
		      "%s: another context's range map changed", name);
	ck_assert_msg(!memcmp(&a->st_u, &b->st_u, sizeof(a->st_u)) &&
			      !memcmp(&a->st_u2, &b->st_u2, sizeof(a->st_u2)),
		      "%s: the counters changed", name);
	ck_assert_msg(a->feat_u == b->feat_u && a->fd_u == b->fd_u, "%s: the context changed",
		      name);
	ck_assert_msg(!memcmp(&a->cb_u, &b->cb_u, sizeof(a->cb_u)), "%s: a callback changed", name);
	for (i = 0; i < NP; i++) {
		ck_assert_msg(a->modes[i] == b->modes[i],
			      "%s: the kernel's registration of page %d changed (%u -> %u)", name,
			      i, a->modes[i], b->modes[i]);
		ck_assert_msg((a->resident[i] & 1) == (b->resident[i] & 1),
			      "%s: page %d was filled or dropped", name, i);
	}
	ck_assert_msg(a->hole_mapped == b->hole_mapped, "%s: the hole was mapped", name);
	ck_assert_msg(a->monitor_count == b->monitor_count, "%s: the monitor changed", name);
	ck_assert_msg(a->fds == b->fds, "%s: fds %d -> %d", name, a->fds, b->fds);
	ck_assert_msg(a->fl_pipe == b->fl_pipe, "%s: the foreign fd's flags changed", name);
	ck_assert_msg(a->fl_raw == b->fl_raw && a->fdfl_raw == b->fdfl_raw &&
			      !strcmp(a->rawinfo, b->rawinfo),
		      "%s: the unadopted userfaultfd changed", name);
	ck_assert_msg(a->out_u == b->out_u && a->out_m == b->out_m,
		      "%s: an out parameter was written on failure", name);
}

/* ---- the table ---- */

/*
 * X(name, expected, call): `call` is evaluated with stdout and stderr captured; `expected` is
 * the negative errno uffd.h documents for it (or, for functions that return no errno, the
 * value the call is compared with, as noted).
 */
#define U F.u
#define NOMAP F.hole
#define MISS UFFDIO_REGISTER_MODE_MISSING
#define BAD_CASES(X)                                                                               \
	/* contexts */                                                                             \
	X(open_null_out, -EINVAL, uffd_open(NULL, NULL))                                           \
	X(open_null_out_cfg, -EINVAL,                                                              \
	  uffd_open(NULL, &(struct uffd_config){ .optional = EVENTS }))                            \
	X(open_unknown_flag, -EINVAL, uffd_open(&F.out_u, &(struct uffd_config){ .flags = 0x80 })) \
	X(open_both_doors, -EINVAL,                                                                \
	  uffd_open(&F.out_u, &(struct uffd_config){ .flags = UFFD_OPEN_SYSCALL_ONLY |             \
							      UFFD_OPEN_DEVICE_ONLY }))            \
	X(open_unknown_required, -EOPNOTSUPP,                                                      \
	  uffd_open(&F.out_u, &(struct uffd_config){ .required = 1ull << 40 }))                    \
	X(open_batch_too_big, -EINVAL,                                                             \
	  uffd_open(&F.out_u, &(struct uffd_config){ .batch = 4097 }))                             \
	X(open_spin_too_long, -EINVAL,                                                             \
	  uffd_open(&F.out_u, &(struct uffd_config){ .spin_us = 1000001 }))                        \
	X(open_reserved_set, -EINVAL,                                                              \
	  uffd_open(&F.out_u, &(struct uffd_config){ .reserved[8] = 1 }))                          \
	X(adopt_null_out, -EINVAL, uffd_adopt(NULL, F.rawfd, NULL))                                \
	X(adopt_negative_fd, -EINVAL, uffd_adopt(&F.out_u, -1, NULL))                              \
	X(adopt_closed_fd, -EBADF, uffd_adopt(&F.out_u, F.closedfd, NULL))                         \
	X(adopt_pipe, -EINVAL, uffd_adopt(&F.out_u, F.pipefd, NULL))                               \
	X(adopt_eventfd, -EINVAL, uffd_adopt(&F.out_u, F.evfd, NULL))                              \
	X(adopt_dev_null, -EINVAL, uffd_adopt(&F.out_u, F.nullfd, NULL))                           \
	X(adopt_unknown_flag, -EINVAL,                                                             \
	  uffd_adopt(&F.out_u, F.rawfd, &(struct uffd_config){ .flags = 0x80 }))                   \
	X(adopt_reserved_set, -EINVAL,                                                             \
	  uffd_adopt(&F.out_u, F.rawfd, &(struct uffd_config){ .reserved[0] = 1 }))                \
	X(adopt_unknown_required, -EOPNOTSUPP,                                                     \
	  uffd_adopt(&F.out_u, F.rawfd, &(struct uffd_config){ .required = 1ull << 40 }))          \
	X(fd_null, -EINVAL, uffd_fd(NULL))                                                         \
	X(features_null /* 0 */, 0, (long)uffd_features(NULL))                                     \
	X(feature_name_zero /* NULL */, 0, uffd_feature_name(0) != NULL)                           \
	X(feature_name_two_bits /* NULL */, 0, uffd_feature_name(3) != NULL)                       \
	X(feature_name_unknown /* NULL */, 0, uffd_feature_name(1ull << 40) != NULL)               \
	X(feature_since_unknown /* NULL */, 0, uffd_feature_since(1ull << 17) != NULL)             \
	X(ioctl_name_unknown /* NULL */, 0,                                                        \
	  uffd_ioctl_name(0x09) != NULL || uffd_ioctl_name(UINT_MAX) != NULL)                      \
	X(strerror_int_min /* a sentence */, 1, uffd_strerror(INT_MIN)[0] != '\0')                 \
	X(strerror_unknown /* a sentence */, 1, uffd_strerror(-99999)[0] != '\0')                  \
	X(close_null /* no-op */, 0, (uffd_close(NULL), 0))                                        \
	X(probe_null_outputs /* 0: both may be NULL */, 0, uffd_probe(NULL, NULL))                 \
	X(version_never_null /* a version */, 1, uffd_version() != NULL && uffd_version()[0] != 0) \
	/* ranges */                                                                               \
	X(register_null, -EINVAL, uffd_register(NULL, F.Q, PS, MISS, NULL))                        \
	X(register_unaligned, -EINVAL, uffd_register(U, F.Q + 1, PS, MISS, NULL))                  \
	X(register_len_zero, -EINVAL, uffd_register(U, F.Q, 0, MISS, NULL))                        \
	X(register_len_unaligned, -EINVAL, uffd_register(U, F.Q, PS + 1, MISS, NULL))              \
	X(register_len_overflow, -EINVAL, uffd_register(U, F.Q, HUGE_LEN, MISS, NULL))             \
	X(register_no_mode, -EINVAL, uffd_register(U, F.Q, PS, 0, NULL))                           \
	X(register_unknown_mode, -EINVAL, uffd_register(U, F.Q, PS, 8, NULL))                      \
	X(register_high_mode, -EINVAL, uffd_register(U, F.Q, PS, MISS | 1ull << 40, NULL))         \
	X(register_no_mapping, -EINVAL, uffd_register(U, NOMAP, PS, MISS, NULL))                   \
	X(register_minor_on_anon, -EINVAL,                                                         \
	  uffd_register(U, F.Q, PS, UFFDIO_REGISTER_MODE_MINOR, NULL))                             \
	X(register_foreign_range, -EBUSY, uffd_register(U, F.R, PS, MISS, NULL))                   \
	X(unregister_null, -EINVAL, uffd_unregister(NULL, F.P, PS))                                \
	X(unregister_unaligned, -EINVAL, uffd_unregister(U, F.P + 1, PS))                          \
	X(unregister_len_zero, -EINVAL, uffd_unregister(U, F.P, 0))                                \
	X(unregister_len_unaligned, -EINVAL, uffd_unregister(U, F.P, PS - 1))                      \
	X(unregister_len_overflow, -EINVAL, uffd_unregister(U, F.P, HUGE_LEN))                     \
	X(unregister_no_mapping, -EINVAL, uffd_unregister(U, NOMAP, PS))                           \
	X(range_find_null, -EINVAL, uffd_range_find(NULL, F.P, &F.range))                          \
	X(range_find_null_out, -EINVAL, uffd_range_find(U, F.P, NULL))                             \
	X(range_find_unregistered, -ENOENT, uffd_range_find(U, F.Q, &F.range))                     \
	X(range_next_null, -EINVAL, uffd_range_next(NULL, NULL, &F.range))                         \
	X(range_next_null_out, -EINVAL, uffd_range_next(U, NULL, NULL))                            \
	X(range_next_past_end, -ENOENT, uffd_range_next(U, F.Q, &F.range))                         \
	X(range_count_null, -EINVAL, uffd_range_count(NULL))                                       \
	X(range_add_null, -EINVAL, uffd_range_add(NULL, F.Q, PS, MISS, NULL))                      \
	X(range_add_unaligned, -EINVAL, uffd_range_add(U, F.Q + 1, PS, MISS, NULL))                \
	X(range_add_len_zero, -EINVAL, uffd_range_add(U, F.Q, 0, MISS, NULL))                      \
	X(range_add_len_overflow, -EINVAL, uffd_range_add(U, F.Q, HUGE_LEN, MISS, NULL))           \
	X(range_add_no_mode, -EINVAL, uffd_range_add(U, F.Q, PS, 0, NULL))                         \
	X(range_add_unknown_mode, -EINVAL, uffd_range_add(U, F.Q, PS, 8, NULL))                    \
	/* resolving */                                                                            \
	X(copy_null, -EINVAL, uffd_copy(NULL, F.P, F.src, PS, 0))                                  \
	X(copy_unaligned, -EINVAL, uffd_copy(U, F.P + 8, F.src, PS, 0))                            \
	X(copy_len_zero, -EINVAL, uffd_copy(U, F.P, F.src, 0, 0))                                  \
	X(copy_len_unaligned, -EINVAL, uffd_copy(U, F.P, F.src, 100, 0))                           \
	X(copy_len_overflow, -EINVAL, uffd_copy(U, F.P, F.src, HUGE_LEN, 0))                       \
	X(copy_src_wraps, -EINVAL, uffd_copy(U, F.P, (void *)(UINTPTR_MAX - 100), PS, 0))          \
	X(copy_unknown_mode, -EINVAL, uffd_copy(U, F.P, F.src, PS, 4))                             \
	X(copy_no_mapping, -ENOENT, uffd_copy(U, NOMAP, F.src, PS, 0))                             \
	X(copy_unregistered, -ENOENT, uffd_copy(U, F.Q, F.src, PS, 0))                             \
	X(copy_wp_mode_on_missing_range, -EINVAL,                                                  \
	  uffd_copy(U, F.P, F.src, PS, UFFDIO_COPY_MODE_WP))                                       \
	X(copy_unreadable_src, -EFAULT, uffd_copy(U, F.P, NOMAP, PS, 0))                           \
	X(zeropage_null, -EINVAL, uffd_zeropage(NULL, F.P, PS, 0))                                 \
	X(zeropage_unaligned, -EINVAL, uffd_zeropage(U, F.P + 1, PS, 0))                           \
	X(zeropage_len_zero, -EINVAL, uffd_zeropage(U, F.P, 0, 0))                                 \
	X(zeropage_len_overflow, -EINVAL, uffd_zeropage(U, F.P, HUGE_LEN, 0))                      \
	X(zeropage_unknown_mode, -EINVAL, uffd_zeropage(U, F.P, PS, 2))                            \
	X(zeropage_no_mapping, -ENOENT, uffd_zeropage(U, NOMAP, PS, 0))                            \
	X(zeropage_unregistered, -ENOENT, uffd_zeropage(U, F.Q, PS, 0))                            \
	X(continue_null, -EINVAL, uffd_continue(NULL, F.P, PS, 0))                                 \
	X(continue_unaligned, -EINVAL, uffd_continue(U, F.P + 1, PS, 0))                           \
	X(continue_len_zero, -EINVAL, uffd_continue(U, F.P, 0, 0))                                 \
	X(continue_len_overflow, -EINVAL, uffd_continue(U, F.P, HUGE_LEN, 0))                      \
	X(continue_unknown_mode, -EINVAL, uffd_continue(U, F.P, PS, 4))                            \
	X(continue_on_anon, -EINVAL, uffd_continue(U, F.P, PS, 0))                                 \
	X(continue_no_mapping, -ENOENT, uffd_continue(U, NOMAP, PS, 0))                            \
	X(poison_null, -EINVAL, uffd_poison(NULL, F.P, PS, 0))                                     \
	X(poison_unaligned, -EINVAL, uffd_poison(U, F.P + 1, PS, 0))                               \
	X(poison_len_zero, -EINVAL, uffd_poison(U, F.P, 0, 0))                                     \
	X(poison_unknown_mode, -EINVAL, uffd_poison(U, F.P, PS, 2))                                \
	X(poison_not_granted, -EOPNOTSUPP, uffd_poison(U, F.P, PS, 0))                             \
	X(move_null, -EINVAL, uffd_move(NULL, F.P, F.Q, PS, 0))                                    \
	X(move_unaligned_dst, -EINVAL, uffd_move(U, F.P + 1, F.Q, PS, 0))                          \
	X(move_unaligned_src, -EINVAL, uffd_move(U, F.P, F.Q + 1, PS, 0))                          \
	X(move_len_zero, -EINVAL, uffd_move(U, F.P, F.Q, 0, 0))                                    \
	X(move_len_overflow, -EINVAL, uffd_move(U, F.P, F.Q, HUGE_LEN, 0))                         \
	X(move_unknown_mode, -EINVAL, uffd_move(U, F.P, F.Q, PS, 4))                               \
	X(move_not_granted, -EOPNOTSUPP, uffd_move(U, F.P, F.Q, PS, 0))                            \
	X(writeprotect_null, -EINVAL, uffd_writeprotect(NULL, F.WP, PS, true, 0))                  \
	X(writeprotect_unaligned, -EINVAL, uffd_writeprotect(U, F.WP + 1, PS, true, 0))            \
	X(writeprotect_len_zero, -EINVAL, uffd_writeprotect(U, F.WP, 0, true, 0))                  \
	X(writeprotect_len_overflow, -EINVAL, uffd_writeprotect(U, F.WP, HUGE_LEN, true, 0))       \
	X(writeprotect_unknown_mode, -EINVAL, uffd_writeprotect(U, F.WP, PS, true, 4))             \
	X(writeprotect_wp_mode_contradicts, -EINVAL,                                               \
	  uffd_writeprotect(U, F.WP, PS, false, UFFDIO_WRITEPROTECT_MODE_WP))                      \
	X(writeprotect_protect_dontwake, -EINVAL,                                                  \
	  uffd_writeprotect(U, F.WP, PS, true, UFFDIO_WRITEPROTECT_MODE_DONTWAKE))                 \
	X(writeprotect_not_wp_range, -ENOENT, uffd_writeprotect(U, F.P, PS, true, 0))              \
	X(writeprotect_no_mapping, -ENOENT, uffd_writeprotect(U, NOMAP, PS, true, 0))              \
	X(wake_null, -EINVAL, uffd_wake(NULL, F.P, PS))                                            \
	X(wake_unaligned, -EINVAL, uffd_wake(U, F.P + 1, PS))                                      \
	X(wake_len_zero, -EINVAL, uffd_wake(U, F.P, 0))                                            \
	X(wake_len_overflow, -EINVAL, uffd_wake(U, F.P, HUGE_LEN))                                 \
	X(last_done_after_bad_call /* 0 */, 0,                                                     \
	  (uffd_copy(U, F.P, F.src, 0, 0), (long)uffd_last_done()))                                \
	/* events and dispatch */                                                                  \
	X(decode_null_msg, -EINVAL, uffd_event_decode(NULL, 32, &F.evs[0]))                        \
	X(decode_null_ev, -EINVAL, uffd_event_decode(F.msg, 32, NULL))                             \
	X(decode_short, -EINVAL, uffd_event_decode(F.msg, 31, &F.evs[0]))                          \
	X(decode_empty_span, -EPROTO, uffd_event_decode(F.msg, 32, &F.evs[0]))                     \
	X(event_name_unknown /* "unknown" */, 0, strcmp(uffd_event_name(0x42), "unknown"))         \
	X(read_events_null, -EINVAL, uffd_read_events(NULL, F.evs, 4, 0))                          \
	X(read_events_null_evs, -EINVAL, uffd_read_events(U, NULL, 4, 0))                          \
	X(read_events_max_zero, -EINVAL, uffd_read_events(U, F.evs, 0, 0))                         \
	X(read_events_bad_timeout, -EINVAL, uffd_read_events(U, F.evs, 4, -2))                     \
	X(on_pagefault_null, -EINVAL, uffd_on_pagefault(NULL, noop_fault, NULL))                   \
	X(on_unmap_null, -EINVAL, uffd_on_unmap(NULL, NULL, NULL))                                 \
	X(on_remove_null, -EINVAL, uffd_on_remove(NULL, NULL, NULL))                               \
	X(on_remap_null, -EINVAL, uffd_on_remap(NULL, NULL, NULL))                                 \
	X(on_fork_null, -EINVAL, uffd_on_fork(NULL, NULL, NULL))                                   \
	X(on_exit_null, -EINVAL, uffd_on_exit(NULL, NULL, NULL))                                   \
	X(dispatch_null, -EINVAL, uffd_dispatch(NULL, 0))                                          \
	X(dispatch_bad_timeout, -EINVAL, uffd_dispatch(U, -2))                                     \
	/* monitor */                                                                              \
	X(monitor_new_null, -EINVAL, uffd_monitor_new(NULL))                                       \
	X(monitor_free_null /* no-op */, 0, (uffd_monitor_free(NULL), 0))                          \
	X(monitor_add_null_monitor, -EINVAL, uffd_monitor_add(NULL, U))                            \
	X(monitor_add_null_ctx, -EINVAL, uffd_monitor_add(F.m, NULL))                              \
	X(monitor_add_twice, -EBUSY, uffd_monitor_add(F.m, F.u2))                                  \
	X(watch_pid_null_monitor, -EINVAL, uffd_monitor_watch_pid(NULL, F.u2, getpid()))           \
	X(watch_pid_null_ctx, -EINVAL, uffd_monitor_watch_pid(F.m, NULL, getpid()))                \
	X(watch_pid_zero, -EINVAL, uffd_monitor_watch_pid(F.m, F.u2, 0))                           \
	X(watch_pid_negative, -EINVAL, uffd_monitor_watch_pid(F.m, F.u2, -1))                      \
	X(watch_pid_not_member, -EINVAL, uffd_monitor_watch_pid(F.m, U, getpid()))                 \
	X(watch_pid_no_process, -ESRCH, uffd_monitor_watch_pid(F.m, F.u2, 0x3ffffff0))             \
	X(monitor_run_null, -EINVAL, uffd_monitor_run(NULL, 0))                                    \
	X(monitor_run_bad_timeout, -EINVAL, uffd_monitor_run(F.m, -2))                             \
	X(monitor_stop_null, -EINVAL, uffd_monitor_stop(NULL))                                     \
	X(monitor_remove_null, -EINVAL, uffd_monitor_remove(NULL, F.u2))                           \
	X(monitor_remove_null_ctx, -EINVAL, uffd_monitor_remove(F.m, NULL))                        \
	X(monitor_remove_not_member, -ENOENT, uffd_monitor_remove(F.m, U))                         \
	X(monitor_start_null, -EINVAL, uffd_monitor_start(NULL, 1))                                \
	X(monitor_start_no_threads, -EINVAL, uffd_monitor_start(F.m, 0))                           \
	X(monitor_start_too_many, -EINVAL, uffd_monitor_start(F.m, 1025))                          \
	X(monitor_join_null, -EINVAL, uffd_monitor_join(NULL))                                     \
	X(monitor_join_no_pool, -EINVAL, uffd_monitor_join(F.m))                                   \
	X(default_pagefault_null, -EINVAL, uffd_default_pagefault(NULL, &F.pf, NULL))              \
	X(default_pagefault_null_pf, -EINVAL, uffd_default_pagefault(U, NULL, NULL))               \
	X(fault_finish_null, -EINVAL, uffd_fault_finish(NULL, &F.pf, 0))                           \
	X(fault_finish_null_pf, -EINVAL, uffd_fault_finish(U, NULL, 0))                            \
	X(fault_finish_positive, -EINVAL, uffd_fault_finish(U, &F.pf, 1))                          \
	X(fault_finish_none_deferred, -EINVAL, uffd_fault_finish(U, &F.pf, 0))                     \
	X(monitor_probe_null, -EINVAL, uffd_monitor_probe(NULL))                                   \
	X(monitor_fd_null, -EINVAL, uffd_monitor_fd(NULL))                                         \
	X(monitor_count_null, -EINVAL, uffd_monitor_count(NULL))                                   \
	X(get_stats_null, -EINVAL, uffd_get_stats(NULL, &F.stats))                                 \
	X(get_stats_null_out, -EINVAL, uffd_get_stats(U, NULL))                                    \
	/* page sources and serving (0.2) */                                                       \
	X(fault_offset_null, -EINVAL, uffd_fault_offset(NULL, &F.u64))                             \
	X(fault_offset_null_out, -EINVAL, uffd_fault_offset(&F.pf, NULL))                          \
	X(fault_offset_no_range, -ENOENT, uffd_fault_offset(&F.pf, &F.u64))                        \
	X(fd_send_negative_sock, -EINVAL, uffd_fd_send(-1, F.nullfd, "x", 1))                      \
	X(fd_send_negative_fd, -EINVAL, uffd_fd_send(F.nullfd, -1, "x", 1))                        \
	X(fd_send_empty, -EINVAL, uffd_fd_send(F.nullfd, F.nullfd, "x", 0))                        \
	X(fd_send_not_socket, -ENOTSOCK, uffd_fd_send(F.nullfd, F.nullfd, "x", 1))                 \
	X(fd_send_closed, -EBADF, uffd_fd_send(F.closedfd, F.nullfd, "x", 1))                      \
	X(fd_recv_null_fd, -EINVAL, uffd_fd_recv(F.nullfd, NULL, F.msg, 1, NULL))                  \
	X(fd_recv_null_buf, -EINVAL, uffd_fd_recv(F.nullfd, &F.outfd, NULL, 1, NULL))              \
	X(fd_recv_not_socket, -ENOTSOCK, uffd_fd_recv(F.nullfd, &F.outfd, F.msg, 1, NULL))         \
	X(source_new_null, -EINVAL,                                                                \
	  uffd_source_new(NULL, &(struct uffd_source_ops){ .size = 64 }, NULL))                    \
	X(source_new_no_read, -EINVAL,                                                             \
	  uffd_source_new(&F.out_src, &(struct uffd_source_ops){ .size = 64 }, NULL))              \
	X(source_file_null, -EINVAL, uffd_source_file(&F.out_src, NULL, 0))                        \
	X(source_file_flag, -EINVAL, uffd_source_file(&F.out_src, "/dev/null", 0x80))              \
	X(source_file_missing, -ENOENT, uffd_source_file(&F.out_src, "/nonexistent/x", 0))         \
	X(source_fd_negative, -EINVAL, uffd_source_fd(&F.out_src, -1, 0))                          \
	X(source_fd_closed, -EBADF, uffd_source_fd(&F.out_src, F.closedfd, 0))                     \
	X(source_memory_null, -EINVAL, uffd_source_memory(&F.out_src, NULL, 1))                    \
	X(source_read_null, -EINVAL, uffd_source_read(NULL, F.msg, 1, 0))                          \
	X(source_read_zero, -EINVAL, uffd_source_read(F.source, F.msg, 0, 0))                      \
	X(source_read_past_end, -ENXIO, uffd_source_read(F.source, F.msg, 2, sizeof(F.src) - 1))   \
	X(source_length_null, -EINVAL, (long)uffd_source_length(NULL))                             \
	X(source_close_null /* no-op */, 0, (uffd_source_close(NULL), 0))                          \
	X(order_new_null, -EINVAL, uffd_order_new(NULL))                                           \
	X(order_add_null, -EINVAL, uffd_order_add(NULL, 0, PS, NULL))                              \
	X(order_add_zero, -EINVAL, uffd_order_add(F.order, 0, 0, NULL))                            \
	X(order_add_region_space, -EINVAL, uffd_order_add(F.order, 0, PS, "a b"))                  \
	X(order_save_null, -EINVAL, uffd_order_save(NULL, F.nullfd))                               \
	X(order_save_closed, -EBADF, uffd_order_save(F.order, F.closedfd))                         \
	X(order_load_null, -EINVAL, uffd_order_load(NULL, F.nullfd))                               \
	X(order_load_empty, -EBADMSG, uffd_order_load(&F.out_order, F.nullfd))                     \
	X(order_count_null, -EINVAL, uffd_order_count(NULL))                                       \
	X(order_get_null, -EINVAL, uffd_order_get(NULL, 0, &F.u64, &F.u64, NULL))                  \
	X(order_get_out_of_range, -ENOENT, uffd_order_get(F.order, 0, &F.u64, &F.u64, NULL))       \
	X(order_save_pages_null, -EINVAL, uffd_order_save_pages(F.order, NULL, F.nullfd))          \
	X(order_free_null /* no-op */, 0, (uffd_order_free(NULL), 0))                              \
	X(serve_null, -EINVAL, uffd_serve(NULL, F.Q, PS, &(struct uffd_serve_config){ 0 }))        \
	X(serve_no_source, -EINVAL, uffd_serve(U, F.Q, PS, &(struct uffd_serve_config){ 0 }))      \
	X(serve_unaligned, -EINVAL,                                                                \
	  uffd_serve(U, F.Q + 1, PS, &(struct uffd_serve_config){ .source = F.source }))           \
	X(serve_len_zero, -EINVAL,                                                                 \
	  uffd_serve(U, F.Q, 0, &(struct uffd_serve_config){ .source = F.source }))                \
	X(serve_bad_chunk, -EINVAL,                                                                \
	  uffd_serve(U, F.Q, PS, &(struct uffd_serve_config){ .source = F.source, .chunk = 3 }))   \
	X(serve_reserved, -EINVAL,                                                                 \
	  uffd_serve(U, F.Q, PS,                                                                   \
		     &(struct uffd_serve_config){ .source = F.source, .reserved[5] = 1 }))         \
	X(serve_past_source, -ENXIO,                                                               \
	  uffd_serve(U, F.Q, PS,                                                                   \
		     &(struct uffd_serve_config){ .source = F.source, .offset = sizeof(F.src) }))  \
	X(serve_pagefault_null, -EINVAL, uffd_serve_pagefault(NULL, &F.pf, NULL))                  \
	X(serve_pagefault_unserved, -ENOENT, uffd_serve_pagefault(U, &F.pf, NULL))                 \
	X(serve_remove_null, -EINVAL, uffd_serve_remove(U, NULL, NULL))                            \
	X(serve_get_stats_null, -EINVAL, uffd_serve_get_stats(NULL, &F.sstats))                    \
	X(prefetch_null, -EINVAL, uffd_prefetch(NULL, F.P, F.order, NULL))                         \
	X(prefetch_unserved, -EINVAL, uffd_prefetch(U, F.P, F.order, NULL))

#define CASE_FN(name, expected, call) \
	static long case_##name(void) \
	{                             \
		return (long)(call);  \
	}
BAD_CASES(CASE_FN)

struct bad_case {
	const char *name;
	long (*fn)(void);
	long expected; /* a negative errno, or (>= 0) a documented answer that is no errno */
	const char *call;
};

#define CASE_ROW(name, expected, call) { #name, case_##name, (expected), #call },
static const struct bad_case cases[] = { BAD_CASES(CASE_ROW) };
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

/* Run @c with stdout and stderr sent to a file; returns its value, *printed the bytes written. */
static long call_captured(const struct bad_case *c, long *printed)
{
	char path[] = "/tmp/libuffd-badinput-XXXXXX";
	int cap = mkstemp(path), o1, o2;
	long ret;

	ck_assert_int_ge(cap, 0);
	unlink(path);
	fflush(stdout);
	fflush(stderr);
	o1 = dup(1);
	o2 = dup(2);
	dup2(cap, 1);
	dup2(cap, 2);
	ret = c->fn();
	fflush(stdout);
	fflush(stderr);
	dup2(o1, 1);
	dup2(o2, 2);
	close(o1);
	close(o2);
	*printed = (long)lseek(cap, 0, SEEK_END);
	close(cap);
	return ret;
}

START_TEST(bad_input)
{
	const struct bad_case *c = &cases[_i];
	struct state before, after;
	long ret, printed;

	fx_setup();
	/* The snapshot opens fds of its own; take it with the capture file's fd slot free. */
	snap(&before);
	ret = call_captured(c, &printed);
	snap(&after);
	ck_assert_msg(ret == c->expected, "%s: returned %ld, documented %ld", c->name, ret,
		      c->expected);
	ck_assert_msg(printed == 0, "%s: printed %ld bytes", c->name, printed);
	same(&before, &after, c->name);
	/* A failed resolving call reports nothing done. */
	ck_assert_uint_eq(uffd_last_done(), 0);
	/* Still usable after the bad call. */
	ck_assert_int_eq(uffd_dispatch(F.u, 0), 0);
	ck_assert_int_eq(uffd_range_count(F.u), 2);
	ck_assert_ptr_null(F.out_src);
	ck_assert_ptr_null(F.out_order);
	ck_assert_int_eq(F.outfd, -1);
	uffd_close(F.u);
	uffd_monitor_free(F.m);
	uffd_source_close(F.source);
	uffd_order_free(F.order);
}
END_TEST

/* Every function uffd.h declares is called by at least one row of the table. */
START_TEST(every_function_has_a_row)
{
	FILE *f = fopen(UFFD_PUBLIC_HEADER, "r");
	char line[512], want[80];
	int nfn = 0, i;

	ck_assert_msg(f != NULL, "cannot open %s", UFFD_PUBLIC_HEADER);
	while (fgets(line, sizeof(line), f)) {
		char *paren = strchr(line, '('), *name;

		if (strncmp(line, "UFFD_API_EXPORT ", 16) != 0 || !paren)
			continue;
		for (name = paren;
		     name > line && (name[-1] == '_' || isalnum((unsigned char)name[-1])); name--)
			;
		snprintf(want, sizeof(want), "%.*s(", (int)(paren - name), name);
		for (i = 0; i < NCASES && !strstr(cases[i].call, want); i++)
			;
		ck_assert_msg(i < NCASES, "uffd.h declares %.*s, which no row of the table calls",
			      (int)(paren - name), name);
		nfn++;
	}
	fclose(f);
	ck_assert_int_ge(nfn, 40);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("badinput");
	TCase *tc = tu_tcase("table", 20, NULL, NULL);
	struct uffd_config cfg = { .required = EVENTS | UFFD_FEATURE_PAGEFAULT_FLAG_WP };
	int i, nerr = 0;

	tu_require_uffd(&cfg, "events and write-protection");
	for (i = 0; i < NCASES; i++)
		nerr += cases[i].expected < 0;
	printf("badinput: %d cases (public functions x kinds of bad argument): %d return the "
	       "documented errno, %d the documented answer of a function that returns none (a "
	       "no-op, NULL, 0, a sentence)\n",
	       NCASES, nerr, NCASES - nerr);
	tcase_add_test(tc, every_function_has_a_row);
	tcase_add_loop_test(tc, bad_input, 0, NCASES);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
