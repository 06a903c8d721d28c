/* SPDX-License-Identifier: MIT */
/* Consumer test program (C): built against the installed libuffd; prints its version and path. */
#include <stdio.h>
#include <string.h>

#include <uffd.h>

/* <uffd.h> alone must make the kernel ABI up to Linux 6.18 visible, even on older headers. */
_Static_assert(UFFD_FEATURE_MOVE == (1 << 16), "UFFD_FEATURE_MOVE");
_Static_assert(UFFD_FEATURE_POISON == (1 << 14), "UFFD_FEATURE_POISON");
_Static_assert(sizeof(struct uffdio_move) == 40, "struct uffdio_move");
_Static_assert(UFFD_EVT_UNMAP == UFFD_EVENT_UNMAP, "event codes");

/* Which libuffd shared object the dynamic loader chose, or "static" when none is mapped. */
static void print_origin(void)
{
	char line[4096];
	FILE *f = fopen("/proc/self/maps", "r");
	const char *found = NULL;

	while (f && fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');

		if (path && strstr(path, "/libuffd.so")) {
			path[strcspn(path, "\n")] = '\0';
			found = path;
			break;
		}
	}
	printf("loaded %s\n", found ? found : "static");
	if (f)
		fclose(f);
}

int main(void)
{
	const char *v = uffd_version();
	struct uffd_config cfg = { .optional = UFFD_FEATURE_EVENT_UNMAP };

	(void)cfg;
	if (!v || !*v || !uffd_strerror(-1)) {
		fprintf(stderr, "uffd_version() or uffd_strerror() returned nothing\n");
		return 1;
	}
	printf("libuffd %s\n", v);
	print_origin();
	return 0;
}
