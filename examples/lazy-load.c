/* SPDX-License-Identifier: MIT */
/* lazy-load: serve each first touch of memory from an image, a file or a URL (snapshot restore). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static const char usage_line[] =
	"usage: lazy-load [--chunk SIZE] [--readahead N] [--ahead N] [--record FILE] [--prefetch FILE] "
	"[--wait-prefetch] [--timeout MS] [--threads N] [--quiet] [--kernel-faults] [--help] "
	"[--version] SOURCE";

/* The workload walks the memory in chunks; it moves, replaces or discards a few of them. */
#define CHUNK_PAGES 64

static size_t page;

/* The workload's side: the memory, chunk by chunk, wherever each chunk lives now. */
struct memory {
	struct uffd *u;
	const struct uffd_serve_config *serve; /* how the memory is served (replaced chunks too) */
	size_t len;			       /* bytes of memory: the image rounded up to pages */
	size_t nchunks;
	char **chunk;	 /* where chunk i lives now (moved chunks live elsewhere) */
	bool *discarded; /* chunk i was discarded: it reads as zero */
	char **spare;	 /* per thread: address space reserved for the chunk it moves */
	unsigned threads;
	bool quiet;
};

struct worker {
	pthread_t thread;
	struct memory *m;
	unsigned id;
	unsigned long moved, replaced, discarded; /* chunks */
	const char *failed;			  /* the call that failed, or NULL */
	int err;				  /* its errno */
};

/* ---- a source that fails for good: poisoned pages, reported, and the SIGBUS of a touch ---- */

static const char *source_spec;	   /* SOURCE, for the messages */
static atomic_bool fetch_failed;   /* a fetch failed for good: its pages are poisoned */
static atomic_bool fetch_reported; /* ... and that was said on stderr */
static atomic_bool sigbus_taken;   /* one worker reports its SIGBUS and ends the process */
static char sigbus_msg[512];	   /* "lazy-load: ...", formatted before the workload runs */

/* uffd_serve_config::on_error: the pages of [offset, offset + len) are poisoned. Reported once. */
static void on_fetch_error(struct uffd *u, uint64_t offset, uint64_t len, int err, void *arg)
{
	(void)u;
	(void)arg;
	if (!atomic_exchange(&fetch_failed, true))
		tool_warn("cannot fetch 0x%" PRIx64 " (%" PRIu64
			  " bytes) of '%s': %s: its pages are "
			  "poisoned, a touch raises SIGBUS",
			  offset, len, source_spec, strerror(-err));
	atomic_store(&fetch_reported, true);
}

/* A worker touched a poisoned page: never wrong bytes, but the restore failed. */
static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
	static const char hex[] = "0123456789abcdef";
	char line[sizeof(sigbus_msg) + 64];
	size_t n = strlen(sigbus_msg);
	uintptr_t a = (uintptr_t)si->si_addr;
	int shift = (int)sizeof(a) * 8 - 4;

	(void)sig;
	(void)ctx;
	while (atomic_exchange(&sigbus_taken, true))
		pause(); /* another worker's report ends the process */
	/* The pages are poisoned before on_error runs: let its line on the cause come first. */
	for (int i = 0; i < 1000 && !atomic_load(&fetch_reported); i++) {
		struct timespec ms = { 0, 1000000 };

		nanosleep(&ms, NULL);
	}
	memcpy(line, sigbus_msg, n);
	memcpy(line + n, " (SIGBUS at 0x", 14);
	n += 14;
	while (shift > 0 && !((a >> shift) & 0xf))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		line[n++] = hex[(a >> shift) & 0xf];
	memcpy(line + n, "): the restore failed\n", 22);
	n += 22;
	if (write(2, line, n) < 0) {
		/* nothing more to say */
	}
	_exit(1);
}

/* ---- the monitor's layout callbacks: they only report (the map is updated when they run) ---- */

/* The image offset of the registered page at @addr of the main registration, or -1. */
static long long image_offset(struct uffd *u, const void *addr)
{
	struct uffd_range r;

	if (uffd_range_find(u, addr, &r) != 0)
		return -1;
	return (long long)r.offset + ((const char *)addr - (const char *)r.start);
}

