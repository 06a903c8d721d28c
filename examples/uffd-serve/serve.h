/* SPDX-License-Identifier: MIT */
/* uffd-serve's parts: the protocol's message. */
#ifndef UFFD_SERVE_TOOL_H
#define UFFD_SERVE_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One GuestRegionUffdMapping: guest memory at @base in the VMM, @size bytes, served from byte
 * @offset of the image, in pages of @page_size bytes. */
struct fc_region {
	uint64_t base, size, offset, page_size;
};

/* fc_parse()'s errors: the message is not what the protocol sends, or it ends too early. */
#define FC_BAD (-1)
#define FC_TRUNCATED (-2)

/* Parse the message: a JSON array of objects whose keys are base_host_virt_addr, size, offset,
 * page_size (each once, all required) and the deprecated page_size_kib (optional, equal to
 * page_size), each an unsigned integer, and nothing else. Returns 0 with the regions in
 * @regions (at most @max) and their number in @count, or FC_BAD / FC_TRUNCATED with a sentence
 * in @err. Values are not checked here. */
int fc_parse(const char *msg, size_t len, struct fc_region *regions, size_t max, size_t *count,
	     char *err, size_t errlen);

#endif /* UFFD_SERVE_TOOL_H */
