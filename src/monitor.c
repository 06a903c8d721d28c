/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "internal.h"

/* TEMPORARY STUB */
int uffd_monitor_new(struct uffd_monitor **o) { (void)o; return -ENOSYS; }
void uffd_monitor_free(struct uffd_monitor *m) { (void)m; }
int uffd_monitor_add(struct uffd_monitor *m, struct uffd *u) { (void)m; (void)u; return -ENOSYS; }
int uffd_monitor_watch_pid(struct uffd_monitor *m, struct uffd *u, pid_t p) { (void)m; (void)u; (void)p; return -ENOSYS; }
int uffd_monitor_run(struct uffd_monitor *m, int t) { (void)m; (void)t; return -ENOSYS; }
int uffd_monitor_stop(struct uffd_monitor *m) { (void)m; return -ENOSYS; }
int uffd_monitor_fd(const struct uffd_monitor *m) { (void)m; return -ENOSYS; }
int uffd_monitor_count(const struct uffd_monitor *m) { (void)m; return -ENOSYS; }
int uffd_monitor_adopt_child(struct uffd_monitor *m, struct uffd *c) { (void)m; (void)c; return -ENOSYS; }
void uffd_monitor_forget(struct uffd_monitor *m, struct uffd *u) { (void)m; (void)u; }
