/* SPDX-License-Identifier: MIT */
/*
 * Consumer test program for libuffd-http: built against the installed library only. Makes a
 * source for a port where nothing listens on 127.0.0.1, reads from it (refused at once, no
 * retry) and prints which libuffd-http it loaded.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <uffd_http.h>

int main(void)
{
	struct uffd_http_config cfg = { .url = "http://127.0.0.1:1/image?sig=x",
					.flags = UFFD_HTTP_NO_RETRY };
	struct uffd_http_stats st;
	struct uffd_source *src;
	char buf[4096], line[4096];
	const char *found = "static";
	FILE *f;
	int err;

	err = uffd_http_source(&src, &cfg);
	if (err) {
		fprintf(stderr, "uffd_http_source: %s\n", strerror(-err));
		return 1;
	}
	err = uffd_source_read(src, buf, sizeof(buf), 0);
	if (uffd_http_get_stats(src, &st) || st.requests != 1)
		return 1;
	uffd_source_close(src);
	if (err != -ECONNREFUSED) {
		fprintf(stderr, "read: %d, expected -ECONNREFUSED\n", err);
		return 1;
	}
	f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');

		if (path && strstr(path, "/libuffd-http.so")) {
			path[strcspn(path, "\n")] = '\0';
			found = path;
			break;
		}
	}
	printf("libuffd-http refused as expected, loaded %s\n", found);
	if (f)
		fclose(f);
	return 0;
}
