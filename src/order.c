/* SPDX-License-Identifier: MIT */
/* Recorded first-touch orders: runs of pages, kept in mmap'd memory, saved and loaded as text. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "serve.h"

#define ORDER_MAGIC "uffd-order"
#define ORDER_VERSION 1
#define REGION_MAX 255 /* bytes of a region's name */

struct order_run {
	uint64_t offset, len;
	const char *region; /* interned: equal names are equal pointers */
};

struct region_name {
	struct region_name *next;
	char name[];
};

/*
 * The runs live in an mmap'd array grown with mremap: the fault handler appends to an order
 * while it serves, and malloc there could deadlock a monitor whose process forks (uffd.h,
 * dispatch group). Region names are interned with malloc: only callers outside the fault
 * path (uffd-trace's tools, uffd_order_load()) name regions.
 */
struct uffd_order {
	pthread_mutex_t lock;
	struct order_run *runs;
	size_t n, cap, map_len;
	struct region_name *names;
};

int uffd_order_new(struct uffd_order **out)
{
	struct uffd_order *o;

	if (!out)
		return -EINVAL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	pthread_mutex_init(&o->lock, NULL);
	*out = o;
	return 0;
}

void uffd_order_free(struct uffd_order *o)
{
	struct region_name *r, *next;

	if (!o)
		return;
	if (o->runs)
		munmap(o->runs, o->map_len);
	for (r = o->names; r; r = next) {
		next = r->next;
		free(r);
	}
	pthread_mutex_destroy(&o->lock);
	free(o);
}

/* Room for one more run: mmap, then mremap, never malloc. */
static int grow_locked(struct uffd_order *o)
{
	size_t len = o->map_len ? o->map_len * 2 : (size_t)uffd_page_size();
	void *p;

	if (o->n < o->cap)
		return 0;
	if (o->runs)
		p = mremap(o->runs, o->map_len, len, MREMAP_MAYMOVE);
	else
		p = uffd_sys_mmap(len);
	if (!p || p == MAP_FAILED)
		return -ENOMEM;
	o->runs = p;
	o->map_len = len;
	o->cap = len / sizeof(struct order_run);
	return 0;
}

static bool region_ok(const char *r)
{
	size_t i;

	for (i = 0; r[i]; i++)
		if ((unsigned char)r[i] <= ' ' || r[i] == '#' || (unsigned char)r[i] == 0x7f ||
		    i >= REGION_MAX)
			return false;
	return i > 0;
}

static const char *intern_locked(struct uffd_order *o, const char *name)
{
	struct region_name *r;
	size_t len;

	for (r = o->names; r; r = r->next)
		if (strcmp(r->name, name) == 0)
			return r->name;
	len = strlen(name);
	r = malloc(sizeof(*r) + len + 1);
	if (!r)
		return NULL;
	memcpy(r->name, name, len + 1);
	r->next = o->names;
	o->names = r;
	return r->name;
}

int uffd_order_add(struct uffd_order *o, uint64_t offset, uint64_t len, const char *region)
{
	const char *name = NULL;
	struct order_run *last;
	int ret = 0;

	if (!o || !len || offset + len < offset || (region && !region_ok(region)))
		return -EINVAL;
	pthread_mutex_lock(&o->lock);
	if (region && !(name = intern_locked(o, region))) {
		ret = -ENOMEM;
		goto out;
	}
	last = o->n ? &o->runs[o->n - 1] : NULL;
	if (last && last->region == name && last->offset + last->len == offset) {
		last->len += len;
		goto out;
	}
	ret = grow_locked(o);
	if (!ret && o->runs)
		o->runs[o->n++] = (struct order_run){ offset, len, name };
out:
	pthread_mutex_unlock(&o->lock);
	return ret;
}

long uffd_order_count(const struct uffd_order *o)
{
	struct uffd_order *mo =
		(struct uffd_order *)o; /* the lock only: made by uffd_order_new() */
	long n;

	if (!o)
		return -EINVAL;
	pthread_mutex_lock(&mo->lock);
	n = (long)o->n;
	pthread_mutex_unlock(&mo->lock);
	return n;
}

