/* SPDX-License-Identifier: MIT */
/* Shared helpers for the Check test programs: skipping, suite running, fd counting. */
#ifndef UFFD_TESTUTIL_H
#define UFFD_TESTUTIL_H

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uffd.h>

/*
 * ThreadSanitizer's fork() holds its internal locks until fork() returns, and the kernel holds
 * fork() until another thread of this process reads the FORK event; that thread then blocks on
 * those locks in the first call TSan intercepts. So under TSan a test cannot fork while a thread
 * of its own process reads the FORK event; such cases check UNDER_TSAN (the soak test forks under
 * TSan, in another process).
 */
#include "under_tsan.h"

/* Exit 77 (CTest: skipped) with the reason; under LIBUFFD_TEST_STRICT=1 exit 1 instead. */
__attribute__((noreturn)) void tu_skip(const char *fmt, ...);
bool tu_strict(void);
/*
 * Exit 77 because this machine lacks the hardware the test needs (1 GiB pages, say), not a kernel
 * feature: "NOT APPLICABLE on this hardware [@id]: <why>". Under LIBUFFD_TEST_STRICT=1 that is
 * still allowed when @id is in tests/hardware-only.txt, the short list of such cases that
 * scripts/test accepts too; any other @id fails as tu_skip() does.
 */
__attribute__((noreturn, format(printf, 2, 3))) void tu_not_applicable(const char *id,
								       const char *fmt, ...);
/* Whether tests/hardware-only.txt lists @id. */
bool tu_hardware_only(const char *id);
/* Skip (tu_skip) unless a userfaultfd can be opened with @cfg (NULL: the defaults); @with says
 * what @cfg asks for, as in "cannot open a userfaultfd with <with>: <why>", or is NULL. */
void tu_require_uffd(const struct uffd_config *cfg, const char *with);
/* A test case with a timeout of @timeout seconds and, unless both are NULL, a checked fixture. */
TCase *tu_tcase(const char *name, int timeout, void (*setup)(void), void (*teardown)(void));
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
/* The number in a sysctl or sysfs file, or -1. */
long tu_read_long(const char *path);
/* Write @v to such a file: 0, or -1 when it could not be written. */
int tu_write_long(const char *path, long v);
/* Reserve @n huge pages (as root) if fewer are free; returns the old nr_hugepages or -1. */
long tu_hugepages_reserve(long n);
void tu_hugepages_restore(long old);
/* The same for huge pages of @kb KiB (/sys/kernel/mm/hugepages/hugepages-<kb>kB): the old
 * nr_hugepages, -1 when @n cannot be had, -2 when the machine has no pages of that size. */
long tu_hugepages_reserve_kb(unsigned long kb, long n);
void tu_hugepages_restore_kb(unsigned long kb, long old);

/* Seconds on the monotonic clock. */
double tu_now(void);
/* Sleep @ms milliseconds, through signals. */
void tu_sleep_ms(unsigned ms);
/*
 * Reap @pid within @timeout_ms; kill it if it takes longer. Returns the wait status, or -1 when
 * it had to be killed. Allocates nothing, so it is safe while another thread is inside fork().
 */
int tu_wait_child(pid_t pid, int timeout_ms);
/* Send @len bytes of @buf on the unix socket @sock, with @fd attached unless it is negative:
 * 0, or -1 when not all was sent. */
int tu_send_fd(int sock, int fd, const void *buf, size_t len);
/* Receive @len bytes into @buf and the fd sent with them into *@fd (-1 when none came, close-on-
 * exec): 0, or -1 when fewer bytes came. */
int tu_recv_fd(int sock, int *fd, void *buf, size_t len);

/* ---- one context, its raw registration, a thread blocked on a fault ---- */

/* uffd_open() with @features required, or fail the test. */
struct uffd *tu_open(uint64_t features);
/* UFFDIO_REGISTER straight to the kernel (the context's map does not learn of it), or fail. */
void tu_kernel_register(struct uffd *u, void *addr, size_t len, uint64_t mode);

/* A thread that touches one byte, and blocks there until its fault is resolved. */
struct tu_toucher {
	pthread_t t;
	volatile char *addr;
	bool write;
	char value; /* written, or read */
	_Atomic bool done;
};

/* Start a thread that writes @value to @addr (@write) or reads it into t->value. */
void tu_touch_start(struct tu_toucher *t, void *addr, bool write, char value);
/* Join it; it must have finished its touch. */
void tu_touch_join(struct tu_toucher *t);
/* Read one message (waiting up to 5 s) and check it is a fault at @addr with @flags set. */
struct uffd_msg tu_expect_fault(struct uffd *u, void *addr, uint64_t flags);

#endif
