/* SPDX-License-Identifier: MIT */
/* Resolving faults: copy, zeropage, continue, poison, move, writeprotect, wake; partial progress. */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Bytes done by this thread's last resolving call: exact however many threads resolve.
 * initial-exec: set on every resolving call, it must not cost a __tls_get_addr() call each time
 * in the shared library. */
static _Thread_local size_t last_done __attribute__((tls_model("initial-exec")));

size_t uffd_last_done(void)
{
	return last_done;
}

/* The filling ioctls share one shape: a range (and for COPY/MOVE a source), a mode, and a
 * signed result field that the kernel sets to the bytes done or to -errno. */
enum fill_op { OP_COPY, OP_ZEROPAGE, OP_CONTINUE, OP_POISON, OP_MOVE };

/*
 * One ioctl over [dst, dst + len). Returns the ioctl's answer and sets *res to the result field,
 * which is 0 when the kernel failed before writing it (early EINVAL/EFAULT/ESRCH checks): the field
 * is cleared before every call so that a stale value is never taken for progress.
 */
static int fill_once(struct uffd *u, enum fill_op op, uintptr_t dst, uintptr_t src, size_t len,
		     uint64_t mode, int64_t *res)
{
	int ret;

	switch (op) {
	case OP_COPY: {
		struct uffdio_copy a = {
			.dst = dst, .src = src, .len = len, .mode = mode, .copy = 0
		};

		ret = uffd_sys_ioctl(u->fd, UFFDIO_COPY, &a);
		*res = a.copy;
		break;
	}
	case OP_ZEROPAGE: {
		struct uffdio_zeropage a = { .range = { .start = dst, .len = len },
					     .mode = mode,
					     .zeropage = 0 };

		ret = uffd_sys_ioctl(u->fd, UFFDIO_ZEROPAGE, &a);
		*res = a.zeropage;
		break;
	}
	case OP_CONTINUE: {
		struct uffdio_continue a = { .range = { .start = dst, .len = len },
					     .mode = mode,
					     .mapped = 0 };

		ret = uffd_sys_ioctl(u->fd, UFFDIO_CONTINUE, &a);
		*res = a.mapped;
		break;
	}
	case OP_POISON: {
		struct uffdio_poison a = { .range = { .start = dst, .len = len },
					   .mode = mode,
					   .updated = 0 };

		ret = uffd_sys_ioctl(u->fd, UFFDIO_POISON, &a);
		*res = a.updated;
		break;
	}
	case OP_MOVE:
	default: {
		struct uffdio_move a = {
			.dst = dst, .src = src, .len = len, .mode = mode, .move = 0
		};

		ret = uffd_sys_ioctl(u->fd, UFFDIO_MOVE, &a);
		*res = a.move;
		break;
	}
	}
	return ret;
}

/*
 * Partial progress: the kernel answers -1/EAGAIN with the result field set to the bytes it did
 * (> 0). The rest is tried from where it stopped, which either finishes or yields the real error
 * (EEXIST, ENOENT, ...). An EAGAIN with nothing done is a pending layout change (mmap_changing):
 * it is returned as is, because only reading the events can clear it and that is the caller's
 * (or dispatch's) job; spinning here would never end. @ret and @res are the first attempt's.
 * Kept out of line: the fast path (everything done at once) is a dispatcher's every fault.
 */
__attribute__((noinline)) static int fill_more(struct uffd *u, enum fill_op op, uintptr_t dst,
					       uintptr_t src, size_t len, uint64_t mode, int ret,
					       int64_t res)
{
	size_t done = 0;

	for (;;) {
		if (ret == 0) {
			done = len;
			break;
		}
		if (res > 0 && (uint64_t)res <= len - done) {
			done += (size_t)res;
			if (ret != -EAGAIN || done == len)
				break;
		} else {
			if (res < 0 && res >= -4095)
				ret = (int)res; /* the field carries the kernel's own error */
			break;
		}
		res = 0;
		ret = fill_once(u, op, dst + done, src ? src + done : 0, len - done, mode, &res);
	}
	last_done = done;
	return done == len ? 0 : ret;
}

static inline int fill(struct uffd *u, enum fill_op op, uintptr_t dst, uintptr_t src, size_t len,
		       uint64_t mode)
{
	int64_t res = 0;
	int ret = fill_once(u, op, dst, src, len, mode, &res);

	if (ret == 0) {
		last_done = len;
		return 0;
	}
	return fill_more(u, op, dst, src, len, mode, ret, res);
}

/* Argument checks common to every resolving call; on failure nothing is called. */
static inline bool args_ok(const struct uffd *u, const void *addr, size_t len)
{
	return u && uffd_span_ok(u, (uintptr_t)addr, len);
}

/*
 * copy and zeropage serve most faults, so their ioctl is made right here, with only what the
 * rarer partial-progress path needs kept: the arguments are read back from the ioctl's struct.
 */
