/* SPDX-License-Identifier: MIT */
/* uffd-trace: run an unmodified program and print its page faults, unmaps, remaps and forks. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "trace-proto.h"

static const char usage_line[] =
	"usage: uffd-trace [-o FILE] [--json] [--summary] [--quiet] [--order FILE] [--svg FILE] "
	"[--user-faults] [--preload PATH] "
	"[--help] [--version] -- PROGRAM [ARGS...]";

#define PRELOAD_NAME "libuffd-trace-preload.so"
/* How often the traced processes' maps are read again for memory mapped since. */
#define RESCAN_MS 10
/* After the program has exited, how long to wait for the contexts of processes whose pid is not
 * known (fork children) to be found gone by the monitor's probe. */
#define DRAIN_MS 1500

/* One mapping as first registered: what its events are counted against. */
struct region {
	uintptr_t start, end;
	char name[24];
	bool gone; /* wholly unmapped: a new mapping at the same place is a new region */
	uint64_t faults, unmaps, remaps, removes;
	uint64_t bytes, peak; /* registered now and at most: what the ranges tagged with it hold */
};

/* The old place of a move, between its REMAP event and the UNMAP that follows it. */
struct moving {
	uintptr_t start, end;
	double since;
};

/* A mapping of a process, as a re-scan found it. */
struct span {
	uintptr_t start, end;
};

/* One traced address space: a process from its start or exec, or a fork child. */
struct proc {
	struct uffd *u; /* NULL once its process has gone */
	pid_t pid;	/* 0 while unknown (a fork child before its first fault) */
	unsigned id;
	struct region *regs;
	size_t nregs, cap;
	/*
	 * How its memory is registered: MISSING traps first touches. A user-mode-only context gets
	 * WP instead (never write-protecting anything, and without WP_UNPOPULATED), which blocks or
	 * fails no access at all but still brings UNMAP, REMAP, REMOVE and FORK events: MISSING
	 * there would fail a system call writing into untouched memory with EFAULT.
	 */
	uint64_t mode;
	uint64_t reg_bytes, peak_bytes;
	/* The library's map holds a moved range at both places from the REMAP until the UNMAP of
	 * the old place: not to be counted twice meanwhile. */
	struct moving *moving;
	size_t nmoving, capmoving;
	/* The library's map changes as a batch of events is read, before their callbacks run: an
	 * event only asks for a count, made once the whole batch is through. */
	bool recount;
	uint64_t faults, unmaps, remaps, removes, forks;
};

static struct {
	FILE *out;
	bool json, summary, quiet, user_faults;
	double t0, t0_unix; /* CLOCK_MONOTONIC and the Unix time of the start */
	size_t page;
	pid_t child;
	struct uffd_monitor *m;
	struct proc **procs;
	size_t nprocs, cap;
	bool rescan;
	unsigned long refused;
	uint64_t reg_bytes, peak_bytes; /* in all traced processes at once */
	FILE *order;		 /* --order: the first-touch order (struct uffd_order's format) */
	struct order_run {	 /* the run --order has not written yet */
		char region[48]; /* NAME@0xSTART, or "unregistered" */
		uintptr_t offset, len; /* from the region's start */
	} run;
	struct dot *dots; /* --svg: every event, drawn at the end */
	size_t ndots, dotcap;
} T;

/* One event for --svg: a fault's page, an unmap's or remove's range [addr, end), or a remap's old
 * place [addr, end) and its new one from @to. */
struct dot {
	double t;
	uintptr_t addr, end, to;
	unsigned ctx;
	pid_t tid;
	char kind; /* 'f' fault, 'u' unmap, 'r' remove */
};

static void keep_dot(const struct proc *p, char kind, double t, uintptr_t addr, uintptr_t end,
		     pid_t tid)
{
	if (T.dotcap == (size_t)-1)
		return; /* no --svg */
	if (T.ndots == T.dotcap) {
		T.dotcap = T.dotcap ? 2 * T.dotcap : 4096;
		T.dots = realloc(T.dots, T.dotcap * sizeof(*T.dots));
		if (!T.dots)
			tool_die("out of memory");
	}
	T.dots[T.ndots++] = (struct dot){
		.t = t, .addr = addr, .end = end, .ctx = p->id, .tid = tid, .kind = kind
	};
}

static void keep_remap(const struct proc *p, double t, uintptr_t from, uintptr_t to, size_t len)
{
	keep_dot(p, 'm', t, from, from + len, 0);
	if (T.dotcap != (size_t)-1)
		T.dots[T.ndots - 1].to = to;
}

/* ---- output ---- */

static double since(void)
{
	return tool_now() - T.t0;
}

static const char *pid_text(pid_t pid, char buf[16])
{
	if (pid > 0)
		snprintf(buf, 16, "%d", (int)pid);
	else
		snprintf(buf, 16, "?");
	return buf;
}

/* The process's fields of a JSON line: "pid" is null while unknown. */
static void json_head_at(const struct proc *p, const char *kind, double t)
{
	fprintf(T.out, "{\"time\":%.6f,\"pid\":", t);
	if (p->pid > 0)
		fprintf(T.out, "%d", (int)p->pid);
	else
		fprintf(T.out, "null");
	fprintf(T.out, ",\"ctx\":%u,\"event\":\"%s\"", p->id, kind);
}

static void json_head(const struct proc *p, const char *kind)
{
	json_head_at(p, kind, since());
}

static void text_head_at(const struct proc *p, const char *who, const char *kind, double t)
{
	char b[16];

	fprintf(T.out, "%10.6f %-13s %-7s ", t, who ? who : pid_text(p->pid, b), kind);
}

static void text_head(const struct proc *p, const char *who, const char *kind)
{
	text_head_at(p, who, kind, since());
}

/*
 * PROCMAP_QUERY (Linux 6.11): the one mapping at an address, asked of /proc/PID/maps's fd. The
 * build machines' headers are older, so the layout is here; later fields are not asked for.
 */
struct trace_procmap_query {
	uint64_t size, query_flags, query_addr;
	uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define TRACE_PROCMAP_QUERY _IOWR('f', 17, struct trace_procmap_query)
#define TRACE_VMA_RW 0x3   /* PROCMAP_QUERY_VMA_READABLE | _WRITABLE */
#define TRACE_VMA_MASK 0xf /* ... | _EXECUTABLE | _SHARED */

/*
 * Whether [start, end) is still inside one private anonymous read-write mapping. Maps are read a
 * page of text at a time, and the process runs on meanwhile: a mapping read there may have been
 * unmapped since (without an event, not being registered yet) and its place taken by another
 * (a PROT_NONE reservation), which must not be registered in its stead. Asked just before
 * registering, this leaves a window of microseconds instead of the whole read. Kernels without
 * PROCMAP_QUERY: yes.
 */
static bool still_anon_rw(int mapsfd, uintptr_t start, uintptr_t end)
{
	struct trace_procmap_query q = { .size = sizeof(q), .query_addr = start };

	if (ioctl(mapsfd, TRACE_PROCMAP_QUERY, &q) != 0)
		return errno == ENOTTY || errno == EINVAL;
	return q.vma_start <= start && q.vma_end >= end &&
	       (q.vma_flags & TRACE_VMA_MASK) == TRACE_VMA_RW && q.inode == 0 && q.dev_major == 0 &&
	       q.dev_minor == 0;
}

/* ---- processes and their regions ---- */

static struct proc *proc_new(struct uffd *u, pid_t pid)
{
	struct proc *p = calloc(1, sizeof(*p));

