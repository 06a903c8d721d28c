/* SPDX-License-Identifier: MIT */
/* The one message of Firecracker's handler protocol: a JSON array of GuestRegionUffdMapping. */
#include <stdio.h>
#include <string.h>

#include "serve.h"

struct parser {
	const char *s;
	size_t len, pos;
	char *err;
	size_t errlen;
	bool truncated;
};

static bool fail(struct parser *p, const char *what)
{
	if (p->pos >= p->len) {
		p->truncated = true;
		snprintf(p->err, p->errlen, "truncated JSON: the message ends (%zu bytes) where %s",
			 p->len, what);
	} else {
		unsigned char c = (unsigned char)p->s[p->pos];

		if (c >= 0x20 && c < 0x7f)
			snprintf(p->err, p->errlen, "malformed JSON at byte %zu ('%c'): %s", p->pos,
				 c, what);
		else
			snprintf(p->err, p->errlen, "malformed JSON at byte %zu (0x%02x): %s",
				 p->pos, c, what);
	}
	return false;
}

static void skip_ws(struct parser *p)
{
	while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]) && p->s[p->pos])
		p->pos++;
}

static bool expect(struct parser *p, char c, const char *what)
{
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == c) {
		p->pos++;
		return true;
	}
	return fail(p, what);
}

/* A key: plain printable ASCII, no escapes (no key of the protocol needs one). */
static bool key(struct parser *p, char *out, size_t room)
{
	size_t n = 0;

	if (!expect(p, '"', "a key (a string) was expected"))
		return false;
	for (;; p->pos++) {
		if (p->pos >= p->len)
			return fail(p, "a key was not closed");
		if (p->s[p->pos] == '"')
			break;
		if (p->s[p->pos] == '\\' || (unsigned char)p->s[p->pos] < 0x20 ||
		    (unsigned char)p->s[p->pos] >= 0x7f)
			return fail(p, "a key holds an escape or a byte outside printable ASCII");
		if (n + 1 >= room)
			return fail(p, "a key is longer than any key of the protocol");
		out[n++] = p->s[p->pos];
	}
	out[n] = '\0';
	p->pos++;
	return true;
}

/* An unsigned integer as JSON writes it: no sign, fraction, exponent or leading zero. */
static bool number(struct parser *p, uint64_t *out)
{
	uint64_t v = 0;
	size_t start;

	skip_ws(p);
	start = p->pos;
	if (p->pos >= p->len)
		return fail(p, "a value was expected");
	if (p->s[p->pos] < '0' || p->s[p->pos] > '9')
		return fail(p, "a value must be an unsigned integer");
	for (; p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; p->pos++) {
		unsigned d = (unsigned)(p->s[p->pos] - '0');

		if (v > (UINT64_MAX - d) / 10) {
			p->pos = start;
			return fail(p, "a value overflows 64 bits");
		}
		v = v * 10 + d;
	}
	if (p->pos - start > 1 && p->s[start] == '0') {
		p->pos = start;
		return fail(p, "a number has a leading zero");
	}
	if (p->pos < p->len && strchr(".eE-+", p->s[p->pos]) && p->s[p->pos])
		return fail(p, "a value must be an unsigned integer");
	*out = v;
	return true;
}

enum { K_BASE, K_SIZE, K_OFFSET, K_PAGE_SIZE, K_PAGE_SIZE_KIB, NKEYS };
static const char *const keys[NKEYS] = { "base_host_virt_addr", "size", "offset", "page_size",
					 "page_size_kib" };

static bool object(struct parser *p, struct fc_region *r)
{
	uint64_t v[NKEYS];
	bool seen[NKEYS] = { false };
	char k[32];

	if (!expect(p, '{', "an object ('{') was expected"))
		return false;
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == '}')
		return fail(p, "a region is empty");
	for (;;) {
		int i;
		size_t at;

		skip_ws(p);
		at = p->pos;
		if (!key(p, k, sizeof(k)))
			return false;
		for (i = 0; i < NKEYS && strcmp(k, keys[i]) != 0; i++)
			;
		if (i == NKEYS) {
			p->pos = at;
			snprintf(p->err, p->errlen,
				 "malformed JSON at byte %zu: unknown key \"%s\"", at, k);
			return false;
		}
		if (seen[i]) {
			p->pos = at;
			snprintf(p->err, p->errlen,
				 "malformed JSON at byte %zu: the key \"%s\" appears twice", at, k);
			return false;
		}
		if (!expect(p, ':', "':' was expected after a key") || !number(p, &v[i]))
			return false;
		seen[i] = true;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (!expect(p, '}', "',' or '}' was expected"))
			return false;
		break;
	}
	for (int i = 0; i < K_PAGE_SIZE_KIB; i++)
		if (!seen[i]) {
			snprintf(p->err, p->errlen, "a region (ending at byte %zu) has no \"%s\"",
				 p->pos, keys[i]);
			return false;
		}
	/* Deprecated, and it holds bytes despite its name: when given, it must agree. */
	if (seen[K_PAGE_SIZE_KIB] && v[K_PAGE_SIZE_KIB] != v[K_PAGE_SIZE]) {
		snprintf(p->err, p->errlen,
			 "a region's page_size_kib (%llu) differs from its page_size (%llu)",
			 (unsigned long long)v[K_PAGE_SIZE_KIB],
			 (unsigned long long)v[K_PAGE_SIZE]);
		return false;
	}
	r->base = v[K_BASE];
	r->size = v[K_SIZE];
	r->offset = v[K_OFFSET];
	r->page_size = v[K_PAGE_SIZE];
	return true;
}

int fc_parse(const char *msg, size_t len, struct fc_region *regions, size_t max, size_t *count,
	     char *err, size_t errlen)
{
	struct parser p = { .s = msg, .len = len, .err = err, .errlen = errlen };
	size_t n = 0;

	if (!expect(&p, '[', "the message must be a JSON array ('[')"))
		goto bad;
	skip_ws(&p);
	if (p.pos < p.len && p.s[p.pos] == ']') {
		snprintf(err, errlen, "the message names no region (an empty array)");
		return FC_BAD;
	}
	for (;;) {
		if (n == max) {
			snprintf(err, errlen, "the message names more than %zu regions", max);
			return FC_BAD;
		}
		if (!object(&p, &regions[n]))
			goto bad;
		n++;
		skip_ws(&p);
		if (p.pos < p.len && p.s[p.pos] == ',') {
			p.pos++;
			continue;
		}
		if (!expect(&p, ']', "',' or ']' was expected"))
			goto bad;
		break;
	}
	skip_ws(&p);
	if (p.pos != p.len) {
		fail(&p, "the message goes on after the array");
		return FC_BAD;
	}
	*count = n;
	return 0;
bad:
	return p.truncated ? FC_TRUNCATED : FC_BAD;
}
