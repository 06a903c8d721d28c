/* SPDX-License-Identifier: MIT */
/* Page sources: the caller's own operations, a file or fd read with pread(2), a memory buffer. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve.h"

/* The smallest `size` a caller's ops may have: up to and including `read`. */
#define OPS_MIN \
	(offsetof(struct uffd_source_ops, read) + sizeof(((struct uffd_source_ops *)0)->read))

/* O_DIRECT wants offsets, lengths and buffers aligned to the device's logical block; a page is
 * a multiple of every block size Linux supports, so aligning to it is always enough. */
#define DIRECT_ALIGN 4096u

int uffd_source_new(struct uffd_source **out, const struct uffd_source_ops *ops, void *impl)
{
	struct uffd_source *s;
	size_t n;

	if (!out || !ops || ops->size < OPS_MIN || !ops->read)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	/* Only what the implementer's struct holds: a later header's members stay NULL. */
	n = ops->size < sizeof(s->ops) ? ops->size : sizeof(s->ops);
	memcpy(&s->ops, ops, n);
	s->ops.size = sizeof(s->ops);
	s->impl = impl;
	*out = s;
	return 0;
}

int uffd_source_read(struct uffd_source *s, void *buf, size_t len, uint64_t offset)
{
	if (!s || !buf || !len || offset + len < offset)
		return -EINVAL;
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

/* ---- memory ---- */

struct mem_source {
	const unsigned char *buf;
	size_t len;
};

static int mem_read(void *impl, void *buf, size_t len, uint64_t offset)
{
	const struct mem_source *m = impl;

	if (offset > m->len || len > m->len - offset)
		return -ENXIO;
	memcpy(buf, m->buf + offset, len);
	return 0;
}

static int64_t mem_length(void *impl)
{
	return (int64_t)((const struct mem_source *)impl)->len;
}

static void mem_close(void *impl)
{
	free(impl);
}

int uffd_source_memory(struct uffd_source **out, const void *buf, size_t len)
{
	static const struct uffd_source_ops ops = {
		.size = sizeof(ops), .read = mem_read, .length = mem_length, .close = mem_close
	};
	struct mem_source *m;
	int ret;

	if (!out || !buf || (int64_t)len < 0)
		return -EINVAL;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->buf = buf;
	m->len = len;
	ret = uffd_source_new(out, &ops, m);
	if (ret)
		free(m);
	return ret;
}

/* ---- file ---- */

struct file_source {
	int fd;
	bool direct;
	/* O_DIRECT reads that are not aligned go through one bounce buffer, grown as needed. */
	pthread_mutex_t lock;
	void *bounce;
	size_t bounce_len;
};

/* pread until @len bytes are in: a short file is -ENXIO, never bytes taken as whole. */
static int pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
	unsigned char *p = buf;

	while (len) {
		long n = uffd_sys_pread(fd, p, len, offset);

		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ENXIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

/* O_DIRECT: an aligned superset of the range into the bounce buffer, then the bytes asked for.
 * The superset may run past the end of the file: only the bytes asked for must be there. */
static int direct_read(struct file_source *f, void *buf, size_t len, uint64_t offset)
{
	uint64_t lo = offset & ~(uint64_t)(DIRECT_ALIGN - 1);
	uint64_t hi = (offset + len + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
	size_t want = (size_t)(hi - lo), got = 0;
	int ret = 0;

	if (((uintptr_t)buf | offset | len) % DIRECT_ALIGN == 0)
		return pread_all(f->fd, buf, len, offset);
	pthread_mutex_lock(&f->lock);
	if (f->bounce_len < want) {
		void *p = NULL;

		if (posix_memalign(&p, DIRECT_ALIGN, want)) {
			pthread_mutex_unlock(&f->lock);
			return -ENOMEM;
		}
		free(f->bounce);
		f->bounce = p;
		f->bounce_len = want;
	}
	while (got < (size_t)(offset - lo) + len) {
		long n = uffd_sys_pread(f->fd, (char *)f->bounce + got, want - got, lo + got);

		if (n == -EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? (int)n : -ENXIO;
			break;
		}
		got += (size_t)n;
	}
	if (!ret)
		memcpy(buf, (char *)f->bounce + (offset - lo), len);
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static int file_read(void *impl, void *buf, size_t len, uint64_t offset)
{
	struct file_source *f = impl;

	if (offset > (uint64_t)INT64_MAX - len)
		return -ENXIO;
	return f->direct ? direct_read(f, buf, len, offset) : pread_all(f->fd, buf, len, offset);
}

static int64_t file_length(void *impl)
{
	const struct file_source *f = impl;
	struct stat st;
	uint64_t size;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode))
		return st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(f->fd, BLKGETSIZE64, &size) == 0)
		return (int64_t)size;
	return -EOPNOTSUPP;
}

static void file_close(void *impl)
{
	struct file_source *f = impl;

	uffd_sys_close(f->fd);
	pthread_mutex_destroy(&f->lock);
	free(f->bounce);
	free(f);
}

/* Takes @fd: closed on failure too. */
static int file_source_make(struct uffd_source **out, int fd, bool direct)
{
	static const struct uffd_source_ops ops = {
		.size = sizeof(ops), .read = file_read, .length = file_length, .close = file_close
	};
	struct file_source *f = calloc(1, sizeof(*f));
	int ret;

	if (!f) {
		uffd_sys_close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->direct = direct;
	pthread_mutex_init(&f->lock, NULL);
	ret = uffd_source_new(out, &ops, f);
	if (ret)
		file_close(f);
	return ret;
}

int uffd_source_file(struct uffd_source **out, const char *path, unsigned flags)
{
	int fd;

	if (!out || !path || (flags & ~UFFD_SOURCE_DIRECT))
		return -EINVAL;
	fd = uffd_sys_open(path, O_RDONLY | ((flags & UFFD_SOURCE_DIRECT) ? O_DIRECT : 0));
	if (fd < 0)
		return fd;
	return file_source_make(out, fd, flags & UFFD_SOURCE_DIRECT);
}

int uffd_source_fd(struct uffd_source **out, int fd, unsigned flags)
{
	int own;

	if (!out || fd < 0 || (flags & ~UFFD_SOURCE_DIRECT))
		return -EINVAL;
	own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (own < 0)
		return -errno;
	/* O_DIRECT belongs to the open file description, which the dup shares with the caller's
	 * fd: reopen through /proc instead of switching the caller's reads to O_DIRECT. */
	if (flags & UFFD_SOURCE_DIRECT) {
		char path[64];
		int d;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", own);
		d = uffd_sys_open(path, O_RDONLY | O_DIRECT);
		uffd_sys_close(own);
		if (d < 0)
			return d;
		own = d;
	}
	return file_source_make(out, own, flags & UFFD_SOURCE_DIRECT);
}