int uffd_order_get(const struct uffd_order *o, long i, uint64_t *offset, uint64_t *len,
		   const char **region)
{
	struct uffd_order *mo = (struct uffd_order *)o;
	int ret = -ENOENT;

	if (!o || !offset || !len)
		return -EINVAL;
	pthread_mutex_lock(&mo->lock);
	if (i >= 0 && (size_t)i < o->n) {
		*offset = o->runs[i].offset;
		*len = o->runs[i].len;
		if (region)
			*region = o->runs[i].region;
		ret = 0;
	}
	pthread_mutex_unlock(&mo->lock);
	return ret;
}

bool uffd_order_has_regions(const struct uffd_order *o)
{
	struct uffd_order *mo = (struct uffd_order *)o;
	bool any = false;
	size_t i;

	pthread_mutex_lock(&mo->lock);
	for (i = 0; i < o->n && !any; i++)
		any = o->runs[i].region != NULL;
	pthread_mutex_unlock(&mo->lock);
	return any;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		long n = uffd_sys_write(fd, p, len);

		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int uffd_order_save(struct uffd_order *o, int fd)
{
	char buf[8192];
	size_t fill, i;
	int ret;

	if (!o || fd < 0)
		return -EINVAL;
	pthread_mutex_lock(&o->lock);
	fill = (size_t)snprintf(buf, sizeof(buf),
				ORDER_MAGIC " %d\n# offset length [region]: runs of pages in "
					    "first-touch order\n",
				ORDER_VERSION);
	ret = 0;
	for (i = 0; i < o->n && !ret; i++) {
		const struct order_run *r = &o->runs[i];

		/* A line is at most 2 * 18 + REGION_MAX + 3 bytes: flush before it could overflow. */
		if (sizeof(buf) - fill < 2 * 18 + REGION_MAX + 4) {
			ret = write_all(fd, buf, fill);
			fill = 0;
		}
		fill += (size_t)snprintf(buf + fill, sizeof(buf) - fill,
					 "0x%" PRIx64 " 0x%" PRIx64 "%s%s\n", r->offset, r->len,
					 r->region ? " " : "", r->region ? r->region : "");
	}
	if (!ret)
		ret = write_all(fd, buf, fill);
	pthread_mutex_unlock(&o->lock);
	return ret;
}

/* ---- loading ---- */

/* A number as the format has it: decimal, or hex after 0x; the whole token, no overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;
	size_t i = 0;

	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	}
	if (i == n)
		return false;
	for (; i < n; i++) {
		unsigned d;

		if (s[i] >= '0' && s[i] <= '9')
			d = (unsigned)(s[i] - '0');
		else if (base == 16 && s[i] >= 'a' && s[i] <= 'f')
			d = (unsigned)(s[i] - 'a' + 10);
		else if (base == 16 && s[i] >= 'A' && s[i] <= 'F')
			d = (unsigned)(s[i] - 'A' + 10);
		else
			return false;
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	*out = v;
	return true;
}

/* Splits a line (comment removed) into at most @max white-space separated tokens. */
static int tokens(char *line, char **tok, size_t *len, int max)
{
	int n = 0;
	char *p = line;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (!*p)
			return n;
		if (n == max)
			return max + 1;
		tok[n] = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\r')
			p++;
		len[n] = (size_t)(p - tok[n]);
		n++;
	}
}