	if (!p)
		tool_die("out of memory");
	if (T.nprocs == T.cap) {
		T.cap = T.cap ? 2 * T.cap : 16;
		T.procs = realloc(T.procs, T.cap * sizeof(*T.procs));
		if (!T.procs)
			tool_die("out of memory");
	}
	p->u = u;
	p->pid = pid;
	p->id = (unsigned)T.nprocs;
	T.procs[T.nprocs++] = p;
	return p;
}

static struct region *region_at(struct proc *p, uintptr_t addr)
{
	/* Newest first: a place unmapped and mapped again belongs to the later region. */
	for (size_t i = p->nregs; i-- > 0;)
		if (addr >= p->regs[i].start && addr < p->regs[i].end)
			return &p->regs[i];
	return NULL;
}

static const char *region_name(struct proc *p, uintptr_t addr)
{
	struct region *r = region_at(p, addr);

	return r ? r->name : "unregistered";
}

/* The region a mapping of maps belongs to: the live one that starts there, else a new one. */
static size_t region_for(struct proc *p, uintptr_t start, uintptr_t end, const char *name_in)
{
	char name[sizeof(p->regs[0].name)];

	/* @name_in may be another region's name, which the realloc below would free. */
	snprintf(name, sizeof(name), "%s", name_in);
	for (size_t i = p->nregs; i-- > 0;) {
		struct region *r = &p->regs[i];

		if (!r->gone && r->start == start && strcmp(r->name, name) == 0) {
			if (end > r->end)
				r->end = end;
			return i;
		}
	}
	if (p->nregs == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 32;
		p->regs = realloc(p->regs, p->cap * sizeof(*p->regs));
		if (!p->regs)
			tool_die("out of memory");
	}
	p->regs[p->nregs] = (struct region){ .start = start, .end = end };
	snprintf(p->regs[p->nregs].name, sizeof(p->regs[0].name), "%s", name);
	return p->nregs++;
}

/* Of [a, b), the bytes inside @v (sorted, disjoint) and outside every span in p->moving. */
static uint64_t bytes_in(const struct proc *p, uintptr_t a, uintptr_t b, const struct span *v,
			 size_t nv)
{
	const struct span all = { 0, UINTPTR_MAX };
	uint64_t len = 0;

	if (!v) {
		v = &all;
		nv = 1;
	}
	for (size_t j = 0; j < nv && v[j].start < b; j++) {
		uintptr_t lo = a > v[j].start ? a : v[j].start, hi = b < v[j].end ? b : v[j].end;

		if (lo >= hi)
			continue;
		len += hi - lo;
		for (size_t i = 0; i < p->nmoving; i++) {
			uintptr_t l = lo > p->moving[i].start ? lo : p->moving[i].start;
			uintptr_t h = hi < p->moving[i].end ? hi : p->moving[i].end;

			if (l < h)
				len -= h - l; /* a process's moves in flight never overlap */
		}
	}
	return len;
}

/*
 * What of @p's memory is registered now, per region (each range carries its region's number) and
 * in all, and the peaks. Registered bytes grow only where a re-scan registers, a move grows a
 * mapping or a fork copies them, and each of those is followed by a count. @maps, when given, is
 * what a re-scan just found mapped (sorted): a range the map still holds but the process has
 * moved away, its REMAP not read yet, is not counted.
 */
static void count_registered(struct proc *p, const struct span *maps, size_t nmaps)
{
	struct uffd_range r;
	const void *at = NULL;
	uint64_t sum = 0;
	double now = since();
	size_t i, w;

	if (!p->u)
		return;
	/* An UNMAP follows its REMAP at once, from the same thread: an old place still listed
	 * after a second was kept mapped (MREMAP_DONTUNMAP), and is counted again. */
	for (i = w = 0; i < p->nmoving; i++)
		if (now - p->moving[i].since < 1.0)
			p->moving[w++] = p->moving[i];
	p->nmoving = w;
	for (i = 0; i < p->nregs; i++)
		p->regs[i].bytes = 0;
	for (; uffd_range_next(p->u, at, &r) == 0; at = r.end) {
		uint64_t len = bytes_in(p, (uintptr_t)r.start, (uintptr_t)r.end, maps, nmaps);
		size_t idx = (size_t)(uintptr_t)r.data - 1;

		if (idx < p->nregs)
			p->regs[idx].bytes += len;
		sum += len;
	}
	for (i = 0; i < p->nregs; i++)
		if (p->regs[i].bytes > p->regs[i].peak)
			p->regs[i].peak = p->regs[i].bytes;
	T.reg_bytes = T.reg_bytes - p->reg_bytes + sum;
	if (T.reg_bytes > T.peak_bytes)
		T.peak_bytes = T.reg_bytes;
	p->reg_bytes = sum;
	if (sum > p->peak_bytes)
		p->peak_bytes = sum;
}

/* The process has gone: it holds nothing registered any more. */
static void count_gone(struct proc *p)
{
	T.reg_bytes -= p->reg_bytes;
	p->reg_bytes = 0;
	for (size_t i = 0; i < p->nregs; i++)
		p->regs[i].bytes = 0;
	p->nmoving = 0;
}

/*
 * One pass over @p's maps: register what of its private anonymous memory is not registered yet,
 * the heap and anonymous private writable mappings (stacks, vdso/vvar, guard pages (no access)
 * and file mappings are left alone), then count what is registered. A mapping may vanish between
 * reading maps and registering it: such failures only mean there is nothing left to trace there.
 * Unless @may_register, it stops at the first gap and returns true.
 */
static bool scan_maps(struct proc *p, bool may_register)
{
	static struct span *maps;
	static size_t cap;
	char path[64], line[512];
	size_t nmaps = 0;
	FILE *f;

	if (!p->u || p->pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)p->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, ino;
		char perms[8], name[256] = "";
		int n = sscanf(line, "%lx-%lx %7s %*s %*s %lu %255s", &s, &e, perms, &ino, name);
		struct uffd_range r;
		uintptr_t at;
		size_t idx = 0;

		if (n < 2)
			continue;
		if (nmaps == cap) {
			cap = cap ? 2 * cap : 256;
			maps = realloc(maps, cap * sizeof(*maps));
			if (!maps)
				tool_die("out of memory");
		}
		maps[nmaps++] = (struct span){ s, e };
		if (n < 4 || strcmp(perms, "rw-p") != 0 || ino != 0)
			continue;
		if (name[0] && strcmp(name, "[heap]") != 0)
			continue;
		if (may_register)
			idx = region_for(p, s, e, name[0] ? name : "anon");
		/* Register the gaps between what the map already holds. */
		for (at = s; at < e;) {
			uintptr_t gap_end = e;

			if (uffd_range_next(p->u, (void *)at, &r) == 0 && (uintptr_t)r.start < e) {
				if ((uintptr_t)r.start <= at) {
					at = (uintptr_t)r.end;
					continue;
				}
				gap_end = (uintptr_t)r.start;
			}
			if (!may_register) {
				fclose(f);
				return true;
			}
			if (still_anon_rw(fileno(f), at, gap_end))
				uffd_register(p->u, (void *)at, gap_end - at, p->mode,
					      (void *)(idx + 1));
			at = gap_end;
		}
	}
	fclose(f);
	count_registered(p, maps, nmaps);
	return false;
}

static void run_monitor(bool warn);

/*
 * Register @p's memory mapped since the last scan. A gap may be memory the process has just moved
 * there, still registered, whose REMAP waits to be read: the events are read first, so that such
 * a range keeps its region and is not counted at both places, and the maps are read again after
 * them, since the events let the threads they held run on and change the maps.
 */
static void rescan(struct proc *p)
{
	if (scan_maps(p, false)) {
		run_monitor(true);
		scan_maps(p, true);
	}
}

/* The process a thread belongs to. */
static pid_t tgid_of(pid_t tid)
{
	char path[64], line[128];
	pid_t tgid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

/* ---- --order: runs of pages in first-touch order, in the format of struct uffd_order ---- */

static void order_flush(void)
{
	if (T.run.len)
		fprintf(T.order, "0x%" PRIxPTR " 0x%" PRIxPTR " %s\n", T.run.offset, T.run.len,
			T.run.region);
	T.run.len = 0;
}

/* A first touch of the page at @addr in region @r (NULL: in none): it extends the last run
 * when it is the next page of the same region, else it starts a new one. */
static void order_add(const struct region *r, uintptr_t addr)
{
	char name[sizeof(T.run.region)];
	uintptr_t off = r ? addr - r->start : addr;

	/* The region column is one word: the region's name and where it started, which tells
	 * apart regions of the same name ("anon"). */
	if (r)
		snprintf(name, sizeof(name), "%s@0x%" PRIxPTR, r->name, r->start);
	else
		snprintf(name, sizeof(name), "unregistered");
	for (char *c = name; *c; c++)
		if (isspace((unsigned char)*c))
			*c = '_';
	if (T.run.len && off == T.run.offset + T.run.len && strcmp(name, T.run.region) == 0) {
		T.run.len += T.page;
		return;
	}
	order_flush();
	snprintf(T.run.region, sizeof(T.run.region), "%s", name);
	T.run.offset = off;
	T.run.len = T.page;
}

/* ---- the callbacks: one line per event ---- */

static int on_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct proc *p = arg;
	uintptr_t addr = (uintptr_t)pf->address & ~(uintptr_t)(T.page - 1);
	struct region *r = NULL;
	bool write = pf->flags & UFFD_PAGEFAULT_FLAG_WRITE;
	/* Taken while the faulting thread still waits: whatever it does after the fault is later,
	 * which lets a witness (strace -ttt) order its system calls against the faults. */
	double t = since();
	/* A zero page, as the kernel would have given: the program cannot tell the difference. */
	int err = uffd_zeropage(u, (void *)addr, T.page, 0);

	if (err)
		return err; /* the library wakes or retries it; a fault served later is counted then */
	if (p->pid <= 0 && pf->tid > 0) {
		p->pid = tgid_of(pf->tid);
		if (p->pid > 0) {
			uffd_monitor_watch_pid(T.m, u, p->pid);
			T.rescan = true;
		}
	}
	if (pf->range.data) {
		size_t idx = (size_t)(uintptr_t)pf->range.data - 1;

		if (idx < p->nregs)
			r = &p->regs[idx];
	}
	if (!r)
		r = region_at(p, addr);
	if (r)
		r->faults++;
	p->faults++;
	keep_dot(p, 'f', t, addr, addr + T.page, pf->tid);
	if (T.order)
		order_add(r, addr);
	if (T.quiet)
		return 0;
	if (T.json) {
		json_head_at(p, "fault", t);
		fprintf(T.out,
			",\"tid\":%d,\"addr\":\"0x%" PRIxPTR "\",\"access\":\"%s\","
			"\"region\":\"%s\"}\n",
			(int)pf->tid, addr, write ? "write" : "read", r ? r->name : "unregistered");
	} else {
		char who[32], b[16];

		snprintf(who, sizeof(who), "%s/%d", pid_text(p->pid, b), (int)pf->tid);
		text_head_at(p, who, "fault", t);
		fprintf(T.out, "0x%" PRIxPTR " %-5s %s\n", addr, write ? "write" : "read",
			r ? r->name : "unregistered");
	}
	return 0;
}

/* An UNMAP or REMOVE: count it against every region it touches, print it once. */
static void span_event(struct proc *p, const struct uffd_span *s, bool unmap)
{
	uintptr_t a = (uintptr_t)s->start, b = (uintptr_t)s->end;
	const char *name = region_name(p, a);

	for (size_t i = 0; i < p->nregs; i++) {
		struct region *r = &p->regs[i];

		if (r->gone || r->end <= a || r->start >= b)
			continue;
		if (unmap) {
			r->unmaps++;
			if (a <= r->start && b >= r->end)
				r->gone = true;
		} else {
			r->removes++;
		}
	}
	keep_dot(p, unmap ? 'u' : 'r', since(), a, b, 0);
	if (unmap) {
		for (size_t i = 0; i < p->nmoving; i++)
			if (p->moving[i].start == a && p->moving[i].end == b) {
				p->moving[i] = p->moving[--p->nmoving];
				break;
			}
		p->unmaps++;
		p->recount = true;
	} else {
		p->removes++;
	}
	if (T.quiet)
		return;
	if (T.json) {
		json_head(p, unmap ? "unmap" : "remove");
		fprintf(T.out,
			",\"start\":\"0x%" PRIxPTR "\",\"end\":\"0x%" PRIxPTR
			"\",\"region\":\"%s\"}\n",
			a, b, name);
	} else {
		text_head(p, NULL, unmap ? "unmap" : "remove");
		fprintf(T.out, "0x%" PRIxPTR "-0x%" PRIxPTR " %zu pages %s\n", a, b,
			(size_t)(b - a) / T.page, name);
	}
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	span_event(arg, s, true);
	return 0;
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	(void)u;
	span_event(arg, s, false);
	return 0;
}

