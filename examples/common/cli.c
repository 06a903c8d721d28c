/* SPDX-License-Identifier: MIT */
/* What every example tool does the same way: one-line errors, options, opening, input files. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const char *tool_name = "tool";
static const char *tool_usage = "";

void tool_init(const char *name, const char *usage)
{
	tool_name = name;
	tool_usage = usage;
	opterr = 0; /* one line of our own instead of getopt's message */
	/* Events are printed as they arrive, also into a pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);
}

static void vsay(const char *fmt, va_list ap, bool with_usage)
{
	/* Build the line first, so that it reaches stderr in one write. */
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s: ", tool_name);

	if (n >= 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	fflush(stdout);
	if (with_usage)
		fprintf(stderr, "%s; %s\n", line, tool_usage);
	else
		fprintf(stderr, "%s\n", line);
}

void tool_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap, false);
	va_end(ap);
}

void tool_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap, false);
	va_end(ap);
	exit(1);
}

void tool_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap, true);
	va_end(ap);
	exit(TOOL_EXIT_USAGE);
}

void tool_bad_option(int c, char **argv)
{
	/* getopt_long() leaves a long option's text in argv; for a short one only optopt says. */
	const char *text = argv[optind - 1];
	char shorty[3] = { '-', (char)optopt, '\0' };

	if (optopt && strncmp(text, "--", 2) != 0)
		text = shorty;
	if (c == ':')
		tool_usage_error("option '%s' needs a value", text);
	if (optopt && strchr(text, '='))
		tool_usage_error("option '%.*s' takes no value", (int)strcspn(text, "="), text);
	tool_usage_error("unknown option '%s'", text);
}

void tool_other_option(int c, char **argv, void (*help)(void))
{
	if (c == 'h') {
		help();
		exit(0);
	}
	if (c == 'V') {
		tool_print_version();
		exit(0);
	}
	tool_bad_option(c, argv);
}

unsigned long tool_number(const char *opt, const char *arg, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	/* strtoul() would take " -1" as a huge number: only plain digits are a count. */
	if (!isdigit((unsigned char)arg[0]))
		goto bad;
	v = strtoul(arg, &end, 10);
	if (errno || *end || v < min || v > max)
		goto bad;
	return v;
bad:
	tool_usage_error("invalid value '%s' for %s: expected a whole number from %lu to %lu", arg,
			 opt, min, max);
}

void tool_no_operands(int argc, char **argv)
{
	if (optind < argc)
		tool_usage_error("unexpected argument '%s'", argv[optind]);
}

void tool_print_version(void)
{
	printf("%s (libuffd %s)\n", tool_name, uffd_version());
}

size_t tool_page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

double tool_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct uffd *tool_open(const struct uffd_config *cfg)
{
	struct uffd *u;
	uint64_t offered = 0;
	int err = uffd_open(&u, cfg);

	if (err == 0)
		return u;
	/* Name the feature, rather than the generic sentence, when this kernel lacks one. */
	if (err == -EOPNOTSUPP && cfg && uffd_probe(&offered, NULL) == 0) {
		for (unsigned i = 0; i < 64; i++) {
			uint64_t bit = UINT64_C(1) << i;

			if ((cfg->required & bit) && !(offered & bit))
				tool_die("this kernel lacks the userfaultfd feature %s (added in "
					 "Linux %s)",
					 uffd_feature_name(bit) ? uffd_feature_name(bit) : "?",
					 uffd_feature_since(bit) ? uffd_feature_since(bit) : "?");
		}
	}
	tool_die("cannot open a userfaultfd: %s", uffd_strerror(err));
}

void tool_file_map(struct tool_file *f, const char *path)
{
	struct stat st;
	void *p;
	/* O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		tool_die("cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) != 0)
		tool_die("cannot stat '%s': %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		tool_die("'%s' is not a regular file", path);
	if (st.st_size == 0)
		tool_die("'%s' is empty", path);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		tool_die("cannot map '%s' (%lld bytes): %s", path, (long long)st.st_size,
			 strerror(errno));
	close(fd); /* the mapping keeps the file */
	f->path = path;
	f->size = (size_t)st.st_size;
	f->data = p;
}

void tool_file_unmap(struct tool_file *f)
{
	munmap((void *)f->data, f->size);
	f->data = NULL;
}

void sha256_hex(const unsigned char digest[UFFD_SHA256_LEN], char hex[2 * UFFD_SHA256_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned i;

	for (i = 0; i < UFFD_SHA256_LEN; i++) {
		hex[2 * i] = digits[digest[i] >> 4];
		hex[2 * i + 1] = digits[digest[i] & 0xf];
	}
	hex[2 * UFFD_SHA256_LEN] = '\0';
}
