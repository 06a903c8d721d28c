/* SPDX-License-Identifier: MIT */
/* dirty-track: which pages a workload writes in each interval, by write-protect faults. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static const char usage_line[] =
	"usage: dirty-track [--intervals N] [--pages N] [--seed S] "
	"[--writes N] [--log FILE] [--no-unpopulated] [--kernel-faults] [--help] [--version]";

static size_t page;

/* One bit per page. The dirty set is written by the dispatcher thread and read by main. */
struct bitmap {
	size_t pages;
	_Atomic uint64_t *w;
};

static void bitmap_set(struct bitmap *b, size_t i)
{
	atomic_fetch_or_explicit(&b->w[i / 64], UINT64_C(1) << (i % 64), memory_order_relaxed);
}

static bool bitmap_test(const struct bitmap *b, size_t i)
{
	return atomic_load_explicit(&b->w[i / 64], memory_order_relaxed) &
	       (UINT64_C(1) << (i % 64));
}

static size_t bitmap_count(const struct bitmap *b)
{
	size_t n = 0;

	for (size_t i = 0; i < (b->pages + 63) / 64; i++)
		n += (size_t)__builtin_popcountll(atomic_load(&b->w[i]));
	return n;
}

static void bitmap_clear(struct bitmap *b)
{
	for (size_t i = 0; i < (b->pages + 63) / 64; i++)
		atomic_store(&b->w[i], 0);
}

/*
 * A write hit a write-protected page: record it dirty, then un-protect it, which wakes the
 * writer. The range's data is the dirty set and its offset says which page this is, wherever
 * the range starts. Only WP was registered, so every fault here is a write-protect fault.
 */
static int on_write(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	char *addr = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	size_t index = (pf->range.offset + (size_t)(addr - (char *)pf->range.start)) / page;

	(void)arg;
	bitmap_set(pf->range.data, index);
	return uffd_writeprotect(u, addr, page, false, 0);
}

