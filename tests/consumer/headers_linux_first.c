/* SPDX-License-Identifier: MIT */
/* Header test: <linux/userfaultfd.h> before <uffd.h> compiles (as C and as C++). */
#include <linux/userfaultfd.h>
#include <uffd.h>
#include <linux/userfaultfd.h>

int headers_linux_first(void);
int headers_linux_first(void)
{
	struct uffdio_move m;

	m.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;

	return (int)m.mode + (int)(UFFDIO_POISON != 0) + (int)UFFD_FEATURE_WP_ASYNC;
}