static int on_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	struct proc *p = arg;
	uintptr_t from = (uintptr_t)m->from, to = (uintptr_t)m->to;
	struct region *r = region_at(p, from);
	char name[sizeof(r->name)];

	/* A copy: region_for() below may grow the table that r and its name live in. */
	snprintf(name, sizeof(name), "%s", r ? r->name : "unregistered");
	if (r) {
		r->remaps++;
		/* The region follows its pages: faults at the new place count for it. */
		if (m->len) {
			size_t idx = region_for(p, to, to + m->len, r->name);

			(void)idx;
		}
	}
	p->remaps++;
	keep_remap(p, since(), from, to, m->len);
	(void)u;
	if (m->len) {
		if (p->nmoving == p->capmoving) {
			p->capmoving = p->capmoving ? 2 * p->capmoving : 8;
			p->moving = realloc(p->moving, p->capmoving * sizeof(*p->moving));
			if (!p->moving)
				tool_die("out of memory");
		}
		p->moving[p->nmoving++] =
			(struct moving){ .start = from, .end = from + m->len, .since = since() };
	}
	T.rescan = true; /* a grown move registered a tail the event does not describe */
	if (T.quiet)
		return 0;
	if (T.json) {
		json_head(p, "remap");
		fprintf(T.out,
			",\"from\":\"0x%" PRIxPTR "\",\"to\":\"0x%" PRIxPTR "\",\"len\":%zu,"
			"\"region\":\"%s\"}\n",
			from, to, m->len, name);
	} else {
		text_head(p, NULL, "remap");
		fprintf(T.out, "0x%" PRIxPTR "-0x%" PRIxPTR " -> 0x%" PRIxPTR " %zu pages %s\n",
			from, from + m->len, to, m->len / T.page, name);
	}
	return 0;
}

static void set_callbacks(struct uffd *u, struct proc *p);

static int on_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	struct proc *p = arg, *c = proc_new(child, 0);

	(void)parent;
	/* The child starts with the parent's mappings, and its range map holds the parent's
	 * region numbers. */
	if (p->nregs) {
		c->regs = malloc(p->nregs * sizeof(*c->regs));
		if (!c->regs)
			tool_die("out of memory");
		memcpy(c->regs, p->regs, p->nregs * sizeof(*c->regs));
		for (size_t i = 0; i < p->nregs; i++) {
			struct region *r = &c->regs[i];

			r->faults = r->unmaps = r->remaps = r->removes = 0;
			r->bytes = r->peak = 0;
		}
		c->nregs = c->cap = p->nregs;
	}
	c->mode = p->mode; /* the child's context is the same kind as its parent's */
	set_callbacks(child, c);
	c->recount = true;
	p->forks++;
	if (T.quiet)
		return 0;
	if (T.json) {
		json_head(p, "fork");
		fprintf(T.out, ",\"child_ctx\":%u}\n", c->id);
	} else {
		text_head(p, NULL, "fork");
		fprintf(T.out, "child context #%u (its pid is learnt from its first fault)\n",
			c->id);
	}
	return 0;
}

static void on_exit_cb(struct uffd *u, void *arg)
{
	struct proc *p = arg;

	(void)u;
	count_gone(p);
	p->u = NULL; /* the monitor closes the context after this */
	if (T.quiet)
		return;
	if (T.json) {
		json_head(p, "exit");
		fprintf(T.out, "}\n");
	} else {
		text_head(p, NULL, "exit");
		fprintf(T.out, "address space gone (exit or exec)\n");
	}
}

static void set_callbacks(struct uffd *u, struct proc *p)
{
	uffd_on_pagefault(u, on_fault, p);
	uffd_on_unmap(u, on_unmap, p);
	uffd_on_remove(u, on_remove, p);
	uffd_on_remap(u, on_remap, p);
	uffd_on_fork(u, on_fork, p);
	uffd_on_exit(u, on_exit_cb, p);
}

/* Read and handle the events and faults waiting, then count what they changed. */
static void run_monitor(bool warn)
{
	int err = uffd_monitor_run(T.m, 0);

	if (err < 0 && warn)
		tool_warn("monitor: %s", uffd_strerror(err));
	for (size_t i = 0; i < T.nprocs; i++)
		if (T.procs[i]->recount) {
			T.procs[i]->recount = false;
			count_registered(T.procs[i], NULL, 0);
		}
}

/* ---- the socket: who may hand over a userfaultfd ---- */

/* Whether @pid is the program uffd-trace started or one of its descendants. */
static bool started_by_us(pid_t pid)
{
	for (int depth = 0; depth < 256 && pid > 1; depth++) {
		char path[64], buf[512], *close_paren;
		int ppid;
		FILE *f;

		if (pid == T.child)
			return true;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		f = fopen(path, "re");
		if (!f)
			return false;
		if (!fgets(buf, sizeof(buf), f)) {
			fclose(f);
			return false;
		}
		fclose(f);
		/* The command name may hold spaces and parentheses: the fields follow the last ')'. */
		close_paren = strrchr(buf, ')');
		if (!close_paren || sscanf(close_paren + 1, " %*c %d", &ppid) != 1)
			return false;
		pid = ppid;
	}
	return false;
}

/* The userfaultfd a process sends, and in @hello what kind of context it is. The library's
 * uffd_fd_recv() refuses a message without exactly one fd and closes whatever came with it. */
static int recv_fd(int sock, char *hello)
{
	char byte = 0;
	int fd = -1;

	if (uffd_fd_recv(sock, &fd, &byte, 1, NULL) != 1)
		return -1;
	if (byte != TRACE_HELLO && byte != TRACE_HELLO_USER) {
		close(fd);
		fd = -1;
	}
	*hello = byte;
	return fd;
}

static void refuse(pid_t pid, uid_t uid)
{
	char b[16];

	T.refused++;
	if (T.json)
		fprintf(T.out, "{\"time\":%.6f,\"pid\":%d,\"event\":\"refused\",\"uid\":%u}\n",
			since(), (int)pid, (unsigned)uid);
	else
		fprintf(T.out,
			"%10.6f %-13s %-7s connection refused: uid %u, not a process "
			"uffd-trace started\n",
			since(), pid_text(pid, b), "refused", (unsigned)uid);
}

/* One process of the traced program calls in from the preload library. */
static void accept_one(int lsock)
{
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_THREAD_ID,
	};
	struct timeval tv = { .tv_sec = 2 };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct uffd *u;
	struct proc *p;
	char ready = TRACE_READY, hello = 0, exe[PATH_MAX] = "?", path[64];
	int sock = accept4(lsock, NULL, NULL, SOCK_CLOEXEC), fd;
	ssize_t n;

	if (sock < 0)
		return;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		close(sock);
		return;
	}
	if (cred.uid != getuid() || !started_by_us(cred.pid)) {
		refuse(cred.pid, cred.uid);
		close(sock);
		return;
	}
	/* A process that connects and then sends nothing must not stall every other one. */
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	fd = recv_fd(sock, &hello);
	if (fd >= 0 && (read(sock, &ready, 1) != 1 || ready != TRACE_CLOSED)) {
		close(fd);
		fd = -1;
	}
	ready = TRACE_READY;
	if (fd < 0 || uffd_adopt(&u, fd, &cfg) != 0) {
		if (fd >= 0)
			close(fd);
		close(sock);
		return;
	}
	if (uffd_monitor_add(T.m, u) != 0) {
		uffd_close(u);
		close(sock);
		return;
	}
	p = proc_new(u, cred.pid);
	p->mode = hello == TRACE_HELLO || T.user_faults ? UFFDIO_REGISTER_MODE_MISSING :
							  UFFDIO_REGISTER_MODE_WP;
	set_callbacks(u, p);
	uffd_monitor_watch_pid(T.m, u, cred.pid);
	rescan(p);
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)cred.pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 1] = '\0';
	if (!T.quiet) {
		if (T.json) {
			json_head(p, "attach");
			fprintf(T.out,
				",\"exe\":\"%s\",\"registered\":%" PRIu64
				",\"first_touches\":%s,\"t0_unix\":%.6f}\n",
				exe, p->reg_bytes,
				p->mode == UFFDIO_REGISTER_MODE_MISSING ? "true" : "false",
				T.t0_unix);
		} else {
			text_head(p, NULL, "attach");
			fprintf(T.out, "%s, %" PRIu64 " KiB registered%s\n", exe,
				p->reg_bytes >> 10,
				p->mode == UFFDIO_REGISTER_MODE_MISSING ?
					"" :
					" (events only: first touches not traced)");
		}
	}
	n = write(sock, &ready, 1);
	(void)n; /* a process that went away meanwhile is found gone by the monitor */
	close(sock);
}

/* ---- --svg ---- */

/*
 * The picture: address (y) against seconds since the start (x), every process on one axis.
 * Addresses are far apart (the heap low, mappings near the top of the address space), so the y
 * axis is a stack of segments, low addresses at the bottom: a region, or a run of regions whose
 * gaps are small beside them, each linear inside, with a grey break band where addresses are
 * skipped. A segment's height is proportional to its size but at least SVG_MIN_SEG pixels, so a
 * page of stack beside a gigabyte stays readable and its two address labels fit; past
 * SVG_MAX_SEGS segments the smallest gaps are drawn to scale instead of as breaks. Events are
 * binned into pixel cells, one mark per non-empty cell with its count, and the cells grow until
 * the marks fit their bounds: the file stays under a megabyte however long the trace.
 */