static int on_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	const bool *quiet = arg;

	if (!*quiet)
		printf("  moved     %4zu pages %p -> %p: the map follows, image offset 0x%llx\n",
		       m->len / page, m->from, m->to, image_offset(u, m->to));
	return 0;
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	const bool *quiet = arg;

	(void)u;
	if (!*quiet)
		printf("  unmapped  %4zu pages at %p: cut out of the map\n",
		       (size_t)((char *)s->end - (char *)s->start) / page, s->start);
	return 0;
}

/* ---- the workload: threads that read the memory, and reshape some of it as they go ---- */

static size_t chunk_len(const struct memory *m, size_t i)
{
	size_t off = i * CHUNK_PAGES * page;

	return m->len - off < CHUNK_PAGES * page ? m->len - off : CHUNK_PAGES * page;
}

/* Read every page of a chunk: each first touch faults, and the monitor copies it in. */
static void touch(const char *p, size_t len)
{
	for (size_t off = 0; off < len; off += page)
		(void)((const volatile char *)p)[off];
}

static int fail(struct worker *w, const char *call, int err)
{
	w->failed = call;
	w->err = err;
	return -1;
}

enum op { OP_NONE, OP_MOVE, OP_REPLACE, OP_DISCARD };

static int visit(struct worker *w, size_t i, enum op op)
{
	struct memory *m = w->m;
	size_t len = chunk_len(m, i);
	char *p = m->chunk[i];
	struct uffd_serve_config c;
	int err;

	switch (op) {
	case OP_NONE:
		touch(p, len);
		break;
	case OP_MOVE: /* move it before reading it: its pages are served at the new place */
		p = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, m->spare[w->id]);
		if (p == MAP_FAILED)
			return fail(w, "mremap", errno);
		m->chunk[i] = p;
		w->moved++;
		touch(p, len);
		break;
	case OP_REPLACE: /* read it, map fresh memory over it, register that: served again */
		touch(p, len);
		if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED)
			return fail(w, "mmap", errno);
		c = *m->serve;
		c.offset = i * CHUNK_PAGES * page;
		err = uffd_serve(m->u, p, len, &c);
		if (err)
			return fail(w, "uffd_serve", -err);
		w->replaced++;
		touch(p, len);
		/* After the monitor's line about the unmap: it served these faults after that. */
		if (!m->quiet)
			printf("  replaced  %4zu pages at %p: fresh memory, registered, served "
			       "again from image offset 0x%zx\n",
			       len / page, (void *)p, i * CHUNK_PAGES * page);
		break;
	case OP_DISCARD: /* read it, drop its pages: missing again, and they read as zero now */
		touch(p, len);
		if (madvise(p, len, MADV_DONTNEED) != 0)
			return fail(w, "madvise", errno);
		m->discarded[i] = true;
		w->discarded++;
		touch(p, len);
		if (!m->quiet)
			printf("  discarded %4zu pages at %p: they read as zero now, image offset "
			       "0x%zx\n",
			       len / page, (void *)p, i * CHUNK_PAGES * page);
		break;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct memory *m = w->m;
	size_t first = m->nchunks * w->id / m->threads;
	size_t end = m->nchunks * (w->id + 1) / m->threads, n = end - first;

	for (size_t i = first; i < end; i++) {
		/* A quarter, half and three quarters of the way through: one of each change. */
		enum op op = OP_NONE;

		if (n >= 4 && i - first == n / 4)
			op = OP_MOVE;
		else if (n >= 4 && i - first == n / 2)
			op = OP_REPLACE;
		else if (n >= 4 && i - first == 3 * n / 4)
			op = OP_DISCARD;
		if (visit(w, i, op) != 0)
			break;
	}
	return NULL;
}

/* ---- recorded prefetch: a thread that installs the working set while the workload runs ---- */

struct prefetcher {
	pthread_t thread;
	struct uffd *u;
	void *addr;
	const struct uffd_order *order;
	struct uffd_source *compact; /* the working set back to back, or NULL */
	long result;		     /* pages installed, or a negative errno */
	double secs;
};

static void *prefetch_main(void *arg)
{
	struct prefetcher *p = arg;
	double t0 = tool_now();

	p->result = uffd_prefetch(p->u, p->addr, p->order, p->compact);
	p->secs = tool_now() - t0;
	return NULL;
}

/* ---- main ---- */

