/* SPDX-License-Identifier: MIT */
/*
 * The HTTP source page (docs/http.md): a source for an image in object storage, with a token,
 * a presigned URL and a CA file, and what a read says when the server is not there. Run here
 * against a port of 127.0.0.1 where nothing listens: the read is refused after its retries.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <uffd_http.h>

int main(void)
{
	/* [config] */
	static const char *const headers[] = { "Authorization: Bearer <token>", NULL };
	struct uffd_http_config cfg = {
		/* A presigned URL: the query string goes out untouched. */
		.url = "http://127.0.0.1:1/snapshots/vm.mem?X-Amz-Expires=900&X-Amz-Signature=abc",
		.headers = headers,
		.ca_file = NULL,   /* or the PEM of a private CA, for https:// */
		.connections = 16, /* ranges in flight at once */
		.timeout_ms = 2000,
		.retries = 2, /* waits of 50 and 100 ms between attempts */
	};
	struct uffd_source *src;
	int err = uffd_http_source(&src, &cfg);
	/* [config] */
	char page[4096];
	struct uffd_http_stats st;

	if (err) {
		fprintf(stderr, "uffd_http_source: %s\n", strerror(-err));
		return 1;
	}
	/* [read] */
	err = uffd_source_read(src, page, sizeof(page), 0);
	if (err == -ECONNREFUSED || err == -ETIMEDOUT || err == -EIO)
		fprintf(stderr, "the image server failed: %s\n", strerror(-err));
	uffd_http_get_stats(src, &st);
	printf("requests=%llu retries=%llu failed=%llu\n", (unsigned long long)st.requests,
	       (unsigned long long)st.retries, (unsigned long long)st.failed);
	uffd_source_close(src);
	/* [read] */
	return err == -ECONNREFUSED && st.requests == 3 && st.retries == 2 ? 0 : 1;
}