#define SVG_W 900.0 /* the plot */
#define SVG_H 560.0
#define SVG_L 120.0    /* left margin: the addresses */
#define SVG_R 160.0    /* right margin: the regions' names and sizes */
#define SVG_BREAK 12.0 /* between two segments */
#define SVG_THIN 2.0   /* between two joined segments */
#define SVG_MIN_SEG 24.0
#define SVG_MAX_SEGS ((size_t)((SVG_H + SVG_BREAK) / (SVG_MIN_SEG + SVG_BREAK)))
#define SVG_FAULT_MARKS 4000 /* about 80 bytes each */
#define SVG_SPAN_MARKS 2000  /* unmaps and removes, about 80 bytes */
#define SVG_REMAP_MARKS 500  /* about 250 bytes */
#define SVG_THREADS 8	     /* threads with a colour of their own */
#define SVG_CHAR 6.2	     /* a character's width at 10 px, a little generous */

static const char *const svg_thread_colours[SVG_THREADS + 1] = {
	"#1f77b4", "#2ca02c", "#8c564b", "#17becf", "#bcbd22",
	"#393b79", "#e377c2", "#7f7f7f", "#222222", /* the last: a cell of several threads */
};
/* Faults per cell: the intensity levels, and where each starts. */
static const unsigned svg_level_from[] = { 1, 2, 5, 20, 100 };
static const char *const svg_level_opacity[] = { ".55", ".65", ".75", ".85", ".95" };
#define SVG_LEVELS (sizeof(svg_level_from) / sizeof(svg_level_from[0]))

/* A run of the address axis drawn linearly, and where it is in the plot (y grows downwards). */
struct svg_seg {
	uintptr_t start, end;
	const char *name;
	bool mixed; /* of regions with different names */
	unsigned nregs;
	bool joined; /* to the next one, with a thin break and no labels between them */
	double ybot, h;
};

/* A region of some process, or an event's range in none, as the address axis must show it. */
struct svg_ival {
	uintptr_t start, end;
	const char *name;
};

/* One mark: a cell of faults, a column's unmaps or removes of the same rows, or remaps. */
struct svg_mark {
	uint32_t col, r0, r1, r2, r3;
	char kind;
	int tid; /* faults: the thread's colour, SVG_THREADS for several */
	uint64_t n;
};

static int cmp_ival(const void *a, const void *b)
{
	const struct svg_ival *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_mark(const void *a, const void *b)
{
	const struct svg_mark *x = a, *y = b;
	const uint32_t kx[] = { (uint32_t)x->kind, x->col, x->r0, x->r1, x->r2, x->r3 };
	const uint32_t ky[] = { (uint32_t)y->kind, y->col, y->r0, y->r1, y->r2, y->r3 };

	for (size_t i = 0; i < sizeof(kx) / sizeof(kx[0]); i++)
		if (kx[i] != ky[i])
			return kx[i] < ky[i] ? -1 : 1;
	return 0;
}

/*
 * The gap after a segment, in the order they are given up: the smallest first and, among equal
 * ones (guard pages), the one between the smallest segments, so that large regions keep theirs.
 */
struct svg_gap {
	uintptr_t len, around;
	size_t after;
};

static int cmp_gap(const void *a, const void *b)
{
	const struct svg_gap *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->around != y->around)
		return x->around < y->around ? -1 : 1;
	return (x->after > y->after) - (x->after < y->after);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

static void *svg_alloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p)
		tool_die("out of memory");
	return p;
}

/* Text for the SVG: XML's specials escaped, and cut to @max characters. */
static void svg_text(FILE *f, const char *s, size_t max)
{
	size_t len = strlen(s);

	for (size_t i = 0; i < len && i < max; i++) {
		if (len > max && i == max - 3) {
			fputs("...", f);
			break;
		}
		switch (s[i]) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			if ((unsigned char)s[i] >= 0x20 && s[i] != 0x7f)
				fputc(s[i], f);
			else
				fputc('?', f);
		}
	}
}

static void human_size(uint64_t b, char out[16])
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)b;
	size_t u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(out, 16, v < 10 && u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* The ends of a dot's range on the address axis; a remap's second range is its new place. */
static uintptr_t dot_end(const struct dot *d, size_t page)
{
	return d->end > d->addr ? d->end : d->addr + page;
}

/*
 * The address axis: the regions any event touched, and the ranges of events that touched none,
 * merged into segments; the largest gaps between them become breaks.
 */
static struct svg_seg *svg_segments(size_t *nseg_out)
{
	size_t nregs = 0, nival = 0, nseg = 0, *base = svg_alloc(T.nprocs + 1, sizeof(size_t));
	struct svg_ival *iv;
	struct svg_seg *seg;
	bool *touched;

	for (size_t i = 0; i < T.nprocs; i++) {
		base[i] = nregs;
		nregs += T.procs[i]->nregs;
	}
	touched = svg_alloc(nregs, sizeof(bool));
	/* At most: every region, and two ranges of each event. */
	iv = svg_alloc(nregs + 2 * T.ndots, sizeof(*iv));
	for (size_t i = 0; i < T.ndots; i++) {
		const struct dot *d = &T.dots[i];
		const struct proc *p = d->ctx < T.nprocs ? T.procs[d->ctx] : NULL;
		uintptr_t r[2][2] = { { d->addr, dot_end(d, T.page) },
				      { d->to, d->to + (dot_end(d, T.page) - d->addr) } };

		for (int k = 0; k < (d->kind == 'm' ? 2 : 1); k++) {
			bool in = false;

			for (size_t j = 0; p && j < p->nregs; j++)
				if (p->regs[j].start < r[k][1] && r[k][0] < p->regs[j].end)
					in = touched[base[d->ctx] + j] = true;
			if (!in)
				iv[nival++] = (struct svg_ival){ r[k][0], r[k][1], "unregistered" };
		}
	}
	for (size_t i = 0; i < T.nprocs; i++)
		for (size_t j = 0; j < T.procs[i]->nregs; j++)
			if (touched[base[i] + j]) {
				const struct region *r = &T.procs[i]->regs[j];

				iv[nival++] = (struct svg_ival){ r->start, r->end, r->name };
			}
	qsort(iv, nival, sizeof(*iv), cmp_ival);
	seg = svg_alloc(nival, sizeof(*seg));
	for (size_t i = 0; i < nival; i++) {
		struct svg_seg *s = nseg ? &seg[nseg - 1] : NULL;

		/* The same region in a fork child and its parent is one. */
		if (i && cmp_ival(&iv[i], &iv[i - 1]) == 0)
			continue;
		/* Regions at the same place (one unmapped, another mapped there) are one. */
		if (s && iv[i].start < s->end) {
			if (iv[i].end > s->end)
				s->end = iv[i].end;
			s->mixed |= strcmp(s->name, iv[i].name) != 0;
			s->nregs++;
			continue;
		}
		seg[nseg++] = (struct svg_seg){
			.start = iv[i].start, .end = iv[i].end, .name = iv[i].name, .nregs = 1
		};
	}
	/*
	 * Too many segments for their minimum height: those across the smallest gaps are joined
	 * into one, drawn with a thin break between them and no labels of their own.
	 */
	if (nseg > SVG_MAX_SEGS) {
		struct svg_gap *gap = svg_alloc(nseg - 1, sizeof(*gap));

		for (size_t i = 0; i + 1 < nseg; i++)
			gap[i] = (struct svg_gap){ seg[i + 1].start - seg[i].end,
						   seg[i + 1].end - seg[i].start, i };
		qsort(gap, nseg - 1, sizeof(*gap), cmp_gap);
		for (size_t i = 0; i < nseg - SVG_MAX_SEGS; i++)
			seg[gap[i].after].joined = true;
		free(gap);
	}
	/*
	 * Heights: a run of joined segments gets its share of the plot proportional to the bytes
	 * of its segments (not of the gaps between them), at least the minimum; inside it, each
	 * segment's is proportional to its size.
	 */
	if (nseg) {
		struct svg_run {
			size_t first, last;
			double bytes, h;
			bool fixed;
		} *run = svg_alloc(nseg, sizeof(*run));
		size_t nrun = 0;
		double room, minh, y = SVG_H;
		bool changed = true;

		for (size_t i = 0; i < nseg; i++) {
			if (!i || !seg[i - 1].joined)
				run[nrun++] = (struct svg_run){ .first = i };
			run[nrun - 1].last = i;
			run[nrun - 1].bytes += (double)(seg[i].end - seg[i].start);
		}
		room = SVG_H - (double)(nrun - 1) * SVG_BREAK;
		/* Few runs leave room: each gets at least half an equal share then. */
		minh = room / (double)(2 * nrun) > SVG_MIN_SEG ? room / (double)(2 * nrun) :
								 SVG_MIN_SEG;
		while (changed) {
			double sum = 0, left = room;

			changed = false;
			for (size_t i = 0; i < nrun; i++)
				if (run[i].fixed)
					left -= minh;
				else
					sum += run[i].bytes;
			for (size_t i = 0; i < nrun; i++) {
				if (run[i].fixed)
					continue;
				run[i].h = left * run[i].bytes / sum;
				if (run[i].h < minh) {
					run[i].fixed = changed = true;
					run[i].h = minh;
				}
			}
		}
		for (size_t i = 0; i < nrun; i++) {
			size_t k = run[i].last - run[i].first;
			double thin = k ? 0.25 * run[i].h / (double)k : 0;

			if (thin > SVG_THIN)
				thin = SVG_THIN;
			for (size_t j = run[i].first; j <= run[i].last; j++) {
				seg[j].ybot = y;
				seg[j].h = (run[i].h - (double)k * thin) *
					   (double)(seg[j].end - seg[j].start) / run[i].bytes;
				y -= seg[j].h + (j < run[i].last ? thin : SVG_BREAK);
			}
		}
		free(run);
	}
	free(iv);
	free(touched);
	free(base);
	*nseg_out = nseg;
	return seg;
}

/* Where @a is drawn: inside a segment linearly, in a gap at the middle of its break. */
static double svg_y(const struct svg_seg *seg, size_t nseg, uintptr_t a)
{
	size_t lo = 0, hi = nseg;

	if (!nseg)
		return SVG_H;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (seg[mid].start <= a)
			lo = mid;
		else
			hi = mid;
	}
	if (a < seg[lo].start)
		return seg[lo].ybot;
	if (a >= seg[lo].end)
		return lo + 1 < nseg ? (seg[lo].ybot - seg[lo].h + seg[lo + 1].ybot) / 2 :
				       seg[lo].ybot - seg[lo].h;
	return seg[lo].ybot -
	       seg[lo].h * (double)(a - seg[lo].start) / (double)(seg[lo].end - seg[lo].start);
}

