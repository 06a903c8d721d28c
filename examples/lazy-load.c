/* SPDX-License-Identifier: MIT */
/* lazy-load: serve each first touch of memory from a file (the snapshot-restore pattern). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static const char usage_line[] = "usage: lazy-load [--readahead N] [--threads N] [--quiet] "
				 "[--kernel-faults] [--help] [--version] FILE";

/* The workload walks the memory in chunks; it moves, replaces or discards a few of them. */
#define CHUNK_PAGES 64

static size_t page;

/* The monitor's side: where pages come from, and what it did. Touched by the dispatcher only. */
struct loader {
	const unsigned char *src; /* the file, mapped */
	size_t src_len;		  /* its pages, in bytes */
	size_t readahead;	  /* pages served per fault */
	bool quiet;
	unsigned long served;  /* pages copied in */
	unsigned long present; /* pages skipped because they were there already */
};

/* The workload's side: the memory, chunk by chunk, wherever each chunk lives now. */
struct memory {
	struct uffd *u;
	const unsigned char *src;
	size_t len; /* bytes of memory: the file's size rounded up to pages */
	size_t nchunks;
	char **chunk; /* where chunk i lives now (moved chunks live elsewhere) */
	char **spare; /* per thread: address space reserved for the chunk it moves */
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

/* ---- the monitor ---- */

/*
 * A missing page was touched: copy it in from the file, and the pages after it (readahead).
 * Everything comes from the range: `data` is the file byte that the registration's first page
 * stands for and `offset` how far into the registration this piece starts. Both survive
 * splits and moves, so this works wherever the workload has moved or re-registered the pages.
 */
static int serve(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct loader *l = arg;
	char *fault = (char *)((uintptr_t)pf->address & ~(uintptr_t)(page - 1));
	char *dst = fault;
	const unsigned char *from;
	size_t len, room;
	int result = 0;

	if (!pf->range.start) /* not in the map (the grown tail of an mremap): nothing to copy */
		return uffd_zeropage(u, fault, page, 0);
	from = (const unsigned char *)pf->range.data + pf->range.offset +
	       (size_t)(fault - (char *)pf->range.start);
	/* Stay inside the registered piece and the file. */
	len = l->readahead * page;
	room = (size_t)((char *)pf->range.end - fault);
	if (len > room)
		len = room;
	room = (size_t)(l->src + l->src_len - from);
	if (len > room)
		len = room;

	while (len) {
		int err = uffd_copy(u, dst, from, len, 0);
		size_t done = uffd_last_done(), skip;

		l->served += done / page;
		if (err == 0)
			break;
		if (err != -EEXIST) {
			/* The faulting page itself failed: the dispatcher knows what to do with the
			 * errno (EAGAIN retry, ENOENT wake, ...). Readahead just stops. */
			if (dst + done == fault)
				result = err;
			break;
		}
		/* That page is there already (an earlier readahead, or a fault of another thread):
		 * skip it. If it is the faulting page, -EEXIST tells the dispatcher to wake it. */
		if (dst + done == fault)
			result = -EEXIST;
		l->present++;
		skip = done + page;
		dst += skip;
		from += skip;
		len = len > skip ? len - skip : 0;
	}
	return result;
}

/* File offset of the registered page at @addr, or -1 if it is not registered. */
static long long file_offset(struct uffd *u, const struct loader *l, const void *addr)
{
	struct uffd_range r;

	if (uffd_range_find(u, addr, &r) != 0)
		return -1;
	return (long long)((const unsigned char *)r.data - l->src) + (long long)r.offset +
	       ((const char *)addr - (const char *)r.start);
}

/* The layout callbacks only report: the map is already updated when they run. */
static int on_remap(struct uffd *u, const struct uffd_remap *m, void *arg)
{
	struct loader *l = arg;

	if (!l->quiet)
		printf("  moved     %4zu pages %p -> %p: the map follows, file offset 0x%llx\n",
		       m->len / page, m->from, m->to, file_offset(u, l, m->to));
	return 0;
}

static int on_unmap(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct loader *l = arg;

	(void)u;
	if (!l->quiet)
		printf("  unmapped  %4zu pages at %p: cut out of the map\n",
		       (size_t)((char *)s->end - (char *)s->start) / page, s->start);
	return 0;
}

static int on_remove(struct uffd *u, const struct uffd_span *s, void *arg)
{
	struct loader *l = arg;

	if (!l->quiet)
		printf("  discarded %4zu pages at %p: still registered, file offset 0x%llx\n",
		       (size_t)((char *)s->end - (char *)s->start) / page, s->start,
		       file_offset(u, l, s->start));
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
		err = uffd_register(m->u, p, len, UFFDIO_REGISTER_MODE_MISSING,
				    (void *)(m->src + i * CHUNK_PAGES * page));
		if (err)
			return fail(w, "uffd_register", -err);
		w->replaced++;
		touch(p, len);
		/* After the monitor's line about the unmap: it served these faults after that. */
		if (!m->quiet)
			printf("  replaced  %4zu pages at %p: fresh memory, registered, served "
			       "again from 0x%zx\n",
			       len / page, (void *)p, i * CHUNK_PAGES * page);
		break;
	case OP_DISCARD: /* read it, drop its pages: they are missing again, and served again */
		touch(p, len);
		if (madvise(p, len, MADV_DONTNEED) != 0)
			return fail(w, "madvise", errno);
		w->discarded++;
		touch(p, len);
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

/* ---- main ---- */

static void help(void)
{
	printf("%s\n\n"
	       "Restore FILE into anonymous memory lazily, the way post-copy live migration and\n"
	       "snapshot restore do: the memory starts empty, and each page is copied in from the\n"
	       "file by a monitor thread the first time a worker thread touches it. Meanwhile the\n"
	       "workers move, replace and discard parts of the memory; the monitor finds each page's\n"
	       "source through the range map's data and offset, which follow those changes. At the\n"
	       "end the memory's SHA-256 is checked against the file's.\n\n"
	       "  -r, --readahead N    pages copied per fault (1-1024, default 16)\n"
	       "  -t, --threads N      worker threads (1-64, default 4)\n"
	       "  -q, --quiet          do not print each change of the memory layout\n"
	       "  -k, --kernel-faults  also serve faults raised inside system calls (needs\n"
	       "                       CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: 0 when the memory matches the file, 1 when not or on an error, 2 on a\n"
	       "usage error.\n",
	       usage_line);
}

static void sha256_hex_of(const void *data, size_t len, char hex[2 * SHA256_DIGEST_LEN + 1])
{
	struct sha256 s;
	unsigned char d[SHA256_DIGEST_LEN];

	sha256_init(&s);
	sha256_update(&s, data, len);
	sha256_final(&s, d);
	sha256_hex(d, hex);
}

/* The bytes of chunk @i that hold file data: all but the zeros past the end of the file. */
static size_t chunk_data_len(const struct memory *m, const struct tool_file *f, size_t i)
{
	size_t off = i * CHUNK_PAGES * page, len = chunk_len(m, i);

	return len > f->size - off ? f->size - off : len;
}

/* SHA-256 of the memory in file order, chunk by chunk wherever each chunk lives now. */
static void memory_sha256(const struct memory *m, const struct tool_file *f,
			  char hex[2 * SHA256_DIGEST_LEN + 1])
{
	struct sha256 s;
	unsigned char d[SHA256_DIGEST_LEN];

	sha256_init(&s);
	for (size_t i = 0; i < m->nchunks; i++)
		sha256_update(&s, m->chunk[i], chunk_data_len(m, f, i));
	sha256_final(&s, d);
	sha256_hex(d, hex);
}

/* For a mismatch report: the file offset of the first byte that differs, or -1. */
static long long first_difference(const struct memory *m, const struct tool_file *f)
{
	for (size_t i = 0; i < m->nchunks; i++)
		for (size_t b = 0, off = i * CHUNK_PAGES * page; b < chunk_data_len(m, f, i); b++)
			if (m->chunk[i][b] != (char)f->data[off + b])
				return (long long)(off + b);
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "readahead", required_argument, NULL, 'r' },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "kernel-faults", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	/* REMAP keeps moved ranges registered (and in the map); UNMAP and REMOVE keep the map
	 * true and wake nothing that is gone. */
	struct uffd_config cfg = {
		.required = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_UNMAP |
			    UFFD_FEATURE_EVENT_REMOVE,
	};
	struct loader l = { .readahead = 16 };
	struct memory m = { .threads = 4 };
	struct tool_dispatcher disp;
	struct tool_file f;
	struct worker *w;
	struct uffd_stats st;
	char want[2 * SHA256_DIGEST_LEN + 1], got[2 * SHA256_DIGEST_LEN + 1];
	unsigned long moved = 0, replaced = 0, discarded = 0, served;
	double t0, secs;
	bool ok = true;
	struct uffd *u;
	char *mem;
	int c, err;

	tool_init("lazy-load", usage_line);
	while ((c = getopt_long(argc, argv, ":r:t:qkhV", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			l.readahead = tool_number("--readahead", optarg, 1, 1024);
			break;
		case 't':
			m.threads = (unsigned)tool_number("--threads", optarg, 1, 64);
			break;
		case 'q':
			l.quiet = m.quiet = true;
			break;
		case 'k':
			cfg.flags |= UFFD_OPEN_KERNEL_FAULTS;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	if (optind == argc)
		tool_usage_error("no FILE given");
	if (optind + 1 < argc)
		tool_usage_error("unexpected argument '%s'", argv[optind + 1]);

	page = tool_page_size();
	tool_file_map(&f, argv[optind]);
	u = tool_open(&cfg);

	/* The memory to restore into: empty, the file's size rounded up to whole pages. */
	m.u = u;
	m.src = l.src = f.data;
	m.len = l.src_len = (f.size + page - 1) / page * page;
	m.nchunks = (m.len + CHUNK_PAGES * page - 1) / (CHUNK_PAGES * page);
	mem = mmap(NULL, m.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED)
		tool_die("cannot map %zu bytes of memory for '%s': %s", m.len, f.path,
			 strerror(errno));
	m.chunk = calloc(m.nchunks, sizeof(*m.chunk));
	m.spare = calloc(m.threads, sizeof(*m.spare));
	w = calloc(m.threads, sizeof(*w));
	if (!m.chunk || !m.spare || !w)
		tool_die("out of memory");
	for (size_t i = 0; i < m.nchunks; i++)
		m.chunk[i] = mem + i * CHUNK_PAGES * page;
	for (unsigned t = 0; t < m.threads; t++) {
		m.spare[t] = mmap(NULL, CHUNK_PAGES * page, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m.spare[t] == MAP_FAILED)
			tool_die("out of address space");
	}

	/* The whole memory is one registration whose data is the file: page N comes from byte
	 * N * page of the file, as data + offset say. */
	err = uffd_register(u, mem, m.len, UFFDIO_REGISTER_MODE_MISSING, (void *)f.data);
	if (err)
		tool_die("cannot register %zu bytes of memory: %s", m.len, uffd_strerror(err));
	uffd_on_pagefault(u, serve, &l);
	uffd_on_remap(u, on_remap, &l);
	uffd_on_unmap(u, on_unmap, &l);
	uffd_on_remove(u, on_remove, &l);

	printf("lazy-load: restoring %s (%.1f MiB, %zu pages)\n"
	       "into memory that starts empty. A monitor thread copies each page in from the file\n"
	       "when it is first touched, with the %zu page(s) after it (--readahead %zu).\n"
	       "%u thread(s) read the memory, and move, replace and discard parts of it as they\n"
	       "go; the monitor sees each change:\n",
	       f.path, (double)f.size / (1 << 20), m.len / page, l.readahead - 1, l.readahead,
	       m.threads);

	tool_dispatcher_start(&disp, u);
	t0 = tool_now();
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
	/* The workload read every page, but keep serving while the check reads them again. */
	memory_sha256(&m, &f, got);
	if (tool_dispatcher_stop(&disp) != 0)
		ok = false;
	served = l.served;
	uffd_get_stats(u, &st);
	sha256_hex_of(f.data, f.size, want);

	printf("\nrestored: %.1f MiB in %.3f s, %.1f MiB/s: %" PRIu64 " faults, %lu pages served "
	       "(readahead %zu)\n",
	       (double)f.size / (1 << 20), secs, (double)served * (double)page / (1 << 20) / secs,
	       st.faults, served, l.readahead);
	printf("counts:   faults=%" PRIu64 " served=%lu present=%lu woken=%" PRIu64
	       " remap=%" PRIu64 " unmap=%" PRIu64 " remove=%" PRIu64
	       " moved=%lu replaced=%lu discarded=%lu\n",
	       st.faults, served, l.present, st.faults_woken, st.remaps, st.unmaps, st.removes,
	       moved, replaced, discarded);
	if (strcmp(got, want) == 0) {
		printf("verified: SHA-256 matches: %s\n", want);
	} else {
		printf("MISMATCH: SHA-256 of the memory %s, of the file %s; first difference at "
		       "file offset %lld\n",
		       got, want, first_difference(&m, &f));
		ok = false;
	}

	/* Close first: unmapping registered memory would wait for an event reader. */
	uffd_close(u);
	for (size_t i = 0; i < m.nchunks; i++)
		munmap(m.chunk[i], chunk_len(&m, i));
	for (unsigned t = 0; t < m.threads; t++)
		munmap(m.spare[t], CHUNK_PAGES * page); /* no-op where a chunk moved in */
	free(m.chunk);
	free(m.spare);
	free(w);
	tool_file_unmap(&f);
	return ok ? 0 : 1;
}
