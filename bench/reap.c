/* SPDX-License-Identifier: MIT */
/*
 * uffd-bench-reap: one run of REAP's experiment (bench/reap.sh runs the table). A process whose
 * memory is an image served lazily (uffd_serve()) runs a workload that touches a quarter of it
 * in runs of 1-8 pages scattered over the image (a fixed seed), and says how long it took to the
 * workload's end, with the faults taken and the bytes fetched.
 *
 *   uffd-bench-reap make IMAGE MB
 *   uffd-bench-reap run SOURCE MODE [--record FILE] [--order FILE --pages SOURCE] [--split BYTES]
 *                                   [--ahead N]
 *
 * MODE: eager (read the whole image with 4 threads, then run), page (on demand, a page per
 * fault), CHUNK (on demand, e.g. 64K, 4M), prefetch (--order's working set installed from
 * --pages, its compacted pages, in one sequential read before the workload runs; faults outside
 * it on demand, a page each). SOURCE and --pages are paths or http:// URLs. --split sets the
 * HTTP sources' uffd_http_config::split_size (default 0: reads are not split). --ahead sets
 * uffd_serve_config::ahead (default 0: on demand only).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>
#ifdef BENCH_HAVE_HTTP
#include <uffd_http.h>
#endif

#define SEED 0x5eed2021u
#define EAGER_THREADS 4
#define EAGER_PIECE ((size_t)4 << 20)

static size_t page;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("uffd-bench-reap: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The image: word i (8 bytes) is mix(i), so a touched page checks itself without the image. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static int make_image(const char *path, uint64_t mb)
{
	size_t buf_len = (size_t)1 << 20;
	uint64_t *buf = malloc(buf_len);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (!buf || fd < 0)
		die("cannot create '%s': %s", path, strerror(errno));
	for (uint64_t m = 0; m < mb; m++) {
		for (size_t i = 0; i < buf_len / 8; i++)
			buf[i] = mix(m * (buf_len / 8) + i);
		if (write(fd, buf, buf_len) != (ssize_t)buf_len)
			die("cannot write '%s': %s", path, strerror(errno));
	}
	if (close(fd) != 0)
		die("cannot write '%s': %s", path, strerror(errno));
	free(buf);
	return 0;
}

static uint64_t split_size; /* --split */
static unsigned ahead;	    /* --ahead */

static struct uffd_source *open_source(const char *spec)
{
	struct uffd_source *s;
	int err;

	if (!strncmp(spec, "http://", 7) || !strncmp(spec, "https://", 8)) {
#ifdef BENCH_HAVE_HTTP
		struct uffd_http_config cfg = { .url = spec, .split_size = split_size };

		err = uffd_http_source(&s, &cfg);
#else
		die("'%s': built without libuffd-http", spec);
#endif
	} else {
		err = uffd_source_file(&s, spec, 0);
	}
	if (err)
		die("cannot open '%s': %s", spec, strerror(-err));
	return s;
}

/* ---- the workload: runs of 1-8 pages, scattered, until a quarter of the pages is touched ---- */

struct run {
	uint32_t first, len; /* pages */
};

static struct run *workload(size_t npages, size_t *nruns, size_t *touched)
{
	uint8_t *seen = calloc(npages, 1);
	size_t cap = npages / 4 + 16, n = 0, t = 0;
	struct run *r = malloc(cap * sizeof(*r));
	uint64_t state = SEED;

	if (!seen || !r)
		die("out of memory");
	while (t < npages / 4 && n < cap) {
		uint64_t a = mix(state++), b = mix(state++);
		size_t first = (size_t)(a % npages), len = 1 + (size_t)(b % 8);

		if (first + len > npages)
			len = npages - first;
		r[n++] = (struct run){ (uint32_t)first, (uint32_t)len };
		for (size_t p = first; p < first + len; p++)
			if (!seen[p]) {
				seen[p] = 1;
				t++;
			}
	}
	free(seen);
	*nruns = n;
	*touched = t;
	return r;
}

/* Touch every page of the runs in order; returns the pages whose first word is wrong. */
static size_t run_workload(const char *mem, const struct run *r, size_t n)
{
	size_t bad = 0;

	for (size_t i = 0; i < n; i++)
		for (size_t p = r[i].first; p < (size_t)r[i].first + r[i].len; p++) {
			uint64_t w = *(const volatile uint64_t *)(mem + p * page);

			bad += w != mix(p * page / 8);
		}
	return bad;
}

/* ---- eager: read the whole image, then run ---- */

struct eager {
	pthread_t t;
	struct uffd_source *src;
	char *mem;
	size_t len, next_unused;
	atomic_size_t *next;
	int err;
};

static void *eager_main(void *arg)
{
	struct eager *e = arg;

	for (;;) {
		size_t off = atomic_fetch_add(e->next, EAGER_PIECE), n;

		if (off >= e->len)
			return NULL;
		n = e->len - off < EAGER_PIECE ? e->len - off : EAGER_PIECE;
		e->err = uffd_source_read(e->src, e->mem + off, n, off);
		if (e->err)
			return NULL;
	}
}

/* ---- on demand: a dispatching thread ---- */

struct dispatcher {
	pthread_t t;
	struct uffd *u;
	atomic_bool stop;
	int err;
};

static void *dispatch_main(void *arg)
{
	struct dispatcher *d = arg;

	while (!atomic_load(&d->stop)) {
		int r = uffd_dispatch(d->u, 20);

		if (r < 0 && r != -EINTR && !d->err)
			d->err = r;
	}
	return NULL;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);

	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end || !v || (v & (v - 1)) || v < page)
		die("bad mode or chunk '%s'", s);
	return v;
}