/* The row of cells @ch high at @y, the last for the plot's bottom edge. */
static uint32_t svg_row(double y, double ch)
{
	uint32_t r = (uint32_t)(y / ch), last = (uint32_t)((SVG_H - 0.01) / ch);

	return r > last ? last : r;
}

/* The rows [r0, r1] of cells @ch high that [a, b) covers. */
static void svg_rows(const struct svg_seg *seg, size_t nseg, uintptr_t a, uintptr_t b, double ch,
		     uint32_t *r0, uint32_t *r1)
{
	double top = svg_y(seg, nseg, b), bot = svg_y(seg, nseg, a);

	*r0 = svg_row(top, ch);
	*r1 = bot - top > 0.01 ? svg_row(bot - 0.01, ch) : *r0;
	if (*r1 < *r0)
		*r1 = *r0;
}

/*
 * The marks of the events of @kinds in cells @cw x @ch pixels, counted, in @m (T.ndots long);
 * returns how many. @tids: the threads with a colour of their own (sorted), NULL for none.
 */
static size_t svg_bin(struct svg_mark *m, const char *kinds, const struct svg_seg *seg, size_t nseg,
		      double tend, double cw, double ch, const int *tids, size_t ntids)
{
	uint32_t ncols = (uint32_t)(SVG_W / cw);
	size_t n = 0, w = 0;

	for (size_t i = 0; i < T.ndots; i++) {
		const struct dot *d = &T.dots[i];
		uintptr_t end = dot_end(d, T.page);
		struct svg_mark k = { .kind = d->kind, .n = 1 };
		const int *at;

		if (!strchr(kinds, d->kind))
			continue;
		k.col = (uint32_t)(SVG_W * d->t / tend / cw);
		if (k.col >= ncols)
			k.col = ncols - 1;
		if (d->kind == 'f') {
			k.r0 = k.r1 = svg_row(svg_y(seg, nseg, d->addr + T.page / 2), ch);
			at = tids ? bsearch(&(int){ d->tid }, tids, ntids, sizeof(int), cmp_int) :
				    NULL;
			k.tid = at ? (int)(at - tids) : 0;
		} else {
			svg_rows(seg, nseg, d->addr, end, ch, &k.r0, &k.r1);
		}
		if (d->kind == 'm')
			svg_rows(seg, nseg, d->to, d->to + (end - d->addr), ch, &k.r2, &k.r3);
		m[n++] = k;
	}
	qsort(m, n, sizeof(*m), cmp_mark);
	for (size_t i = 0; i < n; i++) {
		if (w && cmp_mark(&m[w - 1], &m[i]) == 0) {
			m[w - 1].n += m[i].n;
			if (m[w - 1].tid != m[i].tid)
				m[w - 1].tid = SVG_THREADS;
			continue;
		}
		m[w++] = m[i];
	}
	return w;
}

/* Bins the events of @kinds, coarser until at most @max marks; returns how many, and the cell. */
static size_t svg_bin_within(struct svg_mark *m, const char *kinds, size_t max,
			     const struct svg_seg *seg, size_t nseg, double tend, const int *tids,
			     size_t ntids, double *cw, double *ch)
{
	size_t n;

	/* From 2 x 2 pixels; a cell the whole plot wide and high holds one mark of each kind. */
	for (*cw = *ch = 2;; *cw *= 2, *ch *= 2) {
		n = svg_bin(m, kinds, seg, nseg, tend, *cw, *ch, tids, ntids);
		if (n <= max || (*cw >= SVG_W && *ch >= SVG_H))
			return n;
	}
}

/* Legend items are laid out left to right, wrapping at the picture's width. */
struct svg_legend {
	FILE *f;
	double x, y, right;
};

/* Where the next item @w pixels wide goes: on this line, or at the start of the next. */
static void legend_place(struct svg_legend *lg, double w)
{
	if (lg->x + w > lg->right && lg->x > 10) {
		lg->x = 10;
		lg->y += 16;
	}
	fprintf(lg->f, "<g transform=\"translate(%.0f,%.0f)\">", lg->x, lg->y);
	lg->x += w;
}

static void legend_item(struct svg_legend *lg, const char *swatch, const char *label)
{
	legend_place(lg, 16 + SVG_CHAR * 1.1 * (double)strlen(label) + 14);
	fprintf(lg->f, "%s<text x=\"16\" y=\"9\" font-size=\"11\">", swatch);
	svg_text(lg->f, label, 200);
	fprintf(lg->f, "</text></g>\n");
}

/* The intensity scale, as one item so that it is never split between two lines. */
static void legend_levels(struct svg_legend *lg)
{
	static const char head[] = "faults per cell:";
	char label[SVG_LEVELS][24];
	double w = SVG_CHAR * 1.1 * (double)strlen(head) + 6, x;

	for (size_t i = 0; i < SVG_LEVELS; i++) {
		if (i + 1 == SVG_LEVELS)
			snprintf(label[i], sizeof(label[i]), "%u+", svg_level_from[i]);
		else if (svg_level_from[i + 1] - 1 > svg_level_from[i])
			snprintf(label[i], sizeof(label[i]), "%u-%u", svg_level_from[i],
				 svg_level_from[i + 1] - 1);
		else
			snprintf(label[i], sizeof(label[i]), "%u", svg_level_from[i]);
		w += 16 + SVG_CHAR * 1.1 * (double)strlen(label[i]) + 8;
	}
	legend_place(lg, w + 6);
	fprintf(lg->f, "<text y=\"9\" font-size=\"11\">%s</text>", head);
	x = SVG_CHAR * 1.1 * (double)strlen(head) + 6;
	for (size_t i = 0; i < SVG_LEVELS; i++) {
		fprintf(lg->f,
			"<rect class=\"t0 i%zu\" x=\"%.0f\" y=\"1\" width=\"10\" height=\"10\"/>"
			"<text x=\"%.0f\" y=\"9\" font-size=\"11\">%s</text>",
			i, x, x + 16, label[i]);
		x += 16 + SVG_CHAR * 1.1 * (double)strlen(label[i]) + 8;
	}
	fprintf(lg->f, "</g>\n");
}

/* The time axis: ticks at round values, 1, 2 or 5 times a power of ten seconds apart. */
static double svg_time_step(double tmax, int *decimals)
{
	static const double mult[] = { 1, 2, 5 };
	/* At most one tick per 80 pixels, so that labels of up to 12 characters never touch. */
	double raw = tmax / (SVG_W / 80), p = 1e-6;
	int e = -6;

	for (;; e++, p *= 10)
		for (size_t i = 0; i < sizeof(mult) / sizeof(mult[0]); i++)
			if (mult[i] * p >= raw * (1 - 1e-9)) {
				*decimals = e < 0 ? -e : 0;
				return mult[i] * p;
			}
}

