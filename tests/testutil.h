/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check test programs: skipping, suite running, fd counting. */
#ifndef UFFD_TESTUTIL_H
#define UFFD_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * ThreadSanitizer's fork() holds its internal locks until fork() returns, and the kernel holds
 * fork() until another thread of this process reads the FORK event; that thread then blocks on
 * those locks in the first call TSan intercepts. So under TSan a test cannot fork while a thread
 * of its own process reads the FORK event; such cases check UNDER_TSAN (the soak test forks under
 * TSan, in another process).
 */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

/* Exit 77 (CTest: skipped) with the reason; under LIBUFFD_TEST_STRICT=1 exit 1 instead. */
__attribute__((noreturn)) void tu_skip(const char *fmt, ...);
bool tu_strict(void);
/* Run one suite in Check's fork mode; returns the process exit code (0 or 1). */
int tu_run(Suite *s);
/* Number of open fds of this process. */
int tu_count_fds(void);
/* Page size. */
size_t tu_page(void);
/* mmap an anonymous private region of @len bytes, or fail the test. */
void *tu_map_anon(size_t len);
/* A memfd of @len bytes mapped shared (or private) at a fresh address, or fail the test. */
void *tu_map_shmem(size_t len, bool shared, int *memfd_out);
/* Reserve @n huge pages (as root) if fewer are free; returns the old nr_hugepages or -1. */
long tu_hugepages_reserve(long n);
void tu_hugepages_restore(long old);

#endif