int main(int argc, char **argv)
{
	const char *spec, *mode, *record_path = NULL, *order_path = NULL, *pages_spec = NULL;
	struct uffd_serve_config sc = { .discard = UFFD_DISCARD_SOURCE };
	struct uffd_config cfg = { .optional = UFFD_FEATURE_POISON };
	struct uffd_order *record = NULL, *order = NULL;
	struct uffd_source *src, *compact = NULL;
	struct uffd_serve_stats ss = { 0 };
	struct dispatcher d = { 0 };
	struct uffd *u = NULL;
	size_t len, npages, nruns, touched, bad;
	double t0, t_pre = 0, t1;
	long prefetched = 0;
	uint64_t fetched = 0;
	struct run *runs;
	int64_t slen;
	char *mem;
	int err;

	page = (size_t)sysconf(_SC_PAGESIZE);
	if (argc == 4 && !strcmp(argv[1], "make"))
		return make_image(argv[2], strtoull(argv[3], NULL, 10));
	if (argc < 4 || strcmp(argv[1], "run")) {
		fprintf(stderr, "usage: uffd-bench-reap make IMAGE MB\n"
				"       uffd-bench-reap run SOURCE eager|page|CHUNK|prefetch "
				"[--record FILE] [--order FILE --pages SOURCE] [--split BYTES] "
				"[--ahead N]\n");
		return 2;
	}
	spec = argv[2];
	mode = argv[3];
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--record") && i + 1 < argc)
			record_path = argv[++i];
		else if (!strcmp(argv[i], "--order") && i + 1 < argc)
			order_path = argv[++i];
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			pages_spec = argv[++i];
		else if (!strcmp(argv[i], "--split") && i + 1 < argc)
			split_size = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--ahead") && i + 1 < argc)
			ahead = (unsigned)strtoul(argv[++i], NULL, 0);
		else
			die("unknown argument '%s'", argv[i]);
	}
	if (!strcmp(mode, "prefetch") && (!order_path || !pages_spec))
		die("prefetch needs --order and --pages");

	src = open_source(spec);
	slen = uffd_source_length(src);
	if (slen <= 0 || (uint64_t)slen % page)
		die("'%s': no whole number of pages (%" PRId64 ")", spec, slen);
	len = (size_t)slen;
	npages = len / page;
	runs = workload(npages, &nruns, &touched);
	if (order_path) {
		int fd = open(order_path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || (err = uffd_order_load(&order, fd)) != 0)
			die("cannot load '%s'", order_path);
		close(fd);
		compact = open_source(pages_spec);
	}
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED)
		die("cannot map %zu bytes: %s", len, strerror(errno));

	if (!strcmp(mode, "eager")) {
		struct eager e[EAGER_THREADS];
		atomic_size_t next = 0;

		t0 = now();
		for (int i = 0; i < EAGER_THREADS; i++) {
			e[i] = (struct eager){ .src = src, .mem = mem, .len = len, .next = &next };
			if (pthread_create(&e[i].t, NULL, eager_main, &e[i]))
				die("cannot start a thread");
		}
		for (int i = 0; i < EAGER_THREADS; i++) {
			pthread_join(e[i].t, NULL);
			if (e[i].err)
				die("reading '%s' failed: %s", spec, strerror(-e[i].err));
		}
		t_pre = now() - t0;
		bad = run_workload(mem, runs, nruns);
		t1 = now();
		fetched = len;
	} else {
		sc.source = src;
		if (!strcmp(mode, "page") || !strcmp(mode, "prefetch"))
			sc.chunk = page;
		else
			sc.chunk = parse_size(mode);
		if (record_path && (err = uffd_order_new(&record)) != 0)
			die("cannot make an order");
		sc.record = record;
		sc.ahead = ahead;
		err = uffd_open(&u, &cfg);
		if (err)
			die("uffd_open: %s", uffd_strerror(err));
		err = uffd_serve(u, mem, len, &sc);
		if (err)
			die("uffd_serve: %s", uffd_strerror(err));
		d.u = u;
		if (pthread_create(&d.t, NULL, dispatch_main, &d))
			die("cannot start a thread");
		t0 = now();
		if (order) {
			/* REAP: the working set is in before the workload runs. */
			prefetched = uffd_prefetch(u, mem, order, compact);
			if (prefetched < 0)
				die("uffd_prefetch: %s", uffd_strerror((int)prefetched));
			t_pre = now() - t0;
		}
		bad = run_workload(mem, runs, nruns);
		t1 = now();
		atomic_store(&d.stop, true);
		pthread_join(d.t, NULL);
		if (d.err)
			die("serving failed: %s", uffd_strerror(d.err));
		uffd_serve_get_stats(u, &ss);
		fetched = ss.bytes_fetched; /* the prefetch's reads of the compacted file too */
	}
	printf("mode=%s secs=%.4f pre_secs=%.4f faults=%" PRIu64 " fetched=%" PRIu64
	       " prefetched=%ld pages=%zu touched=%zu runs=%zu bad=%zu\n",
	       mode, t1 - t0, t_pre, ss.faults, fetched, prefetched, npages, touched, nruns, bad);
	if (record) {
		int fd = open(record_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		char pages[4096];

		if (fd < 0 || uffd_order_save(record, fd) != 0 || close(fd) != 0)
			die("cannot write '%s'", record_path);
		snprintf(pages, sizeof(pages), "%s.pages", record_path);
		fd = open(pages, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || (err = uffd_order_save_pages(record, src, fd)) != 0 || close(fd) != 0)
			die("cannot write '%s'", pages);
	}
	if (u)
		uffd_close(u);
	munmap(mem, len);
	uffd_order_free(record);
	uffd_order_free(order);
	uffd_source_close(compact);
	uffd_source_close(src);
	free(runs);
	if (bad)
		die("%zu touched pages held the wrong bytes", bad);
	return 0;
}
