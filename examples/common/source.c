/* SPDX-License-Identifier: MIT */
/* What the restoring tools share: opening an image (a path or a URL), sizes, recorded orders. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#ifdef UFFD_TOOLS_HTTP
#include <uffd_http.h>
#endif

bool tool_is_url(const char *spec)
{
	return strncmp(spec, "http://", 7) == 0 || strncmp(spec, "https://", 8) == 0;
}

static struct uffd_source *open_url(const char *url, unsigned timeout_ms)
{
#ifdef UFFD_TOOLS_HTTP
	struct uffd_http_config cfg = { 0 };
	struct uffd_source *s;
	int err;

	cfg.url = url;
	cfg.timeout_ms = timeout_ms;
	/* Connecting is part of an attempt: it cannot take longer than the whole attempt. */
	if (timeout_ms && timeout_ms < 2000)
		cfg.connect_timeout_ms = timeout_ms;
	err = uffd_http_source(&s, &cfg);
	if (err)
		tool_die("cannot open '%s': %s", url, uffd_strerror(err));
	return s;
#else
	tool_die("cannot open '%s': this build has no HTTP support (libuffd-http was not built: "
		 "it needs libcurl)",
		 url);
	(void)timeout_ms;
#endif
}

struct uffd_source *tool_source_open(const char *spec, uint64_t *len)
{
	return tool_source_open_timeout(spec, len, 0);
}

struct uffd_source *tool_source_open_timeout(const char *spec, uint64_t *len, unsigned timeout_ms)
{
	struct uffd_source *s;
	struct stat st;
	int64_t n;
	int fd, err;

	if (tool_is_url(spec)) {
		s = open_url(spec, timeout_ms);
		n = uffd_source_length(s);
		if (n < 0)
			tool_die("cannot tell the length of '%s': %s", spec, strerror((int)-n));
		if (n == 0)
			tool_die("'%s' is empty", spec);
		*len = (uint64_t)n;
		return s;
	}
	/* O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it. */
	fd = open(spec, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		tool_die("cannot open '%s': %s", spec, strerror(errno));
	if (fstat(fd, &st) != 0)
		tool_die("cannot stat '%s': %s", spec, strerror(errno));
	if (!S_ISREG(st.st_mode))
		tool_die("'%s' is not a regular file", spec);
	if (st.st_size == 0)
		tool_die("'%s' is empty", spec);
	err = uffd_source_fd(&s, fd, 0);
	if (err)
		tool_die("cannot read '%s': %s", spec, uffd_strerror(err));
	close(fd); /* the source has its own copy */
	*len = (uint64_t)st.st_size;
	return s;
}

uint32_t tool_ahead(const char *arg)
{
	return (uint32_t)tool_number("--ahead", arg, 0, UFFD_SERVE_MAX_AHEAD);
}

void tool_ahead_not_with_record(uint32_t ahead, const char *record_path)
{
	if (ahead && record_path)
		tool_usage_error("--ahead and --record: pages fetched ahead are never touched "
				 "first by a fault, and the order would miss them");
}

uint64_t tool_size(const char *opt, const char *arg, uint64_t min, uint64_t max)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	errno = 0;
	if (!isdigit((unsigned char)arg[0]))
		goto bad;
	v = strtoull(arg, &end, 10);
	if (errno)
		goto bad;
	if (*end && !end[1]) {
		switch (*end) {
		case 'k':
		case 'K':
			mult = UINT64_C(1) << 10;
			break;
		case 'm':
		case 'M':
			mult = UINT64_C(1) << 20;
			break;
		default:
			goto bad;
		}
	} else if (*end) {
		goto bad;
	}
	if (v > max / mult || v * mult < min || v * mult > max)
		goto bad;
	return v * mult;
bad:
	tool_usage_error("invalid value '%s' for %s: expected bytes (with a K or M suffix) from "
			 "%" PRIu64 " to %" PRIu64,
			 arg, opt, min, max);
}

struct uffd_order *tool_order_load(const char *path, uint64_t image_len, uint64_t page)
{
	struct uffd_order *o;
	long n;
	int err, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		tool_die("cannot open '%s': %s", path, strerror(errno));
	err = uffd_order_load(&o, fd);
	close(fd);
	if (err == -EBADMSG)
		tool_die("'%s' is not a recorded order (a 'uffd-order 1' file)", path);
	if (err)
		tool_die("cannot read '%s': %s", path, uffd_strerror(err));
	n = uffd_order_count(o);
	for (long i = 0; i < n; i++) {
		uint64_t off, len;
		const char *region = NULL;

		uffd_order_get(o, i, &off, &len, &region);
		if (region)
			tool_die(
				"'%s' names regions of a process ('%s'), as uffd-trace --order writes: "
				"there is no way to map them to the image",
				path, region);
		if (off % page || len % page)
			tool_die("'%s': the run at 0x%" PRIx64 " is not page-aligned", path, off);
		if (off > image_len || len > image_len - off)
			tool_die("'%s': the run at 0x%" PRIx64 " (0x%" PRIx64
				 " bytes) lies past the "
				 "image's end (0x%" PRIx64 ")",
				 path, off, len, image_len);
	}
	return o;
}

uint64_t tool_order_bytes(const struct uffd_order *o)
{
	uint64_t sum = 0, off, len;

	for (long i = 0; i < uffd_order_count(o); i++)
		if (uffd_order_get(o, i, &off, &len, NULL) == 0)
			sum += len;
	return sum;
}

void tool_order_save(struct uffd_order *o, const char *path, struct uffd_source *src)
{
	char pages[4096];
	int err, fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		tool_die("cannot create '%s': %s", path, strerror(errno));
	err = uffd_order_save(o, fd);
	if (close(fd) != 0 && !err)
		err = -errno;
	if (err)
		tool_die("cannot write '%s': %s", path, uffd_strerror(err));
	if (!src)
		return;
	snprintf(pages, sizeof(pages), "%s.pages", path);
	fd = open(pages, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		tool_die("cannot create '%s': %s", pages, strerror(errno));
	err = uffd_order_save_pages(o, src, fd);
	if (close(fd) != 0 && !err)
		err = -errno;
	if (err)
		tool_die("cannot write '%s': %s", pages, uffd_strerror(err));
}

struct uffd_source *tool_compact_open(const char *path, const struct uffd_order *o)
{
	char pages[4096];
	struct uffd_source *s;
	struct stat st;
	int err, fd;

	snprintf(pages, sizeof(pages), "%s.pages", path);
	fd = open(pages, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return NULL; /* no compacted file: prefetch from the image */
		tool_die("cannot open '%s': %s", pages, strerror(errno));
	}
	if (fstat(fd, &st) != 0)
		tool_die("cannot stat '%s': %s", pages, strerror(errno));
	if ((uint64_t)st.st_size != tool_order_bytes(o))
		tool_die("'%s' holds %lld bytes, but '%s' names %" PRIu64 ": not its working set",
			 pages, (long long)st.st_size, path, tool_order_bytes(o));
	err = uffd_source_fd(&s, fd, 0);
	if (err)
		tool_die("cannot read '%s': %s", pages, uffd_strerror(err));
	close(fd);
	return s;
}