static void write_svg(const char *path, char **argv)
{
	size_t nseg, ntids = 0, nf, ns, nr;
	struct svg_seg *seg = svg_segments(&nseg);
	struct svg_mark *m = svg_alloc(T.ndots, sizeof(*m));
	int *tids = svg_alloc(T.ndots, sizeof(int)), decimals;
	uint64_t count[4] = { 0 }; /* faults, unmaps, removes, remaps */
	double tmax = 1e-3, step, tend, cw, ch, dot, top, width = SVG_L + SVG_W + SVG_R;
	char title[512] = "", sz[16];
	size_t tl = 0;
	struct svg_legend lg;
	FILE *f = fopen(path, "we");

	if (!f)
		tool_die("cannot write '%s': %s", path, strerror(errno));
	for (size_t i = 0; i < T.ndots; i++) {
		const struct dot *d = &T.dots[i];

		if (d->t > tmax)
			tmax = d->t;
		count[d->kind == 'f' ? 0 : d->kind == 'u' ? 1 : d->kind == 'r' ? 2 : 3]++;
		if (d->kind == 'f')
			tids[ntids++] = d->tid;
	}
	qsort(tids, ntids, sizeof(int), cmp_int);
	{
		size_t w = 0;

		for (size_t i = 0; i < ntids; i++)
			if (!w || tids[w - 1] != tids[i])
				tids[w++] = tids[i];
		ntids = w;
	}
	step = svg_time_step(tmax, &decimals);
	tend = step;
	while (tend < tmax * (1 - 1e-9))
		tend += step;
	for (char **a = argv; *a && tl < sizeof(title) - 1; a++)
		tl += (size_t)snprintf(title + tl, sizeof(title) - tl, "%s%s", tl ? " " : "", *a);

	/* The title, and the legend under it: its height is known once it is laid out. */
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
	lg = (struct svg_legend){ .x = 10, .y = 30, .right = width - 10 };
	/* The legend is written to a memory buffer first, since the svg element needs the height. */
	{
		char *buf = NULL;
		size_t blen = 0;
		char sw[256];

		lg.f = open_memstream(&buf, &blen);
		if (!lg.f)
			tool_die("out of memory");
		if (ntids <= SVG_THREADS) {
			for (size_t i = 0; i < ntids; i++) {
				char label[40];

				snprintf(label, sizeof(label), "faults of thread %d", tids[i]);
				snprintf(
					sw, sizeof(sw),
					"<rect class=\"t%zu\" y=\"1\" width=\"10\" height=\"10\"/>",
					i);
				legend_item(&lg, sw, label);
			}
			if (ntids > 1)
				legend_item(
					&lg,
					"<rect class=\"t8\" y=\"1\" width=\"10\" height=\"10\"/>",
					"faults of several threads in one cell");
		} else {
			char label[48];

			snprintf(label, sizeof(label), "faults of any of %zu threads", ntids);
			legend_item(&lg, "<rect class=\"t0\" y=\"1\" width=\"10\" height=\"10\"/>",
				    label);
		}
		legend_levels(&lg);
		legend_item(&lg, "<rect class=\"unmap\" y=\"0\" width=\"3\" height=\"12\"/>",
			    "unmap (munmap, mremap's old place, brk shrink)");
		legend_item(&lg, "<rect class=\"remove\" y=\"0\" width=\"3\" height=\"12\"/>",
			    "remove (madvise DONTNEED/FREE)");
		legend_item(&lg,
			    "<g class=\"remap\"><rect y=\"0\" width=\"3\" height=\"4\"/>"
			    "<line x1=\"1.5\" x2=\"1.5\" y1=\"2\" y2=\"11\"/></g>",
			    "remap: from -> to (mremap move)");
		legend_item(&lg, "<rect class=\"brk\" y=\"2\" width=\"12\" height=\"8\"/>",
			    "break: addresses skipped");
		if (fclose(lg.f) != 0)
			tool_die("out of memory");
		top = lg.y + 24;
		fprintf(f,
			"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
			"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
			width, top + SVG_H + 56, width, top + SVG_H + 56);
		fprintf(f, "<title>uffd-trace: address against time</title>\n");
		fprintf(f,
			"<style>\n"
			".t0{fill:%s}.t1{fill:%s}.t2{fill:%s}.t3{fill:%s}.t4{fill:%s}"
			".t5{fill:%s}.t6{fill:%s}.t7{fill:%s}.t8{fill:%s}\n"
			".i0{fill-opacity:%s}.i1{fill-opacity:%s}.i2{fill-opacity:%s}"
			".i3{fill-opacity:%s}.i4{fill-opacity:%s}\n"
			".unmap{fill:#d62728;fill-opacity:.8}.remove{fill:#ff7f0e;"
			"fill-opacity:.8}\n"
			".remap rect{fill:#9467bd}.remap line{stroke:#9467bd;stroke-width:1.2}\n"
			".brk{fill:#e8e8e8}.seg{fill:#fff;stroke:#999}.tick{stroke:#000}"
			".grid{stroke:#eee}\n"
			".addr{font-family:monospace}\n"
			"</style>\n",
			svg_thread_colours[0], svg_thread_colours[1], svg_thread_colours[2],
			svg_thread_colours[3], svg_thread_colours[4], svg_thread_colours[5],
			svg_thread_colours[6], svg_thread_colours[7], svg_thread_colours[8],
			svg_level_opacity[0], svg_level_opacity[1], svg_level_opacity[2],
			svg_level_opacity[3], svg_level_opacity[4]);
		fprintf(f,
			"<defs><marker id=\"arrow\" viewBox=\"0 0 6 6\" refX=\"6\" refY=\"3\" "
			"markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0L6,3L0,6z\" "
			"fill=\"#9467bd\"/></marker></defs>\n");
		fprintf(f, "<g id=\"title\"><text x=\"10\" y=\"16\" font-size=\"12\">");
		{
			char head[160];

			snprintf(head, sizeof(head),
				 "uffd-trace: %" PRIu64 " faults, %" PRIu64 " unmaps, %" PRIu64
				 " remaps, %" PRIu64 " removes in %zu address space%s -- ",
				 count[0], count[1], count[3], count[2], T.nprocs,
				 T.nprocs == 1 ? "" : "s");
			svg_text(f, head, sizeof(head));
			/* At 12 px, a character is at most 7.44 px wide (0.62 em). */
			size_t fit = (size_t)((width - 20) / 7.44);

			svg_text(f, title, fit > strlen(head) ? fit - strlen(head) : 0);
		}
		fprintf(f, "</text></g>\n<g id=\"legend\">\n");
		fwrite(buf, 1, blen, f);
		fprintf(f, "</g>\n");
		free(buf);
	}

	fprintf(f, "<g id=\"plot\" transform=\"translate(%.0f,%.0f)\">\n", SVG_L, top);
	/* Segments, breaks and the address axis. */
	fprintf(f, "<g id=\"address-axis\" font-size=\"10\">\n");
	for (size_t i = 0, j; i < nseg; i = j + 1) {
		double ybot = seg[i].ybot, y0;
		uint64_t bytes = 0;
		unsigned nregs = 0;
		bool mixed = false;
		char name[48];

		/* A run of joined segments is labelled as one. */
		for (j = i;; j++) {
			bytes += seg[j].end - seg[j].start;
			nregs += seg[j].nregs;
			mixed |= seg[j].mixed || strcmp(seg[j].name, seg[i].name) != 0;
			if (!seg[j].joined || j + 1 == nseg)
				break;
		}
		y0 = seg[j].ybot - seg[j].h;
		fprintf(f,
			"<rect class=\"seg\" x=\"0\" y=\"%.1f\" width=\"%.0f\" height=\"%.1f\"/>\n",
			y0, SVG_W, ybot - y0);
		for (size_t k = i; k < j; k++) {
			double top = seg[k].ybot - seg[k].h, below = seg[k + 1].ybot;

			if (top - below > 0.05)
				fprintf(f,
					"<rect class=\"brk\" x=\"0\" y=\"%.2f\" width=\"%.0f\" "
					"height=\"%.2f\"/>\n",
					below, SVG_W, top - below);
		}
		/* Each address inside its own run: they cannot overlap a neighbour's. */
		fprintf(f,
			"<path class=\"tick\" d=\"M-5,%.1fh5M-5,%.1fh5\"/>"
			"<text class=\"addr\" x=\"-7\" y=\"%.1f\" text-anchor=\"end\" "
			"font-size=\"10\">0x%" PRIxPTR "</text>"
			"<text class=\"addr\" x=\"-7\" y=\"%.1f\" text-anchor=\"end\" "
			"font-size=\"10\">0x%" PRIxPTR "</text>\n",
			ybot, y0, ybot - 1, seg[i].start, y0 + 9, seg[j].end);
		if (nregs == 1)
			snprintf(name, sizeof(name), "%s", seg[i].name);
		else if (!mixed)
			snprintf(name, sizeof(name), "%s (%u regions)", seg[i].name, nregs);
		else
			snprintf(name, sizeof(name), "%u regions", nregs);
		human_size(bytes, sz);
		fprintf(f, "<text class=\"region\" x=\"%.0f\" y=\"%.1f\" font-size=\"10\">",
			SVG_W + 6, y0 + 9);
		svg_text(f, name, (size_t)((SVG_R - 10) / SVG_CHAR));
		fprintf(f,
			"</text><text class=\"size\" x=\"%.0f\" y=\"%.1f\" font-size=\"10\">%s</text>\n",
			SVG_W + 6, y0 + 20, sz);
		if (j + 1 < nseg) {
			double by = y0 - SVG_BREAK;

			if (seg[j + 1].start == seg[j].end)
				snprintf(sz, sizeof(sz), "none");
			else
				human_size(seg[j + 1].start - seg[j].end, sz);
			fprintf(f,
				"<g class=\"break\"><rect class=\"brk\" x=\"0\" y=\"%.1f\" "
				"width=\"%.0f\" height=\"%.0f\"/>"
				"<path d=\"M-6,%.1fl12,-4M-6,%.1fl12,-4\" stroke=\"#000\"/>"
				"<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"9\" "
				"fill=\"#555\">%s skipped</text></g>\n",
				by, SVG_W, SVG_BREAK, by + SVG_BREAK / 2 + 3,
				by + SVG_BREAK / 2 - 1, SVG_W - 4, by + SVG_BREAK - 3, sz);
		}
	}
	fprintf(f, "</g>\n");
	/* The time axis, with grid lines at its ticks. */
	fprintf(f, "<g id=\"time-axis\" font-size=\"10\">\n");
	for (int k = 0; k * step <= tend * (1 + 1e-9); k++) {
		double x = SVG_W * k * step / tend;

		fprintf(f,
			"<path class=\"grid\" d=\"M%.1f,0v%.0f\"/><path class=\"tick\" "
			"d=\"M%.1f,%.0fv5\"/><text class=\"tick-label\" x=\"%.1f\" y=\"%.0f\" "
			"text-anchor=\"middle\" font-size=\"10\">%.*f</text>\n",
			x, SVG_H, x, SVG_H, x, SVG_H + 16, decimals, k * step);
	}
	fprintf(f,
		"<text class=\"axis-title\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
		"font-size=\"11\">time since uffd-trace started (s)</text>\n",
		SVG_W / 2, SVG_H + 32);
	fprintf(f,
		"<text class=\"note\" x=\"0\" y=\"%.0f\" font-size=\"10\" fill=\"#555\">address: "
		"regions stacked, low at the bottom; each linear, its height proportional to its "
		"size (at least %.0f px); grey bands skip the addresses between them</text>\n",
		SVG_H + 48, SVG_MIN_SEG);
	fprintf(f, "</g>\n");

	/* The marks: unmaps and removes under the faults, which let them show through, and remaps
	 * on top. */
	fprintf(f, "<g id=\"marks\">\n");
	ns = svg_bin_within(m, "ur", SVG_SPAN_MARKS, seg, nseg, tend, NULL, 0, &cw, &ch);
	for (size_t i = 0; i < ns; i++)
		fprintf(f,
			"<rect class=\"%s\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
			"data-n=\"%" PRIu64 "\"/>\n",
			m[i].kind == 'u' ? "unmap" : "remove", m[i].col * cw, m[i].r0 * ch, cw,
			(m[i].r1 - m[i].r0 + 1) * ch, m[i].n);
	nf = svg_bin_within(m, "f", SVG_FAULT_MARKS, seg, nseg, tend,
			    ntids <= SVG_THREADS ? tids : NULL, ntids, &cw, &ch);
	/* Few marks are drawn larger than their cell, to be seen at all. */
	dot = nf <= 300 ? 5 : nf <= 3000 ? 3 : 0;
	if (dot < cw)
		dot = cw;
	for (size_t i = 0; i < nf; i++) {
		size_t lv = 0;

		while (lv + 1 < SVG_LEVELS && m[i].n >= svg_level_from[lv + 1])
			lv++;
		fprintf(f,
			"<rect class=\"fault t%d i%zu\" x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" "
			"height=\"%.0f\" data-n=\"%" PRIu64 "\"/>\n",
			m[i].tid, lv, (m[i].col + 0.5) * cw - dot / 2,
			(m[i].r0 + 0.5) * ch - dot / 2, dot, dot, m[i].n);
	}
	nr = svg_bin_within(m, "m", SVG_REMAP_MARKS, seg, nseg, tend, NULL, 0, &cw, &ch);
	for (size_t i = 0; i < nr; i++) {
		double x = m[i].col * cw, from = (m[i].r0 + m[i].r1 + 1) * ch / 2,
		       to = (m[i].r2 + m[i].r3 + 1) * ch / 2;

		fprintf(f,
			"<g class=\"remap\" data-n=\"%" PRIu64 "\"><rect x=\"%.0f\" y=\"%.0f\" "
			"width=\"%.0f\" height=\"%.0f\"/><rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" "
			"height=\"%.0f\" fill-opacity=\".5\"/><line x1=\"%.1f\" x2=\"%.1f\" "
			"y1=\"%.1f\" y2=\"%.1f\" marker-end=\"url(#arrow)\"/></g>\n",
			m[i].n, x, m[i].r0 * ch, cw, (m[i].r1 - m[i].r0 + 1) * ch, x, m[i].r2 * ch,
			cw, (m[i].r3 - m[i].r2 + 1) * ch, x + cw / 2, x + cw / 2, from, to);
	}
	fprintf(f, "</g>\n");
	if (!T.ndots)
		fprintf(f,
			"<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" font-size=\"12\">no "
			"events traced</text>\n",
			SVG_W / 2, SVG_H / 2);
	fprintf(f, "</g>\n</svg>\n");
	free(m);
	free(tids);
	free(seg);
	if (fclose(f) != 0)
		tool_die("cannot write '%s': %s", path, strerror(errno));
}