static void help(void)
{
	printf("%s\n\n"
	       "Restore SOURCE, a memory image, into anonymous memory lazily, the way snapshot\n"
	       "restore and post-copy live migration do: the memory starts empty, and each page is\n"
	       "fetched from SOURCE (a file, or an http:// or https:// URL) the first time a worker\n"
	       "thread touches it, with the aligned chunk around it (uffd_serve()). Meanwhile the\n"
	       "workers move, replace and discard parts of the memory. A discarded page reads as\n"
	       "zero afterwards, as anonymous memory does (UFFD_DISCARD_ZERO, what a VMM's balloon\n"
	       "needs), never as the image's bytes again; the tool says so when it starts.\n\n"
	       "--record writes the order in which pages were first touched, as image offsets, and\n"
	       "the working set it names back to back (FILE.pages); --prefetch installs that\n"
	       "working set in bulk while the workload runs, from FILE.pages in one sequential read\n"
	       "when it is there (as REAP does), else from SOURCE, so that only the pages outside it\n"
	       "fault. A file uffd-trace --order wrote names regions of a process, not image\n"
	       "offsets: it is refused.\n\n"
	       "A fetch that fails for good (an HTTP server that is stopped or stalls: each request\n"
	       "is retried 3 times with back-off, 50, 100 and 200 ms, and each attempt has the\n"
	       "--timeout deadline) never installs wrong bytes: the pages it was to fill are\n"
	       "poisoned, lazy-load prints the failed fetch, and the worker that touches one of\n"
	       "them gets SIGBUS, which lazy-load reports ('could not be fetched') before it exits\n"
	       "with status 1. A restore whose source fails thus ends within about 4 x --timeout\n"
	       "plus 0.35 s of the failure, never hangs.\n\n"
	       "At the end it prints faults=N, the faults served on demand (after a prefetch, those\n"
	       "it did not cover), the image's SHA-256 and, when the workload discarded memory, the\n"
	       "SHA-256 expected of the memory (the image with those ranges zeroed), and checks\n"
	       "the memory against it.\n\n"
	       "  -c, --chunk SIZE     bytes fetched per fault, an aligned chunk around it: a power\n"
	       "                       of two from the page size to 64M, with a K or M suffix\n"
	       "                       (default 64K)\n"
	       "  -r, --readahead N    the same in pages (a power of two, 1-16384)\n"
	       "      --ahead N        after each fault that fetches its chunk, fetch the next N\n"
	       "                       chunks too, in parallel (0-64, default 0; an HTTP source\n"
	       "                       only: a file is read synchronously); not with --record\n"
	       "      --record FILE    write the first-touch order to FILE (uffd-order 1: one line\n"
	       "                       'OFFSET LENGTH' per run of pages, image offsets) and its\n"
	       "                       pages back to back to FILE.pages\n"
	       "      --prefetch FILE  prefetch the working set recorded in FILE (and FILE.pages)\n"
	       "                       in a thread while the workload runs\n"
	       "      --wait-prefetch  start the workload once the prefetch is done (as REAP does)\n"
	       "      --timeout MS     the deadline of one attempt of an HTTP request, connecting\n"
	       "                       included (100-600000, default 10000); ignored for a file\n"
	       "  -t, --threads N      worker threads (1-64, default 4)\n"
	       "  -q, --quiet          do not print each change of the memory layout\n"
	       "  -k, --kernel-faults  also serve faults raised inside system calls (needs\n"
	       "                       CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: 0 when the memory equals the expected contents, 1 when not, on an\n"
	       "error or when SOURCE failed mid-restore (SIGBUS reported), 2 on a usage error.\n",
	       usage_line);
}

/* The bytes of chunk @i that hold image data: all but the zeros past the end of the image. */
static size_t chunk_data_len(const struct memory *m, uint64_t image_len, size_t i)
{
	size_t off = i * CHUNK_PAGES * page, len = chunk_len(m, i);

	return len > image_len - off ? (size_t)(image_len - off) : len;
}

struct check {
	char image[2 * UFFD_SHA256_LEN + 1];	/* SHA-256 of the image */
	char expected[2 * UFFD_SHA256_LEN + 1]; /* ... with the discarded chunks zeroed */
	char memory[2 * UFFD_SHA256_LEN + 1];	/* ... of the memory, in image order */
	long long first_difference;		/* image offset, or -1 */
};

/* Read the image again chunk by chunk, and compare the memory (wherever each chunk lives now)
 * with what it must hold: the image, zero where the workload discarded. */
