/* SPDX-License-Identifier: MIT */
/* uffd-bench: libuffd against hand-written raw loops, as ratios of interleaved paired runs. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [--quick | --smoke] [--pairs N] [--cpus MODES] [--cpu N]\n"
		"          [--only FIGURE,...] [--verbose]\n"
		"\n"
		"Runs each figure as interleaved pairs (libuffd, then the hand-written raw loop)\n"
		"and prints the median ratio lib/raw with its min and max.\n"
		"\n"
		"  --quick       smaller sizes, 5 pairs (about 2 minutes)\n"
		"  --smoke       tiny sizes, 1 pair: proves the benchmark runs; figures mean nothing\n"
		"  --pairs N     pairs per figure (default 7; at least 5 for a reported figure)\n"
		"  --cpus MODES  where threads run, a list of: any (unpinned), one (all on one CPU),\n"
		"                split (fault handler on one CPU, faulting threads on another);\n"
		"                default every = any,one,split\n"
		"  --cpu N       the CPU of single-CPU runs and of the faulting side of split runs\n"
		"                (default: the last one); split handlers run on the next one\n"
		"  --only LIST   figures: wholerun,fault,threads,beat,munmap,decode,rangemap,children,\n"
		"                callgrind,scale,readers\n"
		"  --verbose     print every pair on stderr\n",
		argv0);
}

static void defaults(bool quick, bool smoke)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	opt.pairs = 7;
	opt.mem_pages = (64u << 20) / page_size;
	opt.munmaps = 500;
	opt.decode_n = 1000000;
	opt.lookups = 1000000;
	opt.churns = 5000;
	opt.map_sizes[0] = 10;
	opt.map_sizes[1] = 1000;
	opt.map_sizes[2] = 100000;
	opt.children = 64;
	opt.child_pages = 1000;
	opt.cg_faults = 2000;
	opt.cpu = ncpu > 1 ? (int)ncpu - 1 : 0;
	opt.do_unpinned = opt.do_pinned = opt.do_split = true;
	if (quick) {
		opt.pairs = 5;
		opt.mem_pages = (16u << 20) / page_size;
		opt.munmaps = 200;
		opt.decode_n = 200000;
		opt.lookups = 200000;
		opt.churns = 1000;
		opt.child_pages = 250;
		opt.cg_faults = 500;
	}
	if (smoke) {
		opt.pairs = 1;
		opt.mem_pages = 64;
		opt.munmaps = 10;
		opt.decode_n = 1000;
		opt.lookups = 1000;
		opt.churns = 10;
		opt.map_sizes[1] = 100;
		opt.map_sizes[2] = 1000;
		opt.children = 4;
		opt.child_pages = 16;
		opt.cg_faults = 0;
	}
}

static void print_machine(void)
{
	struct utsname un;
	char model[256] = "?", line[512];
	double load[3] = { 0 };
	FILE *f = fopen("/proc/cpuinfo", "r");
	bool vm = false;
	time_t t = time(NULL);
	char when[64];

	if (f) {
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, "model name", 10) == 0 && model[0] == '?') {
				char *c = strchr(line, ':');

				if (c) {
					snprintf(model, sizeof(model), "%s", c + 2);
					model[strcspn(model, "\n")] = '\0';
				}
			}
			if (strncmp(line, "flags", 5) == 0 && strstr(line, " hypervisor"))
				vm = true;
		}
		fclose(f);
	}
	uname(&un);
	getloadavg(load, 3);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M %Z", localtime(&t));
	printf("uffd-bench: libuffd %s, %s\n", uffd_version(), when);
	printf("machine: %s %s, %ld x %s%s, load %.2f %.2f %.2f\n", un.sysname, un.release,
	       sysconf(_SC_NPROCESSORS_ONLN), model, vm ? " (virtual machine)" : "", load[0],
	       load[1], load[2]);
	printf("runs: %d pairs per figure after 1 warm-up pair; in a pair A = libuffd and B = the "
	       "raw loop run at once,\n      their work interleaved in chunks (A B B A ...); a "
	       "pair's ratio is the median chunk ratio\ncpus: any = unpinned, 1 CPU = all on CPU "
	       "%d, split = handlers on CPU %d and faulting threads on CPU %d\n\n",
	       opt.pairs, opt.cpu, opt.other_cpu, opt.cpu);
}

int main(int argc, char **argv)
{
	bool quick = false, smoke = false;
	int pairs = 0, cpu = -1;
	const char *cpus = "every", *only = NULL;
	bool verbose = false;
	static char exe_dir[PATH_MAX];
	ssize_t n;

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			quick = true;
		} else if (!strcmp(a, "--smoke")) {
			smoke = true;
		} else if (!strcmp(a, "--pairs") && i + 1 < argc) {
			pairs = atoi(argv[++i]);
		} else if (!strcmp(a, "--cpus") && i + 1 < argc) {
			cpus = argv[++i];
		} else if (!strcmp(a, "--cpu") && i + 1 < argc) {
			cpu = atoi(argv[++i]);
		} else if (!strcmp(a, "--only") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			verbose = true;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout, argv[0]);
			return 0;
		} else {
			usage(stderr, argv[0]);
			return 2;
		}
	}
	defaults(quick, smoke);
	if (pairs) {
		if (pairs > 64)
			die("--pairs: at most 64");
		opt.pairs = pairs;
	}
	if (opt.pairs < 5 && !smoke)
		fprintf(stderr, "uffd-bench: fewer than 5 pairs: not a reportable figure\n");
	if (cpu >= 0)
		opt.cpu = cpu;
	{
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		opt.other_cpu = ncpu > 1 ? (opt.cpu + 1) % (int)ncpu : opt.cpu;
	}
	opt.do_unpinned = strstr(cpus, "any") != NULL;
	opt.do_pinned = strstr(cpus, "one") != NULL;
	opt.do_split = strstr(cpus, "split") != NULL;
	if (!strcmp(cpus, "every"))
		opt.do_unpinned = opt.do_pinned = opt.do_split = true;
	if (!opt.do_unpinned && !opt.do_pinned && !opt.do_split)
		die("--cpus: every, or a list of any, one, split");
	opt.only = only;
	opt.verbose = verbose;
	opt.smoke = smoke;
	opt.quick = quick;
	n = readlink("/proc/self/exe", exe_dir, sizeof(exe_dir) - 1);
	if (n > 0) {
		exe_dir[n] = '\0';
		*strrchr(exe_dir, '/') = '\0';
	} else {
		snprintf(exe_dir, sizeof(exe_dir), ".");
	}
	opt.exe_dir = exe_dir;

	{
		struct uffd *u;
		int ret = uffd_open(&u, NULL);

		if (ret < 0) {
			fprintf(stderr, "uffd-bench: cannot open a userfaultfd: %s\n",
				uffd_strerror(ret));
			return 77;
		}
		uffd_close(u);
	}
	print_machine();
	if (smoke)
		printf("smoke run: tiny sizes, one pair; the figures below mean nothing\n\n");
	row_print_header();
	if (want("wholerun"))
		fig_wholerun();
	if (want("fault"))
		fig_faults();
	if (want("threads"))
		fig_threads();
	if (want("beat"))
		fig_latency();
	if (want("munmap"))
		fig_munmap();
	if (want("decode"))
		fig_decode();
	if (want("rangemap"))
		fig_rangemap();
	if (want("children"))
		fig_children();
	if (want("callgrind") && opt.cg_faults)
		fig_callgrind();
	if (want("scale"))
		fig_scale();
	if (want("readers"))
		fig_readers();
	summary_print();
	{
		double load[3] = { 0 };

		getloadavg(load, 3);
		printf("\nload at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
	}
	return 0;
}
