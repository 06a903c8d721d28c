/* SPDX-License-Identifier: MIT */
/* Shared by the benchmark's parts: options, timing, paired runs, the table, raw uffd helpers. */
#ifndef UFFD_BENCH_H
#define UFFD_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/userfaultfd.h>

#include <uffd.h>

/* How much work each figure does. */
struct bench_opts {
	int pairs;	   /* A B pairs per figure (>= 5 for a reported figure) */
	size_t mem_pages;  /* pages of the main fault figures (64 MiB) */
	size_t munmaps;	   /* munmaps per run */
	size_t decode_n;   /* messages decoded per run */
	size_t lookups;	   /* range lookups per run */
	size_t churns;	   /* unregister+register pairs per run */
	long map_sizes[3]; /* range counts */
	int children;	   /* forked children */
	size_t child_pages;
	size_t cg_faults; /* N of the callgrind figure; it also runs 2N */
	bool smoke;	  /* prove it works; figures are meaningless */
	bool quick;
	int cpu;       /* the CPU of single-CPU runs, and of the faulting side of split runs */
	int other_cpu; /* the handler's CPU in split runs */
	bool do_unpinned, do_pinned, do_split;
	const char *only; /* comma-separated figure names, or NULL for all */
	const char *exe_dir;
	bool verbose;
};

extern struct bench_opts opt;
extern size_t page_size;

/* Allocations made through malloc/calloc/realloc/mmap by code linked into the benchmark,
 * libuffd included (the link wraps those symbols). */
extern _Atomic uint64_t bench_allocs;

/* ---- timing and pinning ---- */
uint64_t now_ns(void);
/* Thread CPU time (user + system) of the calling thread, in ns. */
uint64_t thread_cpu_ns(void);
/* Pin the calling thread (and the threads and children it makes later) to one CPU, or undo. */
void pin_to(int cpu);
void unpin(void);

/* Where the threads of a run may run: anywhere; all on one CPU; the fault handler on one CPU and
 * the faulting threads on another (the cross-CPU wake-up every fault then pays). */
enum cpu_mode { CPU_ALL, CPU_ONE, CPU_SPLIT };
extern enum cpu_mode cur_mode;
/* Run fn once per mode the options ask for, with the process placed accordingly. */
void for_modes(void (*fn)(enum cpu_mode), bool split_too);
/* In a run: place the handler thread about to be made, then the faulting threads. */
void place_handler(void);
void place_faulters(void);

/* ---- failing loudly: this is a benchmark, not the library ---- */
__attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);
void check_uffd(int ret, const char *what);
void check_sys(long ret, const char *what);

/* ---- paired runs and the table ---- */
struct sample {
	double a, b;  /* A = libuffd, B = the raw loop: a value per unit (ns per fault, ...) */
	double ratio; /* A/B of this pair, when it is not simply a / b (see faults.c); or 0 */
	double a_cpu, b_cpu;	 /* optional: CPU ns per unit of the handler */
	double a_extra, b_extra; /* optional: a figure-specific number (messages per read, ...) */
};

struct row {
	const char *figure;
	char variant[96];
	const char *cpu; /* "2 CPUs" or "1 CPU" */
	const char *unit;
	int n;
	struct sample s[64];
	/* target: ratio (A/B) must be <= max_ratio, or 0 for none */
	double max_ratio;
	const char *extra_name; /* name of a_extra/b_extra, or NULL */
	bool show_cpu;
	bool plain; /* values are counts, not ns */
	char note[160];
};

double median(double *v, int n);
void row_print_header(void);
void row_print(struct row *r);
/* Summary lines of every target at the end. */
void summary_print(void);

const char *cpu_name(enum cpu_mode mode);
bool want(const char *figure);

/* ---- the raw side: hand-written, no libuffd ---- */
/* A userfaultfd made with the syscall (blocking unless @nonblock), UFFDIO_API done. */
int raw_open(uint64_t features, bool nonblock);
void raw_register(int fd, void *addr, size_t len);
void raw_unregister(int fd, void *addr, size_t len);

/* ---- memory ---- */
void *map_region(size_t len);
/* Touch every page (populate), then drop them: page tables and caches are warm, pages missing. */
void warm_region(void *p, size_t len);
void fill_pattern(void *p, size_t len, unsigned seed);

/* ---- figures ---- */
void fig_faults(void);	  /* time per fault: COPY/ZEROPAGE, seq/random */
void fig_threads(void);	  /* 8 faulting threads, batched reads; batch waking */
void fig_latency(void);	  /* latency mode and readahead vs the raw blocking loop */
void fig_munmap(void);	  /* munmap latency with EVENT_UNMAP */
void fig_decode(void);	  /* uffd_event_decode */
void fig_rangemap(void);  /* range map lookup and churn */
void fig_children(void);  /* 64 forked children */
void fig_callgrind(void); /* instructions per fault */
void fig_scale(void);	  /* slow sources with N threads, a pool, deferral */
void fig_readers(void);	  /* CPU-bound serving: 2 dispatchers vs 2 raw readers */
void fig_wholerun(void);  /* whole runs alternated: libuffd, blocking, poll, io_uring loops */

#endif