static void check_memory(const struct memory *m, struct uffd_source *src, uint64_t image_len,
			 struct check *c)
{
	struct uffd_sha256 si, se, sm;
	unsigned char d[UFFD_SHA256_LEN];
	unsigned char *buf = malloc(CHUNK_PAGES * page);
	int err;

	if (!buf)
		tool_die("out of memory");
	uffd_sha256_init(&si);
	uffd_sha256_init(&se);
	uffd_sha256_init(&sm);
	c->first_difference = -1;
	for (size_t i = 0; i < m->nchunks; i++) {
		size_t off = i * CHUNK_PAGES * page, len = chunk_data_len(m, image_len, i);

		err = uffd_source_read(src, buf, len, off);
		if (err)
			tool_die("cannot read the image again to check the memory (at 0x%zx): %s",
				 off, uffd_strerror(err));
		uffd_sha256_update(&si, buf, len);
		if (m->discarded[i])
			memset(buf, 0, len);
		uffd_sha256_update(&se, buf, len);
		uffd_sha256_update(&sm, m->chunk[i], len);
		if (c->first_difference < 0 && memcmp(buf, m->chunk[i], len) != 0)
			for (size_t b = 0; b < len; b++)
				if (buf[b] != (unsigned char)m->chunk[i][b]) {
					c->first_difference = (long long)(off + b);
					break;
				}
	}
	uffd_sha256_final(&si, d);
	sha256_hex(d, c->image);
	uffd_sha256_final(&se, d);
	sha256_hex(d, c->expected);
	uffd_sha256_final(&sm, d);
	sha256_hex(d, c->memory);
	free(buf);
}

