/* SPDX-License-Identifier: MIT */
/* Header test: <uffd.h> before <linux/userfaultfd.h> compiles (as C and as C++). */
#include <uffd.h>
#include <linux/userfaultfd.h>
#include <uffd.h>

int headers_uffd_first(void);
int headers_uffd_first(void)
{
	struct uffdio_poison p;

	p.mode = UFFDIO_POISON_MODE_DONTWAKE;

	return (int)p.mode + (int)(UFFDIO_MOVE != 0) + (int)UFFD_USER_MODE_ONLY;
}
