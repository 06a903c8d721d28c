/* SPDX-License-Identifier: MIT */
/* uffd-probe: what this kernel's userfaultfd offers, and whether and how this user may open it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common.h"

static const char usage_line[] = "usage: uffd-probe [--json] [--help] [--version]";

/*
 * The Linux release that added each ioctl, by number. libuffd names the ioctls but has no
 * table of releases for them (it has one for features: uffd_feature_since()).
 */
static const char *ioctl_since(unsigned nr)
{
	static const char *const since[] = {
		[_UFFDIO_REGISTER] = "4.3",	[_UFFDIO_UNREGISTER] = "4.3",
		[_UFFDIO_WAKE] = "4.3",		[_UFFDIO_COPY] = "4.3",
		[_UFFDIO_ZEROPAGE] = "4.3",	[_UFFDIO_MOVE] = "6.8",
		[_UFFDIO_WRITEPROTECT] = "5.7", [_UFFDIO_CONTINUE] = "5.13",
		[_UFFDIO_POISON] = "6.6",
	};

	if (nr == _UFFDIO_API)
		return "4.3";
	return nr < sizeof(since) / sizeof(since[0]) ? since[nr] : NULL;
}

static void help(void)
{
	printf("%s\n\n"
	       "Print the userfaultfd features and ioctls the running kernel offers, by name and\n"
	       "with the Linux release that added each, and whether this user may open a\n"
	       "userfaultfd: with the defaults, through the userfaultfd(2) syscall only, through\n"
	       "/dev/userfaultfd only, with UFFD_OPEN_KERNEL_FAULTS, with EVENT_FORK required, and\n"
	       "with every feature optional.\n"
	       "Each attempt that fails says what to change.\n\n"
	       "  -j, --json     print one JSON object instead of text\n"
	       "  -h, --help     print this help and exit\n"
	       "  -V, --version  print the libuffd version and exit\n\n"
	       "Exit status: 0 when the kernel was probed and the default open works, 1 when not,\n"
	       "2 on a usage error.\n",
	       usage_line);
}

/* One way of opening a userfaultfd, and how it went. */
struct attempt {
	const char *key;  /* stable name for --json */
	const char *what; /* for people */
	struct uffd_config cfg;
	bool use_cfg; /* false: pass NULL, the documented "all defaults" */
	int rc;
	uint64_t granted;
};

struct sysinfo {
	struct utsname uts;
	long unprivileged; /* vm.unprivileged_userfaultfd, or -1 if unreadable */
	bool dev_exists;
	struct stat dev;
	bool dev_usable; /* read/write access for this user */
};

struct report {
	int probe_rc;
	uint64_t features, ioctls;
	uint64_t known; /* every feature bit libuffd can name */
	struct sysinfo sys;
	struct attempt att[6];
	size_t natt;
};

/* The codes uffd_open() and uffd_probe() document, by name; NULL for anything else. */
static const char *errno_name(int err)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {
		{ EPERM, "EPERM" },   { EACCES, "EACCES" }, { EOPNOTSUPP, "EOPNOTSUPP" },
		{ ENOSYS, "ENOSYS" }, { EINVAL, "EINVAL" }, { EMFILE, "EMFILE" },
		{ ENFILE, "ENFILE" }, { ENOMEM, "ENOMEM" }, { ENOENT, "ENOENT" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == (err < 0 ? -err : err))
			return names[i].name;
	return NULL;
}

