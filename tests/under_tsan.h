/* SPDX-License-Identifier: MIT */
/*
 * UNDER_TSAN: 1 in a ThreadSanitizer build (gcc's __SANITIZE_THREAD__, clang's
 * __has_feature(thread_sanitizer)), else 0. Header-only, for the tests and the soak monitor,
 * which links none of the test utilities. (The library keeps its own in src/sys.c.)
 */
#ifndef LIBUFFD_TESTS_UNDER_TSAN_H
#define LIBUFFD_TESTS_UNDER_TSAN_H

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

#endif