static bool power_of_two(uint64_t v)
{
	return v && !(v & (v - 1));
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "chunk", required_argument, NULL, 'c' },
		{ "readahead", required_argument, NULL, 'r' },
		{ "ahead", required_argument, NULL, 'A' },
		{ "record", required_argument, NULL, 'R' },
		{ "prefetch", required_argument, NULL, 'P' },
		{ "wait-prefetch", no_argument, NULL, 'W' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "kernel-faults", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	/* REMAP keeps moved ranges registered (and in the map); UNMAP and REMOVE keep the map
	 * true, and REMOVE is how a discard is known to read as zero afterwards. */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP |
			    UFFD_FEATURE_EVENT_REMOVE,
		/* A fetch that fails for good poisons its pages: the toucher gets SIGBUS. */
		.optional = UFFD_FEATURE_POISON,
	};
	struct uffd_serve_config scfg = { .discard = UFFD_DISCARD_ZERO,
					  .on_error = on_fetch_error };
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	struct memory m = { .threads = 4 };
	struct prefetcher pf = { 0 };
	struct tool_dispatcher disp;
	struct uffd_serve_stats ss;
	struct uffd_stats st;
	struct uffd_order *record = NULL, *order = NULL;
	struct uffd_source *src;
	struct check chk;
	struct worker *w;
	const char *record_path = NULL, *prefetch_path = NULL, *spec;
	uint64_t chunk = 0, image_len;
	unsigned long moved = 0, replaced = 0, discarded = 0, readahead = 0, timeout_ms = 0;
	double t0, secs;
	bool ok = true, quiet = false, wait_prefetch = false;
	struct uffd *u;
	char *mem;
	int c, err;

	tool_init("lazy-load", usage_line);
	page = tool_page_size();
	while ((c = getopt_long(argc, argv, ":c:r:t:qkhV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			chunk = tool_size("--chunk", optarg, page, 64 << 20);
			if (!power_of_two(chunk))
				tool_usage_error(
					"invalid value '%s' for --chunk: expected a power of "
					"two",
					optarg);
			break;
		case 'A':
			scfg.ahead = tool_ahead(optarg);
			break;
		case 'r':
			readahead = tool_number("--readahead", optarg, 1, 16384);
			if (!power_of_two(readahead))
				tool_usage_error(
					"invalid value '%s' for --readahead: expected a power "
					"of two from 1 to 16384",
					optarg);
			break;
		case 'R':
			record_path = optarg;
			break;
		case 'P':
			prefetch_path = optarg;
			break;
		case 'W':
			wait_prefetch = true;
			break;
		case 'T':
			timeout_ms = tool_number("--timeout", optarg, 100, 600000);
			break;
		case 't':
			m.threads = (unsigned)tool_number("--threads", optarg, 1, 64);
			break;
		case 'q':
			quiet = m.quiet = true;
			break;
		case 'k':
			cfg.flags |= UFFD_OPEN_KERNEL_FAULTS;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	if (optind == argc)
		tool_usage_error("no SOURCE given");
	if (optind + 1 < argc)
		tool_usage_error("unexpected argument '%s'", argv[optind + 1]);
	tool_ahead_not_with_record(scfg.ahead, record_path);
	if (chunk && readahead && chunk != readahead * page)
		tool_usage_error("--chunk and --readahead disagree: give one of them");
	if (readahead)
		chunk = readahead * page;
	if (!chunk)
		chunk = 16 * page;
	if (chunk > (64 << 20))
		tool_usage_error("--readahead %lu is more than 64M", readahead);
	spec = argv[optind];

	source_spec = spec;
	snprintf(sigbus_msg, sizeof(sigbus_msg),
		 "lazy-load: a worker touched a page that could not be fetched from '%s'", spec);
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) != 0)
		tool_die("cannot handle SIGBUS: %s", strerror(errno));
	/* The memory is the image rounded up to whole pages: uffd_serve() serves the tail of a
	 * short last page as zero. */
	src = tool_source_open_timeout(spec, &image_len, (unsigned)timeout_ms);
	m.len = (size_t)((image_len + page - 1) / page * page);
	if (prefetch_path) {
		order = tool_order_load(prefetch_path, m.len, page);
		pf.compact = tool_compact_open(prefetch_path, order);
	}
	if (record_path && (err = uffd_order_new(&record)) != 0)
		tool_die("cannot make an order: %s", uffd_strerror(err));
	u = tool_open(&cfg);

	/* The memory to restore into: empty, the image's size rounded up to whole pages. */
	m.u = u;
	m.nchunks = (m.len + CHUNK_PAGES * page - 1) / (CHUNK_PAGES * page);
	mem = mmap(NULL, m.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED)
		tool_die("cannot map %zu bytes of memory for '%s': %s", m.len, spec,
			 strerror(errno));
	m.chunk = calloc(m.nchunks, sizeof(*m.chunk));
	m.discarded = calloc(m.nchunks, sizeof(*m.discarded));
	m.spare = calloc(m.threads, sizeof(*m.spare));
	w = calloc(m.threads, sizeof(*w));
	if (!m.chunk || !m.discarded || !m.spare || !w)
		tool_die("out of memory");
	for (size_t i = 0; i < m.nchunks; i++)
		m.chunk[i] = mem + i * CHUNK_PAGES * page;
	for (unsigned t = 0; t < m.threads; t++) {
		m.spare[t] = mmap(NULL, CHUNK_PAGES * page, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m.spare[t] == MAP_FAILED)
			tool_die("out of address space");
	}

	/* The whole memory is one registration served from the image: byte N of the memory is
	 * byte N of the image, wherever the workload moves it. */
	scfg.source = src;
	scfg.chunk = chunk;
	scfg.record = record;
	m.serve = &scfg;
	err = uffd_serve(u, mem, m.len, &scfg);
	if (err)
		tool_die("cannot serve %zu bytes of memory from '%s': %s", m.len, spec,
			 uffd_strerror(err));
	uffd_on_remap(u, on_remap, &quiet);
	uffd_on_unmap(u, on_unmap, &quiet);

	printf("lazy-load: restoring %s (%.1f MiB, %zu pages)\n"
	       "into memory that starts empty. A monitor thread fetches each page from the image\n"
	       "when it is first touched, in aligned chunks of %" PRIu64 " KiB (--chunk).\n"
	       "discards: a discarded page reads as zero afterwards (anonymous memory)\n",
	       spec, (double)image_len / (1 << 20), m.len / page, chunk >> 10);
	if (order)
		printf("prefetch: %ld runs, %" PRIu64 " pages, from %s%s\n",
		       uffd_order_count(order), tool_order_bytes(order) / page, prefetch_path,
		       pf.compact ? ".pages in one sequential read" :
				    " (no .pages: from the image)");
	printf("%u thread(s) read the memory, and move, replace and discard parts of it as they\n"
	       "go; the monitor sees each change:\n",
	       m.threads);

	tool_dispatcher_start(&disp, u);
	t0 = tool_now();
	if (order) {
		pf.u = u;
		pf.addr = mem;
		pf.order = order;
		err = pthread_create(&pf.thread, NULL, prefetch_main, &pf);
		if (err)
			tool_die("cannot start the prefetch thread: %s", strerror(err));
		if (wait_prefetch) /* REAP's way: the working set is in before the workload runs */
			pthread_join(pf.thread, NULL);
	}
	for (unsigned t = 0; t < m.threads; t++) {
		w[t] = (struct worker){ .m = &m, .id = t };
		err = pthread_create(&w[t].thread, NULL, worker_main, &w[t]);
		if (err)
			tool_die("cannot start a worker thread: %s", strerror(err));
	}
	for (unsigned t = 0; t < m.threads; t++) {
		pthread_join(w[t].thread, NULL);
		if (w[t].failed) {
			tool_warn("thread %u: %s failed: %s", t, w[t].failed, strerror(w[t].err));
			ok = false;
		}
		moved += w[t].moved;
		replaced += w[t].replaced;
		discarded += w[t].discarded;
	}
	secs = tool_now() - t0;
	if (order) {
		if (!wait_prefetch)
			pthread_join(pf.thread, NULL);
		if (pf.result < 0) {
			tool_warn("prefetching from '%s' failed: %s", prefetch_path,
				  uffd_strerror((int)pf.result));
			ok = false;
		}
	}
	if (atomic_load(&fetch_failed))
		ok = false; /* pages were poisoned that nobody touched: the memory is not the image */
	/* The workload read every page, but keep serving while the check reads them again. */
	check_memory(&m, src, image_len, &chk);
	if (tool_dispatcher_stop(&disp) != 0)
		ok = false;
	uffd_get_stats(u, &st);
	uffd_serve_get_stats(u, &ss);

	printf("\nrestored: %.1f MiB in %.3f s, %.1f MiB/s: %" PRIu64 " faults, %" PRIu64
	       " pages served (chunk %" PRIu64 " KiB)\n",
	       (double)image_len / (1 << 20), secs, (double)image_len / (1 << 20) / secs, ss.faults,
	       ss.pages_installed + ss.pages_zeroed, chunk >> 10);
	if (order && pf.result >= 0)
		printf("prefetched: %ld pages in %.3f s\n", pf.result, pf.secs);
	printf("counts:   faults=%" PRIu64 " served=%" PRIu64 " fetches=%" PRIu64
	       " fetched=%" PRIu64 " installed=%" PRIu64 " prefetched=%" PRIu64 " zeroed=%" PRIu64
	       " present=%" PRIu64 " woken=%" PRIu64 " remap=%" PRIu64 " unmap=%" PRIu64
	       " remove=%" PRIu64 " moved=%lu replaced=%lu discarded=%lu ahead=%" PRIu64 "\n",
	       ss.faults, ss.pages_installed + ss.pages_zeroed, ss.fetches, ss.bytes_fetched,
	       ss.pages_installed, ss.prefetched, ss.pages_zeroed, ss.eexist_skipped,
	       st.faults_woken, st.remaps, st.unmaps, st.removes, moved, replaced, discarded,
	       ss.ahead);
	printf("image:    SHA-256 %s\n", chk.image);
	if (discarded)
		printf("expected: SHA-256 %s: the image with the %lu discarded chunk(s) zeroed\n",
		       chk.expected, discarded);
	if (strcmp(chk.memory, chk.expected) == 0) {
		printf("verified: SHA-256 matches: %s\n", chk.expected);
	} else {
		printf("MISMATCH: SHA-256 of the memory %s, expected %s; first difference at "
		       "image offset %lld\n",
		       chk.memory, chk.expected, chk.first_difference);
		ok = false;
	}

	/* Close first: unmapping registered memory would wait for an event reader. */
	uffd_close(u);
	if (record) {
		tool_order_save(record, record_path, src);
		printf("recorded: %ld runs, %" PRIu64 " pages, in %s and %s.pages\n",
		       uffd_order_count(record), tool_order_bytes(record) / page, record_path,
		       record_path);
	}
	for (size_t i = 0; i < m.nchunks; i++)
		munmap(m.chunk[i], chunk_len(&m, i));
	for (unsigned t = 0; t < m.threads; t++)
		munmap(m.spare[t], CHUNK_PAGES * page); /* no-op where a chunk moved in */
	uffd_order_free(record);
	uffd_order_free(order);
	uffd_source_close(pf.compact);
	uffd_source_close(src);
	free(m.chunk);
	free(m.discarded);
	free(m.spare);
	free(w);
	return ok ? 0 : 1;
}
