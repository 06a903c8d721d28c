/* SPDX-License-Identifier: MIT */
/* SHA-256 (FIPS 180-4): the library's (the manifest check of uffd_serve()) and the tools' (their
 * SHA-256 lines), one implementation compiled into both. Hidden: libuffd exports no hash. */
#ifndef UFFD_SHA256_H
#define UFFD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifndef UFFD_HIDDEN
#define UFFD_HIDDEN __attribute__((visibility("hidden")))
#endif

#define UFFD_SHA256_LEN 32

struct uffd_sha256 {
	uint32_t h[8];
	uint64_t bytes; /* message length so far */
	unsigned char block[64];
	size_t fill; /* bytes waiting in block */
};

UFFD_HIDDEN void uffd_sha256_init(struct uffd_sha256 *s);
UFFD_HIDDEN void uffd_sha256_update(struct uffd_sha256 *s, const void *data, size_t len);
UFFD_HIDDEN void uffd_sha256_final(struct uffd_sha256 *s, unsigned char digest[UFFD_SHA256_LEN]);
UFFD_HIDDEN void uffd_sha256(const void *data, size_t len, unsigned char digest[UFFD_SHA256_LEN]);

#endif /* UFFD_SHA256_H */