/* ---- summary ---- */

static void print_summary(void)
{
	uint64_t f = 0, um = 0, rm = 0, rv = 0, fk = 0;
	char b[16];

	if (!T.json)
		fprintf(T.out,
			"summary: per region of each address space (ctx), first-touch faults, "
			"unmaps, remaps, removes, peak registered bytes\n");
	for (size_t i = 0; i < T.nprocs; i++) {
		struct proc *p = T.procs[i];

		for (size_t j = 0; j < p->nregs; j++) {
			struct region *r = &p->regs[j];

			if (!r->faults && !r->unmaps && !r->remaps && !r->removes && !r->peak)
				continue;
			if (T.json)
				fprintf(T.out,
					"{\"summary\":\"region\",\"ctx\":%u,\"pid\":%d,"
					"\"region\":\"%s\",\"start\":\"0x%" PRIxPTR "\","
					"\"faults\":%" PRIu64 ",\"unmaps\":%" PRIu64
					",\"remaps\":%" PRIu64 ",\"removes\":%" PRIu64
					",\"peak_registered\":%" PRIu64 "}\n",
					p->id, (int)p->pid, r->name, r->start, r->faults, r->unmaps,
					r->remaps, r->removes, r->peak);
			else
				fprintf(T.out,
					"  ctx %-3u pid %-7s %-7s 0x%-14" PRIxPTR " faults=%" PRIu64
					" unmaps=%" PRIu64 " remaps=%" PRIu64 " removes=%" PRIu64
					" peak_registered=%" PRIu64 "\n",
					p->id, pid_text(p->pid, b), r->name, r->start, r->faults,
					r->unmaps, r->remaps, r->removes, r->peak);
		}
		if (T.json)
			fprintf(T.out,
				"{\"summary\":\"process\",\"ctx\":%u,\"pid\":%d,\"faults\":%" PRIu64
				",\"unmaps\":%" PRIu64 ",\"remaps\":%" PRIu64
				",\"removes\":%" PRIu64 ",\"forks\":%" PRIu64
				",\"peak_registered\":%" PRIu64 "}\n",
				p->id, (int)p->pid, p->faults, p->unmaps, p->remaps, p->removes,
				p->forks, p->peak_bytes);
		else
			fprintf(T.out,
				"process: ctx %u pid %s faults=%" PRIu64 " unmaps=%" PRIu64
				" remaps=%" PRIu64 " removes=%" PRIu64 " forks=%" PRIu64
				" peak_registered=%" PRIu64 "\n",
				p->id, pid_text(p->pid, b), p->faults, p->unmaps, p->remaps,
				p->removes, p->forks, p->peak_bytes);
		f += p->faults;
		um += p->unmaps;
		rm += p->remaps;
		rv += p->removes;
		fk += p->forks;
	}
	if (T.json)
		fprintf(T.out,
			"{\"summary\":\"total\",\"contexts\":%zu,\"faults\":%" PRIu64
			",\"unmaps\":%" PRIu64 ",\"remaps\":%" PRIu64 ",\"removes\":%" PRIu64
			",\"forks\":%" PRIu64 ",\"refused\":%lu,\"peak_registered\":%" PRIu64 "}\n",
			T.nprocs, f, um, rm, rv, fk, T.refused, T.peak_bytes);
	else
		fprintf(T.out,
			"total: contexts=%zu faults=%" PRIu64 " unmaps=%" PRIu64 " remaps=%" PRIu64
			" removes=%" PRIu64 " forks=%" PRIu64
			" refused=%lu peak_registered=%" PRIu64 "\n",
			T.nprocs, f, um, rm, rv, fk, T.refused, T.peak_bytes);
}

/* ---- starting the program ---- */

/* The preload library: --preload, else next to this program (the build tree), else in its
 * private directory of the prefix this program is installed in (<prefix>/bin/../<libdir>/
 * uffd-trace/, which follows a moved prefix), else at the absolute path of the prefix CMake was
 * configured with. */
static char *find_preload(const char *given)
{
	char exe[PATH_MAX], *dir, *cand;
	ssize_t n;

	if (given)
		return realpath(given, NULL);
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	dir = strrchr(exe, '/');
	if (!dir)
		return NULL;
	*dir = '\0';
	/* Each candidate: a directory (this program's, or none for an absolute path), a path. */
	const struct {
		const char *base, *path;
	} tries[] = {
		{ exe, "/" PRELOAD_NAME },
		{ exe, "/../" UFFD_TRACE_PRELOAD_DIR "/" PRELOAD_NAME },
		{ "", UFFD_TRACE_PRELOAD_FULLDIR "/" PRELOAD_NAME },
	};
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		if (asprintf(&cand, "%s%s", tries[i].base, tries[i].path) < 0)
			return NULL;
		if (access(cand, R_OK) == 0) {
			char *real = realpath(cand, NULL);

			free(cand);
			return real;
		}
		free(cand);
	}
	return NULL;
}

/* The signals whose handling uffd-trace changes for itself, and how it found them. */
static const int saved_sigs[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE };
#define NSAVED (sizeof(saved_sigs) / sizeof(saved_sigs[0]))
static struct sigaction saved_acts[NSAVED];

static void forward_signal(int sig)
{
	if (T.child > 0)
		kill(T.child, sig);
}

