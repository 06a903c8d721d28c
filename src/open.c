/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB: replaced by the real open.c. */
int uffd_open(struct uffd **out, const struct uffd_config *cfg) { (void)out; (void)cfg; return -ENOSYS; }
int uffd_adopt(struct uffd **out, int fd, const struct uffd_config *cfg) { (void)out; (void)fd; (void)cfg; return -ENOSYS; }
int uffd_probe(uint64_t *f, uint64_t *i) { (void)f; (void)i; return -ENOSYS; }
int uffd_probe_cached(uint64_t *f, uint64_t *i) { (void)f; (void)i; return -ENOSYS; }
const char *uffd_feature_name(uint64_t bit) { (void)bit; return 0; }
const char *uffd_feature_since(uint64_t bit) { (void)bit; return 0; }
const char *uffd_ioctl_name(unsigned nr) { (void)nr; return 0; }
const char *uffd_strerror(int err) { (void)err; return "stub"; }
const char *uffd_version(void) { return UFFD_VERSION_STRING; }
