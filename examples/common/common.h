/* SPDX-License-Identifier: MIT */
/* Helpers shared by the example tools: messages and options, files, a dispatch thread, SHA-256. */
#ifndef UFFD_EXAMPLES_COMMON_H
#define UFFD_EXAMPLES_COMMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

#include <uffd.h>

/* Exit status of a usage error; 1 means the tool ran and failed. */
#define TOOL_EXIT_USAGE 2

/* ---- cli.c: messages, options, small utilities ---- */

/* Name the running tool and its usage line, once, first thing in main(); getopt_long() then
 * prints nothing of its own (opterr = 0): tool_bad_option() says what was wrong. */
void tool_init(const char *name, const char *usage);
/* Print "name: message" on stderr. */
void tool_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "name: message" on stderr and exit 1. */
noreturn void tool_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "name: message; usage: ..." on stderr and exit 2. */
noreturn void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* getopt_long() returned '?' or ':' (the option string must start with ':'): say which option
 * was wrong, in one line, and exit 2. */
noreturn void tool_bad_option(int c, char **argv);
/* The end of every tool's option switch: -h/--help calls @help and -V/--version prints the
 * version, each then exiting 0; anything else is tool_bad_option(). */
noreturn void tool_other_option(int c, char **argv, void (*help)(void));
/* A whole decimal number in [min, max] given to @opt, or a usage error naming both. */
unsigned long tool_number(const char *opt, const char *arg, unsigned long min, unsigned long max);
/* No arguments may be left after the options. */
void tool_no_operands(int argc, char **argv);
/* Print "name (libuffd X.Y.Z)". */
void tool_print_version(void);
size_t tool_page_size(void);
/* Seconds on the monotonic clock. */
double tool_now(void);

/* uffd_open(), or exit 1 with one line that names the problem (a missing feature by name). */
struct uffd *tool_open(const struct uffd_config *cfg);

/* A file mapped read-only. */
struct tool_file {
	const char *path;
	size_t size;
	const unsigned char *data;
};

/* Map @path, or exit 1 naming what is wrong: missing, unreadable, not a regular file, empty. */
void tool_file_map(struct tool_file *f, const char *path);
void tool_file_unmap(struct tool_file *f);

/* ---- source.c: images (a path or a URL), sizes, recorded orders ---- */

/* Whether @spec is an http:// or https:// URL. */
bool tool_is_url(const char *spec);
/* The image @spec names, a regular file or a URL (through libuffd-http where it was built), and
 * its length; or exit 1 with one line: missing, unreadable, not a regular file, empty, or a URL
 * in a build without HTTP support. */
struct uffd_source *tool_source_open(const char *spec, uint64_t *len);
/* The same, with the deadline of one attempt of an HTTP request in ms (0: libuffd-http's
 * default, 10 s; a file ignores it). */
struct uffd_source *tool_source_open_timeout(const char *spec, uint64_t *len, unsigned timeout_ms);
/* Bytes given to @opt, with an optional K or M suffix, in [min, max], or a usage error. */
uint64_t tool_size(const char *opt, const char *arg, uint64_t min, uint64_t max);
/* The chunks --ahead asks for (uffd_serve_config::ahead), or a usage error. */
uint32_t tool_ahead(const char *arg);
/* A usage error when --ahead (@ahead) comes with --record (@record_path): uffd_serve() refuses
 * the two together. */
void tool_ahead_not_with_record(uint32_t ahead, const char *record_path);
/* Load the recorded order at @path, or exit 1 with one line: unreadable, not the format, runs
 * with region names (uffd-trace's, which no image offset stands for), unaligned or past the
 * image's end. */
struct uffd_order *tool_order_load(const char *path, uint64_t image_len, uint64_t page);
/* The bytes an order's runs hold. */
uint64_t tool_order_bytes(const struct uffd_order *o);
/* Write @o to @path and, when @src is not NULL, its pages read from @src back to back to
 * PATH.pages (the compacted working set); exit 1 with one line on an error. */
void tool_order_save(struct uffd_order *o, const char *path, struct uffd_source *src);
/* The compacted working set PATH.pages recorded with @o, or NULL when there is none; exit 1
 * when it is there but unreadable or not @o's size. */
struct uffd_source *tool_compact_open(const char *path, const struct uffd_order *o);

/* ---- dispatcher.c: a thread that dispatches one context until told to stop ---- */

struct tool_dispatcher {
	struct uffd *u;
	pthread_t thread;
	atomic_bool stop;
	int err; /* the first error uffd_dispatch() returned, 0 if none */
};

/* Start dispatching @u on a new thread, after what was printed so far went out; exit 1 with one
 * line when the thread cannot be started. */
void tool_dispatcher_start(struct tool_dispatcher *d, struct uffd *u);
/* Stop the thread and wait for it; returns its first error (0 if none). Call it only when the
 * workload is done: events the workload caused were read before its calls returned. */
int tool_dispatcher_stop(struct tool_dispatcher *d);

/* ---- SHA-256 (FIPS 180-4): the library's own src/sha256.c, compiled into the tools too ---- */
#include "sha256.h"
/* The digest in lower-case hex, NUL-terminated (cli.c). */
void sha256_hex(const unsigned char digest[UFFD_SHA256_LEN], char hex[2 * UFFD_SHA256_LEN + 1]);

#endif /* UFFD_EXAMPLES_COMMON_H */