static pid_t start_program(char **argv, const char *preload, const char *sockpath)
{
	const char *old = getenv("LD_PRELOAD");
	char *pre;
	pid_t pid;

	if (old && *old) {
		if (asprintf(&pre, "%s:%s", old, preload) < 0)
			tool_die("out of memory");
	} else {
		pre = strdup(preload);
		if (!pre)
			tool_die("out of memory");
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		tool_die("cannot fork: %s", strerror(errno));
	if (pid == 0) {
		/* The program gets the signal dispositions uffd-trace was given, not its own. */
		for (size_t i = 0; i < NSAVED; i++)
			sigaction(saved_sigs[i], &saved_acts[i], NULL);
		if (setenv("LD_PRELOAD", pre, 1) || setenv(TRACE_ENV_SOCKET, sockpath, 1))
			_exit(127);
		execvp(argv[0], argv);
		/* As a shell says it: 127 not found, 126 found but not runnable. */
		tool_warn("cannot run '%s': %s", argv[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	free(pre);
	return pid;
}

/* Exit as the program did: its code, or the signal that killed it (without a core). */
static noreturn void exit_like(int status)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		struct rlimit none = { 0, 0 };
		sigset_t set;

		fflush(NULL);
		setrlimit(RLIMIT_CORE, &none);
		signal(sig, SIG_DFL);
		sigemptyset(&set);
		sigaddset(&set, sig);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(sig);
		exit(128 + sig);
	}
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

static void help(void)
{
	printf("%s\n\n"
	       "Runs PROGRAM under a userfaultfd monitor and prints, as they happen, its first\n"
	       "touches of private anonymous memory (heap and anonymous mappings), and every\n"
	       "munmap, mremap, madvise(DONTNEED/FREE) and fork that affects that memory. Faults\n"
	       "are answered with zero pages, as the kernel would: the program's output and exit\n"
	       "status are unchanged. A preload library (" PRELOAD_NAME ") hands each\n"
	       "process's userfaultfd to uffd-trace before main(); exec'd programs are followed.\n\n"
	       "Each line: seconds since start, pid[/tid], event, address or range, region.\n\n"
	       "  -o, --output FILE    write the trace to FILE instead of stderr\n"
	       "  -j, --json           one JSON object per line\n"
	       "  -s, --summary        at the end, per region: first-touch faults, unmaps, remaps,\n"
	       "                       removes and peak registered bytes; per process and in\n"
	       "                       total (peak: of all processes at once)\n"
	       "  -q, --quiet          no line per event (with --summary: the summary only)\n"
	       "      --order FILE     the first-touch order in libuffd's order format (struct\n"
	       "                       uffd_order): a header line 'uffd-order 1', then one line\n"
	       "                       'OFFSET LENGTH REGION' per run of pages touched one after\n"
	       "                       the other, OFFSET counted from the start of the region,\n"
	       "                       REGION its name and start ('anon@0x7f0000000000'); a\n"
	       "                       trace has no image, so lazy-load and uffd-serve refuse it\n"
	       "                       until the regions are turned into image offsets\n"
	       "      --svg FILE       a picture (SVG) of address against time in seconds, for\n"
	       "                       all processes at once. The address axis stacks the\n"
	       "                       regions that saw events, low addresses at the bottom, each\n"
	       "                       with its addresses and name, and a grey break band for\n"
	       "                       the addresses skipped between two. Each region is linear,\n"
	       "                       its height proportional to its size but at least 24\n"
	       "                       pixels (half an equal share when there are few); past 15\n"
	       "                       regions, those across the smallest gaps share one label\n"
	       "                       and are split by thin breaks. Faults are binned into\n"
	       "                       cells of 2x2 pixels, coloured by thread (up to 8), darker\n"
	       "                       for more faults; unmaps (red) and removes (orange) are\n"
	       "                       vertical marks over their range, remaps purple arrows\n"
	       "                       from the old place to the new. Where there would be too\n"
	       "                       many marks, cells grow: the file stays under 1 MB\n"
	       "      --user-faults    without privilege too, trace first touches: the program's\n"
	       "                       userfaultfd is then user-mode-only, and a system call that\n"
	       "                       writes into untouched memory (read() into a new buffer)\n"
	       "                       fails with EFAULT; without this option such a program runs\n"
	       "                       unchanged and only unmaps, remaps and removes are traced\n"
	       "  -p, --preload PATH   the preload library (default: next to uffd-trace, else in\n"
	       "                       " UFFD_TRACE_PRELOAD_FULLDIR ")\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: the program's; 1 when uffd-trace itself fails, 2 on a usage error.\n",
	       usage_line);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "json", no_argument, NULL, 'j' },
		{ "summary", no_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "preload", required_argument, NULL, 'p' },
		{ "order", required_argument, NULL, 'O' },
		{ "svg", required_argument, NULL, 'G' },
		{ "user-faults", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *outpath = NULL, *preload_opt = NULL, *orderpath = NULL, *svgpath = NULL,
		   *tmpdir = getenv("TMPDIR");
	char dir[PATH_MAX], sockpath[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct uffd_config probe_cfg = { .flags = UFFD_OPEN_KERNEL_FAULTS,
					 .optional = UFFD_FEATURE_EVENT_FORK };
	bool child_done = false;
	double drain_until = 0, next_scan = 0;
	int c, lsock, pidfd, status = 0, err;
	uint64_t offered = 0;
	struct uffd *probe;
	char *preload;

	tool_init("uffd-trace", usage_line);
	/* '+': options end at PROGRAM, whose own options are its own. */
	while ((c = getopt_long(argc, argv, "+:o:jsqp:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			outpath = optarg;
			break;
		case 'j':
			T.json = true;
			break;
		case 's':
			T.summary = true;
			break;
		case 'q':
			T.quiet = true;
			break;
		case 'p':
			preload_opt = optarg;
			break;
		case 'O':
			orderpath = optarg;
			break;
		case 'G':
			svgpath = optarg;
			break;
		case 'U':
			T.user_faults = true;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	if (optind >= argc)
		tool_usage_error("no program to run");

	T.page = tool_page_size();
	T.out = stderr;
	if (outpath) {
		T.out = fopen(outpath, "we");
		if (!T.out)
			tool_die("cannot open '%s': %s", outpath, strerror(errno));
	}
	if (orderpath) {
		T.order = fopen(orderpath, "we");
		if (!T.order)
			tool_die("cannot open '%s': %s", orderpath, strerror(errno));
		fprintf(T.order, "uffd-order 1\n# uffd-trace: OFFSET LENGTH REGION, OFFSET from "
				 "the start of REGION (NAME@START)\n");
	}
	if (!svgpath)
		T.dotcap = (size_t)-1;
	preload = find_preload(preload_opt);
	if (!preload)
		tool_die(preload_opt ? "cannot find the preload library '%s'" :
				       "cannot find the preload library %s next to uffd-trace "
				       "or in " UFFD_TRACE_PRELOAD_FULLDIR
				       " (give it with --preload)",
			 preload_opt ? preload_opt : PRELOAD_NAME);

	/* What the traced processes will be allowed: the same as this process. */
	err = uffd_probe(&offered, NULL);
	if (err)
		tool_die("cannot open a userfaultfd: %s", uffd_strerror(err));
	/*
	 * The traced processes run as this user: what it may open, they may (the preload library
	 * tries the same, and tells each process's outcome, which decides how it is registered).
	 */
	if (uffd_open(&probe, &probe_cfg) == 0) {
		if (!(uffd_features(probe) & UFFD_FEATURE_EVENT_FORK))
			tool_warn("note: fork children are not followed (EVENT_FORK needs "
				  "CAP_SYS_PTRACE); exec'd programs still are");
		uffd_close(probe);
	} else {
		if (T.user_faults)
			tool_warn("note: user-mode faults only (--user-faults): a system call that "
				  "writes into untouched traced memory fails with EFAULT");
		else
			tool_warn("note: user-mode faults only, so first touches are not traced "
				  "(--user-faults traces them, but then a system call writing into "
				  "untouched memory fails with EFAULT); unmaps, remaps and removes "
				  "are");
		tool_warn("note: fork children are not followed (EVENT_FORK needs CAP_SYS_PTRACE); "
			  "exec'd programs still are");
	}
	(void)offered;

	err = uffd_monitor_new(&T.m);
	if (err)
		tool_die("cannot make a monitor: %s", uffd_strerror(err));
	/* The socket lives in a directory only this user can enter. */
	snprintf(dir, sizeof(dir), "%s/uffd-trace.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(dir))
		tool_die("cannot make a directory in '%s': %s", tmpdir ? tmpdir : "/tmp",
			 strerror(errno));
	if ((size_t)snprintf(sockpath, sizeof(sockpath), "%s/sock", dir) >= sizeof(sockpath)) {
		rmdir(dir);
		tool_die("the socket path under '%s' is too long", dir);
	}
	memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
	lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lsock < 0 || bind(lsock, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(lsock, 64) != 0) {
		err = errno;
		rmdir(dir);
		tool_die("cannot listen on '%s': %s", sockpath, strerror(err));
	}

	for (size_t i = 0; i < NSAVED; i++)
		sigaction(saved_sigs[i], NULL, &saved_acts[i]);
	signal(SIGINT, SIG_IGN); /* the terminal signals the program itself; report how it ends */
	signal(SIGQUIT, SIG_IGN);
	signal(SIGTERM, forward_signal);
	signal(SIGHUP, forward_signal);
	signal(SIGPIPE, SIG_IGN);
	T.t0 = tool_now();
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		T.t0_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - (tool_now() - T.t0);
	}
	T.child = start_program(argv + optind, preload, sockpath);
	free(preload);
	pidfd = (int)syscall(SYS_pidfd_open, T.child, 0);
	if (pidfd < 0)
		tool_die("cannot watch the program: %s", strerror(errno));

	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = lsock, .events = POLLIN },
			{ .fd = uffd_monitor_fd(T.m), .events = POLLIN },
			{ .fd = child_done ? -1 : pidfd, .events = POLLIN },
		};
		double now;

		if (poll(pfd, 3, RESCAN_MS) < 0 && errno != EINTR)
			tool_die("poll: %s", strerror(errno));
		if (pfd[0].revents & POLLIN)
			accept_one(lsock);
		run_monitor(true);
		now = tool_now();
		if (T.rescan || now >= next_scan) {
			for (size_t i = 0; i < T.nprocs; i++)
				rescan(T.procs[i]);
			T.rescan = false;
			next_scan = now + RESCAN_MS / 1000.0;
		}
		if (!child_done && (pfd[2].revents & POLLIN)) {
			if (waitpid(T.child, &status, 0) == T.child) {
				child_done = true;
				drain_until = now + DRAIN_MS / 1000.0;
				/*
				 * Children that exec'd without a fault left contexts whose exit
				 * only a probe notices: probe now, not at the next tick.
				 */
				uffd_monitor_probe(T.m);
			}
		}
		if (child_done && (uffd_monitor_count(T.m) == 0 || now >= drain_until))
			break;
	}
	/* One last pass: whatever was read is printed before the contexts are closed. */
	run_monitor(false);
	if (T.summary)
		print_summary();
	if (svgpath)
		write_svg(svgpath, argv + optind);
	if (T.order)
		order_flush();
	if (T.order && fclose(T.order) != 0)
		tool_die("cannot write '%s': %s", orderpath, strerror(errno));
	free(T.dots);
	fflush(T.out);
	if (T.out != stderr)
		fclose(T.out);
	/* Closing the contexts lets any process still running (a daemon the program left
	 * behind) run on unmonitored. */
	uffd_monitor_free(T.m);
	close(lsock);
	close(pidfd);
	unlink(sockpath);
	rmdir(dir);
	for (size_t i = 0; i < T.nprocs; i++) {
		free(T.procs[i]->regs);
		free(T.procs[i]->moving);
		free(T.procs[i]);
	}
	free(T.procs);
	exit_like(status);
}
