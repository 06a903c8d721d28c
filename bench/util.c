/* SPDX-License-Identifier: MIT */
/* The benchmark's plumbing: clocks, pinning, paired-run statistics, the table, raw uffd calls. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct bench_opts opt;
size_t page_size;
_Atomic uint64_t bench_allocs;

/*
 * The link wraps these (-Wl,--wrap=...), so every call from the benchmark's objects and from
 * libuffd's (linked statically) is counted. glibc's own internal allocations are not: they are
 * not the library's.
 */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_mmap(void *a, size_t l, int p, int f, int fd, off_t o);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_mmap(void *a, size_t l, int p, int f, int fd, off_t o);

void *__wrap_malloc(size_t n)
{
	atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
	atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
	return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
	atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
	return __real_realloc(p, n);
}

void *__wrap_mmap(void *a, size_t l, int p, int f, int fd, off_t o)
{
	atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
	return __real_mmap(a, l, p, f, fd, o);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t thread_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

void pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

void unpin(void)
{
	cpu_set_t set;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	CPU_ZERO(&set);
	for (long i = 0; i < n && i < CPU_SETSIZE; i++)
		CPU_SET(i, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "uffd-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void check_uffd(int ret, const char *what)
{
	if (ret < 0)
		die("%s: %s", what, uffd_strerror(ret));
}

void check_sys(long ret, const char *what)
{
	if (ret < 0)
		die("%s: %s", what, strerror(errno));
}

/* ---- statistics and the table ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double median(double *v, int n)
{
	double *tmp, m;

	if (n <= 0)
		return 0;
	tmp = malloc(sizeof(double) * (size_t)n);
	if (!tmp)
		die("out of memory");
	memcpy(tmp, v, sizeof(double) * (size_t)n);
	qsort(tmp, (size_t)n, sizeof(double), cmp_double);
	m = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
	free(tmp);
	return m;
}

const char *cpu_name(enum cpu_mode mode)
{
	switch (mode) {
	case CPU_ONE:
		return "1 CPU";
	case CPU_SPLIT:
		return "split";
	default:
		return "any";
	}
}

enum cpu_mode cur_mode;

void for_modes(void (*fn)(enum cpu_mode), bool split_too)
{
	if (opt.do_unpinned) {
		cur_mode = CPU_ALL;
		unpin();
		fn(CPU_ALL);
	}
	if (opt.do_pinned) {
		cur_mode = CPU_ONE;
		pin_to(opt.cpu);
		fn(CPU_ONE);
		unpin();
	}
	if (opt.do_split && split_too && opt.other_cpu != opt.cpu) {
		cur_mode = CPU_SPLIT;
		fn(CPU_SPLIT);
		unpin();
	}
	cur_mode = CPU_ALL;
}

void place_handler(void)
{
	if (cur_mode == CPU_SPLIT)
		pin_to(opt.other_cpu);
}

void place_faulters(void)
{
	if (cur_mode == CPU_SPLIT)
		pin_to(opt.cpu);
}

bool want(const char *figure)
{
	const char *p = opt.only;
	size_t len = strlen(figure);

	if (!p)
		return true;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l == len && strncmp(p, figure, len) == 0)
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

/* ns as a short human string. */
static void fmt_ns(char *buf, size_t size, double ns)
{
	if (ns >= 1e6)
		snprintf(buf, size, "%.2f ms", ns / 1e6);
	else if (ns >= 1e3)
		snprintf(buf, size, "%.2f us", ns / 1e3);
	else
		snprintf(buf, size, "%.1f ns", ns);
}

struct verdict {
	char what[160];
	double ratio, target;
	bool met;
};
static struct verdict verdicts[64];
static int nverdicts;

void row_print_header(void)
{
	printf("%-10s %-36s %-6s %11s %11s  %-22s %s\n", "figure", "variant", "cpus", "libuffd",
	       "raw", "ratio lib/raw [min max]", "target");
	printf("%.*s\n", 118,
	       "-----------------------------------------------------------------------------------"
	       "-----------------------------------");
}

void row_print(struct row *r)
{
	double ra[64], a[64], b[64], ac[64], bc[64], ae[64], be[64];
	double lo = 1e300, hi = 0, mr;
	char sa[32], sb[32], tgt[40] = "report";
	int i;

	for (i = 0; i < r->n; i++) {
		ra[i] = r->s[i].ratio ? r->s[i].ratio : r->s[i].b > 0 ? r->s[i].a / r->s[i].b : 0;
		a[i] = r->s[i].a;
		b[i] = r->s[i].b;
		ac[i] = r->s[i].a_cpu;
		bc[i] = r->s[i].b_cpu;
		ae[i] = r->s[i].a_extra;
		be[i] = r->s[i].b_extra;
		if (ra[i] < lo)
			lo = ra[i];
		if (ra[i] > hi)
			hi = ra[i];
	}
	mr = median(ra, r->n);
	if (r->plain) {
		snprintf(sa, sizeof(sa), "%.1f", median(a, r->n));
		snprintf(sb, sizeof(sb), "%.1f", median(b, r->n));
	} else {
		fmt_ns(sa, sizeof(sa), median(a, r->n));
		fmt_ns(sb, sizeof(sb), median(b, r->n));
	}
	if (r->max_ratio > 0 && !opt.smoke) {
		bool met = mr <= r->max_ratio;

		snprintf(tgt, sizeof(tgt), "<= %.2f %s", r->max_ratio, met ? "met" : "MISSED");
		if (nverdicts < 64) {
			struct verdict *v = &verdicts[nverdicts++];

			snprintf(v->what, sizeof(v->what), "%s: %s, %s", r->figure, r->variant,
				 r->cpu);
			v->ratio = mr;
			v->target = r->max_ratio;
			v->met = met;
		}
	}
	printf("%-10s %-36s %-6s %11s %11s  %5.3f [%5.3f %5.3f]    %s\n", r->figure, r->variant,
	       r->cpu, sa, sb, mr, lo, hi, tgt);
	if (r->show_cpu) {
		fmt_ns(sa, sizeof(sa), median(ac, r->n));
		fmt_ns(sb, sizeof(sb), median(bc, r->n));
		printf("%-10s %-36s %-6s %11s %11s  (handler CPU time %s)\n", "", "", "", sa, sb,
		       r->unit);
	}
	if (r->extra_name)
		printf("%-10s %-36s %-6s %11.2f %11.2f  (%s)\n", "", "", "", median(ae, r->n),
		       median(be, r->n), r->extra_name);
	if (r->note[0])
		printf("%-10s %s\n", "", r->note);
	fflush(stdout);
}

void summary_print(void)
{
	int met = 0;

	if (!nverdicts)
		return;
	printf("\nTargets (median ratio of %d interleaved pairs):\n", opt.pairs);
	for (int i = 0; i < nverdicts; i++) {
		printf("  %-6s %.3f (target <= %.2f)  %s\n", verdicts[i].met ? "met" : "MISSED",
		       verdicts[i].ratio, verdicts[i].target, verdicts[i].what);
		met += verdicts[i].met;
	}
	printf("  %d of %d met\n", met, nverdicts);
}

/* ---- raw userfaultfd ---- */

int raw_open(uint64_t features, bool nonblock)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0) | 1);

	check_sys(fd, "userfaultfd");
	check_sys(ioctl(fd, UFFDIO_API, &api), "UFFDIO_API");
	return fd;
}

void raw_register(int fd, void *addr, size_t len)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	check_sys(ioctl(fd, UFFDIO_REGISTER, &r), "UFFDIO_REGISTER");
}

void raw_unregister(int fd, void *addr, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };

	check_sys(ioctl(fd, UFFDIO_UNREGISTER, &r), "UFFDIO_UNREGISTER");
}

/* ---- memory ---- */

void *map_region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu bytes: %s", len, strerror(errno));
	return p;
}

void warm_region(void *p, size_t len)
{
	for (size_t off = 0; off < len; off += page_size)
		((volatile char *)p)[off] = 1;
	check_sys(madvise(p, len, MADV_DONTNEED), "madvise(DONTNEED)");
}

void fill_pattern(void *p, size_t len, unsigned seed)
{
	uint64_t *w = p, x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < len / sizeof(*w); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}
