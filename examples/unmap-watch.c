/* SPDX-License-Identifier: MIT */
/* unmap-watch: the smallest monitor built on uffd_on_unmap(), watching threads reshape memory. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static const char usage_line[] = "usage: unmap-watch [--threads N] [--rounds N] [--quiet] "
				 "[--kernel-faults] [--help] [--version]";

/*
 * One round of the workload, in pages of a slot of address space the thread reserved for it:
 * map [0, 8) and register it, touch every page, unmap page 2, move [4, 6) to [10, 12) with
 * mremap, discard [0, 2) with madvise(MADV_DONTNEED) and touch it again, unmap the rest.
 * Slots are never reused, so an address the monitor hears about is never mapped again while
 * it runs: the callbacks can check the map without racing the next round.
 */
#define REGION_PAGES 8
#define SLOT_PAGES 16
#define CUT_PAGE 2
#define MOVE_FROM 4
#define MOVE_TO 10
#define MOVE_PAGES 2
#define DISCARD_PAGES 2

static size_t page;

/* What each registration is given as its data: who registered it. */
struct region {
	unsigned thread, round;
};

struct watch {
	bool quiet;
	unsigned long events, checks_passed, checks_failed; /* touched by the dispatcher only */
};

struct worker {
	pthread_t thread;
	unsigned id, rounds;
	struct uffd *u;
	char *slots; /* rounds * SLOT_PAGES pages, reserved PROT_NONE */
	struct region *regions;
	unsigned long munmaps, mremaps, madvises, touches; /* what it did */
	const char *failed;				   /* the call that failed, or NULL */
	int err;					   /* its errno */
};

/* ---- the monitor: three callbacks, run by the dispatcher thread ---- */

static void print_map(struct uffd *u)
{
	struct uffd_range r;
	const char *lead = "    map:";
	void *at = NULL;

	for (; uffd_range_next(u, at, &r) == 0; at = r.end, lead = "        ") {
		const struct region *rg = r.data;

		printf("%s %p-%p  thread %u round %u, offset 0x%zx\n", lead, r.start, r.end,
		       rg->thread, rg->round, r.offset);
	}
	if (!at)
		printf("%s (empty)\n", lead);
}

static int report(struct uffd *u, struct watch *w, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Count the check, and print the event and the map as this callback sees it. */
static int report(struct uffd *u, struct watch *w, bool ok, const char *fmt, ...)
{
	va_list ap;

	w->events++;
	if (ok)
		w->checks_passed++;
	else
		w->checks_failed++;
	if (w->quiet && ok)
		return 0;
	printf("#%-3lu ", w->events);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("%s\n", ok ? "" : "  MAP CHECK FAILED");
	print_map(u);
	return 0;
}

static unsigned long pages_of(const void *start, const void *end)
{
	return (unsigned long)(((const char *)end - (const char *)start) / (ptrdiff_t)page);
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct uffd_range r;
	/* prep cut the span out before any callback ran: nothing in it may still be registered. */
	bool ok = uffd_range_next(u, s->start, &r) != 0 || r.start >= s->end;

	return report(u, arg, ok, "unmap   %p-%p  %lu page(s) unmapped: none left in the map",
		      s->start, s->end, pages_of(s->start, s->end));
}

static int on_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	struct uffd_range r;
	/* prep already moved the pieces: the new place is registered, and its offset still says
	 * which pages of the original registration these are. */
	bool ok = uffd_range_find(u, m->to, &r) == 0 && r.start == m->to &&
		  (char *)r.end >= (char *)m->to + m->len && r.offset == MOVE_FROM * page;

	return report(u, arg, ok,
		      "remap   %p -> %p  %lu page(s) moved: the map has them at the new place",
		      m->from, m->to, pages_of(m->from, (char *)m->from + m->len));
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct uffd_range r;
	/* madvise() drops the pages but not the registration: they fault again when touched. */
	bool ok = uffd_range_find(u, s->start, &r) == 0;

	return report(u, arg, ok, "remove  %p-%p  %lu page(s) discarded: still registered",
		      s->start, s->end, pages_of(s->start, s->end));
}