static long read_sysctl(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static void gather(struct report *r)
{
	struct sysinfo *s = &r->sys;
	struct attempt *a = r->att;

	memset(r, 0, sizeof(*r));
	if (uname(&s->uts) != 0)
		memset(&s->uts, 0, sizeof(s->uts));
	s->unprivileged = read_sysctl("/proc/sys/vm/unprivileged_userfaultfd");
	s->dev_exists = stat("/dev/userfaultfd", &s->dev) == 0;
	s->dev_usable = s->dev_exists && access("/dev/userfaultfd", R_OK | W_OK) == 0;

	r->probe_rc = uffd_probe(&r->features, &r->ioctls);
	if (r->probe_rc < 0)
		r->features = r->ioctls = 0;
	for (unsigned i = 0; i < 64; i++)
		if (uffd_feature_name(UINT64_C(1) << i))
			r->known |= UINT64_C(1) << i;

	a[0] = (struct attempt){ .key = "default", .what = "default (user-mode faults only)" };
	a[1] = (struct attempt){
		.key = "syscall_only",
		.what = "UFFD_OPEN_SYSCALL_ONLY (through the userfaultfd(2) syscall)",
		.cfg.flags = UFFD_OPEN_SYSCALL_ONLY,
		.use_cfg = true
	};
	a[2] = (struct attempt){ .key = "device_only",
				 .what = "UFFD_OPEN_DEVICE_ONLY (through /dev/userfaultfd)",
				 .cfg.flags = UFFD_OPEN_DEVICE_ONLY,
				 .use_cfg = true };
	a[3] = (struct attempt){ .key = "kernel_faults",
				 .what = "UFFD_OPEN_KERNEL_FAULTS (kernel-mode faults too)",
				 .cfg.flags = UFFD_OPEN_KERNEL_FAULTS,
				 .use_cfg = true };
	a[4] = (struct attempt){ .key = "event_fork",
				 .what = "EVENT_FORK required (follows fork children)",
				 .cfg.required = UFFD_FEATURE_EVENT_FORK,
				 .use_cfg = true };
	a[5] = (struct attempt){ .key = "all_optional",
				 .what = "every known feature optional",
				 .cfg.optional = r->known,
				 .use_cfg = true };
	r->natt = 6;

	for (size_t i = 0; i < r->natt; i++) {
		struct uffd *u = NULL;

		a[i].rc = uffd_open(&u, a[i].use_cfg ? &a[i].cfg : NULL);
		if (a[i].rc == 0) {
			a[i].granted = uffd_features(u);
			uffd_close(u);
		}
	}
}

/* Print @text wrapped at 100 columns; @col is where the cursor is, @indent where lines start. */
static void print_wrapped(const char *text, size_t col, size_t indent)
{
	const size_t width = 100;

	while (*text) {
		size_t word = strcspn(text, " ");

		if (col > indent && col + 1 + word > width) {
			printf("\n%*s", (int)indent, "");
			col = indent;
		} else if (col > indent) {
			putchar(' ');
			col++;
		}
		printf("%.*s", (int)word, text);
		col += word;
		text += word;
		text += strspn(text, " ");
	}
	putchar('\n');
}

static void print_text(const struct report *r)
{
	const struct sysinfo *s = &r->sys;

	printf("libuffd %s on Linux %s (%s), uid %u, euid %u\n\n", uffd_version(), s->uts.release,
	       s->uts.machine, (unsigned)getuid(), (unsigned)geteuid());

	if (r->probe_rc < 0) {
		printf("The kernel could not be probed: %s (%s)\n\n", uffd_strerror(r->probe_rc),
		       errno_name(r->probe_rc) ? errno_name(r->probe_rc) : "?");
	} else {
		printf("Features the kernel offers (UFFDIO_API answered 0x%" PRIx64 "):\n",
		       r->features);
		for (unsigned i = 0; i < 64; i++) {
			uint64_t bit = UINT64_C(1) << i;
			const char *name = uffd_feature_name(bit);
			const char *since = uffd_feature_since(bit);

			if (!name && !(r->features & bit))
				continue;
			if (name)
				printf("  %-3s  %-20s since %s\n",
				       (r->features & bit) ? "yes" : "no", name,
				       since ? since : "?");
			else
				printf("  yes  bit %-2u (0x%" PRIx64 ")  unknown to libuffd %s\n",
				       i, bit, uffd_version());
		}
		printf("\nioctls on a registered range (0x%" PRIx64 "):\n", r->ioctls);
		for (unsigned nr = 0; nr < 64; nr++) {
			uint64_t bit = UINT64_C(1) << nr;
			const char *name = uffd_ioctl_name(nr);

			if (!name && !(r->ioctls & bit))
				continue;
			if (name)
				printf("  %-3s  %-20s since %s\n", (r->ioctls & bit) ? "yes" : "no",
				       name, ioctl_since(nr));
			else
				printf("  yes  ioctl 0x%02x  unknown to libuffd %s\n", nr,
				       uffd_version());
		}
		putchar('\n');
	}

	printf("This system:\n  vm.unprivileged_userfaultfd = ");
	if (s->unprivileged < 0)
		printf("(not present)\n");
	else
		printf("%ld%s\n", s->unprivileged,
		       s->unprivileged ? " (anyone may trap kernel-mode faults)" :
					 " (kernel-mode faults need CAP_SYS_PTRACE)");
	if (s->dev_exists)
		printf("  /dev/userfaultfd: mode %04o, owner %u:%u, %s for this user\n",
		       (unsigned)(s->dev.st_mode & 07777), (unsigned)s->dev.st_uid,
		       (unsigned)s->dev.st_gid, s->dev_usable ? "usable" : "not usable");
	else
		printf("  /dev/userfaultfd: absent (Linux 6.1 added it)\n");

	printf("\nOpening a userfaultfd as this user:\n");
	for (size_t i = 0; i < r->natt; i++) {
		const struct attempt *a = &r->att[i];

		if (a->rc == 0) {
			printf("  OK    %s", a->what);
			if (a->cfg.optional || a->cfg.required)
				printf(": granted 0x%" PRIx64, a->granted);
			putchar('\n');
		} else {
			const char *en = errno_name(a->rc);
			int col;

			printf("  FAIL  %s\n        ", a->what);
			if (en)
				col = printf("%s:", en);
			else
				col = printf("error %d:", a->rc);
			print_wrapped(uffd_strerror(a->rc), 8 + (size_t)col, 8);
		}
	}
}

static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* Bit masks as hex strings: the ioctl mask uses bit 63, beyond what JSON numbers keep exact. */
static void json_hex(uint64_t v)
{
	printf("\"0x%" PRIx64 "\"", v);
}

static void json_error(int rc)
{
	fputs("\"ok\": ", stdout);
	fputs(rc == 0 ? "true" : "false", stdout);
	printf(", \"errno\": %d, \"errno_name\": ", rc < 0 ? -rc : 0);
	json_str(rc < 0 ? errno_name(rc) : NULL);
	fputs(", \"error\": ", stdout);
	json_str(rc < 0 ? uffd_strerror(rc) : NULL);
}

static void print_json(const struct report *r)
{
	const struct sysinfo *s = &r->sys;
	const char *sep = "";

	fputs("{\n  \"libuffd\": ", stdout);
	json_str(uffd_version());
	fputs(",\n  \"kernel\": {\"release\": ", stdout);
	json_str(s->uts.release);
	fputs(", \"machine\": ", stdout);
	json_str(s->uts.machine);
	printf("},\n  \"uid\": %u, \"euid\": %u,\n", (unsigned)getuid(), (unsigned)geteuid());

	fputs("  \"probe\": {", stdout);
	json_error(r->probe_rc);
	fputs(", \"features\": ", stdout);
	json_hex(r->features);
	fputs(", \"ioctls\": ", stdout);
	json_hex(r->ioctls);
	fputs("},\n", stdout);

	fputs("  \"features\": [", stdout);
	for (unsigned i = 0; i < 64; i++) {
		uint64_t bit = UINT64_C(1) << i;
		const char *name = uffd_feature_name(bit);

		if (!name && !(r->features & bit))
			continue;
		printf("%s\n    {\"name\": ", sep);
		json_str(name);
		fputs(", \"bit\": ", stdout);
		json_hex(bit);
		fputs(", \"since\": ", stdout);
		json_str(uffd_feature_since(bit));
		printf(", \"offered\": %s}", (r->features & bit) ? "true" : "false");
		sep = ",";
	}
	fputs("\n  ],\n  \"ioctls\": [", stdout);
	sep = "";
	for (unsigned nr = 0; nr < 64; nr++) {
		uint64_t bit = UINT64_C(1) << nr;
		const char *name = uffd_ioctl_name(nr);

		if (!name && !(r->ioctls & bit))
			continue;
		printf("%s\n    {\"name\": ", sep);
		json_str(name);
		printf(", \"nr\": %u, \"since\": ", nr);
		json_str(ioctl_since(nr));
		printf(", \"offered\": %s}", (r->ioctls & bit) ? "true" : "false");
		sep = ",";
	}

	printf("\n  ],\n  \"system\": {\"unprivileged_userfaultfd\": ");
	if (s->unprivileged < 0)
		fputs("null", stdout);
	else
		printf("%ld", s->unprivileged);
	printf(", \"dev_userfaultfd\": ");
	if (s->dev_exists)
		printf("{\"mode\": %u, \"uid\": %u, \"gid\": %u, \"usable\": %s}",
		       (unsigned)(s->dev.st_mode & 07777), (unsigned)s->dev.st_uid,
		       (unsigned)s->dev.st_gid, s->dev_usable ? "true" : "false");
	else
		fputs("null", stdout);

	fputs("},\n  \"open\": [", stdout);
	sep = "";
	for (size_t i = 0; i < r->natt; i++) {
		const struct attempt *a = &r->att[i];

		printf("%s\n    {\"mode\": ", sep);
		json_str(a->key);
		fputs(", \"description\": ", stdout);
		json_str(a->what);
		printf(", \"flags\": %u, \"required\": ", a->cfg.flags);
		json_hex(a->cfg.required);
		fputs(", \"optional\": ", stdout);
		json_hex(a->cfg.optional);
		fputs(", ", stdout);
		json_error(a->rc);
		fputs(", \"granted\": ", stdout);
		json_hex(a->granted);
		putchar('}');
		sep = ",";
	}
	fputs("\n  ]\n}\n", stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct report r;
	bool json = false;
	int c;

	tool_init("uffd-probe", usage_line);
	while ((c = getopt_long(argc, argv, ":jhV", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	tool_no_operands(argc, argv);

	gather(&r);
	if (json)
		print_json(&r);
	else
		print_text(&r);
	if (fflush(stdout) != 0 || ferror(stdout))
		tool_die("writing the report failed: %s", strerror(errno));
	return (r.probe_rc == 0 && r.att[0].rc == 0) ? 0 : 1;
}
