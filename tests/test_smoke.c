/* SPDX-License-Identifier: MIT */
/* Smoke test: the library links and reports its version. */
#include <string.h>
#include <uffd.h>
#include "testutil.h"

/* UFFD_PROJECT_VERSION: project()'s version, the one place it is written (tests/CMakeLists.txt). */
START_TEST(version)
{
	ck_assert_str_eq(uffd_version(), UFFD_PROJECT_VERSION);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smoke");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, version);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
