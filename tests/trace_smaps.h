/* SPDX-License-Identifier: MIT */
/* For uffd-trace's test programs: whether a mapping of their own shows as registered. */
#ifndef TRACE_SMAPS_H
#define TRACE_SMAPS_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/*
 * Whether the mapping that holds @addr is registered with a userfaultfd, in missing mode or in
 * write-protect mode (how uffd-trace registers memory when it may not trap first touches): "um"
 * or "uw" in its VmFlags in /proc/self/smaps. 1, 0, or -1 when smaps cannot be read. The
 * mapping may have been merged with a neighbour: it need not start at @addr.
 */
static inline int smaps_registered(const void *addr)
{
	char line[512], buf[4096];
	bool in = false;
	int found = 0;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return -1;
	/*
	 * Touched before read() fills it: under uffd-trace --user-faults a user-mode-only
	 * userfaultfd makes a system call that writes into untouched registered memory fail with
	 * EFAULT, and stdio's own buffer would be such memory.
	 */
	memset(buf, 0, sizeof(buf));
	setvbuf(f, buf, _IOFBF, sizeof(buf));
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2)
			in = s <= (unsigned long)addr && (unsigned long)addr < e;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			found = strstr(line, " um") || strstr(line, " uw");
			break;
		}
	}
	fclose(f);
	return found;
}

#endif