int uffd_copy(struct uffd *u, void *dst, const void *src, size_t len, uint64_t mode)
{
	struct uffdio_copy a;
	int ret;

	/* The source may be unaligned, but may not wrap (the kernel says EINVAL too). */
	if (uffd_unlikely(!args_ok(u, dst, len) ||
			  (mode & ~(uint64_t)(UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP)) ||
			  (uintptr_t)src + len < (uintptr_t)src)) {
		last_done = 0;
		return -EINVAL;
	}
	a = (struct uffdio_copy){
		.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len, .mode = mode, .copy = 0
	};
	ret = uffd_sys_ioctl(u->fd, UFFDIO_COPY, &a);
	if (uffd_likely(ret == 0)) {
		last_done = len;
		return 0;
	}
	return fill_more(u, OP_COPY, a.dst, a.src, a.len, a.mode, ret, a.copy);
}

int uffd_zeropage(struct uffd *u, void *dst, size_t len, uint64_t mode)
{
	struct uffdio_zeropage a;
	int ret;

	if (uffd_unlikely(!args_ok(u, dst, len) ||
			  (mode & ~(uint64_t)UFFDIO_ZEROPAGE_MODE_DONTWAKE))) {
		last_done = 0;
		return -EINVAL;
	}
	a = (struct uffdio_zeropage){ .range = { .start = (uintptr_t)dst, .len = len },
				      .mode = mode,
				      .zeropage = 0 };
	ret = uffd_sys_ioctl(u->fd, UFFDIO_ZEROPAGE, &a);
	if (uffd_likely(ret == 0)) {
		last_done = len;
		return 0;
	}
	return fill_more(u, OP_ZEROPAGE, a.range.start, 0, a.range.len, a.mode, ret, a.zeropage);
}

int uffd_continue(struct uffd *u, void *dst, size_t len, uint64_t mode)
{
	last_done = 0;
	if (!args_ok(u, dst, len) ||
	    (mode & ~(UFFDIO_CONTINUE_MODE_DONTWAKE | UFFDIO_CONTINUE_MODE_WP)))
		return -EINVAL;
	return fill(u, OP_CONTINUE, (uintptr_t)dst, 0, len, mode);
}

int uffd_poison(struct uffd *u, void *dst, size_t len, uint64_t mode)
{
	last_done = 0;
	if (!args_ok(u, dst, len) || (mode & ~UFFDIO_POISON_MODE_DONTWAKE))
		return -EINVAL;
	if (!(u->features & UFFD_FEATURE_POISON))
		return -EOPNOTSUPP;
	return fill(u, OP_POISON, (uintptr_t)dst, 0, len, mode);
}

int uffd_move(struct uffd *u, void *dst, void *src, size_t len, uint64_t mode)
{
	last_done = 0;
	if (!args_ok(u, dst, len) || !uffd_span_ok(u, (uintptr_t)src, len) ||
	    (mode & ~(UFFDIO_MOVE_MODE_DONTWAKE | UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES)))
		return -EINVAL;
	if (!(u->features & UFFD_FEATURE_MOVE))
		return -EOPNOTSUPP;
	return fill(u, OP_MOVE, (uintptr_t)dst, (uintptr_t)src, len, mode);
}

/*
 * The kernel has no partial progress here: it protects or un-protects the whole range or fails.
 * The WP bit comes from @protect; a caller who also passes UFFDIO_WRITEPROTECT_MODE_WP in @mode
 * is accepted when it agrees with @protect, and refused when it contradicts it.
 */
int uffd_writeprotect(struct uffd *u, void *addr, size_t len, bool protect, uint64_t mode)
{
	struct uffdio_writeprotect wp;
	int ret;

	last_done = 0;
	if (!args_ok(u, addr, len) ||
	    (mode & ~(UFFDIO_WRITEPROTECT_MODE_DONTWAKE | UFFDIO_WRITEPROTECT_MODE_WP)))
		return -EINVAL;
	if ((mode & UFFDIO_WRITEPROTECT_MODE_WP) && !protect)
		return -EINVAL;
	/* Protecting wakes nobody, so DONTWAKE with it is meaningless: the kernel refuses it. */
	if (protect && (mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE))
		return -EINVAL;
	wp = (struct uffdio_writeprotect){
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = (mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE) |
			(protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0),
	};
	ret = uffd_sys_ioctl(u->fd, UFFDIO_WRITEPROTECT, &wp);
	if (ret == 0)
		last_done = len;
	return ret;
}

int uffd_wake_range(struct uffd *u, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	if (!u)
		return -EINVAL;
	return uffd_sys_ioctl(u->fd, UFFDIO_WAKE, &r);
}

int uffd_wake(struct uffd *u, void *addr, size_t len)
{
	int ret;

	last_done = 0;
	if (!args_ok(u, addr, len))
		return -EINVAL;
	ret = uffd_wake_range(u, (uintptr_t)addr, len);
	if (ret == 0)
		last_done = len;
	return ret;
}