/* ---- the workload: threads that map, touch, unmap, move and discard registered memory ---- */

static void touch(char *p, unsigned pages, unsigned long *count)
{
	for (unsigned i = 0; i < pages; i++)
		((volatile char *)p)[i * page] = (char)(i + 1); /* a missing page: one fault */
	*count += pages;
}

static int fail(struct worker *w, const char *call, int err)
{
	w->failed = call;
	w->err = err;
	return -1;
}

static int run_round(struct worker *w, unsigned round)
{
	char *slot = w->slots + (size_t)round * SLOT_PAGES * page;
	char *p = mmap(slot, REGION_PAGES * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	int err;

	if (p == MAP_FAILED)
		return fail(w, "mmap", errno);
	err = uffd_register(w->u, p, REGION_PAGES * page, UFFDIO_REGISTER_MODE_MISSING,
			    &w->regions[round]);
	if (err)
		return fail(w, "uffd_register", -err);
	touch(p, REGION_PAGES, &w->touches);

	if (munmap(p + CUT_PAGE * page, page) != 0)
		return fail(w, "munmap", errno);
	w->munmaps++;
	if (mremap(p + MOVE_FROM * page, MOVE_PAGES * page, MOVE_PAGES * page,
		   MREMAP_MAYMOVE | MREMAP_FIXED, slot + MOVE_TO * page) == MAP_FAILED)
		return fail(w, "mremap", errno);
	w->mremaps++;
	if (madvise(p, DISCARD_PAGES * page, MADV_DONTNEED) != 0)
		return fail(w, "madvise", errno);
	w->madvises++;
	touch(p, DISCARD_PAGES, &w->touches);

	/* One munmap over pieces and holes alike: the kernel sends one UNMAP for all of it. */
	if (munmap(p, REGION_PAGES * page) != 0)
		return fail(w, "munmap", errno);
	w->munmaps++;
	if (munmap(slot + MOVE_TO * page, MOVE_PAGES * page) != 0)
		return fail(w, "munmap", errno);
	w->munmaps++;
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (unsigned r = 0; r < w->rounds; r++)
		if (run_round(w, r) != 0)
			break;
	return NULL;
}

/* ---- main ---- */

static void help(void)
{
	printf("%s\n\n"
	       "The smallest monitor built on uffd_on_unmap(). Worker threads map memory, register\n"
	       "it, touch it, unmap part of it, move part with mremap(), discard part with\n"
	       "madvise(MADV_DONTNEED) and unmap the rest; the monitor prints each UNMAP, REMAP and\n"
	       "REMOVE event as it arrives, with the range map as the callback sees it (already\n"
	       "updated), and checks it. Faults are left to libuffd's default: a zero page.\n"
	       "At the end the event counts are checked against what the workload did.\n\n"
	       "  -t, --threads N      worker threads (1-64, default 2)\n"
	       "  -r, --rounds N       rounds per thread (1-100000, default 2)\n"
	       "  -q, --quiet          print only the summary (and failed checks)\n"
	       "  -k, --kernel-faults  also trap faults raised inside system calls (needs\n"
	       "                       CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: 0 when every count and check matches, 1 when not, 2 on a usage error.\n",
	       usage_line);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "threads", required_argument, NULL, 't' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "kernel-faults", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE,
	};
	unsigned nthreads = 2, rounds = 2, t;
	struct watch watch = { 0 };
	struct tool_dispatcher disp;
	struct worker *workers;
	struct uffd_stats st;
	unsigned long munmaps = 0, mremaps = 0, madvises = 0, touches = 0;
	bool ok = true;
	struct uffd *u;
	int c, err;

	tool_init("unmap-watch", usage_line);
	while ((c = getopt_long(argc, argv, ":t:r:qkhV", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			nthreads = (unsigned)tool_number("--threads", optarg, 1, 64);
			break;
		case 'r':
			rounds = (unsigned)tool_number("--rounds", optarg, 1, 100000);
			break;
		case 'q':
			watch.quiet = true;
			break;
		case 'k':
			cfg.flags |= UFFD_OPEN_KERNEL_FAULTS;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	tool_no_operands(argc, argv);

	page = tool_page_size();
	u = tool_open(&cfg);
	uffd_on_unmap(u, on_unmap, &watch);
	uffd_on_remap(u, on_remap, &watch);
	uffd_on_remove(u, on_remove, &watch);

	workers = calloc(nthreads, sizeof(*workers));
	if (!workers)
		tool_die("out of memory");
	for (t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];

		*w = (struct worker){ .id = t, .rounds = rounds, .u = u };
		w->regions = calloc(rounds, sizeof(*w->regions));
		/* Address space only: each round maps its own slot over it. */
		w->slots = mmap(NULL, (size_t)rounds * SLOT_PAGES * page, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (!w->regions || w->slots == MAP_FAILED)
			tool_die("out of memory for %u rounds", rounds);
		for (unsigned r = 0; r < rounds; r++)
			w->regions[r] = (struct region){ .thread = t, .round = r };
	}

	printf("unmap-watch: %u thread(s) x %u round(s). In each round a thread maps %d pages and\n"
	       "registers them, touches them, unmaps page %d, moves pages %d-%d with mremap(),\n"
	       "discards pages 0-%d with madvise(MADV_DONTNEED) and touches them again, then\n"
	       "unmaps it all. Each event is printed by its callback, with the range map as the\n"
	       "callback sees it: already updated.\n\n",
	       nthreads, rounds, REGION_PAGES, CUT_PAGE, MOVE_FROM, MOVE_FROM + MOVE_PAGES - 1,
	       DISCARD_PAGES - 1);

	tool_dispatcher_start(&disp, u);
	for (t = 0; t < nthreads; t++) {
		err = pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]);
		if (err)
			tool_die("cannot start a worker thread: %s", strerror(err));
	}
	for (t = 0; t < nthreads; t++)
		pthread_join(workers[t].thread, NULL);
	/* Every event was read before the call that caused it returned: stopping loses none. */
	if (tool_dispatcher_stop(&disp) != 0)
		ok = false;

	uffd_get_stats(u, &st);
	/* Close before unmapping the slots: unmapping registered memory would wait for a reader. */
	uffd_close(u);
	for (t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];

		if (w->failed) {
			tool_warn("thread %u: %s failed: %s", t, w->failed, strerror(w->err));
			ok = false;
		}
		munmaps += w->munmaps;
		mremaps += w->mremaps;
		madvises += w->madvises;
		touches += w->touches;
		munmap(w->slots, (size_t)rounds * SLOT_PAGES * page);
		free(w->regions);
	}
	free(workers);

	/* What the kernel promises: each munmap of registered memory is one UNMAP, a moving mremap
	 * is a REMAP and an UNMAP of the old place, each madvise a REMOVE, each first touch a fault
	 * (a fault woken without being served is raised again, and counted again). */
	printf("\nevents:   unmap=%" PRIu64 " remap=%" PRIu64 " remove=%" PRIu64
	       " pagefault=%" PRIu64 " woken=%" PRIu64 " reads=%" PRIu64 "\n",
	       st.unmaps, st.remaps, st.removes, st.faults, st.faults_woken, st.reads);
	printf("workload: munmap=%lu mremap=%lu madvise=%lu touches=%lu\n", munmaps, mremaps,
	       madvises, touches);
	printf("checks:   passed=%lu failed=%lu\n", watch.checks_passed, watch.checks_failed);
	ok = ok && st.unmaps == munmaps + mremaps && st.remaps == mremaps &&
	     st.removes == madvises && st.faults - st.faults_woken == touches &&
	     watch.checks_failed == 0 && watch.events == st.unmaps + st.remaps + st.removes;
	printf("result:   %s\n", ok ? "OK: every event arrived, and every callback saw the map "
				      "already updated" :
				      "MISMATCH");
	return ok ? 0 : 1;
}