static int parse_line(struct uffd_order *o, char *line, bool *header)
{
	char *hash = strchr(line, '#'), *tok[3];
	size_t len[3];
	uint64_t off, n, mask = (uint64_t)uffd_page_size() - 1, version;
	int nt;

	if (hash)
		*hash = '\0';
	nt = tokens(line, tok, len, 3);
	if (nt == 0)
		return 0;
	if (!*header) {
		/* The first line that is not blank or a comment names the format and version. */
		if (nt != 2 || len[0] != sizeof(ORDER_MAGIC) - 1 ||
		    memcmp(tok[0], ORDER_MAGIC, len[0]) != 0 ||
		    !parse_u64(tok[1], len[1], &version) || version != ORDER_VERSION)
			return -EBADMSG;
		*header = true;
		return 0;
	}
	if (nt < 2 || nt > 3 || !parse_u64(tok[0], len[0], &off) || !parse_u64(tok[1], len[1], &n))
		return -EBADMSG;
	if (!n || ((off | n) & mask) || off + n < off)
		return -EBADMSG;
	if (nt == 3) {
		tok[2][len[2]] = '\0';
		if (!region_ok(tok[2]))
			return -EBADMSG;
	}
	return uffd_order_add(o, off, n, nt == 3 ? tok[2] : NULL);
}

int uffd_order_load(struct uffd_order **out, int fd)
{
	size_t cap = 1 << 16, fill = 0;
	char *buf, *line, *nl;
	struct uffd_order *o = NULL;
	bool header = false;
	int ret;

	if (!out || fd < 0)
		return -EINVAL;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		long n;

		if (cap - fill < 2) {
			char *p = realloc(buf, cap * 2);

			if (!p) {
				free(buf);
				return -ENOMEM;
			}
			buf = p;
			cap *= 2;
		}
		n = uffd_sys_read_plain(fd, buf + fill, cap - fill - 1);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return (int)n;
		}
		if (n == 0)
			break;
		fill += (size_t)n;
	}
	buf[fill] = '\0';
	if (memchr(buf, '\0', fill)) {
		free(buf);
		return -EBADMSG; /* text has no NUL bytes */
	}
	ret = uffd_order_new(&o);
	for (line = buf; !ret && line < buf + fill; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			nl = buf + fill;
		*nl = '\0';
		ret = parse_line(o, line, &header);
	}
	free(buf);
	if (!ret && !header)
		ret = -EBADMSG; /* empty, or only comments */
	if (ret) {
		uffd_order_free(o);
		return ret;
	}
	*out = o;
	return 0;
}

/* ---- the compacted working set ---- */

/*
 * Whether a run [off, off + len) ends in a source's last, short page of some size: it crosses
 * the source's end @end, and ends where that page would, at a multiple of a power of two (the
 * page size: up to 1 GiB, hugetlb's largest) that is more than the bytes past the end.
 * uffd_serve() serves such a page whole, the rest reading zero, and records it so.
 */
static bool ends_in_last_page(uint64_t off, uint64_t len, int64_t end)
{
	uint64_t stop = off + len, page;

	if (end < 0 || off >= (uint64_t)end || stop <= (uint64_t)end)
		return false;
	page = stop & -stop; /* the largest power of two @stop is a multiple of */
	return page <= ((uint64_t)1 << 30) && stop - (uint64_t)end < page;
}

int uffd_order_save_pages(struct uffd_order *o, struct uffd_source *src, int fd)
{
	size_t cap = 1 << 20;
	int64_t end;
	long i, n;
	char *buf;
	int ret = 0;

	if (!o || !src || fd < 0 || uffd_order_has_regions(o))
		return -EINVAL;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	n = uffd_order_count(o);
	/* A run may end in the source's last, short page: written whole, zero-padded. Any other
	 * run past the end is the source's to answer (-ENXIO). */
	end = uffd_source_length(src);
	for (i = 0; i < n && !ret; i++) {
		uint64_t off, len;
		bool tail;

		ret = uffd_order_get(o, i, &off, &len, NULL);
		tail = !ret && ends_in_last_page(off, len, end);
		while (!ret && len) {
			size_t k = len < cap ? (size_t)len : cap, data = k;

			if (tail && off + k > (uint64_t)end)
				data = off < (uint64_t)end ? (size_t)((uint64_t)end - off) : 0;
			ret = data ? uffd_source_read(src, buf, data, off) : 0;
			if (!ret) {
				memset(buf + data, 0, k - data);
				ret = write_all(fd, buf, k);
			}
			off += k;
			len -= k;
		}
	}
	free(buf);
	return ret;
}