/* splitmix64: a small, fixed generator, so a seed always means the same pages. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void help(void)
{
	printf("%s\n\n"
	       "Track which pages a workload writes, interval by interval, with write-protect\n"
	       "faults (the incremental snapshot pattern). The memory is registered with\n"
	       "UFFDIO_REGISTER_MODE_WP and write-protected; each first write to a page in an\n"
	       "interval faults, and the monitor thread records the page dirty and un-protects it.\n"
	       "At the end of an interval every page is protected again and the dirty count is\n"
	       "printed, with a check against the pages the workload wrote (it also reads pages,\n"
	       "which must not count). WP_UNPOPULATED is used where the kernel offers it;\n"
	       "otherwise every page is populated first, since protection skips empty pages.\n\n"
	       "  -i, --intervals N    intervals (1-100000, default 5)\n"
	       "  -p, --pages N        pages of memory (1-1048576, default 256)\n"
	       "  -s, --seed S         seed of the random page choice (default 1)\n"
	       "  -w, --writes N       writes per interval (0-10000000, default pages/4)\n"
	       "  -l, --log FILE       write the workload's writes to FILE, one \"INTERVAL PAGE\" a line\n"
	       "  -n, --no-unpopulated do not ask for WP_UNPOPULATED: populate every page first, as\n"
	       "                       kernels before 6.4 need\n"
	       "  -k, --kernel-faults  also trap faults raised inside system calls (needs\n"
	       "                       CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: 0 when every interval's dirty set matches the writes, 1 when not or on\n"
	       "an error, 2 on a usage error.\n",
	       usage_line);
}

/* Print up to a dozen page numbers of a set, for people to see which pages. */
static void print_some(const struct bitmap *b)
{
	size_t shown = 0;

	for (size_t i = 0; i < b->pages && shown < 12; i++)
		if (bitmap_test(b, i))
			printf("%s%zu", shown++ ? " " : "  pages ", i);
	if (shown == 12 && bitmap_count(b) > 12)
		printf(" ...");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "intervals", required_argument, NULL, 'i' },
		{ "pages", required_argument, NULL, 'p' },
		{ "seed", required_argument, NULL, 's' },
		{ "writes", required_argument, NULL, 'w' },
		{ "log", required_argument, NULL, 'l' },
		{ "no-unpopulated", no_argument, NULL, 'n' },
		{ "kernel-faults", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	/* PAGEFAULT_FLAG_WP says the kernel can write-protect anonymous memory at all. */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_PAGEFAULT_FLAG_WP,
		.optional = UFFD_FEATURE_WP_UNPOPULATED,
	};
	unsigned long intervals = 5, pages = 256, writes = ULONG_MAX, total_dirty = 0;
	uint64_t seed = 1, rng;
	const char *log_path = NULL;
	struct bitmap dirty, wrote;
	struct tool_dispatcher disp;
	struct uffd_stats st;
	FILE *log = NULL;
	bool ok = true, unpopulated;
	const char *wp_note;
	struct uffd *u;
	char *mem;
	size_t len;
	int c, err;

	tool_init("dirty-track", usage_line);
	while ((c = getopt_long(argc, argv, ":i:p:s:w:l:nkhV", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			intervals = tool_number("--intervals", optarg, 1, 100000);
			break;
		case 'p':
			pages = tool_number("--pages", optarg, 1, 1ul << 20);
			break;
		case 's':
			seed = tool_number("--seed", optarg, 0, ULONG_MAX);
			break;
		case 'w':
			writes = tool_number("--writes", optarg, 0, 10000000);
			break;
		case 'l':
			log_path = optarg;
			break;
		case 'n':
			cfg.optional &= ~UFFD_FEATURE_WP_UNPOPULATED;
			break;
		case 'k':
			cfg.flags |= UFFD_OPEN_KERNEL_FAULTS;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	tool_no_operands(argc, argv);
	if (writes == ULONG_MAX)
		writes = pages / 4 ? pages / 4 : 1;
	if (log_path && !(log = fopen(log_path, "w")))
		tool_die("cannot write the log '%s': %s", log_path, strerror(errno));

	page = tool_page_size();
	len = pages * page;
	u = tool_open(&cfg);
	unpopulated = uffd_features(u) & UFFD_FEATURE_WP_UNPOPULATED;
	dirty.pages = wrote.pages = pages;
	dirty.w = calloc((pages + 63) / 64, sizeof(*dirty.w));
	wrote.w = calloc((pages + 63) / 64, sizeof(*wrote.w));
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!dirty.w || !wrote.w || mem == MAP_FAILED)
		tool_die("out of memory for %lu pages", pages);
	/* Without WP_UNPOPULATED, protecting skips pages that were never populated, and their
	 * first write would go unseen: populate every page first. */
	if (!unpopulated)
		for (size_t i = 0; i < pages; i++)
			((volatile char *)mem)[i * page] = 0;

	err = uffd_register(u, mem, len, UFFDIO_REGISTER_MODE_WP, &dirty);
	if (err)
		tool_die("cannot register %zu bytes for write-protection: %s", len,
			 uffd_strerror(err));
	uffd_on_pagefault(u, on_write, NULL);
	err = uffd_writeprotect(u, mem, len, true, 0);
	if (err)
		tool_die("cannot write-protect the memory: %s", uffd_strerror(err));

	if (unpopulated)
		wp_note = "granted, so empty pages are protected too";
	else if (cfg.optional & UFFD_FEATURE_WP_UNPOPULATED)
		wp_note = "not offered by this kernel, so every page was populated first";
	else
		wp_note = "not asked for (--no-unpopulated), so every page was populated first";
	printf("dirty-track: %lu pages, %lu interval(s) of %lu random writes and as many random "
	       "reads (seed %" PRIu64 ").\n"
	       "Every page starts write-protected; a write faults once per interval, and the\n"
	       "monitor marks the page dirty and un-protects it.\nWP_UNPOPULATED: %s.\n\n",
	       pages, intervals, writes, seed, wp_note);
	tool_dispatcher_start(&disp, u);

	rng = seed;
	for (unsigned long n = 1; n <= intervals; n++) {
		size_t ndirty, nwrote;
		bool same = true;

		/* The workload: random writes (logged) and random reads (which dirty nothing). */
		for (unsigned long k = 0; k < writes; k++) {
			size_t i = (size_t)(next_random(&rng) % pages);
			size_t at = i * page + (size_t)(next_random(&rng) % page);

			((volatile char *)mem)[at] = (char)n;
			bitmap_set(&wrote, i);
			if (log)
				fprintf(log, "%lu %zu\n", n, i);
			(void)((volatile char *)mem)[(next_random(&rng) % pages) * page];
		}
		/* Every write has returned, so its fault was handled: the dirty set is complete.
		 * Protect everything again before the next interval writes. */
		for (size_t i = 0; i < pages; i++)
			same = same && bitmap_test(&dirty, i) == bitmap_test(&wrote, i);
		ndirty = bitmap_count(&dirty);
		nwrote = bitmap_count(&wrote);
		total_dirty += ndirty;
		printf("interval %lu: %zu pages dirty (the workload wrote %zu distinct pages): %s",
		       n, ndirty, nwrote, same ? "match" : "MISMATCH");
		print_some(&dirty);
		putchar('\n');
		ok = ok && same;
		err = uffd_writeprotect(u, mem, len, true, 0);
		if (err)
			tool_die("cannot write-protect the memory again: %s", uffd_strerror(err));
		bitmap_clear(&dirty);
		bitmap_clear(&wrote);
	}

	if (tool_dispatcher_stop(&disp) != 0)
		ok = false;
	uffd_get_stats(u, &st);
	/* One writer: every dirty page cost exactly one fault. */
	printf("\nsummary: faults=%" PRIu64 " dirty=%lu intervals=%lu\n", st.faults, total_dirty,
	       intervals);
	ok = ok && st.faults == total_dirty;
	printf("result: %s\n",
	       ok ? "OK: every interval's dirty pages are exactly the pages written" : "MISMATCH");
	uffd_close(u);
	munmap(mem, len);
	free(dirty.w);
	free(wrote.w);
	if (log && fclose(log) != 0)
		tool_die("writing the log '%s' failed: %s", log_path, strerror(errno));
	return ok ? 0 : 1;
}
