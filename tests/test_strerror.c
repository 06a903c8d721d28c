/* SPDX-License-Identifier: MIT */
/* uffd_strerror() has a sentence of its own for every errno that uffd.h documents. The header is
 * read at run time, so documenting a new errno without a sentence fails this test. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uffd.h>
#include "testutil.h"

#ifndef UFFD_PUBLIC_HEADER
#error "UFFD_PUBLIC_HEADER must name include/uffd.h (tests/CMakeLists.txt sets it)"
#endif

#define MAX_CODES 64

/* Codes the 0.2 contract names that the header may not document yet. */
static const int extra[] = { EDEADLK, ECHILD };

struct code {
	char name[32];
	int value;
};

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);

	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_ptr_nonnull(buf);
	for (;;) {
		size_t r;

		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			ck_assert_ptr_nonnull(buf);
		}
		r = fread(buf + n, 1, cap - 1 - n, f);
		if (r == 0)
			break;
		n += r;
	}
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/* The errno whose name is @name, from the C library's own table; 0 if none. */
static int errno_by_name(const char *name)
{
	int e;

	for (e = 1; e < 4096; e++) {
		const char *n = strerrorname_np(e);

		if (n && strcmp(n, name) == 0)
			return e;
	}
	return 0;
}

static int is_upper_or_digit(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_word_char(char c)
{
	return is_upper_or_digit(c) || (c >= 'a' && c <= 'z') || c == '_';
}

/* Every distinct `-EXXX` token of @text, in order of first appearance. */
static int scan_codes(const char *text, struct code *out, int max)
{
	const char *p = text;
	int n = 0, i;

	while ((p = strstr(p, "-E")) != NULL) {
		const char *s = p + 1, *e = s + 1;
		size_t len;

		p += 2;
		if (s - 2 >= text && is_word_char(s[-2]))
			continue;
		while (is_upper_or_digit(*e))
			e++;
		len = (size_t)(e - s);
		if (len < 3 || len >= sizeof(out[0].name))
			continue;
		for (i = 0; i < n; i++)
			if (strlen(out[i].name) == len && !memcmp(out[i].name, s, len))
				break;
		if (i < n)
			continue;
		ck_assert_int_lt(n, max);
		memcpy(out[n].name, s, len);
		out[n].name[len] = '\0';
		out[n].value = errno_by_name(out[n].name);
		ck_assert_msg(out[n].value > 0, "uffd.h documents -%s, which is not an errno name",
			      out[n].name);
		n++;
	}
	return n;
}

START_TEST(every_documented_errno_has_a_sentence)
{
	static struct code codes[MAX_CODES];
	const char *generic = uffd_strerror(-99999);
	char *text = read_all(UFFD_PUBLIC_HEADER);
	int n = scan_codes(text, codes, MAX_CODES - 2), i, j, k, m;

	free(text);
#ifdef UFFD_HTTP_HEADER
	/* libuffd-http's errors reach users through the same uffd_strerror(). */
	{
		static struct code more[MAX_CODES];

		text = read_all(UFFD_HTTP_HEADER);
		m = scan_codes(text, more, MAX_CODES);
		free(text);
		for (k = 0; k < m; k++) {
			for (j = 0; j < n && codes[j].value != more[k].value; j++)
				;
			if (j == n && n < MAX_CODES - 2)
				codes[n++] = more[k];
		}
	}
#else
	(void)k, (void)m;
#endif
	/* The header documents far more than this; fewer means the scan is broken. */
	ck_assert_int_ge(n, 12);
	for (i = 0; i < (int)(sizeof(extra) / sizeof(extra[0])); i++) {
		for (j = 0; j < n && codes[j].value != extra[i]; j++)
			;
		if (j == n) {
			snprintf(codes[n].name, sizeof(codes[n].name), "%s",
				 strerrorname_np(extra[i]));
			codes[n++].value = extra[i];
		}
	}
	printf("strerror: %d codes documented in uffd.h, uffd_http.h or named by the contract\n",
	       n);
	for (i = 0; i < n; i++) {
		const char *s = uffd_strerror(-codes[i].value);

		ck_assert_ptr_nonnull(s);
		ck_assert_msg(s != generic && strcmp(s, generic) != 0,
			      "-%s has no sentence of its own: \"%s\"", codes[i].name, s);
		ck_assert_msg(strlen(s) > 20 && s[strlen(s) - 1] == '.',
			      "-%s: \"%s\" is not a sentence", codes[i].name, s);
		ck_assert_ptr_eq(uffd_strerror(codes[i].value), s);
		for (j = 0; j < i; j++)
			ck_assert_msg(strcmp(uffd_strerror(-codes[j].value), s) != 0,
				      "-%s and -%s share a sentence", codes[j].name, codes[i].name);
	}
}
END_TEST

/* The scan finds what a header line documents, and nothing inside other words. */
START_TEST(scan_finds_codes)
{
	struct code c[8];
	int n = scan_codes(" * -EDEADLK: (-ENOSPC, non-EXACT, -EFAULT); ON-EXIT; -ENOSPC.", c, 8);

	ck_assert_int_eq(n, 3);
	ck_assert_str_eq(c[0].name, "EDEADLK");
	ck_assert_int_eq(c[0].value, EDEADLK);
	ck_assert_str_eq(c[1].name, "ENOSPC");
	ck_assert_str_eq(c[2].name, "EFAULT");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("strerror");
	TCase *tc = tu_tcase("sentences", 10, NULL, NULL);

	tcase_add_test(tc, scan_finds_codes);
	tcase_add_test(tc, every_documented_errno_has_a_sentence);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
